"""HTTP Basic credentials on the authz endpoints, with a short-lived HMAC-keyed cache.

Basic counts as one factor only. Without a cache every request would pay a full argon2
verification (Authelia issue #5006: ~500 ms per API call), so a successful check is
remembered for a short TTL under an HMAC of the credentials with a per-process random key:
the cache never holds a password, and a cache dump is useless elsewhere. Entries are bound
to the user's password stamp, so a password change or a users-file reload invalidates them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Upper bound on the size of one credential header we even try to decode.
MAX_HEADER = 4096


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    """A decoded ``Basic`` header; ``username`` as sent (not yet canonical)."""

    username: str
    password: str


class MalformedCredentials(ValueError):
    """A ``Basic`` header that does not decode to ``user:password``."""


def parse_basic(header: str | None) -> BasicCredentials | None:
    """Decode an ``Authorization``/``Proxy-Authorization`` value.

    Returns None when the header is absent or uses another scheme (``Bearer``, ``Token``):
    apps behind authctl may use their own Authorization header and must keep working.

    Raises:
        MalformedCredentials: the scheme is Basic but the value is not ``user:password``.
    """
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    value = value.strip()
    if not value or len(value) > MAX_HEADER:
        raise MalformedCredentials("empty or oversized Basic credentials")
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise MalformedCredentials("Basic credentials are not valid base64 UTF-8") from None
    username, sep, password = decoded.partition(":")
    if not sep or not username or not password:
        raise MalformedCredentials("Basic credentials need user:password")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in decoded):
        raise MalformedCredentials("Basic credentials contain control characters")
    return BasicCredentials(username, password)


class CredentialCache:
    """Remember successful Basic checks for ``ttl`` seconds, keyed by an HMAC.

    The key covers a length-prefixed username and the password, so ``("ab", "c")`` and
    ``("a", "bc")`` never collide (Authelia's FuzzCredentialCacheHMAC_SumNoCollision).
    """

    def __init__(self, ttl: float = 60.0, now: Callable[[], float] = time.monotonic) -> None:
        self._key = secrets.token_bytes(32)
        self._ttl = ttl
        self._now = now
        self._entries: dict[bytes, tuple[str, str, float]] = {}
        self._lock = threading.Lock()

    def _digest(self, creds: BasicCredentials) -> bytes:
        user = creds.username.encode("utf-8")
        message = len(user).to_bytes(4, "big") + user + creds.password.encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def get(self, creds: BasicCredentials) -> tuple[str, str] | None:
        """The cached ``(canonical username, password stamp)`` for these credentials."""
        if self._ttl <= 0:
            return None
        digest = self._digest(creds)
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[2] <= self._now():
            with self._lock:
                self._entries.pop(digest, None)
            return None
        return entry[0], entry[1]

    def put(self, creds: BasicCredentials, username: str, stamp: str) -> None:
        """Remember a successful check."""
        if self._ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= 10_000:
                self._entries.clear()
            self._entries[self._digest(creds)] = (username, stamp, self._now() + self._ttl)

    def clear(self) -> None:
        """Forget everything (the users file changed)."""
        with self._lock:
            self._entries.clear()
