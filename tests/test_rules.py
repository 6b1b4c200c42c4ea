"""Tests for server.core.rules: Authelia's access-control semantics, table by table.

Most scenarios are reconstructed from Authelia's ``internal/authorization/authorizer_test.go``
(John: groups dev, admins, IP 10.0.0.8; Bob: no groups, 10.0.0.7; Sam: fec0::1; Sally:
dev/admins, fec0::2; the anonymous visitor: 127.0.0.1), expressed in authctl's TOML. Each
case checks ``evaluate`` and that ``explain`` reaches the same decision.
"""

from __future__ import annotations

import ipaddress
import tomllib
import typing as t
from pathlib import Path

import pytest

from server.core.config import AccessControlConfig
from server.core.config import RuleConfig
from server.core.config import parse_config
from server.core.rules import HOST_CACHE_SIZE
from server.core.rules import AccessControl
from server.core.rules import AccessRequest
from server.core.rules import AmbiguousQueryError
from server.core.rules import Decision
from server.core.rules import parse_query

HEAD = """\
[session]
store = "memory"

[[session.cookies]]
domain = "example.com"
portal_url = "https://auth.example.com"

[access_control]
default_policy = "{default}"
networks = {{ internal = ["10.0.0.0/8", "192.168.0.0/16"], office = ["203.0.113.7"] }}

"""


def build(rules: str, default: str = "deny") -> AccessControl:
    """An engine for the given ``[[access_control.rules]]`` TOML, through the real loader."""
    text = HEAD.format(default=default) + rules
    config = parse_config(text, tomllib.loads(text), Path("/srv/authctl/authctl.toml"))
    return AccessControl(config.access_control)


class Who(t.TypedDict, total=False):
    """Keyword arguments of AccessRequest that describe the requester."""

    user: str | None
    groups: tuple[str, ...]
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None


def who(user: str | None, groups: tuple[str, ...] = (), ip: str | None = None) -> Who:
    """A requester: user (None: anonymous), groups and client IP."""
    return {"user": user, "groups": groups, "ip": ipaddress.ip_address(ip) if ip else None}


JOHN = who("john", ("dev", "admins"), "10.0.0.8")
BOB = who("bob", (), "10.0.0.7")
SAM = who("sam", (), "fec0::1")
SALLY = who("sally", ("dev", "admins"), "fec0::2")
ANON = who(None, (), "127.0.0.1")
X_ADMINS = who("x", ("Admins",))
BOB_ADMIN = who("bob", ("admins",))
MAPPED = who("x", ip="::ffff:10.1.2.3")
MAPPED_JOHN = who("x", ip="::ffff:10.0.0.8")
ADMIN_PAGE = "/admin/index.html"
LONG = "/a/longer/rule/abc"


def request(
    host: str, path: str = "/", query: str = "", method: str = "GET", who: Who = ANON
) -> AccessRequest:
    """An AccessRequest for ``host`` + ``path`` (+ query) by ``who``."""
    return AccessRequest(host=host, path=path, query=query, method=method, **who)


R = AccessRequest
Expect = tuple[str, int | None]

# --------------------------------------------------------------------------- scenarios

