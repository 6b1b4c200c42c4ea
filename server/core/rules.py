"""The access-control engine: which policy applies to a request, and why.

Semantics are Authelia's (SPEC §2.1): rules are tried in order and the first one whose every
present criterion matches decides, else ``default_policy``. For an anonymous request the
criteria that depend on who the user is (``subject``, ``{user}``/``{group}`` domains, ``User``/
``Group`` named groups in ``domain_regex`` or ``resources``) count as a possible match, so the
first rule that could apply to some signed-in user decides and the caller sends the visitor to
log in.

``AccessControl`` is built once per config and indexes the rules by host (exact names and dot
suffixes), caching the per-host candidate list, so one ``evaluate`` over 1,000 rules costs a
few microseconds; ``explain`` walks every rule without the index and says why each one did or
did not match, for ``authctl rules check --explain``.

The caller passes a host that is already lowercase IDNA and a path that ``server.core.urls``
normalised; this module never parses URLs.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import typing as t
from dataclasses import dataclass
from urllib.parse import unquote_plus

from server.core.errors import InvalidTargetError
from server.core.policy import Policy

if t.TYPE_CHECKING:
    from server.core.config import AccessControlConfig
    from server.core.config import QueryCondition
    from server.core.config import RuleConfig
    from server.core.regex import Regex

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Results of one rule in an explanation (SPEC §4).
HIT = "hit"
MISS = "miss"
MAYBE = "maybe"

#: How many hosts keep their candidate rules cached; a flood of random subdomains only
#: recomputes (cheaply), it never grows memory past this.
HOST_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """What the rules look at: the normalised target, the method and who is asking.

    ``host`` is lowercase IDNA without port, ``path`` normalised by ``server.core.urls``,
    ``query`` the raw query string ('' if none), ``method`` upper case, ``ip`` the client
    address (None when unknown), ``user`` the canonical user name (None: anonymous) and
    ``groups`` that user's groups.
    """

    host: str
    path: str = "/"
    query: str = ""
    method: str = "GET"
    ip: IPAddress | None = None
    user: str | None = None
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy to enforce, the 0-based index of the rule that decided (None: the default
    policy), and whether that rule depends on who the user is.

    For an anonymous request with ``has_subject`` true the rule only *may* apply: the caller
    must send the visitor to log in (even for ``deny``) and decide again after login.
    """

    policy: Policy
    rule: int | None
    has_subject: bool


@dataclass(frozen=True, slots=True)
class RuleResult:
    """One rule's line in an explanation: hit, miss or maybe, and the criterion that decided."""

    index: int
    result: str
    reason: str
    policy: Policy
    line: int | None


@dataclass(frozen=True, slots=True)
class Explanation:
    """The decision plus one ``RuleResult`` per rule.

    Every rule is evaluated on its own, including those after the deciding rule, so the
    table shows what each rule would do; only the first hit or maybe decides.
    """

    policy: Policy
    rule: int | None
    has_subject: bool
    rules: tuple[RuleResult, ...]

    @property
    def decision(self) -> Decision:
        """The same answer ``AccessControl.evaluate`` gives."""
        return Decision(self.policy, self.rule, self.has_subject)


# --------------------------------------------------------------------------- helpers

#: A subject condition a host binds a domain to: (user or None, group or None); both given
#: must hold. Produced by ``{user}``/``{group}`` domains and User/Group named groups.
_Bind = tuple[str | None, str | None]

#: The bind of a ``{group}`` entry whose host has more labels than ``{group}.`` allows: it
#: matches anonymous requests (as in Authelia) but no signed-in user.
_NOBODY: _Bind = ("", "")

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")

#: Values of one query key, in order; an absent key reads as ("",), as Go's ``Get`` gives "".
QueryValues = dict[str, tuple[str, ...]]
_ABSENT: tuple[str, ...] = ("",)


class AmbiguousQueryError(InvalidTargetError):
    """A query a rule must judge but that applications read in different ways."""


