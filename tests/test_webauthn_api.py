"""The WebAuthn endpoints through the app (SPEC §7.1), with the software authenticator's real
signatures: enrol after elevation, second factor, passkey sign-in, list/rename/remove, user
info and configuration, and the refusals (one answer for wrong, replayed and banned)."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest

from server.core.storage import WebAuthnCredential
from tests.apphelpers import APP_CONFIG
from tests.apphelpers import PASSWORDS
from tests.soft_authenticator import SoftAuthenticator
from tests.soft_authenticator import edit_client_data
from tests.soft_authenticator import flip_byte
from tests.test_selfservice import SS
from tests.test_selfservice import cookie_of
from tests.test_selfservice import elevate
from tests.test_selfservice import make_ss
from tests.test_selfservice import state

ORIGIN = "https://auth.example.com"
REFUSED = {"status": "KO", "message": "The security key was not accepted. Try again."}
AUTH_FAILED = {"status": "KO", "message": "Authentication failed. Check your credentials."}
SECURE = "https://secure.example.com/dashboard"
REGISTER = "/api/secondfactor/webauthn/credential/register"
CREDENTIAL = "/api/secondfactor/webauthn/credential/"
SECOND = "/api/secondfactor/webauthn"
PASSKEY = "/api/firstfactor/passkey"


@pytest.fixture
def ss(tmp_path: Path, clock: t.Any) -> SS:
    return make_ss(tmp_path, clock)


def enrol(
    ss: SS, user: str = "alice", description: str = "Phone", **auth: t.Any
) -> tuple[SoftAuthenticator, str]:
    """Sign in, elevate, register a new software authenticator; (it, the elevated cookie)."""
    cookie = elevate(ss, ss.h.login(user))
    authenticator = SoftAuthenticator(ORIGIN, **auth)
    start = ss.h.api(REGISTER, {"description": description}, method="PUT", cookie=cookie)
    assert start.status_int == 200, start.text
    created = authenticator.create(start.json["data"]["publicKey"])
    done = ss.h.api(REGISTER, created, cookie=cookie)
    assert done.status_int == 201, done.text
    return authenticator, cookie


def two_factor(ss: SS, cookie: str, auth: SoftAuthenticator, **get: t.Any) -> t.Any:
    options = ss.h.api(SECOND, method="GET", cookie=cookie)
    assert options.status_int == 200, options.text
    response = auth.get(options.json["data"]["publicKey"], **get)
    return ss.h.api(SECOND, {"response": response, "targetURL": SECURE}, cookie=cookie)


def passkey_options(ss: SS) -> tuple[dict[str, t.Any], str]:
    """The request options and the passkey cookie (``name=value``)."""
    resp = ss.h.api(PASSKEY, method="GET")
    assert resp.status_int == 200, resp.text
    set_cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie
    assert "Secure" in set_cookie
    assert "SameSite=Strict" in set_cookie
    assert f"Path={PASSKEY}" in set_cookie
    assert "Max-Age=60" in set_cookie
    return resp.json["data"]["publicKey"], set_cookie.split(";", 1)[0]


def session_cookie(resp: t.Any) -> str:
    """The session's ``name=value`` among the answer's cookies."""
    found = [c for c in resp.headers.getall("Set-Cookie") if c.startswith("authctl_session=")]
    assert len(found) == 1, resp.headers
    return str(found[0]).split(";", 1)[0]


def passkey(ss: SS, auth: SoftAuthenticator, *, keep: bool = False, **get: t.Any) -> t.Any:
    options, cookie = passkey_options(ss)
    response = auth.get(options, **get)
    body = {"response": response, "keepMeLoggedIn": keep, "targetURL": SECURE}
    return ss.h.api(PASSKEY, body, cookie=cookie)


def test_enrol_then_second_factor_reaches_a_two_factor_site(ss: SS) -> None:
    auth, _cookie = enrol(ss)
    one = ss.h.login("alice")
    assert ss.h.forward_auth(SECURE, cookie=one).status_int == 302
    options = ss.h.api(SECOND, method="GET", cookie=one).json["data"]["publicKey"]
    assert [c["id"] for c in options["allowCredentials"]] == [
        c["id"] for c in [auth.get(options)]
    ]  # alice's one credential
    resp = two_factor(ss, one, auth)
    assert resp.status_int == 200, resp.text
    assert resp.json == {"status": "OK", "data": {"redirect": SECURE}}
    two = cookie_of(resp)
    assert two != one
    assert ss.h.forward_auth(SECURE, cookie=one).status_int == 302  # the old id is dead
    allowed = ss.h.forward_auth(SECURE, cookie=two)
    assert allowed.status_int == 200
    assert allowed.headers["Remote-User"] == "alice"
    assert state(ss, two)["authentication_level"] == 2


def test_second_factor_refusals_get_one_answer(ss: SS) -> None:
    """Replayed, tampered, wrong origin, no challenge, another session's challenge: 401 with
    one message; a malformed body 400; the session stays at level 1."""
    auth, _ = enrol(ss)
    one = ss.h.login("alice")
    options = ss.h.api(SECOND, method="GET", cookie=one).json["data"]["publicKey"]
    good = auth.get(options)
    bad = flip_byte(good, "signature", -2)
    assert ss.h.api(SECOND, {"response": bad}, cookie=one).json == REFUSED
    # the challenge is spent by the bad try: the good response is refused too
    assert ss.h.api(SECOND, {"response": good}, cookie=one).json == REFUSED
    wrong_origin = two_factor(ss, one, auth, origin="https://evil.example.net")
    assert (wrong_origin.status_int, wrong_origin.json) == (401, REFUSED)
    other = ss.h.login("alice")
    ss.h.api(SECOND, method="GET", cookie=other)
    stolen = auth.get(ss.h.api(SECOND, method="GET", cookie=other).json["data"]["publicKey"])
    assert ss.h.api(SECOND, {"response": stolen}, cookie=one).json == REFUSED
    malformed = ss.h.api(SECOND, {"response": {"id": 3}}, cookie=one)
    assert malformed.status_int == 400
    assert state(ss, one)["authentication_level"] == 1
    assert ss.h.api(SECOND, {"response": stolen}).status_int == 401  # no session at all


def test_a_banned_users_assertion_reads_like_a_wrong_one(ss: SS) -> None:
    auth, _ = enrol(ss)
    one = ss.h.login("alice")
    for _ in range(3):  # the app's regulation: max_retries 3
        options = ss.h.api(SECOND, method="GET", cookie=one).json["data"]["publicKey"]
        tampered = edit_client_data(auth.get(options), crossOrigin=True)
        wrong = ss.h.api(SECOND, {"response": tampered}, cookie=one)
        assert (wrong.status_int, wrong.json) == (401, REFUSED)
    banned = two_factor(ss, one, auth)
    assert (banned.status_int, banned.json, banned.headers.get("Retry-After")) == (
        wrong.status_int,
        wrong.json,
        wrong.headers.get("Retry-After"),
    )
    assert state(ss, one)["authentication_level"] == 1


def test_passkey_sign_in_with_uv_counts_as_two_factors(ss: SS) -> None:
    auth, _ = enrol(ss)
    resp = passkey(ss, auth, keep=True)
    assert resp.status_int == 200, resp.text
    assert resp.json == {"status": "OK", "data": {"redirect": SECURE}}
    cookies = resp.headers.getall("Set-Cookie")
    session = next(c for c in cookies if c.startswith("authctl_session="))
    assert "Max-Age=" in session  # remember me
    assert any(c.startswith("authctl_session_passkey=;") and "Max-Age=0" in c for c in cookies)
    cookie = session.split(";", 1)[0]
    assert state(ss, cookie)["authentication_level"] == 2
    assert ss.h.forward_auth(SECURE, cookie=cookie).headers["Remote-User"] == "alice"


def test_passkey_without_uv_is_one_factor(ss: SS) -> None:
    auth, _ = enrol(ss)
    resp = passkey(ss, auth, uv=False)
    assert resp.status_int == 200, resp.text
    assert resp.json == {"status": "OK"}  # secure.example.com still needs a second factor
    cookie = session_cookie(resp)
    assert state(ss, cookie)["authentication_level"] == 1
    assert ss.h.forward_auth(SECURE, cookie=cookie).status_int == 302


def test_passkey_uv_two_factor_off(tmp_path: Path, clock: t.Any) -> None:
    ss = make_ss(tmp_path, clock, APP_CONFIG + "\n[webauthn]\npasskey_uv_two_factor = false\n")
    auth, _ = enrol(ss)
    resp = passkey(ss, auth)
    assert state(ss, session_cookie(resp))["authentication_level"] == 1


def test_passkey_refusals(ss: SS) -> None:
    """Unknown credential, no or foreign passkey cookie, a replayed challenge, a disabled
    owner: 401 with the sign-in's one message."""
    auth, _ = enrol(ss)
    stranger = SoftAuthenticator(ORIGIN)
    stranger.create(
        {
            "rp": {"id": "auth.example.com"},
            "user": {"id": "AAAA"},
            "challenge": "AAAA",
        }
    )
    assert passkey(ss, stranger).json == AUTH_FAILED
    options, cookie = passkey_options(ss)
    response = auth.get(options)
    assert ss.h.api(PASSKEY, {"response": response}).json == AUTH_FAILED  # no cookie
    _other_options, other_cookie = passkey_options(ss)
    assert ss.h.api(PASSKEY, {"response": response}, cookie=other_cookie).json == AUTH_FAILED
    # neither try touched this challenge: the right cookie still works, once
    assert ss.h.api(PASSKEY, {"response": response}, cookie=cookie).status_int == 200
    assert ss.h.api(PASSKEY, {"response": response}, cookie=cookie).json == AUTH_FAILED  # spent
    assert ss.h.api(PASSKEY, {"response": 3}, cookie=cookie).status_int == 400
    users = ss.h.config.users.file.read_text()
    ss.h.rewrite_users(
        users.replace('groups = ["admins", "dev"]', 'groups = ["admins", "dev"]\ndisabled = true')
    )
    assert passkey(ss, auth).json == AUTH_FAILED
    ss.h.rewrite_users(users)
    assert passkey(ss, auth).status_int == 200
    # from plain HTTP or an unknown host, no challenge is issued
    resp = ss.h.api(PASSKEY, method="GET", headers={"X-Forwarded-Proto": "http"})
    assert resp.status_int == 400


