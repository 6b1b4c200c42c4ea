"""Lint the access rules: find rules that can never apply, and rules that apply too widely.

``load_config`` rejects what is invalid; this module finds what is valid but almost surely
not what the author meant, because access rules fail silently: a rule shadowed by an earlier
one, a ``bypass`` whose unanchored regex also matches ``/admin?x=/public/`` (the
path-confusion bypass of security.md §2.B), a regex that can never match, a named group
other than ``User``/``Group`` (``(?P<user>…)`` binds nobody, so the rule applies to everyone),
a domain outside every cookie domain (the server answers 400 before any rule runs), or a
catch-all that makes every later rule and ``default_policy`` dead. Each finding says where
(rule index and TOML line), what and how to fix it. ``authctl rules check`` prints them.

The checks are sound rather than complete: a warning is given only when the problem is
certain (e.g. rule B is shadowed only when rule A matches *every* request B could match,
judged criterion by criterion), so a clean result does not prove a policy right; keep it
under test with ``authctl rules test``.

Rules match with RE2 (``server.core.regex``), but regexes are inspected through the parse tree of
Python's own ``re`` parser (``re._parser``, private but stable since 3.11), which reads the
syntax both share; a regex written in RE2-only syntax (``\\z``, ``\\pL``) or the parser's
absence skips the regex checks for it. Every "cannot match" verdict is also confirmed against
probe strings with the compiled RE2 regex, so a parser surprise or a difference between the
two engines (RE2's ``\\w`` is ASCII only) can only hide a finding, never invent one.
"""

from __future__ import annotations

import importlib
import re
import typing as t
from dataclasses import dataclass

from server.core.policy import Policy