SCENARIOS: dict[str, str] = {
    "wildcard": """
[[access_control.rules]]
domain = "*.example.com"
policy = "bypass"
""",
    "dynamic": """
[[access_control.rules]]
domain = "{user}.example.com"
policy = "one_factor"

[[access_control.rules]]
domain = "{group}.example.com"
policy = "two_factor"
""",
    "multiple-domains": """
[[access_control.rules]]
domain = ["*.example.com", "other.com"]
policy = "bypass"
""",
    "factors": """
[[access_control.rules]]
domain = "single.example.com"
policy = "one_factor"

[[access_control.rules]]
domain = "protected.example.com"
policy = "two_factor"

[[access_control.rules]]
domain = "public.example.com"
policy = "bypass"
""",
    "precedence": """
[[access_control.rules]]
domain = "protected.example.com"
subject = "user:john"
policy = "two_factor"

[[access_control.rules]]
domain = "protected.example.com"
policy = "one_factor"

[[access_control.rules]]
domain = "*.example.com"
policy = "deny"
""",
    "domain-subject": """
[[access_control.rules]]
domain = "public.example.com"
policy = "bypass"

[[access_control.rules]]
domain = "one-factor.example.com"
policy = "one_factor"

[[access_control.rules]]
domain = "two-factor.example.com"
policy = "two_factor"

[[access_control.rules]]
domain = "*.example.com"
subject = ["group:admins"]
policy = "one_factor"

[[access_control.rules]]
domain = "*.example.com"
policy = "two_factor"
""",
    "domain-regex": r"""
[[access_control.rules]]
domain_regex = ['^.*\.example\.com$']
policy = "bypass"

[[access_control.rules]]
domain_regex = ['^.*\.example2\.com$']
policy = "one_factor"

[[access_control.rules]]
domain_regex = ['^(?P<User>[a-zA-Z0-9]+)\.regex\.com$']
policy = "one_factor"

[[access_control.rules]]
domain_regex = ['^group-(?P<Group>[a-zA-Z0-9]+)\.regex\.com$']
policy = "two_factor"

[[access_control.rules]]
domain_regex = ['^.*\.(one|two)\.com$']
policy = "two_factor"
""",
    "domain-or-regex": r"""
[[access_control.rules]]
domain = "app.example.com"
domain_regex = ['^api-[0-9]+\.example\.com$']
policy = "one_factor"
""",
    "subjects-or": """
[[access_control.rules]]
domain = "protected.example.com"
subject = ["group:admins", "user:bob"]
policy = "one_factor"
""",
    "subjects-and": """
[[access_control.rules]]
domain = "protected.example.com"
subject = [["group:admins", "user:bob"], ["group:admins", "group:dev"]]
policy = "one_factor"
""",
    "networks": """
[[access_control.rules]]
domain = "protected.example.com"
networks = ["192.168.1.8", "10.0.0.8"]
policy = "bypass"

[[access_control.rules]]
domain = "protected.example.com"
networks = ["10.0.0.7"]
policy = "one_factor"

[[access_control.rules]]
domain = "net.example.com"
networks = ["10.0.0.0/8"]
policy = "two_factor"

[[access_control.rules]]
domain = "ipv6.example.com"
networks = ["fec0::1/64"]
policy = "two_factor"

[[access_control.rules]]
domain = "ipv6-alt.example.com"
networks = ["fec0::1"]
policy = "two_factor"

[[access_control.rules]]
domain = "named.example.com"
networks = ["office", "internal"]
policy = "one_factor"
""",
    "methods": """
[[access_control.rules]]
domain = "protected.example.com"
methods = ["OPTIONS", "HEAD", "GET", "CONNECT", "TRACE"]
policy = "bypass"

[[access_control.rules]]
domain = "protected.example.com"
methods = ["PUT", "PATCH", "POST"]
policy = "one_factor"

[[access_control.rules]]
domain = "protected.example.com"
methods = ["DELETE"]
policy = "two_factor"
""",
    "resources": """
[[access_control.rules]]
domain = "resource.example.com"
resources = ["^/case/[a-z]+$", "^/$"]
policy = "bypass"

[[access_control.rules]]
domain = "resource.example.com"
resources = ["^/bypass/.*$", "^/$", "embedded"]
policy = "bypass"

[[access_control.rules]]
domain = "resource.example.com"
resources = ["^/one_factor/.*$"]
policy = "one_factor"

[[access_control.rules]]
domain = "resource.example.com"
resources = ["^/a/longer/rule/.*$"]
policy = "two_factor"

[[access_control.rules]]
domain = "resource.example.com"
resources = ["^/api([/?].*)?$"]
policy = "one_factor"
""",
    "resource-subject": """
[[access_control.rules]]
domain = "public.example.com"
resources = ["^/admin/.*$"]
subject = ["group:admins"]
policy = "one_factor"

[[access_control.rules]]
domain = "public.example.com"
resources = ["^/admin/.*$"]
policy = "deny"

[[access_control.rules]]
domain = "public.example.com"
policy = "bypass"

[[access_control.rules]]
domain = "private.example.com"
subject = ["group:admins"]
policy = "two_factor"
""",
    "query": """
[[access_control.rules]]
domain = "q.example.com"
query = [[{ key = "debug", operator = "present" }]]
policy = "deny"

[[access_control.rules]]
domain = "q.example.com"
query = [[{ key = "mode", value = "admin" }, { key = "token", operator = "absent" }]]
policy = "two_factor"

[[access_control.rules]]
domain = "q.example.com"
query = [
    [{ key = "mode", operator = "not equal", value = "" }],
    [{ key = "id", operator = "pattern", value = "^[0-9]+$" }],
]
policy = "one_factor"

[[access_control.rules]]
domain = "q.example.com"
query = [[{ key = "lang", operator = "not pattern", value = "^(en|fr)$" }]]
policy = "deny"

[[access_control.rules]]
domain = "q.example.com"
policy = "bypass"
""",
    "mixed": r"""
[[access_control.rules]]
domain = "exact.example.com"
policy = "one_factor"

[[access_control.rules]]
domain = "*.wild.example.com"
policy = "two_factor"

[[access_control.rules]]
domain = "{user}.users.example.com"
policy = "one_factor"

[[access_control.rules]]
domain = "{group}.groups.example.com"
policy = "two_factor"

[[access_control.rules]]
domain_regex = ['^re-(?P<User>[a-z0-9.]+)\.example\.com$']
policy = "one_factor"

[[access_control.rules]]
domain_regex = ['^plain-[0-9]+\.example\.com$']
policy = "bypass"
""",
    "anonymous-deny": """
[[access_control.rules]]
domain = "app.example.com"
subject = "group:banned"
policy = "deny"

[[access_control.rules]]
domain = "app.example.com"
policy = "one_factor"
""",
}

