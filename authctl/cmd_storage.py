"""``authctl storage …``: what the storage holds, and moving it from SQLite to PostgreSQL.

Only click and the standard library are imported at the top: ``server.*`` and rich load inside
the commands, so ``authctl --help`` stays cheap. The copy and the checks are
``server.core.storage_copy``; this module opens the two sides and prints.
"""

from __future__ import annotations

import dataclasses
import typing as t

import click

from authctl.cli import CheckFailed
from authctl.cli import DataError
from authctl.cli import State
from authctl.cli import pass_state

if t.TYPE_CHECKING:
    from server.core.config import Config
    from server.core.storage import Storage
    from server.core.storage_copy import SessionCopy
    from server.core.storage_copy import TableCopy


def _open(config: Config, backend: str, *, require_key: bool) -> Storage:
    """The storage of ``config`` on ``backend``, whatever ``[storage] backend`` says (a
    migration reads SQLite and writes PostgreSQL); a failure ends the command with exit 3."""
    from server.core.storage import Storage

    if backend == "sqlite" and not config.storage.path.exists():
        raise DataError(
            f"there is no SQLite storage at {config.storage.path} ([storage] path): nothing "
            "to show or copy (the server creates it on first use)"
        )
    if backend == "postgres" and config.storage.postgres is None:
        raise DataError(
            "[storage.postgres] is missing from the config: add it with the dsn of the "
            "PostgreSQL database (see `man authctl.toml`)"
        )
    return Storage(dataclasses.replace(config.storage, backend=backend), require_key=require_key)


@click.group("storage")
def storage() -> None:
    """Show the storage (backend, schema, row counts) or move it to PostgreSQL.

    The storage holds TOTP secrets and replay history, the authentication log, bans and
    one-time codes ([storage] in the config).
    """


@storage.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_state
def status(state: State, as_json: bool) -> None:
    """Show the backend, where the storage is, its schema version and the rows per table.

    Where is the SQLite file, or the PostgreSQL hosts and database (never a password). Exit 3,
    with the reason, when the storage cannot be opened (a missing file, PostgreSQL down, a
    wrong password).

    \b
    Examples:
      authctl storage status
      authctl --config /etc/authctl/authctl.toml storage status --json
    JSON: {"backend", "where", "schema_version", "tables": {"<table>": rows}}
    """
    from server.core.storage_copy import status as describe

    config = state.config()
    opened = _open(config, config.storage.backend, require_key=False)
    try:
        found = describe(opened)
    finally:
        opened.close()
    if as_json:
        from authctl.output import echo_json

        echo_json(found)
        return
    from rich.markup import escape
    from rich.table import Table

    from authctl.output import console

    out = console()
    out.print(f"backend: {found['backend']}")
    out.print(f"where: {escape(found['where'])}")
    out.print(f"schema version: {found['schema_version']}")
    table = Table("table", "rows")
    for name, rows in found["tables"].items():
        table.add_row(escape(name), str(rows))
    out.print(table)


