"""The portal API's route table (server/web/routes.py): every endpoint declares its guards,
one dispatcher applies them (issue 14 §2; SPEC §3.2, §3.4; security.md §2.I)."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest

from server.web.routes import ELEVATED
from server.web.routes import JSON_BODY
from server.web.routes import OPTIONAL_JSON_BODY
from server.web.routes import SAME_ORIGIN
from server.web.routes import USER
from server.web.routes import RateLimit
from server.web.routes import Route
from server.web.routes import RouteTable
from server.web.routes import SignedIn
from tests.apphelpers import Harness
from tests.apphelpers import build

#: SPEC §3.2's endpoints (Authelia's names) and the few read-only helpers the portal uses.
EXPECTED = {
    ("GET", "/api/health"),
    ("HEAD", "/api/health"),
    ("GET", "/api/state"),
    ("GET", "/api/configuration"),
    ("GET", "/api/configuration/password-policy"),
    ("GET", "/api/user/info"),
    ("POST", "/api/firstfactor"),
    ("POST", "/api/logout"),
    ("POST", "/api/secondfactor/totp"),
    ("DELETE", "/api/secondfactor/totp"),
    ("GET", "/api/user/session/elevation"),
    ("POST", "/api/user/session/elevation"),
    ("PUT", "/api/user/session/elevation"),
    ("PUT", "/api/secondfactor/totp/register"),
    ("POST", "/api/secondfactor/totp/register"),
    ("DELETE", "/api/secondfactor/totp/register"),
    ("GET", "/api/secondfactor/totp/register/qr.svg"),
    ("POST", "/api/reset-password/identity/start"),
    ("POST", "/api/reset-password/identity/finish"),
    ("POST", "/api/reset-password"),
    ("DELETE", "/api/reset-password"),
    ("POST", "/api/change-password"),
    ("GET", "/api/user/sessions"),
    ("DELETE", "/api/user/sessions"),
    ("DELETE", "/api/user/sessions/{handle}"),
    # SPEC §7.1: passkeys and security keys
    ("GET", "/api/secondfactor/webauthn"),
    ("POST", "/api/secondfactor/webauthn"),
    ("GET", "/api/firstfactor/passkey"),
    ("POST", "/api/firstfactor/passkey"),
    ("GET", "/api/secondfactor/webauthn/credentials"),
    ("PUT", "/api/secondfactor/webauthn/credential/register"),
    ("POST", "/api/secondfactor/webauthn/credential/register"),
    ("DELETE", "/api/secondfactor/webauthn/credential/register"),
    ("PUT", "/api/secondfactor/webauthn/credential/{id}"),
    ("DELETE", "/api/secondfactor/webauthn/credential/{id}"),
    ("POST", "/api/user/info/2fa_method"),
    # SPEC §7.6: personal access tokens
    ("GET", "/api/user/tokens"),
    ("POST", "/api/user/tokens"),
    ("DELETE", "/api/user/tokens/{id}"),
}


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    from tests.conftest import Clock

    return build(tmp_path_factory.mktemp("routes"), Clock())


def _routes() -> list[Route]:
    """The table of a fully wired app (module import time: for parametrize ids)."""
    import tempfile

    from tests.conftest import Clock

    with tempfile.TemporaryDirectory() as tmp:
        return list(build(Path(tmp), Clock()).app.routes)


ROUTES = _routes()
CHANGING = [r for r in ROUTES if r.changes_state]


def _id(route: Route) -> str:
    return f"{route.method} {route.path}"


def test_the_table_holds_exactly_the_specified_endpoints() -> None:
    """Names are interfaces (SPEC §3.2): nothing added, nothing lost, nothing twice."""
    pairs = [(r.method, r.path) for r in ROUTES]
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == EXPECTED


@pytest.mark.parametrize("route", CHANGING, ids=_id)
def test_every_state_changing_route_takes_same_origin_json_only(route: Route) -> None:
    """Login CSRF and cross-site form posts (SPEC §3.4): the same-origin guard comes first,
    and the body must be application/json."""
    assert route.guards[0] is SAME_ORIGIN
    assert JSON_BODY in route.guards or OPTIONAL_JSON_BODY in route.guards


@pytest.mark.parametrize("route", ROUTES, ids=_id)
def test_guards_that_need_a_user_come_after_sign_in(route: Route) -> None:
    """ELEVATED and per-user rate limits read the signed-in identity: a SignedIn guard first."""
    signed_in = None
    for index, guard in enumerate(route.guards):
        if isinstance(guard, SignedIn) and signed_in is None:
            signed_in = index
        needs_user = guard is ELEVATED or (
            isinstance(guard, RateLimit) and any(by == USER for _name, by in guard.limits)
        )
        if needs_user:
            assert signed_in is not None, guard
            assert signed_in < index, guard


def test_rate_limits_name_real_limiters(h: Harness) -> None:
    """Every limiter a RateLimit guard names exists (a typo would be a KeyError at run time)."""
    assert h.app.selfservice is not None
    names = {
        name
        for r in h.app.routes
        for g in r.guards
        if isinstance(g, RateLimit)
        for name, _by in g.limits
    }
    assert names
    assert names <= set(h.app.selfservice.limiters)


def test_a_route_defined_twice_is_refused() -> None:
    """Two handlers for one (method, path) cannot both be meant: refuse to build the table."""

    def handler(call: t.Any) -> t.Any:
        raise AssertionError

    with pytest.raises(ValueError, match="POST /api/x is defined twice"):
        RouteTable([Route("POST", "/api/x", handler), Route("POST", "/api/x", handler)])
    RouteTable([Route("POST", "/api/x", handler), Route("GET", "/api/x", handler)])


@pytest.mark.parametrize("route", CHANGING, ids=_id)
def test_cross_origin_requests_are_refused_everywhere(h: Harness, route: Route) -> None:
    """The guard is applied, not just declared: another site's Origin gets the 403 on every
    state-changing route, before anything else is looked at."""
    resp = h.api(
        route.path, {}, method=route.method, headers={"Origin": "https://evil.example.net"}
    )
    assert resp.status_int == 403
    assert resp.json == {"status": "KO", "message": "Cross-origin request refused."}
    site = h.api(route.path, {}, method=route.method, headers={"Sec-Fetch-Site": "cross-site"})
    assert site.status_int == 403


@pytest.mark.parametrize("route", CHANGING, ids=_id)
def test_form_posts_are_refused_everywhere(h: Harness, route: Route) -> None:
    """A form-encoded body (what a cross-site form can send) is 415 on every route."""
    resp = h.request(
        route.path,
        method=route.method,
        headers={
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "auth.example.com",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        body=b"username=alice",
    )
    assert resp.status_int == 415
    assert resp.json["message"] == "Send the request as application/json."


@pytest.mark.parametrize("route", CHANGING, ids=_id)
def test_plain_http_is_refused_everywhere(h: Harness, route: Route) -> None:
    """State changes need https on a configured cookie domain."""
    resp = h.request(
        route.path,
        method=route.method,
        headers={"Content-Type": "application/json", "Host": "auth.example.com"},
        body=b"{}",
    )
    assert resp.status_int == 400
    assert "HTTPS" in resp.json["message"]


def test_selfservice_takes_its_collaborators_not_the_portal(h: Harness) -> None:
    """Self-service is wired with the identities, TOTP service and storage it uses, never
    through the portal object (issue 14 §2)."""
    import inspect

    from server.web.selfservice import SelfServiceApi

    params = list(inspect.signature(SelfServiceApi.__init__).parameters)
    assert "portal" not in params
    assert params[:4] == ["self", "config", "identities", "totp"]
    assert not hasattr(h.app.selfservice, "portal")


def test_a_pattern_route_serves_one_more_segment() -> None:
    """``/x/{id}`` serves ``/x/<anything>`` (one non-empty segment); an exact path wins."""

    def handler(call: t.Any) -> t.Any:
        raise AssertionError

    exact = Route("DELETE", "/api/x", handler)
    one = Route("DELETE", "/api/x/{id}", handler)
    table = RouteTable([exact, one, Route("GET", "/api/x/fixed", handler)])
    assert table.methods("/api/x") == {"DELETE": exact}
    assert table.methods("/api/x/abc") == {"DELETE": one}
    assert table.methods("/api/x/{id}") == {"DELETE": one}
    assert table.methods("/api/x/fixed") is not None
    assert "DELETE" not in t.cast(dict[str, Route], table.methods("/api/x/fixed"))
    assert table.methods("/api/x/") is None
    assert table.methods("/api/x/a/b") is None
    assert table.methods("/api/y/abc") is None
    assert RouteTable([exact]).methods("/api/x/abc") is None
