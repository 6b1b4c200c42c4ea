"""``authctl token …``: personal access tokens for scripts and machines (SPEC §7.6).

``create`` prints the token once (``authctl_`` + 256 random bits); storage keeps only its
keyed digest. A script sends it as ``Authorization: Bearer authctl_…`` through the proxy, and
the authz endpoints answer as for the token's user at one factor (two with ``--two-factor``),
on its ``--domain`` hosts only. ``revoke`` takes effect on every worker and host within a
second. Tokens live in the storage database (``[storage]``), so these commands work while
the server runs. Only click and the standard library are imported at the top: ``server.*``
and rich load inside the commands.
"""

from __future__ import annotations

import typing as t

import click

from authctl.cli import DataError
from authctl.cli import State
from authctl.cli import pass_state
from authctl.cli import username_callback
from authctl.errors import bad_parameter

if t.TYPE_CHECKING:
    from server.core.config import Config
    from server.core.tokens import TokenService


def open_tokens(config: Config) -> TokenService:
    """Tokens on the configured storage; a failure ends the command with exit 3.

    Raises:
        DataError: the storage key file cannot be read.
        StorageError: the storage cannot be opened.
    """
    from server.core.crypto import read_key_file
    from server.core.storage import Storage
    from server.core.tokens import TokenService

    try:
        material = read_key_file(config.storage.encryption_key_file)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    return TokenService(Storage(config.storage), material)


def remove_tokens(config: Config, username: str) -> int:
    """Revoke every token of ``username`` (for ``user remove``: a user added again later
    under the same name must not inherit them); how many. Nothing when no storage exists.

    Raises:
        StorageError: the storage cannot be used (exit 3).
    """
    from authctl.cmd_totp import no_storage_yet

    if no_storage_yet(config):
        return 0
    tokens = open_tokens(config)
    try:
        return tokens.revoke_user(username)
    finally:
        tokens.storage.close()


@click.group("token")
def token() -> None:
    """Personal access tokens for scripts and machines (sent as Authorization: Bearer)."""


@token.command("create")
@click.argument("username", metavar="USER", callback=username_callback)
@click.option("--name", required=True, help="What uses the token (e.g. 'backup job').")
@click.option(
    "--expires",
    metavar="DURATION",
    help="Lifetime, such as 30d, 12h or 1y (M = 30 days). Default: never expires.",
)
@click.option(
    "--domain",
    "domains",
    multiple=True,
    metavar="HOST",
    help="Only this host and its subdomains (repeatable). Default: every protected host.",
)
@click.option(
    "--two-factor",
    is_flag=True,
    help="Count as two factors, so two_factor rules let it through (use with care).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the token and its record as JSON.")
@pass_state
def create(
    state: State,
    username: str,
    name: str,
    expires: str | None,
    domains: tuple[str, ...],
    two_factor: bool,
    as_json: bool,
) -> None:
    """Make a token for USER and print it, once (it is stored as a keyed hash only).

    USER must be in the users file. A script sends it through the proxy as
    'Authorization: Bearer TOKEN' and is let in as USER (one factor, or two with
    --two-factor) on the --domain hosts. Revoke it with `authctl token revoke ID`.
    """
    from server.core.audit import for_cli
    from server.core.durations import parse_duration
    from server.core.tokens import TokenError
    from server.core.tokens import clean_domains
    from server.core.tokens import clean_name
    from server.core.tokens import describe
    from server.core.userfile import UsersFile

    config = state.config()
    with bad_parameter("--expires", ValueError):
        expires_in = None if expires is None else parse_duration(expires)
        if expires_in == 0:
            raise TokenError("must be a positive duration, such as 30d")
    with bad_parameter("--domain", TokenError):
        hosts = clean_domains(domains, (cookie.domain for cookie in config.session.cookies))
    with bad_parameter("--name", TokenError):
        name = clean_name(name)
    users = UsersFile(config.users.file)
    if users.read().get(username) is None:
        raise DataError(
            f"no user {username!r} in {users.path} (list them with `authctl user list`)"
        )
    trail = for_cli(config.log.audit_file)
    tokens = open_tokens(config)
    try:
        secret, record = tokens.create(
            username,
            name,
            created_by="cli",
            expires_in=expires_in,
            domains=hosts,
            two_factor=two_factor,
        )
    finally:
        tokens.storage.close()
    trail.emit("token_created", user=username)
    if as_json:
        from authctl.output import echo_json

        echo_json({"token": secret, "user": username, **describe(record, record.created_at)})
        return
    click.echo(secret)
    where = ", ".join(hosts) if hosts else "every protected host"
    until = f"until {describe(record, 0)['expires_at']}" if expires_in else "with no expiry"
    factors = "two factors" if two_factor else "one factor"
    click.echo(
        f"Token {record.id} ({name!r}) for {username}, {factors}, on {where}, {until}. "
        "It is not shown again.",
        err=True,
    )


@token.command("list")
@click.option("--user", "username", metavar="USER", help="Only this user's tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@pass_state
def list_tokens(state: State, username: str | None, as_json: bool) -> None:
    """List the tokens not revoked (oldest first): id, user, name, created, last used,
    expiry, domains and level. Never the token itself."""
    import time

    from authctl.cmd_totp import no_storage_yet
    from server.core.names import canonical_username
    from server.core.tokens import describe

    config = state.config()
    found = []
    if not no_storage_yet(config):
        tokens = open_tokens(config)
        try:
            who = canonical_username(username) if username is not None else None
            found = tokens.tokens(who)
        finally:
            tokens.storage.close()
    now = time.time()
    rows = [{"user": record.username, **describe(record, now)} for record in found]
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
        out.print("No tokens.")
        return
    table = Table(Column("id", no_wrap=True, min_width=22), "user")
    for heading in ("name", "created (UTC)", "last used", "expires", "domains", "level"):
        table.add_column(heading, overflow="fold")
    for row in rows:
        expires = row["expires_at"] or "never"
        cells = [
            row["id"],
            row["user"],
            row["name"],
            row["created_at"],
            row["last_used_at"] or "never",
            f"{expires} (expired)" if row["expired"] else expires,
            ", ".join(t.cast("list[str]", row["domains"])) or "all",
            "2" if row["two_factor"] else "1",
        ]
        table.add_row(*(escape(str(cell)) for cell in cells))
    out.print(table)


@token.command("revoke")
@click.argument("token_id", metavar="ID")
@pass_state
def revoke(state: State, token_id: str) -> None:
    """Revoke the token ID (from `authctl token list`). Every worker and host refuses it
    within a second. No such live token is exit 3."""
    from authctl.cmd_totp import no_storage_yet
    from server.core.audit import for_cli

    config = state.config()
    trail = for_cli(config.log.audit_file)
    if no_storage_yet(config):
        raise DataError("no token is stored (the storage database does not exist yet)")
    tokens = open_tokens(config)
    try:
        owner = tokens.revoke(token_id)
    finally:
        tokens.storage.close()
    if owner is None:
        raise DataError("no live token has this id (see `authctl token list`)")
    trail.emit("token_revoked", user=owner)
    click.echo(f"Revoked token {token_id} of {owner}.")
