"""Contract tests every session store must pass, plus what only the SQLite store promises.

The same table runs against ``MemoryStore`` and ``SQLiteStore`` so a future Redis store can be
added to ``STORES`` and inherit the whole contract. SQLite-only tests pin the security and
reliability properties: ids hashed at rest, restart survival, thread and process sharing,
file modes, schema versioning and fail-closed errors.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import shutil
import sqlite3
import stat
import threading
import time
import warnings
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.core.session_store import SCHEMA_VERSION
from server.core.session_store import MemoryStore
from server.core.session_store import SessionStore
from server.core.session_store import SessionStoreError
from server.core.session_store import SQLiteStore
from server.core.session_store import hash_session_id
from server.core.session_store import session_from_json
from server.core.session_store import session_to_json
from server.core.sessions import Level
from server.core.sessions import Listed
from server.core.sessions import Session
from server.core.sessions import is_handle
from server.core.sessions import new_handle
from server.core.sessions import new_session_id

T0 = 1_700_000_000.0


class FakeClock:
    """A settable clock shared by a store and the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make_session(
    username: str | None = "alice",
    *,
    level: Level = Level.ONE_FACTOR,
    data: dict[str, str] | None = None,
    remember_me: bool = False,
    handle: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
) -> Session:
    """A session for ``username`` created at T0 (no handle, as records before SPEC §7.6,
    unless given)."""
    return Session(
        id=new_session_id(),
        cookie_domain="example.com",
        username=username,
        level=level if username is not None else Level.NONE,
        created=T0,
        last_activity=T0,
        auth_time=T0,
        remember_me=remember_me,
        user_stamp="0123456789abcdef0123456789abcdef",
        data=data or {},
        handle=handle,
        ip=ip,
        user_agent=user_agent,
    )


def client_session(username: str | None = "alice") -> Session:
    """A session as sign-in makes it now: handle, IP and User-Agent."""
    return make_session(
        username, handle=new_handle(), ip="203.0.113.7", user_agent="Mozilla/5.0 (X11) <b>"
    )


def old_json(session: Session) -> bytes:
    """The record the previous version wrote: no handle, ip or user_agent key at all."""
    raw = json.loads(session_to_json(session))
    for name in ("handle", "ip", "user_agent"):
        del raw[name]
    return json.dumps(raw).encode()


def by_key(listed: list[Listed]) -> dict[bytes, Session]:
    """A listing as ``{store key: record}`` (keys are unique)."""
    found = {item.key: item.session for item in listed}
    assert len(found) == len(listed)
    return found


