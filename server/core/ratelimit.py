"""Sliding-window rate limits for the self-service endpoints, counted in the storage database.

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

The hits live in the storage database (SPEC §7.2), not in this process: every worker of
``serve --workers N`` and every host on one PostgreSQL database counts against one limit, a
restart forgets nothing, and :meth:`RateLimiter.hit_all` checks and records all of a request's
limits (its user's and its IP's) in one storage transaction, so a request refused for its IP
does not eat its user's allowance and parallel requests never overshoot a limit. Keys are
namespaced by the limiter's name (``code_send_user:alice``). When the storage fails the error
is raised (:class:`server.core.errors.StoreUnavailable`): the request is refused (fail
closed), never let through uncounted. Old hits are purged at most once a minute per process,
on a hit.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import typing as t
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass

from server.core.errors import StoreUnavailable

log = logging.getLogger("server.ratelimit")

#: Seconds between two purges of old hits by one process.
PURGE_INTERVAL = 60.0


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


class HitStore(t.Protocol):
    """Where hits are counted: :class:`server.core.storage.Storage` (SQLite or PostgreSQL)."""

    def hit_rate_limits(
        self, hits: Sequence[tuple[str, Sequence[tuple[int, float]]]], now: float
    ) -> float:
        """Check every ``(key, [(count, window), …])`` and, only if all allow, record one hit
        per key and return 0; else record nothing and return the longest wait (atomic)."""
        ...  # pragma: no cover - a protocol

    def purge_rate_limits(self, before: float) -> int:
        """Forget hits older than ``before``; how many were removed."""
        ...  # pragma: no cover - a protocol


class RateLimits:
    """The limiters counted in one store, with its clock and its purge schedule."""

    def __init__(
        self,
        store: HitStore,
        *,
        now: Callable[[], float] = time.time,
        purge_interval: float = PURGE_INTERVAL,
    ) -> None:
        self.store = store
        self._now = now
        self._purge_interval = purge_interval
        self._horizon = 0.0
        self._next_purge = 0.0
        self._lock = threading.Lock()

    def limiter(self, name: str, rules: Sequence[Limit]) -> RateLimiter:
        """A limiter whose keys are counted as ``name:key``."""
        limiter = RateLimiter(name, rules, self)
        self._horizon = max(self._horizon, limiter.horizon)
        return limiter

    def hit_all(self, pairs: Iterable[tuple[RateLimiter, str]]) -> float:
        """See :meth:`RateLimiter.hit_all`."""
        hits: dict[str, list[tuple[int, float]]] = {}
        for limiter, key in pairs:
            if limiter.group is not self:
                raise ValueError("hit_all takes limiters of one store")
            hits[limiter.key(key)] = [(rule.count, rule.window) for rule in limiter.rules]
        if not hits:
            return 0.0
        now = self._now()
        wait = self.store.hit_rate_limits(list(hits.items()), now)
        self._maybe_purge(now)
        return wait

    def _maybe_purge(self, now: float) -> None:
        """Forget hits no window still sees, at most once per interval (a failure only logs:
        forgetting old hits late allows nothing)."""
        with self._lock:
            if now < self._next_purge:
                return
            self._next_purge = now + self._purge_interval
        try:
            self.store.purge_rate_limits(now - self._horizon)
        except StoreUnavailable as exc:
            log.warning("old rate-limit hits could not be purged: %s", exc)


class RateLimiter:
    """Several sliding-window limits over string keys (a user name, an IP), made by
    :meth:`RateLimits.limiter`; the hits are counted in its store."""

    def __init__(self, name: str, rules: Sequence[Limit], group: RateLimits) -> None:
        if not name or ":" in name:
            raise ValueError("a rate limiter needs a name without ':'")
        if not rules:
            raise ValueError("a rate limiter needs at least one limit")
        self.name = name
        self.rules = tuple(rules)
        self.group = group
        #: The longest window: older hits no longer count.
        self.horizon = max(rule.window for rule in self.rules)

    def __repr__(self) -> str:
        return f"<RateLimiter {self.name}>"

    def key(self, key: str) -> str:
        """The key ``key`` is counted under in the store (namespaced by the limiter)."""
        return f"{self.name}:{key}"

    def hit(self, key: str) -> float:
        """Record a hit of ``key`` if it is allowed and return 0; else the seconds to wait.

        Raises:
            StoreUnavailable: the store failed; refuse the request.
        """
        return self.group.hit_all([(self, key)])

    @staticmethod
    def hit_all(pairs: Iterable[tuple[RateLimiter, str]]) -> float:
        """Record one hit on each ``(limiter, key)`` only if every one of them allows it.

        Returns 0 when recorded, else the longest wait among the refusals (nothing recorded).
        Used to limit one request per user *and* per IP at once: a request refused for its IP
        does not eat the user's allowance. One store transaction, so racing requests (threads,
        workers, hosts) never overshoot a limit. No pairs: 0, the store is not asked.

        Raises:
            StoreUnavailable: the store failed; refuse the request.
            ValueError: the limiters belong to different stores.
        """
        pairs = list(pairs)
        if not pairs:
            return 0.0
        return pairs[0][0].group.hit_all(pairs)


def retry_after_header(wait: float) -> str:
    """The ``Retry-After`` value (whole seconds, at least 1) for a wait in seconds."""
    return str(max(1, math.ceil(wait)))
