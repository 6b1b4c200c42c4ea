"""The users file: the ``User`` value, validation of ``users.toml``, and the server's live copy.

:func:`load_users` reads and validates the whole file (SPEC §2.2) and reports every problem with
the file, the key path (``users.alice.groups[1]``), the line and a fix. :class:`UsersSource`
is what the server holds: it re-reads the file when it changes and keeps the last good copy
when the new one is broken, so a half-edited file never locks everyone out or lets anyone in
(security.md §2.J). Writing lives in :mod:`server.core.userfile`; no hashing happens here.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import re
import stat
import threading
import time
import typing as t
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from server.core.blocking import check as check_blocking
from server.core.errors import Problem
from server.core.errors import UserStoreError
from server.core.names import canonical_username
from server.core.names import check_display_text
from server.core.names import check_group
from server.core.names import check_username
from server.core.passwords import HASH_FIX
from server.core.passwords import check_hash
from server.core.tomlpos import locate
from server.core.tomlread import ProblemReader
from server.core.tomlread import kind_of
from server.core.tomlread import read_toml

log = logging.getLogger("server.users")

#: The keys of a user entry, in the order they are written: the safety-relevant ones first, so
#: a file cut short can drop ``groups`` or ``email`` but never ``disabled = true`` alone (a cut
#: before ``password`` makes the entry invalid). Other keys are kept, not refused.
USER_KEYS = ("disabled", "password", "groups", "displayname", "email")
#: The comment line authctl's writer always puts last in the users file. Once authctl has
#: written the file (its last good copy ``users.toml.bak`` lies beside it), a file without this
#: line was cut short and is refused. See ``man 5 users.toml``, "TRUNCATION".
END_MARKER = "# end of users.toml (authctl)"
#: Unknown-key warnings reported per load; more are summed up in one line.
MAX_WARNINGS = 20

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


@dataclass(frozen=True, slots=True)
class User:
    """One account, validated. ``name`` is canonical (NFKC + casefold); ``password`` a PHC
    string: argon2id, or one of Authelia's legacy hashes (:mod:`server.core.legacy_hashes`)
    that the next sign-in rewrites as argon2id."""

    name: str
    password: str
    displayname: str = ""
    email: str = ""
    groups: tuple[str, ...] = ()
    disabled: bool = False
    #: Keys of the entry authctl does not know, as read (kept when the CLI rewrites the entry).
    extra: Mapping[str, object] = field(default_factory=dict, compare=False, repr=False)

    def as_json(self) -> dict[str, object]:
        """The public view (never the hash): what ``user list --json`` prints."""
        return {
            "username": self.name,
            "displayname": self.displayname,
            "email": self.email,
            "groups": list(self.groups),
            "disabled": self.disabled,
        }


class UserDatabase(Mapping[str, User]):
    """An immutable snapshot of the users file: canonical name -> :class:`User`.

    Lookups canonicalise their key, so ``db.get("ALICE")`` finds ``alice``; a name that is not
    a string finds nothing.
    """

    __slots__ = ("_users", "blank", "marked", "path", "warnings")

    def __init__(
        self,
        users: Iterable[User] = (),
        *,
        path: Path | None = None,
        warnings: Iterable[Problem] = (),
        marked: bool = False,
        blank: bool = False,
    ) -> None:
        self._users: dict[str, User] = {}
        for user in users:
            if user.name in self._users:
                raise ValueError(f"user {user.name!r} is listed twice")
            self._users[user.name] = user
        self.path = path
        self.warnings: tuple[Problem, ...] = tuple(warnings)
        #: The text had the end-marker line (see :data:`END_MARKER`).
        self.marked = marked
        #: The file was empty (no users because it never held any).
        self.blank = blank

    def __getitem__(self, name: str) -> User:
        if not isinstance(name, str):
            raise KeyError(name)
        return self._users[canonical_username(name)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._users)

    def __len__(self) -> int:
        return len(self._users)

    def __repr__(self) -> str:
        return f"<UserDatabase {len(self)} users from {self.path}>"

    @property
    def users(self) -> tuple[User, ...]:
        """Every user, in file order."""
        return tuple(self._users.values())


# --------------------------------------------------------------------------- validation


def key_path(*parts: str | int) -> str:
    """Join ``("users", "Al ice", "groups", 1)`` into ``users."Al ice".groups[1]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = part if _BARE_KEY.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
        out += f".{name}" if out else name
    return out


