"""The portal's JSON API (SPEC §3.2): sign in, state, sign out, user info, configuration.

Every state-changing endpoint takes only ``application/json`` from the same origin (login
CSRF: a cross-site form can set a cookie despite SameSite), answers failures with one generic
message, and re-serialises any redirect it returns from the parsed URL (§3.5).
"""

from __future__ import annotations

import logging
import typing as t
from dataclasses import dataclass
from dataclasses import replace
from urllib.parse import urlsplit

from webob import Request
from webob import Response

from server.core import jsonstrict
from server.core.cookies import session_ids
from server.core.errors import Banned
from server.core.forwarded import TrustedProxies
from server.core.names import canonical_username
from server.core.rules import AccessRequest
from server.core.sessions import SessionGoneError
from server.core.storage import StorageError
from server.core.totp import MalformedCode
from server.core.urls import parse_target
from server.core.urls import safe_redirect

if t.TYPE_CHECKING:
    from server.core.config import Config
    from server.core.config import CookieConfig
    from server.core.identity import Identity
    from server.core.identity import IdentityResolver
    from server.core.rules import AccessControl
    from server.core.sessions import Session
    from server.core.totp import TotpService

log = logging.getLogger("authctl.portal")

MAX_BODY = 64 * 1024
AUTH_FAILED = "Authentication failed. Check your credentials."


