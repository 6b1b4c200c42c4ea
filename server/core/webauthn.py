"""WebAuthn ceremonies (SPEC §7.1): registration, the second factor and passkey sign-in.

The cryptography, CBOR, COSE and attestation parsing are py_webauthn's (Duo Labs); this module
owns the state around them, where relying parties usually go wrong:

- **Challenges** are 32 random bytes, stored in the storage's ``one_time_codes`` table (every
  host and worker sees them) as a digest, bound to the session (or, before sign-in, to a nonce
  kept in a short-lived cookie), single use and expiring after ``[webauthn] timeout``. A
  response is judged and its challenge consumed in one write transaction, whatever the outcome,
  so of two parallel submissions at most one goes on, and a refused one cannot be retried.
- **Origin and RP ID**: the portal's origin of the cookie domain in use, and ``rp_id`` as
  configured (default: the portal host, Authelia's, so imported credentials keep working).
- **Which user**: the credential id (UNIQUE in storage) names the credential's owner; for the
  second factor it must be the signed-in user, for a passkey sign-in an existing, enabled one.
  A user handle is not trusted for identity (imported credentials carry Authelia's).
- **Clones**: a valid signature whose sign count does not grow (when either count is non-zero)
  is refused and logged as a possible cloned authenticator; the storage's update re-checks it
  atomically, so two hosts cannot both accept one count.
- **Regulation**: a second-factor assertion is a ``TOTP``-stream attempt (no new log kind, no
  schema change: a second factor is a second factor), a passkey sign-in a ``1FA`` attempt;
  a banned user's assertion is refused with the same :class:`Refused` as a wrong one.

Nothing here imports webob: the web tier (``server.web.webauthn_api``) maps the exceptions.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
import typing as t
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from webauthn import generate_authentication_options
from webauthn import generate_registration_options
from webauthn import options_to_json
from webauthn import verify_authentication_response
from webauthn import verify_registration_response
from webauthn.helpers import parse_authentication_credential_json
from webauthn.helpers import parse_registration_credential_json
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import AttestationConveyancePreference
from webauthn.helpers.structs import AuthenticationCredential
from webauthn.helpers.structs import AuthenticatorSelectionCriteria
from webauthn.helpers.structs import AuthenticatorTransport
from webauthn.helpers.structs import CredentialDeviceType
from webauthn.helpers.structs import PublicKeyCredentialDescriptor
from webauthn.helpers.structs import RegistrationCredential
from webauthn.helpers.structs import ResidentKeyRequirement
from webauthn.helpers.structs import UserVerificationRequirement

from server.core.errors import AuthError
from server.core.errors import Banned
from server.core.public_ids import public_id
from server.core.storage import OneTimeCode
from server.core.storage import Redemption
from server.core.storage import WebAuthnCredential

if t.TYPE_CHECKING:
    from server.core.config import CookieConfig
    from server.core.config import WebAuthnConfig
    from server.core.regulation import Regulator
    from server.core.storage import Storage

log = logging.getLogger("authctl.webauthn")

#: Random bytes in a challenge (WebAuthn asks for at least 16).
CHALLENGE_BYTES = 32
#: Longest description of a credential, in characters.
MAX_DESCRIPTION = 64
#: Largest JSON response accepted (the API's body limit bounds it too).
MAX_RESPONSE_FIELD = 16 * 1024


class Ceremony(enum.Enum):
    """What a challenge was issued for (the ``intent`` of its one-time-code row)."""

    REGISTER = "webauthn_register"
    SECOND_FACTOR = "webauthn_2fa"
    PASSKEY = "webauthn_passkey"


class Refused(AuthError):
    """A response that must be refused: wrong, replayed, expired, foreign, banned, cloned.

    ``reason`` is for the log and the audit only; the client always gets one answer.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Malformed(AuthError, ValueError):
    """A response that is not a WebAuthn credential in JSON form (400; nothing consumed)."""


class DescriptionTaken(AuthError):
    """The user has a credential with that description already, or the credential is known."""


@dataclass(frozen=True, slots=True)
class RelyingParty:
    """Where a ceremony happens: the RP ID credentials are scoped to and the page's origin."""

    rp_id: str
    origin: str


def relying_party(config: WebAuthnConfig, cookie: CookieConfig) -> RelyingParty:
    """The relying party of ``cookie``'s portal: its origin, and ``rp_id`` or its host."""
    parts = urlsplit(cookie.portal_url)
    return RelyingParty(config.rp_id or (parts.hostname or ""), f"{parts.scheme}://{parts.netloc}")