StoreFactory = Callable[[FakeClock], SessionStore]


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory of stores of one kind on a given clock (closed after the test)."""
    made: list[SessionStore] = []

    def make(clock: FakeClock) -> SessionStore:
        store: SessionStore
        if request.param == "memory":
            store = MemoryStore(now=clock)
        else:
            store = SQLiteStore(tmp_path / "state" / "sessions.db", now=clock)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def clock() -> FakeClock:
    """A fresh clock at T0 (shadows the conftest clock to share this file's class)."""
    return FakeClock()


@pytest.fixture
def store(make_store: StoreFactory, clock: FakeClock) -> SessionStore:
    """One store of each kind on ``clock``."""
    return make_store(clock)


# --------------------------------------------------------------------------- the contract


class TestContract:
    """Behaviour shared by every store."""

    def test_is_a_session_store(self, store: SessionStore) -> None:
        """Each store satisfies the runtime-checkable protocol."""
        assert isinstance(store, SessionStore)

    def test_put_then_get_round_trips(self, store: SessionStore) -> None:
        """A stored session comes back equal, data included."""
        session = make_session(data={"totp_pending": "ABC", "elevated_until": "123"})
        store.put(session, 60)
        got = store.get(session.id)
        assert got == session
        assert got is not None
        assert got.id == session.id
        assert dict(got.data) == {"totp_pending": "ABC", "elevated_until": "123"}

    @pytest.mark.parametrize(
        ("username", "remember_me"),
        [("alice", False), ("bob", True), (None, False)],
        ids=["plain", "remember-me", "anonymous"],
    )
    def test_round_trips_every_kind(
        self, store: SessionStore, username: str | None, remember_me: bool
    ) -> None:
        """Anonymous and remember-me sessions round-trip too."""
        session = make_session(username, remember_me=remember_me)
        store.put(session, 60)
        assert store.get(session.id) == session

    def test_unknown_id_is_none(self, store: SessionStore) -> None:
        """An id that was never stored gives None, not an error."""
        assert store.get(new_session_id()) is None

    @pytest.mark.parametrize(
        ("ttl", "after", "alive"),
        [(60, 59.9, True), (60, 60, False), (60, 61, False), (0.5, 0.4, True)],
    )
    def test_ttl_is_honoured(
        self, store: SessionStore, clock: FakeClock, ttl: float, after: float, alive: bool
    ) -> None:
        """A session is returned until its TTL ends, and never after."""
        session = make_session()
        store.put(session, ttl)
        clock.now += after
        assert (store.get(session.id) is not None) is alive

    def test_put_replaces(self, store: SessionStore, clock: FakeClock) -> None:
        """Putting the same id again replaces the record and its TTL."""
        session = make_session()
        store.put(session, 10)
        changed = Session(
            id=session.id,
            cookie_domain="example.com",
            username="alice",
            level=Level.TWO_FACTOR,
            created=T0,
            last_activity=T0,
            auth_time=T0 + 1,
            user_stamp="other",
        )
        store.put(changed, 100)
        clock.now += 50
        assert store.get(session.id) == changed

    def test_delete_reports_whether_it_removed(self, store: SessionStore) -> None:
        """Delete answers True once, then False, so a caller can act exactly once."""
        session = make_session()
        store.put(session, 60)
        assert store.delete(session.id) is True
        assert store.delete(session.id) is False
        assert store.get(session.id) is None

    def test_delete_anonymous_session(self, store: SessionStore) -> None:
        """A session without a user is deleted like any other."""
        session = make_session(None)
        store.put(session, 60)
        assert store.delete(session.id) is True
        assert store.get(session.id) is None

    def test_delete_user_removes_only_that_user(self, store: SessionStore) -> None:
        """delete_user removes every session of one user and counts them."""
        alice = [make_session("alice") for _ in range(3)]
        bob = make_session("bob")
        anon = make_session(None)
        for session in [*alice, bob, anon]:
            store.put(session, 60)
        assert store.delete_user("alice") == 3
        assert store.delete_user("alice") == 0
        assert all(store.get(s.id) is None for s in alice)
        assert store.get(bob.id) == bob
        assert store.get(anon.id) == anon

    def test_touch_moves_activity_forward_only(self, store: SessionStore) -> None:
        """touch advances last_activity and never moves it back."""
        session = make_session()
        store.put(session, 600)
        store.touch(session.id, T0 + 30)
        got = store.get(session.id)
        assert got is not None
        assert got.last_activity == T0 + 30
        store.touch(session.id, T0 + 10)
        got = store.get(session.id)
        assert got is not None
        assert got.last_activity == T0 + 30

    def test_touch_keeps_the_ttl(self, store: SessionStore, clock: FakeClock) -> None:
        """touch does not extend the absolute lifetime given to put."""
        session = make_session()
        store.put(session, 60)
        clock.now += 50
        store.touch(session.id, clock.now)
        clock.now += 11
        assert store.get(session.id) is None

    def test_touch_does_not_resurrect(self, store: SessionStore) -> None:
        """Touching a deleted session leaves it deleted."""
        session = make_session()
        store.put(session, 60)
        store.delete(session.id)
        store.touch(session.id, T0 + 5)
        assert store.get(session.id) is None

    def test_purge_expired_counts(self, store: SessionStore, clock: FakeClock) -> None:
        """purge_expired removes exactly the sessions whose TTL ended."""
        short = [make_session() for _ in range(2)]
        long = make_session()
        for session in short:
            store.put(session, 10)
        store.put(long, 100)
        assert store.purge_expired(T0 + 5) == 0
        assert store.purge_expired(T0 + 10) == 2
        assert store.get(long.id) == long

    # ------------------------------------------------------------ SPEC §7.6: listing

    def test_new_fields_round_trip(self, store: SessionStore) -> None:
        """Handle, IP and User-Agent are stored with the session and come back as sent."""
        session = client_session()
        store.put(session, 60)
        got = store.get(session.id)
        assert got == session
        assert got is not None
        assert (got.handle, got.ip, got.user_agent) == (
            session.handle,
            "203.0.113.7",
            "Mozilla/5.0 (X11) <b>",
        )

    def test_sessions_of_lists_one_user_by_store_key(self, store: SessionStore) -> None:
        """A user's sessions come back under SHA-256 of their ids, never with an id; another
        user's and anonymous sessions are not among them; None lists every user's."""
        alice = [client_session() for _ in range(3)]
        bob = client_session("bob")
        anon = client_session(None)
        for session in [*alice, bob, anon]:
            store.put(session, 60)
        found = by_key(store.sessions_of("alice"))
        assert found == {hash_session_id(s.id): dataclasses.replace(s, id="") for s in alice}
        every = by_key(store.sessions_of(None))
        assert set(every) == {hash_session_id(s.id) for s in [*alice, bob]}
        assert store.sessions_of("carol") == []
        ids = {s.id for s in [*alice, bob, anon]}
        for listed in store.sessions_of(None):
            assert listed.session.id == ""
            assert not ids & set(repr(listed).split("'"))

    def test_delete_listed_ends_only_that_users_session(self, store: SessionStore) -> None:
        """delete_listed removes one session, only under its own user, once."""
        first, second = client_session(), client_session()
        bob = client_session("bob")
        for session in (first, second, bob):
            store.put(session, 60)
        key = hash_session_id(first.id)
        assert store.delete_listed(key, "bob") is False
        assert store.get(first.id) == first
        assert store.delete_listed(hash_session_id(bob.id), "alice") is False
        assert store.get(bob.id) == bob
        assert store.delete_listed(key, "alice") is True
        assert store.delete_listed(key, "alice") is False
        assert store.get(first.id) is None
        assert store.get(second.id) == second
        assert set(by_key(store.sessions_of("alice"))) == {hash_session_id(second.id)}

    def test_ended_sessions_are_not_listed(self, store: SessionStore, clock: FakeClock) -> None:
        """Deleted, user-deleted and expired sessions drop out of the listing."""
        gone, short, kept = client_session(), client_session(), client_session()
        store.put(gone, 60)
        store.put(short, 0.2)
        store.put(kept, 60)
        store.delete(gone.id)
        clock.now += 1
        time.sleep(0.3)  # Redis expires on its own clock
        assert set(by_key(store.sessions_of("alice"))) == {hash_session_id(kept.id)}
        store.delete_user("alice")
        assert store.sessions_of("alice") == []

    def test_touch_gives_an_old_record_a_handle(self, store: SessionStore) -> None:
        """A record without a handle (previous version) gets one at its next write, and
        keeps it after."""
        session = make_session()
        store.put(session, 600)
        listed = store.sessions_of("alice")
        assert [item.session.handle for item in listed] == [None]
        store.touch(session.id, T0 + 30)
        got = store.get(session.id)
        assert got is not None
        assert got.handle is not None
        assert is_handle(got.handle)
        store.touch(session.id, T0 + 60)
        again = store.get(session.id)
        assert again is not None
        assert again.handle == got.handle
        assert [item.session.handle for item in store.sessions_of("alice")] == [got.handle]

    @pytest.mark.parametrize(
        "call",
        [
            lambda s: s.get(new_session_id()),
            lambda s: s.put(make_session(), 1),
            lambda s: s.delete(new_session_id()),
            lambda s: s.delete_user("alice"),
            lambda s: s.touch(new_session_id(), T0),
            lambda s: s.purge_expired(T0),
            lambda s: s.sessions_of("alice"),
            lambda s: s.delete_listed(hash_session_id(new_session_id()), "alice"),
        ],
        ids=[
            "get",
            "put",
            "delete",
            "delete_user",
            "touch",
            "purge_expired",
            "sessions_of",
            "delete_listed",
        ],
    )
    def test_closed_store_fails_closed(
        self, store: SessionStore, call: Callable[[SessionStore], object]
    ) -> None:
        """Every call on a closed store raises SessionStoreError, never answers."""
        store.close()
        with pytest.raises(SessionStoreError):
            call(store)

    def test_close_is_idempotent(self, store: SessionStore) -> None:
        """Closing twice is harmless (shutdown paths may overlap)."""
        store.close()
        store.close()


# --------------------------------------------------------------------------- memory only


def test_memory_store_expired_get_frees_the_entry() -> None:
    """A MemoryStore drops an expired entry when it is read, so memory does not grow."""
    clock = FakeClock()
    store = MemoryStore(now=clock)
    session = make_session()
    store.put(session, 1)
    clock.now += 2
    assert store.get(session.id) is None
    assert len(store) == 0
    assert store.delete_user("alice") == 0


# --------------------------------------------------------------------------- sqlite only


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the SQLite store file goes, in a folder that does not exist yet."""
    return tmp_path / "state" / "sessions.db"


def copy_row(conn: sqlite3.Connection, key: bytes, to: bytes) -> None:
    """Copy the sessions row under ``key`` to the key ``to``, whatever the columns are."""
    columns = [row[1] for row in conn.execute("PRAGMA table_info(sessions)")]
    row = dict(
        zip(
            columns,
            conn.execute("SELECT * FROM sessions WHERE key = ?", (key,)).fetchone(),
            strict=True,
        )
    )
    row["key"] = to
    conn.execute(
        f"INSERT INTO sessions ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",  # noqa: S608
        list(row.values()),
    )


def forgeries(record: bytes, raised: Session) -> list[bytes]:
    """What someone without the key can put in place of a sealed ``record`` to get
    ``raised``: its plain JSON (the unsealed format), and the record with a byte changed in
    each part (format, nonce, ciphertext, tag)."""
    out = [session_to_json(raised).encode()]
    for at in (0, 1, 13, 20, len(record) - 20, len(record) - 1):
        out.append(record[:at] + bytes([record[at] ^ 1]) + record[at + 1 :])
    out.append(record[:-1])
    return out


def raw_connect(path: Path) -> sqlite3.Connection:
    """A plain autocommit connection to inspect or damage the store file."""
    return sqlite3.connect(path, isolation_level=None)


class TestSQLite:
    """What only the SQLite store promises."""

    def test_restart_survives(self, db_path: Path) -> None:
        """A session written by one store instance is read by another on the same file."""
        clock = FakeClock()
        first = SQLiteStore(db_path, now=clock)
        session = make_session(data={"k": "v"})
        first.put(session, 60)
        first.close()
        second = SQLiteStore(db_path, now=clock)
        try:
            assert second.get(session.id) == session
        finally:
            second.close()

    def test_two_live_instances_share_the_file(self, db_path: Path) -> None:
        """Two open stores on one file (two workers) see each other's writes and deletes."""
        clock = FakeClock()
        a, b = SQLiteStore(db_path, now=clock), SQLiteStore(db_path, now=clock)
        try:
            session = make_session()
            a.put(session, 60)
            assert b.get(session.id) == session
            assert b.delete(session.id) is True
            assert a.get(session.id) is None
        finally:
            a.close()
            b.close()

    def test_ids_are_not_stored_in_clear(self, db_path: Path) -> None:
        """Neither the database file nor its WAL holds a raw session id, only its SHA-256."""
        clock = FakeClock()
        store = SQLiteStore(db_path, now=clock)
        sessions = [make_session() for _ in range(20)]
        for session in sessions:
            store.put(session, 60)
        with raw_connect(db_path) as conn:
            keys = {row[0] for row in conn.execute("SELECT key FROM sessions")}
        assert keys == {hash_session_id(s.id) for s in sessions}
        blob = b"".join(
            p.read_bytes() for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)
        )
        store.close()
        assert all(s.id.encode() not in blob for s in sessions)
        assert all(hash_session_id(s.id) in blob for s in sessions)  # the search itself works

    def test_concurrent_put_get_from_eight_threads(self, db_path: Path) -> None:
        """Eight threads putting, reading and deleting at once raise no error and lose nothing."""
        store = SQLiteStore(db_path)
        errors: list[BaseException] = []
        barrier = threading.Barrier(8)

        def work(n: int) -> None:
            try:
                barrier.wait()
                for _ in range(50):
                    session = make_session(f"user{n}")
                    store.put(session, 60)
                    assert store.get(session.id) == session
                    store.touch(session.id, T0 + 1)
                store.delete_user(f"user{n}")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        store.close()
        assert errors == []

    def test_concurrent_first_opens_migrate_once(self, db_path: Path) -> None:
        """Workers starting together on a fresh file all open it; the schema is made once."""
        errors: list[BaseException] = []
        barrier = threading.Barrier(8)

        def open_store() -> None:
            try:
                barrier.wait()
                SQLiteStore(db_path).close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with raw_connect(db_path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION

    def test_file_and_folder_modes(self, db_path: Path) -> None:
        """The new folder is 0700 and the database and its WAL are 0600."""
        store = SQLiteStore(db_path)
        store.put(make_session(), 60)
        assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
        wal = db_path.with_name(db_path.name + "-wal")
        assert wal.exists()
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600
        store.close()

    def test_loose_file_mode_is_tightened(self, tmp_path: Path) -> None:
        """An existing database readable by others is made 0600 on open."""
        path = tmp_path / "sessions.db"
        path.touch(mode=0o644)
        path.chmod(0o644)
        SQLiteStore(path).close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_existing_folder_mode_is_left_alone(self, tmp_path: Path) -> None:
        """A folder that already exists (say a home folder) keeps its mode."""
        tmp_path.chmod(0o755)
        SQLiteStore(tmp_path / "sessions.db").close()
        assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755

    def test_wal_schema_and_indexes(self, db_path: Path) -> None:
        """The file is in WAL mode, at the current schema version, with the expiry indexed."""
        SQLiteStore(db_path).close()
        with raw_connect(db_path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            indexes = {row[1] for row in conn.execute("PRAGMA index_list(sessions)")}
            plan = " ".join(
                str(row[3])
                for row in conn.execute(
                    "EXPLAIN QUERY PLAN DELETE FROM sessions WHERE expires <= 1"
                )
            )
        assert {"sessions_expires", "sessions_username"} <= indexes
        assert "sessions_expires" in plan

    def test_get_is_one_primary_key_lookup(self, db_path: Path) -> None:
        """The read on the verify path searches by primary key, never scans."""
        SQLiteStore(db_path).close()
        from server.core.session_store import _GET

        with raw_connect(db_path) as conn:
            plan = " ".join(
                str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {_GET}", (b"k", 0.0))
            )
        assert "PRIMARY KEY" in plan
        assert "SCAN" not in plan

    def test_thread_connection_is_reused(self, db_path: Path) -> None:
        """One thread keeps one connection across calls (no reconnect per request)."""
        store = SQLiteStore(db_path)
        assert store._conn() is store._conn()
        store.close()

    def test_synchronous_is_normal(self, db_path: Path) -> None:
        """Each connection runs with synchronous=NORMAL (1), the WAL-safe fast setting."""
        store = SQLiteStore(db_path)
        assert store._conn().execute("PRAGMA synchronous").fetchone()[0] == 1
        store.close()

    def test_reopening_does_not_migrate_again(self, db_path: Path) -> None:
        """Opening a current file keeps its rows (no table is recreated)."""
        store = SQLiteStore(db_path)
        session = make_session()
        store.put(session, 60)
        store.close()
        for _ in range(2):
            again = SQLiteStore(db_path)
            assert again.get(session.id) == session
            again.close()

    def test_newer_schema_is_refused(self, db_path: Path) -> None:
        """A file written by a newer authctl is refused, not silently misread."""
        SQLiteStore(db_path).close()
        with raw_connect(db_path) as conn:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        with pytest.raises(SessionStoreError, match="newer"):
            SQLiteStore(db_path)
        with raw_connect(db_path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1

    def test_unopenable_path_is_a_store_error(self, tmp_path: Path) -> None:
        """A path that is a folder raises SessionStoreError at start-up."""
        (tmp_path / "dir.db").mkdir()
        with pytest.raises(SessionStoreError, match="cannot open"):
            SQLiteStore(tmp_path / "dir.db")

    def test_not_a_database_is_a_store_error(self, tmp_path: Path) -> None:
        """A file that is not SQLite raises SessionStoreError at start-up."""
        path = tmp_path / "sessions.db"
        path.write_bytes(b"this is not a database" * 100)
        with pytest.raises(SessionStoreError):
            SQLiteStore(path)

    # ------------------------------------------------------------ SPEC §7.6: old records

    def test_rows_of_the_previous_version_open_and_list(self, db_path: Path) -> None:
        """A row sealed by the previous version (no handle, ip, user_agent keys) is still a
        session: read, listed with None for what it lacks, and given a handle by its next
        write."""
        store = SQLiteStore(db_path, now=FakeClock(), key=b"k" * 32)
        session = make_session()
        key = hash_session_id(session.id)
        record = store._seal._box.seal(old_json(session), b"authctl session\x00" + key)
        with raw_connect(db_path) as conn:
            conn.execute(
                "INSERT INTO sessions (key, username, expires, record) VALUES (?, ?, ?, ?)",
                (key, "alice", T0 + 600, record),
            )
        assert b"handle" not in store._seal._box.open(record, b"authctl session\x00" + key)
        assert store.get(session.id) == session
        [listed] = store.sessions_of("alice")
        assert (listed.session.handle, listed.session.ip, listed.session.user_agent) == (
            None,
            None,
            None,
        )
        store.touch(session.id, T0 + 10)
        [listed] = store.sessions_of("alice")
        assert listed.session.handle is not None
        assert is_handle(listed.session.handle)
        store.close()

    def test_a_listing_skips_rows_that_do_not_open(self, db_path: Path) -> None:
        """A row sealed with another key, or whose clear user name was edited, is not
        listed (nor can it be ended through the other user's list)."""
        store = SQLiteStore(db_path, now=FakeClock(), key=b"k" * 32)
        other = SQLiteStore(db_path, now=FakeClock(), key=b"o" * 32)
        mine, foreign, moved = client_session(), client_session(), client_session("bob")
        store.put(mine, 60)
        other.put(foreign, 60)
        store.put(moved, 60)
        with raw_connect(db_path) as conn:
            conn.execute(
                "UPDATE sessions SET username = 'alice' WHERE key = ?",
                (hash_session_id(moved.id),),
            )
        assert set(by_key(store.sessions_of("alice"))) == {hash_session_id(mine.id)}
        assert set(by_key(store.sessions_of(None))) == {hash_session_id(mine.id)}
        store.close()
        other.close()

    @pytest.mark.parametrize(
        "call",
        [
            lambda s: s.get(new_session_id()),
            lambda s: s.put(make_session(), 1),
            lambda s: s.delete(new_session_id()),
            lambda s: s.delete_user("alice"),
            lambda s: s.touch(new_session_id(), T0),
            lambda s: s.purge_expired(T0),
            lambda s: s.sessions_of("alice"),
            lambda s: s.delete_listed(hash_session_id(new_session_id()), "alice"),
        ],
        ids=[
            "get",
            "put",
            "delete",
            "delete_user",
            "touch",
            "purge_expired",
            "sessions_of",
            "delete_listed",
        ],
    )
    def test_sqlite_errors_fail_closed(
        self, db_path: Path, call: Callable[[SessionStore], object]
    ) -> None:
        """Any sqlite3 error (here: the table is gone) is raised as SessionStoreError."""
        store = SQLiteStore(db_path)
        with raw_connect(db_path) as conn:
            conn.execute("DROP TABLE sessions")
        with pytest.raises(SessionStoreError):
            call(store)
        store.close()

    def test_vanished_folder_fails_closed(self, db_path: Path) -> None:
        """When the file cannot be opened by a new thread, get raises SessionStoreError."""
        store = SQLiteStore(db_path)
        shutil.rmtree(db_path.parent)
        with pytest.raises(SessionStoreError):
            store.get(new_session_id())
        store.close()

    def test_row_copied_under_another_id_is_refused(
        self, db_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Whoever can write the file copies a victim's row under the hash of an id of their
        choosing: the copy is no session (sealed to the victim's key), the victim's still is,
        and the refusal is logged once, not once per request."""
        store = SQLiteStore(db_path)
        victim = make_session(level=Level.TWO_FACTOR)
        store.put(victim, 60)
        chosen = new_session_id()
        with raw_connect(db_path) as conn:
            copy_row(conn, hash_session_id(victim.id), hash_session_id(chosen))
        with caplog.at_level("WARNING", logger="authctl.sessions"):
            assert all(store.get(chosen) is None for _ in range(5))
        assert store.get(victim.id) == victim
        refusals = [r for r in caplog.records if "possible tampering" in r.getMessage()]
        assert len(refusals) <= 1
        store.close()

    def test_row_with_raised_level_is_refused(self, db_path: Path) -> None:
        """Raising a row's level (to skip TOTP), by any edit of the row, gives no session."""
        store = SQLiteStore(db_path)
        session = make_session(level=Level.ONE_FACTOR)
        store.put(session, 60)
        key = hash_session_id(session.id)
        with raw_connect(db_path) as conn:
            columns = [row[1] for row in conn.execute("PRAGMA table_info(sessions)")]
        if "level" in columns:  # an unsealed row (before records were sealed)
            edits: list[tuple[str, object]] = [("level", 2)]
        else:
            with raw_connect(db_path) as conn:
                record = bytes(
                    conn.execute("SELECT record FROM sessions WHERE key = ?", (key,)).fetchone()[0]
                )
            raised = dataclasses.replace(session, level=Level.TWO_FACTOR)
            edits = [("record", forged) for forged in forgeries(record, raised)]
            edits.append(("username", "bob"))  # the clear column delete_user goes by
        for column, value in edits:
            store.put(session, 60)
            with raw_connect(db_path) as conn:
                conn.execute(
                    f"UPDATE sessions SET {column} = ? WHERE key = ?",  # noqa: S608
                    (value, key),
                )
            store._cache.clear()  # a change made behind authctl's back (no stamp)
            got = store.get(session.id)
            assert got is None or got.level is Level.ONE_FACTOR, column
            assert got is None, column
        store.close()

    def test_record_sealed_with_another_key_is_refused(self, db_path: Path) -> None:
        """A host with another secrets/storage.key cannot read (or have accepted) a record."""
        ours = SQLiteStore(db_path, key=b"k" * 32)
        session = make_session()
        ours.put(session, 60)
        assert ours.get(session.id) == session
        theirs = SQLiteStore(db_path, key=b"x" * 32)
        assert theirs.get(session.id) is None
        same = SQLiteStore(db_path, key=b"k" * 32)
        assert same.get(session.id) == session
        for store in (ours, theirs, same):
            store.close()

    def test_version_1_rows_are_dropped(self, db_path: Path) -> None:
        """Unsealed rows of schema 1 cannot be trusted: the upgrade removes them."""
        db_path.parent.mkdir(parents=True, exist_ok=True)
        with raw_connect(db_path) as conn:
            from server.core.session_store import MIGRATIONS

            for statement in MIGRATIONS[0]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO sessions VALUES (?, 'example.com', 'alice', 2, 0, 0, 0, 0, '', "
                "NULL, 9e99)",
                (hash_session_id(ids := new_session_id()),),
            )
            conn.execute("PRAGMA user_version = 1")
        store = SQLiteStore(db_path)
        assert store.get(ids) is None
        store.close()

    def test_closes_connections_of_other_threads(self, db_path: Path) -> None:
        """close() from one thread also closes the connection another thread opened."""
        store = SQLiteStore(db_path)
        opened: list[sqlite3.Connection] = []
        thread = threading.Thread(target=lambda: opened.append(store._conn()))
        thread.start()
        thread.join()
        store.close()
        with pytest.raises(sqlite3.ProgrammingError):
            opened[0].execute("SELECT 1")

    def test_forked_child_uses_its_own_connection(self, db_path: Path) -> None:
        """A worker forked after the store was used opens its own connection and shares data."""
        store = SQLiteStore(db_path)
        session = make_session()
        store.put(session, 60)
        parent_conn = store._conn()
        ctx = multiprocessing.get_context("fork")
        queue: multiprocessing.queues.SimpleQueue[str] = ctx.SimpleQueue()

        def child() -> None:
            fresh = store._conn() is not parent_conn
            seen = store.get(session.id) == session
            new = make_session("bob")
            store.put(new, 60)
            queue.put(json.dumps([fresh, seen, new.id]))

        process = ctx.Process(target=child)
        with warnings.catch_warnings():
            # Python 3.12+ warns about fork() in a process with threads; this child is
            # single-purpose and only touches the store.
            warnings.simplefilter("ignore", DeprecationWarning)
            process.start()
        process.join(timeout=30)
        assert process.exitcode == 0
        fresh, seen, new_id = json.loads(queue.get())
        assert fresh
        assert seen
        got = store.get(new_id)
        assert got is not None
        assert got.username == "bob"
        store.close()


# --------------------------------------------------------------------------- serialisation


class TestJson:
    """The JSON record a Redis store will keep under the hashed id."""

    def test_previous_versions_record_reads_with_none(self) -> None:
        """A record without handle, ip and user_agent (the previous version's) is a session
        with those None; the new fields round-trip."""
        session = make_session()
        assert session_from_json(session.id, old_json(session)) == session
        full = client_session()
        assert session_from_json(full.id, session_to_json(full)) == full

    @pytest.mark.parametrize("name", ["handle", "ip", "user_agent"])
    def test_new_fields_of_the_wrong_type_are_corrupt(self, name: str) -> None:
        """A new field that is neither a string nor null makes the record corrupt."""
        raw = json.loads(session_to_json(client_session()))
        raw[name] = 7
        with pytest.raises(SessionStoreError, match="corrupt"):
            session_from_json(new_session_id(), json.dumps(raw))

    def test_round_trip(self) -> None:
        """session_from_json(session_to_json(s)) gives back s, id supplied by the caller."""
        session = make_session(data={"a": "b"}, remember_me=True)
        text = session_to_json(session)
        assert session.id not in text
        assert session_from_json(session.id, text) == session

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "[]",
            "null",
            '{"data": {}}',
            '{"data": []}',
            session_to_json(make_session()).replace('"level":1', '"level":9'),
            session_to_json(make_session()).replace('"level":1', '"level":true'),
            session_to_json(make_session()).replace('"username":"alice"', '"username":null'),
            session_to_json(make_session()).replace('"remember_me":false', '"remember_me":"no"'),
            session_to_json(make_session()).replace('"data":{}', '"data":{"x":1}'),
        ],
        ids=[
            "empty",
            "list",
            "null",
            "missing-fields",
            "data-list",
            "bad-level",
            "bool-level",
            "level-without-user",
            "string-flag",
            "non-string-data",
        ],
    )
    def test_corrupt_records_are_store_errors(self, text: str) -> None:
        """A record that is not a valid session raises SessionStoreError."""
        with pytest.raises(SessionStoreError, match="corrupt"):
            session_from_json(new_session_id(), text)