@storage.command("migrate")
@click.option(
    "--to",
    "to",
    type=click.Choice(["postgres"]),
    required=True,
    help="The backend to copy the SQLite storage into: the database of [storage.postgres].",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_state
def migrate(state: State, to: str, as_json: bool) -> None:
    """Copy the SQLite storage ([storage] path) into PostgreSQL ([storage.postgres]), then
    verify every table.

    Rows are copied as stored (TOTP secrets stay sealed with the same secrets/storage.key,
    which the PostgreSQL side must use too). Running it again copies only what is new and
    says so. Each table is then checked: every source row must be in PostgreSQL; a table
    that lacks some is named and the command exits 1. With [session] store = "redis", the
    live sessions of the SQLite session store move to Redis too, so nobody is signed out;
    otherwise sessions are not moved. Stop the servers first (or at least their writes), run
    it, then set [storage] backend = "postgres" in every host's config and start them.

    \b
    Examples:
      authctl storage migrate --to postgres
      authctl --config /etc/authctl/authctl.toml storage migrate --to postgres --json
    JSON: {"tables": [{"table", "source", "copied", "target", "missing"}], "copied",
    "sessions": {"moved", "source", "copied", "missing", "reason"}, "ok", "next"}
    """
    from server.core.storage_copy import copy_tables

    config = state.config()
    source = _open(config, "sqlite", require_key=True)
    try:
        target = _open(config, to, require_key=True)
        try:
            tables = copy_tables(source, target)
        finally:
            target.close()
    finally:
        source.close()
    sessions, reason = _move_sessions(config)
    bad = [result.table for result in tables if result.missing]
    if sessions is not None and sessions.missing:
        bad.append("sessions (Redis)")
    steps = _next_steps(config)
    if as_json:
        _print_json(tables, sessions, reason, bad, steps)
    else:
        _print_text(tables, sessions, reason, bad, steps)
    if bad:
        raise CheckFailed(
            f"verification failed: {', '.join(bad)} in the target lack rows of the source "
            "(changed or deleted there since?); run it again, or look at the target"
        )


def _move_sessions(config: Config) -> tuple[SessionCopy | None, str]:
    """Move the SQLite session store's live sessions to Redis when ``store = "redis"``;
    (None, why not) otherwise."""
    if config.session.store != "redis":
        return None, (
            f'sessions are not moved: [session] store = "{config.session.store}" (only a move '
            'to store = "redis" carries them; with "sqlite" they stay where they are)'
        )
    import time
    from pathlib import Path

    from redis import RedisError

    from server.core.crypto import read_key_file
    from server.core.redis_store import client_from_config
    from server.core.session_store import SQLiteStore
    from server.core.session_store import session_db_path
    from server.core.storage_copy import copy_sessions

    path = session_db_path(config)
    if not path.exists():
        return None, f"sessions are not moved: there is no SQLite session store at {path}"
    try:
        key = read_key_file(Path(config.storage.encryption_key_file))
        client = client_from_config(config.session)
    except ValueError as exc:
        raise DataError(f"cannot move the sessions: {exc}") from None
    store = SQLiteStore(path, key=key)
    try:
        now = time.time()
        records = store.live_records(now)
        try:
            return copy_sessions(records, client, now), ""
        except (RedisError, OSError) as exc:
            raise DataError(
                f"the tables were copied, but the sessions could not be written to Redis: "
                f"{type(exc).__name__}: {exc}; run it again once Redis answers"
            ) from None
        finally:
            client.close()
    finally:
        store.close()


def _next_steps(config: Config) -> list[str]:
    """What to change in the config once the data is in PostgreSQL."""
    steps = []
    if config.storage.backend != "postgres":
        steps.append('set [storage] backend = "postgres" in every host\'s config')
    if config.session.store != "redis":
        steps.append('for several hosts, set [session] store = "redis" (and run this again)')
    return steps


def _print_json(
    tables: list[TableCopy],
    sessions: SessionCopy | None,
    reason: str,
    bad: list[str],
    steps: list[str],
) -> None:
    from authctl.output import echo_json

    moved: dict[str, t.Any] = {"moved": sessions is not None, "reason": reason}
    if sessions is not None:
        moved |= dataclasses.asdict(sessions)
    echo_json(
        {
            "tables": [dataclasses.asdict(result) for result in tables],
            "copied": sum(result.copied for result in tables),
            "sessions": moved,
            "ok": not bad,
            "next": steps,
        }
    )


def _print_text(
    tables: list[TableCopy],
    sessions: SessionCopy | None,
    reason: str,
    bad: list[str],
    steps: list[str],
) -> None:
    from rich.markup import escape
    from rich.table import Table

    from authctl.output import console

    out = console()
    table = Table("table", "source rows", "copied", "target rows", "verified")
    for result in tables:
        verdict = "ok" if not result.missing else f"[red]{result.missing} missing[/red]"
        table.add_row(
            escape(result.table),
            str(result.source),
            str(result.copied),
            str(result.target),
            verdict,
        )
    out.print(table)
    copied = sum(result.copied for result in tables)
    out.print(
        f"Copied {copied} new rows." if copied else "Nothing new to copy: every row was there."
    )
    if sessions is None:
        out.print(escape(reason[0].upper() + reason[1:]) + ".")
    else:
        out.print(
            f"Sessions: {sessions.source} live, {sessions.copied} copied to Redis"
            + (f", [red]{sessions.missing} missing there[/red]" if sessions.missing else "")
            + "."
        )
    if not bad and steps:
        out.print("Next:")
        for step in steps:
            out.print(f"  {escape(step)}")