if t.TYPE_CHECKING:
    from server.core.config import Config
    from server.core.config import CookieConfig
    from server.core.config import RuleConfig
    from server.core.errors import FileProblemError
    from server.core.regex import Regex

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: how bad, which rule (0-based) and TOML line, what is wrong, how to fix.

    ``code`` names the check (``shadowed``, ``unanchored-bypass``, …) for scripts.
    """

    severity: str
    rule: int | None
    line: int | None
    message: str
    fix: str
    code: str = ""

    def as_dict(self) -> dict[str, object]:
        """The JSON form printed by ``authctl rules check --json``."""
        return {
            "severity": self.severity,
            "code": self.code,
            "rule": self.rule,
            "line": self.line,
            "message": self.message,
            "fix": self.fix,
        }


# --------------------------------------------------------------------------- entry points


def lint(config: Config) -> list[Finding]:
    """Every warning about ``config``'s access rules, in rule order.

    The config is already valid (``load_config`` succeeded); see ``config_findings`` for
    the problems of an invalid one and ``runtime_files`` for files needed at run time.
    """
    rules = config.access_control.rules
    cookies = config.session.cookies
    views = [_View(rule) for rule in rules]
    findings: list[Finding] = []
    for view in views:
        findings.extend(_regex_findings(view, cookies))
        findings.extend(_named_group_findings(view))
        findings.extend(_cookie_findings(view, config))
    findings.extend(_order_findings(views, cookies, config.access_control.default_policy))
    findings.sort(key=lambda f: (f.rule if f.rule is not None else -1, _CODES.index(f.code)))
    return findings


def config_findings(error: FileProblemError) -> list[Finding]:
    """The problems of an invalid config, as findings (errors unless the problem says not)."""
    out = []
    for problem in error.problems:
        found = _RULE_KEY.match(problem.key)
        where = f"{problem.key}: " if problem.key else ""
        out.append(
            Finding(
                problem.severity,
                int(found.group(1)) if found else None,
                problem.line,
                where + problem.message,
                problem.hint,
                "config",
            )
        )
    return out


def runtime_files(config: Config) -> list[Finding]:
    """Warnings for files ``authctl serve`` needs but ``rules check`` does not (SPEC §4):
    the very problems ``serve`` refuses to start on (``server.core.runtime``)."""
    from server.core.runtime import runtime_files as problems

    return [
        Finding(
            WARNING,
            None,
            None,
            f"{p.key}: {p.what} {str(p.path)!r} {p.problem}; `authctl serve` will refuse to start",
            p.fix,
            "missing-file",
        )
        for p in problems(config)
    ]


_RULE_KEY = re.compile(r"access_control\.rules\[(\d+)\]")
_CODES = (
    "config",
    "missing-file",
    "regex-never-matches",
    "named-group",
    "unanchored-bypass",
    "bypass-prefix",
    "outside-cookie-domain",
    "catch-all",
    "duplicate",
    "shadowed",
    "bypass-after-deny",
    "bypass-after-subject",
)


# --------------------------------------------------------------------------- regex analysis

_parser: t.Any
try:
    _parser = importlib.import_module("re._parser")
except ImportError:  # pragma: no cover - every supported Python has it
    _parser = None

_BEGIN = frozenset({"AT_BEGINNING", "AT_BEGINNING_STRING"})
_END = frozenset({"AT_END", "AT_END_STRING"})
_REPEATS = frozenset({"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"})
_CHARS = frozenset({"LITERAL", "NOT_LITERAL", "ANY", "IN"})
_HOST_START = "abcdefghijklmnopqrstuvwxyz0123456789"
_Items = list[tuple[t.Any, t.Any]]


def _tree(pattern: Regex) -> tuple[_Items, bool] | None:
    """The top-level items of ``pattern`` and whether it ignores case; None if unknown."""
    if _parser is None:  # pragma: no cover
        return None
    try:
        parsed = _parser.parse(pattern.pattern, pattern.flags)
    except Exception:  # RE2-only syntax (\z, \pL, \Q...\E): no analysis
        return None
    return list(parsed), bool(parsed.state.flags & re.IGNORECASE)


def _name(op: t.Any) -> str:
    return str(getattr(op, "name", ""))


def _flat(items: t.Iterable[tuple[t.Any, t.Any]]) -> _Items:
    """The items with plain groups inlined: ``^(/x$)y`` reads as ``^/x$y``."""
    out: _Items = []
    for op, av in items:
        if _name(op) == "SUBPATTERN" and not av[1] and not av[2]:
            out.extend(_flat(av[3]))
        else:
            out.append((op, av))
    return out


def _nullable(items: t.Iterable[tuple[t.Any, t.Any]]) -> bool:
    """Whether the sequence may match the empty string (True when unsure)."""
    for op, av in items:
        name = _name(op)
        if name in _CHARS:
            return False
        if name == "SUBPATTERN" and not _nullable(av[3]):
            return False
        if name in _REPEATS and av[0] >= 1 and not _nullable(av[2]):
            return False
        if name == "BRANCH" and not any(_nullable(b) for b in av[1]):
            return False
    return True


def _in_set(av: t.Any, ch: str, icase: bool) -> bool:
    """Whether an IN set may match ``ch`` (True when unsure)."""
    negate = False
    hit = False
    for op, arg in av:
        name = _name(op)
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            hit = hit or _same(arg, ch, icase)
        elif name == "RANGE":
            lo, hi = arg
            hit = hit or lo <= ord(ch) <= hi or (icase and lo <= ord(ch.swapcase()) <= hi)
        else:
            return True
    return not hit if negate else hit


def _same(code: int, ch: str, icase: bool) -> bool:
    return chr(code) == ch or (icase and chr(code).lower() == ch.lower())


def _can_start(items: _Items, ch: str, icase: bool) -> bool:
    """False only when a match of ``items`` certainly cannot start with ``ch``."""
    for op, av in _flat(items):
        name = _name(op)
        if name == "AT":
            if _name(av) in _END:
                return False  # only the empty rest can follow
            continue
        if name == "LITERAL":
            return _same(av, ch, icase)
        if name == "NOT_LITERAL":
            return icase or chr(av) != ch
        if name == "ANY":
            return ch != "\n"
        if name == "IN":
            return _in_set(av, ch, icase)
        if name == "SUBPATTERN":
            sub = list(av[3])
            if av[1] & re.IGNORECASE or _nullable(sub):
                return True
            return _can_start(sub, ch, icase)
        if name in _REPEATS:
            sub = list(av[2])
            if av[0] == 0 or _nullable(sub):
                return True
            return _can_start(sub, ch, icase)
        if name == "BRANCH":
            return any(_nullable(b) or _can_start(list(b), ch, icase) for b in av[1])
        return True
    return True


def _must_consume(op: t.Any, av: t.Any) -> bool:
    name = _name(op)
    if name in _CHARS:
        return True
    if name == "SUBPATTERN":
        return not _nullable(av[3])
    if name in _REPEATS:
        return bool(av[0] >= 1) and not _nullable(av[2])
    if name == "BRANCH":
        return not any(_nullable(b) for b in av[1])
    return False


def _impossible(items: _Items) -> bool:
    """Whether the sequence cannot match any non-empty string without newlines (the
    strings rules see): ``^`` after consumed text, text after ``$``, or ``$^``."""
    consumed = False
    ended = False
    for op, av in _flat(items):
        name = _name(op)
        if name == "AT":
            if _name(av) in _BEGIN and (consumed or ended):
                return True
            if _name(av) in _END:
                ended = True
            continue
        if name == "SUBPATTERN" and _impossible(list(av[3])):
            return True
        if name == "BRANCH" and all(_impossible(list(b)) for b in av[1]):
            return True
        if name in _REPEATS and av[0] >= 1 and _impossible(list(av[2])):
            return True
        if _must_consume(op, av):
            if ended:
                return True
            consumed = True
    return False


def _anchored(items: _Items) -> bool:
    """Whether every match must start at the start of the string (``^`` or ``\\A``)."""
    if not items:
        return False
    op, av = items[0]
    name = _name(op)
    if name == "AT":
        return _name(av) in _BEGIN
    if name == "SUBPATTERN":
        return _anchored(list(av[3]))
    if name == "BRANCH":
        return all(_anchored(list(b)) for b in av[1])
    return False


def _after_anchor_impossible(items: _Items, starts: str, icase: bool) -> bool:
    """Anchored at the start, and no character of ``starts`` can come first."""
    if not items:
        return False
    op, av = items[0]
    name = _name(op)
    if name == "AT" and _name(av) in _BEGIN:
        rest = items[1:]
        return not any(_can_start(rest, ch, icase) for ch in starts)
    if name == "SUBPATTERN" and not av[1] & re.IGNORECASE:
        return _after_anchor_impossible(list(av[3]) + items[1:], starts, icase)
    if name == "BRANCH":
        return all(_after_anchor_impossible(list(b), starts, icase) for b in av[1])
    return False


def _required_upper(items: _Items) -> str | None:
    """An upper-case letter every match must contain, if any (case-sensitive patterns)."""
    for op, av in items:
        name = _name(op)
        if name == "LITERAL" and "A" <= chr(av) <= "Z":
            return chr(av)
        if name == "SUBPATTERN" and not av[1] & re.IGNORECASE:
            found = _required_upper(list(av[3]))
            if found:
                return found
        if name in _REPEATS and av[0] >= 1:
            found = _required_upper(list(av[2]))
            if found:
                return found
    return None


def _sample(items: _Items) -> str | None:
    """A short string the sequence matches, when easy to build (None otherwise)."""
    out = []
    for op, av in items:
        name = _name(op)
        if name == "LITERAL":
            out.append(chr(av))
        elif name in ("NOT_LITERAL", "ANY"):
            out.append("y" if name == "NOT_LITERAL" and chr(av) == "x" else "x")
        elif name == "IN":
            choice = next((c for c in "x/a0-._" if _in_set(av, c, False)), None)
            if choice is None:
                return None
            out.append(choice)
        elif name == "SUBPATTERN":
            sub = _sample(list(av[3]))
            if sub is None:
                return None
            out.append(sub)
        elif name in _REPEATS:
            sub = _sample(list(av[2]))
            if sub is None:
                return None
            out.append(sub * av[0])
        elif name == "BRANCH":
            sub = _sample(list(av[1][0]))
            if sub is None:
                return None
            out.append(sub)
        elif name != "AT":
            return None
    return "".join(out)


def _literal_prefix(pattern: Regex) -> tuple[str, bool] | None:
    """For a pattern anchored by a leading ``^``: the literal text that every match starts
    with, and whether the pattern is nothing but that text. None otherwise."""
    tree = _tree(pattern)
    if tree is None or tree[1]:
        return None
    items = tree[0]
    if not items or _name(items[0][0]) != "AT" or _name(items[0][1]) not in _BEGIN:
        return None
    text: list[str] = []
    for op, av in items[1:]:
        if _name(op) != "LITERAL":
            return "".join(text), False
        text.append(chr(av))
    return "".join(text), True


#: Texts of regexes that match every non-empty string without newlines.
_UNIVERSAL = frozenset(
    {
        "", "^", "$", ".", ".*", "^.*", ".*$", "^.*$", ".+", "^.+", ".+$", "^.+$",
        "(.*)", "^(.*)$", "(.+)", "^(.+)$", "(?:.*)", "^(?:.*)$", "(?s).*", "(?s)^.*$",
    }
)  # fmt: skip

_PATH_PROBES = ("/", "/a", "/admin", "/public/x", "/x?y=1", "/A/B", "/index.html", "/a/b/c")
_HOST_PROBES = ("example.com", "app.example.com", "a", "x.y.z", "localhost", "a-b.c0m", "0")


def _universal(pattern: Regex) -> bool:
    return pattern.pattern in _UNIVERSAL


# --------------------------------------------------------------------------- per-rule checks


def _finding(view: _View, message: str, fix: str, code: str) -> Finding:
    return Finding(WARNING, view.index, view.line, message, fix, code)


def _regex_findings(view: _View, cookies: t.Sequence[CookieConfig]) -> list[Finding]:
    out: list[Finding] = []
    host_probes = list(_HOST_PROBES)
    for cookie in cookies:
        host_probes += [cookie.domain, "app." + cookie.domain, "www." + cookie.domain]
    for pattern in view.rule.resources:
        tree = _tree(pattern)
        if tree is None:  # pragma: no cover
            continue
        items, icase = tree
        never = _impossible(items) or _after_anchor_impossible(items, "/", icase)
        if never and not any(pattern.search(p) for p in _PATH_PROBES):
            out.append(
                _finding(
                    view,
                    f"resource {pattern.pattern!r} can never match: resources are matched "
                    "against the path (which always starts with '/') plus '?' and the query",
                    "start the pattern with '^/', and put '$' only at the end",
                    "regex-never-matches",
                )
            )
            continue
        if view.rule.policy != Policy.BYPASS:
            continue
        if not _anchored(items):
            example = _unanchored_example(pattern, items)
            shown = f": it also matches {example!r}" if example else ""
            out.append(
                _finding(
                    view,
                    f"bypass resource {pattern.pattern!r} is not anchored with '^'{shown}, "
                    "so a protected path that merely contains it (even in the query) bypasses "
                    "authentication",
                    f"anchor it: {_anchored_fix(pattern.pattern)!r}",
                    "unanchored-bypass",
                )
            )
            continue
        prefix = _literal_prefix(pattern)
        if prefix is not None and prefix[1] and len(prefix[0]) > 1 and prefix[0][-1] != "/":
            text = prefix[0]  # the whole pattern is ^ + text, so it matches any extension
            out.append(
                _finding(
                    view,
                    f"bypass resource {pattern.pattern!r} also matches "
                    f"{text + '-private'!r} and {text + 'x/secret'!r}: it stops at a "
                    "prefix, not at a path segment",
                    f"end it at the segment: {'^' + re.escape(text) + '([/?].*)?$'!r}",
                    "bypass-prefix",
                )
            )
    for pattern in view.rule.domain_regex:
        tree = _tree(pattern)
        if tree is None:  # pragma: no cover
            continue
        items, icase = tree
        upper = None if icase else _required_upper(items)
        if upper is not None:
            why = f"it needs the upper-case {upper!r} but hosts are matched in lower case"
        elif _after_anchor_impossible(items, _HOST_START, icase):
            why = "host names start with a lower-case letter or a digit, which it does not allow"
        elif _impossible(items):
            why = "it requires text before '^' or after '$'"
        else:
            why = ""
        if why and not any(pattern.search(h) for h in host_probes):
            out.append(
                _finding(
                    view,
                    f"domain_regex {pattern.pattern!r} can never match: {why}",
                    "write the pattern in lower case, anchored as '^…$' around a host name",
                    "regex-never-matches",
                )
            )
    return out


#: The named groups that bind a regex to the subject (Authelia's names, case and all).
_BINDING = ("User", "Group")


def _named_group_findings(view: _View) -> list[Finding]:
    """Named groups in domain_regex or resources other than User and Group: they capture
    but bind nothing (as in Authelia), so the rule applies to every user; ``(?P<user>…)``
    is almost surely a binding misspelt."""
    out: list[Finding] = []
    for kind, patterns in (
        ("domain_regex", view.rule.domain_regex),
        ("resource", view.rule.resources),
    ):
        for pattern in patterns:
            for name in pattern.groupindex:
                if name in _BINDING:
                    continue
                meant = next((b for b in _BINDING if b.casefold() == name.casefold()), None)
                fix = (
                    f"write (?P<{meant}>…) to bind the {meant.lower()} (the case matters)"
                    if meant
                    else "make it a plain group (…) or (?:…); only (?P<User>…) and "
                    "(?P<Group>…) bind the subject"
                )
                out.append(
                    _finding(
                        view,
                        f"{kind} {pattern.pattern!r}: the named group {name!r} binds nothing "
                        "(only 'User' and 'Group', spelt so, bind the signed-in user), so the "
                        "rule applies whoever the user is",
                        fix,
                        "named-group",
                    )
                )
    return out


def _unanchored_example(pattern: Regex, items: _Items) -> str | None:
    """A protected-looking path the unanchored ``pattern`` matches, to show the danger."""
    sample = _sample(items)
    if sample is None:
        return None
    probe = "/admin?x=" + sample
    return probe if pattern.search(probe) else None


def _anchored_fix(text: str) -> str:
    if text.startswith("/"):
        return "^" + text
    if text.startswith("^"):  # an alternation with an unanchored branch: "^/a|/b"
        return f"^(?:{text[1:]})"
    return "^/(.*/)?" + text


def _cookie_findings(view: _View, config: Config) -> list[Finding]:
    cookies = config.session.cookies
    outside = [d for d in view.rule.domain if not _domain_overlaps(d, cookies)]
    if not outside or not cookies:
        return []
    roots = ", ".join(c.domain for c in cookies)
    listed = ", ".join(repr(d) for d in outside)
    if len(outside) == len(view.rule.domain) and not view.rule.domain_regex:
        message = (
            f"rule applies to no protected host: {listed} lies outside every cookie domain "
            f"({roots}), and the server answers 400 for such hosts before any rule runs"
        )
    else:
        message = (
            f"domain {listed} lies outside every cookie domain ({roots}): the server answers "
            "400 for it before any rule runs, so that entry never applies"
        )
    return [
        _finding(
            view,
            message,
            "add a [[session.cookies]] entry for that domain, or fix the name",
            "outside-cookie-domain",
        )
    ]


def _domain_overlaps(domain: str, cookies: t.Sequence[CookieConfig]) -> bool:
    base = domain.split(".", 1)[1] if domain.startswith(("*.", "{user}.", "{group}.")) else None
    for cookie in cookies:
        if base is None:
            if cookie.covers(domain):
                return True
        elif cookie.covers(base) or cookie.domain.endswith("." + base):
            return True
    return False


# --------------------------------------------------------------------------- rule order


class _View:
    """A rule's criteria in the shapes the comparisons need."""

    def __init__(self, rule: RuleConfig) -> None:
        self.rule = rule
        self.index = rule.index
        self.line = rule.line
        self.exact = frozenset(d for d in rule.domain if not d.startswith(("*.", "{")))
        self.wildcards = frozenset(d[2:] for d in rule.domain if d.startswith("*."))
        self.dynamic = frozenset(d for d in rule.domain if d.startswith("{"))
        self.regexes = frozenset((p.pattern, p.flags) for p in rule.domain_regex)
        self.universal_domain = any(
            _universal(p) and not ({"User", "Group"} & set(p.groupindex)) for p in rule.domain_regex
        )
        self.resources = frozenset((p.pattern, p.flags) for p in rule.resources)
        self.universal_resources = not rule.resources or any(
            _universal(p) or _literal_prefix(p) in (("", True), ("/", True)) for p in rule.resources
        )
        nets = [n for ref in rule.networks for n in ref.networks]
        self.networks = frozenset(nets)
        self.universal_networks = not nets or (
            any(n.prefixlen == 0 and n.version == 4 for n in nets)
            and any(n.prefixlen == 0 and n.version == 6 for n in nets)
        )
        self.methods = frozenset(rule.methods)
        self.subject = frozenset(frozenset(all_of) for all_of in rule.subject)
        self.query = frozenset(
            frozenset((c.key, c.operator, c.value) for c in all_of) for all_of in rule.query
        )
        self.has_subject = bool(
            rule.subject
            or self.dynamic
            or any(
                {"User", "Group"} & set(p.groupindex) for p in (*rule.domain_regex, *rule.resources)
            )
        )
        self.signature = (
            frozenset(rule.domain),
            self.regexes,
            self.resources,
            self.methods,
            self.networks,
            self.subject,
            self.query,
        )

    @property
    def only_domain(self) -> bool:
        """No criterion narrows the rule beyond its domains (and no subject)."""
        return (
            self.universal_resources
            and not self.query
            and not self.methods
            and self.universal_networks
            and not self.subject
        )


