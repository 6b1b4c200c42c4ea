"""Small SQLite helpers shared by the session store and the storage database."""

from __future__ import annotations

import sqlite3
import time


def enable_wal(conn: sqlite3.Connection, timeout: float) -> str:
    """Switch ``conn``'s database to WAL and return the journal mode now in force.

    Changing the journal mode needs an exclusive lock, and SQLite may answer "database is
    locked" at once, without calling its busy handler, when several processes open a new
    file together; so retry for up to ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
