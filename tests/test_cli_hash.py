"""Tests for ``authctl hash-password``: an argon2id PHC string with the configured parameters."""

from __future__ import annotations

from pathlib import Path

import argon2
import pytest
from click.testing import CliRunner

from authctl.cli import cli
from server.core.config import PasswordHashConfig
from server.core.passwords import PasswordHasher
from server.core.passwords import check_hash


def test_hash_with_config(runner: CliRunner, config_file: Path) -> None:
    """With a config, the hash uses users.password_hash and verifies."""
    result = runner.invoke(
        cli, ["--config", str(config_file), "hash-password", "--password-stdin"], input="pw\n"
    )
    assert result.exit_code == 0, result.output
    phc = result.stdout.strip()
    assert check_hash(phc) is None
    params = argon2.extract_parameters(phc)
    assert (params.memory_cost, params.time_cost, params.parallelism) == (8, 1, 1)
    assert PasswordHasher().verify(phc, "pw")
    assert result.stderr == ""


def test_hash_without_config_uses_defaults(runner: CliRunner, tmp_path: Path) -> None:
    """Without a config file the default parameters are used, and stderr says so."""
    missing = tmp_path / "authctl.toml"
    result = runner.invoke(
        cli, ["--config", str(missing), "hash-password", "--password-stdin"], input="pw\n"
    )
    assert result.exit_code == 0, result.output
    params = argon2.extract_parameters(result.stdout.strip())
    default = PasswordHashConfig()
    assert (params.memory_cost, params.time_cost, params.parallelism) == (
        default.memory_kib,
        default.iterations,
        default.parallelism,
    )
    assert "does not exist" in result.stderr
    assert "default" in result.stderr


def test_hash_with_prompt(runner: CliRunner, config_file: Path) -> None:
    """Without --password-stdin the password is asked twice and not echoed."""
    result = runner.invoke(
        cli, ["--config", str(config_file), "hash-password"], input="s3cret\ns3cret\n"
    )
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output
    assert PasswordHasher().verify(result.stdout.strip().splitlines()[-1], "s3cret")


def test_broken_config_is_data_error(runner: CliRunner, write_config: object) -> None:
    """A config that exists but is invalid exits 3 instead of guessing parameters."""
    assert callable(write_config)
    path = write_config("[users\n")
    result = runner.invoke(
        cli, ["--config", str(path), "hash-password", "--password-stdin"], input="pw\n"
    )
    assert result.exit_code == 3, result.output
    assert "invalid TOML" in result.output


@pytest.mark.parametrize("stdin", ["\n", ""], ids=["newline", "eof"])
def test_empty_password_refused(runner: CliRunner, config_file: Path, stdin: str) -> None:
    """An empty password is a usage error."""
    result = runner.invoke(
        cli, ["--config", str(config_file), "hash-password", "--password-stdin"], input=stdin
    )
    assert result.exit_code == 2, result.output
    assert "the password is empty" in result.output
