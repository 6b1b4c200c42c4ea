"""``authctl user totp …``: enrol or remove a user's TOTP second factor from the command line.

``add`` prints the otpauth URI, the secret for typing in by hand and a QR code drawn in the
terminal (segno, no image file left on disk); ``--json`` prints only ``{"secret", "uri"}``
for scripts. The secret is stored sealed in the storage database (``[storage]``) and is
shown once. Replacing an enrolment needs ``--force`` (exit 3 otherwise), so a typo cannot
lock a user out of their authenticator. Only click and the standard library are imported at
the top: ``server.*``, segno and rich load inside the commands.
"""

from __future__ import annotations

import json
import typing as t

import click

from authctl.cli import DataError
from authctl.cli import State
from authctl.cli import pass_state
from authctl.cli import username_callback
from authctl.errors import reworded

if t.TYPE_CHECKING:
    from server.core.config import Config
    from server.core.storage import Storage


def open_storage(config: Config, *, require_key: bool = True) -> Storage:
    """The storage database of ``config``; a failure ends the command with exit 3."""
    from server.core.storage import Storage

    return Storage(config.storage, require_key=require_key)


def no_storage_yet(config: Config) -> bool:
    """True when the storage is a SQLite file not created yet (a PostgreSQL storage always
    exists: the server creates its tables, and asking it is the only way to know)."""
    return config.storage.backend == "sqlite" and not config.storage.path.exists()


def _on_storage(config: Config, username: str, action: t.Callable[[Storage, str], bool]) -> bool:
    """Run ``action(storage, canonical username)`` without the key; False when no database
    exists yet (nothing to find, and none is created).

    Raises:
        StorageError: the storage database cannot be used (exit 3).
    """
    from server.core.names import canonical_username

    if no_storage_yet(config):
        return False
    storage = open_storage(config, require_key=False)
    try:
        return action(storage, canonical_username(username))
    finally:
        storage.close()


def has_totp(config: Config, username: str) -> bool:
    """True when ``username`` has a TOTP secret (for ``user show``); reads no secret.

    Raises:
        StorageError: the storage database cannot be read (exit 3).
    """
    from server.core.storage import Storage

    return _on_storage(config, username, Storage.has_totp)


def remove_totp(config: Config, username: str) -> bool:
    """Remove ``username``'s TOTP secret if there is one (for ``user remove``); True if so.

    Raises:
        StorageError: the storage database cannot be written (exit 3).
    """
    from server.core.storage import Storage

    return _on_storage(config, username, Storage.delete_totp)


def _qr(uri: str) -> str:
    """``uri`` as a QR code drawn with Unicode half blocks (two modules per character)."""
    import io

    import segno

    out = io.StringIO()
    segno.make(uri, error="m").terminal(out=out, compact=True, border=2)
    return out.getvalue()


@click.group("totp")
def totp() -> None:
    """Enrol or remove a user's TOTP second factor (stored encrypted in [storage] path)."""


@totp.command("add")
@click.argument("name", callback=username_callback)
@click.option(
    "--force", is_flag=True, help="Replace an existing secret (the old app stops working)."
)
@click.option("--json", "as_json", is_flag=True, help='Print only {"secret": …, "uri": …}.')
@pass_state
def add(state: State, name: str, force: bool, as_json: bool) -> None:
    """Give NAME a new TOTP secret and print it as an otpauth URI and a QR code.

    Scan the QR code (or type the secret) into an authenticator app. The secret is shown
    only now. NAME must be in the users file; an existing secret is replaced only with
    --force (exit 3 otherwise).
    """
    from server.core.audit import for_cli
    from server.core.totp import TotpAlreadyEnrolled
    from server.core.totp import TotpService
    from server.core.userfile import UsersFile

    config = state.config()
    users = UsersFile(config.users.file)
    if users.read().get(name) is None:
        raise DataError(f"no user {name!r} in {users.path} (list them with `authctl user list`)")
    trail = for_cli(config.log.audit_file)
    storage = open_storage(config)
    try:
        with reworded(
            "{}; add --force to replace it (the old authenticator entry stops working)",
            TotpAlreadyEnrolled,
        ):
            secret, uri = TotpService(storage, config.totp).enrol(name, force=force)
    finally:
        storage.close()
    trail.emit("totp_added", user=name)
    if as_json:
        click.echo(json.dumps({"secret": secret, "uri": uri}))
        return
    click.echo(_qr(uri), nl=False)
    click.echo(f"URI:    {uri}")
    click.echo(f"Secret: {secret}")
    click.echo(
        f"{'Replaced' if force else 'Enrolled'} TOTP for {name} "
        f"({config.totp.algorithm}, {config.totp.digits} digits, {config.totp.period}s). "
        "The secret is not shown again."
    )


@totp.command("remove")
@click.argument("name", callback=username_callback)
@pass_state
def remove(state: State, name: str) -> None:
    """Remove NAME's TOTP secret (two_factor rules then refuse NAME until a new enrolment).

    NAME need not be in the users file any more. No secret to remove is exit 3.
    """
    from server.core.audit import for_cli

    trail = for_cli(state.config().log.audit_file)
    if not remove_totp(state.config(), name):
        raise DataError(f"user {name!r} has no TOTP secret")
    trail.emit("totp_removed", user=name)
    click.echo(f"Removed the TOTP secret of {name}")
