"""The portal API and pages, in-process (SPEC §3.2, §3.3, §3.4; security.md §2 A, I, K)."""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest

from tests.apphelpers import PASSWORDS
from tests.apphelpers import Harness
from tests.apphelpers import build
from tests.test_openredirects import CORPUS

AUTH_FAILED = {"status": "KO", "message": "Authentication failed. Check your credentials."}


@pytest.fixture
def h(tmp_path: Path, clock: t.Any) -> Harness:
    """An app over the security catalogue fixture."""
    return build(tmp_path, clock)


def login_payload(username: str = "alice", **extra: object) -> dict[str, object]:
    return {"username": username, "password": PASSWORDS.get(username, "x"), **extra}


# ---------------------------------------------------------------------- first factor


def test_firstfactor_sets_secure_cookie(h: Harness) -> None:
    """A successful sign-in sets the session cookie with every required attribute."""
    resp = h.api("/api/firstfactor", login_payload())
    assert resp.status_int == 200
    cookie = resp.headers["Set-Cookie"]
    name, _, rest = cookie.partition("=")
    assert name == "authctl_session"
    session_id = rest.split(";", 1)[0]
    assert len(session_id) >= 43  # 256 bits in url-safe base64
    attrs = [a.strip() for a in cookie.split(";")[1:]]
    assert "Domain=example.com" in attrs
    assert "Path=/" in attrs
    assert "Secure" in attrs
    assert "HttpOnly" in attrs
    assert "SameSite=Lax" in attrs
    assert not any(a.startswith("Max-Age") for a in attrs)


def test_remember_me_sets_max_age(h: Harness) -> None:
    """keepMeLoggedIn makes a persistent cookie for remember_me."""
    resp = h.api("/api/firstfactor", login_payload(keepMeLoggedIn=True))
    assert "Max-Age=2592000" in resp.headers["Set-Cookie"]


def test_firstfactor_new_id_each_time(h: Harness) -> None:
    """Every sign-in issues a fresh id and ends the previous session."""
    first = h.login("alice")
    resp = h.api("/api/firstfactor", login_payload(), cookie=first)
    second = resp.headers["Set-Cookie"].split(";", 1)[0]
    assert second != first
    assert h.forward_auth("https://app.example.com/", cookie=first).status_int == 302
    assert h.forward_auth("https://app.example.com/", cookie=second).status_int == 200


@pytest.mark.parametrize(
    "payload",
    [
        {"username": "alice", "password": "wrong"},
        {"username": "nobody", "password": "whatever"},
        {"username": "carol", "password": PASSWORDS["carol"]},
        {"username": "bad name!", "password": "x"},
    ],
    ids=["wrong-password", "unknown-user", "disabled-user", "invalid-name"],
)
def test_failed_login_is_generic(h: Harness, payload: dict[str, object]) -> None:
    """Unknown user, wrong password and disabled user get the same status and body."""
    resp = h.api("/api/firstfactor", payload)
    assert resp.status_int == 401
    assert resp.json == AUTH_FAILED
    assert "Set-Cookie" not in resp.headers


@pytest.mark.parametrize(
    ("target", "redirect"),
    [
        ("https://app.example.com/page", "https://app.example.com/page"),
        ("https://evil.com/", "https://www.example.com"),
        ("http://app.example.com/", "https://www.example.com"),
        ("https://app.example.com/admin", None),
        (None, "https://www.example.com"),
    ],
    ids=["safe", "foreign", "http", "needs-2fa", "none"],
)
def test_firstfactor_redirect(h: Harness, target: str | None, redirect: str | None) -> None:
    """A safe target is returned; unsafe ones fall back; a two_factor target gets none."""
    payload = login_payload()
    if target is not None:
        payload["targetURL"] = target
    resp = h.api("/api/firstfactor", payload)
    assert resp.status_int == 200
    data = resp.json.get("data") or {}
    assert data.get("redirect") == redirect


def test_firstfactor_refused_over_plain_http(h: Harness) -> None:
    """Signing in when the proxy says http is refused with no cookie."""
    resp = h.api("/api/firstfactor", login_payload(), headers={"X-Forwarded-Proto": "http"})
    assert resp.status_int == 400
    assert "Set-Cookie" not in resp.headers


