"""The SQLite engine lets one thread of a process write at a time (``SQLiteDatabase._one_writer``).

Why it exists: SQLite's busy handler makes a second writer of the same process sleep in growing
steps, so a burst of sign-ins waited tens of milliseconds for a 0.05 ms write. These tests pin
the lock's contract, not its speed (speed is measured in ``bench/run.py``): nested writes of one
thread go on, a writer held too long fails closed as "database locked", a forked child gets a
lock of its own, and writers of many threads all land.
"""

from __future__ import annotations

import os
import threading
import typing as t
from pathlib import Path

import pytest

from server.core.errors import StoreUnavailable
from server.core.sqlite_util import SQLiteDatabase
from server.core.storage import StorageError

DDL = "CREATE TABLE IF NOT EXISTS t (n INTEGER NOT NULL)"


def make_db(tmp_path: Path, busy_timeout: float = 5.0) -> SQLiteDatabase:
    db = SQLiteDatabase(
        tmp_path / "w.db",
        name="test database",
        error=StorageError,
        busy_timeout=busy_timeout,
        application_id=1,
    )
    db.set_up(lambda tx: t.cast(t.Any, tx).execute(DDL))
    return db


def count(db: SQLiteDatabase) -> int:
    return int(db.read("SELECT count(*) FROM t", ())[0][0])


def test_a_write_inside_a_transaction_of_the_same_thread_goes_on(tmp_path: Path) -> None:
    db = make_db(tmp_path)
    with db.transaction() as conn:
        conn.execute("INSERT INTO t (n) VALUES (1)")
        db.write("INSERT INTO t (n) VALUES (?)", (2,))  # reentrant: no self-deadlock
    assert count(db) == 2


def test_a_writer_held_past_the_busy_timeout_fails_closed(tmp_path: Path) -> None:
    db = make_db(tmp_path, busy_timeout=0.2)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with db.transaction():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        with pytest.raises(StoreUnavailable, match="database is locked") as info:
            db.write("INSERT INTO t (n) VALUES (?)", (1,))
        assert info.value.reason == "database locked"
    finally:
        release.set()
        holder.join(10)
    db.write("INSERT INTO t (n) VALUES (?)", (1,))  # free again
    assert count(db) == 1


def test_many_threads_all_write(tmp_path: Path) -> None:
    db = make_db(tmp_path)

    def work(i: int) -> None:
        for j in range(50):
            with db.transaction() as conn:
                conn.execute("INSERT INTO t (n) VALUES (?)", (i * 100 + j,))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert count(db) == 400


def test_a_forked_child_is_not_stuck_on_a_lock_its_parent_held(tmp_path: Path) -> None:
    """The parent forks while one of its threads holds the lock, then lets go; the child's copy
    of that lock would stay held for ever (its holder does not exist there), yet it writes.

    The thread holds only the lock, no SQLite transaction: SQLite itself forbids carrying an
    open transaction across ``fork`` (its in-process lock table is copied), which the server
    never does (workers are forked before they open anything).
    """
    db = make_db(tmp_path, busy_timeout=1.0)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with db._one_writer():  # the lock alone, see above
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    read_end, write_end = os.pipe()
    try:
        assert held.wait(10)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            code = 1
            try:
                os.close(write_end)
                os.read(read_end, 1)  # the parent has committed and let go
                db.write("INSERT INTO t (n) VALUES (?)", (7,))
                code = 0
            finally:
                os._exit(code)
        os.close(read_end)
        release.set()
        holder.join(10)
        os.write(write_end, b"x")
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        holder.join(10)
        os.close(write_end)
    assert os.WIFEXITED(status)
    assert os.WEXITSTATUS(status) == 0
    assert count(db) == 1
