"""The audit log (``[log] audit_file``, SPEC §7.4): one JSON object per security event.

Each line is ``{"ts", "event", "user", "ip", "result", "reason"}``: ``ts`` RFC 3339 UTC to the
millisecond, ``event`` one of :data:`EVENTS`, ``result`` one of :data:`RESULTS`, ``reason`` one
of :data:`REASONS`. The API takes only these fields, and ``event``, ``result`` and ``reason``
come from fixed vocabularies (anything else is a programming error, raised), so no password,
code, token or session id can reach the file; ``user`` is a user name (as typed, for a failed
sign-in: escaped like every value by ``server.core.logs.json_line``, so it can never pose as
another field or line) and ``ip`` the client address (``"cli"`` for ``authctl`` commands).

The file is opened ``O_APPEND`` and created 0600; every event is ONE ``write`` of one line
(bounded: :data:`MAX_FIELD` characters a field), under a lock, so the threads of a process
and the ``--workers`` processes sharing the file never interleave partial lines, and nothing
waits in a buffer. SIGHUP (``server.core.hup``) reopens the path, so logrotate's
move-then-HUP works. A failed write (a full disk, a file made unwritable) never fails the
sign-in that caused it: it is logged when writing starts failing and when it works again
(``server.core.outage``), not once per event. A line a full disk cut short is ended by a
newline at the next write that works, so the events after it stay one per line.

``configure(path)`` (by ``make_app``) sets the process's log that :func:`emit` writes to; with
no path it is a no-op. ``authctl`` commands that change security state use :func:`for_cli`.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from datetime import UTC
from datetime import datetime
from pathlib import Path

from server.core import hup
from server.core.errors import AuthError
from server.core.logs import json_line
from server.core.outage import Outage

log = logging.getLogger("authctl.audit")

#: The event names of SPEC §7.4 (the last six for the issues that add what they name).
EVENTS = frozenset(
    {
        "login",
        "login_failed",
        "second_factor",
        "second_factor_failed",
        "ban",
        "logout",
        "session_revoked",
        "password_changed",
        "password_reset",
        "totp_added",
        "totp_removed",
        "config_reload",
        "webauthn_added",
        "webauthn_removed",
        "token_created",
        "token_revoked",
        "oidc_consent",
    }
)
RESULTS = frozenset({"success", "failure"})
#: Why, in words from this list only (never a value a client sent).
REASONS = frozenset(
    {
        "password",  # signed in with the password (first factor)
        "wrong_credentials",  # wrong password, unknown or disabled user, banned or busy
        "totp",  # a TOTP code (second factor)
        "webauthn",  # a security key or passkey assertion (second factor)
        "passkey",  # signed in with a passkey alone (first factor, or both with UV)
        "wrong_assertion",  # a refused WebAuthn assertion (wrong, replayed, foreign, cloned)
        "wrong_code",  # a wrong or replayed code
        "malformed_code",  # not the configured number of digits
        "banned",  # refused: the user or the address is banned
        "too_many_failures",  # a ban made by regulation
        "ban_cleared",  # a ban lifted with ``authctl bans clear``
        "user",  # done by the user, signed in, at the portal
        "admin",  # done with ``authctl`` (ip "cli")
        "password_changed",  # sessions ended because the password changed
        "link_sent",  # a password reset link was mailed
        "link_accepted",  # a reset link was opened (the browser may set the password)
        "link_invalid",  # an expired, used, revoked or forged reset link
        "link_revoked",  # the user killed an unused reset link ("it was not me")
        "reset_link",  # a password set through a reset link
        "reloaded",  # the config file was read again and is in force
        "invalid_config",  # a reload refused: the file does not validate
        "not_applied",  # a reload refused: valid, but it could not be put in force
    }
)
#: The longest ``user`` or ``ip`` written (characters); longer values are cut.
MAX_FIELD = 256


class AuditError(AuthError):
    """The audit file cannot be opened: ``serve`` (or the command) refuses to run."""


def entry(
    event: str, *, user: str | None, ip: str | None, result: str, reason: str, now: float
) -> dict[str, object]:
    """The JSON object of one event; an unknown event, result or reason is a bug: raised."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    if result not in RESULTS:
        raise ValueError(f"unknown audit result {result!r}")
    if reason not in REASONS:
        raise ValueError(f"unknown audit reason {reason!r}")
    ts = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    return {
        "ts": ts.replace("+00:00", "Z"),
        "event": event,
        "user": (user or "")[:MAX_FIELD],
        "ip": (ip or "")[:MAX_FIELD],
        "result": result,
        "reason": reason,
    }


def line(
    event: str, *, user: str | None, ip: str | None, result: str, reason: str, now: float
) -> bytes:
    """One event as the bytes of one line (escaped: no raw control or separator)."""
    fields = entry(event, user=user, ip=ip, result=result, reason=reason, now=now)
    return (json_line(fields) + "\n").encode("utf-8", "backslashreplace")


