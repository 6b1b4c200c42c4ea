"""Named groups ``(?P<User>…)`` and ``(?P<Group>…)`` in ``resources`` (SPEC §7.5).

They bind to the subject exactly as in ``domain_regex``: the text a ``User`` group captured
must equal the user's name, a ``Group`` group one of the user's groups, both compared
case-insensitively; for an anonymous request a match is only possible (the visitor is sent
to sign in, even on a ``deny`` rule, and the decision is taken again after login).

The first table is Authelia's own ``TestShouldCheckResourceSubjectMatching``
(internal/authorization/authorizer_test.go), case for case; the rest covers what that test
does not: both groups in one regex, a group that took no part in the match, a plain
resource beside a binding one, the query part, explain's reasons, the bypass refusal and a
real forward-auth request.
"""

from __future__ import annotations

import tomllib
import typing as t
from pathlib import Path

import pytest

from server.core.config import parse_config
from server.core.errors import ConfigError
from server.core.rules import AccessControl
from server.core.rules import AccessRequest
from server.core.rules import Decision
from tests.apphelpers import APP_CONFIG
from tests.apphelpers import build as build_app
from tests.test_rules import ANON
from tests.test_rules import BOB
from tests.test_rules import HEAD
from tests.test_rules import JOHN
from tests.test_rules import Who
from tests.test_rules import build
from tests.test_rules import request
from tests.test_rules import who

#: Authelia's rules for TestShouldCheckResourceSubjectMatching, in authctl's TOML.
AUTHELIA_RULES = r"""
[[access_control.rules]]
domain = "id.example.com"
policy = "one_factor"
resources = [
    '^/(?P<User>[a-zA-Z0-9]+)/personal(/|/.*)?$',
    '^/(?P<Group>[a-zA-Z0-9]+)/group(/|/.*)?$',
]

[[access_control.rules]]
domain = "id.example.com"
policy = "deny"
resources = ['^/([a-zA-Z0-9]+)/personal(/|/.*)?$', '^/([a-zA-Z0-9]+)/group(/|/.*)?$']

[[access_control.rules]]
domain = "id.example.com"
policy = "bypass"
"""

# Authelia's test, line for line: (who, path, expected level).
AUTHELIA_VECTORS: list[tuple[str, Who, str, str]] = [
    # Accessing the unprotected root.
    ("john", JOHN, "/", "bypass"),
    ("bob", BOB, "/", "bypass"),
    ("anonymous", ANON, "/", "bypass"),
    # Accessing Personal page.
    ("john", JOHN, "/john/personal", "one_factor"),
    ("john", JOHN, "/John/personal", "one_factor"),
    ("bob", BOB, "/bob/personal", "one_factor"),
    ("bob", BOB, "/Bob/personal", "one_factor"),
    # Accessing an invalid users Personal page.
    ("john", JOHN, "/invaliduser/personal", "deny"),
    ("bob", BOB, "/invaliduser/personal", "deny"),
    ("anonymous", ANON, "/invaliduser/personal", "one_factor"),
    # Accessing another users Personal page.
    ("john", JOHN, "/bob/personal", "deny"),
    ("anonymous", ANON, "/bob/personal", "one_factor"),
    ("john", JOHN, "/Bob/personal", "deny"),
    ("anonymous", ANON, "/Bob/personal", "one_factor"),
    ("bob", BOB, "/john/personal", "deny"),
    ("anonymous", ANON, "/john/personal", "one_factor"),
    ("bob", BOB, "/John/personal", "deny"),
    ("anonymous", ANON, "/John/personal", "one_factor"),
    # Accessing a Group page.
    ("john", JOHN, "/dev/group", "one_factor"),
    ("john", JOHN, "/admins/group", "one_factor"),
    ("bob", BOB, "/dev/group", "deny"),
    ("bob", BOB, "/admins/group", "deny"),
    ("anonymous", ANON, "/dev/group", "one_factor"),
    ("anonymous", ANON, "/admins/group", "one_factor"),
    # Accessing an invalid group's Group page.
    ("john", JOHN, "/invalidgroup/group", "deny"),
    ("bob", BOB, "/invalidgroup/group", "deny"),
    ("anonymous", ANON, "/invalidgroup/group", "one_factor"),
]


@pytest.fixture(scope="module")
def authelia() -> AccessControl:
    return build(AUTHELIA_RULES)


def check(engine: AccessControl, req: AccessRequest) -> Decision:
    """``evaluate``'s decision, after checking that ``explain`` reaches the same one."""
    decision = engine.evaluate(req)
    assert engine.explain(req).decision == decision
    return decision


@pytest.mark.parametrize(
    ("name", "subject", "path", "policy"),
    AUTHELIA_VECTORS,
    ids=[f"{name}-{path}" for name, _, path, _ in AUTHELIA_VECTORS],
)
def test_authelia_resource_subject_matching(
    authelia: AccessControl, name: str, subject: Who, path: str, policy: str
) -> None:
    """Authelia's vectors give Authelia's levels."""
    assert check(authelia, request("id.example.com", path, who=subject)).policy == policy


