"""Self-service in the portal (SPEC §3.2): session elevation, TOTP enrolment, password reset
and change.

Every endpoint here changes what protects an account, so each is guarded twice: the request
must be one the portal itself sent (``application/json`` from the same ``https`` origin, the
``SAME_ORIGIN`` and ``JSON_BODY`` guards of :meth:`SelfServiceApi.routes`: login CSRF and
cross-site form posts, security.md §2.I), and the user must prove who they are for *this*
change:

- **Session elevation** (Authelia's, reference §4.4): ``POST /api/user/session/elevation`` mails
  an 8-character one-time code (:mod:`server.core.otc`) bound to the session; ``PUT … {otc}``
  checks it (trimmed, upper-cased, constant time, single use, 5 tries), issues a NEW session id
  (fixation) and marks the session elevated for 10 minutes. A stolen session cookie alone
  therefore cannot enrol an attacker's authenticator app or remove the user's: that needs the
  user's mailbox.
- **TOTP enrolment** needs an elevated session, and when the user has a second factor
  already (a TOTP secret or a passkey, :meth:`SelfServiceApi.has_second_factor`) every change
  also needs it (level 2), so a password + mailbox compromise cannot silently add, swap or
  remove one. The pending secret lives in the session for 10 minutes and
  is stored only after a first valid code (:meth:`server.core.totp.TotpService.confirm`), whose time
  step is recorded so that code cannot be replayed to sign in. The QR code is drawn here
  (segno, SVG, no script, no external reference) so the secret never goes to a third party, and
  is served same-origin only (``Sec-Fetch-Site``/``Origin`` checks and
  ``Cross-Origin-Resource-Policy: same-origin``), never cached.
- **Password reset**: ``identity/start`` answers the same bytes, in the same time (padded to a
  fixed minimum plus jitter, the mail sent from a background thread), whether the user exists,
  is disabled or has no email (username enumeration, security.md §2.E; OWASP Forgot Password
  CS). The link is built from the configured ``portal_url``, never from ``Host`` (reset-link
  poisoning), and carries a signed single-use token bound to the current password
  (:class:`server.core.otc.SignedTokens`). ``identity/finish`` consumes it and gives the browser a
  fresh anonymous session allowed, for 5 minutes, to set that user's password once.
- **Password change** needs the current password, checked through
  :meth:`server.core.identity.IdentityResolver.check_password`, so guessing it here is regulated
  (bans) exactly like the login.

Both password paths check ``[password_policy]`` (:mod:`server.core.password_policy`), hash under the
hash gate, write ``users.toml`` through the same locked atomic writer as the CLI
(:class:`server.core.userfile.UsersFile`: a concurrent ``authctl user …`` never loses an update),
reload the users, end every session of the user (ASVS 3.3.3 / 7.4.1) and mail a notice.
*Decision* for the change: the other sessions end; the session that made the change goes on
under a NEW id with the new password stamp, its level and its absolute expiry unchanged (its
elevation is dropped). After a reset every session ends, including the reset's own.

Every mail (code, reset link, notice) goes through the bounded background outbox
(:class:`server.core.notifier.Outbox`): a slow or hung SMTP relay holds that one thread, never a
request thread, so the portal keeps answering. When the queue is full, a code request or a
reset start answers 503 "The mail queue is full. Try again shortly." with ``Retry-After`` (the
reset start decides this before it looks at the name, so the answer is the same for every
name), and a notice is dropped and logged. A code whose mail fails is revoked.

Failures (rate limits, a full mail queue, a store outage) are answered by the one table of
:mod:`server.web.errors`, the same from every endpoint.

Code requests, code checks, reset starts and finishes are rate limited per user and per IP
(:mod:`server.core.ratelimit`, counted in the storage database, so every worker and host shares
one limit; a storage failure refuses the request with the outage's 503). A limit
on a reset start *per user* is silent (same answer, no mail), so it neither reveals the account
nor lets anyone stop a user from resetting their password with 429s. Codes, tokens, secrets
and passwords are never logged.
"""

from __future__ import annotations

import io
import logging
import math
import secrets
import time
import typing as t
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace
from urllib.parse import quote

from webob import Request
from webob import Response

