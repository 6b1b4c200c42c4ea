"""``authctl import authelia``: turn an Authelia setup into an authctl folder.

Everything is read and checked first (the YAML files, the export files, and the config and
users file that would be written, with authctl's own loaders); only then is anything written,
and only into files that do not exist yet. A failure while writing removes what this run
created. The conversion itself lives in ``server.core.authelia_import``.
"""

from __future__ import annotations

import os
import typing as t
from pathlib import Path

import click

if t.TYPE_CHECKING:
    from server.core.authelia_import import Conversion
    from server.core.authelia_import import Report
    from server.core.authelia_import import TotpImport
    from server.core.authelia_import import WebauthnImport
    from server.core.config import Config
    from server.core.storage import Storage


@click.group("import")
def import_() -> None:
    """Import another server's configuration, users and second factors."""


_FILE = click.Path(dir_okay=False, path_type=Path)


@import_.command("authelia")
@click.option(
    "--config",
    "config_file",
    required=True,
    type=_FILE,
    help="Authelia's configuration.yml.",
)
@click.option("--users", "users_file", type=_FILE, help="Authelia's users_database.yml.")
@click.option(
    "--totp-export",
    type=_FILE,
    help="The file of `authelia storage user totp export` (TOTP secrets, stored encrypted).",
)
@click.option(
    "--webauthn-export",
    type=_FILE,
    help="The file of `authelia storage user webauthn export` (passkeys, security keys).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The new authctl folder (created if needed; nothing in it is overwritten).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def authelia(
    config_file: Path,
    users_file: Path | None,
    totp_export: Path | None,
    webauthn_export: Path | None,
    out_dir: Path,
    as_json: bool,
) -> None:
    """Convert an Authelia setup into a new authctl folder.

    Writes OUT/authctl.toml, OUT/users.toml, OUT/secrets/storage.key (and a file under
    OUT/secrets/ for each password found in the YAML), a self-signed certificate in
    OUT/certs/, and, with --totp-export, the TOTP secrets into the new storage, encrypted
    with the new key. Users keep their password hashes. Nothing is overwritten: if one of
    these files exists, nothing is written (exit 3).

    Prints what was mapped, what was dropped and why, and what needs your attention
    (--json: {"mapped": [{key, to}], "dropped": [{key, reason}], "attention": [{key,
    reason}]}). Exit 0 once the folder is written, warnings included; 3 when an input
    cannot be read or is invalid.
    """
    from server.core import authelia_import as ai

    env = {k: v for k, v in os.environ.items() if k.startswith("AUTHELIA_")}
    conversion = _convert(ai.read_yaml(config_file), config_file, env)
    report = conversion.report
    users: dict[str, dict[str, t.Any]] = {}
    if users_file is not None:
        data = ai.read_yaml(users_file)
        try:
            users = ai.convert_users(data, report)
        except ValueError as exc:
            raise _input_error(users_file, str(exc)) from None
    elif conversion.users_path is not None:
        report.attend(
            "authentication_backend.file.path",
            f"the users were not imported: run again with --users {conversion.users_path}",
        )
    totp = ai.parse_totp_export(ai.read_yaml(totp_export), totp_export) if totp_export else []
    passkeys = (
        ai.parse_webauthn_export(ai.read_yaml(webauthn_export), webauthn_export)
        if webauthn_export
        else []
    )
    folder = out_dir.expanduser().absolute()
    config_text = ai.render_config(conversion.config, config_file.name)
    users_text = ai.render_users(users)
    _check_loads(folder, config_text, users_text)
    written = _write(folder, conversion, config_text, users_text)
    try:
        _store(folder, report, totp, passkeys, set(users) if users_file else None)
    except BaseException:
        from authctl.cmd_init import _undo

        _undo(written)
        raise
    if as_json:
        from authctl.output import echo_json

        echo_json(report.as_json())
    else:
        _print(report, folder)


