"""One-time codes (session elevation) and signed single-use tokens (password reset links).

Both are stored in the storage database's ``one_time_codes`` table, so that they are single
use across threads, worker processes and restarts, and can be revoked.

**One-time codes** (Authelia's session elevation, reference §4.4): 8 characters from Authelia's
unambiguous alphabet ``ABCDEFGHJKLMNPQRTUVWYXZ2346789`` (about 39 bits), valid 5 minutes, bound
to the session that asked for one. Attacks defended:

- **A leaked database or backup**: only an HMAC-SHA256 of the code is stored (keyed with a key
  derived from the storage key, so the 39 bits cannot be brute-forced offline from the file),
  and of the session id it is bound to; never the code, never the session id.
- **Guessing**: a code dies after :data:`MAX_ATTEMPTS` wrong tries, and the web layer rate
  limits per user and per IP; 5 tries at 1 in 30^8 is negligible.
- **Timing**: the code is looked up by a random public id (kept in the session), and the
  digests are compared with :func:`hmac.compare_digest`.
- **Replay and races**: checking and consuming happen in one ``BEGIN IMMEDIATE`` transaction,
  so of two parallel submissions of one code exactly one wins.
- **A code phished into another browser**: it is bound to the requesting session (digest of
  the session id), so it elevates nothing else.

**Signed tokens** (the reset link ``/reset-password/step2?token=…``): ``base64url(payload) "."
base64url(HMAC-SHA256(key, payload))`` with a key derived (HKDF) from the storage key, a JSON
payload ``{act, sub, jti, iat, exp, pst}``, 5 minutes by default. Attacks defended:

- **Forgery and tampering**: the MAC is checked (constant time) before the payload is even
  parsed; a flipped byte anywhere fails. The token's intent (``act``) is checked too, so a
  token minted for one purpose is refused for another.
- **Replay**: the ``jti`` is stored on issue and consumed once, atomically; an unknown ``jti``
  (never issued, purged, or from another installation sharing nothing) is refused.
- **A stale link**: ``pst`` binds the token to the user's password stamp, so once the password
  changed (by this reset, another one, ``authctl user passwd``) every older link is dead.
- **Revocation**: :meth:`SignedTokens.revoke` consumes a token without using it.

Parsing is strict (charset, length, duplicate JSON keys, exact types), and no failure reason
reaches the client.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
import typing as t
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from server.core.errors import AuthError
from server.core.jsonstrict import no_duplicate_keys
from server.core.storage import OneTimeCode
from server.core.storage import Redemption

if t.TYPE_CHECKING:
    from server.core.storage import Storage

#: Authelia's alphabet for one-time codes: no 0/O, 1/I, 5/S (reference §4.4).
ALPHABET = "ABCDEFGHJKLMNPQRTUVWYXZ2346789"
#: Characters in a one-time code.
CODE_LENGTH = 8
#: Longest code input accepted before any lookup (Authelia: 20).
MAX_CODE_INPUT = 20
#: Wrong tries after which a code is dead.
MAX_ATTEMPTS = 5
#: Lifetimes, in seconds.
CODE_LIFETIME = 300.0
TOKEN_LIFETIME = 300.0
#: Rows are kept this long after they expired (for the record), then purged.
KEEP_EXPIRED = 86400.0
#: How often :meth:`OneTimeCodes.issue` purges old rows, in seconds.
PURGE_INTERVAL = 600.0
#: Longest token accepted before any work.
MAX_TOKEN = 1024
_TOKEN = re.compile(r"([A-Za-z0-9_-]{16,900})\.([A-Za-z0-9_-]{43})")
_SALT = b"authctl one-time v1"
_MAC_PREFIX = b"authctl-token-v1."


class InvalidToken(AuthError, ValueError):
    """A token or code that must be refused; the reason is for the log only."""


def derive_key(material: bytes, purpose: str) -> bytes:
    """A 256-bit key for ``purpose`` derived (HKDF-SHA256) from the storage key material.

    Different purposes give independent keys, and none of them is the key that encrypts TOTP
    secrets, so a code digest or a token MAC never helps an attack on the other.
    """
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=purpose.encode())
    return hkdf.derive(material)


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def normalise_code(value: str) -> str:
    """A typed code as compared: surrounding white space removed, upper-cased."""
    return value.strip().upper()


def new_code(length: int = CODE_LENGTH) -> str:
    """A random code of ``length`` characters from :data:`ALPHABET` (``secrets``)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


