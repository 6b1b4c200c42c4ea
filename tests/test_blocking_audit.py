"""The audit hook of ``tests/blocking_audit.py`` catches blocking calls inside ``forbidden``."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from server.core import blocking
from tests import blocking_audit
from tests.blocking_audit import BlockingCall
from tests.conftest import ROOT


def test_each_watched_call_is_refused_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("x", encoding="utf-8")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with blocking.forbidden:
            with pytest.raises(BlockingCall), path.open(encoding="utf-8"):
                pass
            with pytest.raises(BlockingCall), socket.socket() as client:
                client.connect(listener.getsockname())
            with pytest.raises(BlockingCall):
                sqlite3.connect(tmp_path / "db")
    found = blocking_audit.taken()  # taken here, so this test itself passes
    assert [entry.split("(", 1)[0] for entry in found] == [
        "open",
        "socket.connect",
        "sqlite3.connect",
    ]
    assert str(path) in found[0]


def test_outside_forbidden_nothing_is_recorded(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x", encoding="utf-8")
    sqlite3.connect(tmp_path / "db").close()
    assert blocking_audit.taken() == []


def test_a_call_in_another_thread_is_recorded_too(tmp_path: Path) -> None:
    """The inline path runs in waitress's I/O thread, not in the test's."""

    def io_thread() -> None:
        # swallowed, as the inline path swallows it (the pool answers instead)
        with blocking.forbidden, contextlib.suppress(BlockingCall):
            (tmp_path / "f").write_text("x", encoding="utf-8")

    thread = threading.Thread(target=io_thread, name="io")
    thread.start()
    thread.join()
    found = blocking_audit.taken()
    assert len(found) == 1
    assert found[0].startswith("open(")
    assert " in io, " in found[0]


VIOLATION = """
from server.core import blocking

def test_swallowed_violation(tmp_path):
    with blocking.forbidden:
        try:
            open(tmp_path / "x", "w")
        except Exception:
            pass  # swallowed, as the inline path swallows every exception

def test_clean(tmp_path):
    open(tmp_path / "x", "w").close()
"""


@pytest.mark.slow
def test_a_swallowed_violation_fails_its_test(tmp_path: Path) -> None:
    """A whole pytest run with the plugin: the test whose violation was swallowed fails,
    naming the call; the clean one passes."""
    (tmp_path / "test_violation.py").write_text(VIOLATION, encoding="utf-8")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.blocking_audit",
            "-p",
            "no:cacheprovider",
            "-c",
            "/dev/null",
            "--rootdir",
            str(tmp_path),
            "-q",
            str(tmp_path / "test_violation.py"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout
    assert "FAILED" in run.stdout
    assert "test_swallowed_violation" in run.stdout
    assert "a call that may block ran inside blocking.forbidden" in run.stdout
    assert "open(" in run.stdout
