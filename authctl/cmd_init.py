"""``authctl init [DIR]``: write a working starter setup, never overwriting anything.

It writes ``authctl.toml`` (commented, every section with its default; mode 0600, since it may
come to hold secrets such as a Redis URL with a password), an empty ``users.toml`` (mode 0600)
and ``secrets/storage.key`` (32 random bytes as hex, mode 0600, folder 0700). If any of them
exists, nothing at all is written: a half-initialised folder would be worse than
none, and an existing key or users file must never be replaced by accident.

``authctl init --join EXISTING [DIR]`` writes a second host's folder instead (SPEC §7.2): the
config of EXISTING with every shared path made absolute (the users file, the SQLite storage and
the session store beside it) and every secret that must match across hosts copied into
``DIR/secrets/`` (the storage key seals TOTP secrets, session records, one-time code digests
and reset tokens; whatever else EXISTING keeps under ``secrets/`` is copied too), mode 0600
in a 0700 folder. The certificate is per host: a fresh one is made for the portal hosts.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import typing as t
from pathlib import Path
from urllib.parse import urlsplit

import click

if t.TYPE_CHECKING:
    from server.core.config import Config

#: The storage key: 32 random bytes, hex-encoded, one line.
#: Hosts of the starter config's portal and cookie domain, for the init certificate.
CERT_HOSTS = ("auth.example.com", "*.example.com", "example.com")
KEY_BYTES = 32


def _create(path: Path, text: str | bytes, mode: int) -> None:
    """Create ``path`` with ``mode``; refuse (FileExistsError) if it appeared meanwhile."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        data = text.encode("utf-8") if isinstance(text, str) else text
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
    "and default_redirect_url (443 is left out of the URLs). With --join, the port of "
    "EXISTING's portal_url (a different one is refused).",
)
@click.option(
    "--join",
    "existing",
    metavar="EXISTING",
    type=click.Path(exists=True, path_type=str),
    help="Make DIRECTORY a second host of the host folder EXISTING (or its config file): its "
    "config, pointing at the same users file and storage, and a copy of its secrets.",
)
@click.pass_context
def init(ctx: click.Context, directory: str, port: int, existing: str | None) -> None:
    """Write a starter config, an empty users file and a storage key into DIRECTORY.

    DIRECTORY (default: the current folder) is created if needed. Nothing is overwritten: if
    one of the files exists, init stops before writing anything (exit 3). A proxy on another
    port than 443 (e.g. a test setup on 8443): give --port 8443.

    With --join EXISTING, DIRECTORY becomes another host of the same site: EXISTING's config
    with the users file and the storage (and the SQLite session store) as absolute paths to
    EXISTING's, and EXISTING's secrets/ copied (storage key and every other file there, mode
    0600), plus a certificate of its own. On several machines, put the users file on a shared
    volume and use [storage] backend = "postgres" and [session] store = "redis".

    \b
    Examples:
      authctl init /etc/authctl
      authctl init --port 8443 demo
      authctl init --join /etc/authctl /srv/authctl-b
    """
    if existing is not None:
        from click.core import ParameterSource

        explicit = ctx.get_parameter_source("port") is ParameterSource.COMMANDLINE
        _join(Path(existing), directory, port if explicit else None)
        return
    from authctl._starter import STARTER_USERS
    from authctl._starter import starter_config
    from authctl.cli import DataError
    from authctl.errors import reworded
    from server.core.oidc.keys import generate_pem

    folder = Path(directory).expanduser().absolute()
    config = folder / "authctl.toml"
    users = folder / "users.toml"
    secrets_dir = folder / "secrets"
    key = secrets_dir / "storage.key"
    plan = [
        (config, starter_config(port), 0o600),
        (users, STARTER_USERS, 0o600),
        (key, secrets.token_hex(KEY_BYTES) + "\n", 0o600),
        (secrets_dir / "oidc-rs256.pem", generate_pem().decode("ascii"), 0o600),
    ]
    from server.core.certs import CertificateError
    from server.core.certs import default_certificate_paths
    from server.core.certs import write_default_certificate

    cert_paths = list(default_certificate_paths(folder))
    refuse_existing([path for path, _, _ in plan] + cert_paths, "init")
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder} exists and is not a folder")
    with all_or_nothing(folder) as written:
        folder.mkdir(parents=True, exist_ok=True)
        if not secrets_dir.exists():
            secrets_dir.mkdir(mode=0o700)
            secrets_dir.chmod(0o700)
        for path, text, mode in plan:
            _create(path, text, mode)
            written.append(path)
        with reworded("{}; nothing was written", CertificateError):
            written += write_default_certificate(folder, CERT_HOSTS)
    _report(folder, directory, [*(p for p, _, _ in plan), cert_paths[0]], port)


