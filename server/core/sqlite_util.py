"""Small SQLite helpers shared by the session store and the storage database."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import sqlite3
import struct
import threading
import time
import typing as t
import weakref
from pathlib import Path

from server.core.blocking import check as check_blocking
from server.core.errors import StoreUnavailable
from server.core.storage_schema import SQLITE
from server.core.storage_schema import Table
from server.core.storage_schema import Tx


def reason(exc: BaseException, path: Path | None = None) -> str:
    """A short cause of a SQLite or OS failure, safe to show to anyone (``/api/health``).

    SQLite reports a full disk as SQLITE_FULL, or as a plain "disk I/O error" when its
    shared-memory file cannot grow; with ``path``, a file system with (almost) no room left
    makes any failure "disk full".
    """
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or getattr(exc, "errno", None) == errno.ENOSPC:
        return "disk full"
    if path is not None:
        with contextlib.suppress(OSError):
            if free_bytes(path.parent) < MIN_FREE_BYTES:
                return "disk full"
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc):
        return "database locked"
    if code == sqlite3.SQLITE_READONLY or getattr(exc, "errno", None) == errno.EROFS:
        return "read-only"
    return "database error"


def explain(exc: BaseException, path: Path) -> str:
    """``exc`` as a message for an operator: SQLite's words, and what to do when the disk
    is full (SQLite says "database or disk is full", or only "disk I/O error")."""
    text = str(exc)
    if reason(exc, path) == "disk full":
        text += f" (the disk is full: free space on the file system holding {path.parent})"
    return text


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer can still use on the file system holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


#: Free space below which a database's file system counts as full.
MIN_FREE_BYTES = 64 * 1024


def enable_wal(conn: sqlite3.Connection, timeout: float) -> str:
    """Switch ``conn``'s database to WAL and return the journal mode now in force.

    Changing the journal mode needs an exclusive lock, and SQLite may answer "database is
    locked" at once, without calling its busy handler, when several processes open a new
    file together; so retry for up to ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


#: How many times this process is removed from its ancestor by ``fork`` (cheaper than getpid).
_forks = 0


def _after_fork_in_child() -> None:  # pragma: no cover - runs in forked children only
    global _forks  # one counter for the whole process, by design
    _forks += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Connection(sqlite3.Connection):
    """A connection that can be weakly referenced, so ``close()`` can reach every thread's."""


class Connections:
    """One SQLite connection per thread (and a new one after ``fork``), all closable at once.

    waitress serves from a thread pool and ``serve --workers`` forks: a connection must not
    cross either. Connections are in autocommit mode (transactions are explicit), with
    ``synchronous=NORMAL`` and a busy timeout. ``error`` is the exception the owner raises, so
    a store failure reaches the web layer as that owner's error (fail closed).
    """

    def __init__(
        self, path: Path, *, name: str, error: type[StoreUnavailable], busy_timeout: float
    ) -> None:
        self.path = path
        self.name = name
        self.error = error
        self.busy_timeout = busy_timeout
        self.closed = False
        self._local = threading.local()
        self._all: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._lock = threading.Lock()

    def create_file(self) -> None:
        """Create the folder (0700) and the file (0600) before SQLite does, with tight modes."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)

    def open(self) -> sqlite3.Connection:
        """A new connection (for one-off work such as migrations; the caller closes it)."""
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,  # autocommit: each statement is its own transaction
            check_same_thread=False,  # only so that close() can close it from another thread
            factory=_Connection,
        )
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def set_up(self, apply: t.Callable[[sqlite3.Connection], None]) -> None:
        """Switch the file to WAL, then run ``apply`` (schema migrations, checks) in one
        ``BEGIN IMMEDIATE`` transaction: one process migrates, the others wait, then see it.

        Raises:
            sqlite3.Error: WAL is unavailable (e.g. a network file system without shared
                memory: refused rather than run with journals that block readers), or
                ``apply`` failed; nothing it did is kept.
        """
        conn = self.open()
        try:
            if enable_wal(conn, self.busy_timeout) != "wal":  # pragma: no cover
                raise sqlite3.OperationalError("cannot switch the database to WAL mode")
            conn.execute("BEGIN IMMEDIATE")
            try:
                apply(conn)
                conn.execute("COMMIT")
            except BaseException:
                # SQLite has already rolled back after some errors (SQLITE_FULL): a failing
                # ROLLBACK must not hide the error that matters
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    def check(self) -> None:
        """Raise ``error`` unless the database answers a trivial read now and its file
        system has room for writes (for ``/api/health``)."""
        try:
            self.get().execute("SELECT count(*) FROM sqlite_master").fetchone()
            full = free_bytes(self.path) < MIN_FREE_BYTES
        except (sqlite3.Error, OSError) as exc:
            raise self.error(
                f"the {self.name} failed: {exc}", reason=reason(exc, self.path)
            ) from exc
        if full:
            raise self.error(f"the disk holding {self.path} is full", reason="disk full")

    def get(self) -> sqlite3.Connection:
        """This thread's connection (``WouldBlock`` in the I/O thread: SQLite may wait)."""
        check_blocking()
        local = self._local
        conn: _Connection | None = getattr(local, "conn", None)
        if conn is not None and local.forks == _forks and not self.closed:
            return conn
        with self._lock:
            if self.closed:
                raise self.error(f"the {self.name} is closed", reason="closed")
            try:
                conn = t.cast("_Connection", self.open())
            except sqlite3.Error as exc:
                raise self.error(
                    f"cannot open the {self.name}: {explain(exc, self.path)}",
                    reason=reason(exc, self.path),
                ) from exc
            self._all.add(conn)
        local.conn, local.forks = conn, _forks
        return conn

    def close(self) -> None:
        """Close every thread's connection; later ``get`` calls raise ``error``."""
        with self._lock:
            self.closed = True
            connections = list(self._all)
            self._all.clear()
        for conn in connections:
            conn.close()


