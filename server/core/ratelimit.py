"""Sliding-window rate limits for the self-service endpoints, on the injected clock.

Why: one-time codes, reset links and reset tokens are guessable only by volume, and each
request can also make authctl send an email. Without a limit an attacker can mail-bomb a user
(or use authctl as a spam relay towards the addresses in the users file), flood the SMTP relay,
or try many codes and tokens. Regulation (:mod:`server.core.regulation`) bans after failed
*passwords*; these limits cap *requests*, failed or not, per user and per client IP, in the
spirit of Authelia's endpoint rate limits (e.g. reset start 5/10 min, 10/15 min, 15/30 min).

Each :class:`RateLimiter` holds several ``(count, window)`` limits that must all hold: a hit is
allowed when fewer than ``count`` hits of that key were recorded in the last ``window`` seconds
for every limit. Refused hits are not recorded, so a client that keeps hammering still gets
its allowance back as the window slides (no self-extending lockout).

The state lives in memory, in this process only: with ``serve --workers N`` each worker keeps
its own counters, so the effective limit is up to N times the configured one (still bounded),
and a restart forgets them. Memory is bounded too: at most ``max_keys`` keys are tracked; past
that the longest-idle key is forgotten first (an attacker would need that many addresses to
evict a counter, and gains one fresh allowance by it).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections import deque
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass

#: Keys tracked per limiter before the longest-idle one is forgotten.
DEFAULT_MAX_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``count`` hits per ``window`` seconds."""

    count: int
    window: float

    def __post_init__(self) -> None:
        if self.count < 1 or not self.window > 0:
            raise ValueError("a rate limit needs count >= 1 and a positive window")


def limits(*pairs: tuple[int, float]) -> tuple[Limit, ...]:
    """``limits((3, 300), (5, 600))`` as a tuple of :class:`Limit`."""
    return tuple(Limit(count, window) for count, window in pairs)


class RateLimiter:
    """Several sliding-window limits over string keys (a user name, an IP); thread-safe."""

    def __init__(
        self,
        rules: Sequence[Limit],
        *,
        now: Callable[[], float] = time.time,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if not rules:
            raise ValueError("a rate limiter needs at least one limit")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.rules = tuple(rules)
        self._now = now
        self._max_keys = max_keys
        self._horizon = max(rule.window for rule in self.rules)
        self._keep = max(rule.count for rule in self.rules)
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many keys are tracked now."""
        return len(self._hits)

    def _wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` may hit again (0: now). Caller holds the lock."""
        hits = self._hits.get(key)
        if not hits:
            return 0.0
        while hits and hits[0] <= now - self._horizon:
            hits.popleft()
        wait = 0.0
        for rule in self.rules:
            inside = [when for when in hits if when > now - rule.window]
            if len(inside) >= rule.count:
                # the oldest hit that must leave the window before one more fits
                oldest = inside[len(inside) - rule.count]
                wait = max(wait, oldest + rule.window - now)
        return wait

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may hit again; 0 when a hit would be allowed now."""
        with self._lock:
            return self._wait(key, self._now())

    def hit(self, key: str) -> float:
        """Record a hit of ``key`` if it is allowed and return 0; else the seconds to wait."""
        return self.hit_all([(self, key)])

    @staticmethod
    def hit_all(pairs: Iterable[tuple[RateLimiter, str]]) -> float:
        """Record one hit on each ``(limiter, key)`` only if every one of them allows it.

        Returns 0 when recorded, else the longest wait among the refusals (nothing recorded).
        Used to limit one request per user *and* per IP at once: a request refused for its IP
        does not eat the user's allowance. Each limiter is checked under its own lock, so two
        racing requests may overshoot a limit by one; the limits are coarse by nature.
        """
        pairs = list(pairs)
        wait = 0.0
        for limiter, key in pairs:
            wait = max(wait, limiter.retry_after(key))
        if wait > 0:
            return wait
        for limiter, key in pairs:
            limiter._record(key)
        return 0.0

    def _record(self, key: str) -> None:
        with self._lock:
            now = self._now()
            hits = self._hits.get(key)
            if hits is None:
                if len(self._hits) >= self._max_keys:
                    self._evict(now)
                hits = deque(maxlen=self._keep)
                self._hits[key] = hits
            else:
                self._hits.move_to_end(key)
            hits.append(now)

    def _evict(self, now: float) -> None:
        """Drop keys with no hit inside any window; if none, the longest-idle one."""
        stale = [k for k, hits in self._hits.items() if not hits or hits[-1] <= now - self._horizon]
        for key in stale:
            del self._hits[key]
        if len(self._hits) >= self._max_keys:
            self._hits.popitem(last=False)

    def reset(self, key: str) -> None:
        """Forget ``key``'s hits (for an administrator, or a test)."""
        with self._lock:
            self._hits.pop(key, None)


def retry_after_header(wait: float) -> str:
    """The ``Retry-After`` value (whole seconds, at least 1) for a wait in seconds."""
    return str(max(1, math.ceil(wait)))
