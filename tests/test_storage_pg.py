"""The storage on PostgreSQL, and what only many processes or hosts show on either engine:
parallel submissions across processes (one winner), shared rate limits that never let more
through than the limit, a property test of ``hit_rate_limits`` against a naive model,
migrations racing, the password kept out of every message, multi-host DSNs, copying SQLite
into PostgreSQL, and PostgreSQL stopped and started under a live storage (fail closed,
recover with no restart)."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import multiprocessing
import os
import threading
import time
import typing as t
import warnings
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from server.core.config import PostgresConfig
from server.core.config import StorageConfig
from server.core.pg_util import describe_dsn
from server.core.storage import SCHEMA_VERSION
from server.core.storage import OneTimeCode
from server.core.storage import Redemption
from server.core.storage import Storage
from server.core.storage import StorageError
from tests import pgcluster
from tests.pgcluster import PASSWORD
from tests.pgcluster import PgCluster
from tests.pgcluster import free_port
from tests.pgcluster import pg_cluster  # noqa: F401 - fixture
from tests.pgcluster import pg_dsn  # noqa: F401 - fixture
from tests.test_storage import BACKENDS
from tests.test_storage import add_code
from tests.test_storage import make_config
from tests.test_storage import raw_sql

pytestmark = pytest.mark.slow

#: Parallel submissions in the cross-process tests.
WORKERS = 20


@pytest.fixture(params=BACKENDS)
def config(request: pytest.FixtureRequest, tmp_path: Path) -> StorageConfig:
    """A storage config on each engine (a fresh PostgreSQL schema)."""
    if request.param == "postgres":
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        dsn: str = request.getfixturevalue("pg_dsn")
        return make_config(tmp_path, postgres=cluster.postgres_config(dsn, timeout=3))
    return make_config(tmp_path)


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> PgCluster:
    """The session's PostgreSQL cluster (``pg_cluster``)."""
    found: PgCluster = request.getfixturevalue("pg_cluster")
    return found


@pytest.fixture
def pg_config(request: pytest.FixtureRequest, cluster: PgCluster, tmp_path: Path) -> StorageConfig:
    """A PostgreSQL storage config on a fresh schema."""
    dsn: str = request.getfixturevalue("pg_dsn")
    return make_config(tmp_path, postgres=cluster.postgres_config(dsn, timeout=3))


@pytest.fixture
def storage(config: StorageConfig) -> Iterator[Storage]:
    """An open storage on the real clock."""
    opened = Storage(config)
    yield opened
    opened.close()


