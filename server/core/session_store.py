"""Where sessions live: the ``SessionStore`` protocol, an in-memory store and a SQLite store.

The protocol is deliberately small (get, put with a TTL, delete, delete a user's sessions,
touch, purge, close, and for SPEC §7.6 list a user's sessions and delete one of them by its
store key) so that a Redis store fits it too. ``MemoryStore`` serves one process
and forgets everything on restart. ``SQLiteStore`` is the default: it is shared by worker
processes on one file and survives restarts (security.md §3 R4).

Security choices, each against a named risk:

- The SQLite store keys rows by SHA-256 of the session id and never stores the id itself, so
  a leaked database file (or backup) does not hand out live cookies.
- Records are sealed (``RecordSeal``): AES-256-GCM under a key derived by HKDF from the
  storage key file (``secrets/storage.key``, the same on every host) with a label of its own,
  the hashed id as associated data. Whoever can write the database (or Redis) cannot copy a
  victim's record under a cookie of their choosing, nor raise its level to skip TOTP: a record
  that does not authenticate is no session, and is logged (at most once a minute) as possible
  tampering. Opening happens on a cold read only; the per-process cache holds opened records.
- Every store failure is raised as ``SessionStoreError`` (a ``StoreUnavailable``); the web
  layer answers "log in", never "allow" (fail closed; oauth2-proxy #3093 tells "no such
  session" from "store error"), and the API 503. Failures are logged by the store when they
  start and when they end (``server.core.outage``), not once per request.
- ``touch`` and ``discard`` are best effort and never wait long for a lock another process
  holds (``QUICK_BUSY_TIMEOUT``): a store that can read but not write still answers verify.
- The database is created mode 0600 in a folder created mode 0700.
- ``SQLiteStore.get`` is the hot path of every verify. It keeps the sessions it read in a
  per-process cache, and trusts an entry only while a shared table of random stamps
  (``<db>-changes``, memory-mapped by every process that opens the file) shows that no
  process has written that session since the entry was read: every write stores a fresh
  random stamp in the session's slot after its statement committed, and a reader takes the
  stamp before it queries. So a logout, a disable or a new factor in any worker is seen by the
  next verify in every worker, exactly as without the cache; an entry is also never trusted
  for more than ``CACHE_MAX_AGE`` seconds, which bounds a writer killed between its commit
  and its stamp. The table's blocks are allocated when it is created and it is written with
  ``pwrite``, never through the map, so a full disk is an error, never a SIGBUS.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import secrets
import sqlite3
import time
import typing as t
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from server.core import blocking
from server.core.crypto import INFO_SESSIONS
from server.core.crypto import SecretBox
from server.core.errors import StoreUnavailable
from server.core.outage import Outage
from server.core.outage import Throttled
from server.core.sessions import Level
from server.core.sessions import Listed
from server.core.sessions import Session
from server.core.sessions import new_handle
from server.core.sessions import store_key
from server.core.sqlite_util import Connections
from server.core.sqlite_util import explain
from server.core.sqlite_util import reason

if t.TYPE_CHECKING:
    from server.core.config import Config

log = logging.getLogger("authctl.sessions")

#: Version of the SQLite schema, kept in ``PRAGMA user_version``.
SCHEMA_VERSION = 2
_LEVELS = {int(level): level for level in Level}
#: Seconds a connection waits for another writer (another thread or worker) before failing.
BUSY_TIMEOUT = 5.0
#: Seconds a best-effort write (``touch``, ``discard``) waits for a lock held elsewhere.
QUICK_BUSY_TIMEOUT = 0.2

#: ``MIGRATIONS[n]`` takes a database from ``user_version`` n to n + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE sessions (
            key BLOB PRIMARY KEY,            -- SHA-256 of the session id; the id is not stored
            cookie_domain TEXT NOT NULL,
            username TEXT,
            level INTEGER NOT NULL,
            created REAL NOT NULL,
            last_activity REAL NOT NULL,
            auth_time REAL NOT NULL,
            remember_me INTEGER NOT NULL,
            user_stamp TEXT NOT NULL,
            data TEXT,                       -- JSON object of strings, NULL when empty
            expires REAL NOT NULL            -- absolute end (the TTL given to put)
        ) WITHOUT ROWID""",
        "CREATE INDEX sessions_expires ON sessions (expires)",
        "CREATE INDEX sessions_username ON sessions (username)",
    ),
    (
        # version 1 rows are not sealed, so none can be trusted: every user signs in again
        "DROP TABLE sessions",
        """CREATE TABLE sessions (
            key BLOB PRIMARY KEY,            -- SHA-256 of the session id; the id is not stored
            username TEXT,                   -- for delete_user; must match the sealed record
            expires REAL NOT NULL,           -- absolute end (the TTL given to put), for purge
            record BLOB NOT NULL             -- RecordSeal.seal of the session
        ) WITHOUT ROWID""",
        "CREATE INDEX sessions_expires ON sessions (expires)",
        "CREATE INDEX sessions_username ON sessions (username)",
    ),
)