def test_credentials_list_rename_remove(ss: SS) -> None:
    auth, cookie = enrol(ss)
    listed = ss.h.api("/api/secondfactor/webauthn/credentials", method="GET", cookie=cookie)
    (cred,) = listed.json["data"]
    assert set(cred) == {
        "id", "description", "created_at", "last_used_at", "sign_count", "discoverable",
        "backup_eligible", "backup_state", "aaguid", "transports",
    }  # fmt: skip
    assert cred["description"] == "Phone"
    assert cred["last_used_at"] is None
    assert cred["discoverable"] is True
    assert cred["transports"] == ["internal", "hybrid"]
    assert cred["created_at"].endswith("Z")
    # a second one (with the passkey as the second factor first): the same description is
    # a conflict, a new one works
    cookie = cookie_of(two_factor(ss, cookie, auth))
    again = ss.h.api(REGISTER, {"description": "Phone"}, method="PUT", cookie=cookie)
    assert again.status_int == 409
    assert ss.h.api(REGISTER, {"description": ""}, method="PUT", cookie=cookie).status_int == 400
    auth2 = SoftAuthenticator(ORIGIN)
    start = ss.h.api(REGISTER, {"description": "Key"}, method="PUT", cookie=cookie)
    excluded = start.json["data"]["publicKey"]["excludeCredentials"]
    assert [c["id"] for c in excluded] == [cred_id(auth)]
    assert ss.h.api(REGISTER, method="DELETE", cookie=cookie).json == {"status": "OK"}
    late = ss.h.api(REGISTER, auth2.create(start.json["data"]["publicKey"]), cookie=cookie)
    assert late.status_int == 400  # cancelled
    rename = ss.h.api(
        CREDENTIAL + cred["id"], {"description": "Laptop"}, method="PUT", cookie=cookie
    )
    assert rename.json == {"status": "OK"}
    bad_rename = ss.h.api(CREDENTIAL + cred["id"], {"description": 3}, method="PUT", cookie=cookie)
    assert bad_rename.status_int == 400
    missing = ss.h.api(CREDENTIAL + "nope", {"description": "x"}, method="PUT", cookie=cookie)
    assert missing.status_int == 404
    # bob cannot touch alice's credential
    bob_auth, bob = enrol(ss, "bob", "Bob's")
    bob = cookie_of(two_factor(ss, bob, bob_auth))
    assert ss.h.api(CREDENTIAL + cred["id"], method="DELETE", cookie=bob).status_int == 404
    assert ss.h.api(CREDENTIAL + cred["id"], method="DELETE", cookie=cookie).json == {
        "status": "OK"
    }
    assert ss.h.api(CREDENTIAL + cred["id"], method="DELETE", cookie=cookie).status_int == 404
    assert ss.h.api("/api/secondfactor/webauthn/credentials", method="GET", cookie=cookie).json == {
        "status": "OK",
        "data": [],
    }


