"""The OpenID Provider end to end through the app (SPEC §7.3): a relying party written here
runs the code flow, checks ID tokens against /jwks.json, and each security property and
malformed request has its negative test."""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest

from tests.apphelpers import Harness
from tests.conftest import Clock
from tests.oidc_helpers import APP_CB
from tests.oidc_helpers import ISSUER
from tests.oidc_helpers import NATIVE_CB
from tests.oidc_helpers import SECRET
from tests.oidc_helpers import RelyingParty
from tests.oidc_helpers import basic
from tests.oidc_helpers import build_oidc
from tests.oidc_helpers import pkce
from tests.oidc_helpers import query_of

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def h(tmp_path: Path, clock: Clock) -> Harness:
    return build_oidc(tmp_path, clock)


@pytest.fixture
def rp(h: Harness) -> RelyingParty:
    return RelyingParty(h)


def tokens(resp: object) -> dict[str, object]:
    assert resp.status_int == 200, resp.text  # type: ignore[attr-defined]
    assert resp.headers["Cache-Control"] == "no-store"  # type: ignore[attr-defined]
    return json.loads(resp.body)  # type: ignore[attr-defined, no-any-return]


# ---------------------------------------------------------------------- discovery


@pytest.mark.parametrize(
    "path", ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"]
)
def test_discovery_names_the_issuer_of_the_cookie_domain(rp: RelyingParty, path: str) -> None:
    meta = json.loads(rp.get(path).body)
    assert meta["issuer"] == ISSUER
    assert meta["authorization_endpoint"] == f"{ISSUER}/api/oidc/authorization"
    assert meta["token_endpoint"] == f"{ISSUER}/api/oidc/token"
    assert meta["jwks_uri"] == f"{ISSUER}/jwks.json"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["response_types_supported"] == ["code"]
    other = rp.get(path, **{"X-Forwarded-Host": "login.example.org"})
    assert json.loads(other.body)["issuer"] == "https://login.example.org"


def test_discovery_refuses_plain_http_and_unknown_hosts(rp: RelyingParty) -> None:
    assert (
        rp.get("/.well-known/openid-configuration", **{"X-Forwarded-Proto": "http"}).status_int
        == 400
    )
    assert (
        rp.get("/.well-known/openid-configuration", **{"X-Forwarded-Host": "evil.test"}).status_int
        == 400
    )
    resp = rp.h.request("/jwks.json", method="POST")
    assert resp.status_int == 405


def test_jwks_publishes_the_public_key_only(rp: RelyingParty) -> None:
    keys = json.loads(rp.get("/jwks.json").body)["keys"]
    assert len(keys) == 1
    assert keys[0]["kid"]
    assert keys[0]["alg"] == "RS256"
    assert keys[0]["use"] == "sig"
    assert "d" not in keys[0]
    assert "p" not in keys[0]


# ---------------------------------------------------------------------- the code flow


def test_code_flow_id_token_and_userinfo(rp: RelyingParty, h: Harness) -> None:
    cookie = h.login("alice")
    code, q = rp.code(cookie, nonce="nonce-1", state="state-1")
    assert q["state"] == "state-1"
    assert q["iss"] == ISSUER
    body = tokens(rp.exchange(code))
    assert body["token_type"] == "Bearer"
    assert "refresh_token" not in body  # no offline_access asked
    claims = rp.verify(str(body["id_token"]), "nonce-1")
    assert claims["preferred_username"] == "alice"
    assert claims["name"] == "Alice Liddell"
    assert claims["email"] == "alice@example.com"
    assert claims["email_verified"] is True
    assert claims["groups"] == ["admins", "dev"]
    assert claims["amr"] == ["pwd"]
    assert claims["auth_time"] <= claims["iat"]
    assert claims["sub"] != "alice"  # opaque
    info = rp.get("/api/oidc/userinfo", Authorization=f"Bearer {body['access_token']}")
    assert info.status_int == 200
    assert json.loads(info.body) == {
        "sub": claims["sub"],
        "name": "Alice Liddell",
        "preferred_username": "alice",
        "email": "alice@example.com",
        "email_verified": True,
        "groups": ["admins", "dev"],
    }


def test_sub_is_stable_and_differs_per_user(rp: RelyingParty, h: Harness) -> None:
    subs = []
    for user in ("alice", "alice", "bob"):
        code, _ = rp.code(h.login(user))
        subs.append(rp.verify(str(tokens(rp.exchange(code))["id_token"]))["sub"])
    assert subs[0] == subs[1] != subs[2]


def test_scopes_limit_the_claims(rp: RelyingParty, h: Harness) -> None:
    code, _ = rp.code(h.login("alice"), scope="openid")
    claims = rp.verify(str(tokens(rp.exchange(code))["id_token"]))
    assert not {"name", "email", "groups", "preferred_username"} & set(claims)


