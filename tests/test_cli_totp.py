"""Tests for ``authctl user totp add|remove`` and the ``has_totp`` helper for ``user show``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from click.testing import Result

from authctl.cli import cli
from authctl.cmd_totp import has_totp
from authctl.cmd_totp import remove_totp
from server.core.config import Config
from server.core.config import load_config
from server.core.storage import WRONG_KEY
from server.core.storage import Storage
from server.core.storage import StorageError
from server.core.totp import TotpService
from server.core.totp import totp_at
from tests.conftest import ROOT


def run(runner: CliRunner, config: Path, *args: str, stdin: str | None = None) -> Result:
    """Invoke ``authctl --config CONFIG ARGS`` in-process."""
    return runner.invoke(cli, ["--config", str(config), *args], input=stdin)


@pytest.fixture
def setup(runner: CliRunner, config_file: Path) -> Path:
    """The base config with a storage key and the user alice (cheap argon2)."""
    key = config_file.parent / "secrets" / "storage.key"
    key.parent.mkdir(mode=0o700)
    key.write_text("4d" * 32 + "\n")
    key.chmod(0o600)
    result = run(
        runner, config_file, "user", "add", "alice", "--password-stdin", stdin="pw-pw-pw\n"
    )
    assert result.exit_code == 0, result.output
    return config_file


def config_of(path: Path) -> Config:
    """The loaded config."""
    return load_config(path)


def add_json(runner: CliRunner, config: Path, *extra: str) -> dict[str, str]:
    """``user totp add alice --json`` parsed."""
    result = run(runner, config, "user", "totp", "add", "alice", "--json", *extra)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def test_add_json_prints_exactly_secret_and_uri(runner: CliRunner, setup: Path) -> None:
    """--json prints one object with exactly "secret" and "uri", and the secret works."""
    data = add_json(runner, setup)
    assert list(data) == ["secret", "uri"]
    assert data["uri"].startswith("otpauth://totp/authctl:alice?")
    query = parse_qs(urlsplit(data["uri"]).query)
    assert query["secret"] == [data["secret"]]
    config = config_of(setup)
    storage = Storage(config.storage)
    now = 1_800_000_000.0
    service = TotpService(storage, config.totp, now=lambda: now)
    assert service.check("alice", totp_at(data["secret"], now, config.totp))
    storage.close()


def test_add_prints_uri_secret_and_qr(runner: CliRunner, setup: Path) -> None:
    """Without --json: a terminal QR code, the URI and the secret, on stdout."""
    result = run(runner, setup, "user", "totp", "add", "Alice")
    assert result.exit_code == 0, result.output
    assert "URI:    otpauth://totp/authctl:alice?secret=" in result.stdout
    assert "Secret: " in result.stdout
    assert "\u2588" in result.stdout or "\u2580" in result.stdout  # QR blocks
    assert "Enrolled TOTP for alice" in result.stdout


def test_add_refuses_to_replace_without_force(runner: CliRunner, setup: Path) -> None:
    """A second add exits 3 and keeps the secret; --force replaces it."""
    first = add_json(runner, setup)
    result = run(runner, setup, "user", "totp", "add", "alice")
    assert result.exit_code == 3, result.output
    assert result.stderr == (
        "Error: user 'alice' has a TOTP secret already; add --force to replace it "
        "(the old authenticator entry stops working)\n"
    )
    second = add_json(runner, setup, "--force")
    assert second["secret"] != first["secret"]
    text = run(runner, setup, "user", "totp", "add", "alice", "--force")
    assert "Replaced TOTP for alice" in text.stdout


def test_add_unknown_user_exits_3(runner: CliRunner, setup: Path) -> None:
    """A name not in the users file is a data error (exit 3) and enrols nothing."""
    result = run(runner, setup, "user", "totp", "add", "bob")
    assert result.exit_code == 3, result.output
    assert "no user 'bob'" in result.output
    assert not has_totp(config_of(setup), "bob")


def test_add_invalid_name_exits_2(runner: CliRunner, setup: Path) -> None:
    """A name that cannot be a user name is a usage error (exit 2)."""
    result = run(runner, setup, "user", "totp", "add", "bad name")
    assert result.exit_code == 2, result.output


def test_add_without_key_file_exits_3(runner: CliRunner, setup: Path) -> None:
    """A missing storage key is exit 3 with the file named; no plaintext fallback."""
    (setup.parent / "secrets" / "storage.key").unlink()
    result = run(runner, setup, "user", "totp", "add", "alice")
    assert result.exit_code == 3, result.output
    assert "storage.key is missing" in result.output


def test_add_with_wrong_key_exits_3(runner: CliRunner, setup: Path) -> None:
    """After the key file changes, add exits 3 saying to restore the right key."""
    add_json(runner, setup)
    (setup.parent / "secrets" / "storage.key").write_text("77" * 32)
    result = run(runner, setup, "user", "totp", "add", "alice", "--force")
    assert result.exit_code == 3, result.output
    assert WRONG_KEY in " ".join(result.output.split())


def test_add_store_failure_exits_3(
    runner: CliRunner, setup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storage failure while enrolling is exit 3, not a traceback."""
    from server.core.storage import StorageError

    def broken(self: TotpService, *args: object, **kwargs: object) -> tuple[str, str]:
        raise StorageError("database is locked")

    monkeypatch.setattr(TotpService, "enrol", broken)
    result = run(runner, setup, "user", "totp", "add", "alice")
    assert result.exit_code == 3, result.output
    assert "locked" in result.output


