"""Temp files of killed users-file writers (they hold password hashes) do not stay behind.

Issue 13 item 8: a real ``authctl user add`` is killed with SIGKILL in the middle of its write;
the next ``user add`` and the next server start remove its ``users.toml.tmp.<pid>``, while a
live writer's temp file is never touched. The writer is slowed down only by a
``sitecustomize`` on its PYTHONPATH that makes ``fsync`` of a temp file wait: the authctl code
that runs is the real one.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from server.core.config import PasswordHashConfig
from server.core.passwords import PasswordHasher
from server.core.userfile import UsersFile
from server.core.users import UsersSource
from server.core.users import load_users
from tests.conftest import ROOT
from tests.conftest import Clock
from tests.test_users_integrity import AUTHCTL
from tests.test_users_integrity import cli

HASH = PasswordHasher(PasswordHashConfig(memory_kib=8, iterations=1, parallelism=1)).hash("pw")
PASSWORD = "a long unusual passphrase 7"

SLOW_FSYNC = """\
import os, time
from pathlib import Path

_marker = os.environ.get("SLOW_FSYNC_MARKER")
if _marker:
    _real_fsync = os.fsync

    def _slow_fsync(fd):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if ".tmp." in target:
            Path(_marker).write_text(target)
            time.sleep(120)
        _real_fsync(fd)

    os.fsync = _slow_fsync
"""


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp." in p.name)


@pytest.mark.slow
def test_killed_writer_temp_file_is_removed_later(
    config_file: Path, tmp_path: Path, clock: Clock
) -> None:
    """kill -9 during the write leaves a 0600 temp file; the server start leaves it while its
    writer lives, and the next real ``user add`` removes it once the writer is gone."""
    folder = config_file.parent
    users = folder / "users.toml"
    done = cli(config_file, "user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_FSYNC, encoding="utf-8")
    marker = tmp_path / "in-fsync"
    env = {**os.environ, "PYTHONPATH": f"{hooks}:{ROOT}", "SLOW_FSYNC_MARKER": str(marker)}
    writer = subprocess.Popen(
        [str(AUTHCTL), "--config", str(config_file), "user", "add", "carol", "--password-stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env=env,
        umask=0,
    )
    try:
        assert writer.stdin is not None
        writer.stdin.write(f"{PASSWORD}\n".encode())
        writer.stdin.close()
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert writer.poll() is None, "the writer ended early"
            assert time.monotonic() < deadline, "the writer never reached fsync"
            time.sleep(0.02)
        tmp = Path(marker.read_text(encoding="utf-8"))
        assert tmp.name == f"users.toml.tmp.{writer.pid}"
        assert tmp.stat().st_mode & 0o777 == 0o600
        assert "$argon2id$" in tmp.read_text(encoding="utf-8")
        # A live writer's temp file survives a server start and an explicit clean-up.
        UsersSource(users, now=clock)
        assert UsersFile(users).clean_stale_temp_files() == []
        assert tmp.exists()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    assert tmp.exists(), "nothing removes it by itself"
    assert set(load_users(users)) == {"alice"}
    done = cli(config_file, "user", "add", "dave", "--password-stdin", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert not tmp.exists()
    assert temp_files(folder) == []
    assert set(load_users(users)) == {"alice", "dave"}


def dead_pid() -> int:
    """The id of a process that has ended."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.mark.slow
def test_server_start_removes_dead_writers_temp_files(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Temp files (users and last good copy) of a writer that is gone are removed when the
    server starts, with a warning naming each."""
    users = UsersFile(tmp_path / "users.toml")
    users.add("alice", password=HASH)
    pid = dead_pid()
    stale = [tmp_path / f"users.toml.tmp.{pid}", tmp_path / f"users.toml.bak.tmp.{pid}"]
    for path in stale:
        path.write_text(f'[users.bob]\npassword = "{HASH}"\n', encoding="utf-8")
    unrelated = tmp_path / "users.toml.tmp.notes"
    unrelated.write_text("mine", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="server.users"):
        UsersSource(users.path, now=clock)
    assert not any(path.exists() for path in stale)
    assert unrelated.exists()
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert all(str(path) in logged for path in stale)


def test_temp_file_is_created_exclusively(tmp_path: Path) -> None:
    """A hard link planted at the writer's temp-file name is never written through: the file
    it points to keeps its content (O_EXCL after removing the stale name)."""
    users = UsersFile(tmp_path / "users.toml")
    users.add("alice", password=HASH)
    victim = tmp_path / "victim"
    victim.write_text("precious\n", encoding="utf-8")
    os.link(victim, tmp_path / f"users.toml.tmp.{os.getpid()}")
    users.add("bob", password=HASH)
    assert victim.read_text(encoding="utf-8") == "precious\n"
    assert set(load_users(users.path)) == {"alice", "bob"}
    assert temp_files(tmp_path) == []


def test_server_start_without_stale_files_creates_nothing(tmp_path: Path, clock: Clock) -> None:
    """The clean-up at server start opens no lock file when there is nothing to clean."""
    path = tmp_path / "users.toml"
    path.write_text(f'[users.alice]\npassword = "{HASH}"\n', encoding="utf-8")
    UsersSource(path, now=clock)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.toml"]