def cred_id(auth: SoftAuthenticator) -> str:
    from tests.soft_authenticator import b64url

    return b64url(next(iter(auth.credentials)))


def test_changes_need_an_elevated_session(ss: SS) -> None:
    auth, _ = enrol(ss)
    one = ss.h.login("alice")
    start = ss.h.api(REGISTER, {"description": "x"}, method="PUT", cookie=one)
    assert start.status_int == 403
    listed = ss.h.api("/api/secondfactor/webauthn/credentials", method="GET", cookie=one)
    row = listed.json["data"][0]["id"]
    for method, payload in (("PUT", {"description": "y"}), ("DELETE", None)):
        assert ss.h.api(CREDENTIAL + row, payload, method=method, cookie=one).status_int == 403
    assert ss.h.api(REGISTER, {"description": "x"}, method="PUT").status_int == 401
    # the registration POST needs its PUT first
    cookie = cookie_of(two_factor(ss, elevate(ss, ss.h.login("alice")), auth))
    orphan = SoftAuthenticator(ORIGIN).create(
        {"rp": {"id": "auth.example.com"}, "user": {"id": "AAAA"}, "challenge": "AAAA"}
    )
    assert ss.h.api(REGISTER, orphan, cookie=cookie).status_int == 400
    assert ss.h.api(REGISTER, {"nothing": 1}, cookie=cookie).status_int == 400


