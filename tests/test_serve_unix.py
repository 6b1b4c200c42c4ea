"""``server.address = "unix:/path"`` works (issue 12 item 17): the socket's peer is trusted
explicitly (only processes allowed to open the socket file can connect), the file is mode
0660, and real requests over the unix socket are decided, with one process and --workers."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_serve import AUTHCTL
from tests.test_serve import SQLITE_CONFIG
from tests.test_serve import make_folder

pytestmark = pytest.mark.slow


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(self.path)
        self.sock = sock


def verify(path: str, host: str, **extra: str) -> int:
    conn = UnixConnection(path)
    try:
        headers = {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": host,
            "X-Forwarded-Uri": "/",
            "X-Forwarded-Method": "GET",
            "Accept": "text/html",
            **extra,
        }
        conn.request("GET", "/api/authz/forward-auth", headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.fixture(params=[1, 2], ids=["one", "workers"])
def unix_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """``authctl serve`` on a unix socket from the config's server.address."""
    sock_path = str(tmp_path / "run" / "authctl.sock")
    (tmp_path / "run").mkdir()
    config = SQLITE_CONFIG.replace("[server]\n", f'[server]\naddress = "unix:{sock_path}"\n', 1)
    folder = make_folder(tmp_path / "site", config)
    env = {**os.environ, "AUTHCTL_CONFIG": str(folder / "authctl.toml")}
    proc = subprocess.Popen(
        [AUTHCTL, "serve", "--workers", str(request.param)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if re.search(r"serving on /", line):
            break
    else:
        proc.kill()
    try:
        assert proc.poll() is None, "".join(lines)
        yield sock_path
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()
    assert proc.returncode == 0


def test_requests_over_a_unix_socket_are_decided(unix_server: str) -> None:
    """No 400 "peer is not in server.trusted_proxies": the unix peer is trusted, so the
    forwarded headers are read and the client IP comes from X-Forwarded-For."""
    assert stat.S_IMODE(Path(unix_server).stat().st_mode) == 0o660
    assert verify(unix_server, "app.example.com") == 302  # a login redirect, not a 400
    assert verify(unix_server, "public.example.com") == 200
    # other.example.com allows the 10.0.0.0/8 network: the client IP is believed from XFF
    assert verify(unix_server, "other.example.com", **{"X-Forwarded-For": "10.9.8.7"}) == 200
    assert verify(unix_server, "other.example.com", **{"X-Forwarded-For": "192.0.2.1"}) == 403
    assert verify(unix_server, "other.example.com") == 403  # no XFF: unknown client IP


def test_a_live_socket_is_not_stolen(unix_server: str, tmp_path: Path) -> None:
    """A second serve on the same path refuses to start instead of unlinking the live socket."""
    config = SQLITE_CONFIG.replace("[server]\n", f'[server]\naddress = "unix:{unix_server}"\n', 1)
    folder = make_folder(tmp_path / "second", config)
    env = {**os.environ, "AUTHCTL_CONFIG": str(folder / "authctl.toml")}
    done = subprocess.run(
        [AUTHCTL, "serve"], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert done.returncode != 0
    assert "another server listens" in done.stderr
    assert verify(unix_server, "app.example.com") == 302


def test_a_regular_file_is_never_removed(tmp_path: Path) -> None:
    """server.address naming an existing regular file: refused, the file is left alone."""
    victim = tmp_path / "important.txt"
    victim.write_text("keep me")
    config = SQLITE_CONFIG.replace("[server]\n", f'[server]\naddress = "unix:{victim}"\n', 1)
    folder = make_folder(tmp_path / "site", config)
    env = {**os.environ, "AUTHCTL_CONFIG": str(folder / "authctl.toml")}
    done = subprocess.run(
        [AUTHCTL, "serve"], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert done.returncode != 0
    assert "is not a socket" in done.stderr
    assert victim.read_text() == "keep me"