_GET = "SELECT username, record, expires FROM sessions WHERE key = ? AND expires > ?"
_PUT = "INSERT OR REPLACE INTO sessions (key, username, expires, record) VALUES (?, ?, ?, ?)"


#: Slots of the shared change table (one stamp covers the sessions whose key hashes there).
CHANGE_SLOTS = 4096
_STAMP = 8
#: Longest time, in seconds, a cached session is used without reading the database.
CACHE_MAX_AGE = 1.0
#: Sessions cached per process; a full cache is emptied (a flood only costs reads).
CACHE_SIZE = 10_000


class ChangeTable:
    """Random stamps in a small file shared (``mmap``) by every process that uses one database.

    Slot 0 changes when many sessions may have changed at once (``delete_user``,
    ``purge_expired``); slot ``1 + key % CHANGE_SLOTS`` when one session changed. A stamp is 8
    random bytes, never a counter: two processes writing at once cannot lose a change (a
    counter incremented twice from the same value would be), and a torn read only looks like
    one more change.
    """

    def __init__(self, path: Path) -> None:
        """Open (or create) the table at ``path``.

        Raises:
            OSError: it cannot be created, or its blocks cannot be allocated (a full disk).
        """
        size = (CHANGE_SLOTS + 1) * _STAMP
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            # real blocks, not a sparse file: on a full disk this fails here, at start-up
            # (zeros where the file was shorter; a second process doing this changes nothing)
            os.posix_fallocate(fd, 0, size)
            # read-only: written with pwrite, which fails with ENOSPC where a store through a
            # map would kill the process with SIGBUS (copy-on-write file systems, a file cut
            # short by hand); MAP_SHARED, so every process sees every stamp at once
            self._map = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)

    @staticmethod
    def slot(key: bytes) -> int:
        """The slot of a session key (a SHA-256 digest, so its bytes are uniform)."""
        return 1 + int.from_bytes(key[:4], "little") % CHANGE_SLOTS

    def stamp(self, slot: int) -> bytes:
        """The stamps of ``slot`` and of slot 0, read together."""
        table = self._map
        return table[:_STAMP] + table[slot * _STAMP : (slot + 1) * _STAMP]

    def changed(self, slot: int) -> None:
        """Record a change in ``slot`` (0: maybe every session).

        Raises:
            OSError: the table cannot be written.
        """
        fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.pwrite(fd, os.urandom(_STAMP), slot * _STAMP)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Unmap the table."""
        self._map.close()


class SessionStoreError(StoreUnavailable):
    """The session store failed (unreachable, locked, read-only, full, corrupt, closed).

    Never means "no session" and never means "allow": the web layer answers as for an
    anonymous request (log in), the API 503; the store logs the outage.
    """

    part = "session store"


@t.runtime_checkable
class SessionStore(t.Protocol):
    """What ``SessionManager`` needs from a store. Every method may raise SessionStoreError."""

    #: True when ``get`` can often answer from this process's memory, so verify is worth
    #: trying in waitress's I/O thread (``server.serve.inline``); False when every read is a
    #: network round trip (Redis), which must never happen there.
    inline_reads: bool

    def get(self, session_id: str) -> Session | None:
        """The session stored under ``session_id`` and not past its TTL, or None."""
        ...

    def put(self, session: Session, ttl: float) -> None:
        """Store ``session`` (insert or replace) for ``ttl`` seconds."""
        ...

    def delete(self, session_id: str) -> bool:
        """Remove one session; True when this call removed it (so callers can act once)."""
        ...

    def delete_user(self, username: str) -> int:
        """Remove every session of ``username``; how many."""
        ...

    def touch(self, session_id: str, last_activity: float) -> None:
        """Move a stored session's ``last_activity`` forward; no-op when it is gone.

        Best effort: fails (SessionStoreError) rather than wait long for a lock held elsewhere.
        """
        ...

    def discard(self, session_id: str) -> None:
        """Remove a session the caller found dead; best effort, like ``touch`` (a failure
        leaves it to expire: it is refused on every read anyway)."""
        ...

    def check(self) -> None:
        """Raise SessionStoreError unless the store can be used now (``/api/health``)."""
        ...

    def sessions_of(self, username: str | None) -> list[Listed]:
        """The stored sessions of ``username`` (None: of every user) whose TTL has not ended,
        with their store keys; never their ids (records from a forged index entry, or that
        do not authenticate, are left out)."""
        ...

    def delete_listed(self, key: bytes, username: str) -> bool:
        """Remove the session of ``username`` stored under ``key`` (from ``sessions_of``);
        True when this call removed it. Every process stops using it, as after ``delete``."""
        ...

    def purge_expired(self, now: float) -> int:
        """Remove sessions whose TTL ended by ``now``; how many."""
        ...

    def close(self) -> None:
        """Release connections. Using the store afterwards raises SessionStoreError."""
        ...


# --------------------------------------------------------------------------- serialisation


def session_to_json(session: Session) -> str:
    """``session`` without its id, as a JSON object (for stores keyed by a hash of the id)."""
    return json.dumps(
        {
            "cookie_domain": session.cookie_domain,
            "username": session.username,
            "level": int(session.level),
            "created": session.created,
            "last_activity": session.last_activity,
            "auth_time": session.auth_time,
            "remember_me": session.remember_me,
            "user_stamp": session.user_stamp,
            "data": dict(session.data),
            "handle": session.handle,
            "ip": session.ip,
            "user_agent": session.user_agent,
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def session_from_json(session_id: str, text: str | bytes) -> Session:
    """The session stored as ``text`` (from ``session_to_json``) under ``session_id``.

    Raises:
        SessionStoreError: the record is not a valid session (corrupt or foreign data).
    """
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
            raise TypeError("not a session record")
        return _session(
            session_id,
            raw["cookie_domain"],
            raw["username"],
            raw["level"],
            raw["created"],
            raw["last_activity"],
            raw["auth_time"],
            raw["remember_me"],
            raw["user_stamp"],
            raw["data"],
            # absent from records written before SPEC §7.6: None (a handle comes at the next
            # write)
            raw.get("handle"),
            raw.get("ip"),
            raw.get("user_agent"),
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise SessionStoreError(f"corrupt session record: {exc}") from None


def _session(
    session_id: str,
    cookie_domain: object,
    username: object,
    level: object,
    created: object,
    last_activity: object,
    auth_time: object,
    remember_me: object,
    user_stamp: object,
    data: object,
    handle: object = None,
    ip: object = None,
    user_agent: object = None,
) -> Session:
    """Build a Session from untrusted stored values, checking every type."""
    number = (float, int)
    if not (
        type(cookie_domain) is str
        and (username is None or type(username) is str)
        and type(level) is int
        and type(created) in number
        and type(last_activity) in number
        and type(auth_time) in number
        and type(remember_me) in (bool, int)
        and type(user_stamp) is str
        and type(data) is dict
        and all(value is None or type(value) is str for value in (handle, ip, user_agent))
    ):
        raise TypeError("a session field has the wrong type")
    return Session(
        id=session_id,
        cookie_domain=cookie_domain,
        username=username,
        level=_LEVELS[level],
        created=float(created),  # type: ignore[arg-type]
        last_activity=float(last_activity),  # type: ignore[arg-type]
        auth_time=float(auth_time),  # type: ignore[arg-type]
        remember_me=bool(remember_me),
        user_stamp=user_stamp,
        data=data,
        handle=handle,  # type: ignore[arg-type]
        ip=ip,  # type: ignore[arg-type]
        user_agent=user_agent,  # type: ignore[arg-type]
    )


#: The key a session is stored under: SHA-256 of its id (the id itself is not kept).
hash_session_id = store_key


def touched(session: Session, last_activity: float) -> Session:
    """``session`` with ``last_activity`` moved, and a handle if its record predates them."""
    return replace(session, last_activity=last_activity, handle=session.handle or new_handle())


#: Key material for stores made without a key file (tests, tools): random per process, so
#: their records are refused by any other process and after a restart.
_EPHEMERAL_KEY = secrets.token_bytes(32)
_AAD = b"authctl session\x00"
_refused = Throttled(log)


class RecordSeal:
    """Seals session records so that only authctl, holding the key file, can make one.

    AES-256-GCM (``server.core.crypto.SecretBox``) under HKDF(key file, ``INFO_SESSIONS``), with
    the record's store key (SHA-256 of the id) as associated data: a record copied under
    another key, edited, or sealed with another key file does not open.
    """

    __slots__ = ("_box",)

    def __init__(self, material: bytes | None) -> None:
        """``material``: the storage key file's bytes; None: this process's random key."""
        self._box = SecretBox(_EPHEMERAL_KEY if material is None else material, info=INFO_SESSIONS)

    def seal(self, key: bytes, session: Session) -> bytes:
        """The sealed record of ``session`` stored under ``key``."""
        return self._box.seal(session_to_json(session).encode("utf-8"), _AAD + key)

    def open(self, key: bytes, session_id: str, sealed: bytes) -> Session | None:
        """The session sealed in ``sealed`` under ``key``; None (and a throttled warning)
        when it does not authenticate.

        Raises:
            SessionStoreError: it authenticates but is not a session (cannot happen unless
                this code wrote it wrong).
        """
        try:
            plain = self._box.open(sealed, _AAD + key)
        except ValueError:
            refused()
            return None
        return session_from_json(session_id, plain)


def refused() -> None:
    """Log (at most once a minute) that a stored record was refused as forged."""
    _refused.hit(
        logging.WARNING,
        "refused a session record that does not authenticate (copied under another id, "
        "edited, or sealed with another secrets/storage.key): possible tampering with the "
        "session store; the request is treated as signed out",
    )


# --------------------------------------------------------------------------- memory


class MemoryStore:
    """Sessions in a dict guarded by a lock: one process, lost on restart.

    Fine for a single worker and for tests; with ``serve --workers N`` or across restarts use
    SQLite or Redis.
    """

    inline_reads = True  # a dict; its lock refuses the I/O thread while a purge holds it

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._lock = blocking.Lock()
        self._sessions: dict[str, tuple[Session, float]] = {}
        self._by_user: dict[str, set[str]] = {}
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise SessionStoreError("the session store is closed")

    def get(self, session_id: str) -> Session | None:
        """The session under ``session_id`` if its TTL has not ended."""
        now = self._now()
        with self._lock:
            self._check_open()
            entry = self._sessions.get(session_id)
            if entry is None:
                return None
            if entry[1] <= now:
                self._remove(session_id)
                return None
            return entry[0]

    def put(self, session: Session, ttl: float) -> None:
        """Insert or replace ``session`` for ``ttl`` seconds."""
        expires = self._now() + ttl
        with self._lock:
            self._check_open()
            self._remove(session.id)
            self._sessions[session.id] = (session, expires)
            if session.username is not None:
                self._by_user.setdefault(session.username, set()).add(session.id)

    def delete(self, session_id: str) -> bool:
        """Remove one session; True when it was there."""
        with self._lock:
            self._check_open()
            return self._remove(session_id)

    def delete_user(self, username: str) -> int:
        """Remove every session of ``username``."""
        with self._lock:
            self._check_open()
            ids = list(self._by_user.get(username, ()))
            for session_id in ids:
                self._remove(session_id)
            return len(ids)

    def touch(self, session_id: str, last_activity: float) -> None:
        """Move ``last_activity`` forward (never back) if the session is still stored."""
        with self._lock:
            self._check_open()
            entry = self._sessions.get(session_id)
            if entry is not None and entry[0].last_activity < last_activity:
                session = touched(entry[0], last_activity)
                self._sessions[session_id] = (session, entry[1])

    def discard(self, session_id: str) -> None:
        """Remove a dead session."""
        self.delete(session_id)

    def sessions_of(self, username: str | None) -> list[Listed]:
        """The live sessions of ``username`` (None: every user's) with their store keys."""
        now = self._now()
        with self._lock:
            self._check_open()
            names = list(self._by_user) if username is None else [username]
            found = []
            for name in names:
                for session_id in self._by_user.get(name, ()):
                    session, expires = self._sessions[session_id]
                    if expires > now:
                        found.append(Listed(store_key(session_id), replace(session, id="")))
            return found

    def delete_listed(self, key: bytes, username: str) -> bool:
        """Remove the session of ``username`` stored under ``key``."""
        with self._lock:
            self._check_open()
            for session_id in list(self._by_user.get(username, ())):
                if store_key(session_id) == key:
                    return self._remove(session_id)
            return False

    def check(self) -> None:
        """Fails only once closed."""
        self._check_open()

    def purge_expired(self, now: float) -> int:
        """Remove sessions whose TTL ended by ``now``."""
        with self._lock:
            self._check_open()
            dead = [sid for sid, (_, expires) in self._sessions.items() if expires <= now]
            for session_id in dead:
                self._remove(session_id)
            return len(dead)

    def close(self) -> None:
        """Forget everything; later calls raise SessionStoreError."""
        with self._lock:
            self._closed = True
            self._sessions.clear()
            self._by_user.clear()

    def __len__(self) -> int:
        """How many sessions are held, expired ones included until purged."""
        return len(self._sessions)

    def _remove(self, session_id: str) -> bool:
        entry = self._sessions.pop(session_id, None)
        if entry is None:
            return False
        username = entry[0].username
        if username is not None:
            ids = self._by_user[username]
            ids.discard(session_id)
            if not ids:
                del self._by_user[username]
        return True


# --------------------------------------------------------------------------- sqlite


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring the schema to ``SCHEMA_VERSION``; refuse a newer one."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"schema version {version} is newer than this authctl ({SCHEMA_VERSION})"
        )
    for step in range(version, SCHEMA_VERSION):
        for statement in MIGRATIONS[step]:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def session_db_path(config: Config) -> Path:
    """Where the SQLite session store lives: beside the storage database, in a file of its own
    (``authctl.db`` -> ``authctl-sessions.db``), so each keeps its own schema version (the
    server, ``storage migrate``, ``session list`` and ``doctor`` all open this one file)."""
    db = config.storage.path
    return db.with_name(f"{db.stem}-sessions{db.suffix or '.db'}")