def test_user_info_and_configuration(ss: SS) -> None:
    one = ss.h.login("alice")
    info = ss.h.api("/api/user/info", method="GET", cookie=one).json["data"]
    assert (info["has_webauthn"], info["method"]) == (False, "totp")
    conf = ss.h.api("/api/configuration", method="GET", cookie=one).json["data"]
    assert conf["available_methods"] == ["totp", "webauthn"]
    assert conf["passkey_login"] is True
    enrol(ss)
    info = ss.h.api("/api/user/info", method="GET", cookie=one).json["data"]
    assert (info["has_webauthn"], info["method"]) == (True, "webauthn")
    set_to = ss.h.api("/api/user/info/2fa_method", {"method": "totp"}, cookie=one)
    assert set_to.json == {"status": "OK"}
    info = ss.h.api("/api/user/info", method="GET", cookie=one).json["data"]
    assert info["method"] == "totp"
    # kept for the user, not the session: a new sign-in (any host) sees the choice
    assert ss.svc.storage.second_factor_method("alice") == "totp"
    again = ss.h.api("/api/user/info", method="GET", cookie=ss.h.login("alice")).json["data"]
    assert again["method"] == "totp"
    bob = ss.h.login("bob")
    assert ss.h.api("/api/user/info", method="GET", cookie=bob).json["data"]["method"] == "totp"
    ss.h.api("/api/user/info/2fa_method", {"method": "webauthn"}, cookie=bob)
    assert ss.h.api("/api/user/info", method="GET", cookie=bob).json["data"]["method"] == (
        "webauthn"
    )  # chosen before any passkey is enrolled: the portal offers to add one
    bad = ss.h.api("/api/user/info/2fa_method", {"method": "sms"}, cookie=one)
    assert bad.status_int == 400
    assert ss.h.api("/api/user/info/2fa_method", {"method": "totp"}).status_int == 401


