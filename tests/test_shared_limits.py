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
from pathlib import Path

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
    """``serve --workers N`` that remembers its folder."""

    def __init__(self, folder: Path, workers: int) -> None:
        self.folder = folder
        super().__init__(folder, workers)


@pytest.fixture
def two(tmp_path: Path) -> Iterator[Site]:
    """``serve --workers 2`` on the SQLite store, alice's password under a slow hash."""
    folder = make_folder(tmp_path / "site", SQLITE_CONFIG)
    (folder / "users.toml").write_text(users_toml(PasswordHasher(SLOW)), encoding="utf-8")
    server = Site(folder, 2)
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


def db_rows(folder: Path, sql: str) -> list[tuple[t.Any, ...]]:
    """Rows of the storage database, read behind the server's back."""
    with contextlib.closing(sqlite3.connect(folder / "authctl.db")) as conn:
        return [tuple(r) for r in conn.execute(sql)]


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
    hashing, and afterwards her right password is refused like a wrong one."""
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
    assert set(statuses) <= {401, 503}, statuses
    site = two.folder
    judged = db_rows(
        site,
        "SELECT count(*) FROM authentication_logs WHERE username = 'alice' AND banned = 0",
    )[0][0]
    assert 1 <= judged <= 3, judged
    right = post(
        two, "/api/firstfactor", {"username": "alice", "password": PASSWORDS["alice"]}, "10.9.9.9"
    )
    assert right == 401
    assert db_rows(site, "SELECT count(*) FROM bans WHERE kind = 'user' AND value = 'alice'") == [
        (1,)
    ]


# --------------------------------------------------------------------------- two processes

#: Spawned (not forked) processes: nothing of the test process's threads or connections.
SPAWN = multiprocessing.get_context("spawn")
LIMIT = limits((7, 600))
REGULATION = RegulationConfig(max_retries=3, find_time=120, ban_time=300, modes=("user",))


def open_storage(folder: str) -> Storage:
    """This process's own Storage on the shared database file."""
    path = Path(folder)
    return Storage(StorageConfig(path / "authctl.db", path / "missing.key"), require_key=False)


def hammer_limit(folder: str, start: t.Any, out: t.Any) -> None:
    """In a child: 4 threads hit one key 10 times each, after every process is ready."""
    storage = open_storage(folder)
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


def race_reservations(folder: str, start: t.Any, held: t.Any, out: t.Any) -> None:
    """In a child: 6 threads race for a reservation of alice; the winners hold it until every
    process has raced (``held``), then settle it as a failure."""
    storage = open_storage(folder)
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
    target: t.Callable[..., None], folder: Path, *extra: t.Any
) -> tuple[list[t.Any], list[t.Any], t.Any]:
    """Start two children on ``folder`` and release them at once: what each put first, the
    processes and their queue."""
    start = SPAWN.Barrier(2)
    out = SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(str(folder), start, *extra, out)) for _ in range(2)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=50) for _ in procs]
    return results, procs, out


@pytest.mark.slow
def test_two_processes_share_one_rate_limit(tmp_path: Path) -> None:
    """Two processes (own Storage each, 4 threads each) hit one key 80 times against 7 per
    10 min: exactly 7 pass in all (in-process counters let 7 through in each)."""
    open_storage(str(tmp_path)).close()  # create and migrate the file once
    results, procs, _ = run_children(hammer_limit, tmp_path)
    for proc in procs:
        proc.join(timeout=20)
        assert proc.exitcode == 0
    assert sum(results) == 7


@pytest.mark.slow
def test_two_processes_share_the_attempts_in_flight(tmp_path: Path) -> None:
    """Twelve threads in two processes race for alice's places (max_retries 3): exactly three
    win in all, and once they fail she is banned for both."""
    open_storage(str(tmp_path)).close()
    held = SPAWN.Event()
    results, procs, out = run_children(race_reservations, tmp_path, held)
    assert sum(results) == 3
    held.set()
    assert [out.get(timeout=20) for _ in procs] == ["settled", "settled"]
    for proc in procs:
        proc.join(timeout=20)
        assert proc.exitcode == 0
    storage = open_storage(str(tmp_path))
    try:
        with pytest.raises(Banned):
            Regulator(REGULATION, storage).check("alice", None)
        assert storage.inflight_counts([("username", "alice", "1FA")], time.time()) == {
            ("username", "alice", "1FA"): 0
        }
    finally:
        storage.close()