CASES: list[tuple[str, AccessRequest, Expect]] = [
    # Authelia TestShouldCheckMultiDomainRule: *.example.com does not match example.com.
    ("wildcard", request("public.example.com", who=JOHN), ("bypass", 0)),
    ("wildcard", request("private.example.com", who=JOHN), ("bypass", 0)),
    ("wildcard", request("public.example.com", "/elsewhere", who=JOHN), ("bypass", 0)),
    ("wildcard", request("example.com", who=JOHN), ("deny", None)),
    ("wildcard", request("public.example.com.c", who=JOHN), ("deny", None)),
    ("wildcard", request("public.example.co", who=JOHN), ("deny", None)),
    ("wildcard", request("notexample.com", who=JOHN), ("deny", None)),
    ("wildcard", request("a.b.example.com", who=ANON), ("bypass", 0)),
    # TestShouldCheckDynamicDomainRules.
    ("dynamic", request("john.example.com", who=JOHN), ("one_factor", 0)),
    ("dynamic", request("dev.example.com", who=JOHN), ("two_factor", 1)),
    ("dynamic", request("admins.example.com", who=JOHN), ("two_factor", 1)),
    ("dynamic", request("othergroup.example.com", who=JOHN), ("deny", None)),
    ("dynamic", request("bob.example.com", who=JOHN), ("deny", None)),
    ("dynamic", request("anything.example.com", who=ANON), ("one_factor", 0)),
    ("dynamic", request("example.com", who=ANON), ("deny", None)),
    ("dynamic", request("a.dev.example.com", who=JOHN), ("deny", None)),
    ("dynamic", request("j.doe.example.com", who=who("j.doe")), ("one_factor", 0)),
    ("dynamic", request("dev.example.com", who=who("x", ("DEV",))), ("two_factor", 1)),
    # TestShouldCheckMultipleDomainRule.
    ("multiple-domains", request("other.com", who=JOHN), ("bypass", 0)),
    ("multiple-domains", request("other.com", "/elsewhere", who=JOHN), ("bypass", 0)),
    ("multiple-domains", request("private.other.com", who=JOHN), ("deny", None)),
    ("multiple-domains", request("x.example.com", who=JOHN), ("bypass", 0)),
    # TestShouldCheckFactorsPolicy.
    ("factors", request("public.example.com", who=JOHN), ("bypass", 2)),
    ("factors", request("protected.example.com", who=JOHN), ("two_factor", 1)),
    ("factors", request("single.example.com", who=JOHN), ("one_factor", 0)),
    ("factors", request("example.com", who=JOHN), ("deny", None)),
    # TestShouldCheckRulePrecedence.
    ("precedence", request("protected.example.com", who=JOHN), ("two_factor", 0)),
    ("precedence", request("protected.example.com", who=BOB), ("one_factor", 1)),
    ("precedence", request("public.example.com", who=JOHN), ("deny", 2)),
    ("precedence", request("protected.example.com", who=ANON), ("two_factor", 0)),
    # TestShouldCheckDomainMatching.
    ("domain-subject", request("public.example.com", who=JOHN), ("bypass", 0)),
    ("domain-subject", request("public.example.com", who=ANON), ("bypass", 0)),
    ("domain-subject", request("one-factor.example.com", who=BOB), ("one_factor", 1)),
    ("domain-subject", request("two-factor.example.com", who=ANON), ("two_factor", 2)),
    ("domain-subject", request("x.example.com", who=JOHN), ("one_factor", 3)),
    ("domain-subject", request("x.example.com", who=BOB), ("two_factor", 4)),
    ("domain-subject", request("x.example.com", who=ANON), ("one_factor", 3)),
    # TestShouldCheckDomainRegexMatching.
    ("domain-regex", request("john.regex.com", who=JOHN), ("one_factor", 2)),
    ("domain-regex", request("john.regex.com", who=BOB), ("deny", None)),
    ("domain-regex", request("public.example.com", who=BOB), ("bypass", 0)),
    ("domain-regex", request("public.example2.com", who=ANON), ("one_factor", 1)),
    ("domain-regex", request("group-dev.regex.com", who=JOHN), ("two_factor", 3)),
    ("domain-regex", request("group-dev.regex.com", who=BOB), ("deny", None)),
    ("domain-regex", request("group-dev.regex.com", who=ANON), ("two_factor", 3)),
    ("domain-regex", request("anyone.regex.com", who=ANON), ("one_factor", 2)),
    ("domain-regex", request("x.one.com", who=BOB), ("two_factor", 4)),
    ("domain-regex", request("group-devs.regex.com", who=JOHN), ("deny", None)),
    ("domain-regex", request("group-admins.regex.com", who=X_ADMINS), ("two_factor", 3)),
    # domain and domain_regex are ORed.
    ("domain-or-regex", request("app.example.com", who=BOB), ("one_factor", 0)),
    ("domain-or-regex", request("api-7.example.com", who=BOB), ("one_factor", 0)),
    ("domain-or-regex", request("api-x.example.com", who=BOB), ("deny", None)),
    # TestShouldCheckSubjectsMatching / TestShouldCheckMultipleSubjectsMatching.
    ("subjects-or", request("protected.example.com", who=JOHN), ("one_factor", 0)),
    ("subjects-or", request("protected.example.com", who=BOB), ("one_factor", 0)),
    ("subjects-or", request("protected.example.com", who=SAM), ("deny", None)),
    ("subjects-or", request("protected.example.com", who=ANON), ("one_factor", 0)),
    ("subjects-or", request("protected.example.com", who=X_ADMINS), ("deny", None)),
    ("subjects-and", request("protected.example.com", who=JOHN), ("one_factor", 0)),
    ("subjects-and", request("protected.example.com", who=BOB), ("deny", None)),
    ("subjects-and", request("protected.example.com", who=BOB_ADMIN), ("one_factor", 0)),
    ("subjects-and", request("protected.example.com", who=ANON), ("one_factor", 0)),
    # TestShouldCheckIPMatching, plus IPv4-mapped IPv6 and a missing client IP.
    ("networks", request("protected.example.com", who=JOHN), ("bypass", 0)),
    ("networks", request("protected.example.com", who=BOB), ("one_factor", 1)),
    ("networks", request("protected.example.com", who=ANON), ("deny", None)),
    ("networks", request("net.example.com", who=JOHN), ("two_factor", 2)),
    ("networks", request("net.example.com", who=BOB), ("two_factor", 2)),
    ("networks", request("net.example.com", who=ANON), ("deny", None)),
    ("networks", request("ipv6-alt.example.com", who=SALLY), ("deny", None)),
    ("networks", request("ipv6-alt.example.com", who=SAM), ("two_factor", 4)),
    ("networks", request("ipv6.example.com", who=SALLY), ("two_factor", 3)),
    ("networks", request("ipv6.example.com", who=SAM), ("two_factor", 3)),
    ("networks", request("ipv6.example.com", who=JOHN), ("deny", None)),
    ("networks", request("net.example.com", who=MAPPED), ("two_factor", 2)),
    ("networks", request("protected.example.com", who=MAPPED_JOHN), ("bypass", 0)),
    ("networks", request("net.example.com", who=who("x")), ("deny", None)),
    ("networks", request("named.example.com", who=who("x", ip="203.0.113.7")), ("one_factor", 5)),
    ("networks", request("named.example.com", who=who("x", ip="192.168.4.4")), ("one_factor", 5)),
    ("networks", request("named.example.com", who=who("x", ip="203.0.113.8")), ("deny", None)),
    # TestShouldCheckMethodMatching.
    ("methods", request("protected.example.com", who=JOHN), ("bypass", 0)),
    ("methods", request("protected.example.com", method="OPTIONS", who=BOB), ("bypass", 0)),
    ("methods", request("protected.example.com", method="HEAD", who=ANON), ("bypass", 0)),
    ("methods", request("protected.example.com", method="PUT", who=JOHN), ("one_factor", 1)),
    ("methods", request("protected.example.com", method="post", who=ANON), ("one_factor", 1)),
    ("methods", request("protected.example.com", method="DELETE", who=ANON), ("two_factor", 2)),
    ("methods", request("protected.example.com", method="PROPFIND", who=ANON), ("deny", None)),
    # TestShouldCheckResourceMatching (paths as server.core.urls normalises them).
    ("resources", request("resource.example.com", who=JOHN), ("bypass", 0)),
    ("resources", request("resource.example.com", "/bypass/abc", who=JOHN), ("bypass", 1)),
    ("resources", request("resource.example.com", "/bypass/", who=JOHN), ("bypass", 1)),
    ("resources", request("resource.example.com", "/one_factor/abc", who=JOHN), ("one_factor", 2)),
    ("resources", request("resource.example.com", "/xyz/embedded/abc", who=JOHN), ("bypass", 1)),
    ("resources", request("resource.example.com", LONG, who=JOHN), ("two_factor", 3)),
    ("resources", request("resource.example.com", "/case/abc", who=JOHN), ("bypass", 0)),
    ("resources", request("resource.example.com", "/case/ABC", who=JOHN), ("deny", None)),
    ("resources", request("resource.example.com", "/api", "x=1", who=JOHN), ("one_factor", 4)),
    ("resources", request("resource.example.com", "/apis", who=JOHN), ("deny", None)),
    ("resources", request("resource.example.com", "/x", "q=embedded", who=JOHN), ("bypass", 1)),
    ("resources", request("resource.example.com", "/", "x=1", who=JOHN), ("deny", None)),
    # TestShouldMatchResourceWithSubjectRules.
    ("resource-subject", request("public.example.com", who=BOB), ("bypass", 2)),
    ("resource-subject", request("public.example.com", ADMIN_PAGE, who=JOHN), ("one_factor", 0)),
    ("resource-subject", request("public.example.com", ADMIN_PAGE, who=BOB), ("deny", 1)),
    ("resource-subject", request("public.example.com", ADMIN_PAGE, who=ANON), ("one_factor", 0)),
    ("resource-subject", request("private.example.com", who=JOHN), ("two_factor", 3)),
    ("resource-subject", request("private.example.com", who=BOB), ("deny", None)),
    ("resource-subject", request("private.example.com", who=ANON), ("two_factor", 3)),
    # Query criteria: a repeated key must satisfy equal/pattern with every value and
    # not equal/not pattern with none; absent keys read as '', + is a space.
    ("query", request("q.example.com", query="debug"), ("deny", 0)),
    ("query", request("q.example.com", query="debug="), ("deny", 0)),
    ("query", request("q.example.com", query="mode=admin"), ("two_factor", 1)),
    ("query", request("q.example.com", query="mode=admin&token=x"), ("one_factor", 2)),
    ("query", request("q.example.com", query="mode=admin&mode=admin"), ("two_factor", 1)),
    ("query", request("q.example.com", query="lang=en&lang=fr"), ("bypass", 4)),
    ("query", request("q.example.com", query="lang=de&lang=it"), ("deny", 3)),
    ("query", request("q.example.com", query="id=42&id=7"), ("one_factor", 2)),
    ("query", request("q.example.com", query="mode=admin&mode=user&token=1"), ("one_factor", 2)),
    ("query", request("q.example.com", query="id=42"), ("one_factor", 2)),
    ("query", request("q.example.com", query="id=4x2"), ("deny", 3)),
    ("query", request("q.example.com", query="lang=en"), ("bypass", 4)),
    ("query", request("q.example.com", query="lang=de"), ("deny", 3)),
    ("query", request("q.example.com"), ("deny", 3)),
    ("query", request("q.example.com", query="m%6Fde=adm%69n"), ("two_factor", 1)),
    ("query", request("q.example.com", query="lang=en+"), ("deny", 3)),
    # Mixed-case hosts against every rule type (GHSA-j748).
    ("mixed", request("EXACT.Example.COM", who=BOB), ("one_factor", 0)),
    ("mixed", request("X.WILD.example.com", who=BOB), ("two_factor", 1)),
    ("mixed", request("BOB.Users.Example.Com", who=BOB), ("one_factor", 2)),
    ("mixed", request("DEV.groups.EXAMPLE.com", who=JOHN), ("two_factor", 3)),
    ("mixed", request("RE-John.example.COM", who=JOHN), ("one_factor", 4)),
    ("mixed", request("Plain-12.Example.com", who=BOB), ("bypass", 5)),
    ("mixed", request("wild.example.com", who=BOB), ("deny", None)),
    # A deny rule with a subject sends anonymous visitors to log in (has_subject).
    ("anonymous-deny", request("app.example.com", who=ANON), ("deny", 0)),
    ("anonymous-deny", request("app.example.com", who=BOB), ("one_factor", 1)),
    ("anonymous-deny", request("app.example.com", who=who("eve", ("banned",))), ("deny", 0)),
]

