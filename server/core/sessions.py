"""Server-side sessions: the record behind the session cookie, and the rules that end it.

The cookie holds only a random id (256 bits from ``secrets``); everything else lives in a
``SessionStore`` (``server.core.session_store``). This module owns the lifecycle rules that keep a
stolen, stale or fixed id useless (OWASP Session Management CS, ASVS 5.0 §7):

- a brand-new id at every login and at every factor (``create``, ``elevate``), never one chosen
  by the client (session fixation);
- an absolute limit (``expiration``, or ``remember_me`` for remember-me sessions) and an
  inactivity limit (remember-me sessions are exempt), both checked on every ``load``;
- a cookie moved to another cookie domain is destroyed, as Authelia does;
- ``destroy_user`` ends every session of a user (password change, disable, removal), and
  ``user_stamp`` lets the web layer notice a password change made by another process;
- a user sees and ends their own sessions (SPEC §7.6) through a public ``handle``: random
  (``HANDLE_BYTES``), never derived from the id, kept when the id is regenerated, and of a
  shape no session id has (``is_handle``/``is_session_id`` never both hold), so a handle is
  never a cookie and an id never a handle. ``list_sessions`` reads a user's sessions as the
  store keeps them, keyed by the SHA-256 of the id (``Listed``): the id is never read back.
  The client's address and User-Agent are kept as data, cut to ``MAX_IP``/``MAX_USER_AGENT``
  characters, control characters removed (``client_text``); outputs escape them as usual.

``touch`` coalesces activity writes so that verify, the hot path, stays read-mostly, and is
best effort: a store that can read but not write (full disk, a lock held elsewhere, a
read-only Redis) still answers verify from what it read; a failed activity write is logged at
most once a minute and not retried for ``WRITE_RETRY`` seconds.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
import secrets
import time
import typing as t
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from types import MappingProxyType

from server.core.errors import AuthError
from server.core.errors import StoreUnavailable
from server.core.names import canonical_username
from server.core.outage import Throttled
from server.core.public_ids import public_id

if t.TYPE_CHECKING:
    from server.core.config import SessionConfig
    from server.core.session_store import SessionStore

#: Bytes of randomness in a session id: 256 bits, 43 URL-safe base64 characters.
ID_BYTES = 32
#: What ``secrets.token_urlsafe(ID_BYTES)`` produces; anything else never reaches the store.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
#: Longest gap between two recorded activity writes of one session, in seconds.
MAX_TOUCH_INTERVAL = 5.0
#: How often ``create`` sweeps expired sessions out of the store, in seconds.
PURGE_INTERVAL = 60.0
#: Seconds without activity writes after one failed (a verify never waits on a broken store).
WRITE_RETRY = 1.0
#: Bytes of randomness in a session handle: 192 bits, 32 URL-safe base64 characters (a
#: session id has 43, so neither can pass for the other).
HANDLE_BYTES = 24
HANDLE_PATTERN = re.compile(r"[A-Za-z0-9_-]{32}")
#: Longest client address and User-Agent kept with a session (characters).
MAX_IP = 64
MAX_USER_AGENT = 256
#: Rounds of ``revoke``: a session whose id is regenerated while it is revoked is looked for
#: again under its new id.
REVOKE_ROUNDS = 3

log = logging.getLogger("authctl.sessions")

_SAME_SITE = {"lax": "Lax", "strict": "Strict", "none": "None"}
_EMPTY: Mapping[str, str] = MappingProxyType({})


class Level(enum.IntEnum):
    """How far a session is authenticated (``authentication_level`` in ``/api/state``)."""

    NONE = 0
    ONE_FACTOR = 1
    TWO_FACTOR = 2


class SessionGoneError(AuthError):
    """The session ended (logout, expiry, another tab's factor) before a change was applied.

    The web layer answers it like an anonymous request: log in again.
    """


def new_session_id() -> str:
    """A fresh session id: 256 bits from ``secrets``, URL-safe, 43 characters."""
    return secrets.token_urlsafe(ID_BYTES)


def is_session_id(value: str) -> bool:
    """True when ``value`` has the shape of an id we issue (checked before any store access)."""
    return ID_PATTERN.fullmatch(value) is not None


def new_handle() -> str:
    """A fresh public handle: 192 bits from ``secrets``, independent of the session id, never
    starting with ``-`` (``authctl session revoke HANDLE`` must not read it as an option)."""
    return public_id(HANDLE_BYTES)


def is_handle(value: str) -> bool:
    """True when ``value`` has the shape of a handle (checked before any store access)."""
    return HANDLE_PATTERN.fullmatch(value) is not None


def store_key(session_id: str) -> bytes:
    """The key a session is stored under: SHA-256 of its id (the id itself is not kept)."""
    return hashlib.sha256(session_id.encode("utf-8")).digest()


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def client_text(value: str | None, limit: int) -> str | None:
    """A client-sent value (address, User-Agent) as kept with a session: control characters
    (terminal escapes, line breaks) replaced by a space, cut to ``limit`` characters, None
    when empty. It stays data: every output escapes it."""
    if not value:
        return None
    cleaned = _CONTROL.sub(" ", value[: limit * 2]).strip()[:limit]
    return cleaned or None


def user_stamp(password_hash: str) -> str:
    """An opaque fingerprint of a user's password hash (PHC string), stored in the session.

    A password change gives a new PHC string (new salt), hence a new stamp; the web layer
    compares the session's stamp with the user's current one on each verify, so a change made
    by the CLI or another worker ends old sessions even where ``destroy_user`` could not reach.
    It is a truncated SHA-256, so the session store never holds the hash itself.
    """
    return hashlib.sha256(password_hash.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Session:
    """One server-side session. Immutable: the manager returns changed copies.

    ``id`` and ``user_stamp`` are left out of ``repr`` so that a logged session never leaks a
    live cookie. ``data`` is a read-only mapping of strings (JSON-serialisable) for later
    features such as a pending TOTP registration or an elevation expiry. ``handle``, ``ip``
    and ``user_agent`` are None in records written before they existed (a handle is given at
    the next write).
    """

    id: str = field(repr=False)
    cookie_domain: str
    username: str | None
    level: Level
    created: float
    last_activity: float
    auth_time: float
    remember_me: bool = False
    user_stamp: str = field(default="", repr=False)
    data: Mapping[str, str] = field(default_factory=dict, hash=False)
    handle: str | None = None
    ip: str | None = None
    user_agent: str | None = None

    def __post_init__(self) -> None:
        """Normalise ``level`` and freeze ``data``; refuse records that cannot be true.

        Raises:
            ValueError: a level without a user, a user without a level, or non-string data.
        """
        # Built on every verify from the store's row, so the common cases are kept cheap.
        level = self.level
        if type(level) is not Level:
            level = Level(level)
            object.__setattr__(self, "level", level)
        if (self.username is None) != (level is Level.NONE):
            raise ValueError("a session has a user exactly when its level is not NONE")
        if not self.data:
            object.__setattr__(self, "data", _EMPTY)
            return
        data = dict(self.data)
        if not all(type(k) is str and type(v) is str for k, v in data.items()):
            raise ValueError("session data maps strings to strings")
        object.__setattr__(self, "data", MappingProxyType(data))

    @property
    def authenticated(self) -> bool:
        """True when a user has passed at least one factor."""
        return self.level is not Level.NONE


@dataclass(frozen=True, slots=True)
class Listed:
    """A session as a listing finds it: its store key (SHA-256 of the id) and its record,
    whose ``id`` is empty (stores keep no id, so a listing can never hand one out)."""

    key: bytes = field(repr=False)
    session: Session


def utc(when: float) -> str:
    """Unix time as RFC 3339 UTC to the second (``2026-01-31T12:00:00Z``), as the API, the
    audit log and ``authctl bans`` show times."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def describe(listed: Listed, current: bytes | None = None) -> dict[str, object]:
    """A listed session as ``GET /api/user/sessions`` shows it (SPEC §7.6); ``current`` is
    the store key of the session asking. Unknown fields (older records) are None."""
    session = listed.session
    return {
        "handle": session.handle,
        "created_at": utc(session.created),
        "last_seen_at": utc(session.last_activity),
        "ip": session.ip,
        "user_agent": session.user_agent,
        "current": current is not None and listed.key == current,
        "authentication_level": int(session.level),
    }


class SessionManager:
    """Creates, loads, elevates and ends sessions on an injected clock.

    One instance per process, shared by all threads; all state is in the store, so several
    worker processes on one SQLite file (or Redis) agree.
    """

    def __init__(
        self,
        config: SessionConfig,
        store: SessionStore,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.now = now
        self._domains = frozenset(cookie.domain for cookie in config.cookies)
        self._next_purge = 0.0
        self._writes_paused_until = 0.0
        self._write_failures = Throttled(log)
        inactivity = config.inactivity
        self._touch_interval = 0.0 if inactivity <= 0 else min(MAX_TOUCH_INTERVAL, inactivity / 10)

    # ----------------------------------------------------------------- lifetimes

    @property
    def touch_interval(self) -> float:
        """Seconds between two activity writes of one session (0: never written).

        Recorded activity may lag by up to this much, so a session can end this much early
        through inactivity, never late.
        """
        return self._touch_interval

    @property
    def remember_me_enabled(self) -> bool:
        """False when ``session.remember_me`` is 0 (the checkbox is then ignored)."""
        return self.config.remember_me > 0

    def expires_at(self, session: Session) -> float:
        """The absolute end of ``session``: ``created`` plus the configured lifetime."""
        lifetime = self.config.remember_me if session.remember_me else self.config.expiration
        return session.created + lifetime

    def _alive(self, session: Session, now: float) -> bool:
        if self.expires_at(session) <= now:
            return False
        inactivity = self.config.inactivity
        return session.remember_me or inactivity <= 0 or session.last_activity + inactivity >= now

    def _save(self, session: Session, now: float) -> Session:
        """Store ``session``, first giving it a handle if its record predates handles."""
        if session.handle is None:
            session = replace(session, handle=new_handle())
        self.store.put(session, self.expires_at(session) - now)
        return session

    # ----------------------------------------------------------------- lifecycle

    def create(
        self,
        cookie_domain: str,
        username: str | None,
        level: int,
        remember_me: bool = False,
        user_stamp: str = "",
        data: Mapping[str, str] | None = None,
        *,
        ip: str | None = None,
        user_agent: str | None = None,
    ) -> Session:
        """Store and return a new session with a brand-new id (never one the client sent).

        Call it after a successful first factor (and destroy the session the client had, if
        any). ``remember_me`` is ignored when the configuration disables it. ``ip`` and
        ``user_agent`` (the client's, for the user's list of sessions) are cleaned and cut
        (``client_text``); the session gets a new handle.

        Raises:
            ValueError: an unconfigured cookie domain, a non-canonical user name, or a level
                that does not fit the user.
            SessionStoreError: the store failed.
        """
        if cookie_domain not in self._domains:
            raise ValueError(f"{cookie_domain!r} is not a configured cookie domain")
        if username is not None and canonical_username(username) != username:
            raise ValueError("sessions hold canonical user names only")
        now = self.now()
        session = Session(
            id=new_session_id(),
            cookie_domain=cookie_domain,
            username=username,
            level=Level(level),
            created=now,
            last_activity=now,
            auth_time=now,
            remember_me=bool(remember_me) and self.remember_me_enabled,
            user_stamp=user_stamp,
            data=data or _EMPTY,
            handle=new_handle(),
            ip=client_text(ip, MAX_IP),
            user_agent=client_text(user_agent, MAX_USER_AGENT),
        )
        self._save(session, now)
        if now >= self._next_purge:
            self._next_purge = now + PURGE_INTERVAL
            self.store.purge_expired(now)
        return session

    def load(self, session_id: str | None, cookie_domain: str) -> Session | None:
        """The live session behind a cookie value for ``cookie_domain``, or None.

        None for a missing or malformed id (refused before the store is asked), an unknown
        id, a session issued for another cookie domain (a moved cookie), or one past its
        absolute or inactivity limit; those last two are deleted as well.

        Raises:
            SessionStoreError: the store failed; the caller must treat the request as
                anonymous (fail closed), never as allowed.
        """
        if not session_id or not is_session_id(session_id):
            return None
        session = self.store.get(session_id)
        if session is None:
            return None
        if session.cookie_domain != cookie_domain or not self._alive(session, self.now()):
            self._best_effort(self.store.discard, session_id)
            return None
        return session

    def touch(self, session: Session) -> bool:
        """Record activity on ``session``; True when the store was written.

        Writes at most once per ``touch_interval`` per session, and never for remember-me
        sessions or when inactivity is disabled, so verify stays read-mostly. The session
        is not resurrected if it was deleted meanwhile. Best effort: a store failure is
        logged (throttled) and the request goes on; no write is tried for ``WRITE_RETRY``.
        """
        interval = self._touch_interval
        if session.remember_me or interval <= 0:
            return False
        now = self.now()
        if now - session.last_activity < interval or now < self._writes_paused_until:
            return False
        return self._best_effort(self.store.touch, session.id, now)

    def _best_effort(
        self, write: t.Callable[[str, float], None] | t.Callable[[str], None], *args: t.Any
    ) -> bool:
        """Run a write whose failure must not fail the request; True when it worked."""
        try:
            write(*args)
        except StoreUnavailable as exc:
            self._writes_paused_until = self.now() + WRITE_RETRY
            self._write_failures.hit(
                logging.WARNING,
                "session store write skipped (activity not recorded, or a dead session "
                "left to expire): %s",
                exc,
            )
            return False
        return True

    def elevate(
        self,
        session: Session,
        level: int,
        *,
        user_stamp: str | None = None,
        data: Mapping[str, str] | None = None,
    ) -> Session:
        """A copy of ``session`` at ``level`` under a NEW id; the old id is dead.

        Call it after each successful factor (TOTP, elevation code). ``auth_time`` and
        ``last_activity`` become now; ``created`` (hence the absolute limit) is kept.
        ``data`` is merged into the session's data (e.g. which factor, ``server.core.amr``).

        Raises:
            ValueError: ``level`` is below the session's level, or the session is anonymous.
            SessionGoneError: the session ended before the elevation (logged out, expired,
                or already elevated elsewhere), so no new one is created.
            SessionStoreError: the store failed.
        """
        new_level = Level(level)
        if session.username is None or new_level < session.level:
            raise ValueError("elevate needs an authenticated session and a level no lower")
        now = self.now()
        # Deleting first, and only going on when this call removed it, means two concurrent
        # elevations (or a logout racing a factor) can never leave two live sessions.
        if not self.store.delete(session.id) or not self._alive(session, now):
            raise SessionGoneError("the session ended")
        elevated = replace(
            session,
            id=new_session_id(),
            level=new_level,
            auth_time=now,
            last_activity=now,
            user_stamp=session.user_stamp if user_stamp is None else user_stamp,
            data={**session.data, **data} if data else session.data,
        )
        return self._save(elevated, now)

    def update_data(self, session: Session, changes: Mapping[str, str | None]) -> Session:
        """A copy of ``session`` with ``data`` updated (None removes a key), saved in place.

        The id is kept: data changes grant nothing (grant through ``elevate``).

        Raises:
            SessionGoneError: the session is no longer in the store, or has expired.
            SessionStoreError: the store failed.
        """
        now = self.now()
        if self.store.get(session.id) is None or not self._alive(session, now):
            raise SessionGoneError("the session ended")
        data = dict(session.data)
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        return self._save(replace(session, data=data), now)

    def destroy(self, session_id: str) -> None:
        """End one session (logout). Unknown or malformed ids are ignored."""
        if is_session_id(session_id):
            self.store.delete(session_id)

    def discard(self, session_id: str) -> None:
        """End a session found stale on a verify (its user disabled, removed or with another
        password). Best effort: a store that cannot write leaves it to expire, and the
        request is refused all the same."""
        if is_session_id(session_id):
            self._best_effort(self.store.discard, session_id)

    def destroy_user(self, username: str) -> int:
        """End every session of ``username`` (password change, disable, removal); the count."""
        return self.store.delete_user(canonical_username(username))

    def purge_expired(self) -> int:
        """Delete sessions past their absolute limit; the count. ``create`` calls it too."""
        return self.store.purge_expired(self.now())

    # ----------------------------------------------------------------- seeing and ending

    def list_sessions(self, username: str | None) -> list[Listed]:
        """The live signed-in sessions of ``username`` (None: of every user), newest
        activity first. Expired ones are left out (the store purges them).

        Raises:
            SessionStoreError: the store failed.
        """
        name = None if username is None else canonical_username(username)
        now = self.now()
        found = [
            listed
            for listed in self.store.sessions_of(name)
            if listed.session.authenticated
            and (name is None or listed.session.username == name)
            and self._alive(listed.session, now)
        ]
        found.sort(key=lambda listed: (-listed.session.last_activity, listed.key))
        return found

    def revoke(self, username: str, handle: str) -> bool:
        """End ``username``'s session whose handle is ``handle``; False when the user has no
        such session (an unknown handle and another user's are the same answer).

        The session is looked for again after it was deleted, so one whose id was
        regenerated meanwhile (a factor in another tab) is ended under its new id too.

        Raises:
            SessionStoreError: the store failed.
        """
        if not is_handle(handle):
            return False
        name = canonical_username(username)
        ended = False
        for _ in range(REVOKE_ROUNDS):
            found = [s for s in self.store.sessions_of(name) if s.session.handle == handle]
            if not found:
                break
            for listed in found:
                ended = self.store.delete_listed(listed.key, name) or ended
        return ended

    def revoke_others(self, username: str, keep: Session) -> int:
        """End every session of ``username`` but ``keep`` (the one asking); the count.

        Raises:
            SessionStoreError: the store failed.
        """
        name = canonical_username(username)
        kept = store_key(keep.id)
        ended = 0
        for _ in range(REVOKE_ROUNDS):
            found = [
                s
                for s in self.store.sessions_of(name)
                if s.key != kept and (keep.handle is None or s.session.handle != keep.handle)
            ]
            if not found:
                break
            ended += sum(self.store.delete_listed(s.key, name) for s in found)
        return ended

    # ----------------------------------------------------------------- cookies

    def cookie_header_value(self, session: Session, domain: str | None = None) -> str:
        """The ``Set-Cookie`` value carrying ``session``'s id.

        ``Secure; HttpOnly; SameSite``, ``Domain`` = the session's cookie domain and
        ``Path=/``; a session cookie (no ``Max-Age``) unless remember-me, whose ``Max-Age`` is
        the remaining absolute lifetime.

        Raises:
            ValueError: ``domain`` is given and is not the session's cookie domain.
        """
        if domain is not None and domain != session.cookie_domain:
            raise ValueError("a session cookie is only ever set for its own cookie domain")
        parts = [f"{self.config.name}={session.id}", *self._attributes(session.cookie_domain)]
        if session.remember_me:
            remaining = max(0, int(self.expires_at(session) - self.now()))
            parts.append(f"Max-Age={remaining}")
        return "; ".join(parts)

    def expired_cookie_header_value(self, domain: str) -> str:
        """The ``Set-Cookie`` value that deletes the session cookie on logout.

        Same name, ``Domain`` and ``Path`` as the live cookie, or the browser would keep it.
        """
        return "; ".join(
            [
                f"{self.config.name}=",
                *self._attributes(domain),
                "Max-Age=0",
                "Expires=Thu, 01 Jan 1970 00:00:00 GMT",
            ]
        )

    def _attributes(self, domain: str) -> list[str]:
        same_site = _SAME_SITE[self.config.same_site]
        return [f"Domain={domain}", "Path=/", "Secure", "HttpOnly", f"SameSite={same_site}"]
