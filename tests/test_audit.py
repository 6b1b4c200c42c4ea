"""The audit log (SPEC §7.4): one JSON line per security event, 0600, reopened on SIGHUP,
never a secret; and ``server.core.hup``, the SIGHUP callback registry it shares with reload."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import pytest
from click.testing import CliRunner

from authctl.cli import cli as main_cli
from server.core import audit
from server.core import hup
from server.core.audit import EVENTS
from server.core.audit import MAX_FIELD
from server.core.audit import AuditError
from server.core.audit import AuditLog
from server.core.audit import NullAuditLog
from server.core.config import load_config
from server.core.regulation import Regulator
from server.core.reload import Reloader
from server.core.storage import Storage
from server.core.totp import totp_at
from tests.apphelpers import APP_CONFIG
from tests.apphelpers import PASSWORDS
from tests.test_selfservice import NEW_PASSWORD
from tests.test_selfservice import SS
from tests.test_selfservice import cookie_of
from tests.test_selfservice import make_ss

# --------------------------------------------------------------------------- hup


def test_hangup_runs_callbacks_in_order_and_survives_a_failing_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def boom() -> None:
        calls.append("boom")
        raise RuntimeError("broken callback")

    removers = [
        hup.on_hangup(lambda: calls.append("first")),
        hup.on_hangup(boom),
        hup.on_hangup(lambda: calls.append("last")),
    ]
    try:
        hup.hangup()
    finally:
        for remove in removers:
            remove()
    assert calls == ["first", "boom", "last"]
    assert "broken callback" in caplog.text
    removers[0]()  # removing twice is harmless
    calls.clear()
    hup.hangup()
    assert calls == []


def test_sighup_runs_the_callbacks_in_a_thread_of_their_own() -> None:
    ran = threading.Event()
    where: list[str] = []

    def callback() -> None:
        where.append(threading.current_thread().name)
        ran.set()

    remove = hup.on_hangup(callback)
    previous = signal.getsignal(signal.SIGHUP)
    try:
        hup.install()
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0)  # the handler runs at the next bytecode boundary
        assert ran.wait(5)
    finally:
        signal.signal(signal.SIGHUP, previous)
        remove()
    assert where == ["authctl-hangup"]


# --------------------------------------------------------------------------- the writer


TS = re.compile(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")
FIELDS = ["ts", "event", "user", "ip", "result", "reason"]


def lines(path: Path) -> list[dict[str, t.Any]]:
    """Every line of the audit file, parsed (each must be one JSON object)."""
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")
    return [json.loads(raw) for raw in text.splitlines()]


def test_one_json_object_per_line_with_the_spec_fields(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(path, now=lambda: 1_700_000_000.25)
    audit.emit("login", user="alice", ip="192.0.2.1", result="success", reason="password")
    audit.emit("ban", user="", ip="192.0.2.9", result="success", reason="too_many_failures")
    audit.close()
    audit.emit("logout", user="alice", ip="192.0.2.1", result="success", reason="user")  # closed
    first, second = lines(path)
    assert list(first) == FIELDS
    assert first == {
        "ts": "2023-11-14T22:13:20.250Z",
        "event": "login",
        "user": "alice",
        "ip": "192.0.2.1",
        "result": "success",
        "reason": "password",
    }
    assert TS.match(first["ts"])
    assert second["event"] == "ban"
    assert second["user"] == ""


def test_the_vocabulary_is_the_specs_and_nothing_else_is_written(tmp_path: Path) -> None:
    spec = (
        "login login_failed second_factor second_factor_failed ban logout session_revoked "
        "password_changed password_reset totp_added totp_removed webauthn_added "
        "webauthn_removed token_created token_revoked oidc_consent config_reload"
    )
    assert set(spec.split()) == EVENTS
    path = tmp_path / "audit.log"
    audit = AuditLog(path)
    for kwargs in (
        {"event": "password:hunter2", "result": "success", "reason": "password"},
        {"event": "login", "result": "ok", "reason": "password"},
        {"event": "login", "result": "success", "reason": "hunter2"},
    ):
        with pytest.raises(ValueError, match="unknown audit"):
            audit.emit(user="alice", ip="::1", **kwargs)
        with pytest.raises(ValueError, match="unknown audit"):
            NullAuditLog().emit(user="alice", ip="::1", **kwargs)
    assert path.read_text() == ""


@pytest.mark.parametrize(
    "name",
    ['eve\n{"event":"login"}', "eve\u2028x", "eve\x1b[31m", "\ud800", "e" * 5000],
    ids=["newline", "u2028", "escape", "surrogate", "long"],
)
def test_a_typed_user_name_cannot_forge_a_line(tmp_path: Path, name: str) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(path)
    audit.emit("login_failed", user=name, ip="::1", result="failure", reason="wrong_credentials")
    raw = path.read_bytes()
    assert raw.count(b"\n") == 1
    assert raw.endswith(b"\n")
    (entry,) = lines(path)
    assert entry["event"] == "login_failed"
    assert entry["user"] == name[:MAX_FIELD]
    assert all(ch.isprintable() for ch in raw.decode().rstrip("\n"))


def test_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    mask = os.umask(0)
    try:
        AuditLog(path).close()
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_existing_file_others_may_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.log"
    path.write_text('{"old": "line"}\n')
    path.chmod(0o644)
    audit = AuditLog(path)
    audit.emit("logout", user="bob", ip="::1", result="success", reason="user")
    audit.close()
    assert f"mode 0644: other users may read it (fix: chmod 600 {path})" in caplog.text
    assert len(lines(path)) == 2  # appended, never truncated
    caplog.clear()
    path.chmod(0o600)
    AuditLog(path).close()
    assert "other users" not in caplog.text


def test_a_file_that_cannot_be_opened_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "audit.log"
    with pytest.raises(AuditError) as caught:
        AuditLog(path)
    assert str(path) in str(caught.value)
    assert "No such file or directory" in str(caught.value)
    assert "fix:" in str(caught.value)
    with pytest.raises(AuditError):
        AuditLog(tmp_path)  # a folder


# --------------------------------------------------------------------------- the portal's events

AUDITED_CONFIG = APP_CONFIG + '\n[log]\naudit_file = "audit.log"\n'


@pytest.fixture
def audited(tmp_path: Path, clock: t.Any) -> t.Iterator[SS]:
    """The self-service harness with ``[log] audit_file = "audit.log"``."""
    ss = make_ss(tmp_path, clock, AUDITED_CONFIG)
    yield ss
    audit.configure(None)


def events(ss: SS) -> list[dict[str, t.Any]]:
    path = ss.h.config.log.audit_file
    assert path is not None
    found = lines(path)
    for one in found:
        assert list(one) == FIELDS
        assert TS.match(one["ts"])
        assert one["event"] in EVENTS
    return found


def brief(found: list[dict[str, t.Any]]) -> list[tuple[str, str, str, str, str]]:
    return [(e["event"], e["user"], e["ip"], e["result"], e["reason"]) for e in found]


class Secrets:
    """Every secret a test sends or receives, to look for afterwards."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, *values: str) -> str:
        self.values.update(v for v in values if v)
        return values[0]

    def cookie(self, header: str) -> str:
        """Remember the session id of ``name=value`` and return the header."""
        self.add(header.split("=", 1)[1])
        return header

    def assert_absent(self, *texts: str) -> None:
        assert len(self.values) > 4
        for text in texts:
            for value in self.values:
                assert value not in text, f"a secret ({value[:3]}…) was written"