def parse_query(raw: str) -> QueryValues:
    """Parse a raw query string into key -> every value, in order; refuse what is ambiguous.

    Pairs split on ``&``, ``+`` is a space, a key without ``=`` has the value '', empty pairs
    are skipped, and escapes are decoded once as UTF-8 (invalid UTF-8 becomes U+FFFD, as
    Go's regexp reads it). Two things are read differently by different applications, so a
    rule cannot judge them and :class:`AmbiguousQueryError` is raised (the caller answers
    400; auth-request 403) instead of guessing:

    * a ``;`` anywhere: Go 1.17+ drops the pair, Rack before 3 and old Python split on it,
      PHP and Express keep it in the value, so ``?x=1;debug=1`` may or may not carry
      ``debug``; an application that means a literal ``;`` sends ``%3B``;
    * a ``%`` not followed by two hex digits (``%zz``, ``1%``): Go drops the pair, most others
      keep the text as it is.

    Only a request that reaches a rule with a ``query`` criterion is refused: on hosts whose
    rules do not look at the query, any query passes through untouched.
    """
    if ";" in raw:
        raise AmbiguousQueryError("';' in the query (send it as %3B)")
    if "%" in raw and _BAD_ESCAPE.search(raw):
        raise AmbiguousQueryError("a '%' that is not a two-digit escape in the query")
    values: dict[str, list[str]] = {}
    for pair in raw.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        k = unquote_plus(key, errors="replace")
        values.setdefault(k, []).append(unquote_plus(value, errors="replace"))
    return {k: tuple(v) for k, v in values.items()}


def _value_holds(cond: QueryCondition, value: str) -> bool:
    op = cond.operator
    if op == "equal":
        return value == cond.value
    if op == "not equal":
        return value != cond.value
    # config compiles the pattern of the (not) pattern operators; a missing one never matches
    found = cond.pattern is not None and cond.pattern.search(value)
    return found if op == "pattern" else not found


def _condition_holds(cond: QueryCondition, values: QueryValues) -> bool | None:
    """One condition: True, False, or None when a repeated key's values disagree.

    Applications read a repeated key as its first value (Go, Express's ``req.query`` for
    some parsers), its last (PHP) or all of them, so ``?format=rss&format=html`` must not get
    a bypass meant for rss, nor ``?lang=en&lang=../x`` escape a deny for a language that is
    not en: the condition is decided only when every value gives the same answer.
    """
    op = cond.operator
    if op == "present":
        return cond.key in values
    if op == "absent":
        return cond.key not in values
    got = values.get(cond.key, _ABSENT)
    first = _value_holds(cond, got[0])
    if len(got) > 1 and any(_value_holds(cond, v) != first for v in got[1:]):
        return None
    return first


def _query_result(query: tuple[tuple[QueryCondition, ...], ...], values: QueryValues) -> bool:
    """The query criterion (outer OR of inner AND) in three-valued logic: a condition left
    undecided by disagreeing values only matters when no decided one settles its group and
    no other group holds, and then the request is refused (AmbiguousQueryError)."""
    undecided: QueryCondition | None = None
    for all_of in query:
        group: bool | None = True
        open_cond: QueryCondition | None = None
        for cond in all_of:
            result = _condition_holds(cond, values)
            if result is False:
                group = False
                break
            if result is None:
                group, open_cond = None, cond
        if group:
            return True
        if group is None:
            undecided = open_cond
    if undecided is not None:
        raise AmbiguousQueryError(
            f"query key {undecided.key!r} is repeated with values that "
            f"'{_describe_condition(undecided)}' judges differently"
        )
    return False


def _describe_condition(cond: QueryCondition) -> str:
    if cond.operator in ("present", "absent"):
        return f"{cond.key} {cond.operator}"
    return f"{cond.key} {cond.operator} '{cond.value}'"


def _ip_key(ip: object) -> tuple[int, int] | None:
    """(version, integer) of a client address; IPv4-mapped IPv6 becomes IPv4; junk -> None."""
    if isinstance(ip, str):
        try:
            ip = ipaddress.ip_address(ip.strip())
        except ValueError:
            return None
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return 4, int(mapped)
        return 6, int(ip)
    if isinstance(ip, ipaddress.IPv4Address):
        return 4, int(ip)
    return None


def _binds_hold(binds: tuple[_Bind, ...], user: str, groups_fold: frozenset[str]) -> bool:
    user_fold = user.casefold()
    for bind in binds:
        if bind is _NOBODY:
            continue
        want_user, want_group = bind
        if want_user is not None and want_user.casefold() != user_fold:
            continue
        if want_group is not None and want_group.casefold() not in groups_fold:
            continue
        return True
    return False


def _subject_holds(
    subject: tuple[tuple[tuple[bool, str], ...], ...], user: str, groups: tuple[str, ...]
) -> bool:
    for all_of in subject:
        for is_user, name in all_of:
            if (name != user) if is_user else (name not in groups):
                break
        else:
            return True
    return False


