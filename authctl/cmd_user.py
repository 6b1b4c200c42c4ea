"""``authctl user …``: add, list, show, change and remove the accounts in the users file.

Names are canonicalised (``Alice`` is stored as ``alice``); a name that is not valid is a usage
error (exit 2), an unknown or duplicate user a data error (exit 3). Edits go through
:class:`server.core.userfile.UsersFile` (locked, atomic), so they are safe to run in parallel and
while the server runs. Passwords come from a hidden prompt asked twice, or from one line of
stdin with ``--password-stdin``; they never travel in argv, and must pass ``[password_policy]``
as in the portal (``--force`` overrides it, with a warning). Only click is imported at the top:
``server.*``, argon2 and rich load inside the commands.
"""

from __future__ import annotations

import sys
import typing as t

import click

from authctl.cli import State
from authctl.cli import pass_state
from authctl.cli import username_callback
from authctl.cmd_totp import totp

if t.TYPE_CHECKING:
    from server.core.audit import CliAudit
    from server.core.storage import WebAuthnCredential
    from server.core.userfile import UsersFile
    from server.core.users import User
    from server.core.users import UserDatabase


def _groups(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """Check group names: no commas, white space or control characters."""
    from server.core.names import check_group

    try:
        return tuple(dict.fromkeys(check_group(group) for group in value))
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _text(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Check a display name or e-mail address: one line, no control characters."""
    from server.core.names import check_display_text

    try:
        return check_display_text(value, param.name or "the value")
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


name_argument = click.argument("name", callback=username_callback)
password_stdin_option = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of stdin instead of prompting.",
)
force_option = click.option(
    "--force",
    is_flag=True,
    help="Store the password even if [password_policy] refuses it (a warning says so).",
)


def read_password(from_stdin: bool) -> str:
    """The new password: one stdin line (only its newline removed) or a double hidden prompt.

    Raises:
        click.BadParameter: the password is empty.
    """
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
    else:
        password = click.prompt(
            "Password", hide_input=True, confirmation_prompt=True, prompt_suffix=": "
        )
    if not password:
        raise click.BadParameter("the password is empty", param_hint="'--password-stdin'")
    return password


def _users_file(state: State) -> UsersFile:
    from server.core.userfile import UsersFile

    return UsersFile(state.config().users.file)


def _peek(users: UsersFile, name: str) -> User | None:
    """The user as the file has it now, or None; a missing or empty file that never held
    users has none (one that was emptied or cut short after authctl wrote it is refused).

    Checked before asking for a password, so that nobody types one twice for nothing.
    """
    from server.core.users import parse_users
    from server.core.users import read_users_text

    text, data = read_users_text(users.path, missing_ok=True)
    if not text:
        return None
    return parse_users(text, data, users.path).get(name)


def _unknown(users: UsersFile, name: str) -> Exception:
    from server.core.errors import UserError

    return UserError(f"no user {name!r} in {users.path} (list them with `authctl user list`)")


def _policy(state: State, name: str, password: str, force: bool) -> str:
    """``password`` if ``[password_policy]`` accepts it, as the portal would.

    With ``force`` a refused password is kept, and a warning on stderr says so.

    Raises:
        click.BadParameter: the policy refuses it and ``force`` is not given (exit 2).
    """
    from server.core.password_policy import PasswordPolicy
    from server.core.password_policy import WeakPassword

    try:
        PasswordPolicy(state.config().password_policy).check(password, username=name)
    except WeakPassword as exc:
        if not force:
            raise click.BadParameter(
                f"{exc} ([password_policy] in the config; --force stores it anyway)",
                param_hint="'password'",
            ) from None
        click.echo(
            f"WARNING: {exc} It is stored anyway because of --force: [password_policy] was "
            f"not applied to {name}'s password.",
            err=True,
        )
    return password


def _hash(state: State, password: str) -> str:
    from server.core.passwords import PasswordHasher

    return PasswordHasher(state.config().users.password_hash).hash(password)


def _audit(state: State) -> CliAudit:
    """The configured audit log, checked before the command changes anything (exit 3 when it
    cannot be opened); events are written with ``ip`` "cli"."""
    from server.core.audit import for_cli

    return for_cli(state.config().log.audit_file)


def _say(message: str) -> None:
    from rich.markup import escape

    from authctl.output import console

    console().print(escape(message))


def _warn(db: UserDatabase) -> None:
    from server.core.users import mode_warning

    warnings = list(db.warnings)
    if db.path is not None and (mode := mode_warning(db.path)) is not None:
        warnings.append(mode)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


def _describe(user: User) -> str:
    groups = ", ".join(user.groups) or "none"
    state = "disabled" if user.disabled else "enabled"
    return f"{user.name} ({state}; groups: {groups})"


@click.group()
def user() -> None:
    """Manage the accounts in the users file (users.file in the config)."""


@user.command("add")
@name_argument
@click.option(
    "--displayname",
    metavar="NAME",
    callback=_text,
    default="",
    help="The full name shown in Remote-Name.",
)
@click.option(
    "--email",
    metavar="ADDRESS",
    callback=_text,
    default="",
    help="The e-mail address (Remote-Email).",
)
@click.option(
    "--group",
    "groups",
    metavar="GROUP",
    callback=_groups,
    multiple=True,
    help="A group to join (repeat for more).",
)
@password_stdin_option
@force_option
@pass_state
def add(
    state: State,
    name: str,
    displayname: str,
    email: str,
    groups: tuple[str, ...],
    password_stdin: bool,
    force: bool,
) -> None:
    """Add the user NAME (stored in canonical form: lower case, NFKC).

    The password must pass [password_policy], as in the portal, unless --force is given.
    """
    users = _users_file(state)
    if _peek(users, name) is not None:
        from server.core.errors import UserError

        raise UserError(f"user {name!r} already exists in {users.path}")
    phc = _hash(state, _policy(state, name, read_password(password_stdin), force))
    added = users.add(name, password=phc, displayname=displayname, email=email, groups=groups)
    _say(f"Added {_describe(added)} to {users.path}")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (never the hashes).")
@pass_state
def list_users(state: State, as_json: bool) -> None:
    """List the users: name, display name, e-mail, groups, disabled."""
    from authctl.output import echo_json

    db = _users_file(state).read()
    _warn(db)
    users = sorted(db.users, key=lambda u: u.name)
    if as_json:
        echo_json([u.as_json() for u in users])
        return
    from rich.markup import escape
    from rich.table import Table

    from authctl.output import console

    table = Table("user", "display name", "e-mail", "groups", "status", title=escape(str(db.path)))
    for u in users:
        status = "[red]disabled[/red]" if u.disabled else "enabled"
        cells = (u.name, u.displayname, u.email, ", ".join(u.groups))
        table.add_row(*(escape(c) for c in cells), status)
    out = console()
    out.print(table)
    out.print(f"{len(users)} user{'' if len(users) == 1 else 's'}")


def _hash_scheme(state: State, phc: str) -> tuple[str, bool, str]:
    """The hash's scheme, whether the next sign-in rewrites it, and a line saying both."""
    from server.core.passwords import PasswordHasher
    from server.core.passwords import is_legacy
    from server.core.passwords import scheme_of

    scheme = scheme_of(phc) or "unknown"
    if is_legacy(phc):
        return scheme, True, f"{scheme} (legacy, rewritten as argon2id at next sign-in)"
    if PasswordHasher(state.config().users.password_hash).needs_rehash(phc):
        note = "other parameters, rewritten with the configured ones at next sign-in"
        return scheme, True, f"{scheme} ({note})"
    return scheme, False, scheme


@user.command("show")
@name_argument
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object (never the hash).")
@pass_state
def show(state: State, name: str, as_json: bool) -> None:
    """Show one user, with the scheme of the password hash (never the hash).

    A legacy hash (bcrypt, sha-crypt, pbkdf2, scrypt, argon2i/d, as imported from Authelia)
    or an argon2id with other parameters is rewritten with the configured argon2id
    parameters at the user's next sign-in; --json says so in hash_rewrite.
    """
    users = _users_file(state)
    db = users.read()
    _warn(db)
    found = db.get(name)
    if found is None:
        raise _unknown(users, name)
    from authctl.cmd_totp import has_totp

    totp = has_totp(state.config(), found.name)
    passkeys = len(_credentials(state, found.name))
    scheme, rewrite, password = _hash_scheme(state, found.password)
    if as_json:
        from authctl.output import echo_json

        echo_json(
            {
                **found.as_json(),
                "totp": totp,
                "webauthn": passkeys,
                "hash_scheme": scheme,
                "hash_rewrite": rewrite,
            }
        )
        return
    from rich.markup import escape
    from rich.table import Table

    from authctl.output import console

    table = Table.grid(padding=(0, 2))
    rows = (
        ("user", found.name),
        ("display name", found.displayname),
        ("e-mail", found.email),
        ("groups", ", ".join(found.groups)),
        ("status", "disabled" if found.disabled else "enabled"),
        ("totp", "enrolled" if totp else "not enrolled"),
        ("passkeys", str(passkeys)),
        ("password", password),
    )
    for label, value in rows:
        table.add_row(f"[bold]{label}[/bold]", escape(value))
    console().print(table)


@user.command("passwd")
@name_argument
@password_stdin_option
@force_option
@pass_state
def passwd(state: State, name: str, password_stdin: bool, force: bool) -> None:
    """Set a new password for NAME (the server ends the user's sessions).

    The password must pass [password_policy], as in the portal, unless --force is given.
    """
    users = _users_file(state)
    if users.read().get(name) is None:
        raise _unknown(users, name)
    trail = _audit(state)
    password = _policy(state, name, read_password(password_stdin), force)
    changed = users.set_password(name, _hash(state, password))
    trail.emit("password_changed", user=changed.name)
    _say(f"Changed the password of {changed.name}")


@user.command("disable")
@name_argument
@pass_state
def disable(state: State, name: str) -> None:
    """Disable NAME: no login, and the server ends the user's sessions."""
    trail = _audit(state)
    changed = _users_file(state).set_disabled(name, True)
    trail.emit("session_revoked", user=changed.name)
    _say(f"Disabled {changed.name}")


@user.command("enable")
@name_argument
@pass_state
def enable(state: State, name: str) -> None:
    """Enable NAME again."""
    changed = _users_file(state).set_disabled(name, False)
    _say(f"Enabled {changed.name}")


@user.command("remove")
@name_argument
@pass_state
def remove(state: State, name: str) -> None:
    """Remove NAME, with their TOTP secret, passkeys and tokens.

    The server ends the user's sessions; the preferences go too, so a user added again later
    under the same name inherits nothing.
    """
    from authctl.cmd_token import remove_tokens
    from authctl.cmd_totp import remove_totp

    users = _users_file(state)
    trail = _audit(state)
    users.remove(name)
    trail.emit("session_revoked", user=name)
    if remove_totp(state.config(), name):
        trail.emit("totp_removed", user=name)
        _say(f"Removed {name}'s TOTP secret")
    gone = _delete_credentials(state, name)
    if gone:
        trail.emit("webauthn_removed", user=name)
        _say(f"Removed {name}'s {gone} passkey{'s' if gone != 1 else ''}")
    _forget_preferences(state, name)
    revoked = remove_tokens(state.config(), name)
    if revoked:
        trail.emit("token_revoked", user=name)
        _say(f"Revoked {name}'s {revoked} token{'s' if revoked != 1 else ''}")
    _say(f"Removed {name} from {users.path}")


@user.command("groups")
@name_argument
@click.option(
    "--add",
    "add_groups",
    metavar="GROUP",
    callback=_groups,
    multiple=True,
    help="A group to join (repeat).",
)
@click.option(
    "--remove",
    "remove_groups",
    metavar="GROUP",
    callback=_groups,
    multiple=True,
    help="A group to leave (repeat).",
)
@pass_state
def groups(
    state: State, name: str, add_groups: tuple[str, ...], remove_groups: tuple[str, ...]
) -> None:
    """Add NAME to groups and/or remove it from groups; prints the resulting groups."""
    if not add_groups and not remove_groups:
        raise click.UsageError("give at least one --add GROUP or --remove GROUP")
    both = set(add_groups) & set(remove_groups)
    if both:
        raise click.BadParameter(
            f"{', '.join(sorted(both))} is both added and removed", param_hint="'--add'/'--remove'"
        )
    users = _users_file(state)
    before = users.read().get(name)
    changed = users.set_groups(name, add=add_groups, remove=remove_groups)
    if before is not None:
        for group in remove_groups:
            if group not in before.groups:
                click.echo(f"note: {changed.name} was not in group {group!r}", err=True)
    _say(f"Groups of {changed.name}: {', '.join(changed.groups) or 'none'}")


user.add_command(totp)


# ---------------------------------------------------------------------- webauthn


def _credentials(state: State, name: str) -> list[WebAuthnCredential]:
    """``name``'s WebAuthn credentials (none when no storage exists yet); reads no secret."""
    from authctl.cmd_totp import no_storage_yet
    from authctl.cmd_totp import open_storage
    from server.core.names import canonical_username

    config = state.config()
    if no_storage_yet(config):
        return []
    storage = open_storage(config, require_key=False)
    try:
        return storage.webauthn_credentials(canonical_username(name))
    finally:
        storage.close()


def _delete_credentials(state: State, name: str, row_id: str | None = None) -> int:
    """Remove one (``row_id``) or every credential of ``name``; how many went."""
    from authctl.cmd_totp import no_storage_yet
    from authctl.cmd_totp import open_storage
    from server.core.names import canonical_username

    config = state.config()
    if no_storage_yet(config):
        return 0
    storage = open_storage(config, require_key=False)
    try:
        canonical = canonical_username(name)
        if row_id is None:
            return storage.delete_webauthn_credentials(canonical)
        return int(storage.delete_webauthn_credential(canonical, row_id))
    finally:
        storage.close()


def _forget_preferences(state: State, name: str) -> None:
    """Delete ``name``'s stored preferences (the preferred second factor): a user added later
    under the same name starts afresh."""
    from authctl.cmd_totp import no_storage_yet
    from authctl.cmd_totp import open_storage
    from server.core.names import canonical_username

    config = state.config()
    if no_storage_yet(config):
        return
    storage = open_storage(config, require_key=False)
    try:
        storage.delete_user_preferences(canonical_username(name))
    finally:
        storage.close()


def _when(value: float | None) -> str | None:
    from datetime import UTC
    from datetime import datetime

    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@user.group("webauthn")
def webauthn() -> None:
    """List or remove a user's passkeys and security keys (WebAuthn, in [storage])."""


@webauthn.command("list")
@click.argument("name", callback=username_callback)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (no key material).")
@pass_state
def webauthn_list(state: State, name: str, as_json: bool) -> None:
    """List NAME's passkeys and security keys: id, description, dates, sign count."""
    creds = _credentials(state, name)
    rows = [
        {
            "id": c.id,
            "description": c.description,
            "created_at": _when(c.created_at),
            "last_used_at": _when(c.last_used_at),
            "sign_count": c.sign_count,
            "discoverable": c.discoverable,
            "backup_eligible": c.backup_eligible,
            "backup_state": c.backup_state,
            "aaguid": c.aaguid,
            "transports": list(c.transports),
        }
        for c in creds
    ]
    if as_json:
        from authctl.output import echo_json

        echo_json(rows)
        return
    if not rows:
        _say(f"{name} has no passkeys")
        return
    from rich.markup import escape
    from rich.table import Table

    from authctl.output import console

    table = Table("id", "description", "created", "last used", "sign count")
    for row in rows:
        table.add_row(
            escape(str(row["id"])),
            escape(str(row["description"])),
            str(row["created_at"]),
            str(row["last_used_at"] or "never"),
            str(row["sign_count"]),
        )
    console().print(table)


@webauthn.command("remove")
@click.argument("name", callback=username_callback)
@click.argument("credential_id", metavar="ID", required=False)
@click.option("--all", "remove_all", is_flag=True, help="Remove every passkey of NAME.")
@pass_state
def webauthn_remove(state: State, name: str, credential_id: str | None, remove_all: bool) -> None:
    """Remove NAME's passkey ID (from `authctl user webauthn list`), or all with --all.

    An ID that NAME does not have is a data error (exit 3).
    """
    from authctl.errors import DataError

    if remove_all == (credential_id is not None):
        raise click.UsageError("give a passkey ID or --all, not both and not neither")
    trail = _audit(state)
    gone = _delete_credentials(state, name, None if remove_all else credential_id)
    if not gone and not remove_all:
        raise DataError(
            f"{name} has no passkey {credential_id!r} (list them with "
            f"`authctl user webauthn list {name}`)"
        )
    if gone:
        trail.emit("webauthn_removed", user=name)
    _say(f"Removed {gone} passkey{'s' if gone != 1 else ''} of {name}")