def test_every_portal_event_with_its_fields_and_never_a_secret(
    audited: SS, caplog: pytest.LogCaptureFixture
) -> None:
    """SPEC §7.4: each security event of the portal and self-service, after the real action
    over the API, is one line with the right fields; no password, code, token or session id
    used in the test is in the audit file or the normal log."""
    caplog.set_level(logging.DEBUG)
    ss, h = audited, audited.h
    ip = "127.0.0.1"  # the harness's client (a trusted proxy without X-Forwarded-For)
    kept = Secrets()
    kept.add(*PASSWORDS.values(), NEW_PASSWORD, "third passphrase here")

    def post(path: str, payload: object, cookie: str | None = None, method: str = "POST") -> t.Any:
        return h.api(path, payload, cookie=cookie, method=method)

    def first(user: str, password: str) -> t.Any:
        return post("/api/firstfactor", {"username": user, "password": password})

    # first factor: wrong password, then three failures of an unknown name (banned)
    wrong = kept.add("wrong-password-4711")
    assert first("alice", wrong).status_int == 401
    for _ in range(3):
        assert first("mallory", kept.add(f"guess-{secrets.token_hex(4)}")).status_int == 401
    assert first("mallory", kept.add("guess-after-ban")).status_int == 401
    alice = kept.cookie(h.login("alice"))
    other = kept.cookie(h.login("alice"))  # a second session, ended by the password change

    # TOTP set up at the portal: elevation by a mailed code, then confirm with a code
    assert post("/api/user/session/elevation", {}, alice).status_int == 200
    resp = post("/api/user/session/elevation", {"otc": kept.add(ss.code())}, alice, "PUT")
    alice = kept.cookie(cookie_of(resp))
    start = post("/api/secondfactor/totp/register", {}, alice, "PUT")
    secret = kept.add(start.json["data"]["base32_secret"])
    code = kept.add(totp_at(secret, h.clock.now, h.config.totp))
    assert post("/api/secondfactor/totp/register", {"token": code}, alice).status_int == 200

    # second factor: malformed, wrong, right
    h.clock.advance(30)
    assert post("/api/secondfactor/totp", {"token": "12"}, alice).status_int == 400
    good = totp_at(secret, h.clock.now, h.config.totp)
    bad = kept.add(f"{(int(good) + 1) % 10**6:06d}")
    assert post("/api/secondfactor/totp", {"token": bad}, alice).status_int == 401
    resp = post("/api/secondfactor/totp", {"token": kept.add(good)}, alice)
    assert resp.status_int == 200, resp.text
    alice = kept.cookie(cookie_of(resp))

    # TOTP removed (level 2, elevated again)
    assert post("/api/user/session/elevation", {}, alice).status_int == 200
    resp = post("/api/user/session/elevation", {"otc": kept.add(ss.code())}, alice, "PUT")
    alice = kept.cookie(cookie_of(resp))
    assert post("/api/secondfactor/totp", {}, alice, "DELETE").status_int == 200

    # password change: wrong current one, then right
    change = {"old_password": wrong, "new_password": NEW_PASSWORD}
    assert post("/api/change-password", change, alice).status_int == 401
    change["old_password"] = PASSWORDS["alice"]
    resp = post("/api/change-password", change, alice)
    assert resp.status_int == 200, resp.text
    alice = kept.cookie(cookie_of(resp))
    assert h.forward_auth("https://app.example.com/", cookie=other).status_int == 302

    # password reset: a link revoked, a forged one, a real one used, replayed
    assert post("/api/reset-password/identity/start", {"username": "alice"}).status_int == 200
    assert (
        post("/api/reset-password", {"token": kept.add(ss.token())}, method="DELETE").status_int
        == 200
    )
    assert post("/api/reset-password/identity/start", {"username": "alice"}).status_int == 200
    token = kept.add(ss.token())
    forged = kept.add(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))
    assert post("/api/reset-password/identity/finish", {"token": forged}).status_int == 401
    resp = post("/api/reset-password/identity/finish", {"token": token})
    assert resp.status_int == 200, resp.text
    grant = kept.cookie(cookie_of(resp))
    resp = post("/api/reset-password", {"password": "third passphrase here"}, grant)
    assert resp.status_int == 200, resp.text
    assert post("/api/reset-password/identity/finish", {"token": token}).status_int == 401

    # sign out
    bob = kept.cookie(h.login("bob"))
    assert post("/api/logout", {}, bob).status_int == 200

    # a banned second factor: three wrong codes ban bob, the fourth is refused as banned
    bob_secret, _ = ss.h.app.portal.totp.enrol("bob")
    kept.add(bob_secret)
    bob = kept.cookie(h.login("bob"))
    for n in range(4):
        h.clock.advance(30)
        good = totp_at(bob_secret, h.clock.now, h.config.totp)
        bad = kept.add(f"{(int(good) + 1 + n) % 10**6:06d}")
        assert post("/api/secondfactor/totp", {"token": bad}, bob).status_int == 401

    assert brief(events(ss)) == [
        ("login_failed", "alice", ip, "failure", "wrong_credentials"),
        ("login_failed", "mallory", ip, "failure", "wrong_credentials"),
        ("login_failed", "mallory", ip, "failure", "wrong_credentials"),
        ("ban", "mallory", "", "success", "too_many_failures"),
        ("login_failed", "mallory", ip, "failure", "wrong_credentials"),
        ("login_failed", "mallory", ip, "failure", "wrong_credentials"),
        ("login", "alice", ip, "success", "password"),
        ("login", "alice", ip, "success", "password"),
        ("totp_added", "alice", ip, "success", "user"),
        ("second_factor_failed", "alice", ip, "failure", "malformed_code"),
        ("second_factor_failed", "alice", ip, "failure", "wrong_code"),
        ("second_factor", "alice", ip, "success", "totp"),
        ("totp_removed", "alice", ip, "success", "user"),
        ("password_changed", "alice", ip, "failure", "wrong_credentials"),
        ("password_changed", "alice", ip, "success", "user"),
        ("session_revoked", "alice", ip, "success", "password_changed"),
        ("password_reset", "alice", ip, "success", "link_sent"),
        ("password_reset", "alice", ip, "success", "link_revoked"),
        ("password_reset", "alice", ip, "success", "link_sent"),
        ("password_reset", "", ip, "failure", "link_invalid"),
        ("password_reset", "alice", ip, "success", "link_accepted"),
        ("password_reset", "alice", ip, "success", "reset_link"),
        ("session_revoked", "alice", ip, "success", "password_changed"),
        ("password_reset", "alice", ip, "failure", "link_invalid"),
        ("login", "bob", ip, "success", "password"),
        ("logout", "bob", ip, "success", "user"),
        ("login", "bob", ip, "success", "password"),
        ("second_factor_failed", "bob", ip, "failure", "wrong_code"),
        ("second_factor_failed", "bob", ip, "failure", "wrong_code"),
        ("ban", "bob", "", "success", "too_many_failures"),
        ("second_factor_failed", "bob", ip, "failure", "wrong_code"),
        ("second_factor_failed", "bob", ip, "failure", "banned"),
    ]
    path = h.config.log.audit_file
    assert path is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for session_id in t.cast(t.Any, h.store)._sessions:  # the live ones, as stored
        kept.add(session_id)
    kept.assert_absent(path.read_text(encoding="utf-8"), caplog.text)


