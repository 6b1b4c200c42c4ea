"""Edit the users file safely: one writer at a time, atomic replace, other entries untouched.

Every edit holds an exclusive ``fcntl.flock`` on ``users.toml.lock`` (a separate file: a lock on
the data file itself is lost once the file is renamed over) across read-modify-write, so twenty
concurrent ``authctl user add`` runs never lose an update. The new text goes to
``users.toml.tmp.<pid>`` in the same folder, is fsynced, renamed over the old file with
``os.replace`` and the folder is fsynced: the server (and a crash) only ever sees the old or the
new file, never half of one (security.md §2.J; Authelia's plain ``os.WriteFile`` has that race).

Only the edited user's ``[users.NAME]`` block is re-rendered (with tomli_w) and spliced into the
original text, so other users, comments and unknown keys stay byte-for-byte. The splice is then
parsed again and compared with the intended data; if they differ (an unusual layout such as
inline tables) the whole file is rewritten with tomli_w instead. The result is validated before
it is written: the CLI never writes a users file the server would refuse. No hashing happens
here: callers pass PHC strings.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import random
import re
import time
import typing as t
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from pathlib import Path

import tomli
import tomli_w

from server.core.errors import Problem
from server.core.errors import UserError
from server.core.errors import UserStoreError
from server.core.names import canonical_username
from server.core.names import check_username
from server.core.users import END_MARKER
from server.core.users import USER_KEYS
from server.core.users import User
from server.core.users import UserDatabase
from server.core.users import backup_path
from server.core.users import key_path
from server.core.users import load_users
from server.core.users import parse_users
from server.core.users import read_users_text

log = logging.getLogger("server.userfile")

Entry = dict[str, t.Any]
#: Receives the user's entry as read (None when absent) and returns the new one (None: delete).
Change = Callable[[Entry | None], Entry | None]

_SIMPLE_HEADER = re.compile(r"\s*\[\s*([A-Za-z0-9_-]+(?:\s*\.\s*[A-Za-z0-9_-]+)*)\s*\]\s*(?:#.*)?")
_MULTILINE_ARRAY = re.compile(r"^(\S[^\n]*?) = \[\n((?:    [^\n]*,\n)*)\]$", re.MULTILINE)
_LINE_LIMIT = 100


class UsersFile:
    """The users file at ``path``, read freely and edited under the lock.

    A symbolic link is followed, so the file it points to is replaced (not the link).
    """

    def __init__(self, path: Path, *, lock_timeout: float = 30.0) -> None:
        self.path = Path(os.path.realpath(path))
        self.lock_timeout = lock_timeout

    @property
    def lock_path(self) -> Path:
        """``users.toml.lock`` beside the file."""
        return self.path.with_name(self.path.name + ".lock")

    @property
    def backup_path(self) -> Path:
        """``users.toml.bak``: the last good copy, the file as this class last wrote it."""
        return backup_path(self.path)

    def read(self) -> UserDatabase:
        """Load and validate the file (readers need no lock: writes are atomic).

        Raises:
            UserStoreError: the file is missing, invalid, or emptied or cut short after
                authctl wrote it.
        """
        return load_users(self.path)

    def clean_stale_temp_files(self) -> list[Path]:
        """Remove temp files left by writers that were killed; returns what was removed.

        Only while holding the lock, which every writer holds as long as its temp file exists:
        so a live writer's temp file is never touched. When another writer holds the lock now,
        nothing is done (that writer cleans up before it writes).
        """
        if not self._stale_temp_files():
            return []  # the common case: no lock file created, nothing opened
        try:
            with self._locked(wait=False):
                return self._remove_stale_temp_files()
        except _Busy:
            return []
        except UserStoreError:
            return []  # the lock file cannot be created: this account cannot clean up either

    # ------------------------------------------------------------------ operations

    def add(
        self,
        name: str,
        *,
        password: str,
        displayname: str = "",
        email: str = "",
        groups: Iterable[str] = (),
        disabled: bool = False,
    ) -> User:
        """Add a user (stored under its canonical name); creates the file if it is missing.

        Raises:
            UserError: the name is invalid or the user exists already.
            UserStoreError: the file is invalid, or cannot be written.
        """
        canon = _canonical(name)

        def change(entry: Entry | None) -> Entry:
            if entry is not None:
                raise UserError(f"user {canon!r} already exists in {self.path}")
            return {
                "displayname": displayname,
                "password": password,
                "email": email,
                "groups": list(dict.fromkeys(groups)),
                "disabled": disabled,
            }

        return self._user(self.edit(name, change, create=True), canon)

    def remove(self, name: str) -> None:
        """Delete a user (and its unknown keys).

        Raises:
            UserError: no such user.
            UserStoreError: the file is invalid, or cannot be written.
        """
        self.edit(name, self._existing(name, lambda entry: None))

    def set_password(self, name: str, password: str) -> User:
        """Store a new PHC string for the user."""
        return self._set(name, password=password)

    def set_disabled(self, name: str, disabled: bool) -> User:
        """Disable (True) or enable (False) the user."""
        return self._set(name, disabled=disabled)

    def set_profile(
        self, name: str, *, displayname: str | None = None, email: str | None = None
    ) -> User:
        """Change the display name and/or e-mail address (None leaves a value alone)."""
        values = {"displayname": displayname, "email": email}
        return self._set(name, **{k: v for k, v in values.items() if v is not None})

    def set_groups(
        self,
        name: str,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        replace: Iterable[str] | None = None,
    ) -> User:
        """Change the user's groups: ``replace`` them, then ``remove`` some and ``add`` others.

        Order is kept; a group already present is not added twice.
        """
        canon = _canonical(name)
        add, remove = list(add), set(remove)
        new_list = None if replace is None else list(replace)

        def change(entry: Entry) -> Entry:
            current = entry.get("groups", [])
            if new_list is not None:
                base = new_list
            else:
                base = list(current) if isinstance(current, list) else []
            groups = [g for g in base if g not in remove]
            groups += [g for g in add if g not in groups]
            entry["groups"] = list(dict.fromkeys(groups))
            return entry

        return self._user(self.edit(name, self._existing(name, change)), canon)

    def _set(self, name: str, **values: object) -> User:
        canon = _canonical(name)

        def change(entry: Entry) -> Entry:
            entry.update(values)
            return entry

        return self._user(self.edit(name, self._existing(name, change)), canon)

    def _existing(self, name: str, change: Callable[[Entry], Entry | None]) -> Change:
        """Wrap ``change`` so that it refuses a user that is not in the file."""

        def wrapped(entry: Entry | None) -> Entry | None:
            if entry is None:
                raise UserError(
                    f"no user {_canonical(name)!r} in {self.path} "
                    "(list them with `authctl user list`)"
                )
            return change(entry)

        return wrapped

    def _user(self, db: UserDatabase, canon: str) -> User:
        user = db.get(canon)
        if user is None:  # pragma: no cover - the change just stored it
            raise UserStoreError([Problem(self.path, key_path("users", canon), "was not stored")])
        return user

    # ------------------------------------------------------------------ the transaction

    def edit(self, name: str, change: Change, *, create: bool = False) -> UserDatabase:
        """Apply ``change`` to user ``name`` under the lock, write the file, return the result.

        The entry is stored under the canonical name (a hand-written ``[users.Alice]`` becomes
        ``[users.alice]`` in place). ``create`` lets a missing or empty file start empty.

        Raises:
            UserError: the name is invalid, or ``change`` refused.
            UserStoreError: the file (or the result) is invalid, or cannot be written.
        """
        canon = _canonical(name)
        with self._locked():
            self._remove_stale_temp_files()
            text, data = self._load(create)
            raw_users = data.get("users", {})
            if not isinstance(raw_users, dict):
                parse_users(text, data, self.path)  # raises, naming the problem
                raise UserStoreError([Problem(self.path, "users", "expected a table")])
            matches = [key for key in raw_users if canonical_username(key) == canon]
            if len(matches) > 1:
                parse_users(text, data, self.path)  # raises: the names collide
            old_key = matches[0] if matches else None
            before = raw_users.get(old_key) if old_key is not None else None
            if before is not None and not isinstance(before, dict):
                parse_users(text, data, self.path)
            entry = change(dict(before) if isinstance(before, dict) else None)
            if entry is not None:
                entry = _ordered(entry)
            new_users: dict[str, t.Any] = {}
            for key, value in raw_users.items():
                if key != old_key:
                    new_users[key] = value
                elif entry is not None:
                    new_users[canon] = entry
            if old_key is None and entry is not None:
                new_users[canon] = entry
            new_data = (
                {**data, "users": new_users} if "users" in data else {"users": new_users, **data}
            )
            body = without_end_marker(text)
            new_text = with_end_marker(render(body, new_data, old_key, canon, entry))
            db = self._validate(text, data, new_text, new_data)
            self._write(new_text)
            self._write_backup(new_text)
            return db

    def _load(self, create: bool) -> tuple[str, dict[str, t.Any]]:
        """The file as ``(text, data)``; ``create``: a missing file that never held users is
        empty. An emptied or cut file that authctl wrote before is refused (data error)."""
        return read_users_text(self.path, missing_ok=create)

    def _validate(
        self, text: str, data: dict[str, t.Any], new_text: str, new_data: dict[str, t.Any]
    ) -> UserDatabase:
        """Validate the new content; explain problems against the file as it is on disk."""
        try:
            return parse_users(new_text, new_data, self.path)
        except UserStoreError as new_error:
            if text:
                # Problems that exist already are reported with their lines in the file on disk.
                parse_users(text, data, self.path)
            problems = [
                Problem(p.file, p.key, p.message, p.hint or "nothing was written")
                for p in new_error.problems
            ]
            raise UserStoreError(problems) from None

    @contextlib.contextmanager
    def _locked(self, *, wait: bool = True) -> Iterator[None]:
        """Hold the exclusive lock on ``users.toml.lock`` (polling, up to ``lock_timeout``).

        Raises:
            _Busy: ``wait`` is False and another writer holds the lock.
            UserStoreError: the lock file cannot be created, or the wait timed out.
        """
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise UserStoreError(
                [
                    Problem(
                        self.lock_path,
                        "",
                        f"cannot create the lock file: {exc.strerror}",
                        f"make sure the folder {self.path.parent} exists and this account can "
                        "write to it",
                    )
                ]
            ) from None
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not wait:
                        raise _Busy from None
                    if time.monotonic() >= deadline:
                        raise UserStoreError(
                            [
                                Problem(
                                    self.lock_path,
                                    "",
                                    f"still locked by another writer after {self.lock_timeout:g} s",
                                    "wait for the other authctl command to finish, then retry",
                                )
                            ]
                        ) from None
                    time.sleep(random.uniform(0.002, 0.02))  # noqa: S311 - jitter, not a secret
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _stale_temp_files(self) -> list[Path]:
        """``users.toml.tmp.<pid>`` and ``users.toml.bak.tmp.<pid>`` in the folder."""
        pattern = re.compile(re.escape(self.path.name) + r"(?:\.bak)?\.tmp\.[0-9]+")
        try:
            with os.scandir(self.path.parent) as entries:
                return [
                    Path(entry.path)
                    for entry in entries
                    if pattern.fullmatch(entry.name) and not entry.is_dir(follow_symlinks=False)
                ]
        except OSError:
            return []

    def _remove_stale_temp_files(self) -> list[Path]:
        """Under the lock: every temp file is a dead writer's (writers hold the lock while
        theirs exists), and it may hold password hashes. Remove them all."""
        removed = []
        for stale in self._stale_temp_files():
            try:
                stale.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot remove the stale temp file %s: %s", stale, exc.strerror)
                continue
            removed.append(stale)
        return removed

    def _write(self, text: str) -> None:
        """Write ``text`` atomically: temp file, fsync, rename, fsync the folder; mode 0600."""
        self._write_file(self.path, text)

    def _write_backup(self, text: str) -> None:
        """Keep ``text`` (just written and validated) as the last good copy, the same way.

        If that fails, an older copy is removed rather than left to be restored by mistake
        (it could re-enable a user this edit disabled).
        """
        try:
            self._write_file(self.backup_path, text)
        except UserStoreError as exc:
            log.warning("the last good copy %s was not updated: %s", self.backup_path, exc)
            with contextlib.suppress(OSError):
                self.backup_path.unlink()

    def _write_file(self, target: Path, text: str) -> None:
        """Write ``text`` to ``target`` atomically, mode 0600, keeping the users file's owner.

        The temp file is created with ``O_EXCL`` (never through a link planted at its name).
        """
        folder = target.parent
        tmp = folder / f"{target.name}.tmp.{os.getpid()}"
        try:
            owner = self.path.stat()
        except OSError:
            owner = None
        try:
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
            try:
                os.fchmod(fd, 0o600)
                if owner is not None and os.geteuid() == 0:
                    with contextlib.suppress(OSError):
                        os.fchown(fd, owner.st_uid, owner.st_gid)
                data = text.encode("utf-8")
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.replace(target)
        except BaseException as exc:
            if not (
                isinstance(exc, OSError) and exc.filename == str(tmp) and exc.errno == errno.EEXIST
            ):
                with contextlib.suppress(OSError):
                    tmp.unlink()
            if isinstance(exc, OSError) and exc.errno == errno.EBUSY:
                raise UserStoreError(
                    [
                        Problem(
                            self.path,
                            "",
                            "cannot be replaced (EBUSY): it is probably a single-file bind mount",
                            "mount the folder that holds the users file instead of the file itself",
                        )
                    ]
                ) from None
            if isinstance(exc, OSError):
                raise UserStoreError(
                    [
                        Problem(
                            target,
                            "",
                            f"cannot be written: {exc.strerror or exc}",
                            "nothing was changed" if target == self.path else "",
                        )
                    ]
                ) from None
            raise
        with contextlib.suppress(OSError):
            dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


class _Busy(Exception):
    """Another writer holds the lock (raised only when not waiting for it)."""


def _ordered(entry: Entry) -> Entry:
    """The entry with the known keys first, in :data:`USER_KEYS` order (``disabled`` first)."""
    known = {key: entry[key] for key in USER_KEYS if key in entry}
    return {**known, **{k: v for k, v in entry.items() if k not in known}}


def without_end_marker(text: str) -> str:
    """``text`` without its end-marker lines (the writer puts one back at the end)."""
    if END_MARKER not in text:
        return text
    lines = text.splitlines(keepends=True)
    kept = "".join(line for line in lines if line.strip() != END_MARKER)
    return kept.rstrip(" \t\r\n") + "\n" if kept.strip() else ""


def with_end_marker(text: str) -> str:
    """``text`` ending with one blank line and the end-marker line."""
    return text.rstrip(" \t\r\n") + "\n\n" + END_MARKER + "\n"


def _canonical(name: str) -> str:
    try:
        return check_username(name)
    except ValueError as exc:
        raise UserError(str(exc)) from None


# --------------------------------------------------------------------------- rendering


def render(
    text: str, data: dict[str, t.Any], old_key: str | None, new_key: str, entry: Entry | None
) -> str:
    """The new file text: ``text`` with one user's blocks spliced, or a full rewrite.

    ``data`` is the whole intended content; the splice is kept only if it parses back to it.
    """
    spliced = splice(text, old_key, new_key, entry)
    if spliced is not None:
        try:
            if tomli.loads(spliced) == data:
                return spliced
        except tomli.TOMLDecodeError:
            pass
    if text:
        log.warning("the layout of the users file could not be kept; it was rewritten in full")
    return _tidy(tomli_w.dumps(data))


def render_entry(key: str, entry: Entry) -> str:
    """``[users.KEY]`` and its keys (and sub-tables) as TOML text, short lists on one line."""
    return _tidy(tomli_w.dumps({"users": {key: entry}})).rstrip("\n") + "\n"


def _tidy(text: str) -> str:
    def one_line(found: re.Match[str]) -> str:
        items = [line.strip()[:-1] for line in found.group(2).splitlines()]
        joined = f"{found.group(1)} = [{', '.join(items)}]"
        return joined if len(joined) <= _LINE_LIMIT else found.group(0)

    return _MULTILINE_ARRAY.sub(one_line, text)


def _header_path(line: str) -> tuple[str, ...] | None:
    """The key path of a table header line, or None when the line is not one."""
    stripped = line.strip()
    if not stripped.startswith("["):
        return None
    simple = _SIMPLE_HEADER.fullmatch(line.rstrip("\r\n"))
    if simple:
        return tuple(part.strip() for part in simple.group(1).split("."))
    try:
        node: object = tomli.loads(stripped)
    except tomli.TOMLDecodeError:
        return None
    path: list[str] = []
    while isinstance(node, dict) and len(node) == 1:
        key, node = next(iter(node.items()))
        path.append(key)
    if node not in ({}, [{}]) or not path:
        return None
    return tuple(path)


def _headers(lines: list[str]) -> list[tuple[int, tuple[str, ...]]]:
    """``(line index, key path)`` of every table header, skipping multi-line strings."""
    found: list[tuple[int, tuple[str, ...]]] = []
    quote = ""
    for index, line in enumerate(lines):
        if quote:
            if line.count(quote) % 2 == 1:
                quote = ""
            continue
        path = _header_path(line)
        if path is not None:
            found.append((index, path))
            continue
        for mark in ('"""', "'''"):
            if line.count(mark) % 2 == 1:
                quote = mark
                break
    return found


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def splice(text: str, old_key: str | None, new_key: str, entry: Entry | None) -> str | None:
    """Replace, remove or append one user's tables in ``text``; None when it cannot.

    A block runs from its header to its last key line: comments and blank lines after it belong
    to what follows. A removed block takes the comment lines directly above its header with it.
    """
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    rendered = render_entry(new_key, entry).splitlines(keepends=True) if entry is not None else []
    if old_key is None:
        if entry is None:
            return text
        if not any(_is_content(line) for line in lines):
            lines.append("[users]\n")
        if lines and lines[-1].strip():
            lines.append("\n")
        return "".join(lines + rendered)
    headers = _headers(lines)
    blocks: list[tuple[int, int, int]] = []  # (first line to remove, header, end of content)
    for number, (index, path) in enumerate(headers):
        if path[:2] != ("users", old_key):
            continue
        stop = headers[number + 1][0] if number + 1 < len(headers) else len(lines)
        end = index + 1
        for j in range(index + 1, stop):
            if _is_content(lines[j]):
                end = j + 1
        start = index
        if number > 0:
            while start - 1 > headers[number - 1][0] and lines[start - 1].strip().startswith("#"):
                start -= 1
        blocks.append((start, index, end))
    if not blocks:
        return None
    for position, (start, index, end) in reversed(list(enumerate(blocks))):
        if position == 0 and entry is not None:
            lines[index:end] = rendered
            continue
        # Removed: drop the block, its attached comments and one blank line around it.
        if (
            end < len(lines)
            and not lines[end].strip()
            and (start == 0 or not lines[start - 1].strip())
        ):
            end += 1
        del lines[start:end]
    return "".join(lines)