def test_client_secret_post_and_explicit_consent(rp: RelyingParty, h: Harness) -> None:
    post = RelyingParty(h, client_id="post", method="post")
    cookie = h.login("alice")
    resp = post.authorize(cookie, state="s1")
    assert resp.status_int == 302
    assert resp.location.startswith(f"{ISSUER}/consent?flow=")
    flow = query_of(resp.location)["flow"]
    info = h.api(f"/api/oidc/consent?flow={flow}", method="GET", cookie=cookie)
    data = json.loads(info.body)["data"]
    assert data["client_id"] == "post"
    assert [s["scope"] for s in data["scopes"]] == ["openid", "profile", "email", "groups"]
    assert all(s["description"] for s in data["scopes"])
    answer = h.api("/api/oidc/consent", {"flow": flow, "consent": True}, cookie=cookie)
    location = json.loads(answer.body)["data"]["redirect"]
    q = query_of(location)
    assert location.startswith(APP_CB + "?")
    assert q["state"] == "s1"
    assert tokens(post.exchange(q["code"]))["access_token"]
    # basic auth for a client_secret_post client is refused
    code2 = _consented_code(post, h, cookie)
    wrong = post.post(
        "/api/oidc/token",
        {"grant_type": "authorization_code", "code": code2, "redirect_uri": APP_CB},
        basic("post"),
    )
    assert wrong.status_int == 401
    assert json.loads(wrong.body)["error"] == "invalid_client"


def _consented_code(rp: RelyingParty, h: Harness, cookie: str) -> str:
    resp = rp.authorize(cookie)
    flow = query_of(resp.location)["flow"]
    answer = h.api("/api/oidc/consent", {"flow": flow, "consent": True}, cookie=cookie)
    return query_of(json.loads(answer.body)["data"]["redirect"])["code"]


def test_consent_denied_goes_back_with_access_denied(h: Harness) -> None:
    post = RelyingParty(h, client_id="post", method="post")
    cookie = h.login("alice")
    flow = query_of(post.authorize(cookie, state="s2").location)["flow"]
    answer = h.api("/api/oidc/consent", {"flow": flow, "consent": False}, cookie=cookie)
    q = query_of(json.loads(answer.body)["data"]["redirect"])
    assert (q["error"], q["state"]) == ("access_denied", "s2")
    assert "code" not in q


def test_consent_api_needs_same_origin_and_a_valid_flow(h: Harness) -> None:
    cookie = h.login("alice")
    post = RelyingParty(h, client_id="post", method="post")
    flow = query_of(post.authorize(cookie).location)["flow"]
    cross = h.api(
        "/api/oidc/consent", {"flow": flow, "consent": True}, cookie=cookie,
        headers={"Origin": "https://evil.example.net"},
    )  # fmt: skip
    assert cross.status_int == 403
    assert h.api("/api/oidc/consent", {"flow": flow, "consent": True}).status_int == 401
    forged = flow[:-4] + ("AAAA" if not flow.endswith("AAAA") else "BBBB")
    bad = h.api("/api/oidc/consent", {"flow": forged, "consent": True}, cookie=cookie)
    assert bad.status_int == 400
    assert h.api("/api/oidc/consent", {"consent": True}, cookie=cookie).status_int == 400
    assert (
        h.api("/api/oidc/consent", {"flow": flow, "consent": "yes"}, cookie=cookie).status_int
        == 400
    )
    h.clock.advance(16 * 60)  # the flow expired
    assert (
        h.api("/api/oidc/consent", {"flow": flow, "consent": True}, cookie=h.login()).status_int
        == 400
    )


def test_pre_configured_consent_is_remembered_then_expires(h: Harness) -> None:
    native = RelyingParty(h, client_id="native", redirect_uri=NATIVE_CB, secret=None, method="none")
    _verifier, challenge = pkce()
    cookie = h.login("alice")
    args = {"scope": "openid profile", "code_challenge": challenge, "code_challenge_method": "S256"}
    first = native.authorize(cookie, **args)
    assert first.location.startswith(f"{ISSUER}/consent?")
    _consent = h.api(
        "/api/oidc/consent",
        {"flow": query_of(first.location)["flow"], "consent": True},
        cookie=cookie,
    )
    second = native.authorize(cookie, **args)
    assert second.location.startswith(NATIVE_CB + "?code=")
    # a wider scope, or prompt=consent, asks again
    assert native.authorize(
        cookie, **{**args, "scope": "openid profile offline_access"}
    ).location.startswith(f"{ISSUER}/consent?")
    assert native.authorize(cookie, prompt="consent", **args).location.startswith(
        f"{ISSUER}/consent?"
    )
    h.clock.advance(3601)
    cookie = h.login("alice")
    assert native.authorize(cookie, **args).location.startswith(f"{ISSUER}/consent?")