def refuse_existing(paths: list[Path], command: str) -> None:
    """Stop before writing anything when one of ``paths`` exists (a dangling link counts):
    init, init --join and import never overwrite.

    Raises:
        DataError: naming every path in the way (exit 3).
    """
    from authctl.errors import DataError

    in_the_way = [path for path in paths if path.exists() or path.is_symlink()]
    if in_the_way:
        names = ", ".join(str(p) for p in in_the_way)
        verb = "exists" if len(in_the_way) == 1 else "exist"
        raise DataError(f"{names} already {verb}; {command} never overwrites (nothing was written)")


def _undo(paths: list[Path]) -> None:
    """Remove what this run created, so a failed init leaves nothing half-written behind."""
    for path in reversed(paths):
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def all_or_nothing(folder: Path) -> t.Iterator[list[Path]]:
    """The list the block appends each file it creates in ``folder`` to; if the block fails,
    those files are removed and the failure says nothing was written (init, init --join and
    import write a folder whole or not at all).

    Raises:
        DataError: a file appeared meanwhile, or could not be written (exit 3).
    """
    from authctl.errors import DataError

    written: list[Path] = []
    try:
        yield written
    except click.ClickException:
        _undo(written)
        raise
    except FileExistsError as exc:
        _undo(written)
        raise DataError(f"{exc.filename} appeared meanwhile; nothing was written") from None
    except OSError as exc:
        _undo(written)
        raise DataError(f"cannot write {exc.filename or folder}: {exc.strerror}") from None


