"""Limits every worker and host shares (issue 15 item 2, SPEC §7.2): the self-service rate
limits and regulation's attempts in flight are counted in the storage database, so
``serve --workers N`` (or N hosts on one PostgreSQL) gives one limit, not N of them.

Real processes on one database: ``authctl serve --workers 2``, and plain forked processes
each opening their own :class:`~server.core.storage.Storage`.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import sqlite3
import threading
import time
import typing as t
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from server.core.config import PasswordHashConfig
from server.core.config import RegulationConfig
from server.core.config import StorageConfig
from server.core.errors import Banned
from server.core.passwords import PasswordHasher
from server.core.ratelimit import RateLimits
from server.core.ratelimit import limits
from server.core.regulation import Regulator
from server.core.regulation import Reservation
from server.core.storage import Storage
from tests.apphelpers import PASSWORDS
from tests.apphelpers import users_toml
from tests.pgcluster import PASSWORD
from tests.pgcluster import pg_cluster  # noqa: F401 - a fixture
from tests.pgcluster import pg_dsn  # noqa: F401 - a fixture
from tests.test_ratelimit import BACKENDS
from tests.test_serve import SQLITE_CONFIG
from tests.test_serve import make_folder
from tests.test_workers import Workers
from tests.test_workers import children

#: A hash slow enough (tens of ms) that parallel guesses really overlap in both workers.
SLOW = PasswordHashConfig(memory_kib=16384, iterations=2, parallelism=1)

PORTAL = {
    "Content-Type": "application/json",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "auth.example.com",
    "Origin": "https://auth.example.com",
}


class Site(Workers):
    """``serve --workers N`` that remembers its folder and its PostgreSQL storage, if any."""

    def __init__(self, folder: Path, workers: int, dsn: str | None = None) -> None:
        self.folder = folder
        self.dsn = dsn
        super().__init__(folder, workers)

    def rows(self, sql: str) -> list[tuple[t.Any, ...]]:
        """Rows of the storage database, read behind the server's back."""
        if self.dsn is not None:
            with psycopg.connect(self.dsn, password=PASSWORD, connect_timeout=5) as pg:
                return [tuple(r) for r in pg.execute(sql)]
        with contextlib.closing(sqlite3.connect(self.folder / "authctl.db")) as conn:
            return [tuple(r) for r in conn.execute(sql)]