def _names(pattern: Regex) -> tuple[bool, bool]:
    """Whether ``pattern`` has a ``User`` and a ``Group`` named group (exact case, as Authelia:
    any other name, ``user`` included, is an ordinary group that binds nothing)."""
    return "User" in pattern.groupindex, "Group" in pattern.groupindex


def _split_binding(
    patterns: t.Iterable[Regex],
) -> tuple[tuple[Regex, ...], tuple[tuple[Regex, bool, bool], ...]]:
    """The plain regexes, and those with User/Group groups (with which of the two they have)."""
    plain: list[Regex] = []
    binding: list[tuple[Regex, bool, bool]] = []
    for pattern in patterns:
        has_user, has_group = _names(pattern)
        if has_user or has_group:
            binding.append((pattern, has_user, has_group))
        else:
            plain.append(pattern)
    return tuple(plain), tuple(binding)


def _bind_of(captured: dict[str, str], has_user: bool, has_group: bool) -> _Bind:
    """What one match binds: the captured User and/or Group text ('' when the group took no
    part in the match, which equals no name)."""
    return (captured["User"] if has_user else None, captured["Group"] if has_group else None)


def _captured(pattern: Regex, captured: dict[str, str]) -> str:
    """``Group='dev', User='john'``: the binding groups in the order they appear."""
    names = sorted(
        (n for n in ("User", "Group") if n in pattern.groupindex),
        key=lambda n: pattern.groupindex[n],
    )
    return ", ".join(f"{n}={captured[n]!r}" for n in names)


class _Miss:
    """Sentinel: the domain (or resource) criterion does not match this request for anyone."""


_DOMAIN_MISS = _Miss()


# --------------------------------------------------------------------------- compiled rule