def test_public_client_needs_pkce_and_gets_tokens_without_secret(h: Harness) -> None:
    native = RelyingParty(h, client_id="native", redirect_uri=NATIVE_CB, secret=None, method="none")
    cookie = h.login("alice")
    no_pkce = native.authorize(cookie, scope="openid")
    q = query_of(no_pkce.location)
    assert no_pkce.location.startswith(NATIVE_CB)
    assert q["error"] == "invalid_request"
    verifier, challenge = pkce()
    h.app.live.oidc.provider.storage.save_oidc_consent(  # type: ignore[union-attr]
        "alice", "native", "openid profile offline_access", now=h.clock(), expires=h.clock() + 60
    )
    code, _ = native.code(
        cookie,
        scope="openid offline_access",
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    assert native.exchange(code).status_int == 400  # no verifier: refused, and the code is spent
    code, _ = native.code(
        cookie,
        scope="openid offline_access",
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    body = tokens(native.exchange(code, code_verifier=verifier))
    assert body["refresh_token"]
    # a secret sent by a public client is refused
    with_secret = native.post(
        "/api/oidc/token",
        {
            "grant_type": "refresh_token",
            "refresh_token": str(body["refresh_token"]),
            "client_id": "native",
            "client_secret": "x",
        },
    )
    assert with_secret.status_int == 401


# ---------------------------------------------------------------------- security properties


def test_code_is_single_use_and_a_replay_revokes_what_it_issued(
    rp: RelyingParty, h: Harness
) -> None:
    code, _ = rp.code(h.login("alice"), scope="openid offline_access")
    body = tokens(rp.exchange(code))
    replay = rp.exchange(code)
    assert replay.status_int == 400
    assert json.loads(replay.body)["error"] == "invalid_grant"
    info = rp.get("/api/oidc/userinfo", Authorization=f"Bearer {body['access_token']}")
    assert info.status_int == 401
    assert 'error="invalid_token"' in info.headers["WWW-Authenticate"]
    assert rp.refresh(str(body["refresh_token"])).status_int == 400


def test_code_expires(rp: RelyingParty, h: Harness) -> None:
    code, _ = rp.code(h.login("alice"))
    h.clock.advance(61)
    assert json.loads(rp.exchange(code).body)["error"] == "invalid_grant"


def test_code_is_bound_to_client_and_redirect_uri(rp: RelyingParty, h: Harness) -> None:
    code, _ = rp.code(h.login("alice"))
    strict = RelyingParty(h, client_id="strict")
    assert json.loads(strict.exchange(code).body)["error"] == "invalid_grant"
    code, _ = rp.code(h.login("alice"))
    resp = rp.exchange(code, redirect_uri="https://app.example.com/other")
    assert json.loads(resp.body)["error"] == "invalid_grant"


def test_pkce_verifier_must_match(rp: RelyingParty, h: Harness) -> None:
    verifier, challenge = pkce()
    cookie = h.login("alice")
    args = {"code_challenge": challenge, "code_challenge_method": "S256"}
    code, _ = rp.code(cookie, **args)
    assert json.loads(rp.exchange(code, code_verifier=pkce()[0]).body)["error"] == "invalid_grant"
    code, _ = rp.code(cookie, **args)
    assert json.loads(rp.exchange(code, code_verifier="short").body)["error"] == "invalid_grant"
    code, _ = rp.code(cookie, **args)
    assert tokens(rp.exchange(code, code_verifier=verifier))["access_token"]
    code, _ = rp.code(cookie)
    assert rp.exchange(code, code_verifier=verifier).status_int == 400  # verifier, no challenge


def test_plain_pkce_is_refused(rp: RelyingParty, h: Harness) -> None:
    resp = rp.authorize(
        h.login("alice"), code_challenge="a" * 43, code_challenge_method="plain", state="s"
    )
    q = query_of(resp.location)
    assert (q["error"], q["state"]) == ("invalid_request", "s")
    assert "S256" in q["error_description"]


def test_refresh_rotates_and_reuse_revokes_the_family(rp: RelyingParty, h: Harness) -> None:
    code, _ = rp.code(h.login("alice"), scope="openid profile offline_access")
    first = tokens(rp.exchange(code))
    second = tokens(rp.refresh(str(first["refresh_token"])))
    assert second["refresh_token"] != first["refresh_token"]
    claims = rp.verify(str(second["id_token"]))
    assert claims["preferred_username"] == "alice"
    # the old one again: refused, and the new ones die with it
    assert json.loads(rp.refresh(str(first["refresh_token"])).body)["error"] == "invalid_grant"
    assert rp.refresh(str(second["refresh_token"])).status_int == 400
    info = rp.get("/api/oidc/userinfo", Authorization=f"Bearer {second['access_token']}")
    assert info.status_int == 401


def test_refresh_cannot_widen_scopes_or_cross_clients(rp: RelyingParty, h: Harness) -> None:
    code, _ = rp.code(h.login("alice"), scope="openid offline_access")
    body = tokens(rp.exchange(code))
    assert (
        json.loads(rp.refresh(str(body["refresh_token"]), scope="openid email").body)["error"]
        == "invalid_scope"
    )
    strict = RelyingParty(h, client_id="strict")
    assert strict.refresh(str(body["refresh_token"])).status_int == 400
    narrowed = tokens(rp.refresh(str(body["refresh_token"]), scope="openid"))
    assert narrowed["scope"] == "openid"


def test_disabled_or_removed_user_tokens_stop_working(rp: RelyingParty, h: Harness) -> None:
    code, _ = rp.code(h.login("bob"), scope="openid offline_access")
    body = tokens(rp.exchange(code))
    text = h.config.users.file.read_text()
    h.rewrite_users(text.replace('displayname = "Bob"', 'displayname = "Bob"\ndisabled = true'))
    info = rp.get("/api/oidc/userinfo", Authorization=f"Bearer {body['access_token']}")
    assert info.status_int == 401
    assert rp.refresh(str(body["refresh_token"])).status_int == 400
    h.rewrite_users(text)  # enabled again: the refresh family was revoked for good
    assert rp.refresh(str(body["refresh_token"])).status_int == 400


def test_access_token_expires(rp: RelyingParty, h: Harness) -> None:
    code, _ = rp.code(h.login("alice"))
    body = tokens(rp.exchange(code))
    h.clock.advance(3601)
    assert (
        rp.get("/api/oidc/userinfo", Authorization=f"Bearer {body['access_token']}").status_int
        == 401
    )


@pytest.mark.parametrize(
    "auth",
    [basic("app", "wrong"), basic("nobody", SECRET), "Basic !!!", "Bearer x", basic("app", "")],
)
def test_wrong_client_credentials(rp: RelyingParty, h: Harness, auth: str) -> None:
    code, _ = rp.code(h.login("alice"))
    resp = rp.post(
        "/api/oidc/token",
        {"grant_type": "authorization_code", "code": code, "redirect_uri": APP_CB},
        auth,
    )
    assert resp.status_int == 401
    assert json.loads(resp.body)["error"] == "invalid_client"
    assert "WWW-Authenticate" in resp.headers


def test_two_client_auth_methods_at_once_are_refused(rp: RelyingParty, h: Harness) -> None:
    code, _ = rp.code(h.login("alice"))
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": APP_CB,
        "client_secret": SECRET,
    }
    assert rp.post("/api/oidc/token", form, basic()).status_int == 401


# ---------------------------------------------------------------------- authorization errors


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"client_id": "nobody"}, "invalid_client"),
        ({"client_id": ""}, "invalid_client"),
        ({"redirect_uri": "https://evil.example.net/cb"}, "invalid_redirect_uri"),
        ({"redirect_uri": APP_CB + "/"}, "invalid_redirect_uri"),
        ({"redirect_uri": APP_CB + "?x=1"}, "invalid_redirect_uri"),
        ({"redirect_uri": ""}, "invalid_redirect_uri"),
    ],
)
def test_unknown_client_or_redirect_is_shown_on_the_portal(
    rp: RelyingParty, h: Harness, params: dict[str, str], code: str
) -> None:
    """Never redirected to (an open redirect); the portal's consent page shows the error."""
    resp = rp.authorize(h.login("alice"), **params)
    assert resp.status_int == 302
    assert resp.location == f"{ISSUER}/consent?error={code}"