# --------------------------------------------------------------------------- the CLI's events


def cli(runner: CliRunner, config: Path, *args: str, stdin: str | None = None) -> t.Any:
    return runner.invoke(main_cli, ["--config", str(config), *args], input=stdin)


@pytest.fixture
def cli_config(runner: CliRunner, config_file: Path) -> Path:
    """The base config with ``[log] audit_file``, regulation by user and IP, a storage key
    and the user alice."""
    config_file.write_text(
        config_file.read_text()
        + '\n[log]\naudit_file = "audit.log"\n\n[regulation]\nmodes = ["user", "ip"]\n'
    )
    key = config_file.parent / "secrets" / "storage.key"
    key.parent.mkdir(mode=0o700)
    key.write_text(secrets.token_hex(32) + "\n")
    key.chmod(0o600)
    added = cli(runner, config_file, "user", "add", "alice", "--password-stdin", stdin="pw-1-one\n")
    assert added.exit_code == 0, added.output
    return config_file


def test_cli_changes_of_security_state_are_audited_as_cli(
    runner: CliRunner, cli_config: Path
) -> None:
    """``user passwd``, ``user totp add/remove``, ``bans clear``, ``user disable`` and ``user
    remove`` each write their event with ``ip`` "cli"; the password and the TOTP secret never."""
    path = cli_config.parent / "audit.log"
    kept = Secrets()
    kept.add("pw-1-one", "pw-2-two-new")
    assert not path.exists()  # user add: no security event
    steps = [
        ("user", "passwd", "alice", "--password-stdin"),
        ("user", "totp", "add", "alice", "--json"),
        ("user", "totp", "remove", "alice"),
        ("user", "totp", "add", "alice", "--json"),
    ]
    for step in steps:
        result = cli(runner, cli_config, *step, stdin="pw-2-two-new\n")
        assert result.exit_code == 0, result.output
        if "--json" in step:
            data = json.loads(result.stdout)
            kept.add(data["secret"], data["uri"])
    config = load_config(cli_config)
    storage = Storage(config.storage, require_key=False)
    regulator = Regulator(config.regulation, storage)
    for _ in range(3):
        regulator.record("alice", "203.0.113.7", "1FA", False)
    storage.close()
    for target in ("Alice", "203.0.113.7"):
        result = cli(runner, cli_config, "bans", "clear", target)
        assert result.exit_code == 0, result.output
    for step in (("user", "disable", "alice"), ("user", "remove", "alice")):
        result = cli(runner, cli_config, *step)
        assert result.exit_code == 0, result.output
    assert brief(lines(path)) == [
        ("password_changed", "alice", "cli", "success", "admin"),
        ("totp_added", "alice", "cli", "success", "admin"),
        ("totp_removed", "alice", "cli", "success", "admin"),
        ("totp_added", "alice", "cli", "success", "admin"),
        # the bans regulation made (as the server would: this process has no audit log)
        ("ban", "alice", "cli", "success", "ban_cleared"),
        ("ban", "", "203.0.113.7", "success", "ban_cleared"),
        ("session_revoked", "alice", "cli", "success", "admin"),
        ("session_revoked", "alice", "cli", "success", "admin"),
        ("totp_removed", "alice", "cli", "success", "admin"),
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kept.assert_absent(path.read_text())


def test_a_cli_command_stops_before_changing_anything_when_the_audit_file_is_unusable(
    runner: CliRunner, cli_config: Path
) -> None:
    users = cli_config.parent / "users.toml"
    before = users.read_text()
    path = cli_config.parent / "audit.log"
    path.mkdir()  # a folder where the file should be
    for step in (
        ("user", "passwd", "alice", "--password-stdin"),
        ("user", "disable", "alice"),
        ("user", "totp", "add", "alice"),
        ("user", "totp", "remove", "alice"),
        ("bans", "clear", "alice"),
    ):
        result = cli(runner, cli_config, *step, stdin="pw-2-two-new\n")
        assert result.exit_code == 3, (step, result.output)
        assert f"log.audit_file {path}: cannot be opened" in result.output
    assert users.read_text() == before


# --------------------------------------------------------------------------- sharing and failing

WRITER = """
import sys, threading
from pathlib import Path
from server.core.audit import AuditLog
audit = AuditLog(Path(sys.argv[1]))
tag, count = sys.argv[2], int(sys.argv[3])
def run(thread):
    for n in range(count):
        audit.emit("login_failed", user=f"{tag}{thread}-{n}-" + "x" * 200, ip="192.0.2.1",
                   result="failure", reason="wrong_credentials")
threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
for th in threads: th.start()
for th in threads: th.join()
"""


@pytest.mark.slow
def test_processes_and_threads_sharing_one_file_never_interleave_lines(tmp_path: Path) -> None:
    """Two processes of two threads each append 5,000 lines apiece: every line is whole."""
    path = tmp_path / "audit.log"
    count = 5000
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag, str(count)])
        for tag in ("a", "b")
    ]
    for proc in procs:
        assert proc.wait(timeout=50) == 0
    found = lines(path)
    assert len(found) == 4 * count
    users = {entry["user"] for entry in found}
    expected = {
        f"{tag}{thread}-{n}-" + "x" * 200
        for tag in ("a", "b")
        for thread in range(2)
        for n in range(count)
    }
    assert users == expected


