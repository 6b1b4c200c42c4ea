"""Property tests for server.core.rules: the indexed engine against a naive reference.

``AccessControl`` indexes rules by host and caches candidate lists, which is exactly where a
first-match engine can go subtly wrong (a rule skipped, two rules swapped). These tests build
random rule sets from a small vocabulary that makes rules overlap a lot, and check that the
engine equals a straightforward first-match implementation written from Authelia's rules
(security.md §4): first match wins, appending rules after the deciding one changes nothing,
and neither the host's case nor the order of groups changes a decision.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
import typing as t
from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from server.core.config import AccessControlConfig
from server.core.config import NetworkRef
from server.core.config import QueryCondition
from server.core.config import RuleConfig
from server.core.config import parse_network
from server.core.errors import InvalidTargetError
from server.core.regex import Regex
from server.core.rules import AccessControl
from server.core.rules import AccessRequest
from server.core.rules import Decision

POLICIES = ("bypass", "one_factor", "two_factor", "deny")
DOMAINS = (
    "example.com", "app.example.com", "*.example.com", "*.app.example.com",
    "{user}.example.com", "{group}.example.com", "john.example.com", "other.org", "*.org",
)  # fmt: skip
DOMAIN_REGEXES = tuple(
    Regex(p)
    for p in (
        r"^app\.",
        r"^(?P<User>[a-z.]+)\.example\.com$",
        r"^(?P<Group>[a-z]+)\.example\.com$",
        r"^(?P<User>[a-z]+)-(?P<Group>[a-z]+)\.example\.com$",
        r"\.org$",
        r"^api-[0-9]+",
    )
)
RESOURCES = tuple(
    Regex(p)
    for p in (
        "^/admin",
        "^/api([/?].*)?$",
        "public",
        "^/$",
        "x=1",
        # named groups bind to the subject (SPEC §7.5): anchored, unanchored (the first match
        # decides), both groups, a group that may take no part, a group in the query
        r"^/(?P<User>[a-zA-Z0-9.]+)/personal(/|/.*)?$",
        r"^/(?P<Group>[a-zA-Z0-9]+)/group(/|/.*)?$",
        r"(?P<User>[a-z]+)/",
        r"^/(?P<Group>[a-zA-Z]+)/(?P<User>[a-zA-Z.]+)$",
        r"^/(?:(?P<User>[a-z]+)/me|public)",
        r"owner=(?P<User>[a-zA-Z]+)",
    )
)
METHODS = ("GET", "POST", "DELETE")
NETWORKS = tuple(
    NetworkRef(text, (parse_network(text),))
    for text in ("10.0.0.0/8", "192.168.1.0/24", "fec0::/64", "::ffff:10.0.0.0/104")
)
SUBJECTS = ("user:john", "user:bob", "group:dev", "group:admins")
CONDITIONS = (
    QueryCondition("debug", "present"),
    QueryCondition("debug", "absent"),
    QueryCondition("mode", "equal", "admin"),
    QueryCondition("mode", "not equal", "admin"),
    QueryCondition("id", "pattern", "^[0-9]+$", Regex("^[0-9]+$")),
    QueryCondition("id", "not pattern", "^[0-9]+$", Regex("^[0-9]+$")),
)
#: Subject and query criteria (outer OR of inner AND), drawn whole: cheaper than nested lists.
SUBJECT_CHOICES: tuple[tuple[tuple[str, ...], ...], ...] = (
    (), (), (), (), ((SUBJECTS[0],),), ((SUBJECTS[3],),), ((SUBJECTS[1],), (SUBJECTS[2],)),
    ((SUBJECTS[3], SUBJECTS[1]), (SUBJECTS[3], SUBJECTS[2])), ((SUBJECTS[2], SUBJECTS[0]),),
)  # fmt: skip
QUERY_CHOICES: tuple[tuple[tuple[QueryCondition, ...], ...], ...] = (
    (), (), (), (), (), (), ((CONDITIONS[0],),), ((CONDITIONS[1], CONDITIONS[2]),),
    ((CONDITIONS[3],), (CONDITIONS[4],)), ((CONDITIONS[5],),), ((CONDITIONS[2], CONDITIONS[4]),),
)  # fmt: skip

HOSTS = (
    "example.com", "app.example.com", "x.app.example.com", "john.example.com",
    "dev.example.com", "a.dev.example.com", "john-dev.example.com", "other.org",
    "api-1.example.com", "j.doe.example.com", "x.org", "example.net",
)  # fmt: skip
PATHS = ("/", "/admin", "/admin/x", "/api", "/public/a", "/x", "/john/personal", "/dev/group")
#: Paths that the binding resources match in many ways (test_resource_binding_equals_naive).
BINDING_PATHS = (
    "/john/personal", "/John/personal/x", "/bob/personal", "/j.doe/personal", "/dev/group",
    "/Dev/group/x", "/admins/group", "/dev/john", "/DEV/J.Doe", "/admins/bob", "/john/me",
    "/sam/me", "/public", "/x/john/", "/files", "/",
)  # fmt: skip
QUERIES = (
    "", "x=1", "owner=john", "debug", "mode=admin", "id=42",
    "mode=user&id=x", "mode=admin&mode=user",
    "mode=admin&mode=admin", "id=1&id=22", "id=1&id=x&mode=", "debug=%zz", "x=1;debug", "mode",
)  # fmt: skip
IPS = (None, "10.1.1.1", "192.168.1.5", "fec0::5", "::ffff:10.2.2.2", "8.8.8.8")
USERS = (None, "john", "bob", "sam", "j.doe")
GROUPS = ("dev", "admins", "Dev")


def _some(values: t.Sequence[t.Any], max_size: int = 2) -> st.SearchStrategy[tuple[t.Any, ...]]:
    return st.lists(st.sampled_from(values), max_size=max_size, unique=True).map(tuple)


#: Strategies built once: building them inside a draw costs more than drawing from them.
_DOMAIN = _some(DOMAINS)
_DOMAIN_ONE = st.sampled_from(DOMAINS).map(lambda d: (d,))
_DOMAIN_REGEX = _some(DOMAIN_REGEXES, 1)
_SUBJECT = st.sampled_from(SUBJECT_CHOICES)
_QUERY = st.sampled_from(QUERY_CHOICES)
_POLICY = st.sampled_from(POLICIES)
#: Criteria are usually absent, so that a fair share of requests is decided by some rule.
_NONE: st.SearchStrategy[tuple[t.Any, ...]] = st.just(())
_RESOURCES = st.one_of(_NONE, _NONE, _some(RESOURCES))
_METHODS = st.one_of(_NONE, _NONE, _some(METHODS))
_NETWORKS = st.one_of(_NONE, _NONE, _some(NETWORKS))


@st.composite
def rule_configs(draw: st.DrawFn, index: int = 0) -> RuleConfig:
    """A random rule (index fixed later) with domain or domain_regex and any other criteria."""
    domain = draw(_DOMAIN)
    domain_regex = draw(_DOMAIN_REGEX)
    if not domain and not domain_regex:
        domain = draw(_DOMAIN_ONE)
    return RuleConfig(
        index=index,
        policy=draw(_POLICY),
        domain=domain,
        domain_regex=domain_regex,
        resources=draw(_RESOURCES),
        methods=draw(_METHODS),
        networks=draw(_NETWORKS),
        subject=draw(_SUBJECT),
        query=draw(_QUERY),
    )


def reindex(rules: t.Sequence[RuleConfig]) -> tuple[RuleConfig, ...]:
    """The rules with ``index`` set to their position."""
    return tuple(dataclasses.replace(rule, index=i) for i, rule in enumerate(rules))


rule_sets = st.lists(rule_configs(), max_size=8).map(reindex)
defaults = st.sampled_from(POLICIES)


_HOST = st.sampled_from(HOSTS)
_PATH = st.sampled_from(PATHS)
_QUERY_STRING = st.sampled_from(QUERIES)
_METHOD = st.sampled_from((*METHODS, "PUT"))
_IP = st.sampled_from(IPS)
_USER = st.sampled_from(USERS)
_GROUPS = _some(GROUPS, 3)


@st.composite
def requests(draw: st.DrawFn) -> AccessRequest:
    """A random request from the vocabulary (lowercase host)."""
    user = draw(_USER)
    ip = draw(_IP)
    return AccessRequest(
        host=draw(_HOST),
        path=draw(_PATH),
        query=draw(_QUERY_STRING),
        method=draw(_METHOD),
        ip=ipaddress.ip_address(ip) if ip else None,
        user=user,
        groups=draw(_GROUPS) if user else (),
    )


_BINDING_RESOURCES = st.lists(
    st.sampled_from((RESOURCES[3], *RESOURCES[5:])), min_size=1, max_size=2, unique=True
).map(tuple)
_SOME_SUBJECT = st.one_of(_NONE, _NONE, _NONE, _SUBJECT)


@st.composite
def resource_rules(draw: st.DrawFn, index: int = 0) -> RuleConfig:
    """A rule on app.example.com whose resources are mostly binding ones, sometimes with a
    subject too: the general rule sets rarely let a resource decide."""
    return RuleConfig(
        index=index,
        policy=draw(_POLICY),
        domain=("app.example.com",),
        domain_regex=(),
        resources=draw(_BINDING_RESOURCES),
        subject=draw(_SOME_SUBJECT),
    )


@st.composite
def binding_requests(draw: st.DrawFn) -> AccessRequest:
    """A request for app.example.com on a path the binding resources care about."""
    user = draw(st.one_of(_USER, st.sampled_from(USERS[1:])))
    return AccessRequest(
        host="app.example.com",
        path=draw(st.sampled_from(BINDING_PATHS)),
        query=draw(st.sampled_from(("", "", "owner=john", "owner=Bob"))),
        user=user,
        groups=draw(_GROUPS) if user else (),
    )


# --------------------------------------------------------------------------- reference


@functools.cache
def _py(pattern: Regex) -> re.Pattern[str]:
    """The reference matches with Python's own engine (the patterns here mean the same in
    both), so the engine's RE2 calls and literal shortcuts are held to an independent one."""
    return re.compile(pattern.pattern)