def test_duplicate_parameters_are_refused_on_the_portal(rp: RelyingParty, h: Harness) -> None:
    query = f"response_type=code&client_id=app&redirect_uri={APP_CB}&redirect_uri=https://evil.example.net/&scope=openid"
    resp = rp.get(f"/api/oidc/authorization?{query}", h.login("alice"))
    assert resp.location == f"{ISSUER}/consent?error=invalid_request"
    query = f"response_type=code&client_id=app&redirect_uri={APP_CB}&scope=openid&state=a&state=b"
    assert rp.get(f"/api/oidc/authorization?{query}", h.login()).location.endswith(
        "error=invalid_request"
    )


def test_oversized_parameters_are_refused(rp: RelyingParty, h: Harness) -> None:
    resp = rp.authorize(h.login("alice"), state="x" * 3000)
    assert resp.location == f"{ISSUER}/consent?error=invalid_request"
    code, _ = rp.code(h.login("alice"))
    form = {"grant_type": "authorization_code", "code": code + "x" * 3000, "redirect_uri": APP_CB}
    assert json.loads(rp.post("/api/oidc/token", form, basic()).body)["error"] == "invalid_request"
    big = rp.post("/api/oidc/token", "a=" + "b" * 20000, basic())
    assert big.status_int == 413


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": "code id_token"}, "unsupported_response_type"),
        ({"response_type": None}, "invalid_request"),
        ({"scope": "profile"}, "invalid_scope"),
        ({"scope": "openid admin"}, "invalid_scope"),
        ({"prompt": "select_account"}, "invalid_request"),
        ({"prompt": "none login"}, "invalid_request"),
        ({"max_age": "-1"}, "invalid_request"),
        ({"max_age": "soon"}, "invalid_request"),
        ({"code_challenge": "short", "code_challenge_method": "S256"}, "invalid_request"),
        ({"code_challenge_method": "S256"}, "invalid_request"),
        ({"request": "eyJ..."}, "request_not_supported"),
        ({"request_uri": "https://x"}, "request_uri_not_supported"),
        ({"response_mode": "fragment"}, "invalid_request"),
    ],
)
def test_other_errors_go_back_to_the_client(
    rp: RelyingParty, h: Harness, params: dict[str, str | None], error: str
) -> None:
    """RFC 6749 §4.1.2.1: the error, its description and the state, at the redirect URI."""
    resp = rp.authorize(h.login("alice"), state="keep-me", **params)  # type: ignore[arg-type]
    assert resp.status_int == 302
    assert resp.location.startswith(APP_CB + "?")
    q = query_of(resp.location)
    assert (q["error"], q["state"], q["iss"]) == (error, "keep-me", ISSUER)
    assert "code" not in q


