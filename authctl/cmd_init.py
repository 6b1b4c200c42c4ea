"""``authctl init [DIR]``: write a working starter setup, never overwriting anything.

It writes ``authctl.toml`` (commented, every section with its default; mode 0600, since it may
come to hold secrets such as a Redis URL with a password), an empty ``users.toml`` (mode 0600)
and ``secrets/storage.key`` (32 random bytes as hex, mode 0600, folder 0700). If any of them
exists, nothing at all is written: a half-initialised folder would be worse than
none, and an existing key or users file must never be replaced by accident.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
from pathlib import Path

import click

#: The storage key: 32 random bytes, hex-encoded, one line.
#: Hosts of the starter config's portal and cookie domain, for the init certificate.
CERT_HOSTS = ("auth.example.com", "*.example.com", "example.com")
KEY_BYTES = 32


def _create(path: Path, text: str, mode: int) -> None:
    """Create ``path`` with ``mode``; refuse (FileExistsError) if it appeared meanwhile."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _shown(path: Path, folder: Path, typed: str) -> str:
    """``path`` as the user would type it: below the folder they named."""
    relative = path.relative_to(folder)
    return str(relative) if typed in (".", "") else str(Path(typed) / relative)


@click.command("init")
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=443,
    show_default=True,
    help="The HTTPS port your proxy listens on, as browsers reach it: written into portal_url "
    "and default_redirect_url (443 is left out of the URLs).",
)
def init(directory: str, port: int) -> None:
    """Write a starter config, an empty users file and a storage key into DIRECTORY.

    DIRECTORY (default: the current folder) is created if needed. Nothing is overwritten: if
    one of the files exists, init stops before writing anything (exit 3). A proxy on another
    port than 443 (e.g. a test setup on 8443): give --port 8443.
    """
    from authctl._starter import STARTER_USERS
    from authctl._starter import starter_config
    from authctl.cli import DataError
    from authctl.errors import reworded

    folder = Path(directory).expanduser().absolute()
    config = folder / "authctl.toml"
    users = folder / "users.toml"
    secrets_dir = folder / "secrets"
    key = secrets_dir / "storage.key"
    plan = [
        (config, starter_config(port), 0o600),
        (users, STARTER_USERS, 0o600),
        (key, secrets.token_hex(KEY_BYTES) + "\n", 0o600),
    ]
    from server.core.certs import CertificateError
    from server.core.certs import default_certificate_paths
    from server.core.certs import write_default_certificate

    cert_paths = list(default_certificate_paths(folder))
    existing = [path for path, _, _ in plan if path.exists() or path.is_symlink()]
    existing += [path for path in cert_paths if path.exists() or path.is_symlink()]
    if existing:
        names = ", ".join(str(p) for p in existing)
        verb = "exists" if len(existing) == 1 else "exist"
        raise DataError(f"{names} already {verb}; init never overwrites (nothing was written)")
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder} exists and is not a folder")
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not secrets_dir.exists():
            secrets_dir.mkdir(mode=0o700)
            secrets_dir.chmod(0o700)
        for path, text, mode in plan:
            _create(path, text, mode)
            written.append(path)
        with reworded("{}; nothing was written", CertificateError):
            written += write_default_certificate(folder, CERT_HOSTS)
    except click.ClickException:
        _undo(written)
        raise
    except FileExistsError as exc:
        _undo(written)
        raise DataError(f"{exc.filename} appeared meanwhile; nothing was written") from None
    except OSError as exc:
        _undo(written)
        raise DataError(f"cannot write {exc.filename or folder}: {exc.strerror}") from None
    _report(folder, directory, [*(p for p, _, _ in plan), cert_paths[0]], port)


def _undo(paths: list[Path]) -> None:
    """Remove what this run created, so a failed init leaves nothing half-written behind."""
    for path in reversed(paths):
        with contextlib.suppress(OSError):
            path.unlink()


def _report(folder: Path, typed: str, paths: list[Path], port: int) -> None:
    from rich.markup import escape

    from authctl.output import console

    out = console()
    out.print(f"Initialised {escape(str(folder))}:")
    what = (
        "the config",
        "the users file (empty)",
        "the storage key (keep it secret)",
        "a self-signed certificate for auth.example.com and *.example.com (+ key.pem)",
    )
    for path, label in zip(paths, what, strict=True):
        out.print(f"  {escape(_shown(path, folder, typed))}  [dim]{label}[/dim]")
    config = _shown(paths[0], folder, typed)
    prefix = "authctl" if typed in (".", "") else f"authctl --config {shlex.quote(config)}"
    portal = "https://auth.example.com" + ("" if port == 443 else f":{port}")
    out.print(f"The portal is {escape(portal)} (the proxy's HTTPS port {port}; see --port).")
    out.print()
    out.print(f"Next: edit {escape(config)} (cookie domain, portal URL, rules), then:")
    for command in (
        f"{prefix} user add alice --group admins",
        f"{prefix} rules check",
        f"{prefix} serve",
    ):
        out.print(f"  {escape(command)}")
