"""Personal access tokens for scripts and machines (SPEC §7.6).

A token is ``authctl_`` + the base64url form of 32 random bytes (256 bits). It is shown
once, when made; storage keeps only HMAC-SHA256(token) under a key derived by HKDF from the
storage key file (a label of its own), so a copied database or backup yields no usable token,
and no argon2 is needed: guessing 256 random bits is hopeless, so a fast keyed hash is
enough (OWASP: slow hashes are for low-entropy passwords). A token is found by its digest
in one indexed read and the stored digest is compared in constant time.

The verify path (``server.web.authz``) checks tokens on every request, so
:class:`TokenService` keeps a per-process cache of verified digests: an entry is trusted
for :data:`RECHECK_SECONDS` and then read again from storage (one indexed read per token
and process per second). That bound is how a revocation made by another process or host
is honoured everywhere within one second; a revocation made in this process clears the
cache at once. A read that the cache cannot answer calls ``server.core.blocking.check``, so
in waitress's I/O thread (``server.serve.inline``) it raises ``WouldBlock`` and the request
goes to the pool. Misses (unknown or revoked digests) are cached in a table of their own,
so a flood of made-up tokens cannot evict the tokens in use. ``last_used_at`` is written at
most once per :data:`TOUCH_INTERVAL` per token (a conditional UPDATE: hosts coalesce too).

Whether the token's user still exists and is enabled is not this module's business: the
caller checks the users file on every request (``server.web.authz``), as for sessions.
The token, its digest and its key never appear in logs or errors.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import re
import secrets
import time
import typing as t
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from server.core.blocking import check as check_blocking
from server.core.errors import InvalidTargetError
from server.core.public_ids import public_id
from server.core.storage import AccessToken
from server.core.storage import StorageError
from server.core.urls import canonical_host

if t.TYPE_CHECKING:
    from server.core.storage import Storage

#: Every token starts with this; bearer values without it are the apps' own (ignored).
PREFIX = "authctl_"
#: Random bytes in a token (256 bits).
TOKEN_BYTES = 32
_TOKEN = re.compile(r"authctl_[A-Za-z0-9_-]{43}")
#: HKDF label of the digest key (the storage key file, a key of its own).
INFO_TOKENS = b"authctl access token digest hmac-sha256"
_SALT = b"authctl storage v1"
#: Seconds a verified (or refused) digest is trusted before storage is read again: the
#: bound on how late another process or host honours a revocation.
RECHECK_SECONDS = 1.0
#: Seconds between two writes of a token's ``last_used_at``.
TOUCH_INTERVAL = 60.0
#: Entries per cache table; a full table is emptied (a recomputation, never memory).
CACHE_SIZE = 4096
#: Longest token name, and most domains a token may be limited to.
MAX_NAME = 100
MAX_DOMAINS = 32
#: Live tokens a user may make at the portal.
MAX_PORTAL_TOKENS = 50
#: Public ids: 128 random bits, base64url.
_ID_BYTES = 16

#: Why a token was refused (the decision log's ``reason``).
UNKNOWN = "unknown"
REVOKED = "revoked"
EXPIRED = "expired"
OUT_OF_DOMAIN = "domain"
UNAVAILABLE = "unavailable"
NO_USER = "user"


class TokenError(ValueError):
    """Input for a new token is refused; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a live token allows: its user at its level, on its hosts, until it expires."""

    token_id: str
    username: str
    level: int
    domains: tuple[str, ...]
    #: ``"." + domain`` of each domain, precomputed for the subdomain test.
    suffixes: tuple[str, ...]
    expires_at: float | None

    def covers(self, host: str) -> bool:
        """True when ``host`` is one of the domains or below one (or there are none)."""
        if not self.domains:
            return True
        return host in self.domains or host.endswith(self.suffixes)


def _grant(token: AccessToken) -> Grant:
    return Grant(
        token.id,
        token.username,
        2 if token.two_factor else 1,
        token.domains,
        tuple(f".{domain}" for domain in token.domains),
        token.expires_at,
    )


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer authctl_…`` value, else None.

    Only bearer values with the ``authctl_`` prefix are ours; any other scheme or bearer
    value belongs to the application behind the proxy and is left alone. A prefixed value
    that is malformed is returned as it is (it then fails as an unknown token).
    """
    if not header:
        return None
    value = header.strip()
    if value[:7].lower() != "bearer " or PREFIX not in value:
        return None
    token = value[7:].strip()
    return token if token.startswith(PREFIX) else None