def test_token_endpoint_malformed_requests(rp: RelyingParty, h: Harness) -> None:
    assert json.loads(rp.post("/api/oidc/token", {}, basic()).body)["error"] == "invalid_request"
    assert (
        json.loads(rp.post("/api/oidc/token", {"grant_type": "password"}, basic()).body)["error"]
        == "unsupported_grant_type"
    )
    assert (
        json.loads(rp.post("/api/oidc/token", {"grant_type": "authorization_code"}, basic()).body)[
            "error"
        ]
        == "invalid_request"
    )
    assert (
        json.loads(rp.post("/api/oidc/token", {"grant_type": "refresh_token"}, basic()).body)[
            "error"
        ]
        == "invalid_request"
    )
    dup = rp.post(
        "/api/oidc/token", "grant_type=authorization_code&grant_type=refresh_token", basic()
    )
    assert json.loads(dup.body)["error"] == "invalid_request"
    fwd = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "auth.example.com"}
    as_json = h.request(
        "/api/oidc/token", method="POST", body=b"{}",
        headers={**fwd, "Content-Type": "application/json", "Authorization": basic()},
    )  # fmt: skip
    assert json.loads(as_json.body)["error"] == "invalid_request"
    in_url = h.request(
        "/api/oidc/token?code=x", method="POST", body=b"grant_type=authorization_code",
        headers={**fwd, "Content-Type": FORM, "Authorization": basic()},
    )  # fmt: skip
    assert in_url.status_int == 400
    assert rp.h.request("/api/oidc/token").status_int == 405


# ---------------------------------------------------------------------- sign-in through the portal


def test_unauthenticated_request_goes_to_the_portal_and_back(rp: RelyingParty, h: Harness) -> None:
    resp = rp.authorize(None, state="s")
    assert resp.status_int == 302
    assert resp.location.startswith(f"{ISSUER}/?rd=")
    target = query_of(resp.location)["rd"]
    assert target.startswith(f"{ISSUER}/api/oidc/authorization?flow=")
    cookie = h.login("alice")
    back = rp.get(target.removeprefix(ISSUER), cookie)
    assert back.location.startswith(APP_CB + "?code=")
    assert query_of(back.location)["state"] == "s"


def test_two_factor_client_sends_a_one_factor_user_to_2fa(h: Harness) -> None:
    strict = RelyingParty(h, client_id="strict")
    resp = strict.authorize(h.login("alice"))
    assert resp.location.startswith(f"{ISSUER}/2fa?rd=")
    assert query_of(resp.location)["rd"].startswith(f"{ISSUER}/api/oidc/authorization?flow=")


def test_prompt_none(rp: RelyingParty, h: Harness) -> None:
    q = query_of(rp.authorize(None, prompt="none", state="s").location)
    assert (q["error"], q["state"]) == ("login_required", "s")
    post = RelyingParty(h, client_id="post", method="post")
    q = query_of(post.authorize(h.login("alice"), prompt="none").location)
    assert q["error"] == "consent_required"
    assert rp.authorize(h.login("alice"), prompt="none").location.startswith(APP_CB + "?code=")


