"""The CLI's one error boundary: each root error class of the core has one exit code here.

``authctl.cli``'s group catches every ``AuthError`` once and prints it as click prints its own
errors (``Error: …`` on stderr). A command that must say more than the core's message (what
it was doing, which option was wrong) wraps the call in :func:`reworded` or
:func:`bad_parameter` instead of catching the error itself. Only click and
``server.core.errors`` are imported here, so ``authctl --help`` stays cheap.
"""

from __future__ import annotations

import contextlib
import enum
import typing as t

import click

from server.core.errors import AuthError
from server.core.errors import FileProblemError
from server.core.errors import InvalidTargetError
from server.core.errors import StoreUnavailable
from server.core.errors import UserError


class ExitCode(enum.IntEnum):
    """Process exit codes (SPEC §4)."""

    OK = 0
    CHECK_FAILED = 1
    USAGE = 2
    DATA_ERROR = 3


class DataError(click.ClickException):
    """A file cannot be read or is invalid, or the data forbids the request: exit 3."""

    exit_code = ExitCode.DATA_ERROR


class CheckFailed(click.ClickException):
    """A check found problems (lint errors, a failing policy test): exit 1."""

    exit_code = ExitCode.CHECK_FAILED


#: The one mapping, first match wins: a core error class and the exit code it ends a command
#: with. Every core error is about the data a command was given (a config or users file, a
#: store, a user, a target): exit 3; a usage error (exit 2) needs an option to name, so only
#: :func:`bad_parameter` makes one.
EXIT_CODES: tuple[tuple[type[Exception], ExitCode], ...] = (
    (FileProblemError, ExitCode.DATA_ERROR),  # config, users file, CASES.toml
    (UserError, ExitCode.DATA_ERROR),  # unknown or duplicate user
    (StoreUnavailable, ExitCode.DATA_ERROR),  # storage database, session store
    (InvalidTargetError, ExitCode.DATA_ERROR),  # a URL the server refuses
    (AuthError, ExitCode.DATA_ERROR),  # the rest of the core (certificates, notifier, …)
)


def exit_code(exc: Exception) -> ExitCode:
    """The exit code ``exc`` ends a command with (exit 3 for an error outside the table)."""
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return ExitCode.DATA_ERROR


def to_click(exc: Exception, message: str | None = None) -> click.ClickException:
    """``exc`` as the click exception that prints ``Error: <message>`` and exits with its code."""
    return _EXCEPTIONS[exit_code(exc)](str(exc) if message is None else message)


#: The click exception that exits with each code the table can give.
_EXCEPTIONS: dict[ExitCode, type[click.ClickException]] = {
    ExitCode.CHECK_FAILED: CheckFailed,
    ExitCode.USAGE: click.UsageError,
    ExitCode.DATA_ERROR: DataError,
}


@contextlib.contextmanager
def reworded(template: str, *classes: type[Exception]) -> t.Iterator[None]:
    """Let the errors of ``classes`` (default: every core error) end the command with
    ``template.format(error)`` as the message, e.g. ``"notifier: {}"`` or
    ``"{0.field}: {0.message}"``; the exit code still comes from :data:`EXIT_CODES`."""
    caught = classes or (AuthError,)
    try:
        yield
    except caught as exc:
        raise to_click(exc, template.format(exc)) from None


@contextlib.contextmanager
def bad_parameter(
    param_hint: str, *classes: type[Exception], template: str = "{}"
) -> t.Iterator[None]:
    """Turn the errors of ``classes`` (default: every core error) into a usage error (exit 2)
    about ``param_hint.format(error)``, with ``template.format(error)`` as the message."""
    caught = classes or (AuthError,)
    try:
        yield
    except caught as exc:
        raise click.BadParameter(template.format(exc), param_hint=param_hint.format(exc)) from None