def _input_error(path: Path, message: str) -> Exception:
    from server.core.authelia_import import AutheliaInputError
    from server.core.errors import Problem

    return AutheliaInputError([Problem(path, "", message)])


def _convert(data: object, path: Path, env: dict[str, str]) -> Conversion:
    from server.core.authelia_import import convert_config

    try:
        return convert_config(data, env)
    except ValueError as exc:
        raise _input_error(path, str(exc)) from None


def _check_loads(folder: Path, config_text: str, users_text: str) -> None:
    """Both files must load with authctl's own loaders before anything is written."""
    import tomli

    from authctl.errors import reworded
    from server.core.config import parse_config
    from server.core.errors import FileProblemError
    from server.core.users import parse_users

    template = (
        "the converted files would not load (the Authelia config holds values authctl refuses); "
        "nothing was written:\n{}"
    )
    with reworded(template, FileProblemError):
        parse_config(config_text, tomli.loads(config_text), folder / "authctl.toml")
        parse_users(users_text, tomli.loads(users_text), folder / "users.toml")


def _plan(
    folder: Path, conversion: Conversion, config_text: str, users_text: str
) -> list[tuple[Path, str]]:
    import secrets

    from authctl.cmd_init import KEY_BYTES

    plan = [
        (folder / "authctl.toml", config_text),
        (folder / "users.toml", users_text),
        (folder / "secrets" / "storage.key", secrets.token_hex(KEY_BYTES) + "\n"),
    ]
    plan += [(folder / rel, text) for rel, text in conversion.secrets.items()]
    return plan


def _write(folder: Path, conversion: Conversion, config_text: str, users_text: str) -> list[Path]:
    """Create every file (mode 0600; secrets/ 0700), or none: refuse if one exists."""
    from authctl.cmd_init import _create
    from authctl.cmd_init import all_or_nothing
    from authctl.cmd_init import refuse_existing
    from authctl.errors import DataError
    from authctl.errors import reworded
    from server.core.certs import CertificateError
    from server.core.certs import default_certificate_paths
    from server.core.certs import write_default_certificate

    plan = _plan(folder, conversion, config_text, users_text)
    targets = [p for p, _ in plan] + list(default_certificate_paths(folder))
    targets.append(folder / "authctl.db")
    refuse_existing(targets, "import")
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder} exists and is not a folder")
    with all_or_nothing(folder) as written:
        folder.mkdir(parents=True, exist_ok=True)
        secrets_dir = folder / "secrets"
        if not secrets_dir.exists():
            secrets_dir.mkdir(mode=0o700)
            secrets_dir.chmod(0o700)
        for path, text in plan:
            _create(path, text, 0o600)
            written.append(path)
        with reworded("{}; nothing was written", CertificateError):
            written += write_default_certificate(folder, conversion.cert_hosts)
    return [*written, folder / "authctl.db"]


def _store(
    folder: Path,
    report: Report,
    totp: list[TotpImport],
    passkeys: list[WebauthnImport],
    known_users: set[str] | None,
) -> None:
    """TOTP secrets (sealed with the new key) and WebAuthn credentials into the new storage."""
    if not totp and not passkeys:
        return
    import dataclasses

    from server.core.config import load_config
    from server.core.storage import Storage

    config = load_config(folder / "authctl.toml")
    storage_config = config.storage
    if storage_config.backend != "sqlite":
        # The new PostgreSQL database may not exist yet; `storage migrate` copies from SQLite.
        storage_config = dataclasses.replace(storage_config, backend="sqlite", postgres=None)
        report.attend(
            "storage.postgres",
            "the imported TOTP secrets and passkeys were stored in authctl.db (SQLite): "
            "run `authctl storage migrate --to postgres` to move them into PostgreSQL",
        )
    storage = Storage(storage_config)
    try:
        for i, item in enumerate(totp):
            key = f"totp_export.totp_configurations[{i}]"
            if known_users is not None and item.username not in known_users:
                report.attend(key, f"{item.username!r} is not in users.toml; stored anyway")
            storage.save_totp(
                item.username,
                item.secret,
                algorithm=item.algorithm,
                digits=item.digits,
                period=item.period,
            )
            report.map(key, f"storage: TOTP of {item.username!r} (encrypted)")
        _passkeys(report, storage, config, passkeys, known_users)
    finally:
        storage.close()