def _host_in(view: _View, host: str) -> bool:
    """Whether ``view`` matches the concrete ``host`` for everyone."""
    if view.universal_domain or host in view.exact:
        return True
    if any(host.endswith("." + w) for w in view.wildcards):
        return True
    return any(
        p.search(host) and not ({"User", "Group"} & set(p.groupindex))
        for p in view.rule.domain_regex
    )


def _suffix_in(view: _View, base: str) -> bool:
    """Whether ``view`` matches every proper subdomain of ``base`` for everyone."""
    return view.universal_domain or any(base == w or base.endswith("." + w) for w in view.wildcards)


def _domain_covers(a: _View, b: _View) -> bool:
    """Every host ``b`` can match (for anyone), ``a`` matches (for the same people)."""
    if not b.rule.domain and not b.rule.domain_regex:  # pragma: no cover - config forbids it
        return a.universal_domain or (not a.rule.domain and not a.rule.domain_regex)
    if a.universal_domain:
        return True
    for host in b.exact:
        if not _host_in(a, host):
            return False
    for base in b.wildcards:
        if not _suffix_in(a, base):
            return False
    for entry in b.dynamic:
        base = entry.split(".", 1)[1]
        if entry not in a.dynamic and not _suffix_in(a, base):
            return False
    return b.regexes <= a.regexes