class _Checker(ProblemReader):
    """The shared TOML reader, with key paths given as parts (user names may need quotes)
    and unknown keys kept as warnings."""

    def __init__(self, path: Path | None, text: str) -> None:
        super().__init__(path, text)
        self.warnings: list[Problem] = []
        self._unknown = 0

    def _line(self, parts: tuple[str | int, ...]) -> int | None:
        # tomlpos reads dotted paths without quoting: locate a name with dots by its table.
        usable: list[str | int] = []
        for part in parts:
            if isinstance(part, str) and any(c in part for c in ".[]\"'"):
                break
            usable.append(part)
        if not usable:
            return None
        plain = ""
        for part in usable:
            plain += f"[{part}]" if isinstance(part, int) else (f".{part}" if plain else part)
        return locate(self.text, plain)

    def at(self, parts: tuple[str | int, ...], message: str, hint: str = "") -> None:
        """Record a problem at the key path ``parts``."""
        self.problems.append(Problem(self.path, key_path(*parts), message, hint, self._line(parts)))

    def unknown(self, parts: tuple[str | int, ...], known: tuple[str, ...]) -> None:
        self._unknown += 1
        if self._unknown > MAX_WARNINGS:
            return
        name = str(parts[-1])
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        hint = f"did you mean {close[0]!r}? " if close else ""
        self.warnings.append(
            Problem(
                self.path,
                key_path(*parts),
                f"unknown key {name!r} is kept but not used",
                hint + f"authctl reads {', '.join(known)}",
                self._line(parts),
                severity="warning",
            )
        )

    def finish_warnings(self) -> list[Problem]:
        if self._unknown > MAX_WARNINGS:
            more = self._unknown - MAX_WARNINGS
            self.warnings.append(
                Problem(self.path, "users", f"… and {more} more unknown keys", severity="warning")
            )
        return self.warnings


def _text(c: _Checker, entry: dict[str, t.Any], parts: tuple[str | int, ...], name: str) -> str:
    raw = entry.get(name, "")
    here = (*parts, name)
    if not isinstance(raw, str):
        c.at(here, f"expected a string, got {kind_of(raw)}", f'write {name} = "…"')
        return ""
    try:
        check_display_text(raw, f"the {name} of user {parts[-1]!r}")
    except ValueError as exc:
        c.at(
            here,
            str(exc),
            "keep it on one line, without control or invisible formatting characters",
        )
        return ""
    return raw


def _user(c: _Checker, key: str, entry: object) -> User | None:
    parts: tuple[str | int, ...] = ("users", key)
    if not isinstance(entry, dict):
        c.at(parts, f"expected a table, got {kind_of(entry)}", f"write it as [{key_path(*parts)}]")
        return None
    before = len(c.problems)
    try:
        name = check_username(key)
    except ValueError as exc:
        c.at(parts, str(exc), "rename the entry")
        name = ""
    password = entry.get("password")
    fix = HASH_FIX.replace("NAME", name or "NAME")
    if password is None:
        c.at((*parts, "password"), "is required (a password hash, e.g. argon2id)", fix)
    elif (reason := check_hash(password)) is not None:
        c.at((*parts, "password"), f"the password of user {name or key!r} {reason}", fix)
    displayname = _text(c, entry, parts, "displayname")
    email = _text(c, entry, parts, "email")
    if email and not _EMAIL.fullmatch(email):
        c.at((*parts, "email"), f"{email!r} is not an e-mail address", 'write "name@example.com"')
    groups: list[str] = []
    raw_groups = entry.get("groups", [])
    if not isinstance(raw_groups, list):
        c.at(
            (*parts, "groups"),
            f"expected a list of strings, got {kind_of(raw_groups)}",
            'write groups = ["admins", "dev"]',
        )
        raw_groups = []
    for i, group in enumerate(raw_groups):
        if not isinstance(group, str):
            c.at(
                (*parts, "groups", i), f"expected a string, got {kind_of(group)}", 'quote it: "dev"'
            )
            continue
        try:
            check_group(group)
        except ValueError as exc:
            c.at((*parts, "groups", i), str(exc), "rename the group")
            continue
        if group not in groups:
            groups.append(group)
    disabled = entry.get("disabled", False)
    if not isinstance(disabled, bool):
        c.at(
            (*parts, "disabled"),
            f"expected true or false, got {kind_of(disabled)}",
            "write disabled = true or disabled = false (no quotes)",
        )
    extra = {k: v for k, v in entry.items() if k not in USER_KEYS}
    for unknown in extra:
        c.unknown((*parts, unknown), USER_KEYS)
    if len(c.problems) != before or not isinstance(password, str):
        return None
    return User(
        name=name,
        password=password,
        displayname=displayname,
        email=email,
        groups=tuple(groups),
        disabled=disabled is True,
        extra=extra,
    )