def test_binding_rule_has_subject(authelia: AccessControl) -> None:
    """A rule with a binding resource depends on who asks (Authelia's HasSubjects): an
    anonymous match is only possible, so the server sends the visitor to sign in."""
    anon = authelia.evaluate(request("id.example.com", "/john/personal"))
    assert anon == Decision("one_factor", 0, True)
    john = authelia.evaluate(request("id.example.com", "/john/personal", who=JOHN))
    assert john == Decision("one_factor", 0, True)
    # the plain twin (rule 1) does not depend on the user
    assert authelia.evaluate(request("id.example.com", "/x/personal", who=JOHN)) == Decision(
        "deny", 1, False
    )


MORE = r"""
[[access_control.rules]]
domain = "both.example.com"
resources = ['^/(?P<Group>[a-zA-Z]+)/(?P<User>[a-zA-Z.]+)(/.*)?$']
policy = "one_factor"

[[access_control.rules]]
domain = "optional.example.com"
resources = ['^/(?:(?P<User>[a-z]+)/me|open)(/.*)?$']
policy = "one_factor"

[[access_control.rules]]
domain = "mixed.example.com"
resources = ['^/public(/.*)?$', '^/(?P<User>[a-z]+)(/.*)?$']
policy = "two_factor"

[[access_control.rules]]
domain = "query.example.com"
resources = ['^/files\?owner=(?P<User>[a-z]+)$']
policy = "one_factor"

[[access_control.rules]]
domain = "deny.example.com"
resources = ['^/(?P<User>[a-z]+)/secret$']
policy = "deny"

[[access_control.rules]]
domain = [
    "both.example.com", "optional.example.com", "mixed.example.com", "query.example.com",
    "deny.example.com",
]
policy = "bypass"
"""


@pytest.mark.parametrize(
    ("host", "path", "query", "subject", "policy", "rule"),
    [
        # both groups in one regex: both must hold
        ("both.example.com", "/dev/john", "", JOHN, "one_factor", 0),
        ("both.example.com", "/DEV/John/x", "", JOHN, "one_factor", 0),
        ("both.example.com", "/dev/bob", "", JOHN, "bypass", 5),
        ("both.example.com", "/ops/john", "", JOHN, "bypass", 5),
        ("both.example.com", "/dev/john", "", ANON, "one_factor", 0),
        ("both.example.com", "/dev/bob", "", who("bob", ("Dev",)), "one_factor", 0),
        # a group that took no part captured '': it equals no user
        ("optional.example.com", "/open", "", JOHN, "bypass", 5),
        ("optional.example.com", "/open", "", ANON, "one_factor", 1),
        ("optional.example.com", "/john/me", "", JOHN, "one_factor", 1),
        ("optional.example.com", "/bob/me", "", JOHN, "bypass", 5),
        # a plain resource matches for everyone, the binding one only for its user
        ("mixed.example.com", "/public/x", "", BOB, "two_factor", 2),
        ("mixed.example.com", "/bob/x", "", BOB, "two_factor", 2),
        ("mixed.example.com", "/john/x", "", BOB, "bypass", 5),
        ("mixed.example.com", "/john/x", "", ANON, "two_factor", 2),
        # the query is part of the resource
        ("query.example.com", "/files", "owner=john", JOHN, "one_factor", 3),
        ("query.example.com", "/files", "owner=bob", JOHN, "bypass", 5),
        ("query.example.com", "/files", "owner=bob", ANON, "one_factor", 3),
        # deny bound to a user: that user is refused, others pass, anonymous must sign in
        ("deny.example.com", "/john/secret", "", JOHN, "deny", 4),
        ("deny.example.com", "/john/secret", "", BOB, "bypass", 5),
        ("deny.example.com", "/john/secret", "", ANON, "deny", 4),
    ],
)
def test_more_bindings(
    host: str, path: str, query: str, subject: Who, policy: str, rule: int
) -> None:
    engine = build(MORE)
    decision = check(engine, request(host, path, query, who=subject))
    assert (decision.policy, decision.rule) == (policy, rule)


def test_user_name_is_compared_case_insensitively_both_ways() -> None:
    """Upper case in the path and in the user's groups: still the same names."""
    engine = build(AUTHELIA_RULES)
    shouting = who("bob", ("ADMINS",))
    assert engine.evaluate(request("id.example.com", "/BOB/personal", who=shouting)).rule == 0
    assert engine.evaluate(request("id.example.com", "/Admins/group", who=shouting)).rule == 0


# --------------------------------------------------------------------------- explain


def reasons(engine: AccessControl, req: AccessRequest) -> list[tuple[str, str]]:
    return [(r.result, r.reason) for r in engine.explain(req).rules]


