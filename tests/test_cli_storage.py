"""``authctl storage status`` and ``authctl storage migrate --to postgres`` (SPEC §7.2), against a
real SQLite file, a real throwaway PostgreSQL 15 cluster (``tests/pgcluster.py``) and a real
redis-server; the copy logic of ``server.core.storage_copy`` directly too."""

from __future__ import annotations

import json
import os
import subprocess
import time
import typing as t
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from authctl.cli import cli
from server.core.config import load_config
from server.core.storage import SCHEMA_VERSION
from server.core.storage import Storage
from server.core.storage_copy import copy_tables
from server.core.storage_copy import key_columns
from server.core.storage_copy import missing_rows
from server.core.storage_copy import verify_tables
from tests import pgcluster
from tests.pgcluster import PASSWORD
from tests.pgcluster import PgCluster
from tests.test_serve import SQLITE_CONFIG
from tests.test_serve import make_folder

SECRET = b"12345678901234567890"
pg_cluster = pgcluster.pg_cluster  # the fixture


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster) -> t.Iterator[str]:
    """A fresh database of its own (not a schema: these tests read its tables as the
    superuser, by plain table names)."""
    dsn = pg_cluster.create_database()
    yield dsn
    pg_cluster.drop_database(dsn)


def site(folder: Path, *, backend: str = "sqlite", postgres: str = "", extra: str = "") -> Path:
    """A host folder (the serve tests' config and users) with ``[storage] backend`` and, when
    given, ``[storage.postgres]`` text; returns the config path."""
    text = SQLITE_CONFIG + f'\n[storage]\nbackend = "{backend}"\n' + postgres + extra
    return make_folder(folder, text) / "authctl.toml"


def pg_section(cluster: PgCluster, dsn: str, timeout: str = "5s") -> str:
    return (
        f'\n[storage.postgres]\ndsn = "{dsn}"\npassword_file = "{cluster.password_file}"\n'
        f'timeout = "{timeout}"\npool_size = 2\n'
    )


def fill(config_path: Path) -> dict[str, int]:
    """Put TOTP enrolments, replay history, bans, log rows and one-time codes in the SQLite
    storage of ``config_path``; its row counts."""
    config = load_config(config_path)
    storage = Storage(replace(config.storage, backend="sqlite"))
    try:
        now = time.time()
        storage.save_totp("alice", SECRET, algorithm="SHA1", digits=6, period=30)
        storage.save_totp("bob", b"b" * 20, algorithm="SHA256", digits=8, period=60, last_step=7)
        storage.save_ban("user", "mallory", now + 3600, "too many failures")
        storage.save_ban("ip", "203.0.113.9", now + 600, "too many failures")
        for i in range(5):
            storage.append_log(now - i, "mallory", "203.0.113.9", "1FA", False)
        storage.append_log(now, "alice", "127.0.0.1", "TOTP", True)
        storage.append_log(now, "alice", "127.0.0.1", "TOTP", True)  # an identical row
        storage.add_one_time_code(
            "otc1", "alice", "elevation", b"d" * 32, issued=now, expires=now + 300,
            session_binding=b"s" * 32, ip="127.0.0.1",
        )  # fmt: skip
        storage.add_one_time_code(
            "otc2", "bob", "reset_password", b"e" * 32, issued=now, expires=now + 300
        )
        return storage.counts()
    finally:
        storage.close()


def invoke(runner: CliRunner, config: Path, *args: str) -> t.Any:
    return runner.invoke(cli, ["--config", str(config), *args])


# --------------------------------------------------------------------------- status


