"""The OpenID Provider's HTTP side (SPEC §7.3): discovery, JWKS, the authorization, token,
userinfo, introspection and revocation endpoints, and the consent page's API.

The protocol is :mod:`server.core.oidc.provider`; this module reads requests, finds the
issuer (the portal URL of the cookie domain the request arrives on) and the portal session
(one sign-in for forward auth and OIDC), and writes responses. The token, introspection and
revocation endpoints are called server to server with form bodies, so they take no
same-origin guard; the consent API is a portal API like the others (same-origin JSON).
"""

from __future__ import annotations

import json
import logging
import typing as t
from collections.abc import Callable
from collections.abc import Mapping
from urllib.parse import parse_qsl
from urllib.parse import urlencode

from webob import Request
from webob import Response

from server.core import amr
from server.core import audit
from server.core import endpoints
from server.core.oidc.provider import SCOPE_WORDS
from server.core.oidc.provider import AuthRequest
from server.core.oidc.provider import OAuthError
from server.core.oidc.provider import PortalError
from server.core.oidc.provider import Provider
from server.core.oidc.provider import SignIn
from server.core.ratelimit import retry_after_header
from server.web.errors import ApiError
from server.web.errors import ko
from server.web.errors import ok
from server.web.routes import JSON_BODY
from server.web.routes import SAME_ORIGIN
from server.web.routes import SIGNED_IN
from server.web.routes import SIGNED_IN_FOR_INFO
from server.web.routes import Call
from server.web.routes import Gate
from server.web.routes import Origin
from server.web.routes import Route
from server.web.routes import field

if t.TYPE_CHECKING:
    from server.core.config import Config
    from server.core.identity import Identity
    from server.core.sessions import Session
    from server.core.sessions import SessionManager
    from server.core.storage import Storage
    from server.core.users import User

log = logging.getLogger("authctl.oidc")

DISCOVERY = endpoints.OIDC_DISCOVERY
OAUTH_METADATA = endpoints.OIDC_OAUTH_METADATA
JWKS = endpoints.OIDC_JWKS
AUTHORIZATION = endpoints.OIDC_AUTHORIZATION
TOKEN = endpoints.OIDC_TOKEN
USERINFO = endpoints.OIDC_USERINFO
INTROSPECTION = endpoints.OIDC_INTROSPECTION
REVOCATION = endpoints.OIDC_REVOCATION
CONSENT_API = endpoints.OIDC_CONSENT_API
CONSENT_PAGE = endpoints.OIDC_CONSENT_PAGE
#: The largest form body the token-side endpoints read.
MAX_FORM = 16 * 1024


