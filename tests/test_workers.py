"""``authctl serve --workers N`` as a real process tree: every worker serves the shared socket
and the shared SQLite sessions, a dead worker is replaced, a broken start is not retried, and
SIGTERM stops everything with status 0."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apphelpers import APP_CONFIG
from tests.apphelpers import PASSWORDS
from tests.test_serve import AUTHCTL
from tests.test_serve import SQLITE_CONFIG
from tests.test_serve import make_folder

pytestmark = pytest.mark.slow

VERIFY_HEADERS = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "app.example.com",
    "X-Forwarded-Uri": "/",
    "X-Forwarded-Method": "GET",
    "Accept": "text/html",
}


def children(pid: int) -> set[int]:
    """PIDs whose parent is ``pid`` (read from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text()
    rest = fields[fields.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])


class Workers:
    """A running ``authctl serve --workers N``."""

    def __init__(self, folder: Path, workers: int) -> None:
        env = {**os.environ, "AUTHCTL_CONFIG": str(folder / "authctl.toml")}
        self.proc = subprocess.Popen(
            [AUTHCTL, "serve", "--address", "127.0.0.1:0", "--workers", str(workers)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.port = self._wait_for_port()
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()

    def _wait_for_port(self) -> int:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            found = re.search(r"serving on 127\.0\.0\.1:(\d+) .*(\d+) workers", line)
            if found:
                return int(found.group(1))
        self.proc.kill()
        self.proc.wait()
        self.proc.stderr.close()
        raise AssertionError("server did not start:\n" + "".join(self.lines))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None = None
    ) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            return resp
        finally:
            conn.close()

    def login(self) -> str:
        body = json.dumps({"username": "alice", "password": PASSWORDS["alice"]}).encode()
        resp = self.request(
            "POST",
            "/api/firstfactor",
            {
                "Content-Type": "application/json",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "auth.example.com",
                "Origin": "https://auth.example.com",
            },
            body,
        )
        assert resp.status == 200
        return (resp.getheader("Set-Cookie") or "").split(";", 1)[0]

    def verify(self, cookie: str | None) -> int:
        headers = dict(VERIFY_HEADERS)
        if cookie:
            headers["Cookie"] = cookie
        return self.request("GET", "/api/authz/forward-auth", headers).status

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.drain.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.proc.returncode


@pytest.fixture
def two(tmp_path: Path) -> Iterator[Workers]:
    """``serve --workers 2`` on the SQLite store."""
    server = Workers(make_folder(tmp_path / "site", SQLITE_CONFIG), 2)
    yield server
    server.stop()


def wait_for(predicate: object, timeout: float = 10.0) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_every_worker_answers_from_the_shared_store(two: Workers) -> None:
    """A session made through one request is accepted on many new connections, and both
    worker processes did part of the work (each one's CPU time grew)."""
    workers = children(two.proc.pid)
    assert len(workers) == 2
    cookie = two.login()
    before = {pid: cpu_ticks(pid) for pid in workers}
    statuses: list[int] = []

    def client() -> None:
        for _ in range(150):
            statuses.append(two.verify(cookie))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 1200
    grew = {pid: cpu_ticks(pid) - before[pid] for pid in workers}
    assert all(ticks >= 2 for ticks in grew.values()), grew
    assert two.verify(None) == 302


def test_logout_in_one_worker_is_seen_by_all(two: Workers) -> None:
    """After a logout, no worker accepts the cookie any more (no stale per-process cache)."""
    cookie = two.login()
    for _ in range(40):  # warm every worker's session cache
        assert two.verify(cookie) == 200
    resp = two.request(
        "POST",
        "/api/logout",
        {
            "Content-Type": "application/json",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "auth.example.com",
            "Origin": "https://auth.example.com",
            "Cookie": cookie,
        },
        b"{}",
    )
    assert resp.status == 200
    assert {two.verify(cookie) for _ in range(40)} == {302}


def test_sigterm_stops_every_worker(two: Workers) -> None:
    """SIGTERM to the parent stops all workers; the parent exits 0."""
    workers = children(two.proc.pid)
    assert two.stop() == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)
    assert any("authctl stopped" in line for line in two.lines)


def test_a_dead_worker_is_replaced(two: Workers) -> None:
    """A worker killed with SIGKILL is restarted; the server keeps answering."""
    cookie = two.login()
    first = children(two.proc.pid)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: len(children(two.proc.pid) - {victim}) == 2)
    assert victim not in children(two.proc.pid)
    assert {two.verify(cookie) for _ in range(20)} == {200}
    assert wait_for(lambda: any("starting a new one" in line for line in two.lines))