class _Rule:
    """One rule, compiled: sets and tuples the hot loop reads without further work."""

    __slots__ = (
        "bind_regexes",
        "bind_resources",
        "decision",
        "domain_texts",
        "exact",
        "group_suffixes",
        "has_subject",
        "index",
        "line",
        "methods",
        "network_texts",
        "networks",
        "plain_regexes",
        "plain_resources",
        "policy",
        "query",
        "resources",
        "subject",
        "user_suffixes",
        "wildcards",
    )

    def __init__(self, config: RuleConfig) -> None:
        self.index = config.index
        self.policy = Policy(config.policy)
        self.line = config.line
        exact: list[str] = []
        wildcards: list[str] = []
        users: list[str] = []
        groups: list[str] = []
        for domain in config.domain:
            name = domain.lower()
            if name.startswith("*."):
                wildcards.append(name[1:])
            elif name.startswith("{user}."):
                users.append(name[len("{user}") :])
            elif name.startswith("{group}."):
                groups.append(name[len("{group}") :])
            else:
                exact.append(name)
        self.exact = frozenset(exact)
        #: suffixes keep their leading dot: "*.example.com" -> ".example.com".
        self.wildcards = tuple(wildcards)
        self.user_suffixes = tuple(users)
        self.group_suffixes = tuple(groups)
        self.plain_regexes, self.bind_regexes = _split_binding(config.domain_regex)
        self.plain_resources, self.bind_resources = _split_binding(config.resources)
        self.domain_texts = tuple(f"'{d}'" for d in config.domain) + tuple(
            f"regex '{p.pattern}'" for p in config.domain_regex
        )
        self.resources = config.resources or None
        self.query = config.query or None
        self.methods = frozenset(config.methods) if config.methods else None
        ranges: list[tuple[int, int, int]] = []
        for ref in config.networks:
            for net in ref.networks:
                ranges.append((net.version, int(net.network_address), int(net.broadcast_address)))
        self.networks = tuple(ranges) if config.networks else None
        self.network_texts = tuple(ref.text for ref in config.networks)
        self.subject = (
            tuple(
                tuple((entry.startswith("user:"), entry.partition(":")[2]) for entry in all_of)
                for all_of in config.subject
            )
            or None
        )
        self.has_subject = bool(
            config.subject or users or groups or self.bind_regexes or self.bind_resources
        )
        self.decision = Decision(self.policy, self.index, self.has_subject)

    @property
    def has_domain(self) -> bool:
        return bool(self.domain_texts)

    def domain_matches(self, host: str) -> list[tuple[str, _Bind | None]]:
        """Every domain entry that matches ``host`` (for some user), with what it binds.

        An entry with bind None matches whoever asks; ``{group}`` entries whose first label
        is followed by more than the suffix match anonymous requests only (as in Authelia)
        and carry an impossible bind.
        """
        found: list[tuple[str, _Bind | None]] = []
        if host in self.exact:
            found.append((f"'{host}'", None))
        for suffix in self.wildcards:
            if host.endswith(suffix):
                found.append((f"'*{suffix}'", None))
        for pattern in self.plain_regexes:
            if pattern.search(host):
                found.append((f"regex '{pattern.pattern}'", None))
        for suffix in self.user_suffixes:
            if host.endswith(suffix) and len(host) > len(suffix):
                found.append((f"'{{user}}{suffix}'", (host[: -len(suffix)], None)))
        for suffix in self.group_suffixes:
            if host.endswith(suffix) and len(host) > len(suffix):
                label, _, rest = host.partition(".")
                bind = (None, label) if "." + rest == suffix else _NOBODY
                found.append((f"'{{group}}{suffix}'", bind))
        for pattern, has_user, has_group in self.bind_regexes:
            captured = pattern.captures(host)
            if captured is not None:
                bind = _bind_of(captured, has_user, has_group)
                shown = f"regex '{pattern.pattern}' with {_captured(pattern, captured)}"
                found.append((shown, bind))
        return found

    def domain_binds(self, host: str) -> tuple[_Bind, ...] | _Miss | None:
        """None: the domain matches for everyone; a tuple: it matches anonymous requests
        and signed-in users satisfying one of the binds; ``_DOMAIN_MISS``: no match."""
        if not self.has_domain:
            return None
        found = self.domain_matches(host)
        if not found:
            return _DOMAIN_MISS
        binds = []
        for _, bind in found:
            if bind is None:
                return None
            binds.append(bind)
        return tuple(binds)

    def resource_binds(self, resource: str) -> tuple[_Bind, ...] | _Miss | None:
        """As ``domain_binds``, for the resource: None when a plain regex matches (for
        everyone), the binds of the binding regexes that match, or ``_DOMAIN_MISS``."""
        for pattern in self.plain_resources:
            if pattern.search(resource):
                return None
        binds = []
        for pattern, has_user, has_group in self.bind_resources:
            captured = pattern.captures(resource)
            if captured is not None:
                binds.append(_bind_of(captured, has_user, has_group))
        return tuple(binds) if binds else _DOMAIN_MISS

    def resource_matches(self, resource: str) -> list[tuple[Regex, dict[str, str] | None]]:
        """Every resource regex that matches, with what its User/Group groups captured
        (None for a plain regex), for explain."""
        found: list[tuple[Regex, dict[str, str] | None]] = [
            (p, None) for p in self.plain_resources if p.search(resource)
        ]
        for pattern, _, _ in self.bind_resources:
            captured = pattern.captures(resource)
            if captured is not None:
                found.append((pattern, captured))
        return found

    def query_holds(self, values: QueryValues) -> bool:
        return _query_result(self.query or (), values)

    def network_holds(self, ip: tuple[int, int] | None) -> bool:
        if ip is None:
            return False
        version, number = ip
        return any(v == version and lo <= number <= hi for v, lo, hi in self.networks or ())


# --------------------------------------------------------------------------- the engine


