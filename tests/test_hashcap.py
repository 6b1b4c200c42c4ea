"""Tests for the cap on concurrent password hashing (``server.core.hashcap``), with real threads."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from server.core.errors import InvalidCredentials
from server.core.hashcap import Busy
from server.core.hashcap import HashGate
from server.core.hashcap import default_max_concurrent
from tests.apphelpers import build


@pytest.mark.parametrize(("threads", "cap"), [(1, 1), (2, 1), (3, 1), (4, 2), (8, 6), (64, 62)])
def test_default_leaves_two_threads(threads: int, cap: int) -> None:
    """The default cap is threads - 2, and at least 1."""
    assert default_max_concurrent(threads) == cap


@pytest.mark.parametrize(("cap", "wait"), [(0, 1.0), (-1, 1.0), (1, -0.1)])
def test_invalid_arguments(cap: int, wait: float) -> None:
    """A cap below 1 or a negative wait is refused."""
    with pytest.raises(ValueError, match=r"must be at least 1|cannot be negative"):
        HashGate(cap, wait)


def test_busy_is_answered_like_bad_credentials() -> None:
    """Busy is an InvalidCredentials, so an unhandled one still ends as a failed login."""
    assert issubclass(Busy, InvalidCredentials)


def test_never_more_than_the_cap_at_once() -> None:
    """Twelve threads through a gate of 3: never more than 3 inside, and all of them finish."""
    gate = HashGate(3, wait_seconds=10)
    inside = 0
    peak = 0
    lock = threading.Lock()
    start = threading.Barrier(12)
    done: list[int] = []

    def work(i: int) -> None:
        nonlocal inside, peak
        start.wait()
        with gate.slot():
            with lock:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.02)
            with lock:
                inside -= 1
                done.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 3
    assert sorted(done) == list(range(12))
    assert gate.in_use == 0


def test_busy_when_no_slot_frees_in_time() -> None:
    """While every slot is held, another caller gets Busy after the wait; then it gets in."""
    gate = HashGate(1, wait_seconds=0.05)
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with gate.slot():
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(10)
    assert gate.in_use == 1
    assert repr(gate) == "<HashGate 1/1 in use>"
    began = time.monotonic()
    with pytest.raises(Busy):
        gate.run(lambda: None)
    assert time.monotonic() - began >= 0.04
    release.set()
    thread.join()
    assert gate.run(lambda: "ran") == "ran"


def test_slot_is_released_when_the_work_fails() -> None:
    """An exception inside the slot releases it, so the gate does not leak capacity."""
    gate = HashGate(1, wait_seconds=0)

    def boom() -> None:
        raise RuntimeError("argon2 failed")

    for _ in range(3):
        with pytest.raises(RuntimeError):
            gate.run(boom)
    assert gate.in_use == 0
    assert gate.run(lambda: 1) == 1


def test_run_passes_arguments() -> None:
    """run() calls the work with its positional and keyword arguments and returns its result."""
    gate = HashGate(2)

    def verify(phc: str, password: str, *, strict: bool) -> tuple[str, str, bool]:
        return phc, password, strict

    assert gate.run(verify, "$argon2id$", "pw", strict=True) == ("$argon2id$", "pw", True)


def test_hashing_runs_at_nice_19_and_leaves_other_threads_alone(tmp_path: Path) -> None:
    """argon2 gets the CPU time verifies leave, but some even when they leave none."""

    def at_nice_19() -> bool:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 19

    identities = build(tmp_path, time.time).app.portal.identities
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert identities._hash(at_nice_19) is True  # the hashing thread
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine  # not this one


def test_one_client_gets_only_its_share() -> None:
    """A client over its share is refused at once; others (and it, later) get in. IPv6
    addresses of one /64 are one client; the share is given back on errors too."""
    gate = HashGate(6, wait_seconds=0)
    assert (gate.per_client, gate.max_padding) == (2, 3)
    with gate.client("192.0.2.1"), gate.client("::ffff:192.0.2.1"):
        assert gate.client_in_use("192.0.2.1") == 2
        with pytest.raises(Busy), gate.client("192.0.2.1"):
            pass
        with gate.client("192.0.2.2"):
            pass

    def fail_inside() -> None:
        with gate.client("2001:db8::1"), gate.client("2001:db8::ffff"):
            assert gate.client_in_use("2001:db8::2") == 2
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail_inside()
    assert gate.client_in_use("2001:db8::1") == 0
    with gate.client("2001:db8:0:1::1"), gate.client("2001:db8:0:2::1"):
        pass


@pytest.mark.parametrize(
    ("ip", "key"),
    [("192.0.2.1", "192.0.2.1"), ("2001:db8::5", "2001:db8::/64"), ("junk", ""), (None, "")],
)
def test_client_key(ip: str | None, key: str) -> None:
    from server.core.hashcap import client_key

    assert client_key(ip) == key


def test_padding_slots_are_capped_and_take_a_hash_slot() -> None:
    """Banned attempts wait in at most ``max_padding`` slots, each one of the shared slots."""
    gate = HashGate(4, wait_seconds=0, max_padding=2)
    with gate.pad_slot(), gate.pad_slot():
        assert gate.in_use == 2
        with pytest.raises(Busy), gate.pad_slot():
            pass
        with gate.slot(), gate.slot(), pytest.raises(Busy), gate.slot():
            pass
    assert gate.in_use == 0
    with pytest.raises(ValueError, match="at least 1"):
        HashGate(4, per_client=0)


def test_timer_floor_is_the_upper_decile_and_pad_sleeps_the_rest() -> None:
    """The floor is the 90th percentile of recent durations; pad sleeps what is left of it."""
    from server.core.hashcap import HashTimer

    timer = HashTimer(samples=10)
    assert timer.floor() == 0.0
    for ms in range(10, 110, 10):
        timer.add(ms / 1000)
    assert timer.floor() == pytest.approx(0.09)
    slept: list[float] = []
    timer.pad(5.0, clock=lambda: 5.03, sleep=slept.append)
    timer.pad(5.0, clock=lambda: 5.2, sleep=slept.append)
    assert slept == [pytest.approx(0.06)]
