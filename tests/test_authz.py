"""The four authz endpoints, in-process (SPEC §3.1, §3.4; security.md §2 C, D, E, H, M)."""

from __future__ import annotations

import base64
import typing as t
from pathlib import Path
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import pytest

from tests.apphelpers import PASSWORDS
from tests.apphelpers import Harness
from tests.apphelpers import build
from tests.apphelpers import users_toml

REMOTE = ("Remote-User", "Remote-Groups", "Remote-Name", "Remote-Email")
PORTAL = "https://auth.example.com/"


@pytest.fixture
def h(tmp_path: Path, clock: t.Any) -> Harness:
    """An app over the security catalogue fixture."""
    return build(tmp_path, clock)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def redirect_target(location: str) -> tuple[str, str]:
    parts = urlsplit(location)
    query = parse_qs(parts.query)
    return query["rd"][0], query["rm"][0]


# ---------------------------------------------------------------------- anonymous


def test_anonymous_redirects_to_portal_with_rd_and_rm(h: Harness) -> None:
    """No cookie on a one_factor site: 302 to the portal carrying rd and rm."""
    resp = h.forward_auth("https://app.example.com/page?x=1&y=2")
    assert resp.status_int == 302
    location = resp.headers["Location"]
    assert location.startswith(PORTAL + "?rd=")
    assert location == (
        "https://auth.example.com/?rd=https%3A%2F%2Fapp.example.com%2Fpage%3Fx%3D1%26y%3D2&rm=GET"
    )
    assert redirect_target(location) == ("https://app.example.com/page?x=1&y=2", "GET")
    assert "Remote-User" not in resp.headers


@pytest.mark.parametrize(
    ("method", "status"),
    [("GET", 302), ("HEAD", 302), ("OPTIONS", 302), ("POST", 303), ("PUT", 303), ("DELETE", 303)],
)
def test_redirect_status_by_method(h: Harness, method: str, status: int) -> None:
    """GET/HEAD/OPTIONS get 302, other methods 303, as Authelia answers."""
    resp = h.forward_auth("https://app.example.com/", method=method)
    assert resp.status_int == status
    assert redirect_target(resp.headers["Location"])[1] == method


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Accept": "text/html"}, 302),
        ({"Accept": "*/*"}, 302),
        ({"Accept": "application/json, */*"}, 401),
        ({"Accept": "application/json"}, 401),
        ({"Accept": ""}, 401),
        ({"Accept": "text/html", "X-Requested-With": "XMLHttpRequest"}, 401),
    ],
    ids=["html", "star-first", "star-later", "json", "empty", "xhr"],
)
def test_xhr_and_accept_get_401_with_location(
    h: Harness, headers: dict[str, str], status: int
) -> None:
    """XHR or an Accept without text/html gets 401 with the Location still set."""
    resp = h.forward_auth("https://app.example.com/", extra=headers)
    assert resp.status_int == status
    assert resp.headers["Location"].startswith(PORTAL)


def test_head_redirect_has_no_body(h: Harness) -> None:
    """A HEAD authz request gets the redirect without a body."""
    resp = h.request(
        "/api/authz/forward-auth",
        method="HEAD",
        headers={
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "app.example.com",
            "X-Forwarded-Uri": "/",
            "X-Forwarded-Method": "GET",
            "Accept": "text/html",
        },
    )
    assert resp.status_int == 302
    assert resp.body == b""


def test_redirect_body_escapes_location(h: Harness) -> None:
    """The HTML body of a redirect escapes the URL it links to."""
    resp = h.forward_auth('https://app.example.com/a"b<c>')
    assert resp.status_int in (302, 400)
    assert b"<c>" not in resp.body
    assert b'"b' not in resp.body


def test_bypass_sends_all_four_headers_empty(h: Harness) -> None:
    """Anonymous bypass answers 200 with the four Remote-* headers present and empty."""
    resp = h.forward_auth(
        "https://public.example.com/", extra={"Remote-User": "admin", "Remote-Groups": "admins"}
    )
    assert resp.status_int == 200
    for name in REMOTE:
        assert resp.headers[name] == ""


def test_anonymous_default_deny_is_403(h: Harness) -> None:
    """A host no rule matches falls to default deny: 403 without a subject to log in for."""
    resp = h.forward_auth("https://example.com/")
    assert resp.status_int == 403


def test_anonymous_deny_rule_with_subject_sends_to_login(h: Harness) -> None:
    """A rule with a subject may apply after login, so anonymous users are sent to sign in."""
    resp = h.forward_auth("https://app.example.com/admin")
    assert resp.status_int == 302


