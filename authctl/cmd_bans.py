"""``authctl bans …``: list the users and IPs regulation has banned, and lift a ban.

Bans live in the storage database (``[storage] path``), so this works while the server runs
and the server sees a cleared ban at the next login attempt. Reading bans needs no storage
key. Only click and the standard library are imported at the top: ``server.*`` and rich load
inside the commands.
"""

from __future__ import annotations

import typing as t
from datetime import UTC
from datetime import datetime

import click

from authctl.cli import DataError
from authctl.cli import State
from authctl.cli import pass_state

if t.TYPE_CHECKING:
    from server.core.regulation import Regulator


def _iso(when: float) -> str:
    """Unix time as ISO 8601 UTC, to the second."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _regulator(state: State) -> Regulator:
    from authctl.cmd_totp import open_storage
    from server.core.regulation import Regulator

    config = state.config()
    return Regulator(config.regulation, open_storage(config, require_key=False))


@click.group("bans")
def bans() -> None:
    """List or lift the bans regulation put on users and IPs ([regulation] in the config)."""


@bans.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@pass_state
def list_bans(state: State, as_json: bool) -> None:
    """List the bans running now, the one ending first first."""
    import time

    from authctl.cmd_totp import no_storage_yet

    if no_storage_yet(state.config()):
        found = []  # no database yet: no bans, and nothing is created just to say so
    else:
        regulator = _regulator(state)
        try:
            found = regulator.list_bans()
        finally:
            regulator.storage.close()
    now = time.time()
    if as_json:
        from authctl.output import echo_json

        echo_json(
            [
                {
                    "kind": ban.kind,
                    "value": ban.value,
                    "expires": _iso(ban.expires),
                    "expires_in": max(0, round(ban.expires - now)),
                    "reason": ban.reason,
                    "created": _iso(ban.created),
                }
                for ban in found
            ]
        )
        return
    from rich.markup import escape
    from rich.table import Table

    from authctl.output import console

    out = console()
    if not found:
        out.print("No bans.")
        return
    table = Table("kind", "banned", "until (UTC)", "left", "reason")
    for ban in found:
        left = max(0, round(ban.expires - now))
        table.add_row(
            ban.kind,
            escape(ban.value),
            _iso(ban.expires),
            f"{left // 60}m{left % 60:02d}s",
            escape(ban.reason),
        )
    out.print(table)


@bans.command("clear")
@click.argument("target", metavar="USER|IP")
@pass_state
def clear(state: State, target: str) -> None:
    """Lift the ban of a user (any spelling: Alice is alice) or of an IP address.

    Only the ban is lifted: the recent failures still count, so one more failure within
    find_time bans again. No ban to lift is exit 3.
    """
    from authctl.cmd_totp import no_storage_yet
    from server.core.audit import for_cli

    trail = for_cli(state.config().log.audit_file)
    lifted = []
    if not no_storage_yet(state.config()):
        regulator = _regulator(state)
        try:
            lifted = regulator.clear(target)
        finally:
            regulator.storage.close()
    if not lifted:
        raise DataError(f"no ban on {target!r} is running")
    for ban in lifted:
        user, ip = (ban.value, "cli") if ban.kind == "user" else (None, ban.value)
        trail.emit("ban", user=user, ip=ip, reason="ban_cleared")
        click.echo(f"Lifted the ban of {ban.kind} {ban.value} (it ran until {_iso(ban.expires)})")
