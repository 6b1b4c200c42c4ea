"""Tests for ``authctl init``: a working starter setup that never overwrites anything."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import tomllib
from dataclasses import replace
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


# --------------------------------------------------------------------------- init --join


def _joined(runner: CliRunner, tmp_path: Path, *extra: str) -> tuple[Path, Path, str]:
    """init a host folder ``a`` and join ``b`` to it; (a, b, join output)."""
    host_a, host_b = tmp_path / "a", tmp_path / "b"
    assert runner.invoke(cli, ["init", str(host_a)]).exit_code == 0
    result = runner.invoke(cli, ["init", "--join", str(host_a), *extra, str(host_b)])
    assert result.exit_code == 0, result.output
    return host_a, host_b, result.output


def test_join_shares_users_storage_and_secrets(runner: CliRunner, tmp_path: Path) -> None:
    """The joined config reads A's users file and storage and holds a 0600 copy of every
    secret under A's secrets/ (the storage key and any other key file), in a 0700 folder."""
    host_a = tmp_path / "a"
    assert runner.invoke(cli, ["init", str(host_a)]).exit_code == 0
    (host_a / "secrets" / "oidc").mkdir(mode=0o700)
    (host_a / "secrets" / "oidc" / "signing.pem").write_bytes(b"PEM\n")
    (host_a / "secrets" / "reset.key").write_bytes(b"r" * 40)
    host_b = tmp_path / "b"
    result = runner.invoke(cli, ["init", "--join", str(host_a), str(host_b)])
    assert result.exit_code == 0, result.output
    a, b = load_config(host_a / "authctl.toml"), load_config(host_b / "authctl.toml")
    assert b.users.file == a.users.file == host_a / "users.toml"
    assert b.storage.path == a.storage.path == host_a / "authctl.db"
    assert b.storage.encryption_key_file == host_b / "secrets" / "storage.key"
    assert (b.session, b.totp, b.regulation) == (a.session, a.totp, a.regulation)
    assert [replace(r, line=0) for r in b.access_control.rules] == [
        replace(r, line=0) for r in a.access_control.rules
    ]
    for name in ("storage.key", "reset.key", "oidc/signing.pem"):
        copied = host_b / "secrets" / name
        assert copied.read_bytes() == (host_a / "secrets" / name).read_bytes(), name
        assert mode(copied) == 0o600, name
    assert mode(host_b / "secrets") == mode(host_b / "secrets" / "oidc") == 0o700
    assert mode(host_b / "authctl.toml") == 0o600
    assert (host_b / "certs" / "cert.pem").is_file()
    assert (host_b / "certs" / "cert.pem").read_bytes() != (
        host_a / "certs" / "cert.pem"
    ).read_bytes()
    assert not (host_b / "users.toml").exists()
    text = " ".join(result.output.split())
    assert 'backend = "postgres"' in text
    assert 'store = "redis"' in text
    assert str(host_a / "users.toml") in text


def test_join_a_config_file_and_a_secret_outside_secrets(runner: CliRunner, tmp_path: Path) -> None:
    """EXISTING may name the config file; a secret file the config names outside secrets/
    (here the Redis password) is copied to secrets/<name> and the config points at the copy."""
    host_a = tmp_path / "a"
    assert runner.invoke(cli, ["init", str(host_a)]).exit_code == 0
    password = tmp_path / "elsewhere" / "redis.password"
    password.parent.mkdir()
    password.write_text("s3cret\n")
    config = host_a / "authctl.toml"
    config.write_text(
        config.read_text().replace(
            'store = "sqlite"', f'store = "redis"\nredis_password_file = "{password}"'
        )
    )
    host_b = tmp_path / "b"
    result = runner.invoke(cli, ["init", "--join", str(config), str(host_b)])
    assert result.exit_code == 0, result.output
    joined = load_config(host_b / "authctl.toml")
    assert joined.session.redis_password_file == host_b / "secrets" / "redis.password"
    assert (host_b / "secrets" / "redis.password").read_text() == "s3cret\n"
    assert mode(host_b / "secrets" / "redis.password") == 0o600
    assert 'store = "redis"' not in " ".join(result.output.split())


def test_join_never_overwrites(runner: CliRunner, tmp_path: Path) -> None:
    """A DIR that already has a config: exit 3 naming it, nothing written (no secret copied)."""
    host_a = tmp_path / "a"
    assert runner.invoke(cli, ["init", str(host_a)]).exit_code == 0
    host_b = tmp_path / "b"
    host_b.mkdir()
    (host_b / "authctl.toml").write_text("keep me\n")
    result = runner.invoke(cli, ["init", "--join", str(host_a), str(host_b)])
    assert result.exit_code == 3, result.output
    assert str(host_b / "authctl.toml") in result.output
    assert "never overwrites" in result.output
    assert (host_b / "authctl.toml").read_text() == "keep me\n"
    assert not (host_b / "secrets").exists()
    assert not (host_b / "certs").exists()


def test_join_refuses_its_own_folder_and_a_broken_source(runner: CliRunner, tmp_path: Path) -> None:
    """Joining a folder to itself is a usage error; a source whose config is invalid or whose
    key is missing is exit 3 naming the file, and nothing is written."""
    host_a = tmp_path / "a"
    assert runner.invoke(cli, ["init", str(host_a)]).exit_code == 0
    assert runner.invoke(cli, ["init", "--join", str(host_a), str(host_a)]).exit_code == 2
    (host_a / "secrets" / "storage.key").unlink()
    result = runner.invoke(cli, ["init", "--join", str(host_a), str(tmp_path / "b")])
    assert result.exit_code == 3, result.output
    assert "storage.key" in result.output
    assert not (tmp_path / "b").exists()
    (host_a / "authctl.toml").write_text("[server\n")
    result = runner.invoke(cli, ["init", "--join", str(host_a), str(tmp_path / "b")])
    assert result.exit_code == 3, result.output
    assert "authctl.toml" in result.output
    assert not (tmp_path / "b").exists()