# ---------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("endpoint", "status"),
    [("forward-auth", 400), ("auth-request", 403), ("ext-authz", 400), ("verify", 401)],
)
def test_untrusted_peer_is_refused(h: Harness, endpoint: str, status: int) -> None:
    """Forwarded headers from a peer outside trusted_proxies are refused, never believed."""
    path = {
        "forward-auth": "/api/authz/forward-auth",
        "auth-request": "/api/authz/auth-request",
        "ext-authz": "/api/authz/ext-authz/",
        "verify": "/api/verify",
    }[endpoint]
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "public.example.com",
        "X-Forwarded-Uri": "/",
        "X-Forwarded-Method": "GET",
        "X-Original-URL": "https://public.example.com/",
        "X-Original-Method": "GET",
        "Host": "public.example.com",
    }
    resp = h.request(path, headers=headers, peer="192.0.2.10")
    assert resp.status_int == status
    assert "Location" not in resp.headers


def fa_headers(**overrides: str | None) -> dict[str, str]:
    """forward-auth headers for https://app.example.com/ with some replaced or removed."""
    base: dict[str, str | None] = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "app.example.com",
        "X-Forwarded-Uri": "/",
        "X-Forwarded-Method": "GET",
        "Accept": "text/html",
    }
    base.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    "headers",
    [
        fa_headers(X_Forwarded_Proto="http"),
        fa_headers(X_Forwarded_Host="evil.com"),
        fa_headers(X_Forwarded_Host="example.com.evil.com"),
        fa_headers(X_Forwarded_Host=None),
        fa_headers(X_Forwarded_Proto=None),
        fa_headers(X_Forwarded_Method=None),
        fa_headers(X_Forwarded_Method="G3T"),
        fa_headers(X_Forwarded_Method="get"),
        fa_headers(X_Forwarded_Method=" GET"),
        fa_headers(X_Forwarded_Method="A" * 33),
        fa_headers(X_Forwarded_Uri="/a\x01"),
        fa_headers(X_Forwarded_Uri="/public/..%252fadmin"),
        fa_headers(X_Forwarded_Uri="/public\\..\\admin"),
        fa_headers(X_Forwarded_Uri="/public/..;/admin"),
        fa_headers(X_Forwarded_Host="user@app.example.com"),
        fa_headers(X_Forwarded_Host="app.example.com:99999"),
        fa_headers(X_Forwarded_Host="app.example.com."),
    ],
    ids=[
        "http", "foreign-host", "suffix-trick", "no-host", "no-proto", "no-method",
        "bad-method", "lower-method", "spaced-method", "long-method", "control-char",
        "double-encoding", "backslash", "matrix-dot",
        "userinfo", "bad-port", "trailing-dot",
    ],
)  # fmt: skip
def test_malformed_forward_auth_is_400(h: Harness, headers: dict[str, str]) -> None:
    """Malformed or insecure targets are refused with 400, never redirected or allowed."""
    resp = h.request("/api/authz/forward-auth", headers=headers)
    assert resp.status_int == 400
    assert "Location" not in resp.headers


def test_authz_query_string_is_ignored(h: Harness) -> None:
    """Caddy appends the client's query to the auth URL; forward-auth must ignore it."""
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "app.example.com",
        "X-Forwarded-Uri": "/",
        "X-Forwarded-Method": "GET",
        "Accept": "text/html",
    }
    resp = h.request("/api/authz/forward-auth?rd=https://evil.com&auth=basic", headers=headers)
    assert resp.status_int == 302
    assert resp.headers["Location"].startswith(PORTAL)