class SQLiteStore:
    """Sessions in a SQLite file shared by threads and worker processes; survives restarts.

    WAL mode (readers never block the writer), ``synchronous=NORMAL`` (a power cut may lose
    the last sessions, never corrupt the file), a busy timeout, and one connection per thread
    (waitress serves from a thread pool; a connection must not cross a ``fork``). A ``get`` is
    one indexed SELECT. Use a file of its own: the schema version lives in ``user_version``.
    ``key`` is the storage key file's material (records are sealed with a key derived from
    it); None seals with a key of this process only.

    Raises (from every method, and from the constructor):
        SessionStoreError: the file cannot be opened, has a newer schema, or SQLite failed.
    """

    inline_reads = True  # the per-process cache; a miss is WouldBlock (sqlite_util)

    def __init__(
        self,
        path: str | os.PathLike[str],
        now: Callable[[], float] = time.time,
        *,
        key: bytes | None = None,
    ) -> None:
        self.path = Path(path)
        self._now = now
        self._seal = RecordSeal(key)
        self._db = Connections(
            self.path, name="session store", error=SessionStoreError, busy_timeout=BUSY_TIMEOUT
        )
        self.outage = Outage("session store", log)
        self.write_outage = Outage("session store writes", log)
        # key -> (stamps when read, expires, monotonic time when read, session)
        self._cache: dict[bytes, tuple[bytes, float, float, Session]] = {}
        try:
            self._db.create_file()
            self._migrate()
            self._changes = ChangeTable(self.path.with_name(self.path.name + "-changes"))
        except (sqlite3.Error, OSError, ValueError) as exc:
            raise SessionStoreError(
                f"cannot open the session store {self.path}: {explain(exc, self.path)}",
                reason=reason(exc, self.path),
            ) from exc

    def _migrate(self) -> None:
        self._db.set_up(_upgrade)

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (a new one after ``fork``: they must not be shared)."""
        return self._db.get()

    def _failed(self, doing: str, exc: Exception, outage: Outage) -> SessionStoreError:
        """``exc`` as the SessionStoreError to raise, counted in ``outage``'s log."""
        error = SessionStoreError(
            f"cannot {doing}: {explain(exc, self.path)}", reason=reason(exc, self.path)
        )
        outage.failed(error)
        return error

    def get(self, session_id: str) -> Session | None:
        """The session under ``session_id`` if its TTL has not ended.

        One indexed SELECT, or none when this process read the session less than
        ``CACHE_MAX_AGE`` ago and no process has written it since (see the module docstring).
        A record that does not authenticate is no session (and is not cached).
        """
        if self._db.closed:
            raise SessionStoreError("the session store is closed")
        key = hash_session_id(session_id)
        changes = self._changes
        try:
            stamp = changes.stamp(changes.slot(key))
        except ValueError as exc:  # unmapped by close() in another thread
            raise SessionStoreError("the session store is closed") from exc
        now = self._now()
        read_at = time.monotonic()
        cached = self._cache.get(key)
        if (
            cached is not None
            and cached[0] == stamp
            and cached[1] > now
            and read_at - cached[2] < CACHE_MAX_AGE
            and cached[3].id == session_id
        ):
            return cached[3]
        conn = self._conn()  # WouldBlock in the I/O thread, before anything is read
        try:
            row = conn.execute(_GET, (key, now)).fetchone()
        except sqlite3.Error as exc:
            raise self._failed("read a session", exc, self.outage) from exc
        self.outage.ok()
        if row is None:
            self._cache.pop(key, None)
            return None
        username, record, expires = row
        session = self._seal.open(key, session_id, bytes(record))
        if session is None or session.username != username:
            if session is not None:
                refused()  # the clear user name was edited: delete_user would miss it
            self._cache.pop(key, None)
            return None
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = (stamp, float(expires), read_at, session)
        return session

    def put(self, session: Session, ttl: float) -> None:
        """Insert or replace ``session`` for ``ttl`` seconds."""
        key = hash_session_id(session.id)
        values = (key, session.username, self._now() + ttl, self._seal.seal(key, session))
        self._write(_PUT, values, ChangeTable.slot(key))

    def delete(self, session_id: str) -> bool:
        """Remove one session; True when this call removed it."""
        key = hash_session_id(session_id)
        return self._write("DELETE FROM sessions WHERE key = ?", (key,), ChangeTable.slot(key)) > 0

    def discard(self, session_id: str) -> None:
        """Remove a dead session, waiting at most ``QUICK_BUSY_TIMEOUT`` for the lock."""
        key = hash_session_id(session_id)
        with self._quick(ChangeTable.slot(key)) as conn:
            conn.execute("DELETE FROM sessions WHERE key = ?", (key,))

    def delete_user(self, username: str) -> int:
        """Remove every session of ``username``."""
        return self._write("DELETE FROM sessions WHERE username = ?", (username,), 0)

    def touch(self, session_id: str, last_activity: float) -> None:
        """Move ``last_activity`` forward (never back) if the session is still stored.

        Opens and re-seals the record in one write transaction, waiting at most
        ``QUICK_BUSY_TIMEOUT`` for a lock held elsewhere.
        """
        key = hash_session_id(session_id)
        with self._quick(ChangeTable.slot(key)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(
                "SELECT username, record FROM sessions WHERE key = ?", (key,)
            ).fetchone()
            session = None if row is None else self._seal.open(key, session_id, bytes(row[1]))
            if session is not None and session.last_activity < last_activity:
                conn.execute(
                    "UPDATE sessions SET record = ? WHERE key = ?",
                    (self._seal.seal(key, touched(session, last_activity)), key),
                )
            conn.execute("COMMIT")

    def sessions_of(self, username: str | None) -> list[Listed]:
        """The live sessions of ``username`` (None: every signed-in user's), one indexed
        SELECT; a record that does not authenticate, or names another user than its row,
        is left out."""
        if username is None:
            sql = (
                "SELECT key, username, record FROM sessions "
                "WHERE expires > ? AND username IS NOT NULL"
            )
            params: tuple[object, ...] = (self._now(),)
        else:
            sql = "SELECT key, username, record FROM sessions WHERE username = ? AND expires > ?"
            params = (username, self._now())
        try:
            rows = self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._failed("read the sessions", exc, self.outage) from exc
        self.outage.ok()
        found = []
        for key, name, record in rows:
            session = self._seal.open(bytes(key), "", bytes(record))
            if session is not None and session.username == name:
                found.append(Listed(bytes(key), session))
        return found

    def delete_listed(self, key: bytes, username: str) -> bool:
        """Remove the session of ``username`` stored under ``key``; True when removed."""
        sql = "DELETE FROM sessions WHERE key = ? AND username = ?"
        return self._write(sql, (key, username), ChangeTable.slot(key)) > 0

    def live_records(self, now: float) -> list[tuple[bytes, str | None, float, bytes]]:
        """Every session whose TTL has not ended by ``now``, as stored: ``(key, username,
        expires, sealed record)``, still sealed (for ``authctl storage migrate``, which moves
        them to Redis under the same key file, so nobody is signed out)."""
        try:
            rows = (
                self._conn()
                .execute(
                    "SELECT key, username, expires, record FROM sessions WHERE expires > ? "
                    "ORDER BY key",
                    (now,),
                )
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise self._failed("read the sessions", exc, self.outage) from exc
        return [(bytes(k), user, float(exp), bytes(rec)) for k, user, exp, rec in rows]

    def purge_expired(self, now: float) -> int:
        """Remove sessions whose TTL ended by ``now`` (uses the ``expires`` index)."""
        return self._write("DELETE FROM sessions WHERE expires <= ?", (now,), 0)

    def check(self) -> None:
        """Raise SessionStoreError unless a read works, the disk has room and the write lock
        can be taken at once (a probe, never a remembered failure: a host taken out of a
        load balancer must be seen healthy again without traffic)."""
        self._db.check()
        try:
            with self._quick(None) as conn:
                conn.execute("BEGIN IMMEDIATE")
        except SessionStoreError as exc:
            raise SessionStoreError(f"writes fail: {exc}", reason=exc.reason) from exc

    def close(self) -> None:
        """Close every thread's connection; later calls raise SessionStoreError."""
        self._cache.clear()
        self._db.close()

    def _write(self, sql: str, params: tuple[object, ...], slot: int) -> int:
        """Run one write, then stamp ``slot`` as changed (after the commit, even on error:
        a failed statement may still have changed something)."""
        conn = self._conn()  # raises before anything was written (closed, WouldBlock)
        try:
            count = conn.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise self._failed("write a session", exc, self.write_outage) from exc
        finally:
            self._stamp(slot)
        self.write_outage.ok()
        return count

    def _stamp(self, slot: int) -> None:
        """Mark ``slot`` changed. If the table cannot be written, other processes may use
        their cached copy for up to ``CACHE_MAX_AGE``; this one forgets its own."""
        if self._db.closed:
            return
        try:
            self._changes.changed(slot)
        except OSError as exc:
            self._cache.clear()
            self.write_outage.failed(
                SessionStoreError(
                    f"cannot write {self._changes.path}: {exc}", reason=reason(exc, self.path)
                )
            )

    @contextlib.contextmanager
    def _quick(self, slot: int | None) -> t.Iterator[sqlite3.Connection]:
        """This thread's connection with a short busy timeout, for best-effort writes; a
        transaction left open is rolled back, then ``slot`` is stamped (None: nothing was
        written, no stamp, so no process's cache is emptied). A failure is the
        caller's to report (``SessionManager`` logs skipped activity writes, throttled)."""
        conn = self._conn()
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(QUICK_BUSY_TIMEOUT * 1000)}")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        except sqlite3.Error as exc:
            raise SessionStoreError(
                f"cannot update a session: {explain(exc, self.path)}", reason=reason(exc, self.path)
            ) from exc
        finally:
            if slot is not None:
                self._stamp(slot)