def test_firstfactor_refused_on_unknown_host(h: Harness) -> None:
    """A portal host outside every cookie domain cannot set a cookie."""
    resp = h.api("/api/firstfactor", login_payload(), host="auth.evil.com")
    assert resp.status_int == 400


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.com"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
    ids=["evil-origin", "null-origin", "cross-site", "same-site"],
)
def test_cross_origin_login_is_refused(h: Harness, headers: dict[str, str]) -> None:
    """Login CSRF: cross-origin state changes are refused with 403."""
    resp = h.api("/api/firstfactor", login_payload(), headers=headers)
    assert resp.status_int == 403
    assert "Set-Cookie" not in resp.headers


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_non_json_login_is_refused(h: Harness, content_type: str) -> None:
    """Only application/json is accepted (HTML forms cannot send it cross-site)."""
    resp = h.request(
        "/api/firstfactor",
        method="POST",
        headers={
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "auth.example.com",
            "Content-Type": content_type,
        },
        body=json.dumps(login_payload()).encode(),
    )
    assert resp.status_int == 415


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"str"',
        b"null",
        b'{"username": ["alice"], "password": "x"}',
        b'{"username": {"$ne": 1}, "password": "x"}',
        b'{"username": "alice", "password": null}',
        b'{"username": "alice", "password": "alice-password", "keepMeLoggedIn": "false"}',
        b'{"username": "bob", "username": "alice", "password": "alice-password"}',
        b'{"username": "alice", "password": "alice-password", "targetURL": 123}',
        b"[" * 10000 + b"]" * 10000,
        b"\xff\xfe",
        b"{",
    ],
    ids=[
        "array", "string", "null", "list-name", "object-name", "null-password",
        "string-bool", "duplicate-keys", "number-url", "deep", "bad-utf8", "truncated",
    ],
)  # fmt: skip
def test_json_confusion_is_400(h: Harness, body: bytes) -> None:
    """Wrongly typed or malformed JSON is a 400 with a generic message, never a 500."""
    resp = h.request(
        "/api/firstfactor",
        method="POST",
        headers={
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "auth.example.com",
            "Content-Type": "application/json",
        },
        body=body,
    )
    assert resp.status_int == 400
    assert resp.json["status"] == "KO"
    assert "Set-Cookie" not in resp.headers


def test_oversized_body_is_413(h: Harness) -> None:
    """Bodies over 64 KiB are refused before parsing."""
    resp = h.request(
        "/api/firstfactor",
        method="POST",
        headers={
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "auth.example.com",
            "Content-Type": "application/json",
        },
        body=b" " * (65 * 1024),
    )
    assert resp.status_int == 413


# ---------------------------------------------------------------------- state, info, logout


def test_state_anonymous_and_signed_in(h: Harness) -> None:
    """/api/state reports the user and the level."""
    resp = h.api("/api/state", method="GET")
    assert resp.json["data"]["authentication_level"] == 0
    assert resp.json["data"]["username"] == ""
    assert resp.json["data"]["default_redirection_url"] == "https://www.example.com"
    cookie = h.login("alice")
    resp = h.api("/api/state", method="GET", cookie=cookie)
    assert resp.json["data"]["username"] == "alice"
    assert resp.json["data"]["authentication_level"] == 1


def test_user_info_needs_session(h: Harness) -> None:
    """/api/user/info is 403 anonymous, and names the user when signed in."""
    assert h.api("/api/user/info", method="GET").status_int == 403
    cookie = h.login("alice")
    data = h.api("/api/user/info", method="GET", cookie=cookie).json["data"]
    assert data["display_name"] == "Alice Liddell"
    assert data["emails"] == ["alice@example.com"]


def test_configuration_needs_session(h: Harness) -> None:
    """/api/configuration is for signed-in users and lists the second factors a rule can ask
    for: TOTP, and WebAuthn (on by default, SPEC §7.1), with passkey sign-in."""
    assert h.api("/api/configuration", method="GET").status_int == 403
    cookie = h.login("bob")
    data = h.api("/api/configuration", method="GET", cookie=cookie).json["data"]
    assert data["available_methods"] == ["totp", "webauthn"]
    assert data["passkey_login"] is True