def test_exception_in_rules_never_allows(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any exception inside the decision ends in the refusal status, never 200."""

    def boom(_request: object) -> object:
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(h.app.authorizer._access, "evaluate", boom)
    assert h.forward_auth("https://public.example.com/").status_int == 400
    resp = h.request(
        "/api/authz/auth-request",
        headers={"X-Original-URL": "https://public.example.com/", "X-Original-Method": "GET"},
    )
    assert resp.status_int == 403


def test_wrong_method_on_forward_auth_is_405(h: Harness) -> None:
    """forward-auth and auth-request take GET and HEAD only."""
    assert h.request("/api/authz/forward-auth", method="POST").status_int == 405
    assert h.request("/api/authz/auth-request", method="PUT").status_int == 405


# ---------------------------------------------------------------------- signed in


def test_cookie_allows_with_identity_headers(h: Harness) -> None:
    """A signed-in user gets 200 with all four identity headers."""
    cookie = h.login("alice")
    resp = h.forward_auth("https://app.example.com/", cookie=cookie)
    assert resp.status_int == 200
    assert resp.headers["Remote-User"] == "alice"
    assert resp.headers["Remote-Groups"] == "admins,dev"
    assert resp.headers["Remote-Name"] == "Alice Liddell"
    assert resp.headers["Remote-Email"] == "alice@example.com"


def test_spoofed_remote_user_is_overwritten(h: Harness) -> None:
    """A client-sent Remote-User never survives: the answer carries the real one."""
    cookie = h.login("bob")
    resp = h.forward_auth("https://app.example.com/", cookie=cookie, extra={"Remote-User": "alice"})
    assert resp.headers["Remote-User"] == "bob"


def test_one_factor_on_two_factor_rule_goes_to_portal(h: Harness) -> None:
    """A one-factor session on a two_factor rule is sent back to the portal."""
    cookie = h.login("alice")
    resp = h.forward_auth("https://app.example.com/admin", cookie=cookie)
    assert resp.status_int == 302
    assert redirect_target(resp.headers["Location"])[0] == "https://app.example.com/admin"


def test_subject_rule_decides_after_login(h: Harness) -> None:
    """bob is not an admin: the admin rule misses and the one_factor rule lets him in."""
    cookie = h.login("bob")
    assert h.forward_auth("https://app.example.com/admin", cookie=cookie).status_int == 200


def test_authenticated_deny_is_403(h: Harness) -> None:
    """bob is not alice: the subject rule misses, the deny rule forbids with 403."""
    cookie = h.login("bob")
    assert h.forward_auth("https://private.example.com/", cookie=cookie).status_int == 403
    alice = h.login("alice")
    assert h.forward_auth("https://private.example.com/", cookie=alice).status_int == 200


def test_cookie_does_not_cross_cookie_domains(h: Harness) -> None:
    """A session issued for example.com is not accepted on example.org."""
    cookie = h.login("alice")
    resp = h.forward_auth("https://app.example.org/", cookie=cookie)
    assert resp.status_int == 302
    assert resp.headers["Location"].startswith("https://login.example.org/?rd=")


def test_disabled_user_loses_access_on_next_request(h: Harness) -> None:
    """Disabling a user in the file ends their access on the next verify."""
    cookie = h.login("alice")
    assert h.forward_auth("https://app.example.com/", cookie=cookie).status_int == 200
    text = h.config.users.file.read_text().replace(
        'groups = ["admins", "dev"]\n', 'groups = ["admins", "dev"]\ndisabled = true\n'
    )
    h.rewrite_users(text)
    assert h.forward_auth("https://app.example.com/", cookie=cookie).status_int == 302


def test_group_change_applies_on_next_request(h: Harness) -> None:
    """Remote-Groups follows the users file, not the session's memory."""
    cookie = h.login("bob")
    text = h.config.users.file.read_text().replace('groups = ["dev"]', 'groups = ["dev", "ops"]')
    h.rewrite_users(text)
    resp = h.forward_auth("https://app.example.com/", cookie=cookie)
    assert resp.headers["Remote-Groups"] == "dev,ops"


def test_password_change_ends_sessions(h: Harness) -> None:
    """A new password hash invalidates sessions made with the old one."""
    cookie = h.login("bob")
    h.rewrite_users(users_toml(h.hasher))  # every hash is new (new salts)
    assert h.forward_auth("https://app.example.com/", cookie=cookie).status_int == 302


def test_expired_and_idle_sessions_are_refused(h: Harness) -> None:
    """Inactivity (5 minutes) and expiration (1 hour) end sessions."""
    cookie = h.login("bob")
    h.clock.advance(299)
    assert h.forward_auth("https://app.example.com/", cookie=cookie).status_int == 200
    h.clock.advance(301)
    assert h.forward_auth("https://app.example.com/", cookie=cookie).status_int == 302


def test_forged_cookie_is_anonymous(h: Harness) -> None:
    """An unknown or malformed session id is simply anonymous."""
    for value in ("authctl_session=" + "A" * 43, "authctl_session=../../etc", "authctl_session="):
        assert h.forward_auth("https://app.example.com/", cookie=value).status_int == 302


# ---------------------------------------------------------------------- basic


def test_basic_credentials_are_one_factor(h: Harness) -> None:
    """Valid Basic credentials allow one_factor sites but never two_factor ones."""
    header = basic("alice", PASSWORDS["alice"])
    resp = h.forward_auth("https://app.example.com/", extra={"Authorization": header})
    assert resp.status_int == 200
    assert resp.headers["Remote-User"] == "alice"
    resp = h.forward_auth("https://secure.example.com/", extra={"Authorization": header})
    assert resp.status_int == 302


def test_basic_username_is_canonicalised(h: Harness) -> None:
    """ALICE logs in as alice and is reported as alice."""
    header = basic("\uff21\uff2c\uff29\uff23\uff25", PASSWORDS["alice"])  # fullwidth ALICE
    resp = h.forward_auth("https://app.example.com/", extra={"Proxy-Authorization": header})
    assert resp.headers["Remote-User"] == "alice"


@pytest.mark.parametrize(
    "header",
    [
        basic("alice", "wrong"),
        basic("nobody", "whatever"),
        basic("carol", PASSWORDS["carol"]),
        "Basic !!!",
    ],
    ids=["wrong-password", "unknown-user", "disabled-user", "malformed"],
)
def test_invalid_basic_gets_challenge(h: Harness, header: str) -> None:
    """Invalid Basic credentials get 401 with WWW-Authenticate, the same for every cause."""
    resp = h.forward_auth("https://app.example.com/", extra={"Authorization": header})
    assert resp.status_int == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic")
    assert "Location" not in resp.headers


def test_invalid_basic_on_bypass_is_ignored(h: Harness) -> None:
    """Bypass rules ignore failing credentials (Authelia)."""
    resp = h.forward_auth(
        "https://public.example.com/", extra={"Authorization": basic("alice", "wrong")}
    )
    assert resp.status_int == 200


@pytest.mark.parametrize("header", ["Bearer abc.def", "Token xyz"], ids=["bearer", "token"])
def test_other_authorization_schemes_are_ignored(h: Harness, header: str) -> None:
    """Apps that use their own Authorization header keep working behind authctl."""
    cookie = h.login("bob")
    resp = h.forward_auth(
        "https://app.example.com/", cookie=cookie, extra={"Authorization": header}
    )
    assert resp.status_int == 200
    assert resp.headers["Remote-User"] == "bob"


def test_basic_cache_follows_password_changes(h: Harness) -> None:
    """A cached Basic success is dropped once the user's password changes."""
    header = basic("bob", PASSWORDS["bob"])
    assert (
        h.forward_auth("https://app.example.com/", extra={"Authorization": header}).status_int
        == 200
    )
    text = h.config.users.file.read_text().replace(
        h.users.current()["bob"].password, h.hasher.hash("another-password")
    )
    h.rewrite_users(text)
    assert (
        h.forward_auth("https://app.example.com/", extra={"Authorization": header}).status_int
        == 401
    )


# ---------------------------------------------------------------------- other endpoints


def test_auth_request_answers_401_with_location(h: Harness) -> None:
    """nginx's endpoint answers 401 + Location; nginx turns it into the redirect."""
    resp = h.request(
        "/api/authz/auth-request",
        headers={
            "X-Original-URL": "https://app.example.com/x?y=1",
            "X-Original-Method": "POST",
            "Accept": "text/html",
        },
    )
    assert resp.status_int == 401
    assert redirect_target(resp.headers["Location"]) == ("https://app.example.com/x?y=1", "POST")


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Original-Method": "GET"},
        {"X-Original-URL": "https://app.example.com/"},
        {"X-Original-URL": "http://app.example.com/", "X-Original-Method": "GET"},
        {"X-Original-URL": "/relative", "X-Original-Method": "GET"},
        {"X-Original-URL": "https://evil.com/", "X-Original-Method": "GET"},
        {"X-Original-URL": "https://public.example.com/", "X-Original-Method": "get"},
        {"X-Original-URL": "https://public.example.com/", "X-Original-Method": "GET "},
    ],
    ids=["no-url", "no-method", "http", "relative", "foreign", "lower-method", "spaced-method"],
)
def test_auth_request_malformed_is_403(h: Harness, headers: dict[str, str]) -> None:
    """auth-request answers only 200, 401 or 403; malformed input is 403."""
    assert h.request("/api/authz/auth-request", headers=headers).status_int == 403


