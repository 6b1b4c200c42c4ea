"""``authctl session …``: list the signed-in sessions and end them (SPEC §7.6).

Works on the session store the config names, while the server runs: the SQLite file beside
the storage database (``<db>-sessions.db``) or Redis (``[session]`` redis_url, Sentinel and
password file). A session ended here is refused at the next request by every worker and
host (SQLite: the shared change table; Redis: the invalidation channel, within 1 s). With
``store = "memory"`` sessions live inside the one server process and cannot be reached from
here. Sessions are shown by handle (a public id, never the cookie's session id). Only click
and the standard library are imported at the top: ``server.*`` and rich load inside.
"""

from __future__ import annotations

import typing as t

import click

from authctl.cli import DataError
from authctl.cli import State
from authctl.cli import pass_state

if t.TYPE_CHECKING:
    from server.core.config import Config
    from server.core.sessions import Listed
    from server.core.sessions import SessionManager

MEMORY_STORE = (
    'session.store = "memory" keeps sessions inside the server process: they cannot be '
    'listed or ended from the command line (use store = "sqlite" or "redis", or the '
    "portal's settings page)"
)


def open_sessions(config: Config) -> SessionManager | None:
    """A manager on the configured store; None when the SQLite file does not exist yet (no
    session was ever made, and nothing is created just to say so).

    Raises:
        DataError: the memory store, or a key or password file that cannot be used.
        SessionStoreError: the store cannot be opened.
    """
    from pathlib import Path

    from server.core.crypto import read_key_file
    from server.core.sessions import SessionManager

    store: t.Any
    if config.session.store == "memory":
        raise DataError(MEMORY_STORE)
    try:
        key = read_key_file(Path(config.storage.encryption_key_file))
        if config.session.store == "redis":
            from server.core.redis_store import RedisStore

            store = RedisStore.from_config(config.session, key=key, cache=False)
        else:
            from server.core.session_store import SQLiteStore
            from server.core.session_store import session_db_path

            path = session_db_path(config)
            if not path.exists():
                return None
            store = SQLiteStore(path, key=key)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    return SessionManager(config.session, store)


def _row(listed: Listed) -> dict[str, object]:
    from server.core.sessions import describe
    from server.core.sessions import utc

    shown = describe(listed)
    del shown["current"]  # no session asks here
    return {
        "user": listed.session.username,
        **shown,
        "remember_me": listed.session.remember_me,
        "cookie_domain": listed.session.cookie_domain,
        "auth_time": utc(listed.session.auth_time),
    }


@click.group("session")
def session() -> None:
    """List the signed-in sessions, and end them (sign a lost device out)."""


@session.command("list")
@click.option("--user", "username", metavar="USER", help="Only this user's sessions.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@pass_state
def list_sessions(state: State, username: str | None, as_json: bool) -> None:
    """List the live sessions (newest activity first): user, handle, level, created, last
    seen, IP and browser. Give a handle to `authctl session revoke` to end one."""
    manager = open_sessions(state.config())
    found = []
    if manager is not None:
        try:
            found = manager.list_sessions(username)
        finally:
            manager.store.close()
    rows = [_row(listed) for listed in found]
    if as_json:
        from authctl.output import echo_json

        echo_json(rows)
        return
    from rich.markup import escape
    from rich.table import Column
    from rich.table import Table

    from authctl.output import console

    out = console()
    if not rows:
        out.print("No sessions.")
        return
    table = Table("user", Column("handle", no_wrap=True, min_width=32), "level")
    for name in ("created (UTC)", "last seen (UTC)", "IP", "browser"):
        table.add_column(name, overflow="fold")
    for row in rows:
        cells = [row[name] for name in ("user", "handle", "authentication_level")]
        cells += [row["created_at"], row["last_seen_at"], row["ip"], row["user_agent"]]
        table.add_row(*("-" if cell is None else escape(str(cell)) for cell in cells))
    out.print(table)


@session.command("revoke")
@click.argument("handle", required=False)
@click.option("--user", "username", metavar="USER", help="End every session of this user.")
@pass_state
def revoke(state: State, handle: str | None, username: str | None) -> None:
    """End the session HANDLE (from `authctl session list`), or every session of --user.

    No such session is exit 3. Every worker and host refuses the session at its next request.
    """
    if (handle is None) == (username is None):
        raise click.UsageError("give either a HANDLE or --user USER")
    from server.core.audit import for_cli
    from server.core.names import canonical_username

    config = state.config()
    trail = for_cli(config.log.audit_file)
    manager = open_sessions(config)
    if manager is None:
        raise DataError("no session is stored (the session database does not exist yet)")
    try:
        if username is not None:
            name = canonical_username(username)
            ended = manager.destroy_user(name)
            if not ended:
                raise DataError(f"{username!r} has no session")
            who = name
        elif handle is not None:
            owner = next(
                (
                    s.session.username
                    for s in manager.list_sessions(None)
                    if s.session.handle == handle
                ),
                None,
            )
            if owner is None or not manager.revoke(owner, handle):
                raise DataError("no session has this handle (see `authctl session list`)")
            ended, who = 1, owner
        else:  # pragma: no cover - refused above
            raise click.UsageError("give either a HANDLE or --user USER")
    finally:
        manager.store.close()
    for _ in range(ended):
        trail.emit("session_revoked", user=who)
    click.echo(f"Ended {ended} session{'s' if ended != 1 else ''} of {who}.")