def _resources_cover(a: _View, b: _View) -> bool:
    if a.universal_resources:
        return True
    if not b.rule.resources:
        return False
    for pb in b.rule.resources:
        if (pb.pattern, pb.flags) in a.resources:
            continue
        prefix_b = _literal_prefix(pb)
        if prefix_b is None:
            return False
        for pa in a.rule.resources:
            whole_a = _literal_prefix(pa)
            if whole_a is not None and whole_a[1] and prefix_b[0].startswith(whole_a[0]):
                break
        else:
            return False
    return True


def _networks_cover(a: _View, b: _View) -> bool:
    if a.universal_networks:
        return True
    if not b.networks:
        return False
    return all(
        any(nb.version == na.version and nb.subnet_of(na) for na in a.networks)  # type: ignore[arg-type]
        for nb in b.networks
    )


def _groups_cover(a: frozenset[frozenset[t.Any]], b: frozenset[frozenset[t.Any]]) -> bool:
    """OR-of-AND criteria: every alternative of ``b`` implies some alternative of ``a``."""
    if not a:
        return True
    if not b:
        return False
    return all(any(ga <= gb for ga in a) for gb in b)


def _covers(a: _View, b: _View, *, subject: bool = True) -> bool:
    """Every request ``b`` matches (or may match), ``a`` matches (or may match) too."""
    return (
        _domain_covers(a, b)
        and _resources_cover(a, b)
        and _groups_cover(a.query, b.query)
        and (not a.methods or (bool(b.methods) and b.methods <= a.methods))
        and _networks_cover(a, b)
        and (not subject or _groups_cover(a.subject, b.subject))
    )