def test_status_of_a_sqlite_storage(runner: CliRunner, tmp_path: Path) -> None:
    """backend, path, schema version and every table's row count, as JSON and as text."""
    config = site(tmp_path / "a")
    counts = fill(config)
    result = invoke(runner, config, "storage", "status", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found == {
        "backend": "sqlite",
        "where": str(tmp_path / "a" / "authctl.db"),
        "schema_version": SCHEMA_VERSION,
        "tables": counts,
    }
    assert counts["totp_configurations"] == 2
    assert counts["authentication_logs"] == 7
    text = invoke(runner, config, "storage", "status")
    assert text.exit_code == 0, text.output
    assert "backend: sqlite" in text.output
    assert f"schema version: {SCHEMA_VERSION}" in text.output
    assert "one_time_codes" in text.output


def test_status_without_a_database_is_exit_3(runner: CliRunner, tmp_path: Path) -> None:
    """No SQLite file yet: exit 3 saying so, and none is created just to say it."""
    config = site(tmp_path / "a")
    result = invoke(runner, config, "storage", "status")
    assert result.exit_code == 3, result.output
    assert "authctl.db" in result.output
    assert not (tmp_path / "a" / "authctl.db").exists()


@pytest.mark.slow
def test_status_of_postgres_names_hosts_never_the_password(
    runner: CliRunner, tmp_path: Path, pg_cluster: PgCluster, pg_dsn: str
) -> None:
    """A PostgreSQL storage: its host and database, never the password."""
    config = site(tmp_path / "a", backend="postgres", postgres=pg_section(pg_cluster, pg_dsn))
    result = invoke(runner, config, "storage", "status", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["backend"] == "postgres"
    assert "127.0.0.1" in found["where"]
    assert pg_dsn.rsplit("/", 1)[1] in found["where"]
    assert found["schema_version"] == SCHEMA_VERSION
    assert set(found["tables"].values()) == {0}
    assert PASSWORD not in result.output


@pytest.mark.slow
def test_status_of_an_unreachable_postgres_is_exit_3(
    runner: CliRunner, tmp_path: Path, pg_cluster: PgCluster
) -> None:
    """Nothing listens on the DSN's port: exit 3 with the reason, within the timeout."""
    from tests.test_redis_store import free_port

    dsn = f"postgresql://authctl@127.0.0.1:{free_port()}/nothing"
    config = site(tmp_path / "a", backend="postgres", postgres=pg_section(pg_cluster, dsn, "2s"))
    started = time.monotonic()
    result = invoke(runner, config, "storage", "status")
    assert result.exit_code == 3, result.output
    assert time.monotonic() - started < 15
    assert "Error:" in result.output
    assert PASSWORD not in result.output


# --------------------------------------------------------------------------- migrate


@pytest.mark.slow
def test_migrate_copies_verifies_and_is_idempotent(
    runner: CliRunner, tmp_path: Path, pg_cluster: PgCluster, pg_dsn: str
) -> None:
    """Every table lands in PostgreSQL with the same rows (TOTP secrets still sealed and
    readable with the same key); a second run copies nothing and says so; a row changed in
    the target afterwards is reported by name with exit 1."""
    config = site(tmp_path / "a", postgres=pg_section(pg_cluster, pg_dsn))
    counts = fill(config)
    result = invoke(runner, config, "storage", "migrate", "--to", "postgres", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True
    assert report["copied"] == sum(counts.values())
    assert {row["table"]: row["copied"] for row in report["tables"]} == counts
    assert all(row["missing"] == 0 for row in report["tables"])
    assert report["sessions"]["moved"] is False
    assert 'backend = "postgres"' in " ".join(report["next"])

    loaded = load_config(config)
    target = Storage(replace(loaded.storage, backend="postgres"))
    try:
        assert target.counts() == counts
        record = target.load_totp("alice")
        assert record is not None
        assert record.secret == SECRET
        assert target.last_totp_step("bob") == 7
        assert target.active_ban([("user", "mallory")], time.time()) is not None
    finally:
        target.close()

    again = invoke(runner, config, "storage", "migrate", "--to", "postgres")
    assert again.exit_code == 0, again.output
    assert "Nothing new to copy" in again.output
    assert "Sessions are not moved" in again.output.replace("\n", " ")

    with pg_cluster.admin(pg_dsn.rsplit("/", 1)[1]) as conn:
        conn.execute("UPDATE bans SET reason = 'edited' WHERE value = 'ip'")  # changed: fine
        conn.execute("UPDATE bans SET expires = expires + 60 WHERE kind = 'ip'")
        # a target that loses rows: the deleted ban cannot come back
        conn.execute("DELETE FROM bans WHERE value = 'mallory'")
        conn.execute("CREATE RULE swallow AS ON INSERT TO bans DO INSTEAD NOTHING")
    tampered = invoke(runner, config, "storage", "migrate", "--to", "postgres", "--json")
    assert tampered.exit_code == 1, tampered.output
    assert "bans" in tampered.output
    report = json.loads(tampered.output.split("\nError:")[0])
    assert report["ok"] is False
    assert [row["table"] for row in report["tables"] if row["missing"]] == ["bans"]
    assert [row["changed"] for row in report["tables"] if row["table"] == "bans"] == [1]


@pytest.mark.slow
def test_verify_reports_a_row_deleted_from_the_target(
    tmp_path: Path, pg_cluster: PgCluster, pg_dsn: str
) -> None:
    """After a copy, a row deleted in PostgreSQL is missing in that table only."""
    config_path = site(tmp_path / "a", postgres=pg_section(pg_cluster, pg_dsn))
    fill(config_path)
    config = load_config(config_path)
    source = Storage(replace(config.storage, backend="sqlite"))
    target = Storage(replace(config.storage, backend="postgres"))
    try:
        first = copy_tables(source, target)
        assert all(result.missing == 0 for result in first)
        assert [r.copied for r in copy_tables(source, target)] == [0] * len(first)
        with pg_cluster.admin(pg_dsn.rsplit("/", 1)[1]) as conn:
            conn.execute("DELETE FROM one_time_codes WHERE id = 'otc2'")
        checked = {result.table: result.missing for result in verify_tables(source, target)}
        assert checked.pop("one_time_codes") == 1
        assert set(checked.values()) == {0}
    finally:
        source.close()
        target.close()


def test_missing_rows_by_key_and_whole() -> None:
    """By key: a lacking key is missing, the same key with other values is changed; whole
    rows (an unknown table): two equal rows need two; driver types are normalised."""
    assert missing_rows([(1, b"x"), (2, b"y")], [(1, b"z")], (0,)) == (1, 1)
    assert missing_rows([(1, b"x"), (1, b"x")], [(1, memoryview(b"x"))]) == (1, 0)
    assert missing_rows([(True, b"x")], [(1, b"x")]) == (0, 0)
    assert missing_rows([(1, Decimal("2.5"))], [(1, 2.5), (2, 3.0)], (0,)) == (0, 0)
    assert key_columns("bans") == (0, 1)
    assert key_columns("no such table") is None


def test_migrate_without_postgres_settings_is_exit_3(runner: CliRunner, tmp_path: Path) -> None:
    """No [storage.postgres]: exit 3 saying what to add; no SQLite storage: exit 3 too."""
    config = site(tmp_path / "a")
    nothing = invoke(runner, config, "storage", "migrate", "--to", "postgres")
    assert nothing.exit_code == 3, nothing.output
    assert "authctl.db" in nothing.output
    fill(config)
    result = invoke(runner, config, "storage", "migrate", "--to", "postgres")
    assert result.exit_code == 3, result.output
    assert "[storage.postgres]" in result.output


@pytest.mark.slow
def test_migrate_keeps_sessions_and_totp_across_the_move(
    tmp_path: Path, pg_cluster: PgCluster, pg_dsn: str
) -> None:
    """A real move: alice enrols TOTP with the CLI and signs in on a SQLite host; the host
    stops; the config moves to PostgreSQL and Redis; migrate copies the storage and her live
    session; a server on the new backends still knows her cookie and takes her TOTP code."""
    import pyotp

    from tests.test_redis_store import RedisServer
    from tests.test_serve import AUTHCTL
    from tests.test_serve import Server
    from tests.test_serve import cookie_of

    config = site(tmp_path / "a", postgres=pg_section(pg_cluster, pg_dsn))
    env = {**os.environ, "AUTHCTL_CONFIG": str(config)}
    enrolled = subprocess.run(
        [AUTHCTL, "user", "totp", "add", "alice", "--json"],
        env=env, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    secret = json.loads(enrolled.stdout)["secret"]
    before = Server(config.parent)
    try:
        alice = cookie_of(before.login("alice"))
        assert before.verify("https://app.example.com/", alice).status == 200
    finally:
        before.stop()

    redis_server = RedisServer(tmp_path / "redis")
    try:
        text = config.read_text().replace('backend = "sqlite"', 'backend = "postgres"')
        config.write_text(
            text.replace('store = "sqlite"', f'store = "redis"\nredis_url = "{redis_server.url}"')
        )
        moved = subprocess.run(
            [AUTHCTL, "storage", "migrate", "--to", "postgres", "--json"],
            env=env, capture_output=True, text=True, timeout=50, check=False,
        )  # fmt: skip
        assert moved.returncode == 0, moved.stderr
        report = json.loads(moved.stdout)
        assert report["ok"] is True
        assert report["sessions"]["moved"] is True
        assert report["sessions"]["copied"] >= 1
        assert report["sessions"]["missing"] == 0
        assert report["next"] == []

        after = Server(config.parent)
        try:
            allowed = after.verify("https://app.example.com/", alice)
            assert allowed.status == 200
            assert allowed.getheader("Remote-User") == "alice"
            body = json.dumps(
                {"token": pyotp.TOTP(secret).now(), "targetURL": "https://secure.example.com/"}
            ).encode()
            headers = {
                "Content-Type": "application/json",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "auth.example.com",
                "Origin": "https://auth.example.com",
                "Cookie": alice,
            }
            resp = after.request("POST", "/api/secondfactor/totp", headers, body)
            assert resp.status == 200
            assert after.verify("https://secure.example.com/", cookie_of(resp)).status == 200
        finally:
            after.stop()
        again = subprocess.run(
            [AUTHCTL, "storage", "migrate", "--to", "postgres", "--json"],
            env=env, capture_output=True, text=True, timeout=50, check=False,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        second = json.loads(again.stdout)
        assert second["sessions"]["copied"] == 0
        # her pre-TOTP session ended in Redis (a new id at the second factor): not brought back
        from server.core.session_store import hash_session_id

        old = "authctl:session:" + hash_session_id(alice.split("=", 1)[1]).hex()
        assert redis_server.client().exists(old) == 0
    finally:
        redis_server.stop()
