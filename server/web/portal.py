"""The portal's JSON API (SPEC §3.2): sign in, state, sign out, user info, configuration.

Every state-changing endpoint takes only ``application/json`` from the same origin (login
CSRF: a cross-site form can set a cookie despite SameSite; the guards are declared in
:meth:`PortalApi.routes`, see ``server.web.routes``), answers a failed sign-in with one generic
message, and re-serialises any redirect it returns from the parsed URL (§3.5).
"""

from __future__ import annotations

import logging
import typing as t
from dataclasses import replace
from urllib.parse import urlsplit

from webob import Request
from webob import Response

from server.core import amr
from server.core import audit
from server.core import endpoints
from server.core.errors import Banned
from server.core.names import canonical_username
from server.core.rules import AccessRequest
from server.core.sessions import SessionGoneError
from server.core.totp import MalformedCode
from server.core.urls import parse_target
from server.core.urls import safe_redirect
from server.web.errors import ApiError
from server.web.errors import ok
from server.web.routes import JSON_BODY
from server.web.routes import OPTIONAL_JSON_BODY
from server.web.routes import SAME_ORIGIN
from server.web.routes import SIGNED_IN_FOR_CODE
from server.web.routes import SIGNED_IN_FOR_INFO
from server.web.routes import Call
from server.web.routes import Gate
from server.web.routes import Route
from server.web.routes import field
from server.web.routes import set_session_cookie
from server.web.webauthn_api import WebAuthnApi

if t.TYPE_CHECKING:
    from server.core.config import Config
    from server.core.config import CookieConfig
    from server.core.identity import Identity
    from server.core.identity import IdentityResolver
    from server.core.rules import AccessControl
    from server.core.totp import TotpService
    from server.core.webauthn import WebAuthnService

log = logging.getLogger("authctl.portal")

AUTH_FAILED = "Authentication failed. Check your credentials."
#: The audit log's result and reason for what a signed-in user does at the portal.
_DONE_BY_USER = {"result": "success", "reason": "user"}
#: A wrong, replayed or banned TOTP code (one answer for all three: a ban is not revealed).
CODE_WRONG = "The code is wrong or was already used. Enter the code your app shows now."


