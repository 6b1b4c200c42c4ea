"""``authctl serve`` on an address it cannot listen on: one line naming the address and the
fix, exit 3 (SPEC §4: the config, or ``--address``, names something this machine cannot
use), never a traceback or a Python dict; with one process and with ``--workers 2``.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.serve.httpd import listen_problem
from tests.test_serve import AUTHCTL
from tests.test_serve import SQLITE_CONFIG
from tests.test_serve import make_folder

pytestmark = pytest.mark.slow


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another socket listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def _serve(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (folder / "secrets" / "storage.key").chmod(0o600)  # no warning about it on stderr
    return subprocess.run(
        [AUTHCTL, "--config", str(folder / "authctl.toml"), "serve", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert "{'" not in result.stderr  # no Python dict
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use(tmp_path: Path, taken_port: int, workers: str) -> None:
    folder = make_folder(tmp_path / "site", SQLITE_CONFIG)
    line = _one_line(_serve(folder, "--address", f"127.0.0.1:{taken_port}", "--workers", workers))
    assert line == (
        f"Error: cannot listen on 127.0.0.1:{taken_port}: the port is already in use "
        "(fix: stop the server that holds it, or choose another port in --address)"
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_unix_socket_in_a_missing_folder(tmp_path: Path, workers: str) -> None:
    folder = make_folder(tmp_path / "site", SQLITE_CONFIG)
    missing = tmp_path / "no" / "such"
    path = missing / "authctl.sock"
    line = _one_line(_serve(folder, "--address", f"unix:{path}", "--workers", workers))
    assert line == (
        f"Error: cannot listen on unix:{path}: the folder {missing} does not exist "
        f"(fix: create it with `mkdir -p {missing}`, or choose another path in --address)"
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_unresolvable_host_named_by_the_config(tmp_path: Path, workers: str) -> None:
    config = SQLITE_CONFIG.replace(
        "[server]\n", '[server]\naddress = "no-such-host.invalid:9091"\n'
    )
    folder = make_folder(tmp_path / "site", config)
    line = _one_line(_serve(folder, "--workers", workers))
    assert line.startswith(
        "Error: cannot listen on no-such-host.invalid:9091: the host name does not resolve ("
    )
    assert line.endswith(
        "(fix: write an IP address of this machine (127.0.0.1, [::1], 0.0.0.0) or a name it "
        f"resolves in server.address in {folder / 'authctl.toml'})"
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_address_of_another_machine(tmp_path: Path, workers: str) -> None:
    folder = make_folder(tmp_path / "site", SQLITE_CONFIG)
    line = _one_line(_serve(folder, "--address", "192.0.2.1:9091", "--workers", workers))
    assert line == (
        "Error: cannot listen on 192.0.2.1:9091: no interface of this machine has that "
        "address (fix: write an address of this machine (127.0.0.1, or 0.0.0.0 for every "
        "interface) in --address)"
    )


def test_other_errors_still_name_the_address_and_a_fix() -> None:
    too_long = OSError("AF_UNIX path too long")
    assert listen_problem("unix:/x", too_long, "--address") == (
        "cannot listen on unix:/x: the path is too long for a unix socket (fix: choose a "
        "path of at most 107 bytes in --address)"
    )
    odd = OSError(71, "Protocol error")
    assert listen_problem("127.0.0.1:1", odd, "--address") == (
        "cannot listen on 127.0.0.1:1: Protocol error (fix: choose another address in --address)"
    )
