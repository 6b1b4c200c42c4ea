"""The config and every file it names: present, readable, private when secret; the users file
parses. Facts come from :func:`inspect` (the only I/O); :func:`judge_file` is pure."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from server.core.config import Config
from server.core.config import load_config
from server.core.doctor.check import Check
from server.core.doctor.check import fail
from server.core.doctor.check import ok
from server.core.doctor.check import warn
from server.core.errors import FileProblemError


@dataclass(frozen=True, slots=True)
class Named:
    """A file the config names: its key, path, what it is, and how private it must be.

    ``privacy``: "key" (a key or password: other accounts must not read it), "hashes" (the users
    file: a warning when others can read it), or "" (public)."""

    key: str
    path: Path
    what: str
    privacy: str = ""
    optional: bool = False


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What :func:`inspect` saw: the mode (None: no such file), whether it is a regular file
    and readable by this process, or the error met."""

    mode: int | None
    regular: bool = True
    readable: bool = True
    error: str = ""


def config_check(path: Path) -> tuple[Check, Config | None]:
    """Load the config; its problems (file, line, key, fix) are the detail of a failure."""
    name = "config"
    try:
        config = load_config(path)
    except FileProblemError as exc:
        hints = sorted({p.hint for p in exc.problems if p.hint})
        fix = "; ".join(hints) or f"fix {path} as the messages say"
        return fail(name, str(exc), fix), None
    return ok(name, f"{config.path} loads"), config


def named_files(config: Config) -> list[Named]:
    """Every file ``config`` names that authctl reads, in a fixed order."""
    files = [
        Named("storage.encryption_key_file", config.storage.encryption_key_file,
              "the storage key", "key"),
        Named("users.file", config.users.file, "the users file", "hashes"),
    ]  # fmt: skip
    postgres = config.storage.postgres
    if postgres is not None and postgres.password_file is not None:
        files.append(
            Named("storage.postgres.password_file", postgres.password_file,
                  "the PostgreSQL password", "key")
        )  # fmt: skip
    if config.session.redis_password_file is not None:
        files.append(
            Named("session.redis_password_file", config.session.redis_password_file,
                  "the Redis password", "key")
        )  # fmt: skip
    smtp = config.notifier.smtp
    if smtp is not None and smtp.password_file is not None:
        files.append(
            Named("notifier.smtp.password_file", smtp.password_file, "the SMTP password", "key")
        )
    # keys other parts of authctl may add ([portal] branding); named only when set
    portal = getattr(config, "portal", None)
    for attr, what in (("logo_file", "the portal logo"), ("custom_css_file", "the portal CSS")):
        value = getattr(portal, attr, None)
        if value:
            files.append(Named(f"portal.{attr}", Path(value), what))
    return files


def inspect(path: Path) -> FileFacts:
    """Stat ``path`` and try to open it for reading (the one I/O of this module)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return FileFacts(None)
    except OSError as exc:
        return FileFacts(None, error=exc.strerror or str(exc))
    if not stat.S_ISREG(st.st_mode):
        return FileFacts(st.st_mode, regular=False)
    return FileFacts(st.st_mode, readable=os.access(path, os.R_OK))


def judge_file(named: Named, facts: FileFacts) -> Check:
    """Present, a regular file, readable, and not readable by other accounts when secret."""
    name = f"file {named.key}"
    where = f"{named.what} {named.path}"
    if facts.mode is None:
        if facts.error:
            return fail(name, f"{where} cannot be read: {facts.error}", f"fix {named.key}")
        return fail(name, f"{where} does not exist", _create_hint(named))
    if not facts.regular:
        return fail(name, f"{where} is not a regular file", f"point {named.key} at a file")
    if not facts.readable:
        return fail(
            name,
            f"{where} cannot be read by this account",
            f"run doctor as the account authctl runs as, or chown that account {named.path}",
        )
    mode = stat.S_IMODE(facts.mode)
    if named.privacy and mode & 0o077:
        detail = f"{where} has mode {mode:04o}: other accounts can read or change it"
        fix = f"chmod 600 {named.path}"
        if named.privacy == "key" and mode & 0o007:
            return fail(name, detail, fix)
        return warn(name, detail, fix)
    return ok(name, f"{where} is present" + (f", mode {mode:04o}" if named.privacy else ""))


def _create_hint(named: Named) -> str:
    if named.key == "storage.encryption_key_file":
        return (
            "restore the key the database was made with; for a new installation run "
            "`authctl init` (it writes secrets/storage.key)"
        )
    if named.key == "users.file":
        return "create it with `authctl user add NAME`"
    return f"create {named.path}, or fix {named.key}"


def users_check(config: Config) -> Check:
    """The users file parses (every problem with its line), and has users."""
    from server.core.users import load_users

    name = "users file"
    try:
        users = load_users(config.users.file)
    except FileProblemError as exc:
        hints = sorted({p.hint for p in exc.problems if p.hint})
        return fail(name, str(exc), "; ".join(hints) or f"fix {config.users.file}")
    warnings = [str(w) for w in getattr(users, "warnings", ())]
    if warnings:
        return warn(name, "; ".join(warnings), "see the message")
    return ok(name, f"{config.users.file} parses: {len(users)} users")


def storage_folder_check(config: Config) -> Check | None:
    """SQLite: the folder of ``storage.path`` exists and can be written (WAL files, the
    session store beside it); None for PostgreSQL."""
    if config.storage.backend != "sqlite":
        return None
    folder = config.storage.path.parent
    name = "file storage.path"
    if not folder.is_dir():
        return fail(name, f"the folder {folder} of the database does not exist", f"mkdir {folder}")
    if not os.access(folder, os.W_OK):
        return fail(
            name,
            f"the folder {folder} of the database cannot be written by this account",
            f"let the account authctl runs as write {folder}",
        )
    return ok(name, f"the folder {folder} of the database can be written")
