"""``authctl session list|revoke`` (SPEC §7.6) against the store the server uses: the SQLite
file beside the storage database, and a real redis-server."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from click.testing import Result

from authctl.cli import cli
from server.core.config import Config
from server.core.config import load_config
from server.core.crypto import read_key_file
from server.core.session_store import SessionStore
from server.core.session_store import SQLiteStore
from server.core.session_store import session_db_path
from server.core.sessions import Session
from server.core.sessions import SessionManager
from tests.conftest import BASE_CONFIG

FIELDS = {
    "user",
    "handle",
    "created_at",
    "last_seen_at",
    "ip",
    "user_agent",
    "authentication_level",
    "remember_me",
    "cookie_domain",
    "auth_time",
}


def run(runner: CliRunner, config: Path, *args: str) -> Result:
    """Invoke ``authctl --config CONFIG ARGS`` in-process (a wide terminal: one line a row)."""
    return runner.invoke(cli, ["--config", str(config), *args], env={"COLUMNS": "300"})


def with_key(config_file: Path, text: str) -> Path:
    config_file.write_text(text)
    key = config_file.parent / "secrets" / "storage.key"
    key.parent.mkdir(exist_ok=True)
    key.write_text(secrets.token_hex(32) + "\n")
    key.chmod(0o600)
    return config_file


@pytest.fixture
def sqlite_config(config_file: Path) -> Path:
    """The base config with the SQLite session store, an audit log and a storage key."""
    text = BASE_CONFIG.replace('store = "memory"', 'store = "sqlite"')
    return with_key(config_file, '[log]\naudit_file = "audit.log"\n\n' + text)


def open_store(config: Config) -> SessionStore:
    key = read_key_file(Path(config.storage.encryption_key_file))
    if config.session.store == "redis":
        from server.core.redis_store import RedisStore

        return RedisStore.from_config(config.session, key=key, cache=False)
    return SQLiteStore(session_db_path(config), key=key)


Signer = Callable[..., Session]


@pytest.fixture
def sign_in(sqlite_config: Path) -> Iterator[Signer]:
    """Make sessions as the server would, in the configured store."""
    config = load_config(sqlite_config)
    store = open_store(config)
    manager = SessionManager(config.session, store)

    def make(user: str = "alice", **client: str) -> Session:
        return manager.create("example.com", user, 1, **client)

    yield make
    store.close()


def alive(config_file: Path, session: Session) -> bool:
    config = load_config(config_file)
    store = open_store(config)
    try:
        return SessionManager(config.session, store).load(session.id, "example.com") is not None
    finally:
        store.close()


def test_list_without_a_database(runner: CliRunner, sqlite_config: Path) -> None:
    """No session database yet: no sessions, and nothing is created."""
    result = run(runner, sqlite_config, "session", "list")
    assert result.exit_code == 0, result.output
    assert "No sessions." in result.output
    assert json.loads(run(runner, sqlite_config, "session", "list", "--json").stdout) == []
    assert not session_db_path(load_config(sqlite_config)).exists()
    result = run(runner, sqlite_config, "session", "revoke", "--user", "alice")
    assert result.exit_code == 3


def test_list_shows_every_users_sessions(
    runner: CliRunner, sqlite_config: Path, sign_in: Signer
) -> None:
    """A table and JSON of the live sessions; --user filters (any spelling)."""
    laptop = sign_in(ip="203.0.113.7", user_agent="Firefox/130")
    sign_in("bob", user_agent="curl")
    result = run(runner, sqlite_config, "session", "list")
    assert result.exit_code == 0, result.output
    assert "alice" in result.output
    assert "203.0.113.7" in result.output
    assert laptop.id not in result.output
    assert laptop.handle is not None
    narrow = runner.invoke(cli, ["--config", str(sqlite_config), "session", "list"])
    assert laptop.handle in narrow.output  # never cut, even at 80 columns
    rows = json.loads(run(runner, sqlite_config, "session", "list", "--json").stdout)
    assert sorted(row["user"] for row in rows) == ["alice", "bob"]
    assert all(set(row) == FIELDS for row in rows)
    only = json.loads(
        run(runner, sqlite_config, "session", "list", "--user", "ALICE", "--json").stdout
    )
    assert [(r["handle"], r["ip"], r["user_agent"]) for r in only] == [
        (laptop.handle, "203.0.113.7", "Firefox/130")
    ]


def test_list_escapes_what_the_client_sent(
    runner: CliRunner, sqlite_config: Path, sign_in: Signer
) -> None:
    """Rich markup in a User-Agent is printed as text, not applied."""
    sign_in(user_agent="[bold red]x[/bold red] [link=https://evil]y[/link]")
    result = run(runner, sqlite_config, "session", "list")
    assert result.exit_code == 0, result.output
    assert "[bold red]x[/bold red]" in result.output
    assert "[link=https://evil]" in result.output


def test_revoke_by_handle(runner: CliRunner, sqlite_config: Path, sign_in: Signer) -> None:
    """A handle ends that session (and only it), audited as done by the admin; again is 3."""
    laptop, phone = sign_in(), sign_in()
    assert laptop.handle is not None
    result = run(runner, sqlite_config, "session", "revoke", laptop.handle)
    assert result.exit_code == 0, result.output
    assert "Ended 1 session of alice." in result.output
    assert not alive(sqlite_config, laptop)
    assert alive(sqlite_config, phone)
    again = run(runner, sqlite_config, "session", "revoke", laptop.handle)
    assert again.exit_code == 3
    lines = (sqlite_config.parent / "audit.log").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [(e["event"], e["user"], e["ip"], e["reason"]) for e in events] == [
        ("session_revoked", "alice", "cli", "admin")
    ]
    assert laptop.handle not in "".join(lines)


def test_a_session_id_is_not_a_handle(
    runner: CliRunner, sqlite_config: Path, sign_in: Signer
) -> None:
    """Giving a session id as the handle ends nothing (exit 3) and never echoes the id."""
    session = sign_in()
    result = run(runner, sqlite_config, "session", "revoke", session.id)
    assert result.exit_code == 3
    assert session.id not in result.output
    assert alive(sqlite_config, session)


def test_revoke_a_user(runner: CliRunner, sqlite_config: Path, sign_in: Signer) -> None:
    """--user ends every session of that user (any spelling); other users keep theirs."""
    mine = [sign_in() for _ in range(3)]
    bob = sign_in("bob")
    result = run(runner, sqlite_config, "session", "revoke", "--user", "Alice")
    assert result.exit_code == 0, result.output
    assert "Ended 3 sessions of alice." in result.output
    assert not any(alive(sqlite_config, s) for s in mine)
    assert alive(sqlite_config, bob)
    assert run(runner, sqlite_config, "session", "revoke", "--user", "alice").exit_code == 3


@pytest.mark.parametrize("args", [[], ["H" * 32, "--user", "alice"]])
def test_revoke_needs_one_target(runner: CliRunner, sqlite_config: Path, args: list[str]) -> None:
    """Neither or both of HANDLE and --user is a usage error (exit 2)."""
    result = run(runner, sqlite_config, "session", "revoke", *args)
    assert result.exit_code == 2
    assert "either a HANDLE or --user" in result.output


@pytest.mark.parametrize("command", [["list"], ["revoke", "--user", "alice"]])
def test_the_memory_store_cannot_be_reached(
    runner: CliRunner, config_file: Path, command: list[str]
) -> None:
    """With store = "memory" the sessions live inside the server: exit 3 saying so."""
    result = run(runner, config_file, "session", *command)
    assert result.exit_code == 3
    assert "inside the server process" in result.output


def test_a_missing_key_file_is_a_clear_error(
    runner: CliRunner, sqlite_config: Path, sign_in: Signer
) -> None:
    """The storage key is needed to open the records: exit 3 naming it."""
    sign_in()
    (sqlite_config.parent / "secrets" / "storage.key").unlink()
    result = run(runner, sqlite_config, "session", "list")
    assert result.exit_code == 3
    assert "storage.key" in result.output


@pytest.mark.slow
def test_redis_list_and_revoke(runner: CliRunner, config_file: Path, tmp_path: Path) -> None:
    """On Redis: list, revoke by handle and by user."""
    from tests.redis_services import RedisServer

    server = RedisServer(tmp_path / "redis")
    try:
        text = BASE_CONFIG.replace(
            'store = "memory"', f'store = "redis"\nredis_url = "{server.url}"'
        )
        config_path = with_key(config_file, text)
        config = load_config(config_path)
        store = open_store(config)
        manager = SessionManager(config.session, store)
        laptop = manager.create("example.com", "alice", 1, user_agent="Firefox")
        phone = manager.create("example.com", "alice", 2)
        bob = manager.create("example.com", "bob", 1)
        rows = json.loads(run(runner, config_path, "session", "list", "--json").stdout)
        assert sorted((r["user"], r["authentication_level"]) for r in rows) == [
            ("alice", 1),
            ("alice", 2),
            ("bob", 1),
        ]
        assert laptop.handle is not None
        assert run(runner, config_path, "session", "revoke", laptop.handle).exit_code == 0
        assert manager.load(laptop.id, "example.com") is None
        assert manager.load(phone.id, "example.com") is not None
        assert run(runner, config_path, "session", "revoke", "--user", "bob").exit_code == 0
        assert manager.load(bob.id, "example.com") is None
        assert manager.load(phone.id, "example.com") is not None
        store.close()
    finally:
        server.stop()


def test_an_old_handle_starting_with_a_dash_is_revoked_after_double_dash(
    runner: CliRunner, sqlite_config: Path, sign_in: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handle issued before handles avoided a leading ``-`` (1 in 64 did) is taken after
    ``--``; without it the command line reads it as an option (a usage error, never a
    revocation of anything else)."""
    import server.core.sessions as sessions_module

    old = "-" + "a" * 31
    monkeypatch.setattr(sessions_module, "new_handle", lambda: old)
    laptop = sign_in()
    assert laptop.handle == old
    assert run(runner, sqlite_config, "session", "revoke", old).exit_code == 2
    assert alive(sqlite_config, laptop)
    result = run(runner, sqlite_config, "session", "revoke", "--", old)
    assert result.exit_code == 0, result.output
    assert not alive(sqlite_config, laptop)