def test_an_unwritable_device_never_raises_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """/dev/full fails every write with ENOSPC: emit goes on, the outage is logged once."""
    audit_log = AuditLog(Path("/dev/full"))
    for _ in range(5):
        audit_log.emit("logout", user="alice", ip="::1", result="success", reason="user")
    audit_log.close()
    started = [r for r in caplog.records if "outage started" in r.getMessage()]
    assert len(started) == 1
    assert "No space left on device" in started[0].getMessage()
    assert audit_log.outage.failures == 5


@pytest.fixture
def small_disk(tmp_path: Path) -> t.Iterator[Path]:
    """A real 64 KiB tmpfs (root only), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; the filler file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    failure = 0
    try:
        while not failure:
            try:
                os.write(fd, b"\0" * 512)
            except OSError as exc:
                failure = exc.errno or -1
    finally:
        os.close(fd)
    assert failure == errno.ENOSPC
    return filler


@pytest.mark.slow
def test_a_full_disk_never_breaks_a_login(
    tmp_path: Path, clock: t.Any, small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The audit file's disk fills up while serving: sign-ins still work, the failure is
    logged once (not once per event), and its end when space is back."""
    path = small_disk / "audit.log"
    ss = make_ss(tmp_path, clock, APP_CONFIG + f'\n[log]\naudit_file = "{path}"\n')
    try:
        ss.h.login("alice")
        filler = fill(small_disk)  # the audit file's last page has room for a few lines
        for _ in range(40):
            assert ss.h.login("bob")
            resp = ss.h.api("/api/firstfactor", {"username": "bob", "password": "no"})
            assert resp.status_int == 401
        messages = [r.getMessage() for r in caplog.records if r.name == "authctl.audit"]
        assert len([m for m in messages if "outage started" in m]) == 1, messages
        assert "No space left on device" in messages[0] or "bytes written" in messages[0]
        filler.unlink()
        ss.h.login("alice")
        messages = [r.getMessage() for r in caplog.records if r.name == "authctl.audit"]
        assert len(messages) == 2
        assert "outage ended" in messages[-1]
        whole, cut = [], []
        for raw in path.read_text().splitlines():
            try:
                whole.append(json.loads(raw))
            except json.JSONDecodeError:
                cut.append(raw)
        assert len(cut) <= 1  # a line the full disk cut short, on a line of its own
        assert all(raw.startswith('{"ts": ') for raw in cut)
        assert whole[0]["user"] == "alice"
        assert whole[-1]["user"] == "alice"
        assert 1 < len(whole) < 80
    finally:
        audit.configure(None)


