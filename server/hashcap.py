"""A cap on concurrent password hashing, so a login flood cannot starve forward-auth checks.

Attack defended (security.md §2.F "argon2 CPU/memory flood", §3.4 "concurrent hashes are
capped"): each argon2 verification holds a worker thread, a core and ``memory_kib`` of RAM
for a noticeable time. Without a cap, a few dozen parallel logins (or Basic-auth requests
with wrong passwords) occupy every waitress thread, and cookie verifies queue behind them;
with many parallel hashes memory use multiplies too. :class:`HashGate` lets at most
``max_concurrent`` hashes run; a caller that cannot get a slot within ``wait_seconds`` gets
:class:`Busy`, which the web layer answers like any failed login (never a 500, and never a
regulation failure: no password was tried). The default leaves two threads for verifies.

Pure core: standard library only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ParamSpec
from typing import TypeVar

from server.errors import InvalidCredentials

P = ParamSpec("P")
R = TypeVar("R")

#: How long a login waits for a hashing slot before giving up, by default.
DEFAULT_WAIT_SECONDS = 2.0


class Busy(InvalidCredentials):
    """No hashing slot came free in time: answer like a failed login, do not count it."""


def default_max_concurrent(threads: int) -> int:
    """Hashes allowed at once with ``threads`` server threads: all but two, at least one."""
    return max(1, threads - 2)


class HashGate:
    """At most ``max_concurrent`` callers inside :meth:`slot` at once; others wait, then give up.

    Raises:
        ValueError: ``max_concurrent`` < 1 or ``wait_seconds`` < 0.
    """

    def __init__(self, max_concurrent: int, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        if wait_seconds < 0:
            raise ValueError("wait_seconds cannot be negative")
        self.max_concurrent = max_concurrent
        self.wait_seconds = wait_seconds
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._count_lock = threading.Lock()
        self._in_use = 0

    def __repr__(self) -> str:
        return f"<HashGate {self._in_use}/{self.max_concurrent} in use>"

    @property
    def in_use(self) -> int:
        """How many callers hold a slot now."""
        return self._in_use

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the ``with`` body.

        Raises:
            Busy: no slot came free within ``wait_seconds``.
        """
        if not self._slots.acquire(timeout=self.wait_seconds):
            raise Busy()
        with self._count_lock:
            self._in_use += 1
        try:
            yield
        finally:
            with self._count_lock:
                self._in_use -= 1
            self._slots.release()

    def run(self, work: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``work(*args, **kwargs)`` inside a slot (e.g. ``gate.run(hasher.verify, phc, pw)``).

        Raises:
            Busy: no slot came free within ``wait_seconds``; ``work`` did not run.
        """
        with self.slot():
            return work(*args, **kwargs)