def parse_users(text: str, data: Mapping[str, t.Any], path: Path | None = None) -> UserDatabase:
    """Validate parsed TOML ``data`` (from ``text``) into a :class:`UserDatabase`.

    Raises:
        UserStoreError: with every problem found (file, key path, line, fix).
    """
    c = _Checker(path, text)
    for top in data:
        if top != "users":
            c.unknown((top,), ("users",))
    raw_users = data.get("users")
    users: list[User] = []
    if raw_users is None:
        c.at(("users",), "no [users] table", "start with [users], then [users.NAME] tables")
    elif not isinstance(raw_users, dict):
        c.at(("users",), f"expected a table, got {kind_of(raw_users)}", "write it as [users]")
    else:
        seen: dict[str, str] = {}
        for key, entry in raw_users.items():
            user = _user(c, key, entry)
            canon = user.name if user is not None else canonical_username(key)
            if canon in seen:
                c.at(
                    ("users", key),
                    f"{key!r} and {seen[canon]!r} are both the user {canon!r} (names are compared "
                    "after NFKC and case folding)",
                    "keep one of the two entries",
                )
                continue
            seen[canon] = key
            if user is not None:
                users.append(user)
    if c.problems:
        raise UserStoreError(c.problems)
    return UserDatabase(users, path=path, warnings=c.finish_warnings(), marked=has_end_marker(text))


# --------------------------------------------------------------------------- truncation


def has_end_marker(text: str) -> bool:
    """True when a line of ``text`` is the end marker (hand-added users may follow it)."""
    return END_MARKER in text and any(line.strip() == END_MARKER for line in text.splitlines())


def backup_path(path: Path) -> Path:
    """``users.toml.bak``: the last good copy authctl wrote, beside the real file (a symbolic
    link is followed, as the writer follows it)."""
    real = Path(os.path.realpath(path))
    return real.with_name(real.name + ".bak")


def _backup_count(backup: Path) -> int | None:
    """How many users the last good copy holds (None when it is unreadable)."""
    try:
        text, data = read_toml(backup, error=UserStoreError)
        return len(parse_users(text, data, backup))
    except (UserStoreError, OSError):
        return None


def _held(backup: Path) -> str:
    count = _backup_count(backup)
    if count is None:
        return f"its last good copy {backup}"
    return f"its last good copy {backup} ({count} user{'' if count == 1 else 's'})"


def _restore(path: Path, backup: Path) -> str:
    return f"restore it with `cp -p {backup} {path}`"


def _missing(path: Path) -> UserStoreError:
    backup = backup_path(path)
    if backup.exists():
        return UserStoreError(
            [
                Problem(
                    path,
                    "",
                    f"file not found, but authctl wrote it before: {_held(backup)} is kept",
                    f"{_restore(path, backup)}; or, to start a new users file, delete {backup} "
                    "and run `authctl user add NAME`",
                )
            ]
        )
    return UserStoreError(
        [
            Problem(
                path,
                "",
                "file not found",
                "create it with `authctl user add NAME` (or fix users.file in the config)",
            )
        ]
    )


def _emptied(path: Path, backup: Path) -> UserStoreError:
    return UserStoreError(
        [
            Problem(
                path,
                "",
                f"is empty, but it held users: {_held(backup)} is kept; the file was probably "
                "truncated (an empty file is read as no users only if authctl never wrote it)",
                f"{_restore(path, backup)}; to really remove every user, run "
                "`authctl user remove NAME` for each",
            )
        ]
    )


def _cut(path: Path, backup: Path) -> Problem:
    return Problem(
        path,
        "",
        f"does not have the end-marker line {END_MARKER!r} that authctl writes last: it was "
        f"probably cut short ({_held(backup)} is kept)",
        f"compare it with the last good copy and {_restore(path, backup)}; if the file is "
        f"complete (edited by hand), add the line {END_MARKER!r} at its end, or delete {backup} "
        "to stop this check",
    )


