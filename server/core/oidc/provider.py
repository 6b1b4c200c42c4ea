"""The OpenID Provider's protocol logic (SPEC §7.3), free of HTTP: parameters in, results or
:class:`OAuthError` out. ``server.web.oidc_api`` turns these into responses.

Security properties, each enforced here and tested in ``tests/test_oidc*.py``:

- an unknown client or an unregistered ``redirect_uri`` raises :class:`PortalError` (shown on
  the portal, never redirected to); every other authorization error goes back to the
  client's ``redirect_uri`` with ``state`` (RFC 6749 §4.1.2.1);
- a parameter sent twice, or longer than :data:`MAX_PARAM`, is refused (RFC 6749 §3.1);
- PKCE: ``S256`` only (``plain`` refused), required as ``enforce_pkce`` says;
- codes are random (256 bits), stored as a digest, short-lived, single use, bound to the
  client, redirect URI and PKCE challenge; a replayed code revokes what it issued;
- refresh tokens rotate at each use; a used one presented again revokes its family;
- tokens of a removed or disabled user stop working (checked against the users file at
  each use);
- client secrets are argon2id hashes checked by argon2 (constant time), successes cached
  by a digest of the secret so a busy client does not pay argon2 on every request;
- client-secret guessing is bounded (:data:`CLIENT_AUTH_IP_LIMITS`,
  :data:`CLIENT_AUTH_CLIENT_LIMITS`): every client authentication that would run argon2 (a
  secret not in the success cache, or an unknown client's dummy verify) first takes a hit in
  the storage-backed rate limits (:mod:`server.core.ratelimit`, shared by every worker and
  host), per client address and per client; a caller over a limit is refused before any
  hashing, so a flood costs one storage transaction per request, never argon2. The hashing
  itself runs in the server's :class:`~server.core.hashcap.HashGate`, so the token endpoint
  cannot take the slots sign-ins need.

Why 429 for a limited client authentication (RFC 6749 has no rate-limit answer): the refusal
is decided before the secret is looked at, so it tells nothing about the secret; HTTP 429 with
``Retry-After`` (RFC 6585) tells a legitimate client to back off instead of reporting a wrong
secret, and its OAuth body keeps the registered code ``invalid_client`` (the client is not
authenticated) so clients that only read the body still fail closed. It has no
``WWW-Authenticate``, since retrying with other credentials does not help. A client whose right
secret is in the success cache is neither counted nor refused (no hashing to bound).

JWTs (ID tokens, the signed pending-request ``flow``) are joserfc's; PKCE's S256 is Authlib's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
import typing as t
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote
from urllib.parse import urlencode
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from server.core.hashcap import Busy
from server.core.hashcap import HashGate
from server.core.hashcap import client_key
from server.core.oidc.keys import public_jwks
from server.core.oidc.keys import signing_key
from server.core.passwords import PasswordHasher
from server.core.ratelimit import RateLimits
from server.core.ratelimit import limits
from server.core.storage import CodeRedemption
from server.core.storage import OidcCode
from server.core.storage import OidcGrant
from server.core.storage import OidcToken
from server.core.storage import Rotation

if t.TYPE_CHECKING:
    from server.core.config import OidcClientConfig
    from server.core.config import OidcConfig
    from server.core.storage import Storage
    from server.core.users import User

#: The longest value of any parameter (a redirect URI, state, nonce, a token).
MAX_PARAM = 2048
#: Prefixes of what the provider issues (opaque, 256 random bits each).
CODE_PREFIX = "authctl_ac_"
ACCESS_PREFIX = "authctl_at_"
REFRESH_PREFIX = "authctl_rt_"
#: How long a pending authorization request (``flow``) stays usable: sign-in and consent.
FLOW_LIFESPAN = 15 * 60
#: Words for the consent page.
SCOPE_WORDS = {
    "openid": "Use your account to sign you in",
    "profile": "See your name and user name",
    "email": "See your email address",
    "groups": "See the groups you belong to",
    "offline_access": "Stay signed in to it while you are away (refresh tokens)",
}
_PKCE_VERIFIER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_CACHE_MAX = 1024
#: Client authentications that may run argon2 per client address (an IPv6 /64) per minute:
#: a misconfigured client retrying, never a guessing run or a CPU flood from one address.
CLIENT_AUTH_IP_LIMITS = limits((10, 60.0))
#: ... per registered client per minute, from all addresses together (a distributed guess at
#: one secret). Unknown client ids share one such budget: no real client uses them. Higher than
#: the per-address limit, so one address alone never locks a client out.
CLIENT_AUTH_CLIENT_LIMITS = limits((30, 60.0))


class PortalError(Exception):
    """An authorization request that cannot be sent back to the client (unknown client,
    unregistered redirect URI, malformed ``client_id``/``redirect_uri``): the portal shows
    ``code`` and never redirects (RFC 6749 §4.1.2.1)."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


