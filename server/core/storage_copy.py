"""Copy the storage from SQLite to PostgreSQL (``authctl storage migrate --to postgres``), and
describe a storage (``authctl storage status``).

Users moving from one host to many (SPEC §7.2) must keep everything: TOTP enrolments and their
replay history, bans, the authentication log that regulation counts, one-time codes and used
reset tokens, and the sessions (nobody is signed out). So:

- **Raw copy, no re-encryption**: rows move as stored. TOTP secrets stay sealed: both sides use
  the same ``secrets/storage.key``; the key check value in ``meta`` travels with them, so a
  target opened with another key is refused by the storage itself.
- **Idempotent**: the target inserts with ``ON CONFLICT DO NOTHING`` and reports how many rows
  were new; a second run copies nothing and says so. An interrupted run is finished by the next.
- **Verified**: after copying, every source row must be present in the target, table by table,
  found by its primary key. A table that lacks some is named; the caller exits non-zero. A row
  whose key is there with other values is counted as ``changed`` but is no failure: a live
  PostgreSQL host moves a TOTP step or a ban on, and a second run must not cry wolf.
- **Same schema**: both sides must be at the same schema version (the storage migrates each to
  the version of this authctl on open), so the columns of each table line up.
- **Sessions**: a SQLite session store's live records move to Redis still sealed, under the same
  keys (SHA-256 of the id), with their remaining TTL, never replacing a record Redis already has
  and each only once (a second run must not bring back a session that has ended in Redis).

No click or terminal code here: the CLI (``authctl/cmd_storage.py``) prints the results.
"""

from __future__ import annotations

import dataclasses
import math
import typing as t
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

from server.core.errors import StoreUnavailable

if t.TYPE_CHECKING:
    import redis


class CopyError(StoreUnavailable):
    """The copy cannot be done (different schema versions, a target that refuses rows)."""

    part = "storage"


class Tables(t.Protocol):
    """What the copy needs of a storage (``server.core.storage.Storage`` on either backend)."""

    backend: str

    def describe(self) -> str: ...

    def schema_version(self) -> int: ...

    def tables(self) -> tuple[str, ...]: ...

    def counts(self) -> dict[str, int]: ...

    def rows(self, table: str) -> list[tuple[t.Any, ...]]: ...

    def insert_rows(self, table: str, rows: list[tuple[t.Any, ...]]) -> int: ...


@dataclass(frozen=True, slots=True)
class TableCopy:
    """One table's copy: rows in the source, rows that were new to the target, rows the
    target holds afterwards, source rows the target lacks after the copy (0 when verified),
    and source rows whose key the target holds with other values (changed there since)."""

    table: str
    source: int
    copied: int
    target: int
    missing: int = 0
    changed: int = 0


def status(storage: Tables) -> dict[str, t.Any]:
    """What ``authctl storage status --json`` prints: backend, where (a path, or the DSN's
    hosts and database without any password), schema version, rows per table."""
    return {
        "backend": storage.backend,
        "where": storage.describe(),
        "schema_version": storage.schema_version(),
        "tables": storage.counts(),
    }


def _normal(value: t.Any) -> t.Any:
    """A value as both backends' drivers compare equal (bytes, not memoryview; int, not bool)."""
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, Decimal):
        return float(value)
    return value


def _normal_row(row: tuple[t.Any, ...]) -> tuple[t.Any, ...]:
    return tuple(_normal(value) for value in row)


def key_columns(table: str) -> tuple[int, ...] | None:
    """Positions of ``table``'s primary key in the rows ``Storage.rows`` lists (None: a table
    this authctl does not know; its rows are compared whole)."""
    from server.core.storage_schema import TABLES_BY_NAME

    spec = TABLES_BY_NAME.get(table)
    if spec is None:
        return None
    return tuple(spec.columns.index(name.strip()) for name in spec.order.split(","))


def missing_rows(
    source: list[tuple[t.Any, ...]],
    target: list[tuple[t.Any, ...]],
    key: tuple[int, ...] | None = None,
) -> tuple[int, int]:
    """(rows of ``source`` whose key ``target`` lacks, rows whose key it holds with other
    values). Without ``key`` rows are compared whole, with repeats (two equal rows need two)."""
    if key is None:
        lacking = Counter(map(_normal_row, source)) - Counter(map(_normal_row, target))
        return sum(lacking.values()), 0
    theirs = {tuple(row[i] for i in key): row for row in map(_normal_row, target)}
    missing = changed = 0
    for row in map(_normal_row, source):
        found = theirs.get(tuple(row[i] for i in key))
        if found is None:
            missing += 1
        elif found != row:
            changed += 1
    return missing, changed