def _has_subject(rule: RuleConfig) -> bool:
    return bool(
        rule.subject
        or any(d.startswith(("{user}.", "{group}.")) for d in rule.domain)
        or any({"User", "Group"} & set(p.groupindex) for p in rule.domain_regex)
        or any({"User", "Group"} & set(p.groupindex) for p in rule.resources)
    )


def _binds(found: re.Match[str], req: AccessRequest) -> bool:
    """Whether a match of a regex binds the signed-in user of ``req`` (named groups User and
    Group compared case-insensitively; a group that took no part captured nothing, which
    equals no name); an anonymous request, or a regex without such groups, binds anyone."""
    names = found.re.groupindex
    if req.user is None or not ({"User", "Group"} & set(names)):
        return True
    folded = {g.casefold() for g in req.groups}
    user_ok = "User" not in names or (found["User"] or "").casefold() == req.user
    group_ok = "Group" not in names or (found["Group"] or "").casefold() in folded
    return user_ok and group_ok


def _domain_ok(rule: RuleConfig, host: str, req: AccessRequest) -> bool:
    anon = req.user is None
    folded = {g.casefold() for g in req.groups}
    for entry in rule.domain:
        if entry.startswith("*.") and host.endswith(entry[1:]):
            return True
        for marker in ("{user}.", "{group}."):
            if entry.startswith(marker):
                base = entry[len(marker) - 1 :]
                if anon:
                    if host.endswith(base) and len(host) > len(base):
                        return True
                elif marker == "{user}." and host == f"{req.user}{base}":
                    return True
                elif marker == "{group}.":
                    label, _, rest = host.partition(".")
                    if "." + rest == base and label.casefold() in folded:
                        return True
        if host == entry:
            return True
    for pattern in rule.domain_regex:
        found = _py(pattern).search(host)
        if found and _binds(found, req):
            return True
    return not rule.domain and not rule.domain_regex