def test_prompt_login_and_max_age_ask_for_a_new_sign_in(rp: RelyingParty, h: Harness) -> None:
    cookie = h.login("alice")
    h.clock.advance(10)
    resp = rp.authorize(cookie, prompt="login")
    assert resp.location.startswith(f"{ISSUER}/?rd=")
    assert (
        "Max-Age=0" in resp.headers["Set-Cookie"] or "expires" in resp.headers["Set-Cookie"].lower()
    )
    target = query_of(resp.location)["rd"].removeprefix(ISSUER)
    fresh = h.login("alice")
    back = rp.get(target, fresh)
    assert back.location.startswith(APP_CB + "?code=")
    code = query_of(back.location)["code"]
    claims = rp.verify(str(tokens(rp.exchange(code))["id_token"]))
    assert claims["auth_time"] >= int(h.clock()) - 1
    # max_age: a sign-in older than it must be redone
    h.clock.advance(100)
    assert rp.authorize(fresh, max_age="50").location.startswith(f"{ISSUER}/?rd=")
    newer = h.login("alice")
    assert rp.authorize(newer, max_age="50").location.startswith(APP_CB + "?code=")


def test_introspection_and_revocation(rp: RelyingParty, h: Harness) -> None:
    code, _ = rp.code(h.login("alice"), scope="openid offline_access")
    body = tokens(rp.exchange(code))
    access, refresh = str(body["access_token"]), str(body["refresh_token"])
    live = json.loads(rp.post("/api/oidc/introspection", {"token": access}, basic()).body)
    assert live["active"] is True
    assert live["username"] == "alice"
    assert live["client_id"] == "app"
    other = RelyingParty(h, client_id="strict")
    assert json.loads(
        other.post("/api/oidc/introspection", {"token": access}, basic("strict")).body
    ) == {"active": False}
    assert rp.post("/api/oidc/introspection", {"token": access}).status_int == 401
    # another client cannot revoke it; the owner can (200 either way, RFC 7009)
    assert other.post("/api/oidc/revocation", {"token": refresh}, basic("strict")).status_int == 200
    assert rp.refresh(refresh).status_int == 200  # still alive, rotated
    code, _ = rp.code(h.login("alice"), scope="openid offline_access")
    body = tokens(rp.exchange(code))
    assert (
        rp.post("/api/oidc/revocation", {"token": str(body["refresh_token"])}, basic()).status_int
        == 200
    )
    assert json.loads(
        rp.post("/api/oidc/introspection", {"token": str(body["access_token"])}, basic()).body
    ) == {"active": False}
    assert rp.post("/api/oidc/revocation", {"token": "nonsense"}, basic()).status_int == 200
    assert rp.post("/api/oidc/revocation", {}, basic()).status_int == 400


def test_userinfo_needs_a_bearer_token(rp: RelyingParty) -> None:
    assert rp.get("/api/oidc/userinfo").status_int == 401
    assert rp.get("/api/oidc/userinfo", Authorization="Basic eDp5").status_int == 401
    assert rp.get("/api/oidc/userinfo", Authorization="Bearer authctl_at_nope").status_int == 401


def test_provider_off_serves_nothing(tmp_path: Path, clock: Clock) -> None:
    from tests.apphelpers import build

    h = build(tmp_path, clock)
    assert h.request("/.well-known/openid-configuration").status_int == 404
    assert h.api("/api/oidc/token", method="POST").status_int == 404


def test_state_is_shared_by_hosts_on_one_storage(rp: RelyingParty, h: Harness) -> None:
    """A second app on the same storage (another host) redeems the code, refreshes and
    serves userinfo: codes and tokens live in storage, not in one process."""
    from server.core.session_store import MemoryStore
    from server.web.app import make_app

    other = make_app(h.config, now=h.clock, store=MemoryStore(), users=h.users, hasher=h.hasher)
    h2 = Harness(other, h.config, h.users, MemoryStore(), h.clock, h.hasher)
    rp2 = RelyingParty(h2)
    code, _ = rp.code(h.login("alice"), scope="openid offline_access")
    body = tokens(rp2.exchange(code))
    assert rp.verify(str(body["id_token"]))["sub"] == rp2.verify(str(body["id_token"]))["sub"]
    assert rp.exchange(code).status_int == 400  # replayed on the first host
    assert rp2.refresh(str(body["refresh_token"])).status_int == 400  # the replay revoked it


def test_reload_applies_new_clients(tmp_path: Path, clock: Clock) -> None:
    """A client added to the file works after a reload; a removed one is refused."""
    from server.core.config import load_config
    from tests.oidc_helpers import oidc_config

    h = build_oidc(tmp_path, clock)
    path = tmp_path / "authctl.toml"
    text = oidc_config().replace('client_id = "app"', 'client_id = "app2"')
    path.write_text(text, encoding="utf-8")
    h.app.reload(load_config(path))
    cookie = h.login("alice")
    assert RelyingParty(h).authorize(cookie).location.endswith("error=invalid_client")
    assert RelyingParty(h, client_id="app2").authorize(cookie).location.startswith(APP_CB)


