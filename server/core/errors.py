"""The error hierarchy of the pure core, and nothing else.

Each error is translated at exactly one boundary: ``server.web.app`` maps them to HTTP answers,
``authctl.cli`` to exit codes and messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class AuthError(Exception):
    """Root of authctl's errors. Never raised directly."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a file: where it is, what is wrong, and how to fix it."""

    file: Path | None
    key: str
    message: str
    hint: str = ""
    line: int | None = None
    column: int | None = None
    severity: str = "error"

    def location(self) -> str:
        """``file:line:col`` as far as it is known."""
        parts = [str(self.file) if self.file is not None else "<input>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        key = f"{self.key}: " if self.key else ""
        text = f"{self.location()}: {key}{self.message}"
        if self.hint:
            text += f" (fix: {self.hint})"
        return text


class FileProblemError(AuthError, ValueError):
    """A file (config or users) cannot be read or is invalid. Carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class StoreUnavailable(AuthError):
    """A store (the session store, the storage database) cannot be used right now: down,
    unreachable, read-only, locked, full, or closed.

    The API answers 503 with ``public`` (never the details, which may name hosts and paths);
    authz endpoints refuse (never 200). ``part`` names the store for messages and health.
    """

    part = "store"

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        #: A short cause safe to show to anyone (``/api/health``), e.g. "disk full".
        self.reason = reason

    @property
    def public(self) -> str:
        """``"<part> unavailable[: reason]"``: what a client may be told."""
        return f"{self.part} unavailable" + (f": {self.reason}" if self.reason else "")


class ConfigError(FileProblemError):
    """The config file cannot be read or is invalid."""


class UserStoreError(FileProblemError):
    """The users file cannot be read, is invalid, or cannot be written."""


class UserError(AuthError, ValueError):
    """A user-level request cannot be done (unknown user, duplicate, bad name)."""


class InvalidCredentials(AuthError):
    """A password (or code) did not verify. Deliberately carries no detail."""


class TotpReplayError(InvalidCredentials):
    """A TOTP code for a time step that was already used."""


class Banned(InvalidCredentials):
    """The user or IP is banned by regulation; answered exactly like wrong credentials."""


class InvalidTargetError(AuthError, ValueError):
    """A forwarded target URL or path that must be refused (never a bypass)."""