from server.core import audit
from server.core import endpoints
from server.core.cookies import session_ids
from server.core.crypto import read_key_file
from server.core.errors import UserError
from server.core.errors import UserStoreError
from server.core.hashcap import Busy
from server.core.names import canonical_username
from server.core.notifier import OUTBOX_CAPACITY
from server.core.notifier import Outbox
from server.core.notifier import OutboxFull
from server.core.notifier import elevation_code_message
from server.core.notifier import make_notifier
from server.core.notifier import notice_message
from server.core.notifier import reset_link_message
from server.core.otc import MAX_CODE_INPUT
from server.core.otc import InvalidToken
from server.core.otc import OneTimeCodes
from server.core.otc import SignedTokens
from server.core.otc import derive_key
from server.core.password_policy import PasswordPolicy
from server.core.password_policy import WeakPassword
from server.core.ratelimit import Limit
from server.core.ratelimit import RateLimiter
from server.core.ratelimit import RateLimits
from server.core.ratelimit import limits
from server.core.sessions import SessionGoneError
from server.core.sessions import new_session_id
from server.core.sessions import user_stamp
from server.core.totp import ALGORITHMS
from server.core.totp import MalformedCode
from server.core.totp import new_secret
from server.core.totp import provisioning_uri
from server.core.urls import safe_redirect
from server.core.userfile import UsersFile
from server.web.errors import ApiError
from server.web.errors import RateLimited
from server.web.errors import ok
from server.web.routes import ELEVATED
from server.web.routes import IP
from server.web.routes import JSON_BODY
from server.web.routes import SAME_ORIGIN
from server.web.routes import SIGNED_IN
from server.web.routes import USER
from server.web.routes import Call
from server.web.routes import Route
from server.web.routes import field
from server.web.routes import rate_limit
from server.web.routes import set_session_cookie

if t.TYPE_CHECKING:
    from server.core.config import Config
    from server.core.config import CookieConfig
    from server.core.config import TotpConfig
    from server.core.identity import Identity
    from server.core.identity import IdentityResolver
    from server.core.notifier import Notifier
    from server.core.sessions import Session
    from server.core.storage import Storage
    from server.core.totp import TotpService
    from server.core.users import User
    from server.web.routes import Origin

log = logging.getLogger("authctl.selfservice")

#: Intents stored with codes and tokens (``one_time_codes.intent``).
INTENT_ELEVATION = "elevation"
INTENT_RESET = "reset_password"

#: Session data keys (all values are strings).
ELEVATED_UNTIL = "elevated_until"
OTC_ID = "otc_id"
TOTP_SECRET = "totp_secret"  # noqa: S105 - a session data key, not a secret
TOTP_ALGORITHM = "totp_algorithm"
TOTP_DIGITS = "totp_digits"
TOTP_PERIOD = "totp_period"
TOTP_UNTIL = "totp_until"
RESET_USER = "reset_user"
RESET_STAMP = "reset_stamp"
RESET_UNTIL = "reset_until"
_PENDING_TOTP = (TOTP_SECRET, TOTP_ALGORITHM, TOTP_DIGITS, TOTP_PERIOD, TOTP_UNTIL)

#: TOTP periods a user may ask for at enrolment (seconds).
PERIOD_RANGE = (15, 300)
#: Longest user name or password looked at (longer ones cannot be valid).
MAX_NAME = 256
MAX_PASSWORD = 1024

LINK_INVALID = "This link has expired or was already used. Request a new one."
CODE_INVALID = "The code is wrong, was already used or has expired. Ask for a new one."
NOT_SIGNED_IN = "Sign in first."


@dataclass(frozen=True, slots=True)
class SelfServiceSettings:
    """Lifetimes (seconds), the reset-start padding and the rate limits; defaults in code.

    Authelia's figures where it has them (code 5 min, elevation 10 min, pending TOTP 10 min,
    reset link 5 min, reset start 5/10 min + 10/15 min + 15/30 min per IP, finish 10/1 min +
    15/2 min per IP).
    """

    code_lifetime: float = 300.0
    elevation_lifetime: float = 600.0
    totp_pending_lifetime: float = 600.0
    reset_token_lifetime: float = 300.0
    reset_grant_lifetime: float = 300.0
    reset_min_duration: float = 0.5
    reset_jitter: float = 0.1
    code_send_user: tuple[Limit, ...] = limits((3, 300), (5, 600), (15, 3600))
    code_send_ip: tuple[Limit, ...] = limits((10, 300), (30, 3600))
    code_check_user: tuple[Limit, ...] = limits((10, 60), (15, 120))
    code_check_ip: tuple[Limit, ...] = limits((10, 60), (30, 600))
    reset_start_user: tuple[Limit, ...] = limits((3, 900), (5, 3600))
    reset_start_ip: tuple[Limit, ...] = limits((5, 600), (10, 900), (15, 1800))
    reset_finish_user: tuple[Limit, ...] = limits((5, 300))
    reset_finish_ip: tuple[Limit, ...] = limits((10, 60), (15, 120))
    #: Mails that may wait for the relay before requests that send one get a 503.
    mail_queue: int = OUTBOX_CAPACITY