def test_auth_request_with_cookie(h: Harness) -> None:
    """auth-request allows a signed-in user with identity headers."""
    cookie = h.login("alice")
    resp = h.request(
        "/api/authz/auth-request",
        headers={
            "X-Original-URL": "https://app.example.com/",
            "X-Original-Method": "GET",
            "Cookie": cookie,
        },
    )
    assert resp.status_int == 200
    assert resp.headers["Remote-User"] == "alice"


def test_ext_authz_uses_subpath_and_host(h: Harness) -> None:
    """Envoy's endpoint reads the target from Host and the sub-path, method from the request."""
    headers = {"Host": "app.example.com", "X-Forwarded-Proto": "https", "Accept": "text/html"}
    resp = h.request("/api/authz/ext-authz/public/x?a=1", headers=headers)
    assert resp.status_int == 200
    resp = h.request("/api/authz/ext-authz/admin?a=1", method="POST", headers=headers)
    assert resp.status_int == 303
    assert redirect_target(resp.headers["Location"]) == (
        "https://app.example.com/admin?a=1",
        "POST",
    )


def test_ext_authz_raw_uri_is_used(h: Harness) -> None:
    """The raw request URI (not the decoded PATH_INFO) is what gets normalised."""
    headers = {"Host": "app.example.com", "X-Forwarded-Proto": "https", "Accept": "text/html"}
    req_path = "/api/authz/ext-authz/public/..%2fadmin"
    from webob import Request

    req = Request.blank("/", headers=headers)
    req.environ["REMOTE_ADDR"] = "127.0.0.1"
    req.environ["PATH_INFO"] = "/api/authz/ext-authz/public/../admin"
    req.environ["REQUEST_URI"] = req_path
    assert req.get_response(h.app).status_int == 400