def in_processes(
    work: Callable[[], object], count: int = WORKERS, warm: Callable[[], object] | None = None
) -> list[object]:
    """Run ``work`` in ``count`` forked processes released together (after each ran
    ``warm``, e.g. to open its connections); their results."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(count)
    queue: multiprocessing.queues.SimpleQueue[object] = ctx.SimpleQueue()

    def child() -> None:
        if warm is not None:
            warm()
        barrier.wait(30)
        try:
            queue.put(work())
        except Exception as exc:  # reported to the parent
            queue.put(f"error: {exc!r}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
        processes = [ctx.Process(target=child) for _ in range(count)]
        for process in processes:
            process.start()
    for process in processes:
        process.join(timeout=50)
        assert process.exitcode == 0
    return [queue.get() for _ in processes]


# --------------------------------------------------------------------------- many processes


class TestAcrossProcesses:
    """Atomic operations stay atomic across processes (each with its own connections)."""

    def test_one_totp_step_has_one_winner(self, storage: Storage) -> None:
        """20 processes accept the same TOTP step at once: exactly one wins."""
        results = in_processes(lambda: storage.accept_totp_step("alice", 1234), warm=storage.check)
        assert sorted(results, key=str) == [False] * (WORKERS - 1) + [True]
        assert storage.last_totp_step("alice") == 1234

    def test_one_code_has_one_winner(self, storage: Storage) -> None:
        """20 processes redeem one code at once: exactly one consumes it."""
        add_code(storage, expires=time.time() + 100)

        def judge(row: OneTimeCode) -> Redemption:
            return Redemption.CONSUME if row.consumed is None else Redemption.REFUSE

        results = in_processes(
            lambda: storage.redeem_one_time_code("c1", judge, now=1.0, ip="192.0.2.7"),
            warm=storage.check,
        )
        assert sorted(results, key=str) == [False] * (WORKERS - 1) + [True]
        assert storage.one_time_codes()[0].consumed_ip == "192.0.2.7"

    def test_wrong_tries_are_all_counted(self, storage: Storage) -> None:
        """20 parallel wrong tries at one code count 20 attempts (no lost update)."""
        add_code(storage, expires=time.time() + 100)
        in_processes(
            lambda: storage.redeem_one_time_code(
                "c1", lambda row: Redemption.WRONG, now=1.0, ip=None
            ),
            warm=storage.check,
        )
        assert storage.one_time_codes()[0].attempts == WORKERS

    def test_rate_limit_is_never_exceeded(self, storage: Storage) -> None:
        """20 processes hit a limit of 5 per minute (and a shared per-IP limit of 7) at
        once: exactly 5 pass, and the store holds exactly their hits."""
        now = time.time()

        def hit() -> float:
            return storage.hit_rate_limits(
                [("user:alice", [(5, 60.0)]), ("ip:192.0.2.1", [(7, 60.0)])], now
            )

        results = in_processes(hit, warm=storage.check)
        assert all(isinstance(wait, float) for wait in results), results
        assert sum(wait == 0.0 for wait in results) == 5
        assert storage.counts()["rate_limit_hits"] == 10

    def test_ban_is_only_ever_extended(self, storage: Storage) -> None:
        """20 processes ban one user for different lengths at once: the longest stays."""

        def ban() -> float:
            expires = 1e9 + os.getpid()  # a different length in each process
            storage.save_ban("user", "alice", expires, f"pid {os.getpid()}")
            return expires

        results = in_processes(ban, warm=storage.check)
        (final,) = storage.list_bans(0)
        assert final.expires == max(t.cast("list[float]", results))
        assert final.reason == f"pid {int(final.expires - 1e9)}"


# --------------------------------------------------------------------------- property


class Model:
    """The naive rate limiter: a list of hits, every rule checked by counting."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, float]] = []

    def hit(self, keys: list[tuple[str, list[tuple[int, float]]]], now: float) -> float:
        wait = 0.0
        for key, limits in keys:
            for count, window in limits:
                inside = sorted(
                    (when for k, when in self.hits if k == key and when > now - window),
                    reverse=True,
                )
                if len(inside) >= count:
                    wait = max(wait, inside[count - 1] + window - now)
        if wait == 0.0:
            self.hits += [(key, now) for key, _limits in keys]
        return wait