#: The audit log's result and reason of the self-service events (``server.core.audit``).
_BY_USER = {"result": "success", "reason": "user"}
_LINK_SENT = {"result": "success", "reason": "link_sent"}
_LINK_ACCEPTED = {"result": "success", "reason": "link_accepted"}
_LINK_INVALID = {"result": "failure", "reason": "link_invalid"}
_LINK_REVOKED = {"result": "success", "reason": "link_revoked"}
_RESET_DONE = {"result": "success", "reason": "reset_link"}


def _audit_sessions_ended(username: str, ip: str | None, ended: int) -> None:
    """The user's other sessions ended because the password changed (one audit line)."""
    if ended:
        audit.emit(
            "session_revoked", user=username, ip=ip, result="success", reason="password_changed"
        )


def qr_svg(data: str) -> bytes:
    """``data`` as a QR code in SVG (black on white, quiet zone, no script or reference)."""
    import segno

    out = io.BytesIO()
    segno.make_qr(data, error="m").save(
        out, kind="svg", scale=5, border=4, dark="#000", light="#fff", xmldecl=True
    )
    return out.getvalue()


def _finite(value: str | None) -> float:
    try:
        number = float(value) if value is not None else 0.0
    except ValueError:
        return 0.0
    return number if math.isfinite(number) else 0.0