def read_users_text(path: Path, *, missing_ok: bool = False) -> tuple[str, dict[str, t.Any]]:
    """Read the users file as ``(text, data)``, refusing a file that was emptied or cut short.

    An empty file is ``("", {})`` (no users) only when authctl never wrote it (no
    ``users.toml.bak`` beside it); so is a missing one when ``missing_ok``. Once authctl has
    written the file, it must have the end-marker line (see :data:`END_MARKER`).

    Raises:
        UserStoreError: the file is missing, unreadable, invalid TOML, emptied or cut short.
    """
    backup = backup_path(path)
    raw: bytes | None
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if missing_ok and not backup.exists():
            return "", {}
        raise _missing(path) from None
    except OSError:
        raw = None  # read_toml tries again and explains
    if raw is not None and not raw.strip():
        if backup.exists():
            raise _emptied(path, backup)
        return "", {}
    try:
        # one read: the emptiness and end-marker verdicts are about the bytes that are parsed
        text, data = read_toml(path, error=UserStoreError, raw=raw)
    except UserStoreError as exc:
        if backup.exists() and (raw is None or END_MARKER.encode() not in raw):
            raise UserStoreError([*exc.problems, _cut(path, backup)]) from None
        raise
    if not has_end_marker(text) and backup.exists():
        raise UserStoreError([_cut(path, backup)])
    return text, data


def empty_warning(path: Path) -> Problem:
    """The warning for an empty users file that never held users."""
    return Problem(
        path,
        "",
        "is empty: there are no users, so nobody can sign in",
        "add one with `authctl user add NAME`",
        severity="warning",
    )


def load_users(path: Path) -> UserDatabase:
    """Read and validate the users file at ``path``.

    An empty file is no users (with a warning) only if authctl never wrote it; after that an
    empty file, or one without the end-marker line, was truncated and is an error, so a cut
    file never looks like "fewer users" (see :func:`read_users_text`). A file with just
    ``[users]`` is a valid, empty database.

    Raises:
        UserStoreError: the file is missing, unreadable or invalid; every problem is listed.
    """
    text, data = read_users_text(path)
    if not text:
        return UserDatabase(path=path, warnings=[empty_warning(path)], blank=True)
    return parse_users(text, data, path)


