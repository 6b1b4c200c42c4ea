"""Where sessions live: the ``SessionStore`` protocol, an in-memory store and a SQLite store.

The protocol is deliberately small (get, put with a TTL, delete, delete a user's sessions,
touch, purge, close) so that a Redis store fits it later. ``MemoryStore`` serves one process
and forgets everything on restart. ``SQLiteStore`` is the default: it is shared by worker
processes on one file and survives restarts (security.md §3 R4).

Security choices, each against a named risk:

- The SQLite store keys rows by SHA-256 of the session id and never stores the id itself, so
  a leaked database file (or backup) does not hand out live cookies.
- Every store failure is raised as ``SessionStoreError``; the web layer answers "log in",
  never "allow" (fail closed; oauth2-proxy #3093 tells "no such session" from "store error").
- The database is created mode 0600 in a folder created mode 0700.
- ``SQLiteStore.get`` is the hot path of every verify. It keeps the sessions it read in a
  per-process cache, and trusts an entry only while a shared table of random stamps
  (``<db>-changes``, memory-mapped by every process that opens the file) shows that no
  process has written that session since the entry was read: every write stores a fresh
  random stamp in the session's slot after its statement committed, and a reader takes the
  stamp before it queries. So a logout, a disable or a new factor in any worker is seen by the
  next verify in every worker, exactly as without the cache; an entry is also never trusted
  for more than ``CACHE_MAX_AGE`` seconds, which bounds a writer killed between its commit
  and its stamp.

Pure core: standard library only (no webob, waitress, click or rich).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import sqlite3
import time
import typing as t
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from server import blocking
from server.errors import AuthError
from server.sessions import Level
from server.sessions import Session
from server.sqlite_util import Connections

#: Version of the SQLite schema, kept in ``PRAGMA user_version``.
SCHEMA_VERSION = 1
_LEVELS = {int(level): level for level in Level}
#: Seconds a connection waits for another writer (another thread or worker) before failing.
BUSY_TIMEOUT = 5.0

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
)

_COLUMNS = (
    "cookie_domain, username, level, created, last_activity, auth_time, remember_me, "
    "user_stamp, data"
)
_GET = f"SELECT {_COLUMNS}, expires FROM sessions WHERE key = ? AND expires > ?"  # noqa: S608
_PUT = (
    f"INSERT OR REPLACE INTO sessions ({_COLUMNS}, expires, key) "  # noqa: S608
    f"VALUES ({', '.join('?' * 11)})"
)


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
        size = (CHANGE_SLOTS + 1) * _STAMP
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)  # zeros; a second process doing this changes nothing
            self._map = mmap.mmap(fd, size)  # MAP_SHARED: one table for all processes
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
        """Record a change in ``slot`` (0: maybe every session)."""
        self._map[slot * _STAMP : (slot + 1) * _STAMP] = os.urandom(_STAMP)

    def close(self) -> None:
        """Unmap the table."""
        self._map.close()


class SessionStoreError(AuthError):
    """The session store failed (unreadable, locked, corrupt, closed).

    Never means "no session" and never means "allow": the web layer answers as for an
    anonymous request (log in) and logs the cause.
    """


@t.runtime_checkable
class SessionStore(t.Protocol):
    """What ``SessionManager`` needs from a store. Every method may raise SessionStoreError."""

    #: True when ``get`` can often answer from this process's memory, so verify is worth
    #: trying in waitress's I/O thread (``server.inline``); False when every read is a
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
        """Move a stored session's ``last_activity`` forward; no-op when it is gone."""
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
    )


def hash_session_id(session_id: str) -> bytes:
    """The key a session is stored under: SHA-256 of its id (the id itself is not kept)."""
    return hashlib.sha256(session_id.encode("utf-8")).digest()


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
                session = replace(entry[0], last_activity=last_activity)
                self._sessions[session_id] = (session, entry[1])

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


