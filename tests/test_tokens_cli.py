"""Tests for ``authctl token create|list|revoke`` (SPEC §7.6) and ``remove_tokens``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from click.testing import Result
from webob import Request

from authctl.cli import cli
from authctl.cmd_token import remove_tokens
from server.core.config import load_config
from server.core.session_store import MemoryStore
from server.web.app import make_app


def run(runner: CliRunner, config: Path, *args: str, stdin: str | None = None) -> Result:
    return runner.invoke(cli, ["--config", str(config), *args], input=stdin)


@pytest.fixture
def setup(runner: CliRunner, config_file: Path) -> Path:
    """The base config with a storage key, an audit file and the users alice and bob."""
    key = config_file.parent / "secrets" / "storage.key"
    key.parent.mkdir(mode=0o700)
    key.write_text("4d" * 32 + "\n")
    key.chmod(0o600)
    text = config_file.read_text()
    config_file.write_text('[log]\naudit_file = "audit.log"\n\n' + text)
    for name in ("alice", "bob"):
        added = run(
            runner, config_file, "user", "add", name, "--password-stdin", stdin="pw-pw-pw-pw\n"
        )
        assert added.exit_code == 0, added.output
    return config_file


def create(runner: CliRunner, config: Path, *args: str) -> dict[str, object]:
    result = run(runner, config, "token", "create", "alice", "--name", "ci", "--json", *args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def verify(config: Path, token: str, host: str = "app.example.com", uri: str = "/") -> int:
    """The forward-auth status of a fresh app (another process) on the same files."""
    app = make_app(load_config(config), store=MemoryStore())
    try:
        req = Request.blank(
            "/api/authz/forward-auth",
            headers={
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": host,
                "X-Forwarded-Uri": uri,
                "X-Forwarded-Method": "GET",
                "Authorization": f"Bearer {token}",
            },
        )
        req.environ["REMOTE_ADDR"] = "127.0.0.1"
        return int(req.get_response(app).status_int)
    finally:
        from server.core import audit

        audit.configure(None)


def test_create_prints_the_token_once_and_it_works(runner: CliRunner, setup: Path) -> None:
    """Plain output: the token alone on stdout (for $(...)), the rest on stderr."""
    result = run(runner, setup, "token", "create", "Alice", "--name", "backup job")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("authctl_")
    assert len(token) == 8 + 43
    assert "It is not shown again" in result.stderr
    assert verify(setup, token) == 200
    listed = run(runner, setup, "token", "list", "--json")
    assert token not in listed.output
    for path in setup.parent.rglob("*"):
        if path.is_file():
            assert token[8:].encode() not in path.read_bytes(), path


def test_create_json_and_options(runner: CliRunner, setup: Path) -> None:
    data = create(runner, setup, "--expires", "30d", "--domain", "App.example.com")
    assert set(data) == {
        "token",
        "user",
        "id",
        "name",
        "created_at",
        "last_used_at",
        "expires_at",
        "expired",
        "domains",
        "two_factor",
        "created_by",
    }
    assert data["domains"] == ["app.example.com"]
    assert data["created_by"] == "cli"
    assert data["expires_at"] is not None
    assert data["two_factor"] is False
    token = str(data["token"])
    assert verify(setup, token) == 200
    assert verify(setup, token, host="public.example.com") == 401  # outside its domains


def test_two_factor_tokens_pass_two_factor_rules(runner: CliRunner, setup: Path) -> None:
    """alice is not an admin, so use a rule any user reaches: the admin path needs
    group:admins; give alice the group first."""
    groups = run(runner, setup, "user", "groups", "alice", "--add", "admins")
    assert groups.exit_code == 0, groups.output
    one = str(create(runner, setup)["token"])
    two = create(runner, setup, "--two-factor")
    assert two["two_factor"] is True
    assert verify(setup, one, uri="/admin") == 401
    assert verify(setup, str(two["token"]), uri="/admin") == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--expires", "soon"], "not a duration"),
        (["--expires", "0"], "positive"),
        (["--domain", "evil.test"], "outside every cookie domain"),
        (["--domain", "a..example.com"], "--domain"),
        (["--name", " "], "name is empty"),
    ],
)
def test_create_usage_errors(runner: CliRunner, setup: Path, args: list[str], message: str) -> None:
    result = run(runner, setup, "token", "create", "alice", "--name", "x", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_create_for_an_unknown_user_is_a_data_error(runner: CliRunner, setup: Path) -> None:
    result = run(runner, setup, "token", "create", "zed", "--name", "x")
    assert result.exit_code == 3
    assert "no user 'zed'" in result.output
    assert run(runner, setup, "token", "create", "Bad Name!", "--name", "x").exit_code == 2


def test_list_and_revoke(runner: CliRunner, setup: Path) -> None:
    assert "No tokens." in run(runner, setup, "token", "list").output
    mine = create(runner, setup)
    bobs = run(runner, setup, "token", "create", "bob", "--name", "b", "--json")
    bob_id = json.loads(bobs.stdout)["id"]
    every = json.loads(run(runner, setup, "token", "list", "--json").stdout)
    assert {row["user"] for row in every} == {"alice", "bob"}
    assert all("token" not in row for row in every)
    only = json.loads(run(runner, setup, "token", "list", "--user", "BOB", "--json").stdout)
    assert [row["id"] for row in only] == [bob_id]
    table = run(runner, setup, "token", "list")
    assert str(mine["id"]) in table.output
    assert "never" in table.output
    revoked = run(runner, setup, "token", "revoke", str(mine["id"]))
    assert revoked.exit_code == 0, revoked.output
    assert "of alice" in revoked.output
    assert verify(setup, str(mine["token"])) == 401
    again = run(runner, setup, "token", "revoke", str(mine["id"]))
    assert again.exit_code == 3
    assert "no live token" in again.output
    events = [json.loads(line) for line in (setup.parent / "audit.log").read_text().splitlines()]
    kinds = [(e["event"], e["user"], e["ip"], e["reason"]) for e in events]
    assert ("token_created", "alice", "cli", "admin") in kinds
    assert ("token_revoked", "alice", "cli", "admin") in kinds


def test_without_a_storage_database(runner: CliRunner, setup: Path) -> None:
    """Listing and removing create nothing; revoking says there is nothing."""
    db = setup.parent / "authctl.db"
    assert not db.exists()
    assert json.loads(run(runner, setup, "token", "list", "--json").stdout) == []
    revoke = run(runner, setup, "token", "revoke", "x")
    assert revoke.exit_code == 3
    assert "no token is stored" in revoke.output
    assert remove_tokens(load_config(setup), "alice") == 0
    assert not db.exists()


def test_remove_tokens_revokes_every_token_of_a_user(runner: CliRunner, setup: Path) -> None:
    token = str(create(runner, setup)["token"])
    create(runner, setup)
    assert remove_tokens(load_config(setup), "alice") == 2
    assert verify(setup, token) == 401


def test_an_unreadable_key_file_is_a_data_error(runner: CliRunner, setup: Path) -> None:
    create(runner, setup)
    (setup.parent / "secrets" / "storage.key").unlink()
    result = run(runner, setup, "token", "list")
    assert result.exit_code == 3
    assert "storage key file" in result.output