class AccessControl:
    """The ordered rules of one config, compiled and indexed once.

    ``evaluate`` is the hot path (no allocation beyond the request's own lazily built
    resource string and query dict); ``explain`` is the slow, talkative twin used by the CLI.
    Both give the same decision; the tests hold them to a naive reference implementation.
    """

    def __init__(self, config: AccessControlConfig) -> None:
        self.default_policy = Policy(config.default_policy)
        self._default = Decision(self.default_policy, None, False)
        self._rules = tuple(_Rule(rule) for rule in config.rules)
        exact: dict[str, list[int]] = {}
        suffix: dict[str, list[int]] = {}
        always: list[int] = []
        for pos, rule in enumerate(self._rules):
            if rule.plain_regexes or rule.bind_regexes or not rule.has_domain:
                always.append(pos)
                continue
            for host in rule.exact:
                exact.setdefault(host, []).append(pos)
            for s in rule.wildcards + rule.user_suffixes + rule.group_suffixes:
                suffix.setdefault(s, []).append(pos)
        self._exact = {k: tuple(v) for k, v in exact.items()}
        self._suffix = {k: tuple(v) for k, v in suffix.items()}
        self._always = tuple(always)
        self._candidates = functools.lru_cache(maxsize=HOST_CACHE_SIZE)(self._find_candidates)

    @property
    def rule_count(self) -> int:
        """How many rules there are."""
        return len(self._rules)

    def _find_candidates(self, host: str) -> tuple[tuple[_Rule, tuple[_Bind, ...] | None], ...]:
        """The rules whose domain criterion can match ``host``, in rule order, each with
        the binds a signed-in user must satisfy (None: none)."""
        positions: set[int] = set(self._always)
        positions.update(self._exact.get(host, ()))
        dot = host.find(".")
        while dot != -1:
            positions.update(self._suffix.get(host[dot:], ()))
            dot = host.find(".", dot + 1)
        out = []
        for pos in sorted(positions):
            rule = self._rules[pos]
            binds = rule.domain_binds(host)
            if not isinstance(binds, _Miss):
                out.append((rule, binds))
        return tuple(out)

    def evaluate(self, req: AccessRequest) -> Decision:
        """The decision for ``req``: the first rule that matches (or, for an anonymous
        request, may match once the user signs in), else the default policy.

        Raises AmbiguousQueryError (an InvalidTargetError: 400) when a rule whose other
        criteria hold must judge a query that applications read in different ways.
        """
        candidates = self._candidates(req.host.lower())
        if not candidates:
            return self._default
        user = req.user
        resource: str | None = None
        values: QueryValues | None = None
        method: str | None = None
        ip: tuple[int, int] | _Miss | None = _DOMAIN_MISS
        groups_fold: frozenset[str] | None = None
        for rule, binds in candidates:
            if binds is not None and user is not None:
                if groups_fold is None:
                    groups_fold = frozenset(g.casefold() for g in req.groups)
                if not _binds_hold(binds, user, groups_fold):
                    continue
            if rule.resources is not None:
                if resource is None:
                    resource = req.path + "?" + req.query if req.query else req.path
                bound = rule.resource_binds(resource)
                if isinstance(bound, _Miss):
                    continue
                if bound is not None and user is not None:
                    if groups_fold is None:
                        groups_fold = frozenset(g.casefold() for g in req.groups)
                    if not _binds_hold(bound, user, groups_fold):
                        continue
            if rule.query is not None:
                if values is None:
                    values = parse_query(req.query)
                if not rule.query_holds(values):
                    continue
            if rule.methods is not None:
                if method is None:
                    method = req.method.upper()
                if method not in rule.methods:
                    continue
            if rule.networks is not None:
                if isinstance(ip, _Miss):
                    ip = _ip_key(req.ip)
                if not rule.network_holds(ip):
                    continue
            if (
                rule.subject is not None
                and user is not None
                and not _subject_holds(rule.subject, user, req.groups)
            ):
                continue
            return rule.decision
        return self._default

    def explain(self, req: AccessRequest) -> Explanation:
        """Evaluate every rule on its own and say, per rule, hit, miss or maybe and why.

        Raises AmbiguousQueryError exactly when ``evaluate`` does (the server refuses).
        """
        self.evaluate(req)  # raises AmbiguousQueryError where the server refuses the request
        host = req.host.lower()
        resource = req.path + "?" + req.query if req.query else req.path
        try:
            values: QueryValues | str = parse_query(req.query)
        except AmbiguousQueryError as exc:
            values = str(exc)  # only rules after the deciding one can reach it
        ip = _ip_key(req.ip)
        results = tuple(
            self._explain_rule(rule, req, host, resource, values, ip) for rule in self._rules
        )
        for result, rule in zip(results, self._rules, strict=True):
            if result.result != MISS:
                return Explanation(rule.policy, rule.index, rule.has_subject, results)
        return Explanation(self.default_policy, None, False, results)

    @staticmethod
    def _explain_rule(
        rule: _Rule,
        req: AccessRequest,
        host: str,
        resource: str,
        values: QueryValues | str,
        ip: tuple[int, int] | None,
    ) -> RuleResult:
        user = req.user
        hits: list[str] = []
        maybes: list[str] = []

        def miss(reason: str) -> RuleResult:
            return RuleResult(rule.index, MISS, reason, rule.policy, rule.line)

        if rule.has_domain:
            found = rule.domain_matches(host)
            if not found:
                return miss(f"domain {host!r} does not match {_listing(rule.domain_texts)}")
            unbound = [text for text, bind in found if bind is None]
            if unbound:
                hits.append(f"domain {host!r} matches {unbound[0]}")
            elif user is None:
                maybes.append(
                    f"domain {host!r} matches {found[0][0]} only for some signed-in users"
                )
            else:
                groups_fold = frozenset(g.casefold() for g in req.groups)
                for text, bind in found:
                    if bind is not None and _binds_hold((bind,), user, groups_fold):
                        hits.append(f"domain {host!r} matches {text} for user {user!r}")
                        break
                else:
                    return miss(
                        f"domain {host!r} matches {found[0][0]} but not for user {user!r}"
                        f"{_groups_note(req.groups)}"
                    )
        if rule.resources is not None:
            result, said = _explain_resource(rule, req, resource)
            if result == MISS:
                return miss(said)
            (hits if result == HIT else maybes).append(said)
        if rule.query is not None:
            wanted = " or ".join(
                "[" + " and ".join(_describe_condition(c) for c in all_of) + "]"
                for all_of in rule.query
            )
            shown = repr(req.query) if req.query else "(empty)"
            try:
                if isinstance(values, str):
                    raise AmbiguousQueryError(values)
                holds = rule.query_holds(values)
            except AmbiguousQueryError as exc:
                # only a rule after the deciding one gets here (explain evaluated first)
                return miss(f"query {shown} would be refused (400) at this rule: {exc}")
            if not holds:
                return miss(f"query {shown} does not satisfy {wanted}")
            hits.append(f"query {shown} satisfies {wanted}")
        if rule.methods is not None:
            method = req.method.upper()
            listed = ", ".join(sorted(rule.methods))
            if method not in rule.methods:
                return miss(f"method {method} not in {listed}")
            hits.append(f"method {method} in {listed}")
        if rule.networks is not None:
            nets = ", ".join(rule.network_texts)
            if ip is None:
                return miss(f"no valid client IP; the rule needs networks {nets}")
            shown_ip = _show_ip(ip)
            if not rule.network_holds(ip):
                return miss(f"client IP {shown_ip} not in {nets}")
            hits.append(f"client IP {shown_ip} in {nets}")
        if rule.subject is not None:
            wanted = " or ".join(
                "[" + " and ".join(("user:" if u else "group:") + n for u, n in all_of) + "]"
                for all_of in rule.subject
            )
            if user is None:
                maybes.append(f"subject {wanted} needs a signed-in user")
            elif not _subject_holds(rule.subject, user, req.groups):
                return miss(f"user {user!r}{_groups_note(req.groups)} matches none of {wanted}")
            else:
                hits.append(f"user {user!r} matches {wanted}")
        if maybes:
            return RuleResult(rule.index, MAYBE, "; ".join(maybes), rule.policy, rule.line)
        return RuleResult(rule.index, HIT, "; ".join(hits), rule.policy, rule.line)