class SQLiteStore:
    """Sessions in a SQLite file shared by threads and worker processes; survives restarts.

    WAL mode (readers never block the writer), ``synchronous=NORMAL`` (a power cut may lose
    the last sessions, never corrupt the file), a busy timeout, and one connection per thread
    (waitress serves from a thread pool; a connection must not cross a ``fork``). A ``get`` is
    one indexed SELECT. Use a file of its own: the schema version lives in ``user_version``.

    Raises (from every method, and from the constructor):
        SessionStoreError: the file cannot be opened, has a newer schema, or SQLite failed.
    """

    inline_reads = True  # the per-process cache; a miss is WouldBlock (sqlite_util)

    def __init__(self, path: str | os.PathLike[str], now: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._now = now
        self._db = Connections(
            self.path, name="session store", error=SessionStoreError, busy_timeout=BUSY_TIMEOUT
        )
        # key -> (stamps when read, expires, monotonic time when read, session)
        self._cache: dict[bytes, tuple[bytes, float, float, Session]] = {}
        try:
            self._db.create_file()
            self._migrate()
            self._changes = ChangeTable(self.path.with_name(self.path.name + "-changes"))
        except (sqlite3.Error, OSError, ValueError) as exc:
            raise SessionStoreError(f"cannot open the session store {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        self._db.set_up(_upgrade)

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (a new one after ``fork``: they must not be shared)."""
        return self._db.get()

    def get(self, session_id: str) -> Session | None:
        """The session under ``session_id`` if its TTL has not ended.

        One indexed SELECT, or none when this process read the session less than
        ``CACHE_MAX_AGE`` ago and no process has written it since (see the module docstring).
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
        try:
            row = self._conn().execute(_GET, (key, now)).fetchone()
            if row is None:
                self._cache.pop(key, None)
                return None
            domain, username, level, created, last, auth_time, remember, user, data, expires = row
            session = _session(
                session_id,
                domain,
                username,
                level,
                created,
                last,
                auth_time,
                remember,
                user,
                {} if data is None else json.loads(data),
            )
        except (sqlite3.Error, ValueError, TypeError, KeyError) as exc:
            raise SessionStoreError(f"cannot read a session: {exc}") from exc
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = (stamp, float(expires), read_at, session)
        return session

    def put(self, session: Session, ttl: float) -> None:
        """Insert or replace ``session`` for ``ttl`` seconds."""
        data = json.dumps(dict(session.data), separators=(",", ":")) if session.data else None
        values = (
            session.cookie_domain,
            session.username,
            int(session.level),
            session.created,
            session.last_activity,
            session.auth_time,
            int(session.remember_me),
            session.user_stamp,
            data,
            self._now() + ttl,
            key := hash_session_id(session.id),
        )
        self._write(_PUT, values, ChangeTable.slot(key))

    def delete(self, session_id: str) -> bool:
        """Remove one session; True when this call removed it."""
        key = hash_session_id(session_id)
        return self._write("DELETE FROM sessions WHERE key = ?", (key,), ChangeTable.slot(key)) > 0

    def delete_user(self, username: str) -> int:
        """Remove every session of ``username``."""
        return self._write("DELETE FROM sessions WHERE username = ?", (username,), 0)

    def touch(self, session_id: str, last_activity: float) -> None:
        """Move ``last_activity`` forward (never back) if the session is still stored."""
        key = hash_session_id(session_id)
        self._write(
            "UPDATE sessions SET last_activity = ? WHERE key = ? AND last_activity < ?",
            (last_activity, key, last_activity),
            ChangeTable.slot(key),
        )

    def purge_expired(self, now: float) -> int:
        """Remove sessions whose TTL ended by ``now`` (uses the ``expires`` index)."""
        return self._write("DELETE FROM sessions WHERE expires <= ?", (now,), 0)

    def close(self) -> None:
        """Close every thread's connection; later calls raise SessionStoreError."""
        self._cache.clear()
        self._db.close()

    def _write(self, sql: str, params: tuple[object, ...], slot: int) -> int:
        """Run one write, then stamp ``slot`` as changed (after the commit, even on error:
        a failed statement may still have changed something)."""
        conn = self._conn()  # raises before anything was written (closed, WouldBlock)
        try:
            return conn.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise SessionStoreError(f"cannot write a session: {exc}") from exc
        finally:
            if not self._db.closed:
                self._changes.changed(slot)