class SelfServiceApi:
    """The self-service handlers; built like :class:`server.web.portal.PortalApi`."""

    def __init__(
        self,
        config: Config,
        identities: IdentityResolver,
        totp: TotpService,
        storage: Storage,
        notifier: Notifier,
        key_material: bytes,
        *,
        settings: SelfServiceSettings | None = None,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.identities = identities
        self.sessions = identities.sessions
        self.totp = totp
        self.storage = storage
        self.notifier = notifier
        self.settings = settings or SelfServiceSettings()
        self.outbox = Outbox(notifier, capacity=self.settings.mail_queue)
        self.now = now
        self.sleep = sleep
        self.monotonic = monotonic
        self.codes = OneTimeCodes(storage, derive_key(key_material, "one-time codes"), now=now)
        self.tokens = SignedTokens(storage, derive_key(key_material, "signed tokens"), now=now)
        self.policy = PasswordPolicy(config.password_policy)
        self.users_file = UsersFile(config.users.file, lock_timeout=5.0)
        self.domains = [c.domain for c in config.session.cookies]
        s = self.settings
        #: The self-service limits, counted in the storage database (shared by every worker
        #: and host).
        self.rate_limits = RateLimits(storage, now=now)
        self.limiters: dict[str, RateLimiter] = {
            name: self.rate_limits.limiter(name, getattr(s, name))
            for name in (
                "code_send_user",
                "code_send_ip",
                "code_check_user",
                "code_check_ip",
                "reset_start_user",
                "reset_start_ip",
                "reset_finish_user",
                "reset_finish_ip",
            )
        }

    @classmethod
    def build(
        cls,
        config: Config,
        identities: IdentityResolver,
        totp: TotpService,
        storage: Storage,
        *,
        notifier: Notifier | None = None,
        settings: SelfServiceSettings | None = None,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> SelfServiceApi:
        """Wire it from the config: the notifier ``[notifier]`` names, keys from the storage key.

        Raises:
            NotifierError: the SMTP password file cannot be read (a ``ValueError``).
            ValueError: the storage key file cannot be read.
        """
        if notifier is None:
            notifier = make_notifier(config.notifier, now=now)
        material = read_key_file(config.storage.encryption_key_file)
        return cls(
            config,
            identities,
            totp,
            storage,
            notifier,
            material,
            settings=settings,
            now=now,
            sleep=sleep,
        )

    def routes(self) -> list[Route]:
        """The self-service routes and their guards (``server.web.routes``)."""
        send_code = rate_limit(("code_send_user", USER), ("code_send_ip", IP))
        check_code = rate_limit(("code_check_user", USER), ("code_check_ip", IP))
        change = (SAME_ORIGIN, JSON_BODY, SIGNED_IN, ELEVATED)
        return [
            Route("GET", endpoints.SESSION_ELEVATION, self.elevation_state, (SIGNED_IN,)),
            Route(
                "POST",
                endpoints.SESSION_ELEVATION,
                self.elevation_send,
                (SAME_ORIGIN, JSON_BODY, SIGNED_IN, send_code),
            ),
            Route(
                "PUT",
                endpoints.SESSION_ELEVATION,
                self.elevation_verify,
                (SAME_ORIGIN, JSON_BODY, SIGNED_IN, check_code),
            ),
            Route("PUT", endpoints.TOTP_REGISTER, self.totp_register_start, change),
            Route("POST", endpoints.TOTP_REGISTER, self.totp_register_confirm, change),
            Route(
                "DELETE",
                endpoints.TOTP_REGISTER,
                self.totp_register_cancel,
                (SAME_ORIGIN, JSON_BODY, SIGNED_IN),
            ),
            Route(
                "GET",
                endpoints.TOTP_REGISTER_QR,
                self.totp_register_qr,
                (SAME_ORIGIN, SIGNED_IN, ELEVATED),
            ),
            Route("DELETE", endpoints.SECOND_FACTOR_TOTP, self.totp_remove, change),
            Route(
                "POST",
                endpoints.RESET_START,
                self.reset_start,
                (SAME_ORIGIN, JSON_BODY, rate_limit(("reset_start_ip", IP))),
            ),
            Route(
                "POST",
                endpoints.RESET_FINISH,
                self.reset_finish,
                (SAME_ORIGIN, JSON_BODY, rate_limit(("reset_finish_ip", IP))),
            ),
            Route("POST", endpoints.RESET_PASSWORD, self.reset_password, (SAME_ORIGIN, JSON_BODY)),
            Route(
                "DELETE",
                endpoints.RESET_PASSWORD,
                self.reset_revoke,
                (SAME_ORIGIN, JSON_BODY, rate_limit(("reset_finish_ip", IP))),
            ),
            Route(
                "POST",
                endpoints.CHANGE_PASSWORD,
                self.change_password,
                (SAME_ORIGIN, JSON_BODY, SIGNED_IN),
            ),
            Route("GET", endpoints.PASSWORD_POLICY, self.password_policy),
        ]

    def startup_check(self) -> None:
        """Check the notifier at startup (``serve`` calls it; SMTP: connect, EHLO, TLS, login).

        Raises:
            NotifierError: it cannot work; the message says why.
        """
        self.notifier.startup_check()

    def close(self, timeout: float | None = 30.0) -> None:
        """Send what is still queued (a clean shutdown), waiting at most ``timeout`` seconds
        (a hung relay must not hang the shutdown)."""
        if not self.outbox.flush(timeout):
            log.warning("shutting down with mail still queued for the relay")

    # ------------------------------------------------------------------ helpers

    def _until(self, session: Session, key: str) -> float:
        return _finite(session.data.get(key))

    def _is_elevated(self, session: Session) -> bool:
        return self._until(session, ELEVATED_UNTIL) > self.now()

    def has_second_factor(self, username: str) -> bool:
        """Whether the user can pass a second factor: a TOTP secret, or a WebAuthn credential
        while ``[webauthn] enable`` (a disabled one cannot be used to reach level 2)."""
        if self.totp.has_totp(username):
            return True
        return self.config.webauthn.enable and bool(self.storage.webauthn_credentials(username))

    def require_change_rights(self, identity: Identity, session: Session) -> None:
        """The :data:`~server.web.routes.ELEVATED` guard: an elevated session, and level 2 when
        the user has a second factor already (TOTP or a passkey), so a password + mailbox
        compromise cannot add, swap or remove one."""
        if identity.level < 2 and self.has_second_factor(identity.username):
            raise ApiError(403, "Confirm with your second factor first.", {"second_factor": True})
        if not self._is_elevated(session):
            raise ApiError(
                403, "Confirm your identity with a code sent by email first.", {"elevation": True}
            )

    def _limit(self, name: str, key: str) -> None:
        """A limit whose key the route cannot know before the handler (the token's user)."""
        wait = self.limiters[name].hit(key)
        if wait > 0:
            raise RateLimited(wait)

    def _update(self, session: Session, changes: dict[str, str | None]) -> Session:
        try:
            return self.sessions.update_data(session, changes)
        except SessionGoneError:
            raise ApiError(
                401, "Your session ended; sign in again.", {"first_factor": True}
            ) from None

    def _notice(self, identity: User | Identity, subject: str, what: str, ip: str | None) -> None:
        email = identity.email
        name = identity.displayname
        if not email:
            return
        try:
            self.outbox.submit(notice_message(email, name, subject, what, ip))
        except OutboxFull:
            log.warning("no notice sent: the mail queue is full (%s)", subject)
        except ValueError:
            log.warning("no notice sent: the user's email address cannot be used")

    def _hash(self, password: str) -> str:
        try:
            with self.identities.gate.slot():
                return self.identities.hasher.hash(password)
        except Busy:
            raise ApiError(503, "The server is busy. Try again in a moment.") from None

    def _store_password(self, username: str, phc: str) -> None:
        """Write the hash with the CLI's locked atomic writer, then reload the users."""
        try:
            self.users_file.set_password(username, phc)
        except UserError:
            raise ApiError(401, "Your account no longer exists.", {"first_factor": True}) from None
        except UserStoreError:
            log.exception("the users file could not be written; the password was not changed")
            raise ApiError(
                503, "The new password could not be saved; nothing was changed. Try again later."
            ) from None
        self.identities.users.reload()

    def _raw_session(self, req: Request, cookie: CookieConfig) -> Session | None:
        """Any live session behind the cookie, anonymous ones included."""
        for value in session_ids(req.headers.get("Cookie"), self.config.session.name):
            session = self.sessions.load(value, cookie.domain)
            if session is not None:
                return session
        return None

    # ------------------------------------------------------------------ elevation

    def elevation_state(self, call: Call) -> Response:
        """``GET /api/user/session/elevation``: whether the session is elevated, until when."""
        _identity, session = call.signed_in()
        now = self.now()
        until = self._until(session, ELEVATED_UNTIL)
        elevated = until > now
        return ok(
            {
                "elevated": elevated,
                "expires": int(until - now) if elevated else 0,
                "factor_knowledge": True,
                "require_second_factor": False,
                "skip_second_factor": False,
                "can_skip_second_factor": False,
            }
        )

    def elevation_send(self, call: Call) -> Response:
        """``POST /api/user/session/elevation``: mail a one-time code bound to this session."""
        origin = call.origin
        identity, session = call.signed_in()
        if not identity.email:
            raise ApiError(
                400, "Your account has no email address. Ask your administrator to add one."
            )
        s = self.settings
        issued = self.codes.issue(
            identity.username,
            INTENT_ELEVATION,
            session_id=session.id,
            ip=origin.client_ip,
            lifetime=s.code_lifetime,
        )
        minutes = max(1, int(s.code_lifetime // 60))
        message = elevation_code_message(
            identity.email, identity.displayname, issued.code, minutes, origin.client_ip
        )
        try:
            # from the outbox: a slow or hung relay must not hold this request thread; a code
            # that could not be mailed is revoked (it reached nobody)
            self.outbox.submit(message, on_failure=lambda: self.codes.revoke(issued.id))
        except OutboxFull:
            self.codes.revoke(issued.id)
            raise
        self._update(session, {OTC_ID: issued.id})
        log.info(
            "elevation code sent",
            extra={"fields": {"user": identity.username, "ip": origin.client_ip}},
        )
        return ok()

    def elevation_verify(self, call: Call) -> Response:
        """``PUT /api/user/session/elevation {otc}``: check the code, elevate under a new id."""
        origin, cookie = call.origin, call.cookie
        otc = field(call.data, "otc", str, required=True)
        identity, session = call.signed_in()
        if len(otc) > MAX_CODE_INPUT:
            raise ApiError(400, "The code is too long.")
        fields = {"user": identity.username, "ip": origin.client_ip}
        code_id = session.data.get(OTC_ID)
        good = code_id is not None and self.codes.check(
            code_id,
            otc,
            username=identity.username,
            intent=INTENT_ELEVATION,
            session_id=session.id,
            ip=origin.client_ip,
        )
        if not good:
            log.info("elevation code refused", extra={"fields": fields})
            raise ApiError(401, CODE_INVALID)
        try:
            elevated = self.sessions.elevate(session, session.level)
        except SessionGoneError:
            raise ApiError(
                401, "Your session ended; sign in again.", {"first_factor": True}
            ) from None
        lifetime = self.settings.elevation_lifetime
        elevated = self._update(
            elevated, {OTC_ID: None, ELEVATED_UNTIL: repr(self.now() + lifetime)}
        )
        log.info("session elevated", extra={"fields": fields})
        resp = ok({"elevated": True, "expires": int(lifetime)})
        set_session_cookie(resp, self.sessions, elevated, cookie)
        return resp

    # ------------------------------------------------------------------ TOTP enrolment

    def _pending(self, session: Session) -> tuple[str, TotpConfig] | None:
        data = session.data
        secret = data.get(TOTP_SECRET)
        if not secret or self._until(session, TOTP_UNTIL) <= self.now():
            return None
        try:
            cfg = replace(
                self.config.totp,
                algorithm=data[TOTP_ALGORITHM],
                digits=int(data[TOTP_DIGITS]),
                period=int(data[TOTP_PERIOD]),
            )
        except (KeyError, ValueError):
            return None
        return secret, cfg

    def _options(self, data: dict[str, t.Any]) -> TotpConfig:
        base = self.config.totp
        algorithm = field(data, "algorithm", str)
        length = field(data, "length", int)
        period = field(data, "period", int)
        algorithm = base.algorithm if algorithm is None else algorithm.upper()
        if algorithm not in ALGORITHMS:
            raise ApiError(400, "The algorithm must be SHA1, SHA256 or SHA512.")
        digits = base.digits if length is None else length
        if digits not in (6, 8):
            raise ApiError(400, "The length must be 6 or 8.")
        period = base.period if period is None else period
        if not PERIOD_RANGE[0] <= period <= PERIOD_RANGE[1]:
            raise ApiError(
                400, f"The period must be {PERIOD_RANGE[0]} to {PERIOD_RANGE[1]} seconds."
            )
        return replace(base, algorithm=algorithm, digits=digits, period=period)

    def totp_register_start(self, call: Call) -> Response:
        """``PUT /api/secondfactor/totp/register``: a new secret, pending in the session."""
        identity, session = call.signed_in()
        cfg = self._options(call.data)
        secret = new_secret()
        until = self.now() + self.settings.totp_pending_lifetime
        self._update(
            session,
            {
                TOTP_SECRET: secret,
                TOTP_ALGORITHM: cfg.algorithm,
                TOTP_DIGITS: str(cfg.digits),
                TOTP_PERIOD: str(cfg.period),
                TOTP_UNTIL: repr(until),
            },
        )
        log.info("TOTP enrolment started", extra={"fields": {"user": identity.username}})
        return ok(
            {
                "base32_secret": secret,
                "otpauth_url": provisioning_uri(secret, identity.username, cfg),
            }
        )

    def totp_register_qr(self, call: Call) -> Response:
        """``GET /api/secondfactor/totp/register/qr.svg``: the pending secret's QR code."""
        identity, session = call.signed_in()
        pending = self._pending(session)
        if pending is None:
            raise ApiError(404, "No authenticator app setup is in progress.")
        secret, cfg = pending
        resp = Response(body=qr_svg(provisioning_uri(secret, identity.username, cfg)))
        resp.headers["Content-Type"] = "image/svg+xml"
        resp.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        resp.headers["Content-Disposition"] = 'inline; filename="authctl-totp.svg"'
        return resp

    def totp_register_confirm(self, call: Call) -> Response:
        """``POST /api/secondfactor/totp/register {token}``: store the secret after one code."""
        origin, data = call.origin, call.data
        identity, session = call.signed_in()
        pending = self._pending(session)
        if pending is None:
            raise ApiError(400, "No authenticator app setup is in progress; start again.")
        secret, cfg = pending
        token = data.get("token")
        malformed = f"The code must be {cfg.digits} digits."
        if type(token) is not str:
            raise ApiError(400, malformed)
        try:
            good = self.totp.confirm(identity.username, secret, token, cfg)
        except MalformedCode:
            raise ApiError(400, malformed) from None
        if not good:
            raise ApiError(401, "The code is wrong. Check the time on your device and try again.")
        self._update(session, dict.fromkeys(_PENDING_TOTP))
        log.info("TOTP enrolled", extra={"fields": {"user": identity.username}})
        audit.emit("totp_added", user=identity.username, ip=origin.client_ip, **_BY_USER)
        self._notice(
            identity,
            "An authenticator app was set up",
            "An authenticator app was set up for your account",
            origin.client_ip,
        )
        return ok()

    def totp_register_cancel(self, call: Call) -> Response:
        """``DELETE /api/secondfactor/totp/register``: forget the pending secret."""
        _identity, session = call.signed_in()
        if any(key in session.data for key in _PENDING_TOTP):
            self._update(session, dict.fromkeys(_PENDING_TOTP))
        return ok()

    def totp_remove(self, call: Call) -> Response:
        """``DELETE /api/secondfactor/totp``: remove the user's own TOTP secret."""
        origin = call.origin
        identity, _session = call.signed_in()
        if self.totp.remove(identity.username):
            log.info("TOTP removed by its user", extra={"fields": {"user": identity.username}})
            audit.emit("totp_removed", user=identity.username, ip=origin.client_ip, **_BY_USER)
            self._notice(
                identity,
                "Your authenticator app was removed",
                "The authenticator app of your account was removed",
                origin.client_ip,
            )
        return ok()

    # ------------------------------------------------------------------ password reset

    def reset_start(self, call: Call) -> Response:
        """``POST /api/reset-password/identity/start {username, targetURL?}``: the same answer,
        in the same time, for every name; a link is mailed only to an existing, enabled user
        with an email. A ``targetURL`` that passes the redirect check (SPEC §3.5) rides along in
        the link as ``rd``, so the finished reset leads back to the site the user came from.
        """
        started = self.monotonic()
        origin, cookie = call.origin, call.cookie
        username = field(call.data, "username", str, required=True)
        target_url = field(call.data, "targetURL", str)
        if self.outbox.full():  # decided before the name is looked at: no enumeration
            raise OutboxFull("the mail queue is full")
        safe = safe_redirect(target_url, self.domains) if target_url else None
        try:
            self._send_reset_link(username, origin, cookie, safe)
        except Exception:  # same answer whatever happened (enumeration); the log knows
            log.exception("a password reset could not be started")
        s = self.settings
        jitter = secrets.randbelow(1001) / 1000 * s.reset_jitter
        remaining = s.reset_min_duration + jitter - (self.monotonic() - started)
        if remaining > 0:
            self.sleep(remaining)
        return ok()

    def _send_reset_link(
        self, username: str, origin: Origin, cookie: CookieConfig, target: str | None
    ) -> None:
        if not username or len(username) > MAX_NAME:
            return
        name = canonical_username(username)
        if self.limiters["reset_start_user"].hit(name) > 0:
            log.warning(
                "password reset refused: too many for this user (no mail sent)",
                extra={"fields": {"user": name, "ip": origin.client_ip}},
            )
            return
        user = self.identities.lookup(name)
        if user is None or not user.email:
            log.info(
                "password reset for an unknown or disabled user, or one without email",
                extra={"fields": {"user": name, "ip": origin.client_ip}},
            )
            return
        s = self.settings
        token = self.tokens.issue(
            user.name,
            INTENT_RESET,
            stamp=user_stamp(user.password),
            ip=origin.client_ip,
            lifetime=s.reset_token_lifetime,
        )
        link = f"{cookie.portal_url.rstrip('/')}/reset-password/step2?token={quote(token)}"
        if target is not None:  # re-serialised by the redirect check; the portal checks it again
            link += f"&rd={quote(target, safe='')}"
        minutes = max(1, int(s.reset_token_lifetime // 60))
        self.outbox.submit(
            reset_link_message(user.email, user.displayname, link, minutes, origin.client_ip)
        )
        log.info(
            "password reset link sent", extra={"fields": {"user": name, "ip": origin.client_ip}}
        )
        audit.emit("password_reset", user=name, ip=origin.client_ip, **_LINK_SENT)

    def reset_finish(self, call: Call) -> Response:
        """``POST /api/reset-password/identity/finish {token}``: consume the link's token and
        give this browser a fresh session allowed to set that user's password, briefly."""
        origin, cookie = call.origin, call.cookie
        token = field(call.data, "token", str, required=True)
        fields: dict[str, object] = {"ip": origin.client_ip}
        try:
            claims = self.tokens.verify(token, INTENT_RESET)
        except InvalidToken as exc:
            log.info("reset link refused: %s", exc, extra={"fields": fields})
            audit.emit("password_reset", user=None, ip=origin.client_ip, **_LINK_INVALID)
            raise ApiError(401, LINK_INVALID) from None
        fields["user"] = claims.username
        self._limit("reset_finish_user", claims.username)
        user = self.identities.lookup(claims.username)
        try:
            self.tokens.consume(token, INTENT_RESET, ip=origin.client_ip)
        except InvalidToken as exc:
            log.info("reset link refused: %s", exc, extra={"fields": fields})
            audit.emit("password_reset", user=claims.username, ip=origin.client_ip, **_LINK_INVALID)
            raise ApiError(401, LINK_INVALID) from None
        if user is None or not self.tokens.matches_stamp(claims, user_stamp(user.password)):
            log.info("reset link refused: user gone or password changed", extra={"fields": fields})
            audit.emit("password_reset", user=claims.username, ip=origin.client_ip, **_LINK_INVALID)
            raise ApiError(401, LINK_INVALID)
        previous = self._raw_session(call.req, cookie)
        if previous is not None:
            self.sessions.destroy(previous.id)
        until = self.now() + self.settings.reset_grant_lifetime
        grant = self.sessions.create(
            cookie.domain,
            None,
            0,
            data={
                RESET_USER: user.name,
                RESET_STAMP: user_stamp(user.password),
                RESET_UNTIL: repr(until),
            },
        )
        log.info("reset link accepted", extra={"fields": fields})
        audit.emit("password_reset", user=user.name, ip=origin.client_ip, **_LINK_ACCEPTED)
        resp = ok()
        set_session_cookie(resp, self.sessions, grant, cookie)
        return resp

    def reset_password(self, call: Call) -> Response:
        """``POST /api/reset-password {password}``: set the new password (once per link)."""
        origin, cookie = call.origin, call.cookie
        password = field(call.data, "password", str, required=True)
        grant = self._raw_session(call.req, cookie)
        username = grant.data.get(RESET_USER) if grant is not None else None
        if grant is None or not username or self._until(grant, RESET_UNTIL) <= self.now():
            raise ApiError(401, LINK_INVALID)
        user = self.identities.lookup(username)
        if user is None or user_stamp(user.password) != grant.data.get(RESET_STAMP):
            self.sessions.destroy(grant.id)
            raise ApiError(401, LINK_INVALID)
        self._check_policy(password, user.name)
        phc = self._hash(password)
        if not self.sessions.store.delete(grant.id):  # single use, also against a parallel POST
            raise ApiError(401, LINK_INVALID)
        self._store_password(user.name, phc)
        ended = self.sessions.destroy_user(user.name)
        log.info(
            "password reset",
            extra={"fields": {"user": user.name, "ip": origin.client_ip, "sessions_ended": ended}},
        )
        audit.emit("password_reset", user=user.name, ip=origin.client_ip, **_RESET_DONE)
        _audit_sessions_ended(user.name, origin.client_ip, ended)
        self._notice(
            user,
            "Your password was changed",
            "The password of your account was reset",
            origin.client_ip,
        )
        resp = ok()
        resp.headerlist.append(
            ("Set-Cookie", self.sessions.expired_cookie_header_value(cookie.domain))
        )
        return resp

    def reset_revoke(self, call: Call) -> Response:
        """``DELETE /api/reset-password {token}``: kill an unused reset link ("it was not me")."""
        origin = call.origin
        token = field(call.data, "token", str, required=True)
        try:
            claims = self.tokens.revoke(token, INTENT_RESET, ip=origin.client_ip)
        except InvalidToken:
            raise ApiError(401, LINK_INVALID) from None
        log.info(
            "reset link revoked",
            extra={"fields": {"user": claims.username, "ip": origin.client_ip}},
        )
        audit.emit("password_reset", user=claims.username, ip=origin.client_ip, **_LINK_REVOKED)
        return ok()

    def _check_policy(self, password: str, username: str) -> None:
        try:
            self.policy.check(password, username=username)
        except WeakPassword as exc:
            raise ApiError(400, str(exc)) from None

    # ------------------------------------------------------------------ password change

    def change_password(self, call: Call) -> Response:
        """``POST /api/change-password {old_password, new_password}``: needs the current one.

        The other sessions end; this one continues under a new id (see the module doc).
        """
        origin, cookie = call.origin, call.cookie
        old = field(call.data, "old_password", str, required=True)
        new = field(call.data, "new_password", str, required=True)
        identity, session = call.signed_in()
        fields = {"user": identity.username, "ip": origin.client_ip}
        if not old or len(old) > MAX_PASSWORD:
            raise ApiError(401, "The current password is wrong.")
        if new == old:
            raise ApiError(400, "The new password must differ from the current one.")
        self._check_policy(new, identity.username)
        checked = self.identities.check_password(identity.username, old, ip=origin.client_ip)
        if checked is None:
            log.info("password change refused: wrong current password", extra={"fields": fields})
            audit.emit("password_changed", **fields, result="failure", reason="wrong_credentials")
            raise ApiError(401, "The current password is wrong.")
        phc = self._hash(new)
        self._store_password(identity.username, phc)
        ended = self.sessions.destroy_user(identity.username)
        now = self.now()
        fresh = replace(
            session,
            id=new_session_id(),
            user_stamp=user_stamp(phc),
            auth_time=now,
            last_activity=now,
            data={},
        )
        # the session was alive a moment ago, so its absolute expiry lies ahead
        self.sessions.store.put(fresh, max(self.sessions.expires_at(fresh) - now, 0.0))
        resp = ok()
        set_session_cookie(resp, self.sessions, fresh, cookie)
        log.info("password changed", extra={"fields": {**fields, "sessions_ended": ended}})
        audit.emit("password_changed", user=identity.username, ip=origin.client_ip, **_BY_USER)
        _audit_sessions_ended(identity.username, origin.client_ip, ended)
        self._notice(
            identity,
            "Your password was changed",
            "The password of your account was changed",
            origin.client_ip,
        )
        return resp

    # ------------------------------------------------------------------ policy

    def password_policy(self, call: Call) -> Response:
        """``GET /api/configuration/password-policy``: the rules, for the portal's forms."""
        return ok(self.policy.describe())