@dataclass(frozen=True, slots=True)
class Challenge:
    """An issued challenge: the id of its row (kept in the session or cookie) and the options
    to hand to ``navigator.credentials`` (``publicKey``, JSON form)."""

    id: str
    options: dict[str, t.Any]


@dataclass(frozen=True, slots=True)
class Assertion:
    """A verified assertion: whose credential it was and whether the user was verified."""

    credential: WebAuthnCredential
    user_verified: bool


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def from_b64url(text: str) -> bytes:
    """Decode unpadded base64url; ValueError for anything else."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def _client_challenge(client_data_json: bytes) -> bytes:
    """The challenge a response's clientDataJSON names (checked against the stored digest)."""
    try:
        data = json.loads(client_data_json)
        return from_b64url(data["challenge"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise Malformed("clientDataJSON holds no challenge") from None


def check_description(value: object) -> str:
    """A credential's description: 1 to 64 printable characters, trimmed.

    Raises:
        Malformed: anything else.
    """
    if not isinstance(value, str):
        raise Malformed("the description must be a string")
    text = value.strip()
    if not text or len(text) > MAX_DESCRIPTION or not text.isprintable():
        raise Malformed(f"the description must be 1 to {MAX_DESCRIPTION} printable characters")
    return text


class WebAuthnService:
    """The ceremonies on one storage, regulator and clock.

    ``key`` (from the storage key, :func:`server.core.otc.derive_key`) makes the user handles
    and session bindings; it is never stored.

    Raises (every method):
        StorageError: the storage failed; callers refuse (fail closed).
    """

    def __init__(
        self,
        config: WebAuthnConfig,
        storage: Storage,
        key: bytes,
        *,
        regulator: Regulator | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.storage = storage
        self.regulator = regulator
        self._key = key
        self._now = now
        self._next_purge = 0.0

    # ------------------------------------------------------------------ helpers

    def user_handle(self, username: str) -> bytes:
        """The user's WebAuthn user handle: 32 bytes, stable, random-looking, no name in it."""
        msg = b"user handle\x00" + username.encode("utf-8")
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def binding(self, secret: str) -> bytes:
        """The stored stand-in for a session id or a pre-sign-in nonce (never stored as is)."""
        return hmac.new(self._key, b"binding\x00" + secret.encode(), hashlib.sha256).digest()

    @property
    def _uv(self) -> UserVerificationRequirement:
        return UserVerificationRequirement(self.config.user_verification)

    @property
    def _uv_required(self) -> bool:
        return self.config.user_verification == "required"

    def _issue(
        self, ceremony: Ceremony, username: str, bound_to: str, challenge: bytes, ip: str | None
    ) -> str:
        now = self._now()
        if now >= self._next_purge:
            self._next_purge = now + 60.0
            self.storage.purge_one_time_codes(now - 3600.0)
        row_id = secrets.token_urlsafe(16)
        self.storage.add_one_time_code(
            row_id,
            username,
            ceremony.value,
            hashlib.sha256(challenge).digest(),
            issued=now,
            expires=now + self.config.timeout,
            session_binding=self.binding(bound_to),
            ip=ip,
        )
        return row_id

    def consume(
        self,
        ceremony: Ceremony,
        row_id: object,
        username: str,
        bound_to: str,
        client_challenge: bytes,
        ip: str | None = None,
    ) -> None:
        """Use challenge ``row_id`` up: it must be live, of this ceremony, user and binding,
        and the one the response signed. Consumed whatever the response turns out to be.

        Raises:
            Refused: unknown, used, expired, foreign, or not the challenge issued.
        """
        if not isinstance(row_id, str) or not row_id:
            raise Refused("no challenge was issued")
        now = self._now()
        binding = self.binding(bound_to)
        digest = hashlib.sha256(client_challenge).digest()
        same = [False]

        def judge(row: OneTimeCode) -> Redemption:
            live = row.consumed is None and row.expires > now
            mine = (
                row.intent == ceremony.value
                and row.username == username
                and row.session_binding is not None
                and hmac.compare_digest(row.session_binding, binding)
            )
            if not (live and mine):
                return Redemption.REFUSE
            same[0] = hmac.compare_digest(row.digest, digest)
            return Redemption.CONSUME

        if not self.storage.redeem_one_time_code(row_id, judge, now=now, ip=ip):
            raise Refused("challenge unknown, used, expired or issued to another session")
        if not same[0]:
            raise Refused("the response signed another challenge")

    def _descriptors(self, username: str) -> list[PublicKeyCredentialDescriptor]:
        out = []
        for cred in self.storage.webauthn_credentials(username):
            transports = []
            for name in cred.transports:
                try:
                    transports.append(AuthenticatorTransport(name))
                except ValueError:
                    continue
            out.append(PublicKeyCredentialDescriptor(cred.credential_id, transports=transports))
        return out

    # ------------------------------------------------------------------ registration

    def registration_options(
        self,
        username: str,
        display_name: str,
        rp: RelyingParty,
        *,
        bound_to: str,
        ip: str | None = None,
    ) -> Challenge:
        """Creation options for ``username`` (``excludeCredentials`` = theirs, ``residentKey``
        preferred, attestation as configured) and the id of the stored challenge."""
        challenge = secrets.token_bytes(CHALLENGE_BYTES)
        options = generate_registration_options(
            rp_id=rp.rp_id,
            rp_name=self.config.display_name,
            user_name=username,
            user_id=self.user_handle(username),
            user_display_name=display_name or username,
            challenge=challenge,
            timeout=self.config.timeout * 1000,
            attestation=AttestationConveyancePreference(self.config.attestation),
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED, user_verification=self._uv
            ),
            exclude_credentials=self._descriptors(username),
        )
        data: dict[str, t.Any] = json.loads(options_to_json(options))
        data["extensions"] = {"credProps": True}
        row_id = self._issue(Ceremony.REGISTER, username, bound_to, challenge, ip)
        return Challenge(row_id, data)

    def register(
        self,
        username: str,
        challenge_id: object,
        response: object,
        rp: RelyingParty,
        *,
        description: str,
        bound_to: str,
        ip: str | None = None,
    ) -> WebAuthnCredential:
        """Verify an attestation and store the new credential.

        Raises:
            Malformed: not a registration credential in JSON form (nothing consumed).
            Refused: challenge or attestation refused (the challenge is used up).
            DescriptionTaken: the description is used, or the credential registered already.
        """
        credential: RegistrationCredential = _parse(parse_registration_credential_json, response)
        challenge = _client_challenge(credential.response.client_data_json)
        self.consume(Ceremony.REGISTER, challenge_id, username, bound_to, challenge, ip)
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=rp.rp_id,
                expected_origin=rp.origin,
                require_user_verification=self._uv_required,
            )
        except WebAuthnException as exc:
            raise Refused(f"attestation refused: {exc}") from None
        record = WebAuthnCredential(
            id=public_id(16),  # `authctl user webauthn remove NAME ID` takes it
            username=username,
            credential_id=verified.credential_id,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            aaguid=verified.aaguid,
            transports=tuple(
                dict.fromkeys(_text(tr) for tr in credential.response.transports or ())
            ),
            backup_eligible=verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
            backup_state=verified.credential_backed_up,
            discoverable=_discoverable(response),
            description=description,
            attestation_type=_text(verified.fmt),
            created_at=self._now(),
            last_used_at=None,
        )
        if not self.storage.add_webauthn_credential(record):
            raise DescriptionTaken("description or credential already registered")
        log.info(
            "WebAuthn credential registered",
            extra={"fields": {"user": username, "credential": record.id}},
        )
        return record

    def cancel(self, challenge_id: object) -> bool:
        """Kill a pending challenge (``DELETE …/register``); True when it was live."""
        if not isinstance(challenge_id, str) or not challenge_id:
            return False
        return self.storage.revoke_one_time_code(challenge_id, self._now())

    # ------------------------------------------------------------------ authentication

    def authentication_options(
        self,
        username: str | None,
        rp: RelyingParty,
        *,
        bound_to: str,
        ip: str | None = None,
    ) -> Challenge:
        """Request options: the second factor lists the user's credentials in
        ``allowCredentials``; a passkey sign-in (``username`` None) lists none."""
        challenge = secrets.token_bytes(CHALLENGE_BYTES)
        options = generate_authentication_options(
            rp_id=rp.rp_id,
            challenge=challenge,
            timeout=self.config.timeout * 1000,
            allow_credentials=self._descriptors(username) if username else [],
            user_verification=self._uv,
        )
        data: dict[str, t.Any] = json.loads(options_to_json(options))
        ceremony = Ceremony.SECOND_FACTOR if username else Ceremony.PASSKEY
        row_id = self._issue(ceremony, username or "", bound_to, challenge, ip)
        return Challenge(row_id, data)

    def authenticate(
        self,
        username: str | None,
        challenge_id: object,
        response: object,
        rp: RelyingParty,
        *,
        bound_to: str,
        ip: str | None = None,
        user_ok: Callable[[str], bool] = lambda _name: True,
    ) -> Assertion:
        """Verify an assertion: the second factor of ``username``, or (``username`` None) a
        passkey sign-in of whoever owns the credential, if ``user_ok`` says they may sign in.

        Raises:
            Malformed: not an authentication credential in JSON form (nothing consumed).
            Refused: everything else that is not a valid assertion (one answer for all).
        """
        credential: AuthenticationCredential = _parse(
            parse_authentication_credential_json, response
        )
        challenge = _client_challenge(credential.response.client_data_json)
        ceremony = Ceremony.SECOND_FACTOR if username else Ceremony.PASSKEY
        self.consume(ceremony, challenge_id, username or "", bound_to, challenge, ip)
        stored = self.storage.webauthn_credential(credential.raw_id)
        owner = stored.username if stored is not None else None
        kind = "TOTP" if username else "1FA"
        reservation = None
        if self.regulator is not None:
            try:
                reservation = self.regulator.reserve(username or owner, ip, kind)
            except Banned as exc:
                raise Refused(f"banned: {exc}") from None
        try:
            assertion = self._check(username, credential, challenge, stored, rp, user_ok)
        except Refused:
            if reservation is not None:
                reservation.settle(False)
            raise
        except BaseException:
            if reservation is not None:
                reservation.release()
            raise
        if reservation is not None:
            reservation.settle(True)
        return assertion

    def _check(
        self,
        username: str | None,
        credential: AuthenticationCredential,
        challenge: bytes,
        stored: WebAuthnCredential | None,
        rp: RelyingParty,
        user_ok: Callable[[str], bool],
    ) -> Assertion:
        if stored is None:
            raise Refused("unknown credential")
        if username is not None and stored.username != username:
            raise Refused(f"credential {stored.id} belongs to another user")
        if username is None and not user_ok(stored.username):
            raise Refused(f"the owner of credential {stored.id} cannot sign in")
        try:
            # the sign count is judged below, once the signature is known to be good
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=rp.rp_id,
                expected_origin=rp.origin,
                credential_public_key=stored.public_key,
                credential_current_sign_count=0,
                require_user_verification=self._uv_required,
            )
        except WebAuthnException as exc:
            raise Refused(f"assertion refused: {exc}") from None
        new, old = verified.new_sign_count, stored.sign_count
        grows = (new == 0 and old == 0) or new > old
        if not grows or not self.storage.use_webauthn_credential(
            stored.credential_id,
            new,
            now=self._now(),
            backup_state=verified.credential_backed_up,
        ):
            log.warning(
                "WebAuthn sign count of %s's credential %s did not grow (%d after %d): a "
                "possible cloned authenticator; refused",
                stored.username,
                stored.id,
                new,
                old,
                extra={"fields": {"user": stored.username, "credential": stored.id}},
            )
            raise Refused("sign count did not grow: possible clone")
        return Assertion(stored, verified.user_verified)


_T = t.TypeVar("_T")


def _parse(parser: Callable[[dict[str, t.Any]], _T], response: object) -> _T:
    """py_webauthn's parse of a credential in JSON form; Malformed for anything else."""
    if not isinstance(response, Mapping):
        raise Malformed("the response must be a JSON object")
    try:
        return parser(dict(response))
    except (WebAuthnException, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise Malformed(f"malformed credential: {exc}") from None


def _discoverable(response: object) -> bool:
    """``clientExtensionResults.credProps.rk`` as the browser reported it (False: unknown)."""
    if not isinstance(response, Mapping):
        return False
    ext = response.get("clientExtensionResults")
    props = ext.get("credProps") if isinstance(ext, Mapping) else None
    return isinstance(props, Mapping) and props.get("rk") is True


def _text(value: object) -> str:
    """An enum member's value, or a plain string py_webauthn left as is."""
    return str(getattr(value, "value", value))
