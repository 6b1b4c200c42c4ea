"""One finding of ``authctl doctor``: a name, ok/warn/fail, what was seen, and the fix."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Status(enum.StrEnum):
    """SPEC §7.4: a failed check exits 1; warnings alone exit 0."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report. ``fix`` is empty for an ok check."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        """The ``--json`` shape: ``{"name", "status", "detail", "fix"}``."""
        return {
            "name": self.name,
            "status": str(self.status),
            "detail": self.detail,
            "fix": self.fix,
        }


def ok(name: str, detail: str) -> Check:
    """A check that passed."""
    return Check(name, Status.OK, detail)


def warn(name: str, detail: str, fix: str) -> Check:
    """Something to look at that does not break sign-in (exit stays 0)."""
    return Check(name, Status.WARN, detail, fix)


def fail(name: str, detail: str, fix: str) -> Check:
    """Something that breaks sign-in or security (exit 1)."""
    return Check(name, Status.FAIL, detail, fix)


def exit_code(checks: Iterable[Check]) -> int:
    """0 when nothing failed, 1 otherwise (warnings alone exit 0)."""
    return 1 if any(c.status is Status.FAIL for c in checks) else 0