# --------------------------------------------------------------------------- a real server

SERVE_WAYS = [pytest.param((), id="single"), pytest.param(("--workers", "2"), id="workers2")]


def wait_for(what: t.Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("extra", SERVE_WAYS)
def test_logrotate_move_then_sighup_reopens_on_a_real_server(
    tmp_path: Path, extra: tuple[str, ...]
) -> None:
    """logrotate moves the file and sends SIGHUP: every serving process (with --workers the
    parent forwards the signal) writes to a new 0600 file from then on, nothing more to the
    old one; the reload SIGHUP also makes is one config_reload line; no password anywhere."""
    from tests.test_serve import SQLITE_CONFIG
    from tests.test_serve import Server
    from tests.test_serve import make_folder

    folder = make_folder(tmp_path / "site", SQLITE_CONFIG + '\n[log]\naudit_file = "audit.log"\n')
    path, moved = folder / "audit.log", folder / "audit.log.1"
    srv = Server(folder, extra)
    processes = 3 if extra else 1  # the parent writes config_reload, each worker the rest
    try:
        for _ in range(6):  # a new connection each: with --workers, both workers answer
            assert srv.login("alice").status == 200
        assert srv.request("GET", "/api/health").status == 200
        assert [e["event"] for e in lines(path)] == ["login"] * 6
        path.rename(moved)
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "".join(srv.lines).count("audit log reopened") == processes)
        for _ in range(10):
            assert srv.login("alice").status == 200
        wait_for(lambda: path.exists() and len(lines(path)) >= 11)
        assert len(lines(moved)) == 6
        found = lines(path)
        assert sorted(e["event"] for e in found) == ["config_reload"] + ["login"] * 10
        reload_line = next(e for e in found if e["event"] == "config_reload")
        assert (reload_line["result"], reload_line["reason"]) == ("success", "reloaded")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert srv.proc.poll() is None
    finally:
        assert srv.stop() == 0
    for text in (path.read_text(), moved.read_text(), "".join(srv.lines)):
        assert PASSWORDS["alice"] not in text