def _resource_ok(rule: RuleConfig, resource: str, req: AccessRequest) -> bool:
    """Authelia's MatchesResources: any regex whose first match binds the user."""
    for pattern in rule.resources:
        found = _py(pattern).search(resource)
        if found and _binds(found, req):
            return True
    return not rule.resources


#: Kleene's three values as numbers: AND is min, OR is max.
_F, _UNKNOWN, _T = 0, 1, 2


def _condition(cond: QueryCondition, values: dict[str, list[str]]) -> int:
    """A condition over every value of its key: unknown when the values disagree."""
    if cond.operator in ("present", "absent"):
        return _T if (cond.key in values) == (cond.operator == "present") else _F
    answers = set()
    for got in values.get(cond.key, [""]):
        answers.add(
            {
                "equal": got == cond.value,
                "not equal": got != cond.value,
                "pattern": bool(cond.pattern and _py(cond.pattern).search(got)),
                "not pattern": not (cond.pattern and _py(cond.pattern).search(got)),
            }[cond.operator]
        )
    return _UNKNOWN if len(answers) > 1 else (_T if answers.pop() else _F)


class Refused(Exception):
    """The reference refuses the request (400)."""


def _query_ok(rule: RuleConfig, raw: str) -> bool:
    if ";" in raw or re.search("%(?![0-9a-fA-F]{2})", raw):
        raise Refused
    values: dict[str, list[str]] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True, errors="replace"):
        values.setdefault(key, []).append(value)
    result = max(min(_condition(c, values) for c in group) for group in rule.query)
    if result == _UNKNOWN:
        raise Refused
    return result == _T