@dataclass(frozen=True, slots=True)
class IssuedCode:
    """A code just issued: its public id (kept in the session) and the code (mailed)."""

    id: str
    code: str = field(repr=False)


class OneTimeCodes:
    """Issue and check session-bound one-time codes.

    Raises (every method):
        StorageError: the storage failed; callers refuse (fail closed).
    """

    def __init__(
        self, storage: Storage, key: bytes, *, now: Callable[[], float] = time.time
    ) -> None:
        self.storage = storage
        self._key = key
        self._now = now
        self._next_purge = 0.0

    def _digest(self, row_id: str, username: str, intent: str, code: str) -> bytes:
        msg = "\x00".join(("code", row_id, username, intent, code)).encode("utf-8")
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def binding(self, session_id: str) -> bytes:
        """The stored stand-in for a session id (an HMAC; the id itself is never stored)."""
        return hmac.new(self._key, b"session\x00" + session_id.encode(), hashlib.sha256).digest()

    def issue(
        self,
        username: str,
        intent: str,
        *,
        session_id: str,
        ip: str | None = None,
        lifetime: float = CODE_LIFETIME,
    ) -> IssuedCode:
        """A new code for ``username`` and ``intent``, usable only from ``session_id``."""
        now = self._now()
        self._purge(now)
        row_id = secrets.token_urlsafe(16)
        code = new_code()
        self.storage.add_one_time_code(
            row_id,
            username,
            intent,
            self._digest(row_id, username, intent, code),
            issued=now,
            expires=now + lifetime,
            session_binding=self.binding(session_id),
            ip=ip,
        )
        return IssuedCode(row_id, code)

    def check(
        self,
        code_id: str,
        code: str,
        *,
        username: str,
        intent: str,
        session_id: str,
        ip: str | None = None,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> bool:
        """True (and the code is consumed) when ``code`` is the live code ``code_id``.

        False for an unknown, expired, used, exhausted or foreign code (another user, intent
        or session), or a wrong one, which also counts an attempt; after ``max_attempts``
        wrong tries the code is dead. ``code`` is compared as :func:`normalise_code` gives it.
        """
        typed = normalise_code(code)
        now = self._now()
        expected = self._digest(code_id, username, intent, typed)
        session = self.binding(session_id)

        def judge(row: OneTimeCode) -> Redemption:
            if row.username != username or row.intent != intent:
                return Redemption.REFUSE
            live = row.consumed is None and row.expires > now and row.attempts < max_attempts
            same_session = row.session_binding is not None and hmac.compare_digest(
                row.session_binding, session
            )
            matches = hmac.compare_digest(row.digest, expected)
            if live and same_session and matches:
                return Redemption.CONSUME
            return Redemption.WRONG if live else Redemption.REFUSE

        # judged and consumed in one write transaction: one winner among parallel submissions
        return self.storage.redeem_one_time_code(code_id, judge, now=now, ip=ip)

    def revoke(self, code_id: str) -> bool:
        """Kill a code without using it; True when it was live."""
        return self.storage.revoke_one_time_code(code_id, self._now())

    def _purge(self, now: float) -> None:
        if now >= self._next_purge:
            self._next_purge = now + PURGE_INTERVAL
            self.storage.purge_one_time_codes(now - KEEP_EXPIRED)


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class Claims:
    """What a valid token says."""

    intent: str
    username: str
    jti: str
    issued: int
    expires: int
    stamp: str


class SignedTokens:
    """Issue, verify, consume and revoke HMAC-signed single-use tokens.

    Raises (every method):
        StorageError: the storage failed; callers refuse (fail closed).
    """

    def __init__(
        self, storage: Storage, key: bytes, *, now: Callable[[], float] = time.time
    ) -> None:
        self.storage = storage
        self._key = key
        self._now = now

    def _mac(self, payload: str) -> bytes:
        return hmac.new(self._key, _MAC_PREFIX + payload.encode("ascii"), hashlib.sha256).digest()

    def stamp_binding(self, stamp: str) -> str:
        """What a token carries for the user's password stamp (an HMAC, 16 hex digits)."""
        mac = hmac.new(self._key, b"stamp\x00" + stamp.encode("utf-8"), hashlib.sha256)
        return mac.hexdigest()[:16]

    def issue(
        self,
        username: str,
        intent: str,
        *,
        stamp: str,
        ip: str | None = None,
        lifetime: float = TOKEN_LIFETIME,
    ) -> str:
        """A new token for ``username`` and ``intent``; its ``jti`` is stored for single use."""
        now = self._now()
        jti = secrets.token_urlsafe(16)
        claims = {
            "act": intent,
            "sub": username,
            "jti": jti,
            "iat": int(now),
            "exp": int(now + lifetime),
            "pst": self.stamp_binding(stamp),
        }
        payload = _b64encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        digest = hashlib.sha256(jti.encode("ascii")).digest()
        self.storage.add_one_time_code(
            jti, username, intent, digest, issued=now, expires=now + lifetime, ip=ip
        )
        return f"{payload}.{_b64encode(self._mac(payload))}"

    def verify(self, token: object, intent: str) -> Claims:
        """The claims of a well-formed, authentic, unexpired token for ``intent``.

        Does not consume it and does not look at the database.

        Raises:
            InvalidToken: malformed, forged or altered, another intent, or expired.
        """
        if type(token) is not str or len(token) > MAX_TOKEN:
            raise InvalidToken("not a token")
        found = _TOKEN.fullmatch(token)
        if found is None:
            raise InvalidToken("not a token")
        payload, mac = found.groups()
        # Compared as canonical text, so a signature with altered padding bits (which decodes
        # to the same bytes) is refused too: one token has exactly one spelling.
        if not hmac.compare_digest(mac.encode("ascii"), _b64encode(self._mac(payload)).encode()):
            raise InvalidToken("bad signature")
        try:
            data = json.loads(_b64decode(payload), object_pairs_hook=no_duplicate_keys)
        except (binascii.Error, ValueError, RecursionError):
            raise InvalidToken("bad payload") from None
        if not isinstance(data, dict):
            raise InvalidToken("bad payload")
        types = {"act": str, "sub": str, "jti": str, "iat": int, "exp": int, "pst": str}
        if set(data) != set(types) or any(type(data[k]) is not v for k, v in types.items()):
            raise InvalidToken("bad claims")
        if data["act"] != intent:
            raise InvalidToken("token for another purpose")
        if data["exp"] <= self._now():
            raise InvalidToken("expired")
        return Claims(data["act"], data["sub"], data["jti"], data["iat"], data["exp"], data["pst"])

    def consume(self, token: object, intent: str, *, ip: str | None = None) -> Claims:
        """Verify ``token`` and mark it used, atomically; only the first call succeeds.

        Raises:
            InvalidToken: as :meth:`verify`, or never issued here, already used, revoked.
        """
        claims = self.verify(token, intent)
        if not self._use(claims, ip):
            raise InvalidToken("unknown, used or revoked")
        return claims

    def revoke(self, token: object, intent: str, *, ip: str | None = None) -> Claims:
        """Kill an authentic, unexpired, unused token without using it.

        Raises:
            InvalidToken: as :meth:`consume`.
        """
        claims = self.verify(token, intent)
        if not self._use(claims, "revoked" if ip is None else f"revoked {ip}"):
            raise InvalidToken("unknown, used or revoked")
        return claims

    def _use(self, claims: Claims, ip: str | None) -> bool:
        now = self._now()
        digest = hashlib.sha256(claims.jti.encode("ascii")).digest()

        def judge(row: OneTimeCode) -> Redemption:
            if (
                row.username != claims.username
                or row.intent != claims.intent
                or row.consumed is not None
                or row.expires <= now
                or not hmac.compare_digest(row.digest, digest)
            ):
                return Redemption.REFUSE
            return Redemption.CONSUME

        return self.storage.redeem_one_time_code(claims.jti, judge, now=now, ip=ip)

    def matches_stamp(self, claims: Claims, stamp: str) -> bool:
        """True when ``claims`` were issued while the user's password stamp was ``stamp``."""
        return hmac.compare_digest(claims.stamp, self.stamp_binding(stamp))
