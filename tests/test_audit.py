"""The audit log (SPEC §7.4): one JSON line per security event, 0600, reopened on SIGHUP,
never a secret; and ``server.core.hup``, the SIGHUP callback registry it shares with reload."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import threading
import time
import typing as t
from pathlib import Path

import pytest

from server.core import hup
from server.core.audit import EVENTS
from server.core.audit import MAX_FIELD
from server.core.audit import AuditError
from server.core.audit import AuditLog
from server.core.audit import NullAuditLog

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
    assert second["event"] == "ban" and second["user"] == ""


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
    assert raw.count(b"\n") == 1 and raw.endswith(b"\n")
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
