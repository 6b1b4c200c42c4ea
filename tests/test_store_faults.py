"""Session stores and storage on broken ground: full disks, held locks, read-only and killed
Redis. Real file systems (tmpfs and an ext4 image, mounted here: CI runs as root), a real
second process holding a SQLite lock, a real redis-server. When mounting is impossible these
tests fail, they are never skipped.

What they pin: a full disk is an error, never SIGBUS; start-up on a full disk says so; a store
that can read but not write still answers verify 200 (activity writes are best effort) and
never stalls it for the 5 s busy timeout; sign-in answers 503 with a clear message; an outage
is logged once when it starts and once when it ends; ``/api/health`` answers 503 naming the
part that fails, and 200 again afterwards.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import typing as t
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from server.core.config import StorageConfig
from server.core.redis_store import RETRY_AFTER
from server.core.redis_store import RedisStore
from server.core.session_store import SessionStoreError
from server.core.session_store import SQLiteStore
from server.core.storage import Storage
from server.core.storage import StorageError
from tests.apphelpers import PASSWORDS
from tests.apphelpers import Harness
from tests.apphelpers import build
from tests.conftest import ROOT
from tests.conftest import Clock
from tests.test_redis_store import RedisServer
from tests.test_redis_store import free_port

pytestmark = pytest.mark.slow

APP = "https://app.example.com/"


# --------------------------------------------------------------------------- file systems


def run(*argv: str) -> None:
    """Run a mount-related command; a failure fails the test (never a skip)."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed (these tests need root): {result.stderr.strip()}")