def test_logout_ends_session_and_expires_cookie(h: Harness) -> None:
    """Logout deletes the server-side session and expires the cookie with the same scope."""
    cookie = h.login("alice")
    resp = h.api("/api/logout", {"targetURL": "https://app.example.com/"}, cookie=cookie)
    assert resp.status_int == 200
    assert resp.json["data"] == {"safeTargetURL": True, "redirect": "https://app.example.com/"}
    expired = resp.headers["Set-Cookie"]
    assert expired.startswith("authctl_session=;")
    assert "Domain=example.com" in expired
    assert "Path=/" in expired
    assert "Max-Age=0" in expired
    assert h.forward_auth("https://app.example.com/", cookie=cookie).status_int == 302


@pytest.mark.parametrize(
    "target",
    ["https://evil.com/", "//evil.com", "https://example.com.evil.com/", "javascript:alert(1)"],
)
def test_logout_rejects_unsafe_targets(h: Harness, target: str) -> None:
    """The logout redirect goes through the same validator as login (CVE-2021-29456)."""
    resp = h.api("/api/logout", {"targetURL": target})
    assert resp.json["data"] == {"safeTargetURL": False}


def test_open_redirect_corpus_after_login(h: Harness) -> None:
    """None of the oauth2-proxy payloads comes back as a redirect after sign-in."""
    from urllib.parse import unquote

    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 559
    for line in lines[:600]:
        for candidate in (line, unquote(line)):
            target = candidate.replace("whitelisteddomain.tld", "example.com")
            resp = h.api("/api/logout", {"targetURL": target})
            data = resp.json["data"]
            if data["safeTargetURL"]:
                redirect = data["redirect"]
                assert redirect.startswith("https://"), (candidate, redirect)
                host = redirect[len("https://") :].split("/", 1)[0].split(":")[0]
                assert host == "example.com" or host.endswith(".example.com"), (candidate, redirect)


# ---------------------------------------------------------------------- routing, headers


def test_unknown_api_is_404_json(h: Harness) -> None:
    """Unknown /api/* paths get a JSON 404."""
    resp = h.request("/api/nope")
    assert resp.status_int == 404
    assert resp.json["status"] == "KO"


def test_wrong_method_is_405(h: Harness) -> None:
    """A known API path with the wrong method gets 405 and Allow."""
    resp = h.request("/api/firstfactor", method="GET")
    assert resp.status_int == 405
    assert resp.headers["Allow"] == "POST"
    assert h.request("/", method="TRACE").status_int == 405


def test_get_changes_nothing(h: Harness) -> None:
    """GET /api/logout does not log anyone out."""
    cookie = h.login("alice")
    assert h.api("/api/logout", method="GET", cookie=cookie).status_int == 405
    assert h.forward_auth("https://app.example.com/", cookie=cookie).status_int == 200


def test_api_security_headers(h: Harness) -> None:
    """API answers carry no-store and the security headers."""
    resp = h.request("/api/health")
    assert resp.json == {"status": "OK"}
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "Referrer-Policy" in resp.headers
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_options_does_not_reflect_origin(h: Harness) -> None:
    """No CORS: a preflight from another origin gets nothing to work with."""
    resp = h.request("/api/firstfactor", method="OPTIONS", headers={"Origin": "https://evil.com"})
    assert resp.status_int == 405
    assert "Access-Control-Allow-Origin" not in resp.headers


@pytest.mark.parametrize("path", ["/", "/2fa", "/settings", "/reset-password"])
def test_pages_have_strict_csp(h: Harness, path: str) -> None:
    """Portal pages are served with a CSP that forbids inline script and framing."""
    resp = h.request(path)
    assert resp.status_int == 200
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert resp.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize(
    "path", ["/static/../authctl.toml", "/static/%2e%2e/users.toml", "/../users.toml", "/nope"]
)
def test_static_traversal_is_404(h: Harness, path: str) -> None:
    """Only files known at start-up are served; traversal finds nothing."""
    assert h.request(path).status_int == 404
