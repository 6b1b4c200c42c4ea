"""Tests for the storage database: schema and migrations, encryption at rest, the key check,
the atomic TOTP replay guard, the authentication log and bans (``server.core.storage``,
``server.core.crypto``)."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import logging
import multiprocessing
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import typing as t
import warnings
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from server.core.config import PostgresConfig
from server.core.config import StorageConfig
from server.core.config import TotpConfig
from server.core.crypto import MIN_KEY_BYTES
from server.core.crypto import SecretBox
from server.core.crypto import key_file_is_private
from server.core.crypto import read_key_file
from server.core.sqlite_util import SQLiteDatabase
from server.core.storage import APPLICATION_ID
from server.core.storage import SCHEMA_VERSION
from server.core.storage import WRONG_KEY
from server.core.storage import Ban
from server.core.storage import OneTimeCode
from server.core.storage import Redemption
from server.core.storage import Storage
from server.core.storage import StorageError
from server.core.storage import StorageKeyError
from server.core.storage import WebAuthnCredential
from server.core.totp import TotpService
from server.core.totp import decode_secret
from tests.conftest import ROOT
from tests.conftest import Clock
from tests.pgcluster import PASSWORD
from tests.pgcluster import PgCluster
from tests.pgcluster import pg_cluster  # noqa: F401 - fixture
from tests.pgcluster import pg_dsn  # noqa: F401 - fixture

KEY = "a3" * 32 + "\n"
OTHER_KEY = "5c" * 32 + "\n"


#: Both engines; PostgreSQL runs on the throwaway cluster of tests/pgcluster.py.
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.slow)]


def make_config(
    tmp_path: Path, key: str | None = KEY, postgres: PostgresConfig | None = None
) -> StorageConfig:
    """A storage config in ``tmp_path`` (database in a folder of its own), key file written;
    on PostgreSQL when ``postgres`` is given."""
    key_file = tmp_path / "secrets" / "storage.key"
    if key is not None:
        key_file.parent.mkdir(mode=0o700, exist_ok=True)
        key_file.write_text(key, encoding="ascii")
        key_file.chmod(0o600)
    return StorageConfig(
        path=tmp_path / "data" / "authctl.db",
        encryption_key_file=key_file,
        backend="sqlite" if postgres is None else "postgres",
        postgres=postgres,
    )


def rekey(config: StorageConfig, folder: Path, key: str | None) -> StorageConfig:
    """``config`` (the same database) with the key file ``folder/storage.key`` holding ``key``
    (no file when None)."""
    folder.mkdir(mode=0o700, exist_ok=True)
    key_file = folder / "storage.key"
    if key is not None:
        key_file.write_text(key, encoding="ascii")
        key_file.chmod(0o600)
    return dataclasses.replace(config, encryption_key_file=key_file)


@pytest.fixture(params=BACKENDS)
def config(request: pytest.FixtureRequest, tmp_path: Path) -> StorageConfig:
    """A storage config with a valid key file, on each engine (a fresh PostgreSQL database)."""
    if request.param == "postgres":
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        dsn: str = request.getfixturevalue("pg_dsn")
        return make_config(tmp_path, postgres=cluster.postgres_config(dsn, timeout=3))
    return make_config(tmp_path)


@pytest.fixture
def sqlite_config(tmp_path: Path) -> StorageConfig:
    """A SQLite storage config (for SQLite's own file modes and failure modes)."""
    return make_config(tmp_path)


@pytest.fixture
def storage(config: StorageConfig, clock: Clock) -> Iterator[Storage]:
    """An open storage on the fake clock, closed after the test (each engine)."""
    opened = Storage(config, clock)
    yield opened
    opened.close()


@pytest.fixture
def sqlite_storage(sqlite_config: StorageConfig, clock: Clock) -> Iterator[Storage]:
    """An open SQLite storage on the fake clock."""
    opened = Storage(sqlite_config, clock)
    yield opened
    opened.close()


def sqlite_db(storage: Storage) -> SQLiteDatabase:
    """The SQLite engine behind ``storage`` (for tests of SQLite's own failure modes)."""
    assert isinstance(storage._db, SQLiteDatabase)
    return storage._db


def raw(path: Path) -> sqlite3.Connection:
    """A plain SQLite connection to poke at the file behind the storage's back."""
    return sqlite3.connect(path, isolation_level=None)


def raw_sql(config: StorageConfig, sql: str, params: tuple[object, ...] = ()) -> list[t.Any]:
    """Run ``sql`` (``?`` placeholders) on the database behind the storage's back."""
    if config.postgres is None:
        with contextlib.closing(raw(config.path)) as conn:
            return conn.execute(sql, params).fetchall()
    with psycopg.connect(config.postgres.dsn, password=PASSWORD, autocommit=True) as pg:
        cursor = pg.execute(sql.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []


def set_schema_version(config: StorageConfig, version: int) -> None:
    """Write ``version`` where the engine keeps it."""
    if config.postgres is None:
        raw_sql(config, f"PRAGMA user_version = {version}")
    else:
        raw_sql(
            config,
            "UPDATE meta SET value = ? WHERE key = 'schema_version'",
            (str(version).encode(),),
        )


def save(storage: Storage, username: str = "alice", secret: bytes = b"s" * 20) -> None:
    """Store a SHA1/6/30 secret for ``username``."""
    assert storage.save_totp(username, secret, algorithm="SHA1", digits=6, period=30)


# --------------------------------------------------------------------------- schema


class TestSchema:
    """Creation, modes, versioning and refusal of files that are not ours."""

    def test_new_database_has_every_table(self, sqlite_storage: Storage) -> None:
        """A new file gets the whole schema, the current version and authctl's application id."""
        conn = raw(sqlite_storage.path)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {
            "meta",
            "totp_configurations",
            "totp_history",
            "authentication_logs",
            "bans",
            "one_time_codes",
        } <= tables
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"authentication_logs_username_time", "authentication_logs_ip_time"} <= indexes
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()

    def test_modes_of_folder_and_file(self, sqlite_storage: Storage) -> None:
        """The folder is created 0700 and the database 0600."""
        assert stat.S_IMODE(sqlite_storage.path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(sqlite_storage.path.stat().st_mode) == 0o600

    def test_loose_mode_is_tightened(self, sqlite_config: StorageConfig) -> None:
        """An existing database file readable by others is set back to 0600."""
        sqlite_config.path.parent.mkdir(parents=True)
        sqlite_config.path.touch(mode=0o644)
        sqlite_config.path.chmod(0o644)
        Storage(sqlite_config).close()
        assert stat.S_IMODE(sqlite_config.path.stat().st_mode) == 0o600

    def test_migrates_an_empty_file(self, sqlite_config: StorageConfig) -> None:
        """A zero-byte file (version 0) is migrated to the current schema."""
        sqlite_config.path.parent.mkdir(parents=True)
        sqlite_config.path.write_bytes(b"")
        storage = Storage(sqlite_config)
        save(storage)
        assert storage.has_totp("alice")
        storage.close()

    def test_reopen_keeps_data(self, config: StorageConfig) -> None:
        """Opening an up-to-date database again runs no migration and keeps the rows."""
        first = Storage(config)
        save(first)
        first.close()
        second = Storage(config)
        assert second.totp_users() == ["alice"]
        second.close()

    def test_newer_schema_is_refused(self, config: StorageConfig) -> None:
        """A database from a newer authctl is refused, not written to."""
        Storage(config).close()
        set_schema_version(config, SCHEMA_VERSION + 1)
        with pytest.raises(StorageError, match="newer than this authctl"):
            Storage(config)

    def test_foreign_database_is_refused(self, config: StorageConfig) -> None:
        """A SQLite file with other tables (another program's) is refused."""
        config.path.parent.mkdir(parents=True)
        raw_sql(config, "CREATE TABLE sessions (key TEXT)")
        with pytest.raises(StorageError, match="not an authctl storage database"):
            Storage(config)

    def test_versioned_foreign_database_is_refused(self, sqlite_config: StorageConfig) -> None:
        """A versioned SQLite file without authctl's application id (e.g. the session store)."""
        sqlite_config.path.parent.mkdir(parents=True)
        conn = raw(sqlite_config.path)
        conn.execute("CREATE TABLE sessions (key BLOB)")
        conn.execute("PRAGMA user_version = 1")
        conn.close()
        with pytest.raises(StorageError, match="application id"):
            Storage(sqlite_config)

    def test_unopenable_path_is_a_storage_error(self, tmp_path: Path) -> None:
        """A database path that is a folder ends in StorageError, not an OSError."""
        cfg = make_config(tmp_path)
        cfg.path.mkdir(parents=True)
        with pytest.raises(StorageError, match="cannot open the storage database"):
            Storage(cfg)

    def test_connection_failure_is_a_storage_error(
        self, sqlite_storage: Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A thread that cannot open its connection gets StorageError (fail closed)."""

        def refuse() -> sqlite3.Connection:
            raise sqlite3.OperationalError("unable to open database file")

        monkeypatch.setattr(sqlite_db(sqlite_storage).connections, "open", refuse)
        errors: list[BaseException] = []

        def other() -> None:
            try:
                sqlite_storage.has_totp("alice")
            except StorageError as exc:
                errors.append(exc)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert len(errors) == 1
        assert "unable to open" in str(errors[0])
        assert repr(sqlite_storage) == f"<Storage {sqlite_storage.path}>"

    def test_closed_storage_fails(self, storage: Storage) -> None:
        """After close() every call raises StorageError (fail closed), also on new threads."""
        storage.close()
        with pytest.raises(StorageError, match="closed"):
            storage.has_totp("alice")
        errors: list[BaseException] = []

        def other() -> None:
            try:
                storage.list_bans(0)
            except StorageError as exc:
                errors.append(exc)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert len(errors) == 1

    def test_engine_failure_is_a_storage_error(
        self, storage: Storage, config: StorageConfig
    ) -> None:
        """A broken database (a dropped table) surfaces as StorageError on reads and writes."""
        raw_sql(config, "DROP TABLE bans")
        raw_sql(config, "DROP TABLE totp_history")
        with pytest.raises(StorageError):
            storage.list_bans(0)
        with pytest.raises(StorageError):
            storage.purge_bans(0)
        with pytest.raises(StorageError):
            storage.accept_totp_step("alice", 1)

    def test_begin_failure_is_a_storage_error(
        self, sqlite_storage: Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When a write transaction cannot even start, StorageError is raised."""

        def broken() -> sqlite3.Connection:
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(sqlite_db(sqlite_storage).connections, "get", broken)
        with pytest.raises(StorageError, match="locked"):
            sqlite_storage.delete_totp("alice")

    def test_non_sqlite_errors_roll_back_and_propagate(self, storage: Storage) -> None:
        """An exception inside a transaction rolls it back and is raised unchanged."""

        def fail_inside() -> None:
            with storage._transaction() as conn:
                conn.execute("INSERT INTO totp_history (username, last_step) VALUES ('x', 1)")
                raise KeyError("boom")

        with pytest.raises(KeyError):
            fail_inside()
        assert storage.last_totp_step("x") is None

    def test_forked_child_uses_its_own_connection(self, sqlite_storage: Storage) -> None:
        """A worker forked after use opens its own connection and sees the replay history."""
        assert sqlite_storage.accept_totp_step("alice", 10)
        parent_conn = sqlite_db(sqlite_storage).connections.get()
        ctx = multiprocessing.get_context("fork")
        queue: multiprocessing.queues.SimpleQueue[str] = ctx.SimpleQueue()

        def child() -> None:
            fresh = sqlite_db(sqlite_storage).connections.get() is not parent_conn
            queue.put(json.dumps([fresh, sqlite_storage.accept_totp_step("alice", 10)]))

        process = ctx.Process(target=child)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            process.start()
        process.join(timeout=30)
        assert process.exitcode == 0
        assert json.loads(queue.get()) == [True, False]


# --------------------------------------------------------------------------- key and encryption


class TestKey:
    """The key file, the key check and encryption at rest."""

    def test_secret_is_not_in_the_database_file(
        self, sqlite_config: StorageConfig, clock: Clock
    ) -> None:
        """Neither the base32 secret nor its raw bytes appear in the database, WAL or SHM files."""
        storage = Storage(sqlite_config, clock)
        secret, uri = TotpService(storage, TotpConfig(), now=clock).enrol("alice")
        raw_secret = decode_secret(secret)
        files = sorted(sqlite_config.path.parent.iterdir())
        blob = b"".join(path.read_bytes() for path in files)
        storage.close()  # checkpoints the WAL into the main file
        blob += sqlite_config.path.read_bytes()
        assert storage.path in files
        assert secret.encode() not in blob
        assert secret.lower().encode() not in blob
        assert raw_secret not in blob
        assert uri.encode() not in blob

    def test_wrong_key_is_a_clear_startup_error(
        self, config: StorageConfig, tmp_path: Path
    ) -> None:
        """Opening with another key file fails at once, saying to restore the right key."""
        Storage(config).close()
        with pytest.raises(StorageKeyError) as info:
            Storage(rekey(config, tmp_path / "other", OTHER_KEY))
        assert str(info.value).startswith(WRONG_KEY)

    def test_wrong_key_is_refused_even_without_secrets(
        self, config: StorageConfig, tmp_path: Path
    ) -> None:
        """The key check is written at creation, so an empty database also refuses another key."""
        Storage(config).close()
        with pytest.raises(StorageKeyError, match="does not match"):
            Storage(rekey(config, tmp_path / "other", OTHER_KEY))

    def test_trailing_newline_does_not_change_the_key(
        self, config: StorageConfig, tmp_path: Path
    ) -> None:
        """The key file's surrounding white space is not part of the key."""
        storage = Storage(rekey(config, tmp_path / "bare", "a3" * 32))
        save(storage)
        storage.close()
        again = Storage(rekey(config, tmp_path / "spaced", "  " + "a3" * 32 + "\r\n\n"))
        record = again.load_totp("alice")
        assert record is not None
        assert record.secret == b"s" * 20
        again.close()

    def test_missing_key_file_is_a_clear_error(self, tmp_path: Path) -> None:
        """No key file: a StorageKeyError naming the file and saying how to fix it."""
        cfg = make_config(tmp_path, key=None)
        with pytest.raises(StorageKeyError, match=r"storage key file .* is missing"):
            Storage(cfg)
        assert not cfg.path.exists()

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            ("", "holds 0 bytes"),
            ("short\n", "holds 5 bytes"),
            ("x" * 5000, "larger than"),
        ],
        ids=["empty", "short", "huge"],
    )
    def test_bad_key_file_is_refused(self, tmp_path: Path, content: str, message: str) -> None:
        """An empty, short or oversized key file is refused, never used as a weak key."""
        with pytest.raises(StorageKeyError, match=message):
            Storage(make_config(tmp_path, content))

    def test_unreadable_key_file(self, tmp_path: Path) -> None:
        """A key path that cannot be read (a folder) is a StorageKeyError."""
        cfg = make_config(tmp_path, key=None)
        cfg.encryption_key_file.mkdir(parents=True)
        with pytest.raises(StorageKeyError, match="cannot read"):
            Storage(cfg)

    def test_key_file_readable_by_others_warns(
        self, config: StorageConfig, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A group- or world-readable key file is used, with a warning to chmod it."""
        config.encryption_key_file.chmod(0o644)
        with caplog.at_level(logging.WARNING, logger="server.storage"):
            Storage(config).close()
        assert "chmod 600" in caplog.text

    def test_private_key_file_does_not_warn(
        self, config: StorageConfig, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A 0600 key file opens without any warning."""
        with caplog.at_level(logging.WARNING, logger="server.storage"):
            Storage(config).close()
        assert not caplog.records

    def test_secret_moved_to_another_user_does_not_decrypt(
        self, storage: Storage, config: StorageConfig
    ) -> None:
        """Copying alice's sealed secret onto bob's row fails to decrypt (AAD binds the user)."""
        save(storage, "alice", b"A" * 20)
        save(storage, "bob", b"B" * 20)
        raw_sql(
            config,
            "UPDATE totp_configurations SET secret = "
            "(SELECT secret FROM totp_configurations WHERE username = 'alice') "
            "WHERE username = 'bob'",
        )
        with pytest.raises(StorageError, match="cannot decrypt the TOTP secret of 'bob'"):
            storage.load_totp("bob")
        record = storage.load_totp("alice")
        assert record is not None
        assert record.secret == b"A" * 20

    @pytest.mark.parametrize(
        "mangle",
        [
            lambda b: b[:-1] + bytes([b[-1] ^ 1]),
            lambda b: b"\x02" + b[1:],
            lambda b: b[:10],
        ],
        ids=["flipped-bit", "unknown-format", "truncated"],
    )
    def test_tampered_secret_does_not_decrypt(
        self, storage: Storage, config: StorageConfig, mangle: Callable[[bytes], bytes]
    ) -> None:
        """An altered, truncated or unknown-format ciphertext is a StorageError, never a secret."""
        save(storage)
        sealed = bytes(raw_sql(config, "SELECT secret FROM totp_configurations")[0][0])
        raw_sql(config, "UPDATE totp_configurations SET secret = ?", (mangle(sealed),))
        with pytest.raises(StorageError, match="cannot decrypt"):
            storage.load_totp("alice")

    def test_each_value_has_its_own_nonce(self, storage: Storage, config: StorageConfig) -> None:
        """The same secret stored for two users gives two different ciphertexts."""
        save(storage, "alice")
        save(storage, "bob")
        sealed = [bytes(r[0]) for r in raw_sql(config, "SELECT secret FROM totp_configurations")]
        assert sealed[0] != sealed[1]
        assert sealed[0][1:13] != sealed[1][1:13]

    def test_without_key_secrets_are_refused(self, config: StorageConfig) -> None:
        """Opened with require_key=False, reading or storing a secret raises, never plaintext."""
        storage = Storage(config, require_key=False)
        with pytest.raises(StorageKeyError, match="without its key"):
            save(storage)
        with pytest.raises(StorageKeyError):
            storage.load_totp("alice")
        assert storage.has_totp("alice") is False
        storage.close()

    def test_without_key_the_key_file_is_not_needed(
        self, config: StorageConfig, tmp_path: Path
    ) -> None:
        """Bans and the log work without a key file (``authctl bans``), checked later with one."""
        storage = Storage(rekey(config, tmp_path / "none", None), require_key=False)
        assert storage.list_bans(0) == []
        storage.close()
        keyed = Storage(config)
        save(keyed)
        keyed.close()

    def test_secrets_without_key_check_are_refused(
        self, storage: Storage, config: StorageConfig
    ) -> None:
        """A database holding secrets but no key check value cannot be checked: refused."""
        save(storage)
        raw_sql(config, "DELETE FROM meta WHERE key = 'key_check'")
        with pytest.raises(StorageKeyError, match="no key check"):
            Storage(config)

    def test_secret_box_rejects_short_material(self) -> None:
        """SecretBox refuses key material shorter than MIN_KEY_BYTES."""
        with pytest.raises(ValueError, match="at least"):
            SecretBox(b"k" * (MIN_KEY_BYTES - 1))
        assert repr(SecretBox(b"k" * MIN_KEY_BYTES)) == "<SecretBox>"

    def test_key_file_privacy_of_a_missing_file(self, tmp_path: Path) -> None:
        """A missing key file is not reported as too open (read_key_file reports it)."""
        assert key_file_is_private(tmp_path / "absent")

    def test_read_key_file_strips(self, tmp_path: Path) -> None:
        """read_key_file returns the bytes without surrounding white space."""
        path = tmp_path / "k"
        path.write_bytes(b"\n" + b"z" * 40 + b"\n")
        assert read_key_file(path) == b"z" * 40


# --------------------------------------------------------------------------- TOTP rows


class TestTotpRows:
    """Enrolments and the replay history."""

    def test_save_refuses_to_replace_unless_asked(self, storage: Storage) -> None:
        """save_totp returns False for an existing user unless replace=True."""
        save(storage, secret=b"1" * 20)
        assert not storage.save_totp("alice", b"2" * 20, algorithm="SHA1", digits=6, period=30)
        record = storage.load_totp("alice")
        assert record is not None
        assert record.secret == b"1" * 20
        assert storage.save_totp(
            "alice", b"2" * 20, algorithm="SHA256", digits=8, period=60, replace=True
        )
        record = storage.load_totp("alice")
        assert record is not None
        assert (record.secret, record.algorithm, record.digits, record.period) == (
            b"2" * 20,
            "SHA256",
            8,
            60,
        )

    def test_record_repr_hides_the_secret(self, storage: Storage) -> None:
        """The secret is not part of a TotpRecord's repr (so it never reaches a log)."""
        save(storage, secret=b"topsecret-topsecret!")
        record = storage.load_totp("alice")
        assert record is not None
        assert "topsecret" not in repr(record)

    def test_new_secret_resets_history(self, storage: Storage) -> None:
        """Replacing a secret starts a new history, set to last_step when given."""
        save(storage)
        assert storage.accept_totp_step("alice", 100)
        storage.save_totp("alice", b"x" * 20, algorithm="SHA1", digits=6, period=30, replace=True)
        assert storage.last_totp_step("alice") is None
        storage.save_totp(
            "alice", b"y" * 20, algorithm="SHA1", digits=6, period=30, replace=True, last_step=7
        )
        assert storage.last_totp_step("alice") == 7

    def test_delete(self, storage: Storage) -> None:
        """delete_totp removes the enrolment and its history; False when there was none."""
        save(storage)
        storage.accept_totp_step("alice", 5)
        assert storage.delete_totp("alice")
        assert not storage.has_totp("alice")
        assert storage.last_totp_step("alice") is None
        assert storage.load_totp("alice") is None
        assert not storage.delete_totp("alice")

    def test_accept_step_only_moves_forward(self, storage: Storage, clock: Clock) -> None:
        """A step is accepted once, and never one at or before the last accepted step."""
        save(storage)
        assert storage.accept_totp_step("alice", 100)
        assert not storage.accept_totp_step("alice", 100)
        assert not storage.accept_totp_step("alice", 99)
        clock.advance(30)
        assert storage.accept_totp_step("alice", 101)
        assert storage.last_totp_step("alice") == 101
        record = storage.load_totp("alice")
        assert record is not None
        assert record.last_used_at == clock.now

    def test_accept_step_is_per_user(self, storage: Storage) -> None:
        """One user's history does not affect another's."""
        assert storage.accept_totp_step("alice", 100)
        assert storage.accept_totp_step("bob", 100)

    def test_twenty_threads_one_winner(self, storage: Storage) -> None:
        """Of 20 threads accepting the same step at once, exactly one succeeds."""
        barrier = threading.Barrier(20)
        results: list[bool] = []
        lock = threading.Lock()

        def attempt() -> None:
            barrier.wait()
            ok = storage.accept_totp_step("alice", 1000)
            with lock:
                results.append(ok)

        threads = [threading.Thread(target=attempt) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [False] * 19 + [True]

    def test_history_survives_restart(self, config: StorageConfig) -> None:
        """A new Storage on the same file still refuses the step accepted before."""
        first = Storage(config)
        assert first.accept_totp_step("alice", 42)
        first.close()
        second = Storage(config)
        assert not second.accept_totp_step("alice", 42)
        second.close()


# --------------------------------------------------------------------------- log and bans


class TestLogAndBans:
    """The authentication log and the bans table."""

    def test_recent_attempts_newest_first_within_limits(self, storage: Storage) -> None:
        """Only rows after ``since``, of the kinds asked, not banned, newest first, capped."""
        storage.append_log(10, "alice", "10.0.0.1", "1FA", False)
        storage.append_log(20, "alice", "10.0.0.1", "TOTP", False)
        storage.append_log(30, "alice", "10.0.0.2", "BASIC", True)
        storage.append_log(40, "alice", "10.0.0.1", "1FA", False, banned=True)
        storage.append_log(50, "bob", "10.0.0.1", "1FA", False)
        got = storage.recent_attempts(
            by="username", value="alice", kinds=("1FA", "BASIC"), since=5, limit=10
        )
        assert [(a.time, a.success) for a in got] == [(30, True), (10, False)]
        got = storage.recent_attempts(by="ip", value="10.0.0.1", kinds=("1FA",), since=10, limit=1)
        assert [(a.time, a.success) for a in got] == [(50, False)]

    def test_same_time_ties_go_to_the_later_insert(self, storage: Storage) -> None:
        """Rows with equal times are ordered by insertion, newest first."""
        storage.append_log(10, "alice", "", "1FA", True)
        storage.append_log(10, "alice", "", "1FA", False)
        got = storage.recent_attempts(
            by="username", value="alice", kinds=("1FA",), since=0, limit=1
        )
        assert got[0].success is False

    def test_bad_arguments(self, storage: Storage) -> None:
        """Unknown attempt kinds, ban kinds and selector columns are programming errors."""
        with pytest.raises(ValueError, match="kind"):
            storage.append_log(0, "a", "", "SMS", False)
        with pytest.raises(ValueError, match="by"):
            storage.recent_attempts(by="time; DROP", value="", kinds=("1FA",), since=0, limit=1)
        with pytest.raises(ValueError, match="ban kind"):
            storage.save_ban("group", "x", 1, "r")

    def test_purge_logs(self, storage: Storage) -> None:
        """purge_logs removes rows older than the cut-off only."""
        storage.append_log(10, "alice", "", "1FA", False)
        storage.append_log(20, "alice", "", "1FA", False)
        assert storage.purge_logs(15) == 1
        assert (
            len(
                storage.recent_attempts(
                    by="username", value="alice", kinds=("1FA",), since=0, limit=9
                )
            )
            == 1
        )

    def test_ban_is_only_extended(self, storage: Storage, clock: Clock) -> None:
        """Saving a shorter ban keeps the longer one; a longer one replaces it."""
        storage.save_ban("user", "alice", 100, "first")
        storage.save_ban("user", "alice", 50, "shorter")
        assert storage.list_bans(0) == [Ban("user", "alice", 100, "first", clock.now)]
        storage.save_ban("user", "alice", 200, "longer")
        assert storage.list_bans(0)[0].expires == 200
        assert storage.list_bans(0)[0].reason == "longer"

    def test_active_ban(self, storage: Storage) -> None:
        """active_ban finds a running ban of any target, the longest first; none when ended."""
        storage.save_ban("user", "alice", 100, "r")
        storage.save_ban("ip", "10.0.0.1", 300, "r")
        assert storage.active_ban([], 0) is None
        found = storage.active_ban([("user", "alice"), ("ip", "10.0.0.1")], 50)
        assert found is not None
        assert found.kind == "ip"
        assert storage.active_ban([("user", "alice")], 100) is None
        assert storage.active_ban([("ip", "alice")], 50) is None

    def test_list_delete_purge(self, storage: Storage) -> None:
        """list shows running bans by end; delete returns the running ones; purge the ended."""
        storage.save_ban("user", "alice", 100, "r")
        storage.save_ban("user", "bob", 300, "r")
        storage.save_ban("ip", "10.0.0.1", 200, "r")
        assert [b.value for b in storage.list_bans(50)] == ["alice", "10.0.0.1", "bob"]
        assert [b.value for b in storage.list_bans(150)] == ["10.0.0.1", "bob"]
        gone = storage.delete_bans([("user", "alice"), ("user", "bob"), ("ip", "x")], 150)
        assert [b.value for b in gone] == ["bob"]
        assert storage.purge_bans(250) == 1
        assert storage.list_bans(0) == []


def test_core_modules_import_no_web_or_cli_library() -> None:
    """storage, crypto, totp, regulation and hashcap load no webob, waitress, click or rich."""
    code = (
        "import json, sys\n"
        "import server.core.storage, server.core.crypto, server.core.totp\n"
        "import server.core.regulation, server.core.hashcap\n"
        "print(json.dumps(sorted(sys.modules)))\n"
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
    loaded = {m.partition(".")[0] for m in json.loads(result.stdout)}
    assert not loaded & {"webob", "waitress", "click", "rich", "segno"}


# --------------------------------------------------------------------------- one-time codes


def add_code(storage: Storage, row_id: str = "c1", expires: float = 100.0) -> None:
    """Store a code ``row_id`` of alice with digest b"d" * 32, issued at 0."""
    storage.add_one_time_code(
        row_id,
        "alice",
        "elevation",
        b"d" * 32,
        issued=0.0,
        expires=expires,
        session_binding=b"s" * 32,
        ip="192.0.2.1",
    )


class TestOneTimeCodes:
    """The one_time_codes operations: the verdict and its effect in one transaction."""

    def test_add_and_list(self, storage: Storage) -> None:
        """A stored code reads back field by field, the newest last; by user or all."""
        add_code(storage, "c1")
        storage.add_one_time_code("c2", "bob", "reset_password", b"e" * 32, issued=5, expires=9)
        (alice,) = storage.one_time_codes("alice")
        assert (alice.id, alice.intent, alice.digest, alice.session_binding) == (
            "c1",
            "elevation",
            b"d" * 32,
            b"s" * 32,
        )
        assert (alice.issued_ip, alice.consumed, alice.consumed_ip, alice.attempts) == (
            "192.0.2.1",
            None,
            None,
            0,
        )
        assert [c.id for c in storage.one_time_codes()] == ["c1", "c2"]
        assert b"d" * 32 not in repr(alice).encode()

    @pytest.mark.parametrize(
        ("verdict", "result", "consumed", "attempts"),
        [
            (Redemption.CONSUME, True, 7.0, 0),
            (Redemption.WRONG, False, None, 1),
            (Redemption.REFUSE, False, None, 0),
        ],
    )
    def test_redeem_acts_on_the_verdict(
        self,
        storage: Storage,
        verdict: Redemption,
        result: bool,
        consumed: float | None,
        attempts: int,
    ) -> None:
        """CONSUME marks the row used (time, IP), WRONG counts a try, REFUSE changes nothing."""
        add_code(storage)
        seen: list[OneTimeCode] = []

        def judge(row: OneTimeCode) -> Redemption:
            seen.append(row)
            return verdict

        assert storage.redeem_one_time_code("c1", judge, now=7.0, ip="192.0.2.9") is result
        (row,) = storage.one_time_codes()
        assert [r.id for r in seen] == ["c1"]
        assert (row.consumed, row.attempts) == (consumed, attempts)
        assert row.consumed_ip == ("192.0.2.9" if result else None)

    def test_unknown_code_is_not_judged(self, storage: Storage) -> None:
        """An unknown id is False without asking the judge."""

        def judge(row: OneTimeCode) -> Redemption:
            raise AssertionError("judged an unknown row")

        assert not storage.redeem_one_time_code("nope", judge, now=1.0, ip=None)

    def test_judge_error_rolls_back(self, storage: Storage) -> None:
        """An exception in the judge propagates and changes nothing."""
        add_code(storage)

        def judge(row: OneTimeCode) -> Redemption:
            raise KeyError("boom")

        with pytest.raises(KeyError):
            storage.redeem_one_time_code("c1", judge, now=1.0, ip=None)
        assert storage.one_time_codes()[0].consumed is None

    def test_parallel_redemptions_one_winner(self, storage: Storage) -> None:
        """Of 20 threads redeeming one live code at once, exactly one consumes it."""
        add_code(storage)
        barrier = threading.Barrier(20)
        results: list[bool] = []
        lock = threading.Lock()

        def judge(row: OneTimeCode) -> Redemption:
            return Redemption.CONSUME if row.consumed is None else Redemption.REFUSE

        def attempt() -> None:
            barrier.wait()
            ok = storage.redeem_one_time_code("c1", judge, now=1.0, ip=None)
            with lock:
                results.append(ok)

        threads = [threading.Thread(target=attempt) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [False] * 19 + [True]

    def test_parallel_processes_one_winner(self, storage: Storage) -> None:
        """Across forked workers the check-and-consume is still one step: one winner."""
        add_code(storage)
        ctx = multiprocessing.get_context("fork")
        queue: multiprocessing.queues.SimpleQueue[bool] = ctx.SimpleQueue()

        def judge(row: OneTimeCode) -> Redemption:
            return Redemption.CONSUME if row.consumed is None else Redemption.REFUSE

        def child() -> None:
            queue.put(storage.redeem_one_time_code("c1", judge, now=1.0, ip=None))

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            processes = [ctx.Process(target=child) for _ in range(4)]
            for process in processes:
                process.start()
        for process in processes:
            process.join(timeout=30)
            assert process.exitcode == 0
        assert sorted(queue.get() for _ in processes) == [False, False, False, True]

    def test_revoke_and_purge(self, storage: Storage) -> None:
        """Revoke kills a live code once (not an expired one); purge drops expired rows."""
        add_code(storage, "c1", expires=100)
        add_code(storage, "c2", expires=10)
        assert storage.revoke_one_time_code("c1", now=50)
        assert not storage.revoke_one_time_code("c1", now=50)
        assert not storage.revoke_one_time_code("c2", now=50)
        assert [c.consumed_ip for c in storage.one_time_codes()] == ["revoked", None]
        assert storage.purge_one_time_codes(before=50) == 1
        assert [c.id for c in storage.one_time_codes()] == ["c1"]


#: Storage's private members: its connections, transactions and raw SQL helpers.
STORAGE_PRIVATES = {n for n in vars(Storage) if n.startswith("_") and n[1] != "_"} | {"_db", "_box"}


def test_no_module_reaches_into_storage_privates() -> None:
    """Storage owns its SQL: outside storage.py no code calls ``x._transaction()``,
    ``x._read``, ``x._write``, ``x._db`` or any other private member of Storage (on
    anything but ``self``), so every statement and its atomicity live in one module."""
    offenders = []
    for folder in ("server", "authctl"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "server" / "core" / "storage.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr in STORAGE_PRIVATES
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    assert {"_transaction", "_read", "_write", "_db"} <= STORAGE_PRIVATES
    assert offenders == []


# --------------------------------------------------------------------------- shared limits


class TestRateLimits:
    """hit_rate_limits: every limit of every key checked and the hits recorded in one step."""

    def test_allows_until_the_count_then_says_how_long(self, storage: Storage) -> None:
        """Three hits in 60 s are allowed, the fourth waits until the oldest leaves the window."""
        limits = [(3, 60.0)]
        assert storage.hit_rate_limits([("k", limits)], 100.0) == 0.0
        assert storage.hit_rate_limits([("k", limits)], 110.0) == 0.0
        assert storage.hit_rate_limits([("k", limits)], 120.0) == 0.0
        assert storage.hit_rate_limits([("k", limits)], 130.0) == pytest.approx(30.0)
        assert storage.hit_rate_limits([("k", limits)], 159.0) == pytest.approx(1.0)
        assert storage.hit_rate_limits([("k", limits)], 160.0) == 0.0  # the hit at 100 left
        assert storage.hit_rate_limits([("other", limits)], 160.0) == 0.0

    def test_all_or_nothing_and_longest_wait(self, storage: Storage) -> None:
        """One key over its limit records nothing for any key; the longest wait is returned."""
        assert storage.hit_rate_limits([("a", [(1, 10.0)]), ("b", [(5, 10.0)])], 0.0) == 0.0
        wait = storage.hit_rate_limits([("b", [(5, 10.0)]), ("a", [(1, 10.0), (1, 50.0)])], 5.0)
        assert wait == pytest.approx(45.0)
        # b got no hit from the refused call: four more fit
        for now in (6.0, 6.5, 7.0, 7.5):
            assert storage.hit_rate_limits([("b", [(5, 10.0)])], now) == 0.0
        assert storage.hit_rate_limits([("b", [(5, 10.0)])], 8.0) > 0.0

    def test_bad_limits_are_programming_errors(self, storage: Storage) -> None:
        """A count below 1 or a window that is not positive is a ValueError."""
        with pytest.raises(ValueError, match="count"):
            storage.hit_rate_limits([("k", [(0, 1.0)])], 0.0)
        with pytest.raises(ValueError, match="window"):
            storage.hit_rate_limits([("k", [(1, 0.0)])], 0.0)

    def test_no_hits_is_allowed(self, storage: Storage) -> None:
        """No keys: allowed, nothing recorded; a key without limits is allowed and recorded."""
        assert storage.hit_rate_limits([], 0.0) == 0.0
        assert storage.hit_rate_limits([("k", [])], 0.0) == 0.0
        assert storage.purge_rate_limits(1e12) == 1

    def test_purge(self, storage: Storage) -> None:
        """purge_rate_limits drops hits older than the cut-off and says how many."""
        for now in (1.0, 2.0, 3.0):
            storage.hit_rate_limits([("k", [(10, 100.0)])], now)
        assert storage.purge_rate_limits(2.5) == 2
        assert storage.hit_rate_limits([("k", [(2, 100.0)])], 4.0) == 0.0
        assert storage.hit_rate_limits([("k", [(2, 100.0)])], 5.0) == pytest.approx(98.0)


class TestInflight:
    """Regulation attempts in flight and the cross-process lock."""

    def test_add_count_remove(self, storage: Storage, clock: Clock) -> None:
        """Counts cover live rows of each counter asked; remove drops a token's rows."""
        one, two = ("1FA", "user", "alice"), ("1FA", "ip", "10.0.0.1")
        now = clock.now
        storage.add_inflight("t1", [one, two], expires=now + 100)
        storage.add_inflight("t2", [one], expires=now + 50)
        assert storage.inflight_counts([one, two, ("x", "y", "z")], now + 10) == {
            one: 2,
            two: 1,
            ("x", "y", "z"): 0,
        }
        assert storage.inflight_counts([one], now + 50) == {one: 1}  # t2 expired
        storage.remove_inflight("t1")
        assert storage.inflight_counts([one, two], now + 10) == {one: 1, two: 0}
        storage.remove_inflight("absent")
        assert storage.inflight_counts([], now) == {}

    def test_expired_rows_are_dropped_by_the_next_add(self, storage: Storage, clock: Clock) -> None:
        """A crashed host's rows stop counting at expiry and are deleted by a later add."""
        one = ("1FA", "user", "alice")
        storage.add_inflight("dead", [one], expires=clock.now + 5)
        clock.advance(10)
        storage.add_inflight("live", [one], expires=clock.now + 5)
        assert storage.inflight_counts([one], clock.now - 100) == {one: 1}

    def test_add_twice_is_one_row(self, storage: Storage, clock: Clock) -> None:
        """Adding the same token and counter again keeps one row, with the later expiry."""
        one = ("1FA", "user", "alice")
        storage.add_inflight("t1", [one], expires=clock.now + 10)
        storage.add_inflight("t1", [one], expires=clock.now + 20)
        assert storage.inflight_counts([one], clock.now + 15) == {one: 1}

    def test_exclusive_excludes_threads(self, storage: Storage) -> None:
        """Two threads never hold the same name at once; other names do not wait."""
        inside: list[int] = []
        most = [0]
        lock = threading.Lock()
        barrier = threading.Barrier(4)

        def work() -> None:
            barrier.wait()
            for _ in range(5):
                with storage.exclusive("regulation"):
                    with lock:
                        inside.append(1)
                        most[0] = max(most[0], len(inside))
                    time.sleep(0.002)
                    with lock:
                        inside.pop()

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        with storage.exclusive("other"):
            pass
        for thread in threads:
            thread.join()
        assert most[0] == 1

    def test_exclusive_times_out_into_a_storage_error(self, storage: Storage) -> None:
        """A lock held elsewhere longer than the timeout is a StorageError, never a free pass."""
        taken, release = threading.Event(), threading.Event()

        def hold() -> None:
            with storage.exclusive("regulation"):
                taken.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        taken.wait(10)
        storage.timeout = 0.1
        try:
            with pytest.raises(StorageError, match="timed out"), storage.exclusive("regulation"):
                raise AssertionError("entered a held lock")
        finally:
            release.set()
            holder.join()
        with storage.exclusive("regulation"):
            pass
        if storage.backend == "sqlite":
            lock_file = storage.path.with_name(storage.path.name + ".lock")
            assert stat.S_IMODE(lock_file.stat().st_mode) == 0o600


# --------------------------------------------------------------------------- copying (migrate)


class TestCopy:
    """What ``authctl storage status`` and ``storage migrate`` use."""

    def test_describe_version_tables(self, storage: Storage, config: StorageConfig) -> None:
        """The backend, where it is, the schema version and every data table in copy order."""
        if config.postgres is None:
            assert storage.backend == "sqlite"
            assert storage.describe() == str(storage.path)
        else:
            assert storage.backend == "postgres"
            assert storage.describe().startswith("postgresql://authctl@127.0.0.1:")
            assert PASSWORD not in storage.describe()
        assert repr(storage) == f"<Storage {storage.describe()}>"
        assert storage.schema_version() == SCHEMA_VERSION
        assert storage.tables()[0] == "totp_configurations"
        assert "meta" not in storage.tables()
        assert set(storage.counts()) == set(storage.tables())
        assert set(storage.counts().values()) == {0}

    def test_rows_round_trip_into_another_storage(self, storage: Storage, tmp_path: Path) -> None:
        """Every table's rows copy over once: a second copy adds nothing, counts match."""
        save(storage)
        storage.accept_totp_step("alice", 7)
        storage.append_log(10, "alice", "10.0.0.1", "1FA", False)
        storage.save_ban("user", "alice", 2e9, "r")
        add_code(storage)
        storage.hit_rate_limits([("k", [(5, 60.0)])], 1.0)
        storage.add_inflight("t", [("1FA", "user", "alice")], 3e9)
        storage.add_webauthn_credential(credential())
        (tmp_path / "copy").mkdir()
        target = Storage(make_config(tmp_path / "copy"))
        try:
            for table in storage.tables():
                rows = storage.rows(table)
                assert target.insert_rows(table, rows) == len(rows)
                assert target.insert_rows(table, rows) == 0
                assert target.rows(table) == rows
            assert target.counts() == storage.counts()
            assert sum(storage.counts().values()) == 8
            assert target.webauthn_credentials() == storage.webauthn_credentials()
            record = target.load_totp("alice")
            assert record is not None
            assert record.secret == b"s" * 20
            assert not target.accept_totp_step("alice", 7)
            target.append_log(11, "alice", "10.0.0.1", "1FA", False)  # a fresh id
            assert target.counts()["authentication_logs"] == 2
            assert isinstance(target.rows("one_time_codes")[0][3], bytes)
        finally:
            target.close()

    def test_unknown_table_is_refused(self, storage: Storage) -> None:
        """rows and insert_rows only take the storage's own data tables."""
        with pytest.raises(ValueError, match="unknown table"):
            storage.rows("meta")
        with pytest.raises(ValueError, match="unknown table"):
            storage.insert_rows("x; DROP TABLE bans", [])
        assert storage.insert_rows("bans", []) == 0
        with pytest.raises(ValueError, match="5 columns, not 2"):
            storage.insert_rows("bans", [("user", "alice")])

    def test_lock_file_that_cannot_be_opened(self, sqlite_storage: Storage) -> None:
        """A lock file that cannot be opened (a folder in its place) is a StorageError."""
        sqlite_storage.path.with_name(sqlite_storage.path.name + ".lock").mkdir()
        with (
            pytest.raises(StorageError, match="cannot open the lock file"),
            sqlite_storage.exclusive("x"),
        ):
            raise AssertionError("entered without the lock")


# --------------------------------------------------------------------------- WebAuthn


def credential(
    row_id: str = "w1", username: str = "alice", description: str = "laptop", **changes: t.Any
) -> WebAuthnCredential:
    """A credential of ``username`` with distinct bytes per ``row_id``."""
    fields: dict[str, t.Any] = {
        "id": row_id,
        "username": username,
        "credential_id": b"cred-" + row_id.encode(),
        "public_key": b"\xa5" * 77,
        "sign_count": 0,
        "aaguid": "00000000-0000-0000-0000-000000000000",
        "transports": ("internal", "hybrid"),
        "backup_eligible": True,
        "backup_state": False,
        "discoverable": True,
        "description": description,
        "attestation_type": "none",
        "created_at": 10.0,
        "last_used_at": None,
    }
    fields.update(changes)
    return WebAuthnCredential(**fields)


class TestWebAuthn:
    """WebAuthn credentials: stored whole, unique ids and descriptions, counts only grow."""

    def test_add_and_read_back(self, storage: Storage) -> None:
        """Every field reads back as stored, by user, by credential id, or all."""
        first = credential()
        assert storage.add_webauthn_credential(first)
        assert storage.add_webauthn_credential(credential("w2", "bob", created_at=5.0))
        assert storage.webauthn_credentials("alice") == [first]
        assert [c.id for c in storage.webauthn_credentials()] == ["w2", "w1"]
        assert storage.webauthn_credential(b"cred-w1") == first
        assert storage.webauthn_credential(b"nope") is None
        assert b"\xa5" * 77 not in repr(first).encode()

    def test_duplicates_are_refused(self, storage: Storage) -> None:
        """A registered credential id, or a description the user already uses: False."""
        assert storage.add_webauthn_credential(credential())
        assert not storage.add_webauthn_credential(credential("w2"))  # same description
        assert not storage.add_webauthn_credential(
            credential("w3", "bob", credential_id=b"cred-w1")
        )
        assert storage.add_webauthn_credential(credential("w4", "bob"))  # bob's own laptop
        with pytest.raises(ValueError, match="transports"):
            storage.add_webauthn_credential(credential("w5", description="x", transports=("",)))

    def test_sign_count_only_grows(self, storage: Storage) -> None:
        """A growing count is recorded; the same or a lower one is refused (possible clone);
        zero stays acceptable while both are zero (authenticators without counters)."""
        storage.add_webauthn_credential(credential())
        assert storage.use_webauthn_credential(b"cred-w1", 0, now=20.0, backup_state=True)
        assert storage.use_webauthn_credential(b"cred-w1", 5, now=30.0, backup_state=True)
        assert not storage.use_webauthn_credential(b"cred-w1", 5, now=40.0, backup_state=True)
        assert not storage.use_webauthn_credential(b"cred-w1", 0, now=40.0, backup_state=True)
        assert not storage.use_webauthn_credential(b"unknown", 9, now=40.0, backup_state=True)
        (row,) = storage.webauthn_credentials("alice")
        assert (row.sign_count, row.last_used_at, row.backup_state) == (5, 30.0, True)

    def test_rename_and_delete(self, storage: Storage) -> None:
        """Rename refuses a taken description and another user's credential; delete removes
        one or all of a user's."""
        storage.add_webauthn_credential(credential())
        storage.add_webauthn_credential(credential("w2", description="phone"))
        storage.add_webauthn_credential(credential("w3", "bob"))
        assert not storage.rename_webauthn_credential("alice", "w1", "phone")
        assert not storage.rename_webauthn_credential("alice", "w3", "mine")
        assert storage.rename_webauthn_credential("alice", "w1", "work laptop")
        assert storage.rename_webauthn_credential("alice", "w1", "work laptop")
        assert not storage.delete_webauthn_credential("alice", "w3")
        assert storage.delete_webauthn_credential("alice", "w2")
        assert [c.description for c in storage.webauthn_credentials("alice")] == ["work laptop"]
        assert storage.delete_webauthn_credentials("alice") == 1
        assert storage.delete_webauthn_credentials("alice") == 0
        assert len(storage.webauthn_credentials()) == 1

    def test_parallel_assertions_one_winner(self, storage: Storage) -> None:
        """20 threads recording the same new count: exactly one succeeds."""
        storage.add_webauthn_credential(credential())
        barrier = threading.Barrier(20)
        results: list[bool] = []

        def use() -> None:
            barrier.wait()
            results.append(
                storage.use_webauthn_credential(b"cred-w1", 7, now=1.0, backup_state=False)
            )

        threads = [threading.Thread(target=use) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [False] * 19 + [True]


# --------------------------------------------------------------------------- user preferences


class TestUserPreferences:
    """Each user's preferred second factor (SPEC §7.1 ``method``), on both engines."""

    def test_set_get_replace_delete(
        self, storage: Storage, config: StorageConfig, clock: Clock
    ) -> None:
        """None until chosen; one row per user, replaced with its time; deleted with the user."""
        assert storage.second_factor_method("alice") is None
        storage.set_second_factor_method("alice", "webauthn")
        storage.set_second_factor_method("bob", "totp")
        clock.advance(30)
        storage.set_second_factor_method("alice", "totp")
        assert storage.second_factor_method("alice") == "totp"
        assert storage.second_factor_method("bob") == "totp"
        rows = raw_sql(
            config, "SELECT username, updated_at FROM user_preferences ORDER BY username"
        )
        assert [(name, float(when)) for name, when in rows] == [
            ("alice", clock.now),
            ("bob", clock.now - 30),
        ]
        assert storage.delete_user_preferences("alice")
        assert not storage.delete_user_preferences("alice")
        assert storage.second_factor_method("alice") is None
        assert storage.second_factor_method("bob") == "totp"
        assert storage.counts()["user_preferences"] == 1

    def test_unknown_methods_are_refused(self, storage: Storage, config: StorageConfig) -> None:
        """The storage refuses a method it does not know, and so does the table (CHECK)."""
        with pytest.raises(ValueError, match="sms"):
            storage.set_second_factor_method("alice", "sms")
        with pytest.raises((sqlite3.IntegrityError, psycopg.errors.CheckViolation)):
            raw_sql(
                config,
                "INSERT INTO user_preferences VALUES (?, ?, ?)",
                ("alice", "sms", 1.0),
            )
        assert storage.second_factor_method("alice") is None

    def test_a_version_4_database_gains_the_table(
        self, config: StorageConfig, clock: Clock
    ) -> None:
        """Opening a database of schema 4 runs migration 5 (the table, the version)."""
        Storage(config, clock).close()
        raw_sql(config, "DROP TABLE user_preferences")
        set_schema_version(config, 4)
        storage = Storage(config, clock)
        try:
            assert storage.schema_version() == SCHEMA_VERSION >= 5
            storage.set_second_factor_method("alice", "webauthn")
            assert storage.second_factor_method("alice") == "webauthn"
        finally:
            storage.close()
