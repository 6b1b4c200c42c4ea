"""Thousands of idle TCP connections do not stop ``authctl serve`` (issue 12 item 2).

waitress's default ``select()`` loop dies on the first file descriptor above 1023
(``ValueError: filedescriptor out of range in select()``), and a connection limit of 1000
stopped accepting before that. ``serve`` uses the ``poll()`` loop, raises its soft
``RLIMIT_NOFILE`` to the hard limit, and keeps the connection limit below it.
"""

from __future__ import annotations

import contextlib
import http.client
import resource
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_serve import SQLITE_CONFIG
from tests.test_serve import Server
from tests.test_serve import make_folder
from tests.test_workers import VERIFY_HEADERS
from tests.test_workers import Workers
from tests.test_workers import children

pytestmark = pytest.mark.slow

#: Idle connections held open against the server: three times select()'s limit.
IDLE = 3000


@pytest.fixture(autouse=True)
def enough_descriptors() -> Iterator[None]:
    """This test process needs IDLE sockets plus its usual files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = IDLE + 1024
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the hard RLIMIT_NOFILE ({hard}) is below {needed}")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def low_soft_limit() -> None:
    """In the child before exec: a soft limit of 1024 (the usual default), hard unchanged."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))


def open_idle(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that send nothing (non-blocking connects, so a server that has
    stopped accepting cannot block the test)."""
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        sockets.append(sock)
    return sockets


def open_fds(pid: int) -> int:
    try:
        return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:
        return 0


def soft_nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no Max open files line")


def verify(port: int) -> tuple[int, float]:
    """A verify on a new connection: its status and how long it took."""
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/api/authz/forward-auth", headers=VERIFY_HEADERS)
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.monotonic() - start
    finally:
        conn.close()


def wait_held(pids: list[int], count: int, timeout: float = 30.0) -> int:
    """Wait until ``pids`` together hold ``count`` more descriptors than they started with."""
    deadline = time.monotonic() + timeout
    held = 0
    while time.monotonic() < deadline:
        held = sum(open_fds(pid) for pid in pids)
        if held >= count:
            break
        time.sleep(0.1)
    return held


def test_thousands_of_idle_connections_one_process(tmp_path: Path) -> None:
    """3000 idle connections are accepted and held, and verify keeps answering at once."""
    server = Server(make_folder(tmp_path / "site", SQLITE_CONFIG), preexec_fn=low_soft_limit)
    idle: list[socket.socket] = []
    try:
        pid = server.proc.pid
        assert soft_nofile(pid) > IDLE + 256  # raised from 1024 towards the hard limit
        base = open_fds(pid)
        idle = open_idle(server.port, IDLE)
        held = wait_held([pid], base + IDLE)
        assert server.proc.poll() is None, "".join(server.lines)
        assert held >= base + IDLE, (held, "".join(server.lines[-5:]))
        timings = []
        for _ in range(20):
            status, took = verify(server.port)
            assert status == 302
            timings.append(took)
        assert max(timings) < 2.0, timings
        assert server.proc.poll() is None
    finally:
        for sock in idle:
            sock.close()
        status = server.stop()
    assert status == 0, "".join(server.lines)
    assert not any("out of range" in line for line in server.lines)


def test_thousands_of_idle_connections_with_workers(tmp_path: Path) -> None:
    """With --workers 2 the same load kills no worker: none is restarted, both answer."""
    server = Workers(make_folder(tmp_path / "site", SQLITE_CONFIG), 2)
    idle: list[socket.socket] = []
    try:
        workers = sorted(children(server.proc.pid))
        assert len(workers) == 2
        base = sum(open_fds(pid) for pid in workers)
        idle = open_idle(server.port, IDLE)
        held = wait_held(workers, base + IDLE)
        assert held >= base + IDLE, (held, "".join(server.lines[-5:]))
        statuses = [verify(server.port)[0] for _ in range(20)]
        assert statuses == [302] * 20
        assert sorted(children(server.proc.pid)) == workers, "".join(server.lines)
    finally:
        for sock in idle:
            with contextlib.suppress(OSError):
                sock.close()
        status = server.stop()
    assert status == 0, "".join(server.lines)
    assert not any("exited with status" in line for line in server.lines)


def test_stop_with_idle_connections_is_quick(tmp_path: Path) -> None:
    """SIGTERM with 3000 idle keep-alive connections still stops within a few seconds."""
    server = Server(make_folder(tmp_path / "site", SQLITE_CONFIG))
    idle: list[socket.socket] = []
    try:
        pid = server.proc.pid
        base = open_fds(pid)
        idle = open_idle(server.port, IDLE)
        assert wait_held([pid], base + IDLE) >= base + IDLE
        start = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=20) == 0, "".join(server.lines)
        assert time.monotonic() - start < 8
    finally:
        for sock in idle:
            sock.close()
        server.stop()