def decide(access: AccessControl, req: AccessRequest) -> Decision | str:
    """The engine's decision, or "refused" when it raises (the server answers 400)."""
    try:
        return access.evaluate(req)
    except InvalidTargetError:
        return "refused"


def naive(rules: t.Sequence[RuleConfig], default: str, req: AccessRequest) -> Decision | str:
    """First-match evaluation, criterion by criterion, with no index and no cache."""
    try:
        return _naive(rules, default, req)
    except Refused:
        return "refused"


def _naive(rules: t.Sequence[RuleConfig], default: str, req: AccessRequest) -> Decision:
    host = req.host.lower()
    resource = f"{req.path}?{req.query}" if req.query else req.path
    ip = req.ip
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    for rule in rules:
        if not _domain_ok(rule, host, req):
            continue
        if not _resource_ok(rule, resource, req):
            continue
        if rule.query and not _query_ok(rule, req.query):
            continue
        if rule.methods and req.method not in rule.methods:
            continue
        nets = [n for ref in rule.networks for n in ref.networks]
        if nets and (ip is None or not any(ip in n for n in nets)):
            continue
        if rule.subject and req.user is not None:
            ok = any(
                all(
                    (req.user == s[5:]) if s.startswith("user:") else (s[6:] in req.groups)
                    for s in group
                )
                for group in rule.subject
            )
            if not ok:
                continue
        return Decision(rule.policy, rule.index, _has_subject(rule))
    return Decision(default, None, False)


def engine(rules: t.Sequence[RuleConfig], default: str) -> AccessControl:
    """The engine under test for these rules."""
    return AccessControl(AccessControlConfig(default, (), tuple(rules)))


# --------------------------------------------------------------------------- properties


