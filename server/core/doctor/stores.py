"""Storage and session store reachability, opened as ``serve`` opens them, with short waits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from server.core.config import Config
from server.core.doctor.check import Check
from server.core.doctor.check import fail
from server.core.doctor.check import ok
from server.core.doctor.check import warn
from server.core.errors import StoreUnavailable

#: Seconds a PostgreSQL connect may take here (the config's own timeout if shorter).
TIMEOUT = 3


def storage_check(config: Config) -> Check:
    """Open ``Storage`` (the key must be the database's) and run its health probe.

    A SQLite file that does not exist yet is a warning, not created here: doctor may run as
    another account (root), and a file it made would then belong to that account."""
    from server.core.storage import Storage

    name = "storage"
    storage_config = config.storage
    if storage_config.backend == "sqlite":
        if not Path(storage_config.path).exists():
            return warn(
                name,
                f"the database {storage_config.path} does not exist yet",
                "`authctl serve` creates it at start (as the account it runs as)",
            )
    elif storage_config.postgres is not None:
        short = min(storage_config.postgres.timeout, TIMEOUT)
        storage_config = dataclasses.replace(
            storage_config, postgres=dataclasses.replace(storage_config.postgres, timeout=short)
        )
    try:
        storage = Storage(storage_config)
    except (StoreUnavailable, ValueError) as exc:
        return fail(name, str(exc), _storage_fix(config))
    try:
        storage.check()
        described = storage.describe()
    except StoreUnavailable as exc:
        return fail(name, str(exc), _storage_fix(config))
    finally:
        storage.close()
    return ok(name, f"{described} opens with the storage key and answers")


def _storage_fix(config: Config) -> str:
    if config.storage.backend == "postgres":
        return (
            "check that PostgreSQL runs and accepts this host (storage.postgres.dsn, "
            "password_file, pg_hba.conf), and that the storage key is the one the data was "
            "sealed with"
        )
    return (
        f"check {config.storage.path} (disk space, permissions, not another program's file) "
        "and that storage.encryption_key_file is the key it was made with"
    )


def session_store_check(config: Config) -> Check:
    """The session store answers: SQLite beside the database, or Redis (primary, PING)."""
    name = "session store"
    kind = config.session.store
    if kind == "memory":
        return warn(
            name,
            "session.store is memory: every restart signs everyone out, and workers or hosts "
            "do not share sessions",
            'use store = "sqlite" (one host) or "redis" (many hosts)',
        )
    from server.core.crypto import read_key_file

    try:
        key = read_key_file(Path(config.storage.encryption_key_file))
    except ValueError as exc:
        return fail(
            name, f"cannot open the {kind} session store: {exc}", "see the storage key check"
        )
    if kind == "sqlite":
        return _sqlite(config, key)
    return _redis(config, key)


def _sqlite(config: Config, key: bytes) -> Check:
    from server.core.session_store import SQLiteStore
    from server.core.session_store import session_db_path

    name = "session store"
    path = session_db_path(config)
    if not path.exists():
        return warn(name, f"the session database {path} does not exist yet",
                    "`authctl serve` creates it at start")  # fmt: skip
    try:
        store = SQLiteStore(path, key=key)
    except StoreUnavailable as exc:
        return fail(name, str(exc), f"check {path} (permissions, disk space)")
    try:
        store.check()
    except StoreUnavailable as exc:
        return fail(name, str(exc), f"check {path} (permissions, disk space, locks)")
    finally:
        store.close()
    return ok(name, f"SQLite sessions at {path} can be read and written")


def _redis(config: Config, key: bytes) -> Check:
    from server.core.redis_store import RedisStore

    name = "session store"
    where = (
        f"Sentinel master {config.session.redis_sentinel.master_name!r}"
        if config.session.redis_sentinel is not None
        else _redacted(config.session.redis_url)
    )
    fix = (
        "start Redis (or the Sentinels) and check session.redis_url, redis_password_file and "
        "that this host may connect; a replica cannot take writes: point at the primary"
    )
    try:
        store = RedisStore.from_config(config.session, key=key, cache=False)
    except ValueError as exc:
        return fail(name, str(exc), fix)
    try:
        store.check()
    except StoreUnavailable as exc:
        return fail(name, f"{where}: {exc}", fix)
    finally:
        store.close()
    return ok(name, f"Redis at {where} answers as the primary")


def _redacted(url: str) -> str:
    """``url`` without a password in its user part."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"***@{netloc}").geturl()
