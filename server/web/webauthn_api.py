"""The WebAuthn endpoints of the portal API (SPEC §7.1), Authelia's names and shapes.

Ceremonies are :mod:`server.core.webauthn`'s; this module keeps where each challenge's id
lives between the options and the response: in the session's data (second factor,
registration, bound to the session id) or, before sign-in, in a short-lived HttpOnly cookie
holding the challenge id and a random nonce the challenge is bound to (the nonce's HMAC is
stored, never the nonce). Every refusal of an assertion gets one answer, a banned user's too.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import typing as t
from dataclasses import replace
from datetime import UTC
from datetime import datetime

from webob import Response

from server.core import amr
from server.core import audit
from server.core import endpoints
from server.core.crypto import read_key_file
from server.core.identity import stamp_of
from server.core.otc import derive_key
from server.core.sessions import SessionGoneError
from server.core.webauthn import DescriptionTaken
from server.core.webauthn import Malformed
from server.core.webauthn import Refused
from server.core.webauthn import WebAuthnService
from server.core.webauthn import check_description
from server.core.webauthn import relying_party
from server.web.errors import ApiError
from server.web.errors import ok
from server.web.routes import ELEVATED
from server.web.routes import JSON_BODY
from server.web.routes import OPTIONAL_JSON_BODY
from server.web.routes import SAME_ORIGIN
from server.web.routes import SIGNED_IN
from server.web.routes import SIGNED_IN_FOR_CODE
from server.web.routes import SIGNED_IN_FOR_INFO
from server.web.routes import Call
from server.web.routes import Route
from server.web.routes import field
from server.web.routes import last_segment
from server.web.routes import set_session_cookie

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from server.core.config import Config
    from server.core.identity import Identity
    from server.core.regulation import Regulator
    from server.core.sessions import Session
    from server.core.storage import Storage
    from server.core.storage import WebAuthnCredential
    from server.web.portal import PortalApi

log = logging.getLogger("authctl.webauthn")

#: Session data keys: the pending challenge of each ceremony, the pending description.
TWO_FACTOR_KEY = "webauthn_2fa"
REGISTER_KEY = "webauthn_register"
DESCRIPTION_KEY = "webauthn_register_description"
#: One answer for every refused assertion (wrong, replayed, expired, foreign, banned).
ASSERTION_REFUSED = "The security key was not accepted. Try again."
PASSKEY_REFUSED = "Authentication failed. Check your credentials."
DISABLED = "Security keys are not enabled."
METHODS = ("totp", "webauthn")


class WebAuthnApi:
    """The handlers; ``portal`` gives the gate, sessions and the after-a-factor answer."""

    def __init__(self, portal: PortalApi, service: WebAuthnService) -> None:
        self.portal = portal
        self.service = service
        self.config = service.config
        self.sessions = portal.sessions
        self.identities = portal.identities
        self.cookie_name = f"{portal.config.session.name}_passkey"

    def routes(self) -> list[Route]:
        change = (SAME_ORIGIN, JSON_BODY, SIGNED_IN, ELEVATED)
        return [
            Route("GET", endpoints.SECOND_FACTOR_WEBAUTHN, self.options_2fa, (SIGNED_IN_FOR_CODE,)),
            Route(
                "POST",
                endpoints.SECOND_FACTOR_WEBAUTHN,
                self.verify_2fa,
                (SAME_ORIGIN, JSON_BODY, SIGNED_IN_FOR_CODE),
            ),
            Route("GET", endpoints.FIRST_FACTOR_PASSKEY, self.options_passkey),
            Route(
                "POST",
                endpoints.FIRST_FACTOR_PASSKEY,
                self.verify_passkey,
                (SAME_ORIGIN, JSON_BODY),
            ),
            Route(
                "GET", endpoints.WEBAUTHN_CREDENTIALS, self.list_credentials, (SIGNED_IN_FOR_INFO,)
            ),
            Route("PUT", endpoints.WEBAUTHN_REGISTER, self.register_start, change),
            Route("POST", endpoints.WEBAUTHN_REGISTER, self.register_finish, change),
            Route(
                "DELETE",
                endpoints.WEBAUTHN_REGISTER,
                self.register_cancel,
                (SAME_ORIGIN, OPTIONAL_JSON_BODY, SIGNED_IN),
            ),
            Route("PUT", endpoints.WEBAUTHN_CREDENTIAL, self.rename, change),
            Route(
                "DELETE",
                endpoints.WEBAUTHN_CREDENTIAL,
                self.remove,
                (SAME_ORIGIN, OPTIONAL_JSON_BODY, SIGNED_IN, ELEVATED),
            ),
            Route(
                "POST",
                endpoints.USER_INFO_2FA_METHOD,
                self.set_method,
                (SAME_ORIGIN, JSON_BODY, SIGNED_IN),
            ),
        ]

    # ------------------------------------------------------------------ helpers

    def _enabled(self) -> None:
        if not self.config.enable:
            raise ApiError(404, DISABLED)

    def _update(self, session: Session, changes: dict[str, str | None]) -> Session:
        try:
            return self.sessions.update_data(session, changes)
        except SessionGoneError:
            raise ApiError(
                401, "Your session ended; sign in again.", {"first_factor": True}
            ) from None

    def has_webauthn(self, username: str) -> bool:
        return self.config.enable and bool(self.service.storage.webauthn_credentials(username))

    def method(self, username: str) -> str:
        """The user's preferred second factor: the one they chose (``POST
        /api/user/info/2fa_method``, kept in storage's ``user_preferences`` as Authelia does,
        so every session and host sees it) while it is available, else WebAuthn when they have
        a credential, else TOTP."""
        chosen = self.service.storage.second_factor_method(username)
        if chosen in METHODS and (chosen != "webauthn" or self.config.enable):
            return chosen
        return "webauthn" if self.has_webauthn(username) else "totp"

    # ------------------------------------------------------------------ second factor

    def options_2fa(self, call: Call) -> Response:
        """``GET /api/secondfactor/webauthn``: request options listing the user's credentials."""
        self._enabled()
        identity, session = call.signed_in()
        cookie = call.cookie
        challenge = self.service.authentication_options(
            identity.username,
            relying_party(self.config, cookie),
            bound_to=session.id,
            ip=call.origin.client_ip,
        )
        self._update(session, {TWO_FACTOR_KEY: challenge.id})
        return ok({"publicKey": challenge.options})

    def verify_2fa(self, call: Call) -> Response:
        """``POST /api/secondfactor/webauthn {response, targetURL}``: level 2, new session id."""
        self._enabled()
        identity, session = call.signed_in()
        cookie, data = call.cookie, call.data
        target_url = field(data, "targetURL", str)
        method = field(data, "requestMethod", str)
        fields = {"user": identity.username, "ip": call.origin.client_ip}
        try:
            self.service.authenticate(
                identity.username,
                session.data.get(TWO_FACTOR_KEY),
                data.get("response"),
                relying_party(self.config, cookie),
                bound_to=session.id,
                ip=call.origin.client_ip,
            )
        except Malformed as exc:
            raise ApiError(400, "Malformed security key response.") from exc
        except Refused as exc:
            log.info("WebAuthn second factor refused: %s", exc.reason, extra={"fields": fields})
            why = "banned" if exc.reason.startswith("banned") else "wrong_assertion"
            audit.emit("second_factor_failed", **fields, result="failure", reason=why)
            raise ApiError(401, ASSERTION_REFUSED) from None
        try:
            methods = amr.after_second_factor(session.data, session.level, amr.HARDWARE_KEY)
            elevated = self.sessions.elevate(session, 2, data=methods)
        except SessionGoneError:
            raise ApiError(401, "Your session ended; sign in again.") from None
        log.info("second factor succeeded (WebAuthn)", extra={"fields": fields})
        audit.emit("second_factor", **fields, result="success", reason="webauthn")
        resp = self.portal.after_factor(replace(identity, level=2), target_url, method, cookie)
        set_session_cookie(resp, self.sessions, elevated, cookie)
        return resp

    # ------------------------------------------------------------------ passkey sign-in

    def options_passkey(self, call: Call) -> Response:
        """``GET /api/firstfactor/passkey``: request options with no ``allowCredentials``; the
        challenge is bound to a nonce in a cookie that lives as long as the challenge."""
        self._enabled()
        if not self.config.passkey_login:
            raise ApiError(404, "Passkey sign-in is not enabled.")
        cookie = call.origin.cookie
        if cookie is None:
            raise ApiError(
                400, "The portal must be reached over HTTPS on a configured cookie domain."
            )
        nonce = secrets.token_urlsafe(32)
        challenge = self.service.authentication_options(
            None, relying_party(self.config, cookie), bound_to=nonce, ip=call.origin.client_ip
        )
        resp = ok({"publicKey": challenge.options})
        resp.headerlist.append(
            ("Set-Cookie", self._passkey_cookie(f"{challenge.id}.{nonce}", self.config.timeout))
        )
        return resp

    def _passkey_cookie(self, value: str, max_age: int) -> str:
        return (
            f"{self.cookie_name}={value}; Path={endpoints.FIRST_FACTOR_PASSKEY}; Secure; "
            f"HttpOnly; SameSite=Strict; Max-Age={max_age}"
        )

    def _pending_passkey(self, call: Call) -> tuple[str, str]:
        """The challenge id and nonce from the passkey cookie ("", "" when absent)."""
        value = call.req.cookies.get(self.cookie_name, "")
        row, _, nonce = value.partition(".")
        return (row, nonce) if row and nonce else ("", "")

    def verify_passkey(self, call: Call) -> Response:
        """``POST /api/firstfactor/passkey {response, keepMeLoggedIn, targetURL,
        requestMethod}``: a new session at level 1, or 2 with user verification when
        ``passkey_uv_two_factor``."""
        self._enabled()
        if not self.config.passkey_login:
            raise ApiError(404, "Passkey sign-in is not enabled.")
        cookie, data, origin = call.cookie, call.data, call.origin
        keep = field(data, "keepMeLoggedIn", bool) or False
        target_url = field(data, "targetURL", str)
        method = field(data, "requestMethod", str)
        row, nonce = self._pending_passkey(call)
        try:
            assertion = self.service.authenticate(
                None,
                row,
                data.get("response"),
                relying_party(self.config, cookie),
                bound_to=nonce,
                ip=origin.client_ip,
                user_ok=lambda name: self.identities.lookup(name) is not None,
            )
        except Malformed as exc:
            raise ApiError(400, "Malformed passkey response.") from exc
        except Refused as exc:
            fields = {"user": None, "ip": origin.client_ip}
            log.info("passkey sign-in refused: %s", exc.reason, extra={"fields": fields})
            audit.emit("login_failed", **fields, result="failure", reason="wrong_assertion")
            raise self._refused() from None
        username = assertion.credential.username
        user = self.identities.lookup(username)
        if user is None:  # removed or disabled in between: as a wrong assertion
            raise self._refused()
        level = 2 if assertion.user_verified and self.config.passkey_uv_two_factor else 1
        stamp = stamp_of(user.password)
        identity = self.identities.current(username, stamp, level)
        if identity is None:  # pragma: no cover - the same snapshot answered lookup
            raise self._refused()
        previous = self.portal.gate.session(call.req, origin)
        if previous is not None:
            self.sessions.destroy(previous[1].id)
        remember = keep and self.portal.config.session.remember_me > 0
        session = self.sessions.create(
            cookie.domain,
            username,
            level,
            remember,
            stamp,
            amr.passkey(level == 2),
            ip=origin.client_ip,
            user_agent=call.req.headers.get("User-Agent"),
        )
        fields = {"user": username, "ip": origin.client_ip}
        log.info("passkey sign-in succeeded (level %d)", level, extra={"fields": fields})
        audit.emit("login", **fields, result="success", reason="passkey")
        resp = self.portal.after_factor(identity, target_url, method, cookie)
        set_session_cookie(resp, self.sessions, session, cookie)
        resp.headerlist.append(("Set-Cookie", self._passkey_cookie("", 0)))
        return resp

    @staticmethod
    def _refused() -> ApiError:
        return ApiError(401, PASSKEY_REFUSED)

    # ------------------------------------------------------------------ credentials

    def list_credentials(self, call: Call) -> Response:
        """``GET /api/secondfactor/webauthn/credentials``: the user's, without key material."""
        identity, _session = call.signed_in()
        creds = self.service.storage.webauthn_credentials(identity.username)
        return ok([describe(c) for c in creds])

    def register_start(self, call: Call) -> Response:
        """``PUT …/credential/register {description}``: creation options (409 when the
        description is taken)."""
        self._enabled()
        identity, session = call.signed_in()
        try:
            description = check_description(call.data.get("description"))
        except Malformed as exc:
            raise ApiError(
                400, f"The description {str(exc).removeprefix('the description ')}."
            ) from None
        taken = {
            c.description for c in self.service.storage.webauthn_credentials(identity.username)
        }
        if description in taken:
            raise ApiError(409, "You already have a security key with that description.")
        challenge = self.service.registration_options(
            identity.username,
            identity.displayname,
            relying_party(self.config, call.cookie),
            bound_to=session.id,
            ip=call.origin.client_ip,
        )
        self._update(session, {REGISTER_KEY: challenge.id, DESCRIPTION_KEY: description})
        return ok({"publicKey": challenge.options})

    def register_finish(self, call: Call) -> Response:
        """``POST …/credential/register`` with the attestation (the credential itself, or
        ``{response: credential}``): 201."""
        self._enabled()
        identity, session = call.signed_in()
        body = call.data
        credential = body if "rawId" in body else body.get("response")
        fields = {"user": identity.username, "ip": call.origin.client_ip}
        description = session.data.get(DESCRIPTION_KEY, "")
        try:
            record = self.service.register(
                identity.username,
                session.data.get(REGISTER_KEY),
                credential,
                relying_party(self.config, call.cookie),
                description=description,
                bound_to=session.id,
                ip=call.origin.client_ip,
            )
        except Malformed as exc:
            raise ApiError(400, "Malformed security key response.") from exc
        except Refused as exc:
            log.info("WebAuthn registration refused: %s", exc.reason, extra={"fields": fields})
            raise ApiError(400, "The security key could not be registered. Start again.") from None
        except DescriptionTaken:
            raise ApiError(
                409, "This security key, or its description, is registered already."
            ) from None
        finally:
            self._clear_registration(session)
        audit.emit("webauthn_added", **fields, result="success", reason="user")
        resp = ok(describe(record))
        resp.status = 201
        return resp

    def _clear_registration(self, session: Session) -> None:
        with contextlib.suppress(SessionGoneError):
            self.sessions.update_data(session, {REGISTER_KEY: None, DESCRIPTION_KEY: None})

    def register_cancel(self, call: Call) -> Response:
        """``DELETE …/credential/register``: forget the pending registration."""
        _identity, session = call.signed_in()
        self.service.cancel(session.data.get(REGISTER_KEY))
        self._update(session, {REGISTER_KEY: None, DESCRIPTION_KEY: None})
        return ok()

    def _own(self, identity: Identity, call: Call) -> WebAuthnCredential:
        row_id = last_segment(call.req)
        for cred in self.service.storage.webauthn_credentials(identity.username):
            if cred.id == row_id:
                return cred
        raise ApiError(404, "No such security key.")

    def rename(self, call: Call) -> Response:
        """``PUT …/credential/<id> {description}`` (409 when taken, 404 when not theirs)."""
        identity, _session = call.signed_in()
        cred = self._own(identity, call)
        try:
            description = check_description(call.data.get("description"))
        except Malformed as exc:
            raise ApiError(
                400, f"The description {str(exc).removeprefix('the description ')}."
            ) from None
        if not self.service.storage.rename_webauthn_credential(
            identity.username, cred.id, description
        ):
            raise ApiError(409, "You already have a security key with that description.")
        return ok()

    def remove(self, call: Call) -> Response:
        """``DELETE …/credential/<id>`` (404 when not theirs)."""
        identity, _session = call.signed_in()
        cred = self._own(identity, call)
        if not self.service.storage.delete_webauthn_credential(identity.username, cred.id):
            raise ApiError(404, "No such security key.")
        fields = {"user": identity.username, "ip": call.origin.client_ip}
        audit.emit("webauthn_removed", **fields, result="success", reason="user")
        return ok()

    def set_method(self, call: Call) -> Response:
        """``POST /api/user/info/2fa_method {method}``: the preferred second factor, stored
        for the user (see :meth:`method`)."""
        identity, _session = call.signed_in()
        method = field(call.data, "method", str, required=True)
        if method not in METHODS or (method == "webauthn" and not self.config.enable):
            raise ApiError(400, 'The method must be "totp" or "webauthn".')
        self.service.storage.set_second_factor_method(identity.username, method)
        return ok()


def describe(cred: WebAuthnCredential) -> dict[str, object]:
    """A credential as ``GET …/credentials`` lists it (SPEC §7.1): no key material."""
    return {
        "id": cred.id,
        "description": cred.description,
        "created_at": _iso(cred.created_at),
        "last_used_at": _iso(cred.last_used_at) if cred.last_used_at is not None else None,
        "sign_count": cred.sign_count,
        "discoverable": cred.discoverable,
        "backup_eligible": cred.backup_eligible,
        "backup_state": cred.backup_state,
        "aaguid": cred.aaguid,
        "transports": list(cred.transports),
    }


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_service(
    config: Config, storage: Storage, regulator: Regulator, now: Callable[[], float]
) -> WebAuthnService:
    """The ceremonies for ``make_app``: keys derived from the storage key file.

    Raises:
        ValueError: the key file cannot be read (the message says how to fix it).
    """
    material = read_key_file(config.storage.encryption_key_file)
    key = derive_key(material, "webauthn")
    return WebAuthnService(config.webauthn, storage, key, regulator=regulator, now=now)