def mint() -> str:
    """A new random token (never stored)."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=")
    return PREFIX + raw.decode("ascii")


def digest_key(material: bytes) -> bytes:
    """The HMAC key for token digests, derived from the storage key file's material."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=INFO_TOKENS).derive(material)


def clean_name(name: object) -> str:
    """A token's name: 1-100 printable characters, surrounding spaces dropped."""
    if not isinstance(name, str):
        raise TokenError("name must be a string")
    text = name.strip()
    if not text:
        raise TokenError("name is empty; give the token a name that says what uses it")
    if len(text) > MAX_NAME:
        raise TokenError(f"name is longer than {MAX_NAME} characters")
    if not text.isprintable():
        raise TokenError("name holds control characters")
    return text


def clean_domains(domains: Iterable[object], cookie_domains: Iterable[str]) -> tuple[str, ...]:
    """The hosts a token is limited to, canonical (IDNA, lower case), each inside a cookie
    domain (elsewhere authctl answers 400 anyway), without duplicates, in the order given."""
    allowed = tuple(cookie_domains)
    found: list[str] = []
    for domain in domains:
        if not isinstance(domain, str):
            raise TokenError("each domain must be a string")
        try:
            host = canonical_host(domain.strip(), allow_unicode=True)
        except InvalidTargetError as exc:
            raise TokenError(f"domain {domain!r}: {exc}") from None
        if not any(host == c or host.endswith(f".{c}") for c in allowed):
            raise TokenError(
                f"domain {host!r} is outside every cookie domain ({', '.join(allowed)})"
            )
        if host not in found:
            found.append(host)
    if len(found) > MAX_DOMAINS:
        raise TokenError(f"a token may be limited to at most {MAX_DOMAINS} domains")
    return tuple(found)


class _Entry(t.NamedTuple):
    grant: Grant | None
    reason: str  # why ``grant`` is None
    checked: float  # monotonic time of the storage read