class OAuthError(Exception):
    """An OAuth error (RFC 6749 §4.1.2.1, §5.2): ``error`` code, description, HTTP status;
    ``redirect`` (with ``state``) when it goes back to the client's redirect URI."""

    def __init__(
        self,
        error: str,
        description: str,
        status: int = 400,
        *,
        redirect: str | None = None,
        state: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.redirect = redirect
        self.state = state
        #: Seconds before a retry can succeed (``Retry-After``), for 429 and 503.
        self.retry_after = retry_after

    def location(self, issuer: str) -> str:
        """The client redirect carrying this error (only when ``redirect`` is set)."""
        params = {"error": self.error, "error_description": self.description}
        if self.state:
            params["state"] = self.state
        params["iss"] = issuer
        return add_query(self.redirect or "", params)


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """A validated authorization request."""

    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str
    nonce: str
    code_challenge: str
    prompt: frozenset[str]
    max_age: int | None
    requested_at: float

    def as_claims(self) -> dict[str, object]:
        return {
            "cid": self.client_id, "ru": self.redirect_uri, "sc": " ".join(self.scopes),
            "st": self.state, "no": self.nonce, "cc": self.code_challenge,
            "pr": " ".join(sorted(self.prompt)), "ma": self.max_age, "rat": self.requested_at,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class SignIn:
    """Who is signed in at the authorization endpoint, from the portal's session."""

    username: str
    level: int
    auth_time: float
    #: The session's RFC 8176 methods (:func:`server.core.amr.of_session`); empty: unknown.
    methods: tuple[str, ...] = ()

    @property
    def amr(self) -> tuple[str, ...]:
        """RFC 8176 methods: what the session recorded (``pwd``, ``hwk``, plus ``otp``/``hwk``
        and ``mfa`` after a second factor), else ``pwd`` (+ ``mfa`` at level 2)."""
        if self.methods:
            return self.methods
        return ("pwd", "mfa") if self.level >= 2 else ("pwd",)


def add_query(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` appended to its query."""
    parts = urlsplit(url)
    query = parts.query + ("&" if parts.query else "") + urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


def single(params: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Parameters as a dict; a name sent twice or a value over :data:`MAX_PARAM` raises
    ``invalid_request`` (RFC 6749 §3.1: "parameters MUST NOT be included more than once")."""
    out: dict[str, str] = {}
    for name, value in params:
        if name in out:
            raise OAuthError("invalid_request", f"The parameter {name} was sent more than once.")
        if len(value) > MAX_PARAM:
            raise OAuthError("invalid_request", f"The parameter {name} is too long.")
        out[name] = value
    return out


class Provider:
    """The provider for one config: signs with the issuer key, keeps state in storage."""

    def __init__(
        self,
        config: OidcConfig,
        storage: Storage,
        users: Callable[[], Mapping[str, User]],
        *,
        now: Callable[[], float] = time.time,
        hasher: PasswordHasher | None = None,
        gate: HashGate | None = None,
    ) -> None:
        self.config = config
        self.storage = storage
        self.users = users
        self.now = now
        self.hasher = hasher or PasswordHasher()
        #: The server's cap on concurrent hashing (shared with sign-ins).
        self.gate = gate if gate is not None else HashGate(64, wait_seconds=0)
        rate_limits = RateLimits(storage, now=now)
        self._by_ip = rate_limits.limiter("oidc_client_auth_ip", CLIENT_AUTH_IP_LIMITS)
        self._by_client = rate_limits.limiter("oidc_client_auth", CLIENT_AUTH_CLIENT_LIMITS)
        self._by_unknown = rate_limits.limiter(
            "oidc_client_auth_unknown", CLIENT_AUTH_CLIENT_LIMITS
        )
        self.key = signing_key(config.issuer_key_pem)
        self.kid = str(self.key.kid)
        self.jwks = public_jwks(self.key)
        flow_secret = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"authctl oidc flow"
        ).derive(config.issuer_key_pem)
        self.flow_key = OctKey.import_key(flow_secret)
        self._secret_ok: dict[bytes, None] = {}
        self._cache_lock = threading.Lock()

    # ------------------------------------------------------------------ discovery

    def discovery(self, issuer: str) -> dict[str, object]:
        """OpenID Connect Discovery 1.0 metadata (also RFC 8414's) for ``issuer``."""
        return {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/api/oidc/authorization",
            "token_endpoint": f"{issuer}/api/oidc/token",
            "userinfo_endpoint": f"{issuer}/api/oidc/userinfo",
            "introspection_endpoint": f"{issuer}/api/oidc/introspection",
            "revocation_endpoint": f"{issuer}/api/oidc/revocation",
            "jwks_uri": f"{issuer}/jwks.json",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email", "groups", "offline_access"],
            "claims_supported": [
                "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "amr", "azp",
                "name", "preferred_username", "email", "email_verified", "groups",
            ],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic", "client_secret_post", "none",
            ],
            "introspection_endpoint_auth_methods_supported": [
                "client_secret_basic", "client_secret_post", "none",
            ],
            "revocation_endpoint_auth_methods_supported": [
                "client_secret_basic", "client_secret_post", "none",
            ],
            "code_challenge_methods_supported": ["S256"],
            "prompt_values_supported": ["none", "login", "consent"],
            "authorization_response_iss_parameter_supported": True,
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False,
            "claims_parameter_supported": False,
        }  # fmt: skip

    # ------------------------------------------------------------------ authorization

    def authorization_request(self, params: Sequence[tuple[str, str]]) -> AuthRequest:
        """Validate an authorization request (query parameters as sent).

        Raises:
            PortalError: the client or redirect URI cannot be trusted with a redirect.
            OAuthError: any other problem, to send back to the redirect URI.
        """
        try:
            found = single(params)
        except OAuthError as exc:
            raise PortalError("invalid_request", exc.description) from None
        client_id = found.get("client_id", "")
        client = self.config.client(client_id)
        if client is None:
            raise PortalError("invalid_client", "This application is not registered here.")
        redirect_uri = found.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            raise PortalError(
                "invalid_redirect_uri",
                "This application asked to return to an address it did not register.",
            )
        state = found.get("state", "")

        def fail(error: str, description: str) -> OAuthError:
            return OAuthError(error, description, redirect=redirect_uri, state=state)

        for unsupported in ("request", "request_uri", "registration"):
            if unsupported in found:
                code = f"{unsupported}_not_supported"
                raise fail(code, f"The {unsupported} parameter is not supported.")
        response_type = found.get("response_type", "")
        if response_type != "code":
            if not response_type:
                raise fail("invalid_request", "The response_type parameter is missing.")
            raise fail("unsupported_response_type", "Only response_type=code is supported.")
        if found.get("response_mode", "query") != "query":
            raise fail("invalid_request", "Only response_mode=query is supported.")
        scopes = tuple(dict.fromkeys(found.get("scope", "").split()))
        if "openid" not in scopes:
            raise fail("invalid_scope", "The openid scope is required.")
        unknown = [s for s in scopes if s not in client.scopes]
        if unknown:
            raise fail("invalid_scope", f"The scope {unknown[0]} is not allowed for this client.")
        challenge = found.get("code_challenge", "")
        method = found.get("code_challenge_method", "")
        if challenge:
            if method != "S256":
                raise fail("invalid_request", "Only code_challenge_method=S256 is supported.")
            if not 43 <= len(challenge) <= 128 or not set(challenge) <= _PKCE_VERIFIER:
                raise fail("invalid_request", "The code_challenge is malformed.")
        elif method:
            raise fail("invalid_request", "code_challenge_method without code_challenge.")
        elif self._pkce_required(client):
            raise fail("invalid_request", "This client must use PKCE (code_challenge, S256).")
        prompt = frozenset(found.get("prompt", "").split())
        if not prompt <= {"none", "login", "consent"}:
            raise fail("invalid_request", "prompt must be none, login or consent.")
        if "none" in prompt and len(prompt) > 1:
            raise fail("invalid_request", "prompt=none cannot be combined with other values.")
        max_age = None
        if "max_age" in found:
            raw = found["max_age"]
            if not raw.isascii() or not raw.isdigit() or len(raw) > 10:
                raise fail("invalid_request", "max_age must be a number of seconds.")
            max_age = int(raw)
        return AuthRequest(
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scopes=scopes,
            state=state,
            nonce=found.get("nonce", ""),
            code_challenge=challenge,
            prompt=prompt,
            max_age=max_age,
            requested_at=self.now(),
        )

    def _pkce_required(self, client: OidcClientConfig) -> bool:
        mode = self.config.enforce_pkce
        return mode == "always" or (mode == "public_clients_only" and client.public)

    def client_of(self, request: AuthRequest) -> OidcClientConfig:
        client = self.config.client(request.client_id)
        if client is None:  # removed by a reload while the user signed in
            raise PortalError("invalid_client", "This application is not registered here.")
        return client

    def flow(self, request: AuthRequest) -> str:
        """A signed, short-lived token holding the pending request (for the sign-in and
        consent round trips): the same on every host sharing the issuer key."""
        claims = {**request.as_claims(), "exp": int(request.requested_at) + FLOW_LIFESPAN}
        return jwt.encode({"alg": "HS256"}, claims, self.flow_key)

    def from_flow(self, token: str) -> AuthRequest:
        """The request a :meth:`flow` token holds.

        Raises:
            PortalError: a forged, altered, expired or malformed token.
        """
        try:
            claims = jwt.decode(token, self.flow_key, algorithms=["HS256"]).claims
            if int(claims["exp"]) <= self.now():
                raise ValueError("expired")
            max_age = claims["ma"]
            request = AuthRequest(
                client_id=str(claims["cid"]),
                redirect_uri=str(claims["ru"]),
                scopes=tuple(str(claims["sc"]).split()),
                state=str(claims["st"]),
                nonce=str(claims["no"]),
                code_challenge=str(claims["cc"]),
                prompt=frozenset(str(claims["pr"]).split()),
                max_age=None if max_age is None else int(max_age),
                requested_at=float(claims["rat"]),
            )
        except (JoseError, ValueError, KeyError, TypeError):
            raise PortalError(
                "invalid_request", "This sign-in request expired or is invalid; start again."
            ) from None
        self.client_of(request)
        return request

    def needs_login(self, request: AuthRequest, sign_in: SignIn | None) -> bool:
        """True when the user must (re-)authenticate: no session, too few factors for the
        client's policy, ``prompt=login`` older than the request, or ``max_age`` exceeded."""
        if sign_in is None:
            return True
        client = self.client_of(request)
        if client.authorization_policy == "two_factor" and sign_in.level < 2:
            return True
        if "login" in request.prompt and sign_in.auth_time < request.requested_at:
            return True
        return request.max_age is not None and (self.now() - sign_in.auth_time > request.max_age)

    def needs_consent(self, request: AuthRequest, username: str) -> bool:
        """True when the consent page must ask (SPEC §7.3's ``consent_mode``)."""
        client = self.client_of(request)
        if "consent" in request.prompt:
            return True
        if client.consent_mode == "implicit":
            return False
        if client.consent_mode == "pre-configured":
            granted = self.storage.oidc_consent(username, client.client_id, self.now())
            return granted is None or not set(request.scopes) <= set(granted.split())
        return True

    def remember_consent(self, request: AuthRequest, username: str) -> None:
        """Keep an accepted consent when the client's mode is pre-configured."""
        client = self.client_of(request)
        if client.consent_mode == "pre-configured":
            now = self.now()
            self.storage.save_oidc_consent(
                username,
                client.client_id,
                " ".join(request.scopes),
                now=now,
                expires=now + client.pre_configured_consent_duration,
            )

    def issue_code(self, request: AuthRequest, sign_in: SignIn, issuer: str) -> str:
        """Store a new code for ``request`` and return the client redirect carrying it."""
        code = CODE_PREFIX + secrets.token_urlsafe(32)
        now = self.now()
        grant = OidcGrant(
            client_id=request.client_id,
            username=sign_in.username,
            scopes=" ".join(request.scopes),
            auth_time=sign_in.auth_time,
            amr=" ".join(sign_in.amr),
            family=secrets.token_hex(16),
        )
        self.storage.add_oidc_code(
            OidcCode(
                digest=_digest(code),
                grant=grant,
                redirect_uri=request.redirect_uri,
                code_challenge=request.code_challenge,
                nonce=request.nonce,
                issued=now,
                expires=now + self.config.authorize_code_lifespan,
            )
        )
        params = {"code": code}
        if request.state:
            params["state"] = request.state
        params["iss"] = issuer
        return add_query(request.redirect_uri, params)

    # ------------------------------------------------------------------ client authentication

    def authenticate_client(
        self, form: Mapping[str, str], authorization: str | None, ip: str | None = None
    ) -> OidcClientConfig:
        """The client a token/introspection/revocation request from ``ip`` authenticates as.

        Raises:
            OAuthError: ``invalid_client`` (401) for an unknown client, a wrong secret, a
                method other than the registered one, or two methods at once;
                ``invalid_client`` (429, ``retry_after``) when the address or the client is
                over its limit of hashed attempts (nothing hashed);
                ``temporarily_unavailable`` (503) when every hashing slot is taken.
            server.core.errors.StoreUnavailable: the rate limits could not be counted.
        """
        basic = _basic_credentials(authorization) if authorization else None
        if authorization and basic is None:
            raise _invalid_client("Unsupported or malformed Authorization header.")
        other_id = form.get("client_id", basic[0] if basic else "")
        if basic is not None and ("client_secret" in form or other_id != basic[0]):
            raise _invalid_client("Use one client authentication method.")
        client_id = basic[0] if basic else form.get("client_id", "")
        client = self.config.client(client_id)
        if client is None:
            self._hit(ip, None)
            self._hashing(ip, self.hasher.dummy_verify, "x")  # same time as a wrong secret
            raise _invalid_client("Client authentication failed.")
        method = client.token_endpoint_auth_method
        if method == "none":
            if basic is not None or "client_secret" in form:
                raise _invalid_client("This public client has no secret.")
            return client
        if method == "client_secret_basic":
            secret = basic[1] if basic else None
        else:
            secret = form.get("client_secret") if basic is None else None
        if secret is None or not self._secret_matches(client, secret, ip):
            raise _invalid_client("Client authentication failed.")
        return client

    def _secret_matches(self, client: OidcClientConfig, secret: str, ip: str | None) -> bool:
        key = hashlib.sha256(
            f"{client.client_id}\0{client.client_secret}\0{secret}".encode("utf-8", "replace")
        ).digest()
        with self._cache_lock:
            if key in self._secret_ok:
                return True
        self._hit(ip, client.client_id)
        if not self._hashing(ip, self.hasher.verify, client.client_secret, secret):
            return False
        with self._cache_lock:
            if len(self._secret_ok) >= _CACHE_MAX:
                self._secret_ok.clear()
            self._secret_ok[key] = None
        return True

    def _hit(self, ip: str | None, client_id: str | None) -> None:
        """Count one hashed client authentication from ``ip`` for ``client_id`` (None: an
        unknown client), or refuse it before any hashing when a limit is reached.

        Raises:
            OAuthError: ``invalid_client`` with 429 and ``retry_after`` (nothing recorded).
            server.core.errors.StoreUnavailable: the storage failed (the caller refuses).
        """
        address = client_key(ip) or "unknown"  # no address: all such callers share one budget
        by_client = (self._by_client, client_id) if client_id else (self._by_unknown, "*")
        wait = self._by_ip.group.hit_all([(self._by_ip, address), by_client])
        if wait > 0:
            raise OAuthError(
                "invalid_client",
                "Too many failed client authentications; retry later.",
                429,
                retry_after=wait,
            )

    def _hashing(self, ip: str | None, work: Callable[..., bool], *args: str) -> bool:
        """``work(*args)`` (an argon2 verify) inside the hash gate, with this address's share.

        Raises:
            OAuthError: ``temporarily_unavailable`` (503) when no hashing slot is free.
        """
        try:
            with self.gate.client(ip), self.gate.slot():
                return work(*args)
        except Busy:
            raise OAuthError(
                "temporarily_unavailable",
                "The server is busy; retry in a moment.",
                503,
                retry_after=1.0,
            ) from None

    # ------------------------------------------------------------------ token endpoint

    def token(
        self,
        params: Sequence[tuple[str, str]],
        authorization: str | None,
        issuer: str,
        ip: str | None = None,
    ) -> dict[str, object]:
        """``POST /api/oidc/token`` from ``ip``: the authorization_code and refresh_token grants.

        Raises:
            OAuthError: RFC 6749 §5.2 errors (and :meth:`authenticate_client`'s 429 and 503).
        """
        form = single(params)
        client = self.authenticate_client(form, authorization, ip)
        grant_type = form.get("grant_type", "")
        if grant_type == "authorization_code":
            return self._code_grant(form, client, issuer)
        if grant_type == "refresh_token":
            return self._refresh_grant(form, client, issuer)
        if not grant_type:
            raise OAuthError("invalid_request", "The grant_type parameter is missing.")
        raise OAuthError("unsupported_grant_type", f"The grant type {grant_type} is not supported.")

    def _code_grant(
        self, form: Mapping[str, str], client: OidcClientConfig, issuer: str
    ) -> dict[str, object]:
        code = form.get("code", "")
        if not code:
            raise OAuthError("invalid_request", "The code parameter is missing.")
        now = self.now()
        found, stored = self.storage.redeem_oidc_code(_digest(code), now)
        if found is not CodeRedemption.REDEEMED or stored is None:
            raise OAuthError("invalid_grant", "The code is invalid, expired or was used.")
        if stored.grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "The code was issued to another client.")
        if form.get("redirect_uri", "") != stored.redirect_uri:
            raise OAuthError("invalid_grant", "The redirect_uri does not match the request.")
        verifier = form.get("code_verifier", "")
        if stored.code_challenge:
            if not 43 <= len(verifier) <= 128 or not set(verifier) <= _PKCE_VERIFIER:
                raise OAuthError("invalid_grant", "The code_verifier is missing or malformed.")
            expected = create_s256_code_challenge(verifier)
            if not hmac.compare_digest(expected, stored.code_challenge):
                raise OAuthError("invalid_grant", "The code_verifier does not match.")
        elif verifier:
            raise OAuthError("invalid_grant", "A code_verifier was sent for a code without PKCE.")
        user = self._live_user(stored.grant.username)
        tokens, response = self._issue(stored.grant, client, user, issuer, stored.nonce)
        self.storage.add_oidc_tokens(tokens)
        return response

    def _refresh_grant(
        self, form: Mapping[str, str], client: OidcClientConfig, issuer: str
    ) -> dict[str, object]:
        refresh = form.get("refresh_token", "")
        if not refresh:
            raise OAuthError("invalid_request", "The refresh_token parameter is missing.")
        digest = _digest(refresh)
        current = self.storage.oidc_token(digest)
        if current is None or current.grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "The refresh token is invalid.")
        user = self._live_user(current.grant.username)
        scopes = current.grant.scopes.split()
        if "scope" in form:
            asked = form["scope"].split()
            if not set(asked) <= set(scopes):
                raise OAuthError("invalid_scope", "A refresh cannot widen the scopes.")
            scopes = list(dict.fromkeys(asked))
        response: dict[str, object] = {}

        def issue(old: OidcToken) -> list[OidcToken]:
            grant = OidcGrant(
                old.grant.client_id, old.grant.username, " ".join(scopes), old.grant.auth_time,
                old.grant.amr, old.grant.family,
            )  # fmt: skip
            tokens, made = self._issue(grant, client, user, issuer, "")
            response.update(made)
            return tokens

        found, _old = self.storage.rotate_oidc_refresh(digest, self.now(), issue)
        if found is not Rotation.ROTATED:
            raise OAuthError("invalid_grant", "The refresh token is invalid, expired or was used.")
        return response

    def _live_user(self, username: str) -> User:
        user = self.users().get(username)
        if user is None or user.disabled:
            self.storage.revoke_oidc_user(username)
            raise OAuthError("invalid_grant", "The user of this grant cannot sign in any more.")
        return user

    def _issue(
        self, grant: OidcGrant, client: OidcClientConfig, user: User, issuer: str, nonce: str
    ) -> tuple[list[OidcToken], dict[str, object]]:
        """New access (+ refresh) tokens and the ID token for ``grant``."""
        now = self.now()
        access = ACCESS_PREFIX + secrets.token_urlsafe(32)
        life = self.config.access_token_lifespan
        tokens = [OidcToken(_digest(access), "access", grant, now, now + life)]
        scopes = grant.scopes.split()
        response: dict[str, object] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": life,
            "scope": grant.scopes,
            "id_token": self.id_token(grant, client, user, issuer, nonce),
        }
        if "offline_access" in scopes:
            refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
            expires = now + self.config.refresh_token_lifespan
            tokens.append(OidcToken(_digest(refresh), "refresh", grant, now, expires))
            response["refresh_token"] = refresh
        return tokens, response

    def subject(self, username: str) -> str:
        """The user's opaque, stable ``sub`` (kept in storage)."""
        return self.storage.oidc_subject(username, lambda: secrets.token_hex(16))

    def id_token(
        self, grant: OidcGrant, client: OidcClientConfig, user: User, issuer: str, nonce: str
    ) -> str:
        """The RS256 ID token with SPEC §7.3's claims and the granted scopes' claims."""
        now = int(self.now())
        claims: dict[str, object] = {
            "iss": issuer,
            "sub": self.subject(user.name),
            "aud": [client.client_id],
            "azp": client.client_id,
            "exp": now + self.config.id_token_lifespan,
            "iat": now,
            "auth_time": int(grant.auth_time),
            "amr": grant.amr.split(),
            **scope_claims(user, grant.scopes.split()),
        }
        if nonce:
            claims["nonce"] = nonce
        return jwt.encode({"alg": "RS256", "kid": self.kid, "typ": "JWT"}, claims, self.key)

    # ------------------------------------------------------------------ resource endpoints

    def bearer(self, token: str) -> tuple[OidcToken, User]:
        """The live access token ``token`` and its user.

        Raises:
            OAuthError: ``invalid_token`` (401).
        """
        stored = self.storage.oidc_token(_digest(token)) if token else None
        if (
            stored is None
            or stored.kind != "access"
            or stored.revoked
            or stored.expires <= self.now()
        ):
            raise OAuthError("invalid_token", "The access token is invalid or expired.", 401)
        user = self.users().get(stored.grant.username)
        if user is None or user.disabled:
            raise OAuthError("invalid_token", "The access token is invalid or expired.", 401)
        return stored, user

    def userinfo(self, token: str) -> dict[str, object]:
        stored, user = self.bearer(token)
        return {
            "sub": self.subject(user.name),
            **scope_claims(user, stored.grant.scopes.split()),
        }

    def introspect(
        self,
        params: Sequence[tuple[str, str]],
        authorization: str | None,
        issuer: str,
        ip: str | None = None,
    ) -> dict[str, object]:
        """RFC 7662: ``{"active": false}`` for anything not live or not the caller's."""
        form = single(params)
        client = self.authenticate_client(form, authorization, ip)
        stored = self.storage.oidc_token(_digest(form.get("token", "")))
        if (
            stored is None
            or stored.grant.client_id != client.client_id
            or stored.revoked
            or (stored.kind == "refresh" and stored.used)
            or stored.expires <= self.now()
        ):
            return {"active": False}
        user = self.users().get(stored.grant.username)
        if user is None or user.disabled:
            return {"active": False}
        return {
            "active": True,
            "scope": stored.grant.scopes,
            "client_id": client.client_id,
            "username": user.name,
            "token_type": "Bearer" if stored.kind == "access" else "refresh_token",
            "exp": int(stored.expires),
            "iat": int(stored.issued),
            "sub": self.subject(user.name),
            "aud": [client.client_id],
            "iss": issuer,
        }

    def revoke(
        self, params: Sequence[tuple[str, str]], authorization: str | None, ip: str | None = None
    ) -> None:
        """RFC 7009: revoke a token of the calling client (a refresh token takes its family
        with it); an unknown token or another client's is answered the same (200)."""
        form = single(params)
        client = self.authenticate_client(form, authorization, ip)
        if "token" not in form:
            raise OAuthError("invalid_request", "The token parameter is missing.")
        digest = _digest(form["token"])
        stored = self.storage.oidc_token(digest)
        if stored is not None and stored.grant.client_id == client.client_id:
            self.storage.revoke_oidc_token(digest, family=stored.kind == "refresh")


def scope_claims(user: User, scopes: Sequence[str]) -> dict[str, object]:
    """The claims the granted ``scopes`` release (SPEC §7.3)."""
    claims: dict[str, object] = {}
    if "profile" in scopes:
        claims["name"] = user.displayname or user.name
        claims["preferred_username"] = user.name
    if "email" in scopes and user.email:
        claims["email"] = user.email
        claims["email_verified"] = True
    if "groups" in scopes:
        claims["groups"] = list(user.groups)
    return claims


def _invalid_client(description: str) -> OAuthError:
    return OAuthError("invalid_client", description, 401)


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """``(client_id, secret)`` from ``Basic …`` (RFC 6749 §2.3.1: each part form-urlencoded)."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value or len(value) > 4 * MAX_PARAM:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:
        return None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return None
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))
