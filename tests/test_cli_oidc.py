"""``authctl oidc keygen | client new | client list`` (SPEC §7.3) and ``init``'s issuer key."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from click.testing import CliRunner

from authctl.cli import cli
from server.core.config import load_config
from server.core.oidc.keys import key_problem
from server.core.passwords import PasswordHasher
from tests.conftest import BASE_CONFIG

OIDC = '\n[identity_providers.oidc]\nenable = true\nissuer_private_key_file = "keys/issuer.pem"\n'


def test_keygen_writes_the_configured_key_and_refuses_to_overwrite(tmp_path: Path) -> None:
    config = tmp_path / "authctl.toml"
    config.write_text(BASE_CONFIG + OIDC)
    runner = CliRunner()
    result = runner.invoke(cli, ["--config", str(config), "oidc", "keygen"])
    assert result.exit_code == 0, result.output
    key = tmp_path / "keys" / "issuer.pem"
    assert key_problem(key.read_bytes()) is None
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    before = key.read_bytes()
    again = runner.invoke(cli, ["--config", str(config), "oidc", "keygen"])
    assert again.exit_code == 3
    assert "--force" in again.output
    assert key.read_bytes() == before
    forced = runner.invoke(cli, ["--config", str(config), "oidc", "keygen", "--force"])
    assert forced.exit_code == 0
    assert key.read_bytes() != before


def test_keygen_without_config_uses_the_default_path(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "none.toml"), "oidc", "keygen"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "secrets" / "oidc-rs256.pem").is_file()


def test_client_new_prints_a_block_that_loads_and_a_secret_that_matches(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "oidc", "client", "new", "grafana", "--redirect-uri",
            "https://grafana.example.com/login/generic_oauth", "--scope", "profile",
            "--scope", "email", "--policy", "one_factor", "--name", 'Gra"fana', "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    secret, block = out["client_secret"], out["toml"]
    assert secret not in block
    config = tmp_path / "authctl.toml"
    config.write_text(BASE_CONFIG + OIDC + "\n" + block)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "issuer.pem").write_bytes(
        (Path(__file__).parent / "data" / "oidc-rs256.pem").read_bytes()
    )
    client = load_config(config).identity_providers.oidc.clients[0]
    assert client.client_name == 'Gra"fana'
    assert client.scopes == ("openid", "profile", "email")
    assert client.authorization_policy == "one_factor"
    assert PasswordHasher().verify(client.client_secret, secret)
    listed = runner.invoke(cli, ["--config", str(config), "oidc", "client", "list", "--json"])
    data = json.loads(listed.output)
    assert data["enabled"] is True
    assert data["clients"][0]["client_id"] == "grafana"
    assert "$argon2id" not in listed.output
    table = runner.invoke(cli, ["--config", str(config), "oidc", "client", "list"])
    assert table.exit_code == 0
    assert "grafana" in table.output


def test_client_new_plain_output_and_public_clients() -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["oidc", "client", "new", "app", "--redirect-uri", "https://a.example.com/cb"]
    )
    assert result.exit_code == 0
    assert 'client_secret = "$argon2id$' in result.output
    assert "shown once" in result.output
    public = runner.invoke(
        cli,
        ["oidc", "client", "new", "cli", "--public", "--redirect-uri", "http://127.0.0.1:8400/cb"],
    )
    assert public.exit_code == 0
    assert "public = true" in public.output
    assert "client_secret" not in public.output
    assert 'token_endpoint_auth_method = "none"' in public.output


def test_client_new_refuses_bad_input() -> None:
    runner = CliRunner()
    for args in (
        ["bad id", "--redirect-uri", "https://a.example.com/cb"],
        ["app", "--redirect-uri", "http://a.example.com/cb"],
        ["app", "--redirect-uri", "http://127.0.0.1/cb"],
        ["app", "--redirect-uri", "https://a.example.com/cb", "--scope", "admin"],
        ["app"],
    ):
        result = runner.invoke(cli, ["oidc", "client", "new", *args])
        assert result.exit_code == 2, (args, result.output)


def test_client_list_without_clients(tmp_path: Path) -> None:
    config = tmp_path / "authctl.toml"
    config.write_text(BASE_CONFIG)
    result = CliRunner().invoke(cli, ["--config", str(config), "oidc", "client", "list"])
    assert result.exit_code == 0
    assert "No OIDC clients" in result.output


def test_init_writes_an_issuer_key(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "site")])
    assert result.exit_code == 0, result.output
    key = tmp_path / "site" / "secrets" / "oidc-rs256.pem"
    assert key_problem(key.read_bytes()) is None
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