_ENGINES: dict[str, AccessControl] = {}


def engine(name: str) -> AccessControl:
    """The (cached) engine of scenario ``name``."""
    if name not in _ENGINES:
        _ENGINES[name] = build(SCENARIOS[name])
    return _ENGINES[name]


def _case_id(case: tuple[str, AccessRequest, Expect]) -> str:
    name, req, _ = case
    user = req.user or "anon"
    tail = req.path + ("?" + req.query if req.query else "")
    return f"{name}:{req.method}:{req.host}{tail}:{user}"


@pytest.mark.parametrize(("scenario", "req", "expected"), CASES, ids=[_case_id(c) for c in CASES])
def test_evaluate(scenario: str, req: AccessRequest, expected: Expect) -> None:
    """Each request gets the policy and deciding rule Authelia would give it."""
    decision = engine(scenario).evaluate(req)
    assert (decision.policy, decision.rule) == expected


@pytest.mark.parametrize(("scenario", "req", "expected"), CASES, ids=[_case_id(c) for c in CASES])
def test_explain_agrees(scenario: str, req: AccessRequest, expected: Expect) -> None:
    """``explain`` reaches exactly the decision ``evaluate`` does, with one row per rule."""
    access = engine(scenario)
    explanation = access.explain(req)
    assert explanation.decision == access.evaluate(req)
    assert [r.index for r in explanation.rules] == list(range(access.rule_count))