@pytest.fixture(params=BACKENDS)
def two(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    """``serve --workers 2`` with alice's password under a slow hash, its storage on each
    backend (the sessions stay in SQLite)."""
    config, dsn = SQLITE_CONFIG, None
    if request.param == "postgres":
        cluster = request.getfixturevalue("pg_cluster")
        dsn = request.getfixturevalue("pg_dsn")
        config += (
            f'\n[storage]\nbackend = "postgres"\n\n[storage.postgres]\ndsn = "{dsn}"\n'
            f'password_file = "{cluster.password_file}"\n'
        )
    folder = make_folder(tmp_path / "site", config)
    (folder / "users.toml").write_text(users_toml(PasswordHasher(SLOW)), encoding="utf-8")
    server = Site(folder, 2, dsn)
    assert len(children(server.proc.pid)) == 2
    yield server
    server.stop()


def post(server: Site, path: str, payload: dict[str, object], ip: str) -> int:
    """POST ``payload`` as the portal does, for client ``ip``; the status."""
    headers = {**PORTAL, "X-Forwarded-For": ip}
    return server.request("POST", path, headers, json.dumps(payload).encode()).status


def parallel(calls: list[t.Callable[[], int]], threads: int = 8) -> list[int]:
    """Run ``calls`` on ``threads`` threads at once; their results."""
    results: list[int] = []
    lock = threading.Lock()
    todo = list(calls)
    start = threading.Barrier(threads)

    def run() -> None:
        start.wait()
        while True:
            with lock:
                if not todo:
                    return
                call = todo.pop()
            status = call()
            with lock:
                results.append(status)

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return results


# --------------------------------------------------------------------------- serve --workers 2


@pytest.mark.slow
def test_reset_start_ip_limit_is_one_limit_across_workers(two: Site) -> None:
    """``reset_start_ip`` allows 5 per 10 min: of 24 parallel starts from one address spread
    over both workers exactly 5 get through, the rest are 429 (per-process counters let
    through up to 5 per worker)."""
    calls = [
        lambda: post(two, "/api/reset-password/identity/start", {"username": "bob"}, "10.7.7.7")
        for _ in range(24)
    ]
    statuses = parallel(calls)
    assert sorted(set(statuses)) == [200, 429]
    assert statuses.count(200) == 5
    # another address has its own allowance
    assert post(two, "/api/reset-password/identity/start", {"username": "bob"}, "10.7.7.8") == 200


@pytest.mark.slow
def test_parallel_guesses_across_workers_stop_at_max_retries(two: Site) -> None:
    """40 parallel wrong passwords for alice (from many addresses) over both workers: at most
    ``max_retries`` (3) are ever judged, every other one is refused as banned before any
    hashing (all answered 401), and afterwards her right password is refused like a wrong
    one."""
    calls = [
        (
            lambda i=i: post(
                two,
                "/api/firstfactor",
                {"username": "alice", "password": f"wrong {i}"},
                f"10.8.{i // 200}.{i % 200 + 1}",
            )
        )
        for i in range(40)
    ]
    statuses = parallel(calls, threads=12)
    assert statuses == [401] * 40
    judged = two.rows(
        "SELECT count(*) FROM authentication_logs WHERE username = 'alice' AND banned = 0",
    )[0][0]
    assert judged == 3  # the three that banned her; 6 with per-process places
    right = post(
        two, "/api/firstfactor", {"username": "alice", "password": PASSWORDS["alice"]}, "10.9.9.9"
    )
    assert right == 401
    assert two.rows("SELECT count(*) FROM bans WHERE kind = 'user' AND value = 'alice'") == [(1,)]


# --------------------------------------------------------------------------- two processes

#: Spawned (not forked) processes: nothing of the test process's threads or connections.
SPAWN = multiprocessing.get_context("spawn")
LIMIT = limits((7, 600))
REGULATION = RegulationConfig(max_retries=3, find_time=120, ban_time=300, modes=("user",))


def open_storage(config: StorageConfig) -> Storage:
    """This process's own Storage on the shared database."""
    return Storage(config, require_key=False)


@pytest.fixture(params=BACKENDS)
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> StorageConfig:
    """A database for two processes, on each backend (PostgreSQL: a fresh database), made
    and migrated once before they start."""
    config = StorageConfig(tmp_path / "authctl.db", tmp_path / "missing.key")
    if request.param == "postgres":
        cluster = request.getfixturevalue("pg_cluster")
        dsn = request.getfixturevalue("pg_dsn")
        config = replace(config, backend="postgres", postgres=cluster.postgres_config(dsn))
    open_storage(config).close()
    return config


def hammer_limit(config: StorageConfig, start: t.Any, out: t.Any) -> None:
    """In a child: 4 threads hit one key 10 times each, after every process is ready."""
    storage = open_storage(config)
    limiter = RateLimits(storage).limiter("code_send_ip", LIMIT)
    allowed: list[bool] = []

    def run() -> None:
        for _ in range(10):
            allowed.append(limiter.hit("192.0.2.1") == 0.0)

    threads = [threading.Thread(target=run) for _ in range(4)]
    start.wait()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    storage.close()
    out.put(allowed.count(True))


def race_reservations(config: StorageConfig, start: t.Any, held: t.Any, out: t.Any) -> None:
    """In a child: 6 threads race for a reservation of alice; the winners hold it until every
    process has raced (``held``), then settle it as a failure."""
    storage = open_storage(config)
    regulator = Regulator(REGULATION, storage)
    won: list[Reservation] = []
    lost: list[bool] = []

    def run() -> None:
        try:
            won.append(regulator.reserve("alice", "192.0.2.7", "1FA"))
        except Banned:
            lost.append(True)

    threads = [threading.Thread(target=run) for _ in range(6)]
    start.wait()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put(len(won))
    held.wait()
    for reservation in won:
        reservation.settle(False)
    storage.close()
    out.put("settled")


def run_children(
    target: t.Callable[..., None], config: StorageConfig, *extra: t.Any
) -> tuple[list[t.Any], list[t.Any], t.Any]:
    """Start two children on ``config`` and release them at once: what each put first, the
    processes and their queue."""
    start = SPAWN.Barrier(2)
    out = SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(config, start, *extra, out)) for _ in range(2)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=50) for _ in procs]
    return results, procs, out


@pytest.mark.slow
def test_two_processes_share_one_rate_limit(shared: StorageConfig) -> None:
    """Two processes (own Storage each, 4 threads each) hit one key 80 times against 7 per
    10 min: exactly 7 pass in all (in-process counters let 7 through in each)."""
    results, procs, _ = run_children(hammer_limit, shared)
    for proc in procs:
        proc.join(timeout=20)
        assert proc.exitcode == 0
    assert sum(results) == 7


@pytest.mark.slow
def test_two_processes_share_the_attempts_in_flight(shared: StorageConfig) -> None:
    """Twelve threads in two processes race for alice's places (max_retries 3): exactly three
    win in all, and once they fail she is banned for both."""
    held = SPAWN.Event()
    results, procs, out = run_children(race_reservations, shared, held)
    assert sum(results) == 3
    held.set()
    assert [out.get(timeout=20) for _ in procs] == ["settled", "settled"]
    for proc in procs:
        proc.join(timeout=20)
        assert proc.exitcode == 0
    storage = open_storage(shared)
    try:
        with pytest.raises(Banned):
            Regulator(REGULATION, storage).check("alice", None)
        assert storage.inflight_counts([("username", "alice", "1FA")], time.time()) == {
            ("username", "alice", "1FA"): 0
        }
    finally:
        storage.close()