# ---------------------------------------------------------------------- client-secret guessing


class CountingHasher:
    """Builds a real :class:`PasswordHasher` subclass that counts every argon2 verification
    (real and dummy) it performs."""

    @staticmethod
    def make() -> t.Any:
        from server.core.passwords import PasswordHasher
        from tests.apphelpers import CHEAP

        class Counting(PasswordHasher):
            def __init__(self) -> None:
                super().__init__(CHEAP)
                self.verifies = 0

            def verify(self, phc: str, password: str) -> bool:
                self.verifies += 1
                return super().verify(phc, password)

            def dummy_verify(self, password: str) -> bool:
                self.verifies += 1
                return super().dummy_verify(password)

        return Counting()


def _counting_harness(h: Harness, hasher: t.Any | None = None) -> tuple[Harness, t.Any]:
    """Another app on ``h``'s storage and config (another host), with a counting hasher."""
    from server.core.session_store import MemoryStore
    from server.web.app import make_app

    hasher = hasher or CountingHasher.make()
    store = MemoryStore()
    app = make_app(h.config, now=h.clock, store=store, users=h.users, hasher=hasher)
    hasher.verifies = 0  # count from here: what the token endpoint hashes
    return Harness(app, h.config, h.users, store, h.clock, hasher), hasher


def _token_from(h: Harness, ip: str, auth: str, **form: str) -> t.Any:
    from urllib.parse import urlencode

    body = {
        "grant_type": "authorization_code",
        "code": "authctl_ac_nothing",
        "redirect_uri": APP_CB,
    }
    body.update(form)
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "auth.example.com",
        "X-Forwarded-For": ip,
        "Content-Type": FORM,
        "Authorization": auth,
    }
    return h.request(
        "/api/oidc/token", method="POST", headers=headers, body=urlencode(body).encode()
    )


def test_wrong_secrets_are_limited_per_ip_before_any_hashing(h: Harness) -> None:
    """A burst of wrong secrets from one address: 10 are hashed (401), the rest get 429 with
    Retry-After and cost no argon2; a right secret from another address still works."""
    host, hasher = _counting_harness(h)
    for _ in range(10):
        resp = _token_from(host, "198.51.100.7", basic("app", "wrong"))
        assert resp.status_int == 401
    assert hasher.verifies == 10
    for _ in range(20):
        resp = _token_from(host, "198.51.100.7", basic("app", "wrong"))
        assert resp.status_int == 429
        assert json.loads(resp.body)["error"] == "invalid_client"
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
    # the right secret from the limited address is refused too (nothing is hashed for it)
    assert _token_from(host, "198.51.100.7", basic()).status_int == 429
    assert hasher.verifies == 10
    # unknown clients from that address are limited the same way, without a dummy hash
    assert _token_from(host, "198.51.100.7", basic("nobody", "x")).status_int == 429
    assert hasher.verifies == 10
    # another address with the right secret authenticates (the code is then just invalid)
    ok = _token_from(host, "203.0.113.9", basic())
    assert (ok.status_int, json.loads(ok.body)["error"]) == (400, "invalid_grant")
    assert hasher.verifies == 11
    # a minute later the address has its allowance back
    h.clock.advance(61)
    assert _token_from(host, "198.51.100.7", basic("app", "wrong")).status_int == 401


def test_a_known_good_secret_is_not_slowed_by_the_limit(h: Harness) -> None:
    """A client that authenticated once is answered from the success cache: no hash and no
    rate-limit hit, even while its address is limited for wrong secrets."""
    host, hasher = _counting_harness(h)
    assert _token_from(host, "198.51.100.8", basic()).status_int == 400  # hashed once
    for _ in range(10):
        _token_from(host, "198.51.100.8", basic("app", "wrong"))
    assert _token_from(host, "198.51.100.8", basic("app", "wrong")).status_int == 429
    before = hasher.verifies
    for _ in range(5):
        assert _token_from(host, "198.51.100.8", basic()).status_int == 400  # invalid_grant
    assert hasher.verifies == before


def test_wrong_secrets_are_limited_per_client_across_addresses(h: Harness) -> None:
    """Many addresses guessing one client's secret: 30 hashes a minute for that client."""
    host, hasher = _counting_harness(h)
    for n in range(30):
        resp = _token_from(host, f"198.51.100.{n + 1}", "", client_id="post", client_secret="w")
        assert resp.status_int == 401
    assert hasher.verifies == 30
    resp = _token_from(host, "198.51.100.200", basic("app", "wrong"))
    assert resp.status_int == 401  # another client is not affected
    hashed = hasher.verifies
    for n in range(5):
        resp = _token_from(host, f"192.0.2.{n + 1}", "", client_id="post", client_secret="w")
        assert resp.status_int == 429
    assert hasher.verifies == hashed