def open_file(path: Path, *, warn: bool = True) -> int:
    """``path`` opened for appending, created 0600; a file others may read is warned about.

    Raises:
        AuditError: it cannot be opened (the message names the path and the fix).
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise AuditError(
            f"log.audit_file {path}: cannot be opened for appending: {exc.strerror or exc} "
            "(fix: create its folder and make it writable for authctl's user, or set "
            'audit_file = "")'
        ) from None
    mode = os.fstat(fd).st_mode
    if warn and stat.S_ISREG(mode) and mode & 0o077:
        log.warning(
            "log.audit_file %s has mode %04o: other users may read it (fix: chmod 600 %s)",
            path,
            stat.S_IMODE(mode),
            path,
        )
    return fd


class AuditLog:
    """Appends events to one file; reopens it on :meth:`reopen` (SIGHUP)."""

    def __init__(
        self, path: Path, *, now: Callable[[], float] = time.time, warn: bool = True
    ) -> None:
        self.path = path
        self._now = now
        self._lock = threading.Lock()
        self._fd: int | None = open_file(path, warn=warn)
        #: The last write was cut short: the file does not end with a newline.
        self._cut = False
        self.outage = Outage(f"audit log {path}", log)

    def emit(
        self, event: str, *, user: str | None, ip: str | None, result: str, reason: str
    ) -> None:
        """Append one event. Never raises for a write that fails (see the module doc)."""
        data = line(event, user=user, ip=ip, result=result, reason=reason, now=self._now())
        with self._lock:
            if self._fd is None:
                return
            failure = self._write(self._fd, data)
        if failure is None:
            self.outage.ok()
        else:
            self.outage.failed(failure)

    def _write(self, fd: int, data: bytes) -> OSError | None:
        """One ``write`` of ``data`` (after a newline that ends a line a full disk cut);
        the error, if any. Called under the lock."""
        out = b"\n" + data if self._cut else data
        try:
            written = os.write(fd, out)
        except OSError as exc:
            return exc
        if written == len(out):
            self._cut = False
            return None
        if written:
            self._cut = not out[:written].endswith(b"\n")
        return OSError(errno.ENOSPC, f"only {written} of {len(out)} bytes written (disk full?)")

    def reopen(self) -> None:
        """Open the path again (logrotate moved the file away); on failure keep the old one."""
        try:
            fd = open_file(self.path)
        except AuditError as exc:
            log.error("%s; still writing to the file opened before", exc)
            return
        with self._lock:
            old, self._fd, self._cut = self._fd, fd, False
        if old is not None:
            os.close(old)
        log.info("audit log reopened: %s", self.path)

    def close(self) -> None:
        """Close the file; later events are dropped."""
        with self._lock:
            old, self._fd = self._fd, None
        if old is not None:
            os.close(old)


class NullAuditLog:
    """No ``audit_file``: events go nowhere (but are still checked against the vocabulary)."""

    path: Path | None = None

    def emit(
        self, event: str, *, user: str | None, ip: str | None, result: str, reason: str
    ) -> None:
        entry(event, user=user, ip=ip, result=result, reason=reason, now=0.0)

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


_current: AuditLog | NullAuditLog = NullAuditLog()
_unhook: list[Callable[[], None]] = []
_configure_lock = threading.Lock()


def configure(path: Path | None) -> AuditLog | NullAuditLog:
    """Make ``path`` this process's audit log (None: none), reopened on SIGHUP.

    The same path again keeps the open file; another one opens it before closing the old.

    Raises:
        AuditError: the file cannot be opened (the previous log stays in place).
    """
    global _current
    with _configure_lock:
        if path == _current.path:
            return _current
        new: AuditLog | NullAuditLog = AuditLog(path) if path is not None else NullAuditLog()
        old, _current = _current, new
        for remove in _unhook:
            remove()
        _unhook[:] = [hup.on_hangup(new.reopen)] if path is not None else []
    old.close()
    return new


def _after_fork_in_child() -> None:
    """A lock some thread of the parent held at fork time would never be released here."""
    global _configure_lock
    _configure_lock = threading.Lock()
    if isinstance(_current, AuditLog):
        _current._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def current() -> AuditLog | NullAuditLog:
    """The process's audit log (a no-op one when ``audit_file`` is off)."""
    return _current


def emit(event: str, *, user: str | None, ip: str | None, result: str, reason: str) -> None:
    """Append one event to the process's audit log (see :func:`configure`)."""
    _current.emit(event, user=user, ip=ip, result=result, reason=reason)


class CliAudit:
    """The audit log of one ``authctl`` command: checked before the command changes anything
    (an unusable file stops it first), then opened, written and closed for each event, with
    ``ip`` "cli"."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            os.close(open_file(path))

    def emit(
        self,
        event: str,
        *,
        user: str | None,
        ip: str | None = "cli",
        result: str = "success",
        reason: str = "admin",
    ) -> None:
        """Append one event as done by ``authctl`` (``ip`` "cli", except for a ban: the
        address banned); a failure is logged, not raised (the change is made already)."""
        if self.path is None:
            NullAuditLog().emit(event, user=user, ip=ip, result=result, reason=reason)
            return
        try:
            audit = AuditLog(self.path, warn=False)
        except AuditError as exc:
            log.error("%s; event %s not written", exc, event)
            return
        try:
            audit.emit(event, user=user, ip=ip, result=result, reason=reason)
        finally:
            audit.close()


def for_cli(path: Path | None) -> CliAudit:
    """The audit log for a command (see :class:`CliAudit`).

    Raises:
        AuditError: the file cannot be opened.
    """
    return CliAudit(path)