class OidcApi:
    """The provider's endpoints for one config (rebuilt on reload with the portal)."""

    def __init__(
        self, config: Config, provider: Provider, gate: Gate, sessions: SessionManager
    ) -> None:
        self.config = config
        self.provider = provider
        self.gate = gate
        self.sessions = sessions
        #: Paths outside ``/api/`` this API answers (``App.portal_request`` asks here).
        self.pages: Mapping[str, Callable[[Request], Response]] = {
            DISCOVERY: self.discovery,
            OAUTH_METADATA: self.discovery,
            JWKS: self.jwks,
        }

    @classmethod
    def build(
        cls,
        config: Config,
        gate: Gate,
        sessions: SessionManager,
        storage: Storage,
        users: Callable[[], Mapping[str, User]],
        now: Callable[[], float],
    ) -> OidcApi | None:
        """The API when ``[identity_providers.oidc] enable`` is set, else None."""
        oidc = config.identity_providers.oidc
        if not oidc.enable:
            return None
        storage.purge_oidc(now())  # expired codes, tokens and consents (at start and reload)
        # the server's hasher (configured parameters for the dummy verify) and hash gate, so
        # client-secret checks share the sign-ins' cap on concurrent hashing
        identities = gate.identities
        provider = Provider(
            oidc, storage, users, now=now, hasher=identities.hasher, gate=identities.gate
        )
        return cls(config, provider, gate, sessions)

    def routes(self) -> list[Route]:
        return [
            Route("GET", AUTHORIZATION, self.authorization),
            Route("POST", TOKEN, self.token),
            Route("GET", USERINFO, self.userinfo),
            Route("POST", USERINFO, self.userinfo),
            Route("POST", INTROSPECTION, self.introspection),
            Route("POST", REVOCATION, self.revocation),
            Route("GET", CONSENT_API, self.consent_info, (SIGNED_IN_FOR_INFO,)),
            Route("POST", CONSENT_API, self.consent, (SAME_ORIGIN, JSON_BODY, SIGNED_IN)),
        ]

    # ------------------------------------------------------------------ helpers

    def issuer(self, origin: Origin) -> str | None:
        """The portal URL of the request's cookie domain (https only), or None."""
        if origin.cookie is None:
            return None
        return origin.cookie.portal_url.rstrip("/")

    def _issuer_or_400(self, req: Request) -> tuple[Origin, str]:
        origin = self.gate.origin(req)
        issuer = self.issuer(origin)
        if issuer is None:
            raise ApiError(
                400, "The provider must be reached over HTTPS on a configured cookie domain."
            )
        return origin, issuer

    @staticmethod
    def _json(data: object, status: int = 200) -> Response:
        resp = Response(body=json.dumps(data).encode(), status=status, content_type=None)
        resp.headers["Content-Type"] = "application/json"
        return resp

    @classmethod
    def _oauth_error(cls, exc: OAuthError) -> Response:
        resp = cls._json({"error": exc.error, "error_description": exc.description}, exc.status)
        if exc.retry_after is not None:
            resp.headers["Retry-After"] = retry_after_header(exc.retry_after)
        if exc.status == 401:
            realm = "invalid_token" if exc.error == "invalid_token" else exc.error
            resp.headers["WWW-Authenticate"] = f'Bearer error="{realm}"'
            if exc.error == "invalid_client":
                resp.headers["WWW-Authenticate"] = 'Basic realm="authctl"'
        return resp

    @staticmethod
    def _redirect(location: str) -> Response:
        resp = Response(status=302)
        resp.headers["Location"] = location
        return resp

    @staticmethod
    def _form(req: Request) -> list[tuple[str, str]]:
        """A token-side request's form parameters (and none in the query string)."""
        if req.content_type != "application/x-www-form-urlencoded":
            raise OAuthError("invalid_request", "Send the parameters as a form body.")
        length = req.content_length
        raw = req.body_file.read(MAX_FORM + 1)
        if (length is not None and length > MAX_FORM) or len(raw) > MAX_FORM:
            raise OAuthError("invalid_request", "The request body is too large.", 413)
        if req.query_string:
            raise OAuthError("invalid_request", "Send the parameters in the body, not the URL.")
        try:
            return parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            raise OAuthError("invalid_request", "The form body is malformed.") from None

    def _sign_in(self, req: Request, origin: Origin) -> tuple[SignIn, Session] | None:
        found = self.gate.session(req, origin)
        if found is None:
            return None
        identity, session = found
        return self._sign_in_of(identity, session), session

    @staticmethod
    def _sign_in_of(identity: Identity, session: Session) -> SignIn:
        methods = amr.of_session(session.data, identity.level)
        return SignIn(identity.username, identity.level, session.auth_time, methods)

    def _portal_error(self, issuer: str, exc: PortalError) -> Response:
        """Show the error on the portal's consent page (never a redirect to the client)."""
        log.info("authorization request refused", extra={"fields": {"error": exc.code}})
        return self._redirect(f"{issuer}{CONSENT_PAGE}?" + urlencode({"error": exc.code}))

    # ------------------------------------------------------------------ pages

    def page(self, req: Request, path: str) -> Response:
        """Answer a discovery or JWKS request (GET/HEAD only)."""
        if req.method not in ("GET", "HEAD"):
            resp = ko(405, "Method not allowed.")
            resp.headers["Allow"] = "GET, HEAD"
            return resp
        try:
            return self.pages[path](req)
        except ApiError as exc:
            return exc.response()

    def discovery(self, req: Request) -> Response:
        _origin, issuer = self._issuer_or_400(req)
        resp = self._json(self.provider.discovery(issuer))
        resp.headers["Cache-Control"] = "public, max-age=300"
        resp.headers["Access-Control-Allow-Origin"] = "*"
        return resp

    def jwks(self, req: Request) -> Response:
        resp = self._json(self.provider.jwks)
        resp.headers["Cache-Control"] = "public, max-age=300"
        resp.headers["Access-Control-Allow-Origin"] = "*"
        return resp

    # ------------------------------------------------------------------ authorization

    def authorization(self, call: Call) -> Response:
        origin, issuer = self._issuer_or_400(call.req)
        try:
            params = list(call.req.GET.items())
        except (UnicodeDecodeError, ValueError):
            return self._portal_error(issuer, PortalError("invalid_request", "Malformed query."))
        try:
            if any(name == "flow" for name, _ in params):
                if len(params) != 1:
                    raise PortalError("invalid_request", "A flow takes no other parameter.")
                request = self.provider.from_flow(params[0][1])
            else:
                request = self.provider.authorization_request(params)
            return self._authorize(call.req, origin, issuer, request)
        except PortalError as exc:
            return self._portal_error(issuer, exc)
        except OAuthError as exc:
            return self._redirect(exc.location(issuer))

    def _authorize(
        self, req: Request, origin: Origin, issuer: str, request: AuthRequest
    ) -> Response:
        found = self._sign_in(req, origin)
        sign_in = found[0] if found else None

        def fail(error: str, description: str) -> OAuthError:
            return OAuthError(
                error, description, redirect=request.redirect_uri, state=request.state
            )

        if self.provider.needs_login(request, sign_in):
            if "none" in request.prompt:
                raise fail("login_required", "The user must sign in.")
            target = f"{issuer}{AUTHORIZATION}?" + urlencode({"flow": self.provider.flow(request)})
            client = self.provider.client_of(request)
            if (
                sign_in is not None
                and sign_in.level == 1
                and client.authorization_policy == "two_factor"
                and not self._too_old(request, sign_in)
            ):
                return self._redirect(f"{issuer}/2fa?" + urlencode({"rd": target}))
            resp = self._redirect(f"{issuer}/?" + urlencode({"rd": target}))
            if found is not None and origin.cookie is not None:
                # re-authentication asked for: this sign-in is too old for the client
                self.sessions.destroy(found[1].id)
                resp.headerlist.append(
                    ("Set-Cookie", self.sessions.expired_cookie_header_value(origin.cookie.domain))
                )
            return resp
        assert sign_in is not None  # noqa: S101 - needs_login is True without one
        if self.provider.needs_consent(request, sign_in.username):
            if "none" in request.prompt:
                raise fail("consent_required", "The user must consent.")
            flow = self.provider.flow(request)
            return self._redirect(f"{issuer}{CONSENT_PAGE}?" + urlencode({"flow": flow}))
        return self._redirect(self.provider.issue_code(request, sign_in, issuer))

    def _too_old(self, request: AuthRequest, sign_in: SignIn) -> bool:
        if "login" in request.prompt and sign_in.auth_time < request.requested_at:
            return True
        return request.max_age is not None and (
            self.provider.now() - sign_in.auth_time > request.max_age
        )

    # ------------------------------------------------------------------ consent

    def _flow_of(self, value: object) -> AuthRequest:
        if not isinstance(value, str) or not value:
            raise ApiError(400, "Missing field flow.")
        try:
            return self.provider.from_flow(value)
        except PortalError as exc:
            raise ApiError(400, exc.description) from None

    def consent_info(self, call: Call) -> Response:
        """``GET /api/oidc/consent?flow=…``: what the consent page shows."""
        identity, _session = call.signed_in()
        values = call.req.GET.getall("flow")
        request = self._flow_of(values[0] if len(values) == 1 else None)
        client = self.provider.client_of(request)
        return ok(
            {
                "client_id": client.client_id,
                "client_name": client.client_name,
                "username": identity.username,
                "scopes": [
                    {"scope": s, "description": SCOPE_WORDS.get(s, s)} for s in request.scopes
                ],
                "remember": client.consent_mode == "pre-configured",
            }
        )

    def consent(self, call: Call) -> Response:
        """``POST /api/oidc/consent {flow, consent}``: accept (a code for the client) or deny
        (``access_denied`` for the client); ``data.redirect`` is where the browser goes."""
        origin, issuer = self._issuer_or_400(call.req)
        request = self._flow_of(call.data.get("flow"))
        accepted = field(call.data, "consent", bool, required=True)
        identity, session = call.signed_in()
        fields = {"user": identity.username, "ip": origin.client_ip}
        if not accepted:
            audit.emit("oidc_consent", **fields, result="failure", reason="user")
            denied = OAuthError(
                "access_denied",
                "The user denied the request.",
                redirect=request.redirect_uri,
                state=request.state,
            )
            return ok({"redirect": denied.location(issuer)})
        sign_in = self._sign_in_of(identity, session)
        if self.provider.needs_login(request, sign_in):
            target = f"{issuer}{AUTHORIZATION}?" + urlencode({"flow": self.provider.flow(request)})
            return ok({"redirect": target})
        self.provider.remember_consent(request, identity.username)
        audit.emit("oidc_consent", **fields, result="success", reason="user")
        return ok({"redirect": self.provider.issue_code(request, sign_in, issuer)})

    # ------------------------------------------------------------------ token side

    def token(self, call: Call) -> Response:
        try:
            origin, issuer = self._issuer_or_400(call.req)
            form = self._form(call.req)
            auth = call.req.headers.get("Authorization")
            result = self.provider.token(form, auth, issuer, origin.client_ip)
        except OAuthError as exc:
            return self._oauth_error(exc)
        return self._json(result)

    def userinfo(self, call: Call) -> Response:
        header = call.req.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        try:
            if scheme.lower() != "bearer" or not token.strip():
                raise OAuthError("invalid_token", "Send the access token as a Bearer token.", 401)
            claims = self.provider.userinfo(token.strip())
        except OAuthError as exc:
            return self._oauth_error(exc)
        return self._json(claims)

    def introspection(self, call: Call) -> Response:
        try:
            origin, issuer = self._issuer_or_400(call.req)
            form = self._form(call.req)
            auth = call.req.headers.get("Authorization")
            result = self.provider.introspect(form, auth, issuer, origin.client_ip)
        except OAuthError as exc:
            return self._oauth_error(exc)
        return self._json(result)

    def revocation(self, call: Call) -> Response:
        try:
            form = self._form(call.req)
            auth = call.req.headers.get("Authorization")
            self.provider.revoke(form, auth, call.origin.client_ip)
        except OAuthError as exc:
            return self._oauth_error(exc)
        return Response(status=200)