def mode_warning(path: Path) -> Problem | None:
    """A warning when the users file can be read by other accounts (it holds password hashes)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if mode & 0o077:
        return Problem(
            path,
            "",
            f"has mode {mode:04o}: other accounts can read the password hashes",
            f"chmod 600 {path}",
            severity="warning",
        )
    return None


# --------------------------------------------------------------------------- the live copy


Signature = tuple[int, int, int]
#: A file whose mtime is this recent may change again within the file system's timestamp
#: granularity without changing its signature, so its content is compared too (git's "racy
#: clean" problem).
RACY_SECONDS = 2.0


def _signature(path: Path) -> Signature:
    st = path.stat()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _signature_or_none(path: Path) -> Signature | None:
    try:
        return _signature(path)
    except OSError:
        return None


def _digest_or_none(path: Path) -> bytes | None:
    try:
        return hashlib.blake2b(path.read_bytes(), digest_size=16).digest()
    except OSError:
        return None


class UsersSource:
    """The server's view of the users file: always the last good snapshot.

    :meth:`current` checks the file's ``(st_ino, st_mtime_ns, st_size)`` at most every
    ``interval`` seconds of ``now`` and re-reads it when that changed, so an edit (by the CLI or
    by hand) is seen within a second (SPEC §3.3). While the modification time is recent, the
    content is compared as well, because two in-place writes within one timestamp tick can
    leave the signature unchanged. A broken or missing new file keeps the previous snapshot, is
    logged at ERROR and shows in :attr:`problem` (health: degraded); the server never sees "no
    users" or a half-written file because of it. The first load happens in the constructor and
    raises, so a server with a broken users file does not start.
    """

    def __init__(
        self,
        path: Path,
        *,
        watch: bool = True,
        interval: float = 0.25,
        now: Callable[[], float] = time.monotonic,
        loader: Callable[[Path], UserDatabase] = load_users,
    ) -> None:
        """Load ``path`` once.

        Raises:
            UserStoreError: the file is missing or invalid at startup.
        """
        self.path = path
        self.watch = watch
        self.interval = interval
        self._now = now
        self._loader = loader
        self._lock = threading.Lock()
        _clean_stale_temp_files(path)
        self._signature = _signature_or_none(path)
        self._digest = _digest_or_none(path)
        self._db = loader(path)
        self._problem: UserStoreError | None = None
        self._next_check = now() + interval
        #: Counts the snapshots taken after the first one (caches keyed on it can tell).
        self.generation = 0
        _log_warnings(self._db)

    @property
    def problem(self) -> UserStoreError | None:
        """Why the newest file on disk is not in use (None when the snapshot is current)."""
        return self._problem

    def current(self) -> UserDatabase:
        """The users to answer with now; re-reads the file when it changed.

        Cheap on the hot path: one clock call, and a ``stat`` at most every ``interval``. While
        one thread re-reads, the others keep answering from the previous snapshot.
        """
        if self.watch and self._now() >= self._next_check:
            check_blocking()  # a stat, maybe a re-read: for a thread-pool thread
            if self._lock.acquire(blocking=False):
                try:
                    if self._now() >= self._next_check:
                        self._check(force=False)
                        self._next_check = self._now() + self.interval
                finally:
                    self._lock.release()
        return self._db

    def reload(self) -> bool:
        """Read the file now, changed or not; True when a new snapshot was taken.

        A broken file keeps the last good snapshot here too (see :attr:`problem`).
        """
        with self._lock:
            before = self.generation
            self._check(force=True)
            self._next_check = self._now() + self.interval
            return self.generation != before

    def refresh(self) -> bool:
        """Re-read the file now if it changed (a ``stat``); True when a new snapshot was taken.

        For a verdict that would end something for good (a session found stale): another
        process may have written the file within this one's ``interval``, and judging on the
        older snapshot would destroy a session the newer file allows (a sign-in on another
        worker right after ``user enable``).
        """
        if not self.watch:
            return False
        check_blocking()
        with self._lock:
            before = self.generation
            self._check(force=False)
            self._next_check = self._now() + self.interval
            return self.generation != before

    def _changed(self, signature: Signature | None) -> bool:
        if signature != self._signature:
            return True
        if signature is None or abs(time.time() - signature[1] / 1e9) >= RACY_SECONDS:
            return False
        return _digest_or_none(self.path) != self._digest

    def _check(self, *, force: bool) -> None:
        signature = _signature_or_none(self.path)
        if not force and not self._changed(signature):
            return
        # Remember what was read even when it is broken: it is reported once, and read again as
        # soon as it changes again.
        self._signature = signature
        self._digest = _digest_or_none(self.path)
        try:
            db = self._loader(self.path)
        except UserStoreError as exc:
            self._problem = exc
            log.error(
                "users file %s is invalid; still using the last good copy (%d users): %s",
                self.path,
                len(self._db),
                exc,
            )
            return
        except Exception as exc:  # fail closed: keep serving the last good copy
            self._problem = UserStoreError([Problem(self.path, "", f"cannot be read: {exc}")])
            log.exception("users file %s cannot be read; still using the last good copy", self.path)
            return
        if db.blank and len(self._db):
            # An editor that truncates before it writes, or `> users.toml`: never "no users".
            self._problem = UserStoreError(
                [
                    Problem(
                        self.path,
                        "",
                        f"is empty, but the copy in use has {len(self._db)} users: it was "
                        "probably truncated",
                        "write the users back (or `[users]` alone to remove every user)",
                    )
                ]
            )
            log.error(
                "users file %s is empty; still using the last good copy (%d users): %s",
                self.path,
                len(self._db),
                self._problem,
            )
            return
        self._db = db
        self._problem = None
        self.generation += 1
        log.info("users file %s reloaded: %d users", self.path, len(db))
        _log_warnings(db)


def _clean_stale_temp_files(path: Path) -> None:
    """At server start, remove temp files (with password hashes) left by a killed writer."""
    from server.core.userfile import UsersFile  # userfile imports this module

    try:
        removed = UsersFile(path).clean_stale_temp_files()
    except Exception:  # never keep the server from starting over a clean-up
        log.exception("cannot clean stale temp files beside %s", path)
        return
    for stale in removed:
        log.warning("removed %s, left behind by a users-file writer that was killed", stale)


def _log_warnings(db: UserDatabase) -> None:
    for warning in db.warnings:
        log.warning("%s", warning)