def copy_tables(source: Tables, target: Tables) -> list[TableCopy]:
    """Copy every table of ``source`` into ``target`` (in ``source.tables()`` order, so
    referenced rows come first), then verify each; one :class:`TableCopy` per table.

    Raises:
        CopyError: the schema versions differ, or the target lacks a table of the source.
        StorageError: either storage failed.
    """
    versions = source.schema_version(), target.schema_version()
    if versions[0] != versions[1]:
        raise CopyError(
            f"the source ({source.describe()}) has schema version {versions[0]} and the target "
            f"({target.describe()}) {versions[1]}; run the same authctl version on both"
        )
    known = set(target.tables())
    absent = [name for name in source.tables() if name not in known]
    if absent:
        raise CopyError(f"the target ({target.describe()}) has no table {', '.join(absent)}")
    copied = {name: target.insert_rows(name, source.rows(name)) for name in source.tables()}
    return [
        replace_copied(result, copied[result.table]) for result in verify_tables(source, target)
    ]


def replace_copied(result: TableCopy, copied: int) -> TableCopy:
    """``result`` with ``copied`` rows new to the target."""
    return dataclasses.replace(result, copied=copied)


def verify_tables(source: Tables, target: Tables) -> list[TableCopy]:
    """Compare each table of ``source`` with ``target``'s (nothing copied): how many source
    rows the target lacks (``missing``) and holds with other values (``changed``)."""
    results = []
    for name in source.tables():
        mine, theirs = source.rows(name), target.rows(name)
        missing, changed = missing_rows(mine, theirs, key_columns(name))
        results.append(TableCopy(name, len(mine), 0, len(theirs), missing, changed))
    return results


# --------------------------------------------------------------------------- sessions


@dataclass(frozen=True, slots=True)
class SessionCopy:
    """Live sessions in the SQLite store, how many this run copied to Redis, and how many of
    those Redis lacks afterwards (0 when verified)."""

    source: int
    copied: int
    missing: int


def copy_sessions(
    records: list[tuple[bytes, str | None, float, bytes]],
    client: redis.Redis,
    now: float,
) -> SessionCopy:
    """Write each live ``(key, username, expires, sealed record)`` to Redis as
    ``RedisStore`` lays it out (``redis_store.session_key``, with the remaining TTL; the key in
    the user's index, ``redis_store.user_key``, whose TTL is never shortened).

    Each session moves once: a marker ``<PREFIX>moved:<hex key>`` (same TTL) is set first, and
    a session whose marker exists is skipped. So a second run neither copies it again nor
    brings back a session that has ended in Redis since (a logout, a new id after the second
    factor); ``SET NX`` never replaces a record Redis holds. ``missing``: sessions copied by
    this run that Redis does not hold afterwards.

    Raises:
        redis.RedisError: Redis failed (the caller says so; a session whose marker was set
            but not its record is simply signed out, never half-written).
    """
    from server.core.redis_store import PREFIX
    from server.core.redis_store import session_key
    from server.core.redis_store import user_key

    copied: list[str] = []
    live = [row for row in records if row[2] > now]
    for key, username, expires, record in live:
        ms = max(1, math.ceil((expires - now) * 1000))
        if not client.set(f"{PREFIX}moved:{key.hex()}", b"1", px=ms, nx=True):
            continue
        record_key = session_key(PREFIX, key)
        with client.pipeline(transaction=True) as pipe:
            pipe.set(record_key, record, px=ms, nx=True)
            if username is not None:
                index = user_key(PREFIX, username)
                pipe.sadd(index, key.hex())
                pipe.pexpire(index, ms, nx=True)
                pipe.pexpire(index, ms, gt=True)
            done = pipe.execute()
        if done[0]:
            copied.append(record_key)
    present = int(client.exists(*copied)) if copied else 0
    return SessionCopy(len(live), len(copied), len(copied) - present)