def test_webauthn_disabled(tmp_path: Path, clock: t.Any) -> None:
    """``enable = false``: the endpoints answer 404, configuration offers TOTP only."""
    ss = make_ss(tmp_path, clock, APP_CONFIG + "\n[webauthn]\nenable = false\n")
    one = ss.h.login("alice")
    for path, method in ((SECOND, "GET"), (PASSKEY, "GET")):
        assert ss.h.api(path, method=method, cookie=one).status_int == 404
    conf = ss.h.api("/api/configuration", method="GET", cookie=one).json["data"]
    assert conf["available_methods"] == ["totp"]
    assert conf["passkey_login"] is False
    assert (
        ss.h.api("/api/user/info/2fa_method", {"method": "webauthn"}, cookie=one).status_int == 400
    )
    ss.svc.storage.set_second_factor_method("alice", "webauthn")  # chosen while it was on
    info = ss.h.api("/api/user/info", method="GET", cookie=one).json["data"]
    assert (info["has_webauthn"], info["method"]) == (False, "totp")


def test_passkey_login_disabled(tmp_path: Path, clock: t.Any) -> None:
    ss = make_ss(tmp_path, clock, APP_CONFIG + "\n[webauthn]\npasskey_login = false\n")
    assert ss.h.api(PASSKEY, method="GET").status_int == 404
    assert ss.h.api(PASSKEY, {"response": {}}).status_int == 404
    one = ss.h.login("alice")
    conf = ss.h.api("/api/configuration", method="GET", cookie=one).json["data"]
    assert conf["passkey_login"] is False


#: Every ELEVATED route (SPEC §3.2, §7.1, §7.6) and its answer at level 2 (past the guard: a
#: wrong code 401, an empty attestation 400); ``{id}`` is the user's credential's id.
ELEVATED_ROUTES: tuple[tuple[str, str, object, int], ...] = (
    ("PUT", "/api/secondfactor/totp/register", {}, 200),
    ("GET", "/api/secondfactor/totp/register/qr.svg", None, 200),
    ("POST", "/api/secondfactor/totp/register", {"token": "123456"}, 401),
    ("DELETE", "/api/secondfactor/totp", {}, 200),
    ("PUT", REGISTER, {"description": "Second"}, 200),
    ("POST", REGISTER, {"response": {}}, 400),
    ("PUT", CREDENTIAL + "{id}", {"description": "Renamed"}, 200),
    ("POST", "/api/user/tokens", {"name": "ci"}, 200),
    ("DELETE", CREDENTIAL + "{id}", None, 200),
)