@pytest.mark.parametrize(
    ("scenario", "req", "has_subject"),
    [
        ("anonymous-deny", request("app.example.com", who=ANON), True),
        ("anonymous-deny", request("app.example.com", who=BOB), False),
        ("dynamic", request("someone.example.com", who=ANON), True),
        ("domain-regex", request("x.regex.com", who=ANON), True),
        ("domain-regex", request("x.example.com", who=ANON), False),
        ("wildcard", request("example.com", who=ANON), False),
        ("subjects-or", request("protected.example.com", who=JOHN), True),
    ],
    ids=["deny-subject-anon", "fallthrough", "user-domain", "user-regex", "plain-regex",
         "default", "subject-hit"],
)  # fmt: skip
def test_has_subject(scenario: str, req: AccessRequest, has_subject: bool) -> None:
    """has_subject is true exactly when the deciding rule depends on who the user is."""
    assert engine(scenario).evaluate(req).has_subject is has_subject


def test_no_rules_default_policy() -> None:
    """With no rules every request gets the default policy and no rule index."""
    access = build("", default="two_factor")
    assert access.evaluate(R("anything.example.com")) == Decision("two_factor", None, False)
    assert access.explain(R("x.example.com")).rules == ()


def test_rule_without_domain_matches_any_host() -> None:
    """A rule with no domain criterion (the loader forbids it) matches every host, as in
    Authelia's TestShouldMatchAnyDomainIfBlank."""
    rules = (
        RuleConfig(0, "bypass", methods=("OPTIONS", "HEAD", "GET")),
        RuleConfig(1, "one_factor", methods=("PUT", "PATCH")),
        RuleConfig(2, "two_factor", methods=("DELETE",)),
    )
    access = AccessControl(AccessControlConfig("deny", (), rules))
    for method, expected in (("GET", 0), ("PATCH", 1), ("DELETE", 2), ("POST", None)):
        req = R("one.domain-four.com", method=method, user="john")
        assert access.evaluate(req).rule == expected
        assert access.explain(req).rule == expected


