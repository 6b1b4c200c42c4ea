"""Tests for ``authctl init``: a working starter setup that never overwrites anything."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from authctl._starter import STARTER_CONFIG
from authctl.cli import cli
from server.core.config import load_config
from server.core.users import load_users

FILES = ("authctl.toml", "users.toml", "secrets/storage.key")


def mode(path: Path) -> int:
    """The permission bits of ``path``."""
    return path.stat().st_mode & 0o777


def test_init_writes_working_setup(runner: CliRunner, tmp_path: Path) -> None:
    """init writes a config that loads, an empty valid users file and a 32-byte key."""
    demo = tmp_path / "demo"
    result = runner.invoke(cli, ["init", str(demo)])
    assert result.exit_code == 0, result.output
    config = load_config(demo / "authctl.toml")
    assert config.users.file == demo / "users.toml"
    assert config.session.store == "sqlite"
    assert config.session.cookies[0].domain == "example.com"
    assert config.session.cookies[0].portal_url == "https://auth.example.com"
    assert config.storage.encryption_key_file == demo / "secrets" / "storage.key"
    assert len(config.access_control.rules) >= 2
    assert len(load_users(demo / "users.toml")) == 0
    key = (demo / "secrets" / "storage.key").read_text(encoding="ascii")
    assert re.fullmatch(r"[0-9a-f]{64}\n", key)


def test_init_modes(runner: CliRunner, tmp_path: Path) -> None:
    """The config, the users file and the key are 0600 and the secrets folder 0700."""
    assert runner.invoke(cli, ["init", str(tmp_path)]).exit_code == 0
    assert mode(tmp_path / "users.toml") == 0o600
    assert mode(tmp_path / "secrets" / "storage.key") == 0o600
    assert mode(tmp_path / "secrets") == 0o700
    assert mode(tmp_path / "authctl.toml") == 0o600


@pytest.mark.slow
def test_init_config_is_private_under_open_umask(tmp_path: Path) -> None:
    """A real ``authctl init`` under umask 000 still writes authctl.toml 0600: it may come to
    hold secrets (a Redis URL with a password)."""
    script = Path(sys.executable).parent / "authctl"
    folder = tmp_path / "demo"
    done = subprocess.run(
        ["sh", "-c", 'umask 000; exec "$0" init "$1"', str(script), str(folder)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert mode(folder / "authctl.toml") == 0o600
    assert mode(folder / "users.toml") == 0o600


def test_init_keys_differ(runner: CliRunner, tmp_path: Path) -> None:
    """Each init draws a fresh storage key."""
    assert runner.invoke(cli, ["init", str(tmp_path / "a")]).exit_code == 0
    assert runner.invoke(cli, ["init", str(tmp_path / "b")]).exit_code == 0
    key_a = (tmp_path / "a" / "secrets" / "storage.key").read_bytes()
    assert key_a != (tmp_path / "b" / "secrets" / "storage.key").read_bytes()


def test_init_default_is_current_folder(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without DIR, init writes into the current folder and suggests plain commands."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["init"])
    assert result.exit_code == 0, result.output
    for name in FILES:
        assert (tmp_path / name).is_file()
    assert "authctl user add alice" in result.output


def test_init_prints_files_and_next_steps(runner: CliRunner, tmp_path: Path) -> None:
    """init lists what it wrote and the next commands, with --config pointing at the file."""
    demo = tmp_path / "demo"
    result = runner.invoke(cli, ["init", str(demo)])
    for name in FILES:
        assert str(demo / name) in result.output
    assert f"authctl --config {demo / 'authctl.toml'} user add alice" in result.output
    assert "rules check" in result.output
    assert "serve" in result.output


@pytest.mark.parametrize("existing", FILES, ids=["config", "users", "key"])
def test_init_never_overwrites(runner: CliRunner, tmp_path: Path, existing: str) -> None:
    """If any target exists, init exits 3 naming it and writes nothing at all."""
    target = tmp_path / existing
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("keep me\n", encoding="utf-8")
    result = runner.invoke(cli, ["init", str(tmp_path)])
    assert result.exit_code == 3, result.output
    assert str(target) in result.output
    assert "never overwrites" in result.output
    assert target.read_text(encoding="utf-8") == "keep me\n"
    for name in FILES:
        if name != existing:
            assert not (tmp_path / name).exists(), name


def test_init_refuses_dangling_symlink(runner: CliRunner, tmp_path: Path) -> None:
    """A symbolic link in the way (even a dangling one) counts as existing."""
    (tmp_path / "users.toml").symlink_to(tmp_path / "elsewhere.toml")
    result = runner.invoke(cli, ["init", str(tmp_path)])
    assert result.exit_code == 3, result.output
    assert not (tmp_path / "elsewhere.toml").exists()


def test_init_refuses_file_as_folder(runner: CliRunner, tmp_path: Path) -> None:
    """A DIR that is a file is a usage error."""
    (tmp_path / "file").write_text("", encoding="utf-8")
    result = runner.invoke(cli, ["init", str(tmp_path / "file")])
    assert result.exit_code == 2, result.output


def test_starter_shows_every_section() -> None:
    """The starter config shows every section of SPEC §2.1 with its default values."""
    data = tomllib.loads(STARTER_CONFIG)
    for section in (
        "server", "users", "storage", "session", "totp", "regulation", "notifier",
        "access_control",
    ):  # fmt: skip
        assert section in data, section
    assert data["users"] == {
        "file": "users.toml",
        "watch": True,
        "password_hash": {"memory_kib": 65536, "iterations": 3, "parallelism": 4},
    }
    assert data["session"]["store"] == "sqlite"
    assert data["access_control"]["default_policy"] == "deny"
    assert "redis_url" in STARTER_CONFIG
    assert "[notifier.smtp]" in STARTER_CONFIG


def test_starter_matches_config_defaults(tmp_path: Path) -> None:
    """Every value the starter shows equals the loader's default (it documents them)."""
    from server.core.config import PasswordHashConfig
    from server.core.config import RegulationConfig
    from server.core.config import TotpConfig

    path = tmp_path / "authctl.toml"
    path.write_text(STARTER_CONFIG, encoding="utf-8")
    config = load_config(path)
    assert config.users.password_hash == PasswordHashConfig()
    assert config.totp == TotpConfig()
    assert config.regulation == RegulationConfig()
    assert config.server.address == "127.0.0.1:9091"
    assert (config.session.expiration, config.session.inactivity) == (3600, 300)


def test_init_writes_a_certificate_for_the_portal(runner: CliRunner, tmp_path: Path) -> None:
    """init writes certs/cert.pem for the portal host and the cookie domain's wildcard."""
    from cryptography import x509

    result = runner.invoke(cli, ["init", str(tmp_path)])
    assert result.exit_code == 0, result.output
    cert = x509.load_pem_x509_certificate((tmp_path / "certs" / "cert.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(names.get_values_for_type(x509.DNSName))
    assert {"auth.example.com", "*.example.com"} <= dns
    assert mode(tmp_path / "certs" / "key.pem") == 0o600


def test_init_refuses_an_existing_certificate(runner: CliRunner, tmp_path: Path) -> None:
    """An existing certs/cert.pem stops init before it writes anything."""
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "cert.pem").write_text("mine")
    result = runner.invoke(cli, ["init", str(tmp_path)])
    assert result.exit_code == 3
    assert not (tmp_path / "authctl.toml").exists()
    assert (tmp_path / "certs" / "cert.pem").read_text() == "mine"
