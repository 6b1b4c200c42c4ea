"""A cap on concurrent password hashing, so a login flood cannot starve forward-auth checks.

Attack defended (security.md §2.F "argon2 CPU/memory flood", §3.4 "concurrent hashes are
capped"): each argon2 verification holds a worker thread, a core and ``memory_kib`` of RAM
for a noticeable time. Without a cap, a few dozen parallel logins (or Basic-auth requests
with wrong passwords) occupy every waitress thread, and cookie verifies queue behind them;
with many parallel hashes memory use multiplies too. :class:`HashGate` lets at most
``max_concurrent`` hashes run; a caller that cannot get a slot within ``wait_seconds`` gets
:class:`Busy`, which the web layer answers like any failed login (never a 500, and never a
regulation failure: no password was tried). The default leaves two threads for verifies.

Two more caps share the same slots, so everything a sign-in holds a thread for stays inside
``max_concurrent`` (security.md §2.F, "one flooding client fills every hashing slot"):

- :meth:`HashGate.client` caps what ONE client (an IP; an IPv6 /64, see :func:`client_key`)
  may have in flight, so one address flooding logins leaves the other slots to other users.
- :meth:`HashGate.pad_slot` is where a banned attempt waits out the time a hash would have
  taken (no argon2 at all, so a banned flood costs no CPU and no memory); at most
  ``max_padding`` slots may wait like that, so even a flood of banned attempts from many
  addresses leaves the rest of the slots to real hashes.

:class:`HashTimer` keeps how long recent hashes with the configured parameters took: failed
sign-ins and banned attempts are padded to it, so their time does not tell whether the user
exists, is banned or has a hash with other (cheaper) parameters (SPEC §3.4).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ParamSpec
from typing import TypeVar

from server.core.errors import InvalidCredentials

P = ParamSpec("P")
R = TypeVar("R")

#: How long a login waits for a hashing slot before giving up, by default.
DEFAULT_WAIT_SECONDS = 2.0


class Busy(InvalidCredentials):
    """No hashing slot came free in time: answer like a failed login, do not count it."""


def default_max_concurrent(threads: int) -> int:
    """Hashes allowed at once with ``threads`` server threads: all but two, at least one."""
    return max(1, threads - 2)


def default_per_client(max_concurrent: int) -> int:
    """Slots one client may hold at once: a third of them, at least one.

    Two with the default 8 threads: a household or an office behind one NAT still signs in
    at hash speed, and a single flooding address leaves two thirds of the slots to others.
    """
    return max(1, max_concurrent // 3)


def default_max_padding(max_concurrent: int) -> int:
    """Slots banned attempts may wait in at once: half of them, at least one."""
    return max(1, max_concurrent // 2)


def client_key(ip: str | None) -> str:
    """The key a client's slots are counted under: its IPv4 address, or its IPv6 /64.

    An IPv6 host usually holds a whole /64, so counting single addresses would let it
    rotate through them. Unparseable or missing addresses share one key (fail closed).
    """
    text = (ip or "").strip()
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class HashGate:
    """At most ``max_concurrent`` callers inside :meth:`slot` at once; others wait, then give up.

    Raises:
        ValueError: ``max_concurrent`` < 1 or ``wait_seconds`` < 0.
    """

    def __init__(
        self,
        max_concurrent: int,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        *,
        per_client: int | None = None,
        max_padding: int | None = None,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        if wait_seconds < 0:
            raise ValueError("wait_seconds cannot be negative")
        if per_client is None:
            per_client = default_per_client(max_concurrent)
        if max_padding is None:
            max_padding = default_max_padding(max_concurrent)
        if per_client < 1 or max_padding < 1:
            raise ValueError("per_client and max_padding must be at least 1")
        self.max_concurrent = max_concurrent
        self.wait_seconds = wait_seconds
        self.per_client = per_client
        self.max_padding = max_padding
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._padding = threading.BoundedSemaphore(max_padding)
        self._count_lock = threading.Lock()
        self._in_use = 0
        self._clients: dict[str, int] = {}

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

    def client_in_use(self, ip: str | None) -> int:
        """How many slots the client of ``ip`` holds now (see :meth:`client`)."""
        return self._clients.get(client_key(ip), 0)

    @contextmanager
    def client(self, ip: str | None) -> Iterator[None]:
        """Count the ``with`` body against the client's share (``per_client``), never waiting.

        Taken before :meth:`slot` or :meth:`pad_slot`, so a client already holding its share
        is refused before it takes a slot from anyone else.

        Raises:
            Busy: the client has ``per_client`` sign-ins in flight already.
        """
        key = client_key(ip)
        with self._count_lock:
            held = self._clients.get(key, 0)
            if held >= self.per_client:
                raise Busy()
            self._clients[key] = held + 1
        try:
            yield
        finally:
            with self._count_lock:
                left = self._clients[key] - 1
                if left:
                    self._clients[key] = left
                else:
                    del self._clients[key]

    @contextmanager
    def pad_slot(self) -> Iterator[None]:
        """A slot in which a refused attempt waits out a hash's time (at most ``max_padding``).

        Never waits: a banned flood gets fast refusals, like any flood when the slots are full.

        Raises:
            Busy: ``max_padding`` attempts are waiting already, or every slot is taken.
        """
        if not self._padding.acquire(blocking=False):
            raise Busy()
        try:
            with self.slot():
                yield
        finally:
            self._padding.release()

    def run(self, work: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``work(*args, **kwargs)`` inside a slot (e.g. ``gate.run(hasher.verify, phc, pw)``).

        Raises:
            Busy: no slot came free within ``wait_seconds``; ``work`` did not run.
        """
        with self.slot():
            return work(*args, **kwargs)


#: How many recent hash durations :class:`HashTimer` keeps.
TIMER_SAMPLES = 16
#: Which of them the floor is: the upper decile, so that a hash with the configured
#: parameters rarely ends after the floor (its own time would show) and one outlier does not
#: hold every failed sign-in for long.
TIMER_QUANTILE = 0.9


class HashTimer:
    """The time a verification with the configured parameters takes, from recent ones.

    :meth:`floor` is what every failed sign-in and every banned attempt is padded to; it
    follows the machine's load because each verify with the configured parameters (the dummy
    one for unknown users included) adds its duration. Thread-safe.
    """

    def __init__(self, samples: int = TIMER_SAMPLES) -> None:
        self._durations: deque[float] = deque(maxlen=samples)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        """Record one verification's duration."""
        with self._lock:
            self._durations.append(seconds)

    def floor(self) -> float:
        """The padded time of a failed sign-in, in seconds (0 before any sample)."""
        with self._lock:
            ordered = sorted(self._durations)
        if not ordered:
            return 0.0
        return ordered[int(TIMER_QUANTILE * (len(ordered) - 1))]

    def pad(
        self,
        started: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Sleep until :meth:`floor` seconds have passed since ``started`` (a ``clock`` time)."""
        left = self.floor() - (clock() - started)
        if left > 0:
            sleep(left)