def test_request_defaults() -> None:
    """An AccessRequest needs only a host: path '/', no query, GET, anonymous."""
    req = AccessRequest("app.example.com")
    assert (req.path, req.query, req.method, req.ip, req.user, req.groups) == (
        "/", "", "GET", None, None, ()
    )  # fmt: skip


def test_invalid_client_ip_matches_no_network() -> None:
    """A client IP that is not an address at all matches no ``networks`` criterion."""
    access = engine("networks")
    junk = AccessRequest("net.example.com", ip=t.cast("t.Any", "not-an-ip"), user="x")
    assert access.evaluate(junk).rule is None
    as_text = AccessRequest("net.example.com", ip=t.cast("t.Any", "10.1.1.1"), user="x")
    assert access.evaluate(as_text).rule == 2
    number = AccessRequest("net.example.com", ip=t.cast("t.Any", 167837953), user="x")
    assert access.evaluate(number).rule is None


def test_mapped_network_in_config() -> None:
    """An IPv4-mapped network in the config matches plain IPv4 clients."""
    access = build(
        '[[access_control.rules]]\ndomain = "a.example.com"\nnetworks = ["::ffff:10.0.0.0/104"]\n'
        'policy = "bypass"\n'
    )
    assert access.evaluate(request("a.example.com", who=who("x", ip="10.9.9.9"))).rule == 0
    assert access.evaluate(request("a.example.com", who=who("x", ip="11.0.0.1"))).rule is None


def test_host_cache_overflow_stays_correct() -> None:
    """More distinct hosts than the cache holds still get the right decisions."""
    access = engine("wildcard")
    for i in range(HOST_CACHE_SIZE + 10):
        assert access.evaluate(R(f"h{i}.example.com")).rule == 0
    assert access.evaluate(R("example.com")).rule is None


# --------------------------------------------------------------------------- explain reasons


def reasons(scenario: str, req: AccessRequest) -> list[tuple[str, str]]:
    """(result, reason) of every rule."""
    return [(r.result, r.reason) for r in engine(scenario).explain(req).rules]


def test_explain_domain_and_subject_reasons() -> None:
    """Misses name the domain that did not match; anonymous subject rules are maybe."""
    rows = reasons("precedence", request("protected.example.com", who=ANON))
    assert rows[0] == ("maybe", "subject [user:john] needs a signed-in user")
    assert rows[1] == ("hit", "domain 'protected.example.com' matches 'protected.example.com'")
    assert rows[2] == ("hit", "domain 'protected.example.com' matches '*.example.com'")
    rows = reasons("precedence", request("example.com", who=ANON))
    assert rows[2] == ("miss", "domain 'example.com' does not match '*.example.com'")
    rows = reasons("precedence", request("protected.example.com", who=BOB))
    assert rows[0] == ("miss", "user 'bob' (no groups) matches none of [user:john]")
    rows = reasons("subjects-and", request("protected.example.com", who=JOHN))
    assert rows[0] == (
        "hit", "domain 'protected.example.com' matches 'protected.example.com'; user 'john' "
        "matches [group:admins and user:bob] or [group:admins and group:dev]",
    )  # fmt: skip