def _explain_resource(rule: _Rule, req: AccessRequest, resource: str) -> tuple[str, str]:
    """The resource criterion of one rule: hit, miss or maybe, and the reason, naming what
    the User/Group groups of a binding regex captured and whom that binds."""
    found = rule.resource_matches(resource)
    if not found:
        texts = tuple(f"'{p.pattern}'" for p in rule.resources or ())
        return MISS, f"resource {resource!r} does not match {_listing(texts)}"
    pattern, captured = found[0]
    said = f"resource {resource!r} matches '{pattern.pattern}'"
    if captured is None:  # a plain regex: for everyone
        return HIT, said
    if req.user is None:
        return (
            MAYBE,
            f"{said} with {_captured(pattern, captured)} only for some signed-in users",
        )
    groups_fold = frozenset(g.casefold() for g in req.groups)
    for other, got in found:  # all binding (a plain match would come first)
        if got is not None and _binds_hold((_bind_of(got, *_names(other)),), req.user, groups_fold):
            return HIT, (
                f"resource {resource!r} matches '{other.pattern}' with {_captured(other, got)} "
                f"for user {req.user!r}"
            )
    return MISS, (
        f"{said} with {_captured(pattern, captured)} but not for user {req.user!r}"
        f"{_groups_note(req.groups)}"
    )


def _show_ip(key: tuple[int, int]) -> str:
    version, number = key
    return str(ipaddress.IPv4Address(number) if version == 4 else ipaddress.IPv6Address(number))


def _listing(texts: t.Sequence[str]) -> str:
    """Already-quoted criterion texts, as "'a'" or "any of 'a', 'b'"."""
    if len(texts) == 1:
        return texts[0]
    return "any of " + ", ".join(texts)


def _groups_note(groups: tuple[str, ...]) -> str:
    return f" (groups: {', '.join(groups)})" if groups else " (no groups)"