def test_remove(runner: CliRunner, setup: Path) -> None:
    """remove deletes the secret (any spelling); removing again exits 3."""
    add_json(runner, setup)
    assert has_totp(config_of(setup), "ALICE")
    result = run(runner, setup, "user", "totp", "remove", "ALICE")
    assert result.exit_code == 0, result.output
    assert "Removed the TOTP secret of alice" in result.output
    assert not has_totp(config_of(setup), "alice")
    again = run(runner, setup, "user", "totp", "remove", "alice")
    assert again.exit_code == 3
    assert "has no TOTP secret" in again.output


def test_user_remove_also_removes_totp(runner: CliRunner, setup: Path) -> None:
    """Removing a user removes their secret, so a re-created user does not inherit it."""
    add_json(runner, setup)
    removed = run(runner, setup, "user", "remove", "alice")
    assert removed.exit_code == 0, removed.output
    assert "TOTP" in removed.output
    assert not has_totp(config_of(setup), "alice")
    assert run(runner, setup, "user", "totp", "remove", "alice").exit_code == 3


def test_remove_needs_no_key(runner: CliRunner, setup: Path) -> None:
    """Removing reads no secret, so it works even when the key file is lost."""
    add_json(runner, setup)
    (setup.parent / "secrets" / "storage.key").unlink()
    assert run(runner, setup, "user", "totp", "remove", "alice").exit_code == 0


def test_helpers_without_a_database(setup: Path) -> None:
    """has_totp and remove_totp answer False without creating the database."""
    config = config_of(setup)
    assert not has_totp(config, "alice")
    assert not remove_totp(config, "alice")
    assert not config.storage.path.exists()


def test_helpers_turn_storage_errors_into_exit_3(runner: CliRunner, setup: Path) -> None:
    """A database that is not ours: the helpers raise StorageError, and ``user show`` and
    ``user remove`` end with its message and exit 3 (the root group's one translation)."""
    config = config_of(setup)
    config.storage.path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError):
        has_totp(config, "alice")
    with pytest.raises(StorageError):
        remove_totp(config, "alice")
    for argv in (["user", "show", "alice"], ["user", "remove", "alice"]):
        result = run(runner, setup, *argv)
        assert result.exit_code == 3, result.output
        assert result.stderr.startswith("Error: cannot open the storage database ")
        assert "file is not a database" in result.stderr
        assert "Traceback" not in result.output


def test_helpers_report_failures_after_opening(
    runner: CliRunner, setup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure of the query itself ends the command with exit 3 too."""
    config = config_of(setup)
    Storage(config.storage).close()

    def broken(self: Storage, name: str) -> bool:
        raise StorageError("disk I/O error")

    monkeypatch.setattr(Storage, "has_totp", broken)
    monkeypatch.setattr(Storage, "delete_totp", broken)
    with pytest.raises(StorageError, match="disk"):
        has_totp(config, "alice")
    with pytest.raises(StorageError, match="disk"):
        remove_totp(config, "alice")
    for argv in (["user", "show", "alice"], ["user", "remove", "alice"]):
        result = run(runner, setup, *argv)
        assert (result.exit_code, result.stderr) == (3, "Error: disk I/O error\n")


@pytest.mark.parametrize(
    "argv",
    [["user", "totp", "add", "--help"], ["user", "totp", "--help"], ["bans", "list", "--help"]],
    ids=["totp-add", "totp", "bans-list"],
)
def test_help_is_cheap(argv: list[str]) -> None:
    """Help for the new commands loads no storage, segno, rich or cryptography (only the
    error classes the root group translates)."""
    code = (
        "import json, sys\n"
        f"sys.argv = ['authctl', *{argv!r}]\n"
        "from authctl.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stderr.strip().splitlines()[-1]))
    loaded = {m.partition(".")[0] for m in modules}
    assert not loaded & {"segno", "rich", "cryptography", "webob", "waitress", "argon2", "pyotp"}
    assert {m for m in modules if m.startswith("server.")} <= {"server.core", "server.core.errors"}