def _catch_all(view: _View, cookies: t.Sequence[CookieConfig]) -> str | None:
    """'all' when the rule matches every request the server evaluates, 'subdomains' when it
    matches every subdomain of every cookie domain, else None."""
    if not view.only_domain or not cookies:
        return None
    if view.universal_domain:
        return "all"
    if not all(_suffix_in(view, c.domain) for c in cookies):
        return None
    return "all" if all(_host_in(view, c.domain) for c in cookies) else "subdomains"


def _order_findings(
    views: list[_View], cookies: t.Sequence[CookieConfig], default_policy: Policy
) -> list[Finding]:
    out: list[Finding] = []
    roots = ", ".join(c.domain for c in cookies)
    for pos, view in enumerate(views):
        catch = _catch_all(view, cookies)
        later = views[pos + 1 :]
        dead = [v.index for v in later if _covers(view, v)]
        if catch == "all" and later:
            out.append(
                _finding(
                    view,
                    f"rule matches every request (every host of {roots}, no other criteria): "
                    f"the {len(later)} rule(s) after it and default_policy "
                    f"{default_policy!r} never apply",
                    "move it to the end, or narrow it",
                    "catch-all",
                )
            )
        elif catch == "subdomains" and dead:
            out.append(
                _finding(
                    view,
                    f"rule matches every subdomain of {roots} with no other criteria: rule(s) "
                    f"{', '.join(map(str, dead))} after it can never match; only the bare "
                    "cookie domains reach later rules and default_policy",
                    "move it to the end, or narrow it",
                    "catch-all",
                )
            )
    for pos, view in enumerate(views):
        earlier = views[:pos]
        shadow = next((e for e in earlier if _covers(e, view)), None)
        if shadow is not None:
            out.append(_shadow_finding(shadow, view))
            continue
        if view.rule.policy != Policy.BYPASS:
            continue
        for prior in earlier:
            if prior.has_subject and _covers(prior, view, subject=False):
                out.append(
                    _finding(
                        view,
                        f"anonymous requests never reach this bypass: rule {prior.index} "
                        f"(line {prior.line}, {prior.rule.policy}) comes first and depends on "
                        "who the user is, so it may match them and visitors are sent to log "
                        "in; only signed-in users it does not apply to get the bypass",
                        f"move this rule above rule {prior.index}",
                        "bypass-after-subject",
                    )
                )
                break
            if prior.rule.policy == Policy.DENY and _domain_covers(prior, view):
                out.append(
                    _finding(
                        view,
                        f"bypass after the broader deny of rule {prior.index} (line "
                        f"{prior.line}): requests for these hosts that rule {prior.index} does "
                        "not catch (other paths, methods, networks or users) skip "
                        "authentication entirely",
                        f"check that this is intended; narrow this rule or move it above rule "
                        f"{prior.index}",
                        "bypass-after-deny",
                    )
                )
                break
    return out


def _shadow_finding(first: _View, later: _View) -> Finding:
    where = f"rule {first.index} (line {first.line})"
    if first.signature == later.signature:
        if first.rule.policy == later.rule.policy:
            message = f"rule duplicates {where}: it can never match"
            fix = "delete it"
        else:
            message = (
                f"rule has the same criteria as {where}, which comes first: policy "
                f"{later.rule.policy!r} here never applies, {first.rule.policy!r} does"
            )
            fix = "delete one of the two, or make their criteria differ"
        return _finding(later, message, fix, "duplicate")
    same = (
        " (same policy, so this rule is redundant)"
        if first.rule.policy == later.rule.policy
        else ""
    )
    return _finding(
        later,
        f"rule can never match: {where}, policy {first.rule.policy!r}, comes first and "
        f"matches every request this rule could match{same}",
        f"move it above rule {first.index}, narrow rule {first.index}, or delete it",
        "shadowed",
    )