def _report(folder: Path, typed: str, paths: list[Path], port: int) -> None:
    from rich.markup import escape

    from authctl.output import console

    out = console()
    out.print(f"Initialised {escape(str(folder))}:")
    what = (
        "the config",
        "the users file (empty)",
        "the storage key (keep it secret)",
        "the OpenID Connect issuer key (keep it secret)",
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


# --------------------------------------------------------------------------- --join

#: Config keys that name a secret file every host needs: (table, key).
SECRET_KEYS = (
    (("storage",), "encryption_key_file"),
    (("storage", "postgres"), "password_file"),
    (("session",), "redis_password_file"),
    (("notifier", "smtp"), "password_file"),
)

_JOIN_HEADER = """\
# authctl configuration of a host joined to {source} by `authctl init --join`.
# It reads the same users file and storage as that host (absolute paths below) and holds a
# copy of its secrets in secrets/. Keep [users], [storage], [session], [[session.cookies]]
# and secrets/ the same on every host. Comments of the original are not copied.
# See `man authctl.toml` for every key.

"""


def _join(existing: Path, directory: str, port: int | None) -> None:
    """Write DIRECTORY as another host of the host folder (or config file) ``existing``."""
    import tomli
    import tomli_w

    from authctl.cli import DataError
    from server.core.certs import CertificateError
    from server.core.certs import default_certificate_paths
    from server.core.certs import write_default_certificate
    from server.core.config import parse_config
    from server.core.tomlread import read_toml

    source = Path(os.path.abspath(existing.expanduser()))  # noqa: PTH100 - and normalised
    source_config = source / "authctl.toml" if source.is_dir() else source
    text, raw = read_toml(source_config)
    config = parse_config(text, raw, source_config)
    source_dir = source_config.parent
    folder = Path(directory).expanduser().absolute()
    if folder.resolve() == source_dir.resolve():
        raise click.BadParameter(
            f"{folder} is the folder of {source_config}; name another folder for the new host",
            param_hint="DIRECTORY",
        )
    if port is not None:
        _check_port(config, port)
    copies = _secret_copies(config, source_dir)
    secret_bytes: list[tuple[Path, bytes]] = []
    for dest, src in copies.items():
        try:
            secret_bytes.append((folder / dest, src.read_bytes()))
        except OSError as exc:
            raise DataError(
                f"cannot read the secret file {src} of {source_config}: {exc.strerror}; "
                "nothing was written"
            ) from None
    joined = _joined_config(raw, config, source_dir, copies)
    config_text = _JOIN_HEADER.format(source=source_config) + tomli_w.dumps(joined)
    target = folder / "authctl.toml"
    parse_config(config_text, tomli.loads(config_text), target)  # it loads as written
    plan: list[tuple[Path, str | bytes, int]] = [(target, config_text, 0o600)]
    plan += [(path, data, 0o600) for path, data in secret_bytes]
    cert_paths = list(default_certificate_paths(folder))
    refuse_existing([p for p, _, _ in plan] + cert_paths, "init")
    with all_or_nothing(folder) as written:
        folder.mkdir(parents=True, exist_ok=True)
        for path, data, mode in plan:
            _private_folders(folder, path.parent)
            _create(path, data, mode)
            written.append(path)
        from authctl.errors import reworded

        with reworded("{}; nothing was written", CertificateError):
            written += write_default_certificate(folder, _cert_hosts(config))
    _report_join(folder, directory, source_config, config, [p for p, _ in secret_bytes])


def _private_folders(root: Path, folder: Path) -> None:
    """Create ``folder`` and its parents below ``root`` mode 0700 (the secrets folder)."""
    missing = []
    while folder != root and not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700)
        path.chmod(0o700)


def _check_port(config: Config, port: int) -> None:
    """A joined host serves EXISTING's portal: an explicit --port must be that portal's port."""
    ports = sorted({urlsplit(c.portal_url).port or 443 for c in config.session.cookies})
    if ports != [port]:
        shown = ", ".join(str(p) for p in ports)
        raise click.BadParameter(
            f"the portal of the host you join is on port {shown}, and a joined host serves the "
            "same portal; leave --port out (or change portal_url in every host's config)",
            param_hint="--port",
        )


def _secret_copies(config: Config, source_dir: Path) -> dict[Path, Path]:
    """Where each secret lands below the new folder -> the file to copy.

    Every file under EXISTING's ``secrets/`` (the storage key, and whatever key files other
    features keep there), plus each secret file the config names elsewhere (as
    ``secrets/<name>``).
    """
    from authctl.cli import DataError

    secrets_dir = source_dir / "secrets"
    copies: dict[Path, Path] = {}
    if secrets_dir.is_dir():
        for path in sorted(secrets_dir.rglob("*")):
            if path.is_file():
                copies[Path("secrets") / path.relative_to(secrets_dir)] = path
    for path in _configured_secrets(config):
        if path.is_relative_to(secrets_dir):
            dest = Path("secrets") / path.relative_to(secrets_dir)
        else:
            dest = Path("secrets") / path.name
        if copies.get(dest, path) != path:
            raise DataError(
                f"{path} and {copies[dest]} would both be copied to {dest}; rename one of them"
            )
        copies[dest] = path
    return copies


def _configured_secrets(config: Config) -> list[Path]:
    """The secret files ``config`` names (set ones only)."""
    found: list[Path] = [config.storage.encryption_key_file]
    if config.storage.postgres is not None and config.storage.postgres.password_file:
        found.append(config.storage.postgres.password_file)
    if config.session.redis_password_file is not None:
        found.append(config.session.redis_password_file)
    if config.notifier.smtp is not None and config.notifier.smtp.password_file is not None:
        found.append(config.notifier.smtp.password_file)
    return found


