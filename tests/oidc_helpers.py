"""A relying party written for the tests: it drives authctl's OpenID Provider the way an app
does (authorization request, code exchange, refresh, userinfo) and checks ID tokens against
the published ``/jwks.json`` with joserfc."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import typing as t
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs
from urllib.parse import urlencode
from urllib.parse import urlsplit

from joserfc import jwt
from joserfc.jwk import KeySet

from tests.apphelpers import APP_CONFIG
from tests.apphelpers import CHEAP
from tests.apphelpers import Harness
from tests.apphelpers import build

KEY = Path(__file__).parent / "data" / "oidc-rs256.pem"
SECRET = "app-secret-0123456789abcdefghijklmnopqrstuvwxyz"
ISSUER = "https://auth.example.com"
APP_CB = "https://app.example.com/cb"
NATIVE_CB = "http://127.0.0.1:8400/cb"


def secret_hash() -> str:
    from server.core.passwords import PasswordHasher

    return PasswordHasher(CHEAP).hash(SECRET)


def oidc_config(extra: str = "") -> str:
    h = secret_hash()
    return (
        APP_CONFIG
        + f"""
[identity_providers.oidc]
enable = true
issuer_private_key_file = "secrets/oidc.pem"
enforce_pkce = "public_clients_only"

[[identity_providers.oidc.clients]]
client_id = "app"
client_name = "The App"
client_secret = "{h}"
redirect_uris = ["{APP_CB}"]
scopes = ["openid", "profile", "email", "groups", "offline_access"]
authorization_policy = "one_factor"
consent_mode = "implicit"

[[identity_providers.oidc.clients]]
client_id = "post"
client_secret = "{h}"
redirect_uris = ["{APP_CB}"]
authorization_policy = "one_factor"
consent_mode = "explicit"
token_endpoint_auth_method = "client_secret_post"

[[identity_providers.oidc.clients]]
client_id = "native"
client_name = "Native"
public = true
redirect_uris = ["{NATIVE_CB}"]
scopes = ["openid", "profile", "offline_access"]
authorization_policy = "one_factor"
consent_mode = "pre-configured"
pre_configured_consent_duration = "1h"

[[identity_providers.oidc.clients]]
client_id = "strict"
client_secret = "{h}"
redirect_uris = ["{APP_CB}"]
authorization_policy = "two_factor"
consent_mode = "implicit"
"""
        + extra
    )


def build_oidc(tmp_path: Path, clock: t.Any, extra: str = "") -> Harness:
    (tmp_path / "secrets").mkdir(exist_ok=True)
    (tmp_path / "secrets" / "oidc.pem").write_bytes(KEY.read_bytes())
    (tmp_path / "secrets" / "oidc.pem").chmod(0o600)
    return build(tmp_path, clock, oidc_config(extra))


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def basic(client_id: str = "app", secret: str = SECRET) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@dataclass
class RelyingParty:
    """One client of the provider, talking to it through the harness's app."""

    h: Harness
    client_id: str = "app"
    redirect_uri: str = APP_CB
    secret: str | None = SECRET
    method: str = "basic"

    def get(self, path: str, cookie: str | None = None, **headers: str) -> t.Any:
        hdrs = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "auth.example.com", **headers}
        if cookie:
            hdrs["Cookie"] = cookie
        return self.h.request(path, headers=hdrs)

    def authorize(self, cookie: str | None = None, **params: str) -> t.Any:
        base = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": "openid profile email groups",
            "state": "st-" + secrets.token_hex(4),
            "nonce": "n-" + secrets.token_hex(4),
        }
        base.update(params)
        query = urlencode({k: v for k, v in base.items() if v is not None})
        return self.get(f"/api/oidc/authorization?{query}", cookie)

    def post(self, path: str, form: dict[str, str] | str, auth: str | None = None) -> t.Any:
        body = form if isinstance(form, str) else urlencode(form)
        headers = {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "auth.example.com",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        if auth:
            headers["Authorization"] = auth
        return self.h.request(path, method="POST", headers=headers, body=body.encode())

    def client_auth(self, form: dict[str, str]) -> tuple[dict[str, str], str | None]:
        if self.method == "basic" and self.secret is not None:
            return form, basic(self.client_id, self.secret)
        form = {**form, "client_id": self.client_id}
        if self.method == "post" and self.secret is not None:
            form["client_secret"] = self.secret
        return form, None

    def exchange(self, code: str, **extra: str) -> t.Any:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri}
        form.update(extra)
        form, auth = self.client_auth(form)
        return self.post("/api/oidc/token", form, auth)

    def refresh(self, token: str, **extra: str) -> t.Any:
        form, auth = self.client_auth(
            {"grant_type": "refresh_token", "refresh_token": token, **extra}
        )
        return self.post("/api/oidc/token", form, auth)

    def code(self, cookie: str, **params: str) -> tuple[str, dict[str, str]]:
        """Run the authorization request to its code (the user signed in, no consent asked)."""
        resp = self.authorize(cookie, **params)
        assert resp.status_int == 302, resp.text
        assert resp.location.startswith(self.redirect_uri + "?"), resp.location
        q = query_of(resp.location)
        return q["code"], q

    def jwks(self) -> KeySet:
        resp = self.get("/jwks.json")
        assert resp.status_int == 200
        return KeySet.import_key_set(json.loads(resp.body))

    def verify(self, id_token: str, nonce: str | None = None) -> dict[str, t.Any]:
        """The ID token's claims, its signature checked against /jwks.json and its
        iss/aud/azp/exp checked as an OIDC client must (Core §3.1.3.7)."""
        decoded = jwt.decode(id_token, self.jwks(), algorithms=["RS256"])
        assert decoded.header["alg"] == "RS256"
        assert decoded.header["kid"]
        claims = decoded.claims
        assert claims["iss"] == ISSUER
        assert claims["aud"] == [self.client_id]
        assert claims["azp"] == self.client_id
        assert claims["exp"] > claims["iat"]
        if nonce is not None:
            assert claims["nonce"] == nonce
        return claims