@pytest.mark.slow
@pytest.mark.parametrize("extra", SERVE_WAYS)
def test_serve_refuses_to_start_when_the_audit_file_cannot_be_opened(
    tmp_path: Path, extra: tuple[str, ...]
) -> None:
    from tests.test_serve import AUTHCTL
    from tests.test_serve import SQLITE_CONFIG
    from tests.test_serve import make_folder

    config = SQLITE_CONFIG + '\n[log]\naudit_file = "no/such/folder/audit.log"\n'
    folder = make_folder(tmp_path / "site", config)
    done = subprocess.run(
        [AUTHCTL, "serve", "--address", "127.0.0.1:0", *extra],
        env={**os.environ, "AUTHCTL_CONFIG": str(folder / "authctl.toml")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    wanted = f"log.audit_file {folder}/no/such/folder/audit.log: cannot be opened for appending"
    assert wanted in done.stderr
    assert "fix:" in done.stderr


# --------------------------------------------------------------------------- edges


@pytest.mark.slow
def test_a_cut_line_is_ended_before_the_next_event(small_disk: Path) -> None:
    """A short write (the disk full but for ten bytes of the file's last page) leaves a cut
    line: the next write that works starts with a newline, so the next event is whole."""
    page = os.sysconf("SC_PAGE_SIZE")
    path = small_disk / "audit.log"
    path.write_bytes(b"#" * (page - 11) + b"\n")  # ten bytes left in its page
    filler = fill(small_disk)
    audit_log = AuditLog(path)
    audit_log.emit("logout", user="a", ip="::1", result="success", reason="user")
    assert audit_log.outage.down
    assert "only 10 of" in str(audit_log.outage.error)
    assert path.stat().st_size == page
    audit_log.emit("logout", user="b", ip="::1", result="success", reason="user")  # ENOSPC
    assert path.stat().st_size == page
    filler.unlink()
    audit_log.emit("logout", user="c", ip="::1", result="success", reason="user")
    audit_log.emit("logout", user="d", ip="::1", result="success", reason="user")
    assert not audit_log.outage.down
    audit_log.close()
    _, cut, *rest = path.read_text().splitlines()
    assert cut == '{"ts": "20'  # ten bytes of the first event
    assert [json.loads(raw)["user"] for raw in rest] == ["c", "d"]


def test_reopen_that_fails_keeps_writing_to_the_old_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    audit_log = AuditLog(folder / "audit.log")
    folder.rename(tmp_path / "moved")
    (tmp_path / "logs").write_text("a file where the folder was")
    audit_log.reopen()
    assert "still writing to the file opened before" in caplog.text
    audit_log.emit("logout", user="alice", ip="::1", result="success", reason="user")
    audit_log.close()
    audit_log.close()
    assert [e["user"] for e in lines(tmp_path / "moved" / "audit.log")] == ["alice"]


def test_configure_swaps_the_process_log_and_its_hangup_callback(tmp_path: Path) -> None:
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    try:
        first = audit.configure(one)
        assert audit.configure(one) is first
        audit.emit("logout", user="a", ip="::1", result="success", reason="user")
        second = audit.configure(two)
        assert audit.current() is second
        audit.emit("logout", user="b", ip="::1", result="success", reason="user")
        one.rename(tmp_path / "one.log.1")
        two.rename(tmp_path / "two.log.1")
        hup.hangup()  # only the log in force reopens
        assert two.exists()
        assert not one.exists()
        with pytest.raises(AuditError):
            audit.configure(tmp_path / "none" / "x.log")
        assert audit.current() is second  # a failed configure changes nothing
    finally:
        assert isinstance(audit.configure(None), NullAuditLog)
    audit.emit("logout", user="c", ip="::1", result="success", reason="user")  # nowhere
    assert [e["user"] for e in lines(tmp_path / "one.log.1")] == ["a"]
    assert [e["user"] for e in lines(tmp_path / "two.log.1")] == ["b"]
    assert lines(two) == []
    assert audit.current().path is None
    assert [cb for cb in hup.callbacks() if getattr(cb, "__self__", None) is second] == []


def test_cli_audit_without_a_file_and_with_one_gone_meanwhile(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ValueError, match="unknown audit event"):
        audit.for_cli(None).emit("password:x", user="alice")
    audit.for_cli(None).emit("totp_added", user="alice")  # off: nothing, no error
    path = tmp_path / "audit.log"
    trail = audit.for_cli(path)
    path.unlink()
    path.mkdir()
    trail.emit("totp_added", user="alice")  # the change is made: logged, not raised
    assert "event totp_added not written" in caplog.text


def test_config_reload_events(tmp_path: Path) -> None:
    """A reload that applies, a file that does not validate, a valid one that cannot be
    applied; a quiet reloader (a --workers worker) writes none."""
    path = tmp_path / "authctl.toml"
    text = APP_CONFIG.replace('default_policy = "deny"', 'default_policy = "one_factor"')
    path.write_text(text)
    (tmp_path / "users.toml").write_text("")
    log_path = tmp_path / "audit.log"
    audit.configure(log_path)
    try:
        config = load_config(path)
        reloader = Reloader(config, lambda _c: None)
        quiet = Reloader(config, lambda _c: None, report=False)
        path.write_text(text.replace('default_policy = "one_factor"', 'default_policy = "deny"'))
        assert reloader.reload()
        assert quiet.reload()
        path.write_text(text.replace('default_policy = "one_factor"', 'default_policy = "x"'))
        assert not reloader.reload()
        assert not quiet.reload()

        def broken(_config: object) -> None:
            raise ValueError("cannot")

        reloader.apply = broken
        path.write_text(text)
        assert not reloader.reload()
    finally:
        audit.configure(None)
    assert brief(lines(log_path)) == [
        ("config_reload", "", "", "success", "reloaded"),
        ("config_reload", "", "", "failure", "invalid_config"),
        ("config_reload", "", "", "failure", "not_applied"),
    ]