def _joined_config(
    raw: dict[str, t.Any], config: Config, source_dir: Path, copies: dict[Path, Path]
) -> dict[str, t.Any]:
    """EXISTING's config with the shared paths absolute and the secrets at their copies."""
    import copy

    joined = copy.deepcopy(raw)
    joined.setdefault("users", {})["file"] = str(config.users.file)
    joined.setdefault("storage", {})["path"] = str(config.storage.path)
    dest_of = {src: dest for dest, src in copies.items()}
    values = {
        ("storage", "encryption_key_file"): config.storage.encryption_key_file,
        ("storage", "postgres", "password_file"): (
            config.storage.postgres.password_file if config.storage.postgres else None
        ),
        ("session", "redis_password_file"): config.session.redis_password_file,
        ("notifier", "smtp", "password_file"): (
            config.notifier.smtp.password_file if config.notifier.smtp else None
        ),
    }
    for (*tables, key), path in values.items():
        if path is None:
            continue
        table = joined
        for name in tables:
            table = table.setdefault(name, {})
        table[key] = str(dest_of[path])
    return joined


def _cert_hosts(config: Config) -> list[str]:
    """The portal hosts and cookie domains (and their wildcards) of ``config``."""
    hosts: list[str] = []
    for cookie in config.session.cookies:
        for host in (urlsplit(cookie.portal_url).hostname, f"*.{cookie.domain}", cookie.domain):
            if host and host not in hosts:
                hosts.append(host)
    return hosts


def join_notes(config: Config) -> list[str]:
    """What a joined host of ``config`` must know about sharing its state (SPEC §7.2)."""
    notes = []
    if config.storage.backend == "sqlite":
        notes.append(
            f"The storage is the SQLite file {config.storage.path}: hosts on this machine share "
            'it, but hosts on other machines need [storage] backend = "postgres" in every '
            "host's config (move the data first: authctl storage migrate --to postgres)."
        )
    if config.session.store == "sqlite":
        notes.append(
            "Sessions are in a SQLite file beside the storage: hosts on other machines need "
            '[session] store = "redis" in every host\'s config.'
        )
    elif config.session.store == "memory":
        notes.append(
            'Sessions are in memory ([session] store = "memory"): no two hosts share them; '
            'use store = "redis" (several machines) or "sqlite" (one machine).'
        )
    notes.append(
        f"The users file is {config.users.file}: every host must read that same path (a "
        "shared volume on several machines)."
    )
    return notes


def _report_join(
    folder: Path, typed: str, source: Path, config: Config, secret_paths: list[Path]
) -> None:
    from rich.markup import escape

    from authctl.output import console

    out = console()
    out.print(f"Joined {escape(str(folder))} to {escape(str(source))}:")
    target = folder / "authctl.toml"
    out.print(f"  {escape(_shown(target, folder, typed))}  [dim]the config[/dim]")
    for path in secret_paths:
        out.print(f"  {escape(_shown(path, folder, typed))}  [dim]a shared secret (copied)[/dim]")
    cert = default_cert(folder)
    out.print(f"  {escape(_shown(cert, folder, typed))}  [dim]this host's certificate[/dim]")
    out.print()
    for note in join_notes(config):
        out.print(escape(note))
    config_path = _shown(target, folder, typed)
    prefix = "authctl" if typed in (".", "") else f"authctl --config {shlex.quote(config_path)}"
    out.print()
    out.print("Next:")
    for command in (f"{prefix} rules check", f"{prefix} serve"):
        out.print(f"  {escape(command)}")


def default_cert(folder: Path) -> Path:
    """``folder``'s certificate file."""
    from server.core.certs import default_certificate_paths

    return default_certificate_paths(folder)[0]