def _passkeys(
    report: Report,
    storage: Storage,
    config: Config,
    passkeys: list[WebauthnImport],
    known_users: set[str] | None,
) -> None:
    """Authelia's WebAuthn credentials as ``add_webauthn_credential`` rows: the same
    credential id, COSE public key and sign count, so the authenticators keep working when
    the RP ID is the same (authctl's default is Authelia's: the portal host)."""
    import time
    from urllib.parse import urlsplit

    from server.core.public_ids import public_id
    from server.core.storage import WebAuthnCredential

    rp_ids = (
        {config.webauthn.rp_id}
        if config.webauthn.rp_id
        else {urlsplit(c.portal_url).hostname or "" for c in config.session.cookies}
    )
    taken: set[tuple[str, str]] = set()
    for i, item in enumerate(passkeys):
        key = f"webauthn_export.webauthn_credentials[{i}]"
        if known_users is not None and item.username not in known_users:
            report.attend(key, f"{item.username!r} is not in users.toml; stored anyway")
        if item.rpid not in rp_ids:
            report.attend(
                key,
                f"registered for RP ID {item.rpid!r}, not {', '.join(sorted(rp_ids))!r}: set "
                f"[webauthn] rp_id = {item.rpid!r} or the browser will not offer it",
            )
        if item.clone_warning:
            report.attend(key, "Authelia flagged this credential as a possible clone")
        description = (item.description or "").strip()[:64] or "Imported passkey"
        base, n = description, 2
        while (item.username, description) in taken:
            description = f"{base[:58]} ({n})"
            n += 1
        taken.add((item.username, description))
        record = WebAuthnCredential(
            id=public_id(16),
            username=item.username,
            credential_id=item.credential_id,
            public_key=item.public_key,
            sign_count=item.sign_count,
            aaguid=item.aaguid or "",
            transports=tuple(t_ for t_ in item.transports if t_ and "," not in t_),
            backup_eligible=item.backup_eligible,
            backup_state=item.backup_state,
            discoverable=item.discoverable,
            description=description,
            attestation_type=item.attestation_type or "none",
            created_at=item.created_at if item.created_at is not None else time.time(),
            last_used_at=item.last_used_at,
        )
        if storage.add_webauthn_credential(record):
            report.map(key, f"storage: passkey {description!r} of {item.username!r}")
        else:  # pragma: no cover - the export's parser refuses a credential listed twice
            report.attend(key, "the same credential id appears twice in the export; skipped")


def _print(report: Report, folder: Path) -> None:
    from rich.markup import escape
    from rich.table import Table

    from authctl.output import console

    out = console()
    table = Table(title="Authelia import", show_lines=False)
    table.add_column("", no_wrap=True)
    table.add_column("Authelia key", overflow="fold")
    table.add_column("authctl key / reason", overflow="fold")
    for m in report.mapped:
        table.add_row("[green]mapped[/green]", escape(m.key), escape(m.to))
    for n in report.dropped:
        table.add_row("[dim]dropped[/dim]", escape(n.key), escape(n.reason))
    for n in report.attention:
        table.add_row("[yellow]attention[/yellow]", escape(n.key), escape(n.reason))
    out.print(table)
    out.print(
        f"{len(report.mapped)} mapped, {len(report.dropped)} dropped, "
        f"{len(report.attention)} need attention. Written to {escape(str(folder))}."
    )
    config = folder / "authctl.toml"
    out.print("Next: read the attention lines, then:")
    for command in (
        f"authctl --config {config} rules check",
        f"authctl --config {config} proxy-snippet nginx",
        f"authctl --config {config} serve",
    ):
        out.print(f"  {escape(command)}")