@contextmanager
def tmpfs(where: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` for the block."""
    where.mkdir(parents=True, exist_ok=True)
    run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where))
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextmanager
def ext4(where: Path, size_mib: int = 8) -> Iterator[Path]:
    """An ext4 image of ``size_mib`` MiB (no blocks reserved for root) loop-mounted."""
    image = where.with_name(where.name + ".img")
    with image.open("wb") as fh:
        fh.truncate(size_mib << 20)
    run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
    where.mkdir(parents=True, exist_ok=True)
    run("mount", "-o", "loop", str(image), str(where))
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        image.unlink()


def fill(folder: Path, leave: int = 0) -> None:
    """Fill the file system holding ``folder`` to the last byte, or to ``leave`` bytes."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    if leave:
        st = os.statvfs(folder)
        os.write(fd, b"\0" * (st.f_bavail * st.f_frsize - leave))
        os.close(fd)
        return
    try:
        for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
            data = b"\0" * chunk
            while True:
                try:
                    os.write(fd, data)
                except OSError:
                    break
    finally:
        os.close(fd)
    st = os.statvfs(folder)
    assert st.f_bavail == 0, "the file system is not full"


# --------------------------------------------------------------------------- the change table


CHANGE_TABLE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from server.core.session_store import ChangeTable
    try:
        table = ChangeTable(Path(sys.argv[1]))
        table.changed(4000)
    except OSError as exc:
        print("refused:", exc)
        sys.exit(3)
    print("written")
    """
)


def open_change_table(path: Path) -> subprocess.CompletedProcess[str]:
    """Create and write a change table at ``path`` in a child process (it may die)."""
    return subprocess.run(
        [sys.executable, "-c", CHANGE_TABLE, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
def test_change_table_on_a_full_disk_is_an_error_not_sigbus(tmp_path: Path, kind: str) -> None:
    """A change table created on a full disk: a clear ENOSPC at creation (start-up fails),
    not a process killed by SIGBUS at its first write."""
    mount = tmpfs if kind == "tmpfs" else ext4
    with mount(tmp_path / "mnt") as folder:
        fill(folder)
        result = open_change_table(folder / "sessions.db-changes")
    assert result.returncode != -signal.SIGBUS, "killed by SIGBUS"
    assert result.returncode == 3, (result.returncode, result.stdout, result.stderr)
    assert "No space left on device" in result.stdout


#: KiB left free on a 512 KiB tmpfs: SQLite fails in several places (SQLITE_FULL, "disk I/O
#: error", or inside the schema transaction, where it used to be hidden behind "cannot
#: rollback - no transaction is active"), the change table after SQLite succeeded.
LEFT_FREE = [0, 12, 40, 60, 72]


def start_up_error(make: t.Callable[[Path], object], tmp_path: Path, free_kib: int) -> str:
    """What opening a store on a 512 KiB tmpfs with ``free_kib`` KiB left raises ('' if
    it opens)."""
    with tmpfs(tmp_path / "mnt", "512k") as folder:
        fill(folder, leave=free_kib * 1024)
        try:
            make(folder)
        except (SessionStoreError, StorageError) as exc:
            error: SessionStoreError | StorageError | None = exc
        else:
            error = None
    if error is None:
        return ""
    assert error.reason == "disk full", error
    return str(error)


@pytest.mark.parametrize("free_kib", LEFT_FREE)
def test_session_store_start_up_on_a_full_disk_says_so(tmp_path: Path, free_kib: int) -> None:
    """Start-up on a (nearly) full disk: SessionStoreError saying the disk is full, in a live
    process (not "cannot rollback - no transaction is active", not SIGBUS later)."""
    message = start_up_error(lambda folder: SQLiteStore(folder / "sessions.db"), tmp_path, free_kib)
    if free_kib <= 60:
        assert "the disk is full" in message
    assert "rollback" not in message


@pytest.mark.parametrize("free_kib", LEFT_FREE)
def test_storage_start_up_on_a_full_disk_says_so(tmp_path: Path, free_kib: int) -> None:
    """The storage database too: StorageError saying the disk is full."""
    key = tmp_path / "storage.key"
    key.write_text("ab" * 32)
    key.chmod(0o600)

    def make(folder: Path) -> Storage:
        return Storage(StorageConfig(path=folder / "authctl.db", encryption_key_file=key))

    message = start_up_error(make, tmp_path, free_kib)
    assert "the disk is full" in message
    assert "rollback" not in message


# --------------------------------------------------------------------------- read, not write


def assert_verifies_quickly(h: Harness, cookie: str, count: int = 4) -> None:
    """``count`` verifies, each due an activity write, all 200 and each well under 5 s."""
    for _ in range(count):
        h.clock.advance(10)  # past the touch interval: an activity write is due every time
        started = time.monotonic()
        resp = h.forward_auth(APP, cookie=cookie)
        elapsed = time.monotonic() - started
        assert resp.status_int == 200, resp.status
        assert elapsed < 1.0, f"verify took {elapsed:.2f} s"


def assert_sign_in_is_503(h: Harness, part: str) -> None:
    """Sign-in answers 503 with a message naming ``part``."""
    resp = h.api("/api/firstfactor", {"username": "bob", "password": PASSWORDS["bob"]})
    assert resp.status_int == 503, resp.text
    assert resp.json["status"] == "KO"
    assert f"The {part} is unavailable" in resp.json["message"]


def site(tmp_path: Path, **kwargs: t.Any) -> Harness:
    """The app harness in a folder of its own."""
    folder = tmp_path / "site"
    folder.mkdir()
    return build(folder, Clock(), **kwargs)


def health(h: Harness) -> tuple[int, dict[str, str]]:
    resp = h.request("/api/health")
    return resp.status_int, resp.json


def test_full_disk_verify_stays_200_sign_in_503(tmp_path: Path) -> None:
    """The session database's disk fills up: signed-in users keep getting 200 (their activity
    is not recorded), sign-in answers 503, health names the session store; space freed, all
    is well again."""
    with tmpfs(tmp_path / "mnt", "2m") as folder:
        store = SQLiteStore(folder / "sessions.db")
        h = site(tmp_path, store=store)
        cookie = h.login("alice")
        with store._conn() as conn:  # an empty WAL: every write now needs new blocks
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        fill(folder)
        assert_verifies_quickly(h, cookie)
        assert_sign_in_is_503(h, "session store")
        status, body = health(h)
        assert status == 503
        assert body["status"] == "KO"
        assert body["message"].startswith("session store unavailable: disk full")
        (folder / "filler").unlink()
        assert health(h) == (200, {"status": "OK"})  # seen without traffic (a probe)
        h.login("bob")
        store.close()


HOLD_LOCK = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    conn.execute("ROLLBACK")
    """
)


def test_lock_held_by_another_process_never_stalls_verify(tmp_path: Path) -> None:
    """Another process holds BEGIN IMMEDIATE on the session database: verifies that are due
    an activity write answer 200 at once (not after the 5 s busy timeout, not 400)."""
    store = SQLiteStore(tmp_path / "state" / "sessions.db")
    h = site(tmp_path, store=store)
    cookie = h.login("alice")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(store.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        assert_verifies_quickly(h, cookie, count=6)
        status, body = health(h)
        assert status == 503
        assert body["message"] == "session store unavailable: database locked"
    finally:
        assert holder.stdin is not None
        assert holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()
    h.clock.advance(10)
    assert h.forward_auth(APP, cookie=cookie).status_int == 200
    assert health(h) == (200, {"status": "OK"})
    store.close()


# --------------------------------------------------------------------------- Redis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own."""
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


def test_read_only_redis_verify_stays_200_sign_in_503(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Redis turned into a replica of a master that is not there (read-only): verifies keep
    answering 200 (a refused write is not an outage of reads), sign-in answers 503, health
    names the session store; back to a master, all is well."""
    store = RedisStore.from_url(redis_server.url)
    h = site(tmp_path, store=store)
    cookie = h.login("alice")
    with redis_server.client() as client:
        client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        try:
            assert_verifies_quickly(h, cookie)
            assert_sign_in_is_503(h, "session store")
            status, body = health(h)
            assert status == 503
            assert body["message"] == "session store unavailable: Redis is read-only"
            assert_verifies_quickly(h, cookie)
        finally:
            client.execute_command("REPLICAOF", "NO", "ONE")
    assert health(h) == (200, {"status": "OK"})  # seen without traffic (a probe)
    h.login("bob")
    store.close()


def test_killed_redis_logs_the_outage_twice_and_answers_503(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis killed mid-run: verifies answer 302 (never 200) and log nothing each; one
    "outage started" line, sign-in 503, health 503 naming the session store; Redis back:
    one "outage ended" line with the count, sign-in and health work again."""
    store = RedisStore.from_url(redis_server.url)
    h = site(tmp_path, store=store)
    cookie = h.login("alice")
    with caplog.at_level(logging.INFO):
        redis_server.stop(signal.SIGKILL)
        for _ in range(12):
            assert h.forward_auth(APP, cookie=cookie).status_int == 302
        assert_sign_in_is_503(h, "session store")
        status, body = health(h)
        assert status == 503
        assert body["message"].startswith("session store unavailable: cannot reach Redis")
        redis_server.start()
        time.sleep(RETRY_AFTER + 0.1)
        fresh = h.login("alice")  # Redis kept nothing: sign in again
        assert h.forward_auth(APP, cookie=fresh).status_int == 200
        assert health(h) == (200, {"status": "OK"})
    messages = [r.getMessage() for r in caplog.records]
    started = [m for m in messages if "outage started" in m]
    ended = [m for m in messages if "outage ended" in m]
    assert len(started) == 1, messages
    assert len(ended) == 1, messages
    assert "calls failed meanwhile" in ended[0]
    assert int(ended[0].split("; ")[1].split()[0]) >= 13  # 12 verifies, a sign-in, health
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    others = [r.getMessage() for r in caplog.records if r.name != "authctl.authz"]
    assert len(others) <= 4, others  # started, ended, the users file at most: no flood
    store.close()


def test_health_names_a_broken_users_file(tmp_path: Path) -> None:
    """A users file whose last change cannot be used: health 503 naming the users file."""
    h = site(tmp_path)
    assert health(h) == (200, {"status": "OK"})
    h.config.users.file.write_text("this is not toml [", encoding="utf-8")
    h.users.reload()
    status, body = health(h)
    assert status == 503
    assert body["message"].startswith("users file unusable")