def test_legacy_verify(h: Harness) -> None:
    """/api/verify: 401 without rd, a redirect to the rd portal with it."""
    headers = {"X-Original-URL": "https://app.example.com/", "Accept": "text/html"}
    assert h.request("/api/verify", headers=headers).status_int == 401
    resp = h.request("/api/verify?rd=https://auth.example.com", headers=headers)
    assert resp.status_int == 302
    assert resp.headers["Location"].startswith(PORTAL + "?rd=")
    assert h.request("/api/verify?rd=https://evil.com", headers=headers).status_int == 401
    assert h.request("/api/verify?rd=http://auth.example.com", headers=headers).status_int == 401


def test_legacy_verify_basic_only_with_auth_basic(h: Harness) -> None:
    """/api/verify reads Authorization only with ?auth=basic, and then requires it."""
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "app.example.com",
        "X-Forwarded-Uri": "/",
        "Authorization": basic("bob", PASSWORDS["bob"]),
    }
    assert h.request("/api/verify", headers=headers).status_int == 401
    resp = h.request("/api/verify?auth=basic", headers=headers)
    assert resp.status_int == 200
    assert resp.headers["Remote-User"] == "bob"
    del headers["Authorization"]
    resp = h.request("/api/verify?auth=basic", headers=headers)
    assert resp.status_int == 401
    assert "WWW-Authenticate" in resp.headers


def test_networks_use_client_ip_from_trusted_chain(h: Harness) -> None:
    """A bypass by network sees the client IP from X-Forwarded-For, walked right to left."""
    inside = h.forward_auth("https://other.example.com/", extra={"X-Forwarded-For": "10.1.2.3"})
    assert inside.status_int == 200
    spoof = h.forward_auth(
        "https://other.example.com/", extra={"X-Forwarded-For": "10.1.2.3, 203.0.113.9"}
    )
    assert spoof.status_int == 403


def test_every_2xx_carries_all_remote_headers(h: Harness) -> None:
    """Every 200 from an authz endpoint carries all four Remote-* headers."""
    cookie = h.login("alice")
    for url, c in [
        ("https://public.example.com/", None),
        ("https://app.example.com/public/x", None),
        ("https://app.example.com/", cookie),
        ("https://public.example.com/", cookie),
    ]:
        resp = h.forward_auth(url, cookie=c)
        assert resp.status_int == 200
        assert all(name in resp.headers for name in REMOTE)


ADMIN_SPELLINGS = [
    "/admin",
    "//admin",
    "///admin",
    "/./admin",
    "/public/../admin",
    "/public/%2e%2e/admin",
    "/public/%2E%2E/admin",
    "/public/..%2fadmin",
    "/public%2f..%2fadmin",
    "/public/..%5cadmin",
    "/public/..;/admin",
    "/admin;x=1",
    "/admin%2f",
    "/admin/",
    "/%61dmin",
    "/public/%252e%252e/admin",
    "/admin#/public/",
    "/admin?/public/",
    "/admin?x=/public/",
    "/admin%00",
    "/x/../admin",
    "/public/./../admin",
]


