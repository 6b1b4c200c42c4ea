"""The storage's PostgreSQL engine: psycopg 3 and a psycopg_pool connection pool.

psycopg 3 is the maintained PostgreSQL driver for Python (libpq underneath, so libpq's
multi-host DSNs and ``target_session_attrs=read-write`` work as written) and psycopg_pool its
pool. What this module adds:

- **Bounded waits**: ``connect_timeout``, a ``statement_timeout`` on every connection and a
  bounded wait for a pooled connection, all from ``[storage.postgres] timeout``; every failure
  (server down, timeout, failover in progress, wrong password) is raised as the storage's
  error, so callers fail closed.
- **Recovery without a restart**: each connection is checked as it leaves the pool (a broken
  one is dropped and the next tried at once), and the pool keeps reconnecting while the
  server is away, so the first request after the server is back works.
- **The password stays secret**: read from ``password_file`` and passed to libpq as a
  connection parameter, never put into a DSN string, and scrubbed from every message.
- **Cross-host locks**: migrations under ``pg_advisory_xact_lock``; :meth:`lock_keys` and
  :meth:`exclusive` on advisory locks too.
- **fork**: a worker forked from a process that used the pool gets a pool of its own (the
  parent's connections are never touched by the child).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import typing as t
from pathlib import Path

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool
from psycopg_pool import PoolTimeout

from server.core.blocking import check as check_blocking
from server.core.errors import StoreUnavailable
from server.core.storage_schema import POSTGRES
from server.core.storage_schema import Table
from server.core.storage_schema import Tx

if t.TYPE_CHECKING:
    from server.core.config import PostgresConfig

log = logging.getLogger("server.storage")

#: Seconds the pool keeps retrying one failed connection attempt (with backoff) before it
#: gives up and lets the next request start a fresh one: a bound on how long after the
#: server comes back the first request may still fail.
RECONNECT_TIMEOUT = 2.0
#: Prefix of every advisory lock name before it is hashed: authctl's namespace.
LOCK_NAMESPACE = "authctl:"
#: Advisory lock held while migrating.
MIGRATION_LOCK = "migrate"


def lock_id(name: str) -> int:
    """A signed 64-bit advisory lock key for ``name`` (distinct names rarely collide, and a
    collision only makes two names wait for each other)."""
    digest = hashlib.blake2b((LOCK_NAMESPACE + name).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def read_password(path: Path) -> str:
    """The password in ``path`` without its line ending (ValueError naming the file, never
    showing its content)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the PostgreSQL password file {path}: {exc}") from None
    password = text.rstrip("\r\n")
    if not password:
        raise ValueError(f"the PostgreSQL password file {path} is empty; write the password")
    return password


