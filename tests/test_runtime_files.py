"""One "files that serve needs" check: ``rules check`` warns and ``serve`` refuses on the same
problems (``server.core.runtime``), a directory where a file is expected included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from authctl.cli import cli
from server.core.config import load_config
from server.core.runtime import runtime_files


@pytest.fixture
def folder(config_file: Path) -> Path:
    """The base config with its storage key and a users file that is a directory."""
    base = config_file.parent
    (base / "secrets").mkdir()
    (base / "secrets" / "storage.key").write_text("k" * 64)
    (base / "users.toml").mkdir()
    return base


def test_directory_is_the_same_verdict_in_check_and_serve(runner: CliRunner, folder: Path) -> None:
    """A directory at users.file: `rules check` warns about it, `serve` refuses to start on
    it (exit 3), and both name the same problem."""
    config = str(folder / "authctl.toml")
    check = runner.invoke(cli, ["--config", config, "rules", "check", "--json"])
    assert check.exit_code == 0, check.output
    findings = json.loads(check.stdout)["findings"]
    assert [(f["severity"], f["code"]) for f in findings] == [("warning", "missing-file")]
    assert "is a directory, not a file" in findings[0]["message"]
    assert findings[0]["message"].startswith("users.file: ")
    serve = runner.invoke(cli, ["--config", config, "serve"])
    assert serve.exit_code == 3, serve.output
    assert f"{folder / 'users.toml'}: the users file is a directory, not a file" in serve.output


def test_missing_and_unusable_files(folder: Path) -> None:
    """Each needed file is checked the same way: missing, a directory, or fine."""
    config = load_config(folder / "authctl.toml")
    (problem,) = runtime_files(config)
    assert (problem.key, problem.problem) == ("users.file", "is a directory, not a file")
    (folder / "secrets" / "storage.key").unlink()
    (folder / "users.toml").rmdir()
    problems = runtime_files(config)
    assert [(p.key, p.problem) for p in problems] == [
        ("storage.encryption_key_file", "does not exist"),
        ("users.file", "does not exist"),
    ]
    assert "`authctl user add NAME`" in problems[1].fix
    (folder / "users.toml").write_text("")
    (folder / "secrets" / "storage.key").write_text("k" * 64)
    assert runtime_files(config) == []