def test_client_auth_limits_are_shared_by_hosts_on_one_storage(h: Harness) -> None:
    """Two apps on one storage (two hosts or workers) count one limit, not one each."""
    first, one = _counting_harness(h)
    second, two = _counting_harness(h)
    for n in range(10):
        _token_from(first if n % 2 else second, "198.51.100.9", basic("app", "wrong"))
    assert one.verifies + two.verifies == 10
    assert _token_from(first, "198.51.100.9", basic("app", "wrong")).status_int == 429
    assert _token_from(second, "198.51.100.9", basic("app", "wrong")).status_int == 429
    assert one.verifies + two.verifies == 10


def test_client_auth_hashes_through_the_hash_gate(h: Harness) -> None:
    """When every hashing slot is taken (sign-ins in flight), the token endpoint does not
    hash: 503 temporarily_unavailable with Retry-After, and sign-ins keep their slots."""
    host, hasher = _counting_harness(h)
    gate = host.app.live.portal.identities.gate
    held = [gate.slot() for _ in range(gate.max_concurrent)]
    for slot in held:
        slot.__enter__()
    try:
        resp = _token_from(host, "198.51.100.10", basic())
    finally:
        for slot in held:
            slot.__exit__(None, None, None)
    assert resp.status_int == 503
    assert json.loads(resp.body)["error"] == "temporarily_unavailable"
    assert resp.headers["Retry-After"] == "1"
    assert hasher.verifies == 0
    assert _token_from(host, "198.51.100.10", basic()).status_int == 400  # invalid_grant


# ---------------------------------------------------------------------- amr after a second factor


def _amr(h: Harness, cookie: str, client_id: str = "strict") -> list[str]:
    """The ``amr`` of the ID token a code flow gives for the session of ``cookie``."""
    client = RelyingParty(h, client_id=client_id)
    code, _ = client.code(cookie)
    claims = client.verify(str(tokens(client.exchange(code))["id_token"]))
    return list(claims["amr"])


def _ss(h: Harness) -> t.Any:
    from tests.test_selfservice import SS

    assert h.app.selfservice is not None
    return SS(h, h.app.selfservice, [])


def test_amr_after_totp_names_otp(h: Harness) -> None:
    from tests.test_selfservice import second_factor

    secret, _ = h.app.portal.totp.enrol("alice")
    two = second_factor(_ss(h), h.login("alice"), secret)
    assert _amr(h, two) == ["pwd", "otp", "mfa"]


def test_amr_after_a_security_key_names_hwk(h: Harness) -> None:
    from tests.test_selfservice import cookie_of
    from tests.test_webauthn_api import enrol
    from tests.test_webauthn_api import two_factor

    ss = _ss(h)
    auth, _ = enrol(ss)
    resp = two_factor(ss, h.login("alice"), auth)
    assert resp.status_int == 200, resp.text
    assert _amr(h, cookie_of(resp)) == ["pwd", "hwk", "mfa"]


def test_amr_of_passkey_sign_ins(h: Harness) -> None:
    """A passkey with user verification counts as two factors (``hwk user mfa``); without it
    one (``hwk``), and a TOTP after it adds ``otp mfa``."""
    from tests.test_selfservice import second_factor
    from tests.test_webauthn_api import enrol
    from tests.test_webauthn_api import passkey
    from tests.test_webauthn_api import session_cookie

    ss = _ss(h)
    auth, _ = enrol(ss)
    verified = session_cookie(passkey(ss, auth))
    assert _amr(h, verified) == ["hwk", "user", "mfa"]
    present = session_cookie(passkey(ss, auth, uv=False))
    assert _amr(h, present, "app") == ["hwk"]
    secret, _ = h.app.portal.totp.enrol("alice")
    assert _amr(h, second_factor(ss, present, secret)) == ["hwk", "otp", "mfa"]


def test_amr_of_sessions_without_a_record() -> None:
    """Sessions made before the factor was recorded read as before: never more than the level
    proves; a recorded second factor replaces an older ``mfa`` instead of doubling it."""
    from server.core import amr

    assert amr.of_session({}, 1) == ("pwd",)
    assert amr.of_session({}, 2) == ("pwd", "mfa")
    assert amr.after_second_factor({}, 2, amr.OTP) == {"amr": "pwd otp mfa"}
    assert amr.after_second_factor({"amr": "hwk user mfa"}, 2, amr.OTP) == {
        "amr": "hwk user otp mfa"
    }