@pytest.mark.parametrize("uri", ADMIN_SPELLINGS)
def test_admin_spellings_never_pass_for_one_factor_admin(h: Harness, uri: str) -> None:
    """Every spelling of /admin needs the second factor or is refused (security.md §2.B)."""
    cookie = h.login("alice")
    resp = h.request(
        "/api/authz/forward-auth", headers={**fa_headers(X_Forwarded_Uri=uri), "Cookie": cookie}
    )
    assert resp.status_int in (302, 400), resp.status_int


@pytest.mark.parametrize("uri", ADMIN_SPELLINGS)
def test_admin_spellings_never_pass_anonymously(h: Harness, uri: str) -> None:
    """No spelling of /admin reaches the ^/public/ bypass for an anonymous client."""
    resp = h.request("/api/authz/forward-auth", headers=fa_headers(X_Forwarded_Uri=uri))
    assert resp.status_int in (302, 400), resp.status_int


@pytest.mark.parametrize(
    "uri",
    ["", "admin", "https://evil.com/admin", "/" + "a" * 16384, None],
    ids=["empty", "no-slash", "absolute", "16k", "missing"],
)
def test_bad_forwarded_uri_is_400(h: Harness, uri: str | None) -> None:
    """A forwarded URI that is empty, relative, absolute, huge or missing is refused."""
    resp = h.request("/api/authz/forward-auth", headers=fa_headers(X_Forwarded_Uri=uri))
    assert resp.status_int == 400


@pytest.mark.parametrize(
    "host", ["APP.EXAMPLE.COM", "App.Example.Com", "PUBLIC.example.COM", "Secure.Example.Com"]
)
def test_host_case_never_changes_the_decision(h: Harness, host: str) -> None:
    """Mixed-case hosts get the same decision as lower-case ones (GHSA-j748)."""
    upper = h.forward_auth(f"https://{host}/admin")
    lower = h.forward_auth(f"https://{host.lower()}/admin")
    assert upper.status_int == lower.status_int
    assert upper.headers.get("Location") == lower.headers.get("Location")


def test_no_magic_user_agent(h: Harness) -> None:
    """A health-check User-Agent gets no special treatment (GHSA-5hvv)."""
    resp = h.forward_auth("https://app.example.com/admin", extra={"User-Agent": "kube-probe/1.0"})
    assert resp.status_int == 302


@pytest.mark.parametrize(
    "xff",
    ["unknown", "010.0.0.5", "10.0.0.5:80", "[::1]:80", ", ".join(["10.0.0.5"] * 5000) + ", x"],
    ids=["unknown", "octal", "port", "v6-port", "5000"],
)
def test_junk_forwarded_for_never_matches_networks(h: Harness, xff: str) -> None:
    """Junk X-Forwarded-For never matches the 10/8 bypass and never errors."""
    resp = h.forward_auth("https://other.example.com/", extra={"X-Forwarded-For": xff})
    assert resp.status_int == 403


def test_session_fixation_attacker_cookie_is_not_adopted(h: Harness) -> None:
    """A client-chosen session id is ignored at login: the issued id differs."""
    planted = "authctl_session=" + "a" * 43
    resp = h.api(
        "/api/firstfactor",
        {"username": "bob", "password": PASSWORDS["bob"]},
        cookie=planted,
    )
    issued = resp.headers["Set-Cookie"].split(";", 1)[0]
    assert issued != planted
    assert h.forward_auth("https://app.example.com/", cookie=planted).status_int == 302


def test_duplicate_cookies_resolve_to_a_live_one(h: Harness) -> None:
    """Cookie tossing: a junk cookie beside a real one neither breaks nor elevates."""
    real = h.login("bob")
    resp = h.forward_auth("https://app.example.com/", cookie=f"authctl_session=junk; {real}")
    assert resp.status_int == 200
    assert resp.headers["Remote-User"] == "bob"


def test_session_store_failure_is_anonymous(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session store that fails means "sign in", never 200 (fail closed)."""
    from server.core.session_store import SessionStoreError

    cookie = h.login("bob")

    def broken(_session_id: str) -> None:
        raise SessionStoreError("disk on fire")

    monkeypatch.setattr(h.store, "get", broken)
    resp = h.forward_auth("https://app.example.com/", cookie=cookie)
    assert resp.status_int == 302
