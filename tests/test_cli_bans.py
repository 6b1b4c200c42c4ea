"""Tests for ``authctl bans list|clear`` against the storage database the server uses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from click.testing import Result

from authctl.cli import cli
from server.core.config import load_config
from server.core.regulation import Regulator
from server.core.storage import Storage
from server.core.storage import StorageError


def run(runner: CliRunner, config: Path, *args: str) -> Result:
    """Invoke ``authctl --config CONFIG ARGS`` in-process."""
    return runner.invoke(cli, ["--config", str(config), *args])


def ban_three_times(config_file: Path, username: str, ip: str) -> None:
    """Fail three logins as ``username`` from ``ip`` now, as the server would record them."""
    config = load_config(config_file)
    storage = Storage(config.storage, require_key=False)
    regulator = Regulator(config.regulation, storage)
    for _ in range(3):
        regulator.record(username, ip, "1FA", False)
    storage.close()


@pytest.fixture
def ip_config(config_file: Path) -> Path:
    """The base config with both regulation modes."""
    text = config_file.read_text() + '\n[regulation]\nmodes = ["user", "ip"]\n'
    config_file.write_text(text)
    return config_file


def test_list_without_database(runner: CliRunner, config_file: Path) -> None:
    """With no database yet, list says there are no bans and creates nothing."""
    result = run(runner, config_file, "bans", "list")
    assert result.exit_code == 0, result.output
    assert "No bans." in result.output
    json_result = run(runner, config_file, "bans", "list", "--json")
    assert json.loads(json_result.stdout) == []
    assert not load_config(config_file).storage.path.exists()


def test_list_shows_running_bans(runner: CliRunner, ip_config: Path) -> None:
    """A user and an IP banned by regulation are listed, as a table and as JSON."""
    ban_three_times(ip_config, "Alice", "::ffff:203.0.113.7")
    result = run(runner, ip_config, "bans", "list")
    assert result.exit_code == 0, result.output
    assert "alice" in result.output
    assert "203.0.113.7" in result.output
    assert "Exceeding" in result.output  # the table wraps the reason at 80 columns
    data = json.loads(run(runner, ip_config, "bans", "list", "--json").stdout)
    assert sorted((b["kind"], b["value"]) for b in data) == [
        ("ip", "203.0.113.7"),
        ("user", "alice"),
    ]
    for ban in data:
        assert set(ban) == {"kind", "value", "expires", "expires_in", "reason", "created"}
        assert ban["expires"].endswith("Z")
        assert 290 <= ban["expires_in"] <= 300


def test_list_needs_no_key(runner: CliRunner, config_file: Path) -> None:
    """Bans are listed although the storage key file does not exist."""
    ban_three_times(config_file, "alice", "10.0.0.1")
    assert not load_config(config_file).storage.encryption_key_file.exists()
    assert run(runner, config_file, "bans", "list").exit_code == 0


def test_clear_user_in_another_spelling(runner: CliRunner, config_file: Path) -> None:
    """clear ALICE lifts alice's ban; clearing again exits 3."""
    ban_three_times(config_file, "alice", "10.0.0.1")
    result = run(runner, config_file, "bans", "clear", "ALICE")
    assert result.exit_code == 0, result.output
    assert "Lifted the ban of user alice" in result.output
    assert json.loads(run(runner, config_file, "bans", "list", "--json").stdout) == []
    again = run(runner, config_file, "bans", "clear", "alice")
    assert again.exit_code == 3
    assert "no ban on 'alice'" in again.output


def test_clear_ip(runner: CliRunner, ip_config: Path) -> None:
    """clear IP lifts that address's ban and leaves the user's."""
    ban_three_times(ip_config, "alice", "203.0.113.7")
    result = run(runner, ip_config, "bans", "clear", "203.0.113.7")
    assert result.exit_code == 0, result.output
    data = json.loads(run(runner, ip_config, "bans", "list", "--json").stdout)
    assert [(b["kind"], b["value"]) for b in data] == [("user", "alice")]


def test_clear_without_database(runner: CliRunner, config_file: Path) -> None:
    """Without a database there is nothing to lift: exit 3, and nothing is created."""
    result = run(runner, config_file, "bans", "clear", "alice")
    assert result.exit_code == 3
    assert not load_config(config_file).storage.path.exists()


def test_foreign_database_exits_3(runner: CliRunner, config_file: Path) -> None:
    """A storage path holding something else is a data error (exit 3), for list and clear."""
    load_config(config_file).storage.path.write_bytes(b"not sqlite" * 500)
    for args in (("bans", "list"), ("bans", "clear", "alice")):
        result = run(runner, config_file, *args)
        assert result.exit_code == 3, result.output


def test_store_failure_after_opening_exits_3(
    runner: CliRunner, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while reading or deleting bans is exit 3, not a traceback."""
    ban_three_times(config_file, "alice", "10.0.0.1")

    def broken(self: Regulator, *args: object) -> list[object]:
        raise StorageError("disk I/O error")

    monkeypatch.setattr(Regulator, "list_bans", broken)
    monkeypatch.setattr(Regulator, "clear", broken)
    for args in (("bans", "list"), ("bans", "clear", "alice")):
        result = run(runner, config_file, *args)
        assert result.exit_code == 3, result.output
        assert "disk" in result.output


def test_expired_bans_are_not_listed(runner: CliRunner, config_file: Path) -> None:
    """A ban that has ended is neither listed nor clearable."""
    storage = Storage(load_config(config_file).storage, require_key=False)
    storage.save_ban("user", "bob", time.time() - 1, "old")
    storage.close()
    assert "No bans." in run(runner, config_file, "bans", "list").output
    assert run(runner, config_file, "bans", "clear", "bob").exit_code == 3