def test_explain_shows_the_binding(authelia: AccessControl) -> None:
    """explain names the regex, what its groups captured and whom that binds."""
    personal = r"'^/(?P<User>[a-zA-Z0-9]+)/personal(/|/.*)?$'"
    group = r"'^/(?P<Group>[a-zA-Z0-9]+)/group(/|/.*)?$'"
    rows = reasons(authelia, request("id.example.com", "/John/personal", who=JOHN))
    assert rows[0] == (
        "hit",
        "domain 'id.example.com' matches 'id.example.com'; resource '/John/personal' matches "
        f"{personal} with User='John' for user 'john'",
    )
    rows = reasons(authelia, request("id.example.com", "/john/personal", who=BOB))
    assert rows[0] == (
        "miss",
        f"resource '/john/personal' matches {personal} with User='john' but not for user "
        "'bob' (no groups)",
    )
    rows = reasons(authelia, request("id.example.com", "/dev/group"))
    assert rows[0] == (
        "maybe",
        f"resource '/dev/group' matches {group} with Group='dev' only for some signed-in users",
    )
    rows = reasons(authelia, request("id.example.com", "/dev/group", who=JOHN))
    assert rows[0][1].endswith(f"matches {group} with Group='dev' for user 'john'")
    rows = reasons(authelia, request("id.example.com", "/ops/group", who=JOHN))
    assert rows[0] == (
        "miss",
        f"resource '/ops/group' matches {group} with Group='ops' but not for user 'john' "
        "(groups: dev, admins)",
    )
    rows = reasons(authelia, request("id.example.com", "/"))
    assert rows[0] == (
        "miss",
        f"resource '/' does not match any of {personal}, {group}",
    )


def test_explain_prefers_a_plain_resource() -> None:
    """A plain resource that matches decides for everyone: no binding is shown."""
    rows = reasons(build(MORE), request("mixed.example.com", "/public/x"))
    assert rows[2] == (
        "hit",
        "domain 'mixed.example.com' matches 'mixed.example.com'; resource '/public/x' matches "
        "'^/public(/.*)?$'",
    )


def test_explain_both_groups() -> None:
    rows = reasons(build(MORE), request("both.example.com", "/dev/bob", who=JOHN))
    assert rows[0][0] == "miss"
    assert "with Group='dev', User='bob' but not for user 'john'" in rows[0][1]


# --------------------------------------------------------------------------- config


def test_bypass_with_a_binding_resource_is_refused() -> None:
    """As for domain_regex: a bypass lets anonymous visitors through before anyone is known,
    so it cannot depend on who the user is (Authelia accepts this one; authctl refuses)."""
    text = (
        HEAD.format(default="deny")
        + "[[access_control.rules]]\ndomain = 'id.example.com'\n"
        + "resources = ['^/(?P<User>[a-z]+)/']\npolicy = 'bypass'\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tomllib.loads(text), Path("/srv/authctl/authctl.toml"))
    problem = caught.value.problems[0]
    assert problem.key == "access_control.rules[0].policy"
    assert "named groups" in problem.message


def test_other_named_groups_bind_nothing() -> None:
    """Only ``User`` and ``Group``, with that case, bind; ``user`` is an ordinary group
    (as in Authelia; the linter warns about it) and may go with a bypass."""
    engine = build(
        "[[access_control.rules]]\ndomain = 'id.example.com'\n"
        "resources = ['^/(?P<user>[a-z]+)/']\npolicy = 'bypass'\n"
    )
    assert engine.evaluate(request("id.example.com", "/x/", who=JOHN)) == Decision(
        "bypass", 0, False
    )


# --------------------------------------------------------------------------- served


def test_forward_auth_with_a_binding_resource(tmp_path: Path, clock: t.Any) -> None:
    """Through the real app: anonymous is sent to sign in, the owner passes, others get 403."""
    config = APP_CONFIG.replace(
        '[[access_control.rules]]\ndomain = "public.example.com"',
        '[[access_control.rules]]\ndomain = "home.example.com"\n'
        "resources = ['^/(?P<User>[a-zA-Z]+)(/.*)?$']\npolicy = \"one_factor\"\n\n"
        '[[access_control.rules]]\ndomain = "home.example.com"\npolicy = "deny"\n\n'
        '[[access_control.rules]]\ndomain = "public.example.com"',
    )
    h = build_app(tmp_path, clock, config)
    url = "https://home.example.com/alice/notes"
    anon = h.forward_auth(url)
    assert anon.status_int == 302
    assert anon.headers["Location"].startswith("https://auth.example.com/?rd=")
    alice = h.forward_auth(url, cookie=h.login("alice"))
    assert alice.status_int == 200
    assert alice.headers["Remote-User"] == "alice"
    assert h.forward_auth(url, cookie=h.login("bob")).status_int == 403
    assert h.forward_auth("https://home.example.com/Bob/x", cookie=h.login("bob")).status_int == 200