class ApiError(Exception):
    """An API failure with its HTTP status and the message the client may see.

    ``data`` (optional) goes into the envelope too, e.g. ``{"elevation": True}``: Authelia's
    way of telling the portal what it must do first (sign in, second factor, identity check).
    """

    def __init__(self, status: int, message: str, data: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.data = data


def ok(data: object = None, status: int = 200) -> Response:
    """The success envelope."""
    body: dict[str, object] = {"status": "OK"}
    if data is not None:
        body["data"] = data
    return Response(json_body=body, status=status, charset="utf-8")


def ko(status: int, message: str, data: dict[str, object] | None = None) -> Response:
    """The failure envelope (with ``data`` when given)."""
    body: dict[str, object] = {"status": "KO", "message": message}
    if data is not None:
        body["data"] = data
    return Response(json_body=body, status=status, charset="utf-8")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the portal request came from, as the trusted proxy tells it."""

    scheme: str
    host: str
    hostport: str
    cookie: CookieConfig | None
    client_ip: str | None


class PortalApi:
    """Handlers for ``/api/*`` (except the authz endpoints)."""

    def __init__(
        self,
        config: Config,
        access: AccessControl,
        identities: IdentityResolver,
        totp: TotpService,
    ) -> None:
        self.config = config
        self.access = access
        self.identities = identities
        self.totp = totp
        self.sessions = identities.sessions
        self.proxies = TrustedProxies(config.server.trusted_proxies)
        self.domains = [c.domain for c in config.session.cookies]
        self.two_factor_enabled = config.access_control.default_policy == "two_factor" or any(
            r.policy == "two_factor" for r in config.access_control.rules
        )

    # ------------------------------------------------------------------ request helpers

    def origin(self, req: Request) -> Origin:
        """The scheme and host the browser used, believed only from trusted proxies."""
        peer = req.environ.get("REMOTE_ADDR", "")
        trusted = peer in self.proxies
        if trusted and req.headers.get("X-Forwarded-Proto"):
            scheme = req.headers["X-Forwarded-Proto"].strip().lower()
            hostport = (req.headers.get("X-Forwarded-Host") or req.host or "").strip().lower()
        else:
            scheme = req.scheme
            hostport = (req.host or "").strip().lower()
        host = hostport
        if host.startswith("["):
            host = host.partition("]")[0] + "]"
        elif ":" in host:
            host = host.rpartition(":")[0]
        cookie = self.config.session.cookie_for(host) if scheme == "https" else None
        client = self.proxies.client_ip(peer, req.headers.get("X-Forwarded-For"))
        return Origin(scheme, host, hostport, cookie, str(client) if client else None)

    def require_https_origin(self, req: Request) -> tuple[Origin, CookieConfig]:
        """Refuse plain HTTP, unknown hosts and cross-site requests for state changes."""
        origin = self.origin(req)
        cookie = origin.cookie
        if cookie is None:
            raise ApiError(
                400, "The portal must be reached over HTTPS on a configured cookie domain."
            )
        sent_origin = req.headers.get("Origin")
        if sent_origin is not None and sent_origin.lower() != f"https://{origin.hostport}":
            raise ApiError(403, "Cross-origin request refused.")
        fetch_site = req.headers.get("Sec-Fetch-Site")
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            raise ApiError(403, "Cross-origin request refused.")
        return origin, cookie

    @staticmethod
    def json_body(req: Request) -> dict[str, t.Any]:
        """The request's JSON object; 415 for other types, 413 when too large, 400 if bad."""
        if req.content_type != "application/json":
            raise ApiError(415, "Send the request as application/json.")
        length = req.content_length
        if length is not None and length > MAX_BODY:
            raise ApiError(413, "Request body too large.")
        raw = req.body_file.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            raise ApiError(413, "Request body too large.")
        try:
            data = jsonstrict.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):
            raise ApiError(400, "Malformed JSON body.") from None
        if not isinstance(data, dict):
            raise ApiError(400, "The body must be a JSON object.")
        return data

    @staticmethod
    def field(data: dict[str, t.Any], name: str, kind: type, *, required: bool = False) -> t.Any:
        """A strictly typed field (``"false"`` is not a boolean; ``["alice"]`` not a name)."""
        if name not in data or data[name] is None:
            if required:
                raise ApiError(400, f"Missing field {name}.")
            return None
        value = data[name]
        if type(value) is not kind:
            raise ApiError(400, f"Field {name} has the wrong type.")
        return value

    def session(self, req: Request, origin: Origin) -> tuple[Identity, Session] | None:
        """The signed-in identity for this request, if any."""
        if origin.cookie is None:
            return None
        for value in session_ids(req.headers.get("Cookie"), self.config.session.name):
            found = self.identities.from_session(value, origin.cookie.domain)
            if found is not None:
                return found
        return None

    def set_cookie(self, resp: Response, session: Session, cookie: CookieConfig) -> None:
        resp.headerlist.append(
            ("Set-Cookie", self.sessions.cookie_header_value(session, cookie.domain))
        )

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

    def health(self, req: Request) -> Response:
        return ok()

    def state(self, req: Request) -> Response:
        origin = self.origin(req)
        found = self.session(req, origin)
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
                "target_host": self.target_host(req),
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

    def configuration(self, req: Request) -> Response:
        origin = self.origin(req)
        if self.session(req, origin) is None:
            raise ApiError(403, "Unauthorized.")
        return ok(
            {
                "available_methods": ["totp"] if self.two_factor_enabled else [],
                "password_change_disabled": False,
                "password_reset_disabled": False,
            }
        )

    def user_info(self, req: Request) -> Response:
        origin = self.origin(req)
        found = self.session(req, origin)
        if found is None:
            raise ApiError(403, "Unauthorized.")
        identity = found[0]
        return ok(
            {
                "username": identity.username,
                "display_name": identity.displayname,
                "emails": [identity.email] if identity.email else [],
                "groups": list(identity.groups),
                "method": "totp",
                "has_totp": self.has_totp(identity.username),
            }
        )

    def firstfactor(self, req: Request) -> Response:
        origin, cookie = self.require_https_origin(req)
        data = self.json_body(req)
        username = self.field(data, "username", str, required=True)
        password = self.field(data, "password", str, required=True)
        keep = self.field(data, "keepMeLoggedIn", bool) or False
        target_url = self.field(data, "targetURL", str)
        method = self.field(data, "requestMethod", str)
        if not username or not password or len(username) > 256 or len(password) > 1024:
            raise ApiError(401, AUTH_FAILED)
        result = self.identities.check_password(username, password, ip=origin.client_ip)
        fields = {"user": canonical_username(username), "ip": origin.client_ip}
        if result is None:
            log.info("first factor failed", extra={"fields": fields})
            raise ApiError(401, AUTH_FAILED)
        identity, stamp = result
        previous = self.session(req, origin)
        if previous is not None:
            self.sessions.destroy(previous[1].id)
        remember = keep and self.config.session.remember_me > 0
        session = self.sessions.create(cookie.domain, identity.username, 1, remember, stamp)
        log.info("first factor succeeded", extra={"fields": fields})
        resp = self.after_factor(identity, target_url, method, cookie)
        self.set_cookie(resp, session, cookie)
        return resp

    def logout(self, req: Request) -> Response:
        origin, cookie = self.require_https_origin(req)
        data = self.json_body(req) if req.body else {}
        target_url = self.field(data, "targetURL", str)
        found = self.session(req, origin)
        if found is not None:
            self.sessions.destroy(found[1].id)
        safe = safe_redirect(target_url, self.domains) if target_url else None
        body: dict[str, object] = {"safeTargetURL": safe is not None}
        if safe is not None:
            body["redirect"] = safe
        resp = ok(body)
        resp.headerlist.append(
            ("Set-Cookie", self.sessions.expired_cookie_header_value(cookie.domain))
        )
        return resp

    def has_totp(self, username: str) -> bool:
        """Whether the user has a TOTP secret; a storage error reads as no (fail closed)."""
        try:
            return self.totp.has_totp(username)
        except StorageError:
            log.exception("storage failed while reading TOTP enrolment")
            return False

    def secondfactor_totp(self, req: Request) -> Response:
        """``POST /api/secondfactor/totp {token, targetURL}``: raise a session to two factors.

        The code must be a string of the configured number of ASCII digits (400 otherwise);
        a wrong, replayed or banned attempt gets one generic 401. Success issues a new
        session id (fixation defence) at level 2.
        """
        origin, cookie = self.require_https_origin(req)
        data = self.json_body(req)
        target_url = self.field(data, "targetURL", str)
        method = self.field(data, "requestMethod", str)
        found = self.session(req, origin)
        if found is None:
            raise ApiError(401, "Sign in with your password first.")
        identity, session = found
        fields = {"user": identity.username, "ip": origin.client_ip}
        try:
            ok = self.totp.check(identity.username, data.get("token"), ip=origin.client_ip or "")
        except MalformedCode:
            digits = self.config.totp.digits
            raise ApiError(400, f"The code must be {digits} digits.") from None
        except (Banned, StorageError):
            log.warning("second factor refused (banned or storage error)", extra={"fields": fields})
            ok = False
        if not ok:
            log.info("second factor failed", extra={"fields": fields})
            raise ApiError(401, AUTH_FAILED)
        try:
            elevated = self.sessions.elevate(session, 2)
        except SessionGoneError:
            raise ApiError(401, "Your session ended; sign in again.") from None
        log.info("second factor succeeded", extra={"fields": fields})
        resp = self.after_factor(replace(identity, level=2), target_url, method, cookie)
        self.set_cookie(resp, elevated, cookie)
        return resp