def test_memory_store_is_refused_with_workers(tmp_path: Path) -> None:
    """--workers 2 with the per-process memory store is a usage error (exit 2)."""
    folder = make_folder(tmp_path / "site", APP_CONFIG)
    env = {**os.environ, "AUTHCTL_CONFIG": str(folder / "authctl.toml")}
    done = subprocess.run(
        [AUTHCTL, "serve", "--address", "127.0.0.1:0", "--workers", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert done.returncode == 2
    assert 'session.store = "memory"' in done.stderr


def test_a_broken_start_is_not_retried(tmp_path: Path) -> None:
    """An invalid users file stops the start with status 3 instead of a restart loop."""
    folder = make_folder(tmp_path / "site", SQLITE_CONFIG)
    (folder / "users.toml").write_text("[users.alice]\npassword = 'plain text'\n")
    env = {**os.environ, "AUTHCTL_CONFIG": str(folder / "authctl.toml")}
    done = subprocess.run(
        [AUTHCTL, "serve", "--address", "127.0.0.1:0", "--workers", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert "users.toml" in done.stderr
    assert "starting a new one" not in done.stderr


# --------------------------------------------------------------------------- the session cache


def test_sqlite_cache_sees_writes_of_other_processes(tmp_path: Path) -> None:
    """A session cached by one SQLiteStore (one worker) is dropped as soon as another store on
    the same file (another worker) deletes, replaces, touches it or deletes its user."""
    from server.core.session_store import SQLiteStore
    from tests.test_session_store import T0
    from tests.test_session_store import make_session

    path = tmp_path / "sessions.db"
    reader, writer = SQLiteStore(path), SQLiteStore(path)
    try:
        session = make_session()
        writer.put(session, 600)
        assert reader.get(session.id) == session  # now cached by the reader
        writer.touch(session.id, T0 + 30)
        touched = reader.get(session.id)
        assert touched is not None
        assert touched.last_activity == T0 + 30
        assert writer.delete(session.id)
        assert reader.get(session.id) is None
        other = make_session()
        writer.put(other, 600)
        assert reader.get(other.id) == other
        assert writer.delete_user("alice") == 1
        assert reader.get(other.id) is None
    finally:
        reader.close()
        writer.close()


# --------------------------------------------------------------------------- failing restarts


def test_failing_restarts_back_off_while_the_other_worker_serves(tmp_path: Path) -> None:
    """Issue 13 item 2: with the users file broken, a killed worker's replacements cannot
    start. The parent logs why each one failed and waits longer each time (1 s, 2 s, ...)
    instead of giving up; the other worker answers every new connection meanwhile; once the
    file is fixed a replacement starts by itself."""
    folder = make_folder(tmp_path / "site", SQLITE_CONFIG)
    users = folder / "users.toml"
    good = users.read_text()
    server = Workers(folder, 2)
    try:
        first = children(server.proc.pid)
        victim, survivor = sorted(first)
        users.write_text("[users.alice]\npassword = 'plain text'\n")
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: any("starting a new one" in line for line in server.lines))
        # the survivor answers all new connections (the dead worker's socket is closed)
        statuses = [server.verify(None) for _ in range(60)]
        assert statuses == [302] * 60
        assert wait_for(
            lambda: sum("next try in" in line for line in server.lines) >= 3, timeout=20
        ), "".join(server.lines)
        failures = [line for line in server.lines if "could not start" in line]
        assert all("users.toml" in line for line in failures), failures
        waits = [
            float(m.group(1))
            for line in server.lines
            if (m := re.search(r"next try in ([0-9.]+)s", line))
        ]
        assert waits[:3] == [1.0, 2.0, 4.0], waits
        assert server.proc.poll() is None
        assert survivor in children(server.proc.pid)
        assert [server.verify(None) for _ in range(20)] == [302] * 20
        users.write_text(good)
        assert wait_for(lambda: len(children(server.proc.pid)) == 2, timeout=20)
        assert wait_for(lambda: any("serves again" in line for line in server.lines))
        assert len(children(server.proc.pid) - first) == 1
        assert [server.verify(None) for _ in range(20)] == [302] * 20
    finally:
        users.write_text(good)
        status = server.stop()
    assert status == 0, "".join(server.lines)
    assert not any("giving up" in line for line in server.lines)


def test_backoff_doubles_up_to_its_cap_and_the_slot_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The Supervisor in this process, with its timings shortened: a slot whose starts keep
    failing waits base, 2 x base, ... up to the cap, never gives up, logs the worker's own
    reason, and starts again by itself once the cause is gone."""
    import logging

    from server.serve.workers import StartError
    from server.serve.workers import Supervisor
    from server.serve.workers import bind
    from server.serve.workers import rebinder

    flag = tmp_path / "broken"
    listen = {"host": "127.0.0.1", "port": 0}
    sockets = bind(listen, 2)

    def main(get_socket: t.Callable[[], socket.socket], ready: t.Callable[[], None]) -> int:
        if flag.exists():
            raise StartError(f"{flag.name} is there", 3)
        get_socket()
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        ready()
        while True:
            time.sleep(0.05)

    supervisor = Supervisor(
        sockets,
        2,
        main,
        rebind=rebinder(listen, sockets),
        backoff_base=0.05,
        backoff_max=0.2,
        stop_grace=5,
    )

    def messages() -> list[str]:
        return [r.getMessage() for r in list(caplog.records) if r.name == "authctl.workers"]

    def scenario() -> None:
        try:
            wait_for(lambda: sum(w.ready_at is not None for w in supervisor.workers.values()) == 2)
            flag.touch()
            os.kill(min(supervisor.workers), signal.SIGKILL)
            wait_for(lambda: sum("next try in" in m for m in messages()) >= 6, timeout=20)
            flag.unlink()
            wait_for(lambda: any("serves again" in m for m in messages()), timeout=10)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    caplog.set_level(logging.INFO, logger="authctl.workers")
    helper = threading.Thread(target=scenario)
    helper.start()
    try:
        status = supervisor.run()
    finally:
        helper.join()
        for sock in sockets:
            sock.close()
    assert status == 0
    waits = [
        float(m.group(1))
        for line in messages()
        if (m := re.search(r"next try in ([0-9.]+)s", line))
    ]
    assert waits[:6] == [0.05, 0.1, 0.2, 0.2, 0.2, 0.2], messages()
    assert all("broken is there" in m for m in messages() if "could not start" in m)
    assert any("serves again" in m for m in messages())