class PortalApi:
    """Handlers for ``/api/*`` (except the authz endpoints and self-service)."""

    def __init__(
        self,
        config: Config,
        access: AccessControl,
        identities: IdentityResolver,
        totp: TotpService,
        webauthn: WebAuthnService | None = None,
    ) -> None:
        self.config = config
        self.access = access
        self.identities = identities
        self.totp = totp
        self.sessions = identities.sessions
        self.gate = Gate(config, identities)
        self.domains = [c.domain for c in config.session.cookies]
        self.two_factor_enabled = config.access_control.default_policy == "two_factor" or any(
            r.policy == "two_factor" for r in config.access_control.rules
        )
        #: The WebAuthn endpoints (SPEC §7.1); None in apps built without storage for them.
        self.webauthn = WebAuthnApi(self, webauthn) if webauthn is not None else None

    def routes(self) -> list[Route]:
        """The portal's routes and their guards (``server.web.routes``)."""
        return [
            Route("GET", endpoints.STATE, self.state),
            Route("GET", endpoints.CONFIGURATION, self.configuration, (SIGNED_IN_FOR_INFO,)),
            Route("GET", endpoints.USER_INFO, self.user_info, (SIGNED_IN_FOR_INFO,)),
            Route("POST", endpoints.FIRST_FACTOR, self.firstfactor, (SAME_ORIGIN, JSON_BODY)),
            Route("POST", endpoints.LOGOUT, self.logout, (SAME_ORIGIN, OPTIONAL_JSON_BODY)),
            Route(
                "POST",
                endpoints.SECOND_FACTOR_TOTP,
                self.secondfactor_totp,
                (SAME_ORIGIN, JSON_BODY, SIGNED_IN_FOR_CODE),
            ),
            *(self.webauthn.routes() if self.webauthn is not None else ()),
        ]

    # ------------------------------------------------------------------ helpers

    def policy_for(self, url: str, method: str, identity: Identity) -> str | None:
        """The policy the rules give this user for ``url``; None if it cannot be parsed."""
        try:
            target = parse_target(url)
        except ValueError:
            return None
        decision = self.access.evaluate(
            AccessRequest(
                host=target.host,
                path=target.path,
                query=target.query,
                method=method,
                ip=None,
                user=identity.username,
                groups=identity.groups,
            )
        )
        return decision.policy

    def after_factor(
        self, identity: Identity, target_url: str | None, method: str | None, cookie: CookieConfig
    ) -> Response:
        """Authelia's answer after a factor: the safe target unless it still needs 2FA."""
        safe = safe_redirect(target_url, self.domains) if target_url else None
        if safe is not None:
            policy = self.policy_for(safe, method or "GET", identity)
            if policy == "two_factor" and identity.level < 2:
                return ok()
            return ok({"redirect": safe})
        if cookie.default_redirect_url:
            return ok({"redirect": cookie.default_redirect_url})
        return ok()

    # ------------------------------------------------------------------ endpoints

    def state(self, call: Call) -> Response:
        origin = call.origin
        found = self.gate.session(call.req, origin)
        identity = found[0] if found else None
        return ok(
            {
                "username": identity.username if identity else "",
                "authentication_level": identity.level if identity else 0,
                "remember_me": self.config.session.remember_me > 0,
                "default_redirection_url": (
                    origin.cookie.default_redirect_url if origin.cookie else None
                )
                or "",
                "target_host": self.target_host(call.req),
            }
        )

    def target_host(self, req: Request) -> str:
        """``host[:port]`` of the query's one ``rd`` if the redirect check passes it, else "".

        The sign-in page names the site the user will return to only from this value, never
        from its own URL: a phishing link ``/?rd=https://evil-phish.com/`` must not make the
        portal say "continue to evil-phish.com" (SPEC §3.2, §3.5).
        """
        try:
            values = req.GET.getall("rd")
        except (UnicodeDecodeError, ValueError):
            return ""
        safe = safe_redirect(values[0], self.domains) if len(values) == 1 else None
        return urlsplit(safe).netloc if safe else ""

    def configuration(self, call: Call) -> Response:
        webauthn = self.webauthn is not None and self.config.webauthn.enable
        methods = ["totp", "webauthn"] if webauthn else ["totp"]
        return ok(
            {
                "available_methods": methods if self.two_factor_enabled else [],
                "passkey_login": webauthn and self.config.webauthn.passkey_login,
                "password_change_disabled": False,
                "password_reset_disabled": False,
            }
        )

    def user_info(self, call: Call) -> Response:
        identity, _session = call.signed_in()
        webauthn = self.webauthn
        return ok(
            {
                "username": identity.username,
                "display_name": identity.displayname,
                "emails": [identity.email] if identity.email else [],
                "groups": list(identity.groups),
                "method": webauthn.method(identity.username) if webauthn else "totp",
                "has_totp": self.totp.has_totp(identity.username),
                "has_webauthn": webauthn.has_webauthn(identity.username) if webauthn else False,
            }
        )

    def firstfactor(self, call: Call) -> Response:
        origin, cookie, data = call.origin, call.cookie, call.data
        username = field(data, "username", str, required=True)
        password = field(data, "password", str, required=True)
        keep = field(data, "keepMeLoggedIn", bool) or False
        target_url = field(data, "targetURL", str)
        method = field(data, "requestMethod", str)
        if not username or not password or len(username) > 256 or len(password) > 1024:
            raise ApiError(401, AUTH_FAILED)
        result = self.identities.check_password(username, password, ip=origin.client_ip)
        fields = {"user": canonical_username(username), "ip": origin.client_ip}
        if result is None:
            log.info("first factor failed", extra={"fields": fields})
            audit.emit("login_failed", **fields, result="failure", reason="wrong_credentials")
            raise ApiError(401, AUTH_FAILED)
        identity, stamp = result
        previous = self.gate.session(call.req, origin)
        if previous is not None:
            self.sessions.destroy(previous[1].id)
        remember = keep and self.config.session.remember_me > 0
        session = self.sessions.create(
            cookie.domain,
            identity.username,
            1,
            remember,
            stamp,
            ip=origin.client_ip,
            user_agent=call.req.headers.get("User-Agent"),
        )
        log.info("first factor succeeded", extra={"fields": fields})
        audit.emit("login", **fields, result="success", reason="password")
        resp = self.after_factor(identity, target_url, method, cookie)
        set_session_cookie(resp, self.sessions, session, cookie)
        return resp

    def logout(self, call: Call) -> Response:
        origin, cookie = call.origin, call.cookie
        target_url = field(call.data, "targetURL", str)
        found = self.gate.session(call.req, origin)
        if found is not None:
            self.sessions.destroy(found[1].id)
            audit.emit("logout", user=found[0].username, ip=origin.client_ip, **_DONE_BY_USER)
        safe = safe_redirect(target_url, self.domains) if target_url else None
        body: dict[str, object] = {"safeTargetURL": safe is not None}
        if safe is not None:
            body["redirect"] = safe
        resp = ok(body)
        resp.headerlist.append(
            ("Set-Cookie", self.sessions.expired_cookie_header_value(cookie.domain))
        )
        return resp

    def secondfactor_totp(self, call: Call) -> Response:
        """``POST /api/secondfactor/totp {token, targetURL}``: raise a session to two factors.

        The code must be a string of the configured number of ASCII digits (400 otherwise);
        a wrong, replayed or banned code gets one 401 that says the code is wrong (the user
        is signed in already: nothing about the account is revealed, and a ban still reads
        like a wrong code). A storage outage is the store's 503 (``server.web.errors``), not
        a wrong code. Success issues a new session id (fixation defence) at level 2.
        """
        origin, cookie, data = call.origin, call.cookie, call.data
        target_url = field(data, "targetURL", str)
        method = field(data, "requestMethod", str)
        identity, session = call.signed_in()
        fields = {"user": identity.username, "ip": origin.client_ip}
        why = "wrong_code"
        try:
            good = self.totp.check(identity.username, data.get("token"), ip=origin.client_ip or "")
        except MalformedCode:
            audit.emit("second_factor_failed", **fields, result="failure", reason="malformed_code")
            digits = self.config.totp.digits
            raise ApiError(400, f"The code must be {digits} digits.") from None
        except Banned:
            log.warning("second factor refused (banned)", extra={"fields": fields})
            good, why = False, "banned"
        if not good:
            log.info("second factor failed", extra={"fields": fields})
            audit.emit("second_factor_failed", **fields, result="failure", reason=why)
            raise ApiError(401, CODE_WRONG)
        try:
            methods = amr.after_second_factor(session.data, session.level, amr.OTP)
            elevated = self.sessions.elevate(session, 2, data=methods)
        except SessionGoneError:
            raise ApiError(401, "Your session ended; sign in again.") from None
        log.info("second factor succeeded", extra={"fields": fields})
        audit.emit("second_factor", **fields, result="success", reason="totp")
        resp = self.after_factor(replace(identity, level=2), target_url, method, cookie)
        set_session_cookie(resp, self.sessions, elevated, cookie)
        return resp
