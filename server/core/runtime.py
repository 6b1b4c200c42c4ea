"""The files ``authctl serve`` needs beyond the config: one check, two severities.

``rules check`` reports these as warnings (the config itself is fine; SPEC §4) and ``serve``
refuses to start on them. Both ask :func:`runtime_files`, so they cannot disagree: a
directory where a file is expected is a problem for both, not "exists" for one and "not
found" for the other.
"""

from __future__ import annotations

import os
import stat
import typing as t
from dataclasses import dataclass
from pathlib import Path

if t.TYPE_CHECKING:
    from server.core.config import Config


@dataclass(frozen=True, slots=True)
class FileProblem:
    """A file ``serve`` needs that is not usable: which key names it, what it is, what is
    wrong and how to fix it."""

    key: str
    path: Path
    what: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what} {self.problem} ({self.key}; {self.fix})"


def _needed(config: Config) -> list[tuple[str, Path, str, str]]:
    """(key, path, what it is, how to create it) for every file ``serve`` reads at start."""
    wanted = [
        (
            "storage.encryption_key_file",
            config.storage.encryption_key_file,
            "the storage key",
            "create it with `authctl init`",
        ),
        (
            "users.file",
            config.users.file,
            "the users file",
            "create it with `authctl user add NAME`",
        ),
    ]
    smtp = config.notifier.smtp
    if smtp is not None and smtp.password_file is not None:
        wanted.append(
            (
                "notifier.smtp.password_file",
                smtp.password_file,
                "the SMTP password",
                "write the SMTP password into it",
            )
        )
    return wanted


def _problem(path: Path) -> str | None:
    """What makes ``path`` unusable as a file to read, or None."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "does not exist"
    except NotADirectoryError:
        return "does not exist (a folder on its path is a file)"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    if not os.access(path, os.R_OK):
        return "cannot be read: permission denied"
    return None


def runtime_files(config: Config) -> list[FileProblem]:
    """Every file ``serve`` needs that is missing or unusable, in a fixed order."""
    out = []
    for key, path, what, create in _needed(config):
        problem = _problem(path)
        if problem is not None:
            fix = create if problem.startswith("does not exist") else f"fix {key} or {path}"
            out.append(FileProblem(key, path, what, problem, fix))
    return out


def runtime_problems(config: Config) -> list[str]:
    """The same problems as one line each, for ``serve``'s refusal to start."""
    return [str(p) for p in runtime_files(config)]
