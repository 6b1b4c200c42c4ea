"""The audit log (SPEC §7.4): one JSON line per security event, 0600, reopened on SIGHUP,
never a secret; and ``server.core.hup``, the SIGHUP callback registry it shares with reload."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from server.core import hup

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