def test_explain_method_network_resource_query_reasons() -> None:
    """Each criterion names itself in the reason of a miss or a hit."""
    rows = reasons("methods", request("protected.example.com", method="POST", who=BOB))
    assert rows[0] == ("miss", "method POST not in CONNECT, GET, HEAD, OPTIONS, TRACE")
    assert rows[1][0] == "hit"
    assert rows[1][1].endswith("method POST in PATCH, POST, PUT")
    rows = reasons("networks", request("net.example.com", who=who("x")))
    assert rows[2] == ("miss", "no valid client IP; the rule needs networks 10.0.0.0/8")
    rows = reasons("networks", request("named.example.com", who=who("x", ip="::ffff:10.0.0.1")))
    assert rows[5] == (
        "hit", "domain 'named.example.com' matches 'named.example.com'; client IP 10.0.0.1 in "
        "office, internal",
    )  # fmt: skip
    rows = reasons("networks", request("ipv6.example.com", who=JOHN))
    assert rows[3] == ("miss", "client IP 10.0.0.8 not in fec0::1/64")
    rows = reasons("resources", request("resource.example.com", "/nope", "a=b", who=JOHN))
    assert rows[2] == ("miss", "resource '/nope?a=b' does not match '^/one_factor/.*$'")
    assert rows[1] == ("miss", "resource '/nope?a=b' does not match any of '^/bypass/.*$', '^/$', "
                       "'embedded'")  # fmt: skip
    rows = reasons("query", request("q.example.com", query="mode=x"))
    assert rows[0] == ("miss", "query 'mode=x' does not satisfy [debug present]")
    assert rows[1][1] == "query 'mode=x' does not satisfy [mode equal 'admin' and token absent]"
    assert rows[2][0] == "hit"
    rows = reasons("query", request("q.example.com"))
    assert rows[3] == ("hit", "domain 'q.example.com' matches 'q.example.com'; query (empty) "
                       "satisfies [lang not pattern '^(en|fr)$']")  # fmt: skip


def test_explain_dynamic_domain_reasons() -> None:
    """{user}/{group} domains and named groups are maybe for anonymous, bound for users."""
    rows = reasons("dynamic", request("dev.example.com", who=ANON))
    assert rows[0] == (
        "maybe", "domain 'dev.example.com' matches '{user}.example.com' only for some signed-in "
        "users",
    )  # fmt: skip
    rows = reasons("dynamic", request("dev.example.com", who=JOHN))
    assert rows[0] == (
        "miss", "domain 'dev.example.com' matches '{user}.example.com' but not for user 'john' "
        "(groups: dev, admins)",
    )  # fmt: skip
    assert rows[1] == (
        "hit", "domain 'dev.example.com' matches '{group}.example.com' for user 'john'"
    )  # fmt: skip
    rows = reasons("domain-regex", request("bob.regex.com", who=BOB))
    assert rows[2] == (
        "hit", r"domain 'bob.regex.com' matches regex '^(?P<User>[a-zA-Z0-9]+)\.regex\.com$' "
        "with User='bob' for user 'bob'",
    )  # fmt: skip
    rows = reasons("domain-regex", request("nothing.org", who=BOB))
    assert rows[0] == ("miss", r"domain 'nothing.org' does not match regex '^.*\.example\.com$'")
    rows = reasons("domain-or-regex", request("x.org", who=BOB))
    assert rows[0] == (
        "miss", "domain 'x.org' does not match any of 'app.example.com', "
        r"regex '^api-[0-9]+\.example\.com$'",
    )  # fmt: skip


def test_explain_domain_regex_shows_the_binding() -> None:
    """A binding domain_regex names what its groups captured, for every outcome."""
    rows = reasons("domain-regex", request("group-ops.regex.com", who=BOB))
    assert rows[3] == (
        "miss", r"domain 'group-ops.regex.com' matches regex "
        r"'^group-(?P<Group>[a-zA-Z0-9]+)\.regex\.com$' with Group='ops' but not for user "
        "'bob' (no groups)",
    )  # fmt: skip
    rows = reasons("domain-regex", request("john.regex.com", who=ANON))
    assert rows[2] == (
        "maybe", r"domain 'john.regex.com' matches regex '^(?P<User>[a-zA-Z0-9]+)\.regex\.com$' "
        "with User='john' only for some signed-in users",
    )  # fmt: skip