def test_join_port_must_be_the_portals(runner: CliRunner, tmp_path: Path) -> None:
    """A joined host serves the same portal: --port may repeat its port, not change it."""
    host_a = tmp_path / "a"
    assert runner.invoke(cli, ["init", "--port", "8443", str(host_a)]).exit_code == 0
    wrong = runner.invoke(
        cli, ["init", "--join", str(host_a), "--port", "443", str(tmp_path / "b")]
    )
    assert wrong.exit_code == 2, wrong.output
    assert "8443" in wrong.output
    assert not (tmp_path / "b").exists()
    same = runner.invoke(
        cli, ["init", "--join", str(host_a), "--port", "8443", str(tmp_path / "b")]
    )
    assert same.exit_code == 0, same.output
    joined = load_config(tmp_path / "b" / "authctl.toml")
    assert joined.session.cookies[0].portal_url == "https://auth.example.com:8443"


def test_join_into_the_current_folder(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without DIR the current folder joins; the next steps are plain commands."""
    assert runner.invoke(cli, ["init", str(tmp_path / "a")]).exit_code == 0
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    result = runner.invoke(cli, ["init", "--join", "../a"])
    assert result.exit_code == 0, result.output
    assert load_config(tmp_path / "b" / "authctl.toml").users.file == tmp_path / "a" / "users.toml"
    assert "  authctl serve" in result.output


# --------------------------------------------------------------------------- joined hosts serving


def _two_hosts(tmp_path: Path, config: str) -> tuple[Path, Path]:
    """A host folder over the serve tests' users and ``config``, and a host joined to it by a
    real ``authctl init --join``."""
    from tests.test_serve import AUTHCTL
    from tests.test_serve import make_folder

    host_a = make_folder(tmp_path / "a", config)
    host_b = tmp_path / "b"
    done = subprocess.run(
        [AUTHCTL, "init", "--join", str(host_a), str(host_b)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return host_a, host_b


@pytest.mark.slow
def test_joined_hosts_share_users_and_sqlite_sessions(tmp_path: Path) -> None:
    """Two real ``serve`` processes on one machine, B joined to A: a session made on A opens on
    B (the same SQLite session store, sealed with the copied key), and a user added through
    B's config signs in on A (the same users file)."""
    import os

    from tests.test_serve import AUTHCTL
    from tests.test_serve import SQLITE_CONFIG
    from tests.test_serve import Server
    from tests.test_serve import cookie_of

    host_a, host_b = _two_hosts(tmp_path, SQLITE_CONFIG)
    server_a, server_b = Server(host_a), Server(host_b)
    try:
        alice = cookie_of(server_a.login("alice"))
        allowed = server_b.verify("https://app.example.com/", alice)
        assert allowed.status == 200
        assert allowed.getheader("Remote-User") == "alice"
        env = {**os.environ, "AUTHCTL_CONFIG": str(host_b / "authctl.toml")}
        subprocess.run(
            [AUTHCTL, "user", "add", "dora", "--password-stdin"],
            input="dora's long passphrase\n",
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        body = json.dumps({"username": "dora", "password": "dora's long passphrase"})
        headers = {
            "Content-Type": "application/json",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "auth.example.com",
            "Origin": "https://auth.example.com",
        }
        time.sleep(0.6)  # A looks at the users file every 0.25 s (a failed try would count)
        resp = server_a.request("POST", "/api/firstfactor", headers, body.encode())
        assert resp.status == 200
        dora = cookie_of(resp)
        assert server_b.verify("https://app.example.com/", dora).getheader("Remote-User") == (
            "dora"
        )
    finally:
        server_a.stop()
        server_b.stop()


@pytest.mark.slow
def test_joined_hosts_share_redis_sessions(tmp_path: Path) -> None:
    """With ``store = "redis"`` (a real redis-server), a session signed in on B opens on A, and
    a host that does not hold the copied key (a fresh init) refuses the same record."""
    from tests.test_redis_store import RedisServer
    from tests.test_redis_store import redis_config
    from tests.test_serve import Server
    from tests.test_serve import cookie_of
    from tests.test_serve import make_folder

    redis_server = RedisServer(tmp_path / "redis")
    host_a, host_b = _two_hosts(tmp_path, redis_config(redis_server.url))
    stranger = make_folder(tmp_path / "c", redis_config(redis_server.url))
    servers = [Server(host_a), Server(host_b), Server(stranger)]
    try:
        server_a, server_b, server_c = servers
        bob = cookie_of(server_b.login("bob"))
        allowed = server_a.verify("https://app.example.com/", bob)
        assert allowed.status == 200
        assert allowed.getheader("Remote-User") == "bob"
        assert server_c.verify("https://app.example.com/", bob).status == 302
    finally:
        for server in servers:
            server.stop()
        redis_server.stop()


def test_a_failed_write_leaves_nothing_behind(runner: CliRunner, tmp_path: Path) -> None:
    """A file that cannot be written (``secrets`` is a file, not a folder) ends init with exit
    3 naming the path, and what init had already written is removed again."""
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "secrets").write_text("not a folder\n")
    result = runner.invoke(cli, ["init", str(demo)])
    assert result.exit_code == 3, result.output
    assert "cannot write" in result.output
    assert sorted(p.name for p in demo.iterdir()) == ["secrets"]