@given(rule_sets, defaults, st.lists(requests(), min_size=1, max_size=6))
def test_engine_equals_naive_reference(
    rules: tuple[RuleConfig, ...], default: str, reqs: list[AccessRequest]
) -> None:
    """The indexed, cached engine decides exactly like the naive first-match reference."""
    access = engine(rules, default)
    for req in reqs:
        assert decide(access, req) == naive(rules, default, req)


@settings(max_examples=300)  # the domain of this one is small: make sure it is walked
@given(
    st.lists(resource_rules(), min_size=1, max_size=6).map(reindex),
    defaults,
    st.lists(binding_requests(), min_size=1, max_size=8),
)
def test_resource_binding_equals_naive(
    rules: tuple[RuleConfig, ...], default: str, reqs: list[AccessRequest]
) -> None:
    """Named groups in resources (SPEC §7.5): the engine and explain decide like Authelia's
    MatchesResources, written out naively."""
    access = engine(rules, default)
    for req in reqs:
        decision = decide(access, req)
        assert decision == naive(rules, default, req)
        assert access.explain(req).decision == decision


@given(rule_sets, defaults, requests())
def test_explain_equals_evaluate(
    rules: tuple[RuleConfig, ...], default: str, req: AccessRequest
) -> None:
    """``explain`` reports the decision of ``evaluate`` and one result per rule."""
    access = engine(rules, default)
    decision = decide(access, req)
    if decision == "refused":
        with pytest.raises(InvalidTargetError):
            access.explain(req)
        return
    explanation = access.explain(req)
    assert explanation.decision == decision
    assert len(explanation.rules) == len(rules)
    if explanation.rule is not None:
        assert all(r.result == "miss" for r in explanation.rules[: explanation.rule])
        assert explanation.rules[explanation.rule].result != "miss"
    else:
        assert all(r.result == "miss" for r in explanation.rules)


@given(rule_sets, defaults, requests(), st.lists(rule_configs(), min_size=1, max_size=4), st.data())
def test_rules_after_the_match_change_nothing(
    rules: tuple[RuleConfig, ...],
    default: str,
    req: AccessRequest,
    extra: list[RuleConfig],
    data: st.DataObject,
) -> None:
    """Inserting rules anywhere after the deciding rule never changes the decision."""
    before = decide(engine(rules, default), req)
    if isinstance(before, str) or before.rule is None:
        return
    at = data.draw(st.integers(before.rule + 1, len(rules)))
    grown = reindex([*rules[:at], *extra, *rules[at:]])
    assert decide(engine(grown, default), req) == before


@given(rule_sets, defaults, requests(), st.data())
def test_host_case_never_matters(
    rules: tuple[RuleConfig, ...], default: str, req: AccessRequest, data: st.DataObject
) -> None:
    """Upper-casing any letters of the host never changes the decision."""
    access = engine(rules, default)
    flips = data.draw(st.lists(st.booleans(), min_size=len(req.host), max_size=len(req.host)))
    host = "".join(c.upper() if flip else c for c, flip in zip(req.host, flips, strict=True))
    assert decide(access, dataclasses.replace(req, host=host)) == decide(access, req)


@given(rule_sets, defaults, requests(), st.randoms(use_true_random=False))
def test_group_order_never_matters(
    rules: tuple[RuleConfig, ...], default: str, req: AccessRequest, rnd: t.Any
) -> None:
    """The order of the user's groups never changes the decision."""
    access = engine(rules, default)
    shuffled = list(req.groups)
    rnd.shuffle(shuffled)
    shuffled_req = dataclasses.replace(req, groups=tuple(shuffled))
    assert decide(access, shuffled_req) == decide(access, req)


@given(rule_sets, defaults, requests())
def test_no_match_means_default_policy(
    rules: tuple[RuleConfig, ...], default: str, req: AccessRequest
) -> None:
    """When no rule decides, the default policy applies with no rule and no subject."""
    decision = decide(engine(rules, default), req)
    if isinstance(decision, str):
        return
    if decision.rule is None:
        assert decision == Decision(default, None, False)
    else:
        assert decision.policy == rules[decision.rule].policy