_runs = itertools.count()
LIMITS = st.lists(
    st.tuples(st.integers(1, 4), st.sampled_from([1.0, 5.0, 30.0])), min_size=0, max_size=2
)
CALLS = st.lists(
    st.tuples(
        st.lists(st.tuples(st.sampled_from("abc"), LIMITS), max_size=3, unique_by=lambda x: x[0]),
        st.floats(0, 3, allow_nan=False),
    ),
    max_size=25,
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hit_rate_limits_matches_a_naive_model(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Any sequence of calls (moving time forward) answers exactly as counting hits does."""
    if backend == "postgres":
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        cfg = make_config(
            tmp_path, postgres=cluster.postgres_config(request.getfixturevalue("pg_dsn"))
        )
    else:
        cfg = make_config(tmp_path)
    storage = Storage(cfg)

    @settings(max_examples=60 if backend == "sqlite" else 30, deadline=None)
    @given(CALLS)
    def check(calls: list[tuple[list[tuple[str, list[tuple[int, float]]]], float]]) -> None:
        run = f"r{next(_runs)}:"  # keys of their own: no reset between examples
        model, now = Model(), 1000.0
        for keys, step in calls:
            now += step
            named = [(run + key, limits) for key, limits in keys]
            assert storage.hit_rate_limits(named, now) == pytest.approx(model.hit(named, now))

    try:
        check()
    finally:
        storage.close()


# --------------------------------------------------------------------------- PostgreSQL only


class TestPostgres:
    """What only the PostgreSQL engine has: its schema, DSNs, password, migrations race."""

    def test_schema_in_postgres(self, pg_config: StorageConfig) -> None:
        """Every table, the version row and the engine's own types (bytea, float8, bigint)."""
        Storage(pg_config).close()
        tables = {
            r[0]
            for r in raw_sql(
                pg_config,
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()",
            )
        }
        storage = Storage(pg_config)
        try:
            assert set(storage.tables()) | {"meta"} == tables
            assert storage.schema_version() == SCHEMA_VERSION
        finally:
            storage.close()
        types = dict(
            raw_sql(
                pg_config,
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = 'totp_configurations'",
            )
        )
        assert types["secret"] == "bytea"
        assert types["created_at"] == "double precision"

    def test_meta_without_version_is_refused(self, pg_config: StorageConfig) -> None:
        """A schema with a meta table but no schema_version is not ours: refused."""
        raw_sql(pg_config, "CREATE TABLE meta (key TEXT PRIMARY KEY, value BYTEA)")
        with pytest.raises(StorageError, match="not an authctl storage database"):
            Storage(pg_config)

    def test_hosts_starting_together_migrate_once(self, pg_config: StorageConfig) -> None:
        """Eight hosts opening one empty database at once: one migrates, all open."""
        errors: list[BaseException] = []
        opened: list[Storage] = []
        barrier = threading.Barrier(8)

        def start() -> None:
            barrier.wait()
            try:
                opened.append(Storage(pg_config))
            except BaseException as exc:  # collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=start) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for storage in opened:
            storage.close()
        assert errors == []
        assert len(opened) == 8

    def test_multi_host_dsn_skips_a_dead_host(self, cluster: PgCluster, tmp_path: Path) -> None:
        """A libpq multi-host DSN with target_session_attrs=read-write, first host down,
        works unchanged; describe() names both hosts and no password."""
        dsn = cluster.create_schema()
        dead = free_port()
        multi = dsn.replace(
            f"127.0.0.1:{cluster.port}", f"127.0.0.1:{dead},127.0.0.1:{cluster.port}"
        ).replace("?", "?target_session_attrs=read-write&")
        storage = Storage(make_config(tmp_path, postgres=cluster.postgres_config(multi)))
        try:
            assert storage.accept_totp_step("alice", 5)
            assert storage.describe() == (
                f"postgresql://authctl@127.0.0.1:{dead},127.0.0.1:{cluster.port}/authctl"
            )
        finally:
            storage.close()
            cluster.drop_schema(dsn)

    def test_describe_key_value_dsn(self) -> None:
        """A key=value DSN is described too; a broken one says so."""
        assert describe_dsn("host=db1,db2 port=5432 dbname=auth user=a") == (
            "postgresql://a@db1:5432,db2:5432/auth"
        )
        assert describe_dsn("dbname=auth") == "postgresql://localhost/auth"
        assert describe_dsn("not a dsn") == "postgresql (invalid dsn)"

    def test_wrong_password_never_shows_it(
        self, pg_config: StorageConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A failing login is a StorageError; neither it nor any log line holds the
        password (a wrong one that differs from the right one only in the last byte)."""
        assert pg_config.postgres is not None
        wrong = PASSWORD[:-1] + "X"
        secret = tmp_path / "wrong.password"
        secret.write_text(wrong + "\n", encoding="utf-8")
        bad = dataclasses.replace(
            pg_config,
            postgres=dataclasses.replace(pg_config.postgres, password_file=secret, timeout=1),
        )
        with caplog.at_level(logging.DEBUG), pytest.raises(StorageError) as info:
            Storage(bad)
        text = f"{info.value} {info.value!r} {info.value.public} {caplog.text}"
        assert wrong not in text
        assert PASSWORD not in text
        assert "password authentication failed" in str(info.value)  # libpq's words
        assert info.value.public == "storage unavailable: authentication failed"

    def test_slow_statement_is_a_timeout(self, pg_config: StorageConfig) -> None:
        """A write stuck behind a lock held elsewhere ends at the statement timeout as a
        StorageError ("timeout"), never a wait without end or an answer."""
        assert pg_config.postgres is not None
        quick = dataclasses.replace(
            pg_config, postgres=dataclasses.replace(pg_config.postgres, timeout=1)
        )
        storage = Storage(quick)
        try:
            assert storage.accept_totp_step("alice", 1)
            with psycopg.connect(pg_config.postgres.dsn, password=PASSWORD) as other:
                other.execute("SELECT * FROM totp_history FOR UPDATE")  # held until the end
                start = time.monotonic()
                with pytest.raises(StorageError) as info:
                    storage.accept_totp_step("alice", 2)
                assert 0.9 < time.monotonic() - start < 3
                assert info.value.public == "storage unavailable: timeout"
            assert storage.accept_totp_step("alice", 2)  # the lock is gone: works again
        finally:
            storage.close()

    def test_read_only_server_refuses_writes(self, pg_config: StorageConfig) -> None:
        """On a read-only server (a standby, a failover under way) the storage opens and
        reads, and every write is a StorageError ("read-only"), never a silent success."""
        assert pg_config.postgres is not None
        Storage(pg_config).close()  # migrated by a writable host
        dsn = pg_config.postgres.dsn + "%20-cdefault_transaction_read_only%3Don"
        standby = dataclasses.replace(
            pg_config, postgres=dataclasses.replace(pg_config.postgres, dsn=dsn)
        )
        storage = Storage(standby)
        try:
            assert storage.has_totp("alice") is False
            with pytest.raises(StorageError) as info:
                storage.accept_totp_step("alice", 1)
            assert info.value.public == "storage unavailable: read-only"
        finally:
            storage.close()

    def test_reconnect_failure_is_logged_without_secrets(
        self, pg_config: StorageConfig, caplog: pytest.LogCaptureFixture
    ) -> None:
        """When the pool gives up one reconnection it says so, naming hosts, no password."""
        storage = Storage(pg_config)
        try:
            with caplog.at_level(logging.WARNING, logger="server.storage"):
                storage._db._reconnect_failed(None)  # type: ignore[attr-defined]
        finally:
            storage.close()
        assert "cannot reach PostgreSQL at postgresql://authctl@127.0.0.1:" in caplog.text
        assert PASSWORD not in caplog.text

    def test_password_file_problems(self, pg_config: StorageConfig, tmp_path: Path) -> None:
        """A missing or empty password file is a StorageError naming the file."""
        assert pg_config.postgres is not None
        for content in (None, "\n"):
            path = tmp_path / f"pw-{content is None}"
            if content is not None:
                path.write_text(content, encoding="utf-8")
            bad = dataclasses.replace(
                pg_config, postgres=dataclasses.replace(pg_config.postgres, password_file=path)
            )
            with pytest.raises(StorageError, match=str(path)):
                Storage(bad)

    def test_no_server_is_a_storage_error_in_bounded_time(self, tmp_path: Path) -> None:
        """Nothing listening: StorageError within about the timeout, not a hang."""
        postgres = PostgresConfig(dsn=f"postgresql://authctl@127.0.0.1:{free_port()}/x", timeout=1)
        start = time.monotonic()
        with pytest.raises(StorageError, match="cannot open the storage database"):
            Storage(make_config(tmp_path, postgres=postgres))
        assert time.monotonic() - start < 5

    def test_backend_without_its_section(self, tmp_path: Path) -> None:
        """backend = postgres without [storage.postgres], or an unknown backend: refused."""
        cfg = make_config(tmp_path)
        with pytest.raises(StorageError, match=r"\[storage.postgres\] is missing"):
            Storage(dataclasses.replace(cfg, backend="postgres"))
        with pytest.raises(StorageError, match="unknown storage backend"):
            Storage(dataclasses.replace(cfg, backend="mysql"))

    def test_copy_sqlite_into_postgres(self, pg_config: StorageConfig, tmp_path: Path) -> None:
        """Every table copies from SQLite to PostgreSQL once; ids continue after the copy."""
        source = Storage(make_config(tmp_path))
        target = Storage(pg_config)
        try:
            assert source.save_totp("alice", b"k" * 20, algorithm="SHA1", digits=6, period=30)
            for when in (1.0, 2.0, 3.0):
                source.append_log(when, "alice", "10.0.0.1", "1FA", False)
            source.hit_rate_limits([("k", [(9, 9.0)])], 1.0)
            add_code(source)
            for table in source.tables():
                rows = source.rows(table)
                assert target.insert_rows(table, rows) == len(rows)
                assert target.insert_rows(table, rows) == 0
                assert target.rows(table) == rows
            assert target.counts() == source.counts()
            record = target.load_totp("alice")
            assert record is not None
            assert record.secret == b"k" * 20
            target.append_log(4.0, "alice", "10.0.0.1", "1FA", True)
            target.hit_rate_limits([("k", [(9, 9.0)])], 2.0)
            assert [r[0] for r in target.rows("authentication_logs")] == [1, 2, 3, 4]
        finally:
            source.close()
            target.close()


# --------------------------------------------------------------------------- faults


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[PgCluster]:
    """A cluster of this module's own, to stop and start."""
    cluster = PgCluster.create()
    yield cluster
    cluster.destroy()


@pytest.fixture
def fault_storage(own_cluster: PgCluster, tmp_path: Path) -> Iterator[Storage]:
    """A storage on ``own_cluster`` with a 1 s timeout, the cluster running again after."""
    dsn = own_cluster.create_schema()
    storage = Storage(
        make_config(tmp_path, postgres=own_cluster.postgres_config(dsn, timeout=1, pool_size=3))
    )
    yield storage
    storage.close()
    own_cluster.drop_schema(dsn)


def every_operation(storage: Storage) -> dict[str, Callable[[], object]]:
    """One call of each kind a request makes (read, write, transaction, row lock, limit)."""

    def judge(row: OneTimeCode) -> Redemption:
        return Redemption.CONSUME

    return {
        "accept_totp_step": lambda: storage.accept_totp_step("alice", 99),
        "has_totp": lambda: storage.has_totp("alice"),
        "active_ban": lambda: storage.active_ban([("user", "alice")], 0),
        "append_log": lambda: storage.append_log(1, "alice", "", "1FA", False),
        "redeem": lambda: storage.redeem_one_time_code("c1", judge, now=1.0, ip=None),
        "hit_rate_limits": lambda: storage.hit_rate_limits([("k", [(100, 60.0)])], 1.0),
        "check": storage.check,
    }


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_down_fails_closed_and_recovers(
    own_cluster: PgCluster, fault_storage: Storage, mode: str
) -> None:
    """PostgreSQL stopped under a live storage: every operation raises StorageError (never
    an answer) within the timeout; started again: the same storage works, no reopening."""
    storage = fault_storage
    assert storage.accept_totp_step("alice", 1)  # connections in the pool, then cut
    add_code(storage, expires=time.time() + 100)
    own_cluster.stop(mode)
    outcomes: dict[str, tuple[object, float]] = {}

    def run(name: str, call: Callable[[], object]) -> None:
        start = time.monotonic()
        try:
            outcome: object = call()
        except StorageError as exc:
            outcome = exc
        outcomes[name] = (outcome, time.monotonic() - start)

    try:
        threads = [
            threading.Thread(target=run, args=item) for item in every_operation(storage).items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        own_cluster.start()
    assert len(outcomes) == len(every_operation(storage))
    for name, (outcome, took) in outcomes.items():
        assert isinstance(outcome, StorageError), (name, outcome)  # never an answer
        assert took < 4, name
        assert outcome.public.startswith("storage unavailable"), name
        assert PASSWORD not in str(outcome)
    started = time.monotonic()
    assert storage.accept_totp_step("alice", 99)  # the first call after the restart
    recovery = time.monotonic() - started
    assert recovery < 3
    assert storage.redeem_one_time_code("c1", lambda row: Redemption.CONSUME, now=1, ip=None)
    assert not storage.accept_totp_step("alice", 99)  # nothing was lost or half done


def test_postgres_restart_between_requests(own_cluster: PgCluster, fault_storage: Storage) -> None:
    """A restart while the pool is idle: the next request gets a fresh connection at once."""
    storage = fault_storage
    for step in range(3):  # several pooled connections
        assert storage.accept_totp_step("bob", step + 1)
    own_cluster.restart()
    started = time.monotonic()
    assert storage.accept_totp_step("bob", 10)
    assert time.monotonic() - started < 2
    with storage.exclusive("x"):
        assert storage.has_totp("bob") is False


def test_restart_inside_an_exclusive_block(own_cluster: PgCluster, fault_storage: Storage) -> None:
    """The server restarting while a lock is held (the lock dies with the session): the
    block ends without error, the broken connection is not reused, the lock can be taken."""
    storage = fault_storage
    with storage.exclusive("regulation"):
        own_cluster.restart()
    with storage.exclusive("regulation"):
        assert storage.accept_totp_step("carol", 1)


def test_waiting_for_a_lock_holds_no_connection(
    request: pytest.FixtureRequest, cluster: PgCluster, tmp_path: Path
) -> None:
    """Six threads queue for one exclusive() lock and each works inside it, on a pool of
    two: the waiters hold no connection, so the holder always gets one (no pool deadlock)."""
    dsn: str = request.getfixturevalue("pg_dsn")
    storage = Storage(
        make_config(tmp_path, postgres=cluster.postgres_config(dsn, timeout=2, pool_size=2))
    )
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def work(number: int) -> None:
        barrier.wait()
        try:
            for round_ in range(3):
                with storage.exclusive("regulation"):
                    storage.add_inflight(f"t{number}-{round_}", [("a", "b", "c")], 4e9)
                    time.sleep(0.01)
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert storage.inflight_counts([("a", "b", "c")], 0) == {("a", "b", "c"): 18}
    finally:
        storage.close()


def test_missing_binaries_fail_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without PostgreSQL the cluster fixture fails (never skips) saying what to install."""
    monkeypatch.setattr(pgcluster, "PG_BIN", tmp_path)
    with pytest.raises(pytest.fail.Exception, match="apt-get install"):
        PgCluster.create()