def test_a_passkey_only_user_needs_the_passkey_for_every_change(ss: SS) -> None:
    """A passkey is a second factor: at level 1 an elevated session of a user whose only
    second factor is a passkey is refused every change (enrol TOTP, add, rename or remove a
    passkey, make a token) with the TOTP user's answer; after the WebAuthn second factor
    (level 2, the elevation kept) each is allowed past the guard."""
    auth, cookie = enrol(ss)
    assert not ss.h.app.portal.totp.has_totp("alice")
    listed = ss.h.api("/api/secondfactor/webauthn/credentials", method="GET", cookie=cookie)
    row = listed.json["data"][0]["id"]
    one = elevate(ss, ss.h.login("alice"))
    elevation = ss.h.api("/api/user/session/elevation", method="GET", cookie=one)
    assert elevation.json["data"]["elevated"] is True
    for method, path, body, _ in ELEVATED_ROUTES:
        resp = ss.h.api(path.format(id=row), body, method=method, cookie=one)
        assert (resp.status_int, resp.json.get("data")) == (403, {"second_factor": True}), (
            method,
            path,
            resp.text,
        )
    after = ss.h.api("/api/secondfactor/webauthn/credentials", method="GET", cookie=one)
    assert after.json == listed.json  # nothing renamed, added or removed
    assert ss.h.api("/api/user/tokens", method="GET", cookie=one).json["data"] == []
    # the passkey reaches level 2 (never "no second factor, so level 1 will do")
    assert ss.h.forward_auth(SECURE, cookie=one).status_int == 302
    two = cookie_of(two_factor(ss, one, auth))
    assert ss.h.forward_auth(SECURE, cookie=two).status_int == 200
    for method, path, body, status in ELEVATED_ROUTES:
        resp = ss.h.api(path.format(id=row), body, method=method, cookie=two)
        assert resp.status_int == status, (method, path, resp.text)


def test_a_passkey_of_a_disabled_webauthn_is_no_second_factor(tmp_path: Path, clock: t.Any) -> None:
    """With ``[webauthn] enable = false`` a stored credential cannot reach level 2, so it does
    not hold its owner's changes at level 1 (they could never make them), as for a user
    without TOTP; the session must still be elevated."""
    off = make_ss(tmp_path, clock, APP_CONFIG + "\n[webauthn]\nenable = false\n")
    stored = WebAuthnCredential(
        id="row", username="alice", credential_id=b"c" * 32, public_key=b"k", sign_count=0,
        aaguid="", transports=(), backup_eligible=False, backup_state=False, discoverable=True,
        description="Phone", attestation_type="none", created_at=0.0, last_used_at=None,
    )  # fmt: skip
    assert off.svc.storage.add_webauthn_credential(stored)
    one = off.h.login("alice")
    start = off.h.api("/api/secondfactor/totp/register", {}, method="PUT", cookie=one)
    assert (start.status_int, start.json["data"]) == (403, {"elevation": True})
    elevated = elevate(off, one)
    start = off.h.api("/api/secondfactor/totp/register", {}, method="PUT", cookie=elevated)
    assert start.status_int == 200, start.text


def test_passkey_sessions_carry_the_clients_ip_and_user_agent(ss: SS) -> None:
    """``GET /api/user/sessions`` shows the client address (through the trusted proxy) and
    User-Agent of a passkey sign-in's session, and of a session raised by the WebAuthn second
    factor, as of a password sign-in's."""
    auth, _ = enrol(ss)
    options, nonce = passkey_options(ss)
    body = {"response": auth.get(options), "targetURL": SECURE}
    client = {"User-Agent": "Passkey/1.0", "X-Forwarded-For": "203.0.113.9"}
    signed_in = ss.h.api(PASSKEY, body, cookie=nonce, headers=client)
    assert signed_in.status_int == 200, signed_in.text
    passkey_cookie = session_cookie(signed_in)
    password = ss.h.api(
        "/api/firstfactor",
        {"username": "alice", "password": PASSWORDS["alice"]},
        headers={"User-Agent": "Firefox/130", "X-Forwarded-For": "198.51.100.2"},
    )
    raised = cookie_of(two_factor(ss, cookie_of(password), auth))
    rows = ss.h.api("/api/user/sessions", method="GET", cookie=passkey_cookie).json["data"]
    seen = {(r["ip"], r["user_agent"], r["authentication_level"], r["current"]) for r in rows}
    assert ("203.0.113.9", "Passkey/1.0", 2, True) in seen
    assert ("198.51.100.2", "Firefox/130", 2, False) in seen
    mine = ss.h.api("/api/user/sessions", method="GET", cookie=raised).json["data"]
    assert [(r["ip"], r["user_agent"]) for r in mine if r["current"]] == [
        ("198.51.100.2", "Firefox/130")
    ]