class TokenService:
    """Makes, lists, revokes and checks tokens on one storage (one per process)."""

    def __init__(
        self,
        storage: Storage,
        material: bytes,
        *,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.storage = storage
        self._key = digest_key(material)
        self._now = now
        self._monotonic = monotonic
        self._hits: dict[bytes, _Entry] = {}
        self._misses: dict[bytes, _Entry] = {}

    def __repr__(self) -> str:
        return "<TokenService>"

    def now(self) -> float:
        """Wall-clock time as this service sees it (tests pass a fake clock)."""
        return self._now()

    def digest(self, token: str) -> bytes:
        """HMAC-SHA256 of ``token`` under the digest key (what storage keeps)."""
        # hmac.digest: the one-shot C function, a fifth of hmac.new(...).digest()'s time on
        # the verify path (no HMAC object is built)
        return hmac.digest(self._key, token.encode("utf-8", "surrogateescape"), "sha256")

    # ------------------------------------------------------------------ managing

    def create(
        self,
        username: str,
        name: str,
        *,
        created_by: str,
        expires_in: int | None = None,
        domains: tuple[str, ...] = (),
        two_factor: bool = False,
    ) -> tuple[str, AccessToken]:
        """Make a token for ``username`` (canonical); the token (shown once) and its record.

        Raises:
            TokenError: a bad name or expiry.
            StorageError: the storage cannot be written.
        """
        name = clean_name(name)
        if expires_in is not None and expires_in <= 0:
            raise TokenError("expires must be a positive duration, such as 30d")
        token = mint()
        now = self._now()
        record = AccessToken(
            id=public_id(_ID_BYTES),  # `authctl token revoke ID` takes it
            username=username,
            name=name,
            digest=self.digest(token),
            created_at=now,
            last_used_at=None,
            expires_at=None if expires_in is None else now + expires_in,
            domains=domains,
            two_factor=two_factor,
            created_by=created_by,
            revoked_at=None,
        )
        self.storage.add_token(record)
        return token, record

    def tokens(self, username: str | None = None) -> list[AccessToken]:
        """The live (not revoked) tokens of ``username`` or of everyone, oldest first."""
        return self.storage.tokens(username)

    def revoke(self, token_id: str, username: str | None = None) -> str | None:
        """Revoke ``token_id`` (only ``username``'s, when given); its owner, or None when
        there is no such live token. This process stops honouring it at once, others within
        :data:`RECHECK_SECONDS`."""
        owner = self.storage.revoke_token(token_id, self._now(), username)
        if owner is not None:
            self._hits.clear()
        return owner

    def revoke_user(self, username: str) -> int:
        """Revoke every token of ``username`` (the user was removed); how many."""
        count = self.storage.revoke_user_tokens(username, self._now())
        if count:
            self._hits.clear()
        return count

    # ------------------------------------------------------------------ checking

    def check(self, token: str) -> tuple[Grant | None, str]:
        """The grant of a live, unexpired token, or None and why (:data:`UNKNOWN`,
        :data:`REVOKED`, :data:`EXPIRED`, :data:`UNAVAILABLE`).

        From the cache when its entry is younger than :data:`RECHECK_SECONDS`; otherwise
        storage is read (``WouldBlock`` inside ``server.core.blocking.forbidden``).
        """
        if not _TOKEN.fullmatch(token):
            return None, UNKNOWN
        digest = self.digest(token)
        entry = self._hits.get(digest) or self._misses.get(digest)
        if entry is None or self._monotonic() - entry.checked >= RECHECK_SECONDS:
            check_blocking()
            entry = self._load(digest)
        grant = entry.grant
        if grant is None:
            return None, entry.reason
        if grant.expires_at is not None and self._now() >= grant.expires_at:
            return None, EXPIRED
        return grant, ""

    def _load(self, digest: bytes) -> _Entry:
        """Read the token of ``digest`` from storage, cache what was found, record a use."""
        try:
            token = self.storage.token_by_digest(digest)
        except StorageError:
            # fail closed, and cache nothing: the next request asks storage again
            self._hits.pop(digest, None)
            return _Entry(None, UNAVAILABLE, -RECHECK_SECONDS)
        checked = self._monotonic()
        if token is None or not hmac.compare_digest(token.digest, digest):
            entry = _Entry(None, UNKNOWN, checked)
        elif token.revoked_at is not None:
            entry = _Entry(None, REVOKED, checked)
        else:
            entry = _Entry(_grant(token), "", checked)
            self._touch(token)
        table, other = (self._hits, self._misses) if entry.grant else (self._misses, self._hits)
        other.pop(digest, None)
        if len(table) >= CACHE_SIZE:
            table.clear()
        table[digest] = entry
        return entry

    def _touch(self, token: AccessToken) -> None:
        """Record a use when the last recorded one is over :data:`TOUCH_INTERVAL` old; a
        failure (a read-only standby) is ignored: it never decides an answer."""
        now = self._now()
        if token.last_used_at is not None and now - token.last_used_at < TOUCH_INTERVAL:
            return
        with contextlib.suppress(StorageError):
            self.storage.touch_token(token.id, now, TOUCH_INTERVAL)


def describe(token: AccessToken, now: float) -> dict[str, object]:
    """A token as ``GET /api/user/tokens`` and ``authctl token list --json`` show it: never
    the token, never its digest. Times RFC 3339 UTC; null for never."""
    from server.core.sessions import utc

    return {
        "id": token.id,
        "name": token.name,
        "created_at": utc(token.created_at),
        "last_used_at": None if token.last_used_at is None else utc(token.last_used_at),
        "expires_at": None if token.expires_at is None else utc(token.expires_at),
        "expired": token.expires_at is not None and now >= token.expires_at,
        "domains": list(token.domains),
        "two_factor": token.two_factor,
        "created_by": token.created_by,
    }
