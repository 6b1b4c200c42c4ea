"""The notifier (server/core/notifier.py): the file transport, and SMTP against a REAL server.

The SMTP tests start aiosmtpd (a test dependency) on loopback in this process: plain, STARTTLS
and implicit TLS with a certificate made for the test (``server.core.certs``), with and without
login, so smtplib's real protocol exchange is what is tested, not a mock.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import email
import email.policy
import logging
import socket
import ssl
import stat
import threading
import time
import typing as t
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from aiosmtpd.smtp import LoginPassword

from server.core.config import NotifierConfig
from server.core.config import SmtpConfig
from server.core.notifier import FileNotifier
from server.core.notifier import Message
from server.core.notifier import NotifierError
from server.core.notifier import Outbox
from server.core.notifier import OutboxFull
from server.core.notifier import SmtpNotifier
from server.core.notifier import elevation_code_message
from server.core.notifier import make_notifier
from server.core.notifier import notice_message
from server.core.notifier import read_password_file
from server.core.notifier import reset_link_message

SENDER = "authctl <auth@example.com>"
SMTP_USER = "mailer"
SMTP_PASSWORD = "relay-secret with spaces"


def message(**kw: t.Any) -> Message:
    """A plain test message to alice."""
    args: dict[str, t.Any] = {
        "recipient": "alice@example.com",
        "subject": "Hello",
        "text": "Body line\n",
        "html": "<p>Body line</p>",
        "name": "Alice Liddell",
    }
    args.update(kw)
    return Message(**args)


# --------------------------------------------------------------------------- messages


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": "Hi\r\nBcc: eve@example.net"},
        {"recipient": "alice@example.com\nBcc: eve@example.net"},
        {"recipient": "alice@example.com, eve@example.net"},
        {"recipient": "Alice <alice@example.com>"},
        {"recipient": "not-an-address"},
        {"name": "Alice\rX"},
    ],
    ids=["subject-crlf", "recipient-lf", "two-recipients", "display-form", "no-at", "name-cr"],
)
def test_message_refuses_header_injection(changes: dict[str, str]) -> None:
    """Control characters in headers and anything but one plain address are refused."""
    with pytest.raises(ValueError, match=r"control character|one plain email address"):
        message(**changes)


def test_to_header_quotes_the_name() -> None:
    """The name is quoted or encoded in ``To``; no name gives the bare address."""
    assert message(name='Eve "x", <y>').to_header == '"Eve \\"x\\", <y>" <alice@example.com>'
    assert message(name="").to_header == "alice@example.com"


def test_templates_escape_html_and_carry_the_secret() -> None:
    """Codes and links are in both bodies; a hostile display name is escaped in HTML."""
    name = '<a href="https://evil.example">x</a>'
    code = elevation_code_message("a@example.com", name, "ABCD2346", 5, "192.0.2.1")
    assert "ABCD2346" in code.text
    assert "ABCD2346" in (code.html or "")
    assert "<a href" not in (code.html or "")
    assert "&lt;a href=" in (code.html or "")
    assert "from 192.0.2.1" in code.text
    link = "https://auth.example.com/reset-password/step2?token=abc&x=<y>"
    reset = reset_link_message("a@example.com", "", link, 5, None)
    assert link in reset.text
    assert 'href="https://auth.example.com/reset-password/step2?token=abc&amp;x=&lt;y&gt;"' in (
        reset.html or ""
    )
    assert reset.text.startswith("Hello,")
    notice = notice_message("a@example.com", "Al", "Changed", "Something changed", "::1")
    assert "Something changed from ::1." in notice.text


# --------------------------------------------------------------------------- file


def test_file_notifier_appends_with_mode_0600(tmp_path: Path, clock: t.Any) -> None:
    """Each message is appended with Date, Recipient, Subject and body; the file is 0600."""
    path = tmp_path / "sub" / "notifications.txt"
    notifier = FileNotifier(path, now=clock)
    notifier.send(message(subject="First"))
    notifier.send(message(subject="Second", text="Other body"))
    text = path.read_text()
    assert text == (
        "Date: Tue, 14 Nov 2023 22:13:20 +0000\n"
        "Recipient: Alice Liddell <alice@example.com>\n"
        "Subject: First\n\nBody line\n\n"
        "Date: Tue, 14 Nov 2023 22:13:20 +0000\n"
        "Recipient: Alice Liddell <alice@example.com>\n"
        "Subject: Second\n\nOther body\n\n"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "FileNotifier" in repr(notifier)


def test_file_notifier_tightens_a_wide_file(tmp_path: Path) -> None:
    """An existing world-readable file is made 0600 before codes are written into it."""
    path = tmp_path / "n.txt"
    path.write_text("old\n")
    path.chmod(0o644)
    FileNotifier(path).send(message())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("old\nDate: ")


def test_file_notifier_parallel_writes_do_not_interleave(tmp_path: Path) -> None:
    """Messages written from many threads (and notifier objects) stay whole."""
    path = tmp_path / "n.txt"
    body = "x" * 5000

    def send(i: int) -> None:
        FileNotifier(path).send(message(subject=f"m{i}", text=body))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(40)))
    chunks = path.read_text().split("Date: ")[1:]
    assert len(chunks) == 40
    assert all(chunk.endswith(f"\n\n{body}\n\n") for chunk in chunks)


def test_file_notifier_errors(tmp_path: Path) -> None:
    """A path that cannot be written is a NotifierError, at send and at the startup check."""
    (tmp_path / "dir").mkdir()
    notifier = FileNotifier(tmp_path / "dir")
    with pytest.raises(NotifierError, match="cannot write"):
        notifier.send(message())
    with pytest.raises(NotifierError, match="writable path"):
        notifier.startup_check()


def test_file_startup_check_creates_file(tmp_path: Path) -> None:
    """The startup check creates the file, mode 0600, empty."""
    path = tmp_path / "n.txt"
    FileNotifier(path).startup_check()
    assert path.read_text() == ""
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_file_notifier_fchmod_failure_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the mode cannot be tightened the descriptor is closed and the error reported."""
    path = tmp_path / "n.txt"
    path.write_text("")
    path.chmod(0o666)

    def refuse(fd: int, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("server.core.notifier.os.fchmod", refuse)
    with pytest.raises(NotifierError, match="not permitted"):
        FileNotifier(path).send(message())


# --------------------------------------------------------------------------- outbox


class Recorder:
    """A notifier that records messages, failing on demand."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[Message] = []
        self.fail = fail

    def send(self, msg: Message) -> None:
        if self.fail:
            raise NotifierError("relay down")
        self.sent.append(msg)

    def startup_check(self) -> None:
        """Nothing to check."""


def test_outbox_sends_in_background_and_flushes() -> None:
    """Queued messages are sent by the outbox thread; flush waits for them."""
    recorder = Recorder()
    outbox = Outbox(recorder)
    for i in range(5):
        outbox.submit(message(subject=f"m{i}"))
    outbox.flush()
    assert [m.subject for m in recorder.sent] == [f"m{i}" for i in range(5)]


def test_outbox_logs_failures(caplog: pytest.LogCaptureFixture) -> None:
    """A failed delivery is logged, never raised to the caller."""
    outbox = Outbox(Recorder(fail=True))
    with caplog.at_level(logging.ERROR, logger="server.notifier"):
        outbox.submit(message())
        outbox.flush()
    assert "could not be sent" in caplog.text


class Blocking:
    """A notifier whose relay hangs until released: ``started`` is set when a send begins."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def send(self, msg: Message) -> None:
        self.started.set()
        assert self.release.wait(10), "never released"
        self.sent.append(msg)

    def startup_check(self) -> None:
        """Nothing to check."""


def test_outbox_is_bounded() -> None:
    """With the relay hung, the outbox queues up to its capacity and then refuses at once."""
    relay = Blocking()
    outbox = Outbox(relay, capacity=2)
    outbox.submit(message(subject="m0"))
    assert relay.started.wait(5)  # m0 is in the relay's hands, not in the queue
    outbox.submit(message(subject="m1"))
    outbox.submit(message(subject="m2"))
    assert outbox.full()
    started = time.monotonic()
    with pytest.raises(OutboxFull, match="mail queue is full"):
        outbox.submit(message(subject="m3"))
    assert time.monotonic() - started < 0.1
    assert not outbox.flush(timeout=0.05)  # still stuck
    relay.release.set()
    assert outbox.flush(timeout=5)
    assert [m.subject for m in relay.sent] == ["m0", "m1", "m2"]
    assert not outbox.full()
    outbox.submit(message(subject="m4"))
    assert outbox.flush(timeout=5)
    assert relay.sent[-1].subject == "m4"


def test_outbox_capacity_must_be_positive() -> None:
    """A zero or negative capacity is a programming error (``queue.Queue`` would be unbounded)."""
    with pytest.raises(ValueError, match="capacity"):
        Outbox(Recorder(), capacity=0)


def test_outbox_runs_the_failure_callback() -> None:
    """``on_failure`` runs (in the outbox thread) only when the delivery failed."""
    calls: list[str] = []
    failing = Outbox(Recorder(fail=True))
    failing.submit(message(), on_failure=lambda: calls.append("failed"))
    working = Outbox(Recorder())
    working.submit(message(), on_failure=lambda: calls.append("wrong"))
    assert failing.flush(timeout=5)
    assert working.flush(timeout=5)
    assert calls == ["failed"]


def test_outbox_survives_a_failing_callback(caplog: pytest.LogCaptureFixture) -> None:
    """A callback that raises is logged; the next message is still sent."""
    recorder = Recorder(fail=True)
    outbox = Outbox(recorder)

    def boom() -> None:
        raise RuntimeError("callback broke")

    with caplog.at_level(logging.ERROR, logger="server.notifier"):
        outbox.submit(message(), on_failure=boom)
        assert outbox.flush(timeout=5)
    assert "callback broke" in caplog.text
    recorder.fail = False
    outbox.submit(message(subject="after"))
    assert outbox.flush(timeout=5)
    assert [m.subject for m in recorder.sent] == ["after"]


class HungRelay:
    """A TCP server on loopback that accepts connections and never says a word (a hung SMTP
    relay). ``connected`` is set at the first connection; :meth:`close` drops them all."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.connected = threading.Event()
        self.clients: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.clients.append(client)
            self.connected.set()

    def close(self) -> None:
        """Stop listening (``shutdown`` wakes the blocked ``accept``) and hang up on everyone."""
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self.server.close()
        for client in self.clients:
            client.close()


@pytest.fixture
def hung_relay() -> t.Iterator[HungRelay]:
    """A hung relay, closed after the test."""
    relay = HungRelay()
    try:
        yield relay
    finally:
        relay.close()


@pytest.mark.slow
def test_smtp_hung_relay_times_out(hung_relay: HungRelay) -> None:
    """A relay that accepts and never answers fails the send after ``timeout``, not never."""
    notifier = SmtpNotifier(smtp_config(hung_relay.port, timeout=1))
    started = time.monotonic()
    with pytest.raises(NotifierError, match=r"cannot send mail through 127\.0\.0\.1"):
        notifier.send(message())
    assert 0.9 < time.monotonic() - started < 5
    assert hung_relay.connected.is_set()


class DripRelay(HungRelay):
    """A relay that sends its greeting one byte every ``interval`` seconds, so no single read
    ever times out: only a deadline on the whole exchange ends it."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.stop = threading.Event()
        super().__init__()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.clients.append(client)
            self.connected.set()
            threading.Thread(target=self._drip, args=(client,), daemon=True).start()

    def _drip(self, client: socket.socket) -> None:
        for byte in b"220-slow relay" * 100:
            if self.stop.wait(self.interval):
                return
            try:
                client.sendall(bytes([byte]))
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        super().close()


@pytest.mark.slow
def test_smtp_exchange_has_a_deadline() -> None:
    """A relay that trickles bytes faster than ``timeout`` cannot hold the sender forever:
    the whole exchange is cut after ``DEADLINE_FACTOR`` x ``timeout``."""
    relay = DripRelay(interval=0.3)
    try:
        notifier = SmtpNotifier(smtp_config(relay.port, timeout=1))
        started = time.monotonic()
        with pytest.raises(NotifierError, match="took longer than 3 s"):
            notifier.send(message())
        took = time.monotonic() - started
        assert 2.9 < took < 4.5, took
    finally:
        relay.close()


@pytest.mark.slow
def test_outbox_over_a_hung_relay_answers_at_once(hung_relay: HungRelay) -> None:
    """Through the outbox, a hung relay costs the caller nothing; a full queue is refused at
    once; the failure is logged when the relay hangs up."""
    outbox = Outbox(SmtpNotifier(smtp_config(hung_relay.port, timeout=30)), capacity=1)
    started = time.monotonic()
    outbox.submit(message(subject="m0"))
    assert hung_relay.connected.wait(5)
    outbox.submit(message(subject="m1"))
    with pytest.raises(OutboxFull):
        outbox.submit(message(subject="m2"))
    assert time.monotonic() - started < 1
    hung_relay.close()  # m0 fails at once, then m1 cannot connect
    assert outbox.flush(timeout=10)


# --------------------------------------------------------------------------- SMTP


@dataclass
class Received:
    """What the test SMTP server got."""

    mails: list[email.message.EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)


class Handler:
    """aiosmtpd handler: keep every message."""

    def __init__(self, received: Received) -> None:
        self.received = received

    async def handle_DATA(self, server: t.Any, session: t.Any, envelope: t.Any) -> str:
        """Store the message."""
        mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.mails.append(t.cast(email.message.EmailMessage, mail))
        self.received.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Tls:
    """The test certificate: a CA and a leaf for localhost and 127.0.0.1."""

    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """Server and client TLS contexts for a certificate made with server.core.certs."""
    from server.core.certs import generate
    from server.core.certs import write_files

    folder = tmp_path_factory.mktemp("certs")
    bundle = generate(["localhost", "127.0.0.1"], key_type="ecdsa", ca=True)
    write_files(folder, bundle.files())
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    client = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    return Tls(server, client)


def authenticator(received: Received) -> t.Callable[..., AuthResult]:
    """An aiosmtpd authenticator that accepts SMTP_USER / SMTP_PASSWORD only."""

    def check(
        server: t.Any, session: t.Any, envelope: t.Any, mechanism: str, data: t.Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            received.logins.append((data.login, data.password))
            good = data.login == SMTP_USER.encode() and data.password == SMTP_PASSWORD.encode()
            return AuthResult(success=good, handled=False)
        return AuthResult(success=False)  # pragma: no cover - smtplib sends LOGIN/PLAIN

    return check


@pytest.fixture
def smtp_server(tls: Tls) -> t.Iterator[t.Callable[..., tuple[int, Received]]]:
    """Start aiosmtpd servers on loopback (stopped after the test); returns (port, received)."""
    controllers: list[Controller] = []

    def start(*, mode: str = "plain", auth: bool = False) -> tuple[int, Received]:
        received = Received()
        port = free_port()
        kwargs: dict[str, t.Any] = {"hostname": "127.0.0.1", "port": port}
        if mode == "starttls":
            kwargs.update(tls_context=tls.server, require_starttls=True)
        elif mode == "implicit":
            kwargs.update(ssl_context=tls.server, server_hostname="localhost")
        if auth:
            kwargs.update(authenticator=authenticator(received), auth_required=True)
            kwargs["auth_require_tls"] = mode != "plain"
        controller = Controller(Handler(received), **kwargs)
        controller.start()
        controllers.append(controller)
        return port, received

    yield start
    for controller in controllers:
        controller.stop()


def smtp_config(port: int, **kw: t.Any) -> SmtpConfig:
    """An [notifier.smtp] for the loopback server."""
    args: dict[str, t.Any] = {
        "host": "127.0.0.1",
        "sender": SENDER,
        "port": port,
        "starttls": False,
        "timeout": 5,
    }
    args.update(kw)
    return SmtpConfig(**args)


def password_file(tmp_path: Path, text: str = SMTP_PASSWORD + "\n") -> Path:
    """The SMTP password in a file (as a secret file would hold it, newline included)."""
    path = tmp_path / "smtp.pass"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.mark.slow
def test_smtp_plain_multipart(smtp_server: t.Any, clock: t.Any) -> None:
    """A message arrives as multipart/alternative with From, To, Subject, Date and both bodies."""
    port, received = smtp_server()
    notifier = SmtpNotifier(smtp_config(port), now=clock)
    notifier.send(message(text="Plain body\n", html="<p>HTML body</p>"))
    (mail,) = received.mails
    assert mail["From"] == SENDER
    assert mail["To"] == "Alice Liddell <alice@example.com>"
    assert mail["Subject"] == "Hello"
    assert mail["Date"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    assert mail["Message-ID"].endswith("@example.com>")
    assert mail.get_content_type() == "multipart/alternative"
    plain = mail.get_body(("plain",))
    rich = mail.get_body(("html",))
    assert plain is not None
    assert plain.get_content().splitlines() == ["Plain body"]
    assert rich is not None
    assert "<p>HTML body</p>" in rich.get_content()
    assert received.envelopes == [("auth@example.com", ["alice@example.com"])]
    assert "SmtpNotifier 127.0.0.1" in repr(notifier)


@pytest.mark.slow
def test_smtp_plain_text_only(smtp_server: t.Any) -> None:
    """Without an HTML body the message is a single text/plain part."""
    port, received = smtp_server()
    SmtpNotifier(smtp_config(port)).send(message(html=None))
    assert received.mails[0].get_content_type() == "text/plain"


@pytest.mark.slow
def test_smtp_starttls_with_login(smtp_server: t.Any, tls: Tls, tmp_path: Path) -> None:
    """STARTTLS verified against the test CA, then login, then delivery."""
    port, received = smtp_server(mode="starttls", auth=True)
    cfg = smtp_config(
        port,
        host="localhost",
        starttls=True,
        username=SMTP_USER,
        password_file=password_file(tmp_path),
    )
    notifier = SmtpNotifier(cfg, context=tls.client)
    notifier.startup_check()
    notifier.send(message())
    assert received.logins[-1] == (SMTP_USER.encode(), SMTP_PASSWORD.encode())
    assert len(received.mails) == 1


@pytest.mark.slow
def test_smtp_implicit_tls(smtp_server: t.Any, tls: Tls) -> None:
    """Implicit TLS (port 465 style) delivers through a verified TLS connection."""
    port, received = smtp_server(mode="implicit")
    notifier = SmtpNotifier(smtp_config(port, tls=True), context=tls.client)
    notifier.startup_check()
    notifier.send(message())
    assert len(received.mails) == 1


@pytest.mark.slow
def test_smtp_untrusted_certificate_fails(smtp_server: t.Any) -> None:
    """With the system trust store, the test's private CA is refused: nothing is sent."""
    port, received = smtp_server(mode="starttls")
    notifier = SmtpNotifier(smtp_config(port, host="localhost", starttls=True))
    with pytest.raises(NotifierError, match="cannot send mail through localhost"):
        notifier.send(message())
    with pytest.raises(NotifierError, match="cannot be used"):
        notifier.startup_check()
    assert received.mails == []


@pytest.mark.slow
def test_smtp_wrong_password_fails(smtp_server: t.Any, tls: Tls, tmp_path: Path) -> None:
    """A refused login is a NotifierError at startup and at send."""
    port, _ = smtp_server(mode="starttls", auth=True)
    cfg = smtp_config(
        port,
        host="localhost",
        starttls=True,
        username=SMTP_USER,
        password_file=password_file(tmp_path, "wrong"),
    )
    notifier = SmtpNotifier(cfg, context=tls.client)
    with pytest.raises(NotifierError, match="cannot be used"):
        notifier.startup_check()
    with pytest.raises(NotifierError, match="cannot send"):
        notifier.send(message())


@pytest.mark.slow
def test_smtp_starttls_not_offered(smtp_server: t.Any) -> None:
    """``starttls = true`` against a server without STARTTLS refuses to go on in clear."""
    port, received = smtp_server()
    notifier = SmtpNotifier(smtp_config(port, starttls=True))
    with pytest.raises(NotifierError, match="does not offer STARTTLS"):
        notifier.send(message())
    with pytest.raises(NotifierError, match="does not offer STARTTLS"):
        notifier.startup_check()
    assert received.mails == []


def test_smtp_connection_refused() -> None:
    """Nothing listening: the startup check fails, naming the relay and how to skip it."""
    port = free_port()
    notifier = SmtpNotifier(smtp_config(port, timeout=2))
    with pytest.raises(NotifierError, match=rf"127\.0\.0\.1:{port} cannot be used.*startup_check"):
        notifier.startup_check()
    with pytest.raises(NotifierError, match="cannot send"):
        notifier.send(message())


def test_smtp_startup_check_can_be_skipped() -> None:
    """``startup_check = false`` skips the check (nothing is contacted)."""
    SmtpNotifier(smtp_config(free_port(), startup_check=False)).startup_check()


@pytest.mark.slow
def test_smtp_noop_refused(smtp_server: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relay that answers NOOP with an error fails the startup check."""
    port, _ = smtp_server()
    monkeypatch.setattr("smtplib.SMTP.noop", lambda self: (421, b"closing"))
    with pytest.raises(NotifierError, match="NOOP with 421"):
        SmtpNotifier(smtp_config(port)).startup_check()


def test_login_in_clear_is_refused(tmp_path: Path) -> None:
    """A password would go out without TLS to a remote relay: refused at construction."""
    cfg = smtp_config(
        25, host="smtp.example.com", username="u", password_file=password_file(tmp_path)
    )
    with pytest.raises(NotifierError, match="without TLS"):
        SmtpNotifier(cfg)
    SmtpNotifier(
        smtp_config(25, host="localhost", username="u", password_file=password_file(tmp_path))
    )
    SmtpNotifier(smtp_config(25, host="::1", username="u", password_file=password_file(tmp_path)))


def test_non_ascii_credentials_are_refused(tmp_path: Path) -> None:
    """smtplib can only send ASCII credentials: others are refused at startup, clearly."""
    cfg = smtp_config(
        25, starttls=True, username="u", password_file=password_file(tmp_path, "pässword")
    )
    with pytest.raises(NotifierError, match="ASCII"):
        SmtpNotifier(cfg)
    with pytest.raises(NotifierError, match="ASCII"):
        SmtpNotifier(smtp_config(25, starttls=True, username="ü", password_file=cfg.password_file))


def test_login_needs_password_file() -> None:
    """A username without a password file cannot log in."""
    with pytest.raises(NotifierError, match="password_file"):
        SmtpNotifier(smtp_config(25, username="u", starttls=True))


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"", "empty"), (b"\n", "empty"), (b"\xff\xfe", "not UTF-8"), (b"x" * 5000, "larger")],
    ids=["empty", "newline-only", "binary", "huge"],
)
def test_password_file_problems(tmp_path: Path, content: bytes, problem: str) -> None:
    """Bad password files are refused with a reason."""
    path = tmp_path / "p"
    path.write_bytes(content)
    with pytest.raises(NotifierError, match=problem):
        read_password_file(path)


def test_password_file_missing(tmp_path: Path) -> None:
    """A missing password file is refused, naming it."""
    with pytest.raises(NotifierError, match="cannot read the SMTP password file"):
        read_password_file(tmp_path / "missing")


def test_password_file_keeps_inner_whitespace(tmp_path: Path) -> None:
    """Only the final line break is removed; spaces belong to the password."""
    assert read_password_file(password_file(tmp_path, " a b \r\n")) == " a b "


def test_make_notifier(tmp_path: Path) -> None:
    """``[notifier]`` picks the file or the SMTP transport; neither is an error."""
    assert isinstance(make_notifier(NotifierConfig(filesystem=tmp_path / "n.txt")), FileNotifier)
    smtp = make_notifier(NotifierConfig(smtp=smtp_config(25)))
    assert isinstance(smtp, SmtpNotifier)
    assert smtp.where == "127.0.0.1:25"
    with pytest.raises(NotifierError, match="needs filesystem"):
        make_notifier(NotifierConfig())
