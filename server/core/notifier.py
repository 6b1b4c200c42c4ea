"""The notifier: how one-time codes, reset links and security notices reach a user.

Two transports, chosen by ``[notifier]`` (SPEC §2.1):

- :class:`FileNotifier` (``filesystem = "notifications.txt"``, the default, for testing and
  first steps): each message is APPENDED to the file (Authelia truncates; appending keeps a
  history and lets several workers write without losing one another's messages) as
  ``Date``/``Recipient``/``Subject`` lines, a blank line and the plain-text body. The file is
  created with mode 0600 and tightened to 0600 if it is wider (it holds live codes and links),
  and each message is written with one ``write`` on an ``O_APPEND`` descriptor under
  ``flock``, so concurrent writers never interleave.
- :class:`SmtpNotifier` (``[notifier.smtp]``): the standard library's :mod:`smtplib`, with
  STARTTLS or implicit TLS verified against the system's trust store (or a context passed in),
  a timeout, optional login with a password read from ``password_file`` (never from the config
  text or argv), and ``multipart/alternative`` plain-text + HTML bodies.

Attacks and failures defended:

- **Header injection** (a CR/LF in a subject or an address adding ``Bcc:`` or a body):
  :class:`Message` refuses control characters in the recipient and subject, and the email is
  built with :mod:`email`'s default policy, which refuses them as well.
- **HTML injection into the mail** (a display name such as ``<a href=…>``): every value put
  into an HTML body is escaped.
- **Credentials in clear**: logging in to an SMTP server without TLS is refused unless the
  server is on loopback.
- **A hung or trickling relay**: each socket operation is bounded by ``timeout`` and the
  whole exchange by ``DEADLINE_FACTOR`` x ``timeout`` (its socket is shut down), so a relay
  that sends one byte every few seconds cannot hold the sending thread forever.
- **A relay that does not work**: :meth:`SmtpNotifier.startup_check` connects, says EHLO,
  negotiates TLS and logs in at startup, so ``authctl serve`` fails at once instead of on the
  first password reset (skipped with ``startup_check = false``).

:class:`Outbox` sends in the background (one thread, a bounded queue), for every message: a
hung relay must not hold a request thread (the portal would stall), the reset start answers in
the same time whether the user exists or not, and a notice must not fail the request.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import html
import ipaddress
import logging
import os
import queue
import smtplib
import socket
import ssl
import threading
import time
import typing as t
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from email.utils import formataddr
from email.utils import make_msgid
from email.utils import parseaddr
from pathlib import Path

from server.core.errors import AuthError

if t.TYPE_CHECKING:
    from server.core.config import NotifierConfig
    from server.core.config import SmtpConfig

log = logging.getLogger("server.notifier")

#: Largest SMTP password file read.
MAX_PASSWORD_FILE = 4096


class NotifierError(AuthError, ValueError):
    """A message could not be sent (or the notifier cannot work); the message says why.

    A ``ValueError`` too, so that ``make_app`` raising it at startup (an unreadable SMTP password
    file) is reported by ``authctl serve`` like any other configuration problem.
    """


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)


@dataclass(frozen=True, slots=True)
class Message:
    """One message to one user: a plain-text body and, optionally, an HTML alternative.

    Raises:
        ValueError: the recipient is not one address, or the recipient or subject holds a
            control character (CR/LF header injection).
    """

    recipient: str
    subject: str
    text: str
    html: str | None = None
    #: The recipient's display name, for the ``To`` header (may be empty).
    name: str = ""

    def __post_init__(self) -> None:
        for what, value in (("recipient", self.recipient), ("subject", self.subject)):
            if _has_control(value):
                raise ValueError(f"the {what} holds a control character")
        if _has_control(self.name):
            raise ValueError("the recipient's name holds a control character")
        address = parseaddr(self.recipient)[1]
        if address != self.recipient or address.count("@") != 1 or " " in address:
            raise ValueError("the recipient must be one plain email address")

    @property
    def to_header(self) -> str:
        """``Name <address>`` (quoted or encoded as needed), or the bare address."""
        return formataddr((self.name, self.recipient)) if self.name else self.recipient


class Notifier(t.Protocol):
    """Something that delivers :class:`Message` values."""

    def send(self, message: Message) -> None:
        """Deliver ``message`` now.

        Raises:
            NotifierError: it could not be delivered.
        """

    def startup_check(self) -> None:
        """Check that delivery can work at all (at startup).

        Raises:
            NotifierError: it cannot; the message says why and how to fix it.
        """


# --------------------------------------------------------------------------- filesystem


class FileNotifier:
    """Appends each message to a text file (mode 0600)."""

    def __init__(self, path: Path, *, now: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._now = now
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<FileNotifier {self.path}>"

    def render(self, message: Message) -> str:
        """The text written for ``message``: headers, a blank line, the body, a blank line."""
        date = format_datetime(_utc(self._now()))
        body = message.text.rstrip("\n")
        return (
            f"Date: {date}\nRecipient: {message.to_header}\nSubject: {message.subject}\n\n"
            f"{body}\n\n"
        )

    def send(self, message: Message) -> None:
        """Append ``message`` to the file in one write, under an exclusive lock."""
        data = self.render(message).encode("utf-8")
        try:
            with self._lock:
                fd = self._open()
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    while data:
                        data = data[os.write(fd, data) :]
                finally:
                    os.close(fd)  # releases the lock
        except OSError as exc:
            raise NotifierError(
                f"cannot write the notification file {self.path}: {exc.strerror or exc}"
            ) from None

    def _open(self) -> int:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
        except OSError:
            os.close(fd)
            raise
        return fd

    def startup_check(self) -> None:
        """Create the file (0600) if needed and make sure it can be appended to."""
        try:
            os.close(self._open())
        except OSError as exc:
            raise NotifierError(
                f"cannot write the notification file {self.path}: {exc.strerror or exc} "
                "(fix: point [notifier] filesystem at a writable path)"
            ) from None


def _utc(when: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(when, dt.UTC)


# --------------------------------------------------------------------------- SMTP


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_password_file(path: Path) -> str:
    """The SMTP password in ``path`` (without the final newline an editor may add).

    Raises:
        NotifierError: the file is missing, unreadable, empty or too large.
    """
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_PASSWORD_FILE + 1)
    except OSError as exc:
        raise NotifierError(
            f"cannot read the SMTP password file {path}: {exc.strerror or exc}"
        ) from None
    if len(raw) > MAX_PASSWORD_FILE:
        raise NotifierError(f"the SMTP password file {path} is larger than {MAX_PASSWORD_FILE} B")
    try:
        password = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise NotifierError(f"the SMTP password file {path} is not UTF-8") from None
    if not password:
        raise NotifierError(f"the SMTP password file {path} is empty")
    return password


#: The whole SMTP exchange for one message may last this many times ``[notifier.smtp]
#: timeout`` (which bounds each socket operation) before its connection is cut.
DEADLINE_FACTOR = 3


class _Deadline:
    """Shuts a socket down once ``seconds`` have passed since it was connected."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._sock: socket.socket | None = None

    def watch(self, sock: socket.socket) -> socket.socket:
        """Start the clock for ``sock``; returns it."""
        with self._lock:
            self._sock = sock
            self._timer = threading.Timer(self.seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()
        return sock

    def _expire(self) -> None:
        with self._lock:
            if self._sock is None:
                return
            self.expired = True
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked read at once

    def cancel(self) -> None:
        """Stop the clock (the exchange is over)."""
        with self._lock:
            self._sock = None
            if self._timer is not None:
                self._timer.cancel()


class _WatchedSMTP(smtplib.SMTP):
    """``smtplib.SMTP`` whose socket is handed to a :class:`_Deadline` as soon as it exists
    (the constructor already reads the greeting, so a later hook would come too late)."""

    def __init__(self, *args: t.Any, deadline: _Deadline, **kwargs: t.Any) -> None:
        self._deadline = deadline
        super().__init__(*args, **kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # smtplib's socket factory (every CPython 3 has it; typeshed leaves it out)
        sock = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        return self._deadline.watch(t.cast(socket.socket, sock))


class _WatchedSMTPSSL(_WatchedSMTP, smtplib.SMTP_SSL):
    """``smtplib.SMTP_SSL`` with the deadline of :class:`_WatchedSMTP`."""


class SmtpNotifier:
    """Sends through an SMTP server, one connection per message.

    ``context`` is the TLS context (default: the system's trust store with host-name checks);
    pass one to trust a private CA.

    Raises (constructor):
        NotifierError: the password file cannot be read, or a login would go out in clear.
    """

    def __init__(
        self,
        config: SmtpConfig,
        *,
        context: ssl.SSLContext | None = None,
        now: Callable[[], float] = time.time,
        local_hostname: str | None = None,
    ) -> None:
        self.config = config
        self.context = context if context is not None else ssl.create_default_context()
        self._now = now
        self.local_hostname = local_hostname
        self._password: str | None = None
        if config.username is not None:
            if not (config.starttls or config.tls) and not _is_loopback(config.host):
                raise NotifierError(
                    f"[notifier.smtp] would send the password for {config.username!r} to "
                    f"{config.host} without TLS (fix: set starttls = true, or tls = true for "
                    "port 465)"
                )
            if config.password_file is None:
                raise NotifierError("[notifier.smtp] username needs password_file")
            self._password = read_password_file(config.password_file)
            if not (config.username + self._password).isascii():
                raise NotifierError(
                    "[notifier.smtp] username and password must be ASCII (Python's smtplib sends "
                    "credentials as ASCII only)"
                )

    def __repr__(self) -> str:
        return f"<SmtpNotifier {self.config.host}:{self.config.port}>"

    @property
    def where(self) -> str:
        """``host:port`` of the relay, for messages."""
        return f"{self.config.host}:{self.config.port}"

    def build(self, message: Message) -> EmailMessage:
        """The email for ``message``: plain text, plus an HTML alternative when there is one."""
        mail = EmailMessage()
        mail["From"] = self.config.sender
        mail["To"] = message.to_header
        mail["Subject"] = message.subject
        mail["Date"] = format_datetime(_utc(self._now()))
        domain = parseaddr(self.config.sender)[1].rpartition("@")[2] or None
        mail["Message-ID"] = make_msgid(domain=domain)
        mail["Auto-Submitted"] = "auto-generated"
        mail.set_content(message.text)
        if message.html is not None:
            mail.add_alternative(message.html, subtype="html")
        return mail

    @contextlib.contextmanager
    def _session(self) -> Iterator[smtplib.SMTP]:
        """A connected, TLS-protected (as configured), logged-in SMTP session.

        Each socket operation is bounded by ``timeout``; the whole exchange, by
        ``DEADLINE_FACTOR`` times that (a relay that trickles one byte at a time never trips
        the first, and would hold the outbox thread forever).
        """
        cfg = self.config
        deadline = _Deadline(DEADLINE_FACTOR * cfg.timeout)
        try:
            client = self._connect(deadline)
            try:
                client.ehlo()
                if cfg.starttls:
                    if not client.has_extn("starttls"):
                        raise NotifierError(
                            f"the SMTP server {self.where} does not offer STARTTLS (fix: use "
                            "tls = true for implicit TLS, or starttls = false for a loopback "
                            "relay)"
                        )
                    client.starttls(context=self.context)
                    client.ehlo()
                if cfg.username is not None and self._password is not None:
                    client.login(cfg.username, self._password)
                yield client
            finally:
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    client.quit()
                client.close()
        except (smtplib.SMTPException, OSError):
            if deadline.expired:
                raise NotifierError(
                    f"the SMTP exchange with {self.where} took longer than "
                    f"{deadline.seconds:g} s; the relay answers too slowly"
                ) from None
            raise
        finally:
            deadline.cancel()

    def _connect(self, deadline: _Deadline) -> smtplib.SMTP:
        cfg = self.config
        if cfg.tls:
            return _WatchedSMTPSSL(
                cfg.host,
                cfg.port,
                local_hostname=self.local_hostname,
                timeout=cfg.timeout,
                context=self.context,
                deadline=deadline,
            )
        return _WatchedSMTP(
            cfg.host,
            cfg.port,
            local_hostname=self.local_hostname,
            timeout=cfg.timeout,
            deadline=deadline,
        )

    def send(self, message: Message) -> None:
        """Send ``message``.

        Raises:
            NotifierError: connection, TLS, login or delivery failed (the reason is named).
        """
        mail = self.build(message)
        try:
            with self._session() as client:
                client.send_message(mail)
        except NotifierError:
            raise
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise NotifierError(f"cannot send mail through {self.where}: {exc}") from None

    def startup_check(self) -> None:
        """Connect, EHLO, STARTTLS/TLS and login as configured, then NOOP; send nothing.

        Skipped when ``startup_check = false``.

        Raises:
            NotifierError: the relay cannot be used; the message names it and the cause.
        """
        if not self.config.startup_check:
            return
        try:
            with self._session() as client:
                code, _ = client.noop()
                if code != 250:
                    raise NotifierError(f"the SMTP server {self.where} answered NOOP with {code}")
        except NotifierError:
            raise
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise NotifierError(
                f"the SMTP server {self.where} cannot be used: {exc} (fix: check "
                "[notifier.smtp], or set startup_check = false to start anyway)"
            ) from None


def make_notifier(
    config: NotifierConfig,
    *,
    now: Callable[[], float] = time.time,
    context: ssl.SSLContext | None = None,
) -> FileNotifier | SmtpNotifier:
    """The notifier ``[notifier]`` describes.

    Raises:
        NotifierError: the SMTP password file cannot be read, or neither transport is set.
    """
    if config.smtp is not None:
        return SmtpNotifier(config.smtp, context=context, now=now)
    if config.filesystem is not None:
        return FileNotifier(config.filesystem, now=now)
    raise NotifierError("[notifier] needs filesystem or [notifier.smtp]")


# --------------------------------------------------------------------------- background


class OutboxFull(NotifierError):
    """The outbox already holds as many messages as it may (the relay is slow or hung)."""


#: Messages an :class:`Outbox` holds by default before it refuses more.
OUTBOX_CAPACITY = 100


class Outbox:
    """Sends messages from one background thread, so a request never waits for the relay.

    A slow or hung SMTP relay (each socket operation may take ``[notifier.smtp] timeout``)
    then stalls only this thread, never the request threads that serve the portal. The queue
    is bounded: when ``capacity`` messages wait already, :meth:`submit` refuses at once with
    :class:`OutboxFull`, so the caller can tell the user to try again shortly instead of
    piling up mail (and memory) behind a dead relay.

    Failures are logged (never raised to the caller), and the message's ``on_failure``
    callback runs (in the outbox thread), e.g. to revoke the code the mail carried.
    :meth:`flush` waits until everything queued so far was handled (tests, and a clean
    shutdown). The thread starts on first use, so a server that forks workers after building
    the app gets one thread per worker.
    """

    def __init__(self, notifier: Notifier, *, capacity: int = OUTBOX_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"the outbox capacity must be at least 1, not {capacity}")
        self.notifier = notifier
        self.capacity = capacity
        self._queue: queue.Queue[tuple[Message, Callable[[], object] | None]] = queue.Queue(
            maxsize=capacity
        )
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition()
        self._unfinished = 0

    def submit(self, message: Message, *, on_failure: Callable[[], object] | None = None) -> None:
        """Queue ``message`` for sending and return at once.

        Raises:
            OutboxFull: ``capacity`` messages are waiting already; nothing was queued.
        """
        self._start()
        with self._idle:
            try:
                self._queue.put_nowait((message, on_failure))
            except queue.Full:
                raise OutboxFull(
                    f"the mail queue is full ({self.capacity} messages wait for the relay)"
                ) from None
            self._unfinished += 1

    def full(self) -> bool:
        """Whether :meth:`submit` would refuse now."""
        return self._queue.full()

    def _start(self) -> None:
        with self._lock:
            thread = self._thread
            if thread is not None and thread.is_alive() and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="authctl-notifier", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            message, on_failure = self._queue.get()
            try:
                self._deliver(message, on_failure)
            finally:
                with self._idle:
                    self._unfinished -= 1
                    self._idle.notify_all()

    def _deliver(self, message: Message, on_failure: Callable[[], object] | None) -> None:
        try:
            self.notifier.send(message)
        except Exception:
            log.exception("a notification could not be sent")
            if on_failure is not None:
                try:
                    on_failure()
                except Exception:
                    log.exception("the clean-up after a failed notification failed")

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued message has been sent (or has failed and been logged).

        Returns False when ``timeout`` seconds passed first (a hung relay at shutdown).
        """
        with self._idle:
            return self._idle.wait_for(lambda: self._unfinished == 0, timeout)


# --------------------------------------------------------------------------- messages


def _html(
    before: list[str],
    *,
    code: str | None = None,
    link: tuple[str, str] | None = None,
    after: tuple[str, ...] = (),
) -> str:
    """A minimal HTML body; every value is escaped (a display name cannot inject markup)."""
    parts = [f"<p>{html.escape(p)}</p>" for p in before]
    if code is not None:
        parts.append(
            '<p style="font-size:1.5em;letter-spacing:.2em">'
            f"<strong>{html.escape(code)}</strong></p>"
        )
    if link is not None:
        url, label = link
        parts.append(f'<p><a href="{html.escape(url, quote=True)}">{html.escape(label)}</a></p>')
    parts += [f"<p>{html.escape(p)}</p>" for p in after]
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"></head>'
        f'<body style="font-family:sans-serif">{"".join(parts)}</body></html>'
    )


def _greeting(name: str) -> str:
    return f"Hello {name}," if name else "Hello,"


def elevation_code_message(
    recipient: str, name: str, code: str, minutes: int, ip: str | None
) -> Message:
    """The one-time code that confirms the user's identity before a sensitive change."""
    where = f" from {ip}" if ip else ""
    lines = [
        _greeting(name),
        f"someone (hopefully you) asked{where} to confirm your identity to change your "
        "account's security settings. Enter this code in the page that asked for it:",
    ]
    after = (
        f"The code is valid for {minutes} minutes and works once. If you did not ask for it, "
        "ignore this message and consider changing your password.",
    )
    text = "\n\n".join([*lines, f"    {code}", *after]) + "\n"
    html_body = _html(lines, code=code, after=after)
    return Message(recipient, "Your verification code", text, html_body, name)


def reset_link_message(
    recipient: str, name: str, link: str, minutes: int, ip: str | None
) -> Message:
    """The link that lets the user choose a new password."""
    where = f" from {ip}" if ip else ""
    lines = [
        _greeting(name),
        f"someone (hopefully you) asked{where} to reset the password of your account. "
        "To choose a new password, open this link:",
    ]
    after = (
        f"The link is valid for {minutes} minutes and works once. If you did not ask for it, "
        "ignore this message: your password stays as it is.",
    )
    text = "\n\n".join([*lines, link, *after]) + "\n"
    html_body = _html(lines, link=(link, "Reset your password"), after=after)
    return Message(recipient, "Reset your password", text, html_body, name)


def notice_message(recipient: str, name: str, subject: str, what: str, ip: str | None) -> Message:
    """A security notice: something changed on the account (password, authenticator app)."""
    where = f" from {ip}" if ip else ""
    lines = [
        _greeting(name),
        f"{what}{where}.",
        "If this was you, there is nothing to do. If it was not, reset your password at once "
        "and tell your administrator.",
    ]
    return Message(recipient, subject, "\n\n".join(lines) + "\n", _html(lines), name)