def test_explain_marks_rules_after_the_decision() -> None:
    """Rules after the deciding one are still evaluated and reported on their own."""
    explanation = engine("domain-subject").explain(request("x.example.com", who=BOB))
    assert explanation.rule == 4
    assert [r.result for r in explanation.rules] == ["miss", "miss", "miss", "miss", "hit"]
    explanation = engine("domain-subject").explain(request("public.example.com", who=BOB))
    assert [r.result for r in explanation.rules] == ["hit", "miss", "miss", "miss", "hit"]
    assert explanation.rules[0].policy == "bypass"
    assert explanation.rules[0].line is not None


# --------------------------------------------------------------------------- query parsing


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("", {}),
        ("a=1", {"a": ("1",)}),
        ("a=1&a=2", {"a": ("1", "2")}),
        ("a", {"a": ("",)}),
        ("a=", {"a": ("",)}),
        ("=x", {"": ("x",)}),
        ("a=b=c", {"a": ("b=c",)}),
        ("a+b=c+d", {"a b": ("c d",)}),
        ("a=%41%42", {"a": ("AB",)}),
        ("a=%3B", {"a": (";",)}),
        ("&&a=1&", {"a": ("1",)}),
        ("a=%ff", {"a": ("\ufffd",)}),
        ("%61=1&a=2", {"a": ("1", "2")}),
    ],
    ids=["empty", "one", "every-value", "bare-key", "empty-value", "empty-key",
         "equals-in-value", "plus", "escapes", "encoded-semicolon", "empty-pairs",
         "invalid-utf8", "encoded-key"],
)  # fmt: skip
def test_parse_query(raw: str, parsed: dict[str, tuple[str, ...]]) -> None:
    """Queries parse like Go's url.Query(), keeping every value of a repeated key."""
    assert parse_query(raw) == parsed


@pytest.mark.parametrize(
    "raw",
    ["a=%zz&b=1", "debug=%zz", "debug=1%", "a=%4", "%=1", "a=1;b=2&c=3", "x=1;debug=1", ";"],
)
def test_ambiguous_query_is_refused(raw: str) -> None:
    """A ';' or a malformed '%' is read differently by different apps: no rule guesses."""
    with pytest.raises(AmbiguousQueryError):
        parse_query(raw)


@pytest.mark.parametrize(
    "query",
    [
        "debug=%zz", "debug=1%", "x=1;debug=1", "lang=e%zzn&lang=fr", "debug;x=1&lang=en",
        "mode=admin&mode=user", "mode=user&mode=admin", "lang=en&lang=de", "lang=de&lang=en",
        "lang=en&lang", "id=42&id=4x2",
    ],
)  # fmt: skip
def test_ambiguous_query_fails_closed(query: str) -> None:
    """No rule is evaded by a query Go would drop part of, or by a repeated key whose values
    the rule judges differently (apps read the first, the last or all): refused (item 6)."""
    access = engine("query")
    with pytest.raises(AmbiguousQueryError):
        access.evaluate(request("q.example.com", query=query))
    with pytest.raises(AmbiguousQueryError):
        access.explain(request("q.example.com", query=query))


def test_ambiguous_query_passes_where_no_rule_reads_it() -> None:
    """Only a request that reaches a query criterion is refused."""
    access = engine("query")
    req = request("other.example.com", query="a=1;b=%zz")
    assert access.evaluate(req) == access.explain(req).decision


def test_repeated_key_gets_no_bypass_meant_for_one_value() -> None:
    """?format=rss&format=html does not get the bypass meant for rss."""
    access = build(
        "[[access_control.rules]]\n"
        'domain = "q.example.com"\n'
        'query = [[{ key = "format", value = "rss" }]]\n'
        'policy = "bypass"\n'
    )
    assert access.evaluate(request("q.example.com", query="format=rss")).policy == "bypass"
    assert access.evaluate(request("q.example.com", query="format=rss&format=rss")).rule == 0
    for query in ("format=rss&format=html", "format=html&format=rss", "format=rss&format"):
        with pytest.raises(AmbiguousQueryError, match="'format' is repeated"):
            access.evaluate(request("q.example.com", query=query))


def test_explain_marks_later_ambiguous_rules() -> None:
    """Explain shows where a rule after the deciding one would refuse the query."""
    access = build(
        '[[access_control.rules]]\ndomain = "q.example.com"\npolicy = "bypass"\n\n'
        '[[access_control.rules]]\ndomain = "q.example.com"\n'
        'query = [[{ key = "a", value = "1" }]]\npolicy = "deny"\n'
    )
    for query in ("a=1&a=2", "a=1;b"):
        explanation = access.explain(request("q.example.com", query=query))
        assert explanation.decision == access.evaluate(request("q.example.com", query=query))
        assert explanation.rule == 0
        assert explanation.rules[1].result == "miss"
        assert "refused (400)" in explanation.rules[1].reason