def _lock_offset(name: str) -> int:
    """The byte of the lock file that stands for ``name`` (distinct names rarely share one)."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2  # below 2**62: a valid off_t


def _ofd_lock(fd: int, offset: int, kind: int) -> None:
    """Take (or with ``F_UNLCK`` drop) an open-file-description lock on one byte, or raise
    ``BlockingIOError`` at once. Unlike ``lockf`` it belongs to the open file, so two threads
    of one process exclude each other too; unlike ``flock`` one file holds many names."""
    # struct flock: l_type, l_whence (short), l_start, l_len (off_t), l_pid (int, 0 for OFD)
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi", kind, os.SEEK_SET, offset, 1, 0))


@contextlib.contextmanager
def file_lock(
    path: Path, name: str, *, timeout: float, error: type[StoreUnavailable]
) -> t.Iterator[None]:
    """Hold the lock ``name`` in the lock file ``path`` (created 0600) for the block, across
    threads and processes; wait at most ``timeout`` seconds, then raise ``error``.

    The lock goes with the file descriptor: a crashed holder never leaves it taken.
    """
    check_blocking()
    offset = _lock_offset(name)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise error(f"cannot open the lock file {path}: {exc}", reason=reason(exc)) from exc
    try:
        deadline = time.monotonic() + timeout
        pause = 0.001
        while True:
            try:
                _ofd_lock(fd, offset, fcntl.F_WRLCK)
                break
            except (BlockingIOError, PermissionError):
                if time.monotonic() >= deadline:
                    raise error(
                        f"timed out after {timeout:g} s waiting for the lock {name!r} in {path}",
                        reason="lock timeout",
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.02)
        try:
            yield
        finally:
            _ofd_lock(fd, offset, fcntl.F_UNLCK)
    finally:
        os.close(fd)


class SQLiteDatabase:
    """The storage's SQLite engine (:class:`server.core.storage_schema.Database`): one file
    in WAL mode, a connection per thread, ``BEGIN IMMEDIATE`` write transactions, the schema
    version in ``PRAGMA user_version`` and authctl's ``PRAGMA application_id``."""

    dialect = SQLITE

    def __init__(
        self,
        path: Path,
        *,
        name: str,
        error: type[StoreUnavailable],
        busy_timeout: float,
        application_id: int,
    ) -> None:
        self.path = path
        self.error = error
        self.application_id = application_id
        self.busy_timeout = busy_timeout
        self.connections = Connections(path, name=name, error=error, busy_timeout=busy_timeout)
        self._writer = threading.RLock()
        self._writer_pid = os.getpid()

    def _failed(self, exc: BaseException) -> StoreUnavailable:
        return self.error(
            f"storage failed: {explain(exc, self.path)}", reason=reason(exc, self.path)
        )

    @contextlib.contextmanager
    def _one_writer(self) -> t.Iterator[None]:
        """Let one thread of this process write at a time.

        Why: SQLite's busy handler makes a second writer of the same process sleep in steps of
        1, 2, 5, 10… ms, so under a few concurrent sign-ins the p99 of a write reached 25 to 50 ms
        while the write itself takes 0.05 ms; queueing on a lock wakes the next writer at once
        (a passkey sign-in's p99 went from 193 to 48 ms). Other processes still meet SQLite's
        own lock. Reentrant, so a write inside a transaction of the same thread goes on; a new
        lock after ``fork`` (one held by a thread that does not exist in the child would never
        be released); waits at most the busy timeout, then fails like a locked database.
        """
        if self._writer_pid != os.getpid():
            self._writer = threading.RLock()
            self._writer_pid = os.getpid()
        check_blocking()
        if not self._writer.acquire(timeout=self.busy_timeout):
            raise self.error(
                f"storage failed: database is locked ({self.path})", reason="database locked"
            )
        try:
            yield
        finally:
            self._writer.release()

    @contextlib.contextmanager
    def transaction(self) -> t.Iterator[sqlite3.Connection]:
        """A write transaction taken at once (``BEGIN IMMEDIATE``): no check-then-act races."""
        with self._one_writer():
            try:
                conn = self.connections.get()
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):  # a broken connection cannot roll back
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._failed(exc) from exc
                raise

    def read(self, sql: str, params: t.Sequence[t.Any]) -> list[t.Any]:
        try:
            return self.connections.get().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    def write(self, sql: str, params: t.Sequence[t.Any]) -> int:
        with self._one_writer():
            try:
                return self.connections.get().execute(sql, params).rowcount
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc

    def set_up(self, apply: t.Callable[[Tx], None]) -> None:
        """Create the file (0600, folder 0700), then migrate as :meth:`Connections.set_up`."""
        try:
            self.connections.create_file()
            self.connections.set_up(apply)
        except (sqlite3.Error, OSError) as exc:
            raise self.error(
                f"cannot open the storage database {self.path}: {explain(exc, self.path)}",
                reason=reason(exc, self.path),
            ) from exc

    def read_version(self, tx: Tx) -> int:
        version = int(tx.execute("PRAGMA user_version").fetchone()[0])
        app_id = tx.execute("PRAGMA application_id").fetchone()[0]
        if version == 0:
            tables = tx.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables or app_id not in (0, self.application_id):
                raise self.error(
                    f"{self.path} is not an authctl storage database (it holds other tables); "
                    "point [storage] path at a file of its own"
                )
        elif app_id != self.application_id:
            raise self.error(
                f"{self.path} is not an authctl storage database (application id {app_id:#x}); "
                "point [storage] path at a file of its own"
            )
        return version

    def write_version(self, tx: Tx, version: int) -> None:
        tx.execute(f"PRAGMA application_id = {int(self.application_id)}")
        tx.execute(f"PRAGMA user_version = {int(version)}")

    def version(self) -> int:
        return int(self.read("PRAGMA user_version", ())[0][0])

    def lock_keys(self, tx: Tx, keys: t.Iterable[str]) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` already excludes every other writer."""

    def exclusive(self, name: str, timeout: float) -> t.ContextManager[None]:
        """A byte of ``<path>.lock`` (0600) next to the database, for ``name``."""
        return file_lock(
            self.path.with_name(self.path.name + ".lock"), name, timeout=timeout, error=self.error
        )

    def after_copy(self, tx: Tx, table: Table) -> None:
        """Nothing to do: an ``INTEGER PRIMARY KEY`` continues after the largest id."""

    def check(self) -> None:
        self.connections.check()

    def close(self) -> None:
        self.connections.close()

    def describe(self) -> str:
        return str(self.path)
