"""SIGTERM drains ``authctl serve`` (issue 13 item 5): stop accepting, answer every request
already received (the last one on a connection with ``Connection: close``), no TCP reset,
exit within ``server.shutdown_grace``; for one process and for ``--workers``.

Real signals against a real server. SIGSTOP freezes the server while the requests are
written, so every one of them is in its sockets' receive buffers, unanswered, when SIGTERM
is handled (after SIGCONT): the worst case for a drain.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import pytest

from tests.test_serve import SQLITE_CONFIG
from tests.test_serve import Server
from tests.test_serve import make_folder
from tests.test_workers import Workers
from tests.test_workers import children
from tests.test_workers import wait_for

pytestmark = pytest.mark.slow

REQUEST = (
    b"GET /api/authz/forward-auth HTTP/1.1\r\nHost: auth\r\n"
    b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: app.example.com\r\n"
    b"X-Forwarded-Uri: /\r\nX-Forwarded-Method: GET\r\nAccept: text/html\r\n\r\n"
)
#: The grace of the tests that check that everything is answered: 480 requests take about
#: 1 s on an idle machine, but ten times that when the server runs under coverage on a busy
#: one; that a drain stops at its grace is ``test_grace_bounds_the_drain``'s to check.
ANSWER_ALL_GRACE = "30s"
ANSWER_ALL_GRACE_SECONDS = 30
#: Keep-alive connections, and pipelined requests written on each before SIGTERM.
CONNECTIONS = 60
PIPELINED = 8


def with_grace(grace: str) -> str:
    """The SQLite config with ``grace``, logging warnings only: 480 decision lines through a
    pipe the test process reads (slowly, under coverage) made the logging lock the bottleneck,
    and a drain measured the test's reader instead of the server."""
    config = SQLITE_CONFIG.replace("[server]\n", f'[server]\nshutdown_grace = "{grace}"\n', 1)
    return config + '\n[log]\nlevel = "warning"\n'


@dataclass
class Outcome:
    """What the clients saw after SIGTERM."""

    answered: int = 0
    resets: int = 0
    not_closed_last: int = 0  # connections whose last answer lacked Connection: close
    short: list[int] = field(default_factory=list)  # answers per connection that got fewer


def responses(data: bytes) -> list[tuple[int, dict[str, str]]]:
    """Parse back-to-back HTTP/1.1 responses with Content-Length bodies."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if len(rest) < length:
            break
        out.append((int(lines[0].split()[1]), headers))
        data = rest[length:]
    return out


def read_to_end(sock: socket.socket, deadline: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes; whether the connection was reset."""
    chunks = []
    while True:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return b"".join(chunks), True
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)


def keep_alive_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that each got one answer and stay open (keep-alive)."""
    conns = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(REQUEST)
        data = b""
        while not responses(data):
            data += sock.recv(65536)
        conns.append(sock)
    return conns


def collect(conns: list[socket.socket], expected: int, timeout: float) -> Outcome:
    outcome = Outcome()
    deadline = time.monotonic() + timeout
    for sock in conns:
        data, reset = read_to_end(sock, deadline)
        got = responses(data)
        outcome.answered += len(got)
        outcome.resets += reset
        if len(got) < expected:
            outcome.short.append(len(got))
        elif got and got[-1][1].get("connection") != "close":
            outcome.not_closed_last += 1
        assert all(status == 302 for status, _ in got)
    return outcome


def freeze(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)


def thaw(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def test_sigterm_answers_everything_received_one_process(tmp_path: Path) -> None:
    """60 keep-alive connections x 8 pipelined requests, all unanswered when SIGTERM is
    handled, plus 20 idle ones: all 480 answered, the last of each with Connection: close,
    then a clean end of file everywhere; no reset; exit status 0 within the grace."""
    server = Server(make_folder(tmp_path / "site", with_grace(ANSWER_ALL_GRACE)))
    pid = server.proc.pid
    conns: list[socket.socket] = []
    try:
        conns = keep_alive_connections(server.port, CONNECTIONS)
        idle = keep_alive_connections(server.port, 20)
        freeze([pid])
        for sock in conns:
            sock.sendall(REQUEST * PIPELINED)
        server.proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        thaw([pid])
        outcome = collect(conns, PIPELINED, timeout=ANSWER_ALL_GRACE_SECONDS + 2)
        idle_outcome = collect(idle, 0, timeout=5)
        status = server.proc.wait(timeout=10)
        took = time.monotonic() - start
        conns += idle
    finally:
        thaw([pid])
        for sock in conns:
            sock.close()
        server.stop()
    assert outcome.resets == 0
    assert outcome.short == [], "".join(server.lines)[-3000:]
    assert outcome.answered == CONNECTIONS * PIPELINED
    assert outcome.not_closed_last == 0
    assert idle_outcome == Outcome()  # each idle one: no answer, no reset, just closed
    assert status == 0, "".join(server.lines)
    assert took < ANSWER_ALL_GRACE_SECONDS, took
    assert not any("Exception" in line for line in server.lines), "".join(server.lines)


def test_sigterm_answers_everything_received_with_workers(tmp_path: Path) -> None:
    """The same with --workers 2: both workers drain, nothing is reset, status 0."""
    server = Workers(make_folder(tmp_path / "site", with_grace(ANSWER_ALL_GRACE)), 2)
    workers = sorted(children(server.proc.pid))
    conns: list[socket.socket] = []
    try:
        conns = keep_alive_connections(server.port, CONNECTIONS)
        freeze(workers)
        for sock in conns:
            sock.sendall(REQUEST * PIPELINED)
        server.proc.send_signal(signal.SIGTERM)
        # the parent forwards SIGTERM to the (frozen) workers; they see it when thawed
        time.sleep(0.3)
        thaw(workers)
        outcome = collect(conns, PIPELINED, timeout=ANSWER_ALL_GRACE_SECONDS + 2)
        status = server.proc.wait(timeout=15)
    finally:
        thaw(workers)
        for sock in conns:
            sock.close()
        server.stop()
    assert outcome.resets == 0
    assert outcome.short == []
    assert outcome.answered == CONNECTIONS * PIPELINED
    assert outcome.not_closed_last == 0
    assert status == 0, "".join(server.lines)
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)


def test_sigterm_refuses_new_connections_while_draining(tmp_path: Path) -> None:
    """Once the drain has begun, a new connection is refused, not accepted and left."""
    server = Server(make_folder(tmp_path / "site", with_grace("5s")))
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        slow.sendall(REQUEST[:40])  # half a request keeps the server draining
        time.sleep(0.2)
        server.proc.send_signal(signal.SIGTERM)

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            except ConnectionRefusedError:
                return True
            return False

        assert wait_for(refused, timeout=5)
        assert server.proc.poll() is None  # still waiting for the half request
    finally:
        slow.close()
        server.stop()


def test_grace_bounds_the_drain(tmp_path: Path) -> None:
    """A client that never finishes its request cannot hold the stop beyond the grace."""
    server = Server(make_folder(tmp_path / "site", with_grace("1s")))
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        slow.sendall(REQUEST[:40])
        time.sleep(0.2)
        start = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=10) == 0
        took = time.monotonic() - start
    finally:
        slow.close()
        server.stop()
    assert 0.9 < took < 4, took
    assert any("shutdown_grace" in line for line in server.lines), server.lines