def describe_dsn(dsn: str) -> str:
    """``postgresql://user@host:port,host:port/dbname``: who and where, no password, no
    other parameters."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "postgresql (invalid dsn)"
    hosts = str(params.get("host") or params.get("hostaddr") or "localhost").split(",")
    ports = str(params.get("port") or "").split(",")
    where = ",".join(
        host + (f":{ports[min(i, len(ports) - 1)]}" if ports != [""] else "")
        for i, host in enumerate(hosts)
    )
    user = f"{params['user']}@" if params.get("user") else ""
    return f"postgresql://{user}{where}/{params.get('dbname') or ''}"


def _reason(exc: BaseException) -> str:
    """A short cause safe to show to anyone (``/api/health``)."""
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return "timeout"
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return "read-only"
    # libpq reports a refused login at connect time as a plain OperationalError
    if isinstance(exc, psycopg.errors.InvalidPassword) or "authentication failed" in str(exc):
        return "authentication failed"
    if isinstance(exc, PoolTimeout | psycopg.OperationalError):
        return "database unavailable"
    return "database error"


class _Tx:
    """A connection in a transaction taking SQL with ``?`` placeholders (as SQLite does)."""

    __slots__ = ("conn",)

    def __init__(self, conn: psycopg.Connection[t.Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: t.Sequence[t.Any] = (), /) -> psycopg.Cursor[t.Any]:
        # the storage's SQL is fixed text (table names from its own schema, never input)
        query: t.LiteralString = sql.replace("?", "%s")
        return self.conn.execute(query, params)


class PostgresDatabase:
    """The storage on PostgreSQL (:class:`server.core.storage_schema.Database`).

    Connections are in autocommit mode: a read is one statement, a write transaction is an
    explicit ``BEGIN``/``COMMIT`` at READ COMMITTED, made atomic by single statements
    (``INSERT … ON CONFLICT … DO UPDATE … WHERE``), row locks (``SELECT … FOR UPDATE``) and
    advisory locks.
    """

    dialect = POSTGRES

    def __init__(self, config: PostgresConfig, *, error: type[StoreUnavailable]) -> None:
        self.config = config
        self.error = error
        self.timeout = float(config.timeout)
        self._password = ""
        if config.password_file is not None:
            try:
                self._password = read_password(Path(config.password_file))
            except ValueError as exc:
                raise error(str(exc), reason="configuration") from None
        self._lock = threading.Lock()
        self._pool: ConnectionPool[psycopg.Connection[t.Any]] | None = None
        self._pid = 0
        self.closed = False

    # ------------------------------------------------------------------ connections

    def _kwargs(self) -> dict[str, t.Any]:
        kwargs: dict[str, t.Any] = {
            "autocommit": True,
            "connect_timeout": max(1, round(self.timeout)),
            "application_name": "authctl",
        }
        if self._password:
            kwargs["password"] = self._password
        return kwargs

    def _configure(self, conn: psycopg.Connection[t.Any]) -> None:
        """Bound every statement (and lock wait) of a new connection by ``timeout``."""
        milliseconds = str(max(1, round(self.timeout * 1000)))
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (milliseconds,))

    def _reconnect_failed(self, pool: ConnectionPool[t.Any]) -> None:
        log.warning(
            "storage: cannot reach PostgreSQL at %s; retrying on the next request",
            self.describe(),
        )

    def _get_pool(self) -> ConnectionPool[psycopg.Connection[t.Any]]:
        pid = os.getpid()
        pool = self._pool
        if pool is not None and self._pid == pid and not self.closed:
            return pool
        with self._lock:
            if self.closed:
                raise self.error("the storage database is closed", reason="closed")
            if self._pool is None or self._pid != pid:
                # after fork the parent's pool (its threads, its sockets) is not ours: leave
                # it alone (psycopg never closes a connection opened by another process)
                self._pool = ConnectionPool(
                    self.config.dsn,
                    kwargs=self._kwargs(),
                    min_size=1,
                    # exclusive() keeps one for its block, whose work needs another
                    max_size=max(2, self.config.pool_size),
                    timeout=self.timeout,
                    reconnect_timeout=RECONNECT_TIMEOUT,
                    reconnect_failed=self._reconnect_failed,
                    configure=self._configure,
                    name="authctl-storage",
                    open=False,
                )
                self._pool.open(wait=False)
                self._pid = pid
            return self._pool

    @contextlib.contextmanager
    def _connection(
        self, what: str = "cannot connect to PostgreSQL"
    ) -> t.Iterator[psycopg.Connection[t.Any]]:
        """A working connection from the pool, back to it after the block.

        Each is checked with an empty query first; a broken one (the server restarted) is
        dropped and the next tried at once, within the one ``timeout``.
        """
        check_blocking()
        pool = self._get_pool()
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                conn = pool.getconn(timeout=max(0.01, deadline - time.monotonic()))
            except (PoolTimeout, psycopg.Error) as exc:
                raise self._failed(exc, what) from None
            try:
                conn.execute("")
            except psycopg.Error:
                pool.putconn(conn)  # broken: the pool drops it and connects anew
                if time.monotonic() >= deadline:
                    raise self.error(
                        f"{what} ({self.describe()}): every connection was lost",
                        reason="database unavailable",
                    ) from None
                continue
            break
        try:
            yield conn
        finally:
            pool.putconn(conn)

    def _failed(self, exc: BaseException, what: str = "storage failed") -> StoreUnavailable:
        """``exc`` as the storage's error, the password scrubbed from its text."""
        text = str(exc) or type(exc).__name__
        if self._password:
            text = text.replace(self._password, "***")
        return self.error(f"{what} ({self.describe()}): {text}", reason=_reason(exc))

    # ------------------------------------------------------------------ Database

    @contextlib.contextmanager
    def transaction(self) -> t.Iterator[_Tx]:
        try:
            with self._connection() as conn, conn.transaction():
                yield _Tx(conn)
        except psycopg.Error as exc:
            raise self._failed(exc) from None

    def read(self, sql: str, params: t.Sequence[t.Any]) -> list[t.Any]:
        try:
            with self._connection() as conn:
                return _Tx(conn).execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise self._failed(exc) from None

    def write(self, sql: str, params: t.Sequence[t.Any]) -> int:
        try:
            with self._connection() as conn:
                return _Tx(conn).execute(sql, params).rowcount
        except psycopg.Error as exc:
            raise self._failed(exc) from None

    def set_up(self, apply: t.Callable[[Tx], None]) -> None:
        """Run ``apply`` in one transaction holding the migration advisory lock: of hosts
        starting together one migrates, the others wait and then find it done.

        First one connection outside the pool, so that a wrong password, an unknown database
        or an unreachable server is reported as libpq says it (the pool only says it could
        not get a connection in time).
        """
        try:
            psycopg.connect(self.config.dsn, **self._kwargs()).close()
        except psycopg.Error as exc:
            raise self._failed(exc, "cannot open the storage database") from None
        try:
            with (
                self._connection("cannot open the storage database") as conn,
                conn.transaction(),
            ):
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id(MIGRATION_LOCK),))
                apply(_Tx(conn))
        except psycopg.Error as exc:
            raise self._failed(exc, "cannot open the storage database") from None

    def read_version(self, tx: Tx) -> int:
        if tx.execute("SELECT to_regclass('meta')").fetchone()[0] is None:
            others = tx.execute(
                "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema()"
            ).fetchone()[0]
            if others:
                raise self.error(
                    f"{self.describe()} is not an authctl storage database (its schema holds "
                    "other tables); give authctl a database of its own"
                )
            return 0
        row = tx.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            raise self.error(
                f"{self.describe()} is not an authctl storage database (a meta table without "
                "a schema version); give authctl a database of its own"
            )
        return int(bytes(row[0]).decode("ascii"))

    def write_version(self, tx: Tx, version: int) -> None:
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(version).encode("ascii"),),
        )

    def version(self) -> int:
        rows = self.read("SELECT value FROM meta WHERE key = 'schema_version'", ())
        return int(bytes(rows[0][0]).decode("ascii")) if rows else 0

    def lock_keys(self, tx: Tx, keys: t.Iterable[str]) -> None:
        """Transaction advisory locks on ``keys``, taken in one order (no deadlock)."""
        for key in sorted({lock_id("key:" + key) for key in keys}):
            tx.execute("SELECT pg_advisory_xact_lock(?)", (key,))

    @contextlib.contextmanager
    def exclusive(self, name: str, timeout: float) -> t.Iterator[None]:
        """A session advisory lock on a connection kept for the block, always released.

        A waiter takes a connection only for each try (``pg_try_advisory_lock``), never while
        it sleeps: waiters holding the pool would starve the holder, which needs connections
        of its own inside the block.
        """
        key = lock_id("exclusive:" + name)
        deadline = time.monotonic() + timeout
        pause = 0.001
        while True:
            with self._connection() as conn:
                try:
                    row = _Tx(conn).execute("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()
                except psycopg.Error as exc:
                    raise self._failed(exc) from None
                if row is not None and row[0]:
                    try:
                        yield
                    finally:
                        try:
                            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                        except psycopg.Error:
                            conn.close()  # a session that may still hold it never goes back
                    return
            if time.monotonic() >= deadline:
                raise self.error(
                    f"timed out after {timeout:g} s waiting for the lock {name!r} "
                    f"({self.describe()})",
                    reason="lock timeout",
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.02)

    def after_copy(self, tx: Tx, table: Table) -> None:
        """Move ``table``'s id sequence past the largest copied id."""
        tx.execute(
            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "  # noqa: S608
            f"COALESCE((SELECT max(id) FROM {table.name}), 0) + 1, false)"
        )

    def check(self) -> None:
        self.read("SELECT 1", ())

    def close(self) -> None:
        with self._lock:
            self.closed = True
            pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.close(timeout=self.timeout)

    def describe(self) -> str:
        return describe_dsn(self.config.dsn)
