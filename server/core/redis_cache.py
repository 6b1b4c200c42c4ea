"""A per-process cache of the sessions ``RedisStore`` opened, invalidated through Redis pub/sub.

Why: verify is answered in waitress's I/O thread (``server.serve.inline``) only when the
session is in this process's memory; without a cache every verify with the Redis store is a
network round trip in a pool thread, about half the throughput. A cache shared by nothing
must learn of every change made by any process on any host, so every write to a session
(put, delete, discard, delete_user, a touch that moved ``last_activity``) publishes, in the
same MULTI/EXEC or script as the write itself, one message on ``<prefix>invalidate``:

- ``s:<hex SHA-256 of the id>``: that session changed (never the id itself, like the keys);
- ``u:<user name>``: every session of that user may have changed (``delete_user``).

Every process subscribes (one daemon thread, ``Subscriber``) and drops the named entries;
a message it does not understand empties the whole cache.

Fail safe: an entry is used only while the subscription is known healthy. The thread sends
``PING <n>`` on the pub/sub connection every ``PING_INTERVAL``; Redis answers in order with
the messages, so once the answer to a PING sent at time *s* is read, every invalidation
published before *s* has been read too. The cache is trusted only while the newest such *s*
is less than ``HEARTBEAT_BOUND`` old: a stalled, lagging or dropped channel (a killed
connection, a failover, a frozen Redis) makes every read go to Redis (in a pool thread)
within that bound, and the cache is emptied; it fills again once the thread has subscribed
anew and read a fresh answer. A change on one host is thus seen on every host within
``HEARTBEAT_BOUND`` plus delivery time, and normally within milliseconds.

A read races an invalidation: the store takes a ``Ticket`` (the subscription's epoch and
the count of invalidations seen) before it sends GET, and the entry is cached only if no
invalidation of that session (nor of any user) arrived meanwhile and the subscription is
the same. Entries live at most ``CACHE_MAX_AGE`` and never past the key's TTL; a full cache
(``CACHE_SIZE``) is emptied. After ``fork`` a child starts empty with no subscription.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import NamedTuple

import redis
from redis.client import PubSub
from redis.exceptions import RedisError

from server.core import blocking
from server.core.errors import StoreUnavailable
from server.core.outage import Outage
from server.core.sessions import Session

log = logging.getLogger("authctl.sessions")

#: Seconds between two PINGs on the pub/sub connection.
PING_INTERVAL = 0.1
#: The cache is used only while a PING sent less than this many seconds ago was answered.
HEARTBEAT_BOUND = 0.5
#: No answer to any PING for this long: the connection is taken for dead and opened again.
RECONNECT_AFTER = 2.0
#: Seconds between two attempts to subscribe again (doubled up to ``RETRY_MAX``).
RETRY_MIN = 0.1
RETRY_MAX = 1.0
#: Longest time, in seconds, a cached session is used without reading Redis.
CACHE_MAX_AGE = 1.0
#: Sessions cached per process; a full cache is emptied (a flood only costs reads).
CACHE_SIZE = 10_000
#: Invalidation slots (a session's slot remembers its last invalidation, for ``Ticket``).
SLOTS = 4096


class ChannelError(StoreUnavailable):
    """The invalidation channel failed (logged by the cache's outage, never raised out)."""

    part = "session cache invalidations"


class Ticket(NamedTuple):
    """Taken before a read from Redis; the read may be cached only if it is still valid."""

    epoch: int
    seen: int


def session_message(key: bytes) -> bytes:
    """The invalidation of one session, by its hashed key."""
    return b"s:" + key.hex().encode()


def user_message(username: str) -> bytes:
    """The invalidation of every session of ``username``."""
    return b"u:" + username.encode()


def _slot(key: bytes) -> int:
    return int.from_bytes(key[:4], "little") % SLOTS


_caches: weakref.WeakSet[SessionCache] = weakref.WeakSet()


def _after_fork_in_child() -> None:  # pragma: no cover - runs in forked children only
    for cache in list(_caches):
        cache.forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SessionCache:
    """Opened sessions of this process, keyed by hashed id, trusted only while the
    invalidation channel is healthy (see the module docstring). Thread-safe."""

    def __init__(
        self,
        client: redis.Redis,
        channel: str,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        max_age: float = CACHE_MAX_AGE,
        size: int = CACHE_SIZE,
    ) -> None:
        self._client = client
        self.channel = channel
        self._monotonic = monotonic
        self.max_age = max_age
        self.size = size
        self._lock = blocking.Lock()
        self._entries: dict[bytes, tuple[Session, float, int]] = {}
        self._by_user: dict[str, set[bytes]] = {}
        self._seen = 0  # invalidations seen (local and from the channel)
        self._slot_seen = [0] * SLOTS
        self._user_seen = 0
        self._epoch = 0  # changes on every subscription and every drop
        #: Send time of the newest answered PING of the current subscription (-inf: none).
        self.heartbeat = -math.inf
        self._closed = False
        self._thread: Subscriber | None = None
        self.outage = Outage("session cache invalidations (Redis pub/sub)", log, monotonic)
        _caches.add(self)

    # ------------------------------------------------------------------ readers

    def healthy(self) -> bool:
        """True while the channel answered a PING sent less than ``HEARTBEAT_BOUND`` ago."""
        return self._monotonic() - self.heartbeat < HEARTBEAT_BOUND

    def lookup(self, key: bytes, session_id: str) -> Session | None:
        """The cached session under ``key`` when it may be trusted now, else None (a miss)."""
        if self._thread is None:
            blocking.check()  # starting a thread waits for it: not in the I/O thread
            self.start()
        if not self.healthy():
            if self._entries:
                self.clear()  # lagging or dropped: nothing read before is trusted again
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        session, good_until, epoch = entry
        if epoch != self._epoch or self._monotonic() >= good_until or session.id != session_id:
            return None
        return session

    def ticket(self) -> Ticket | None:
        """Taken before a read; None when the channel is not healthy (nothing is cached)."""
        if not self.healthy():
            return None
        return Ticket(self._epoch, self._seen)

    def store(
        self, ticket: Ticket, key: bytes, session: Session, ttl: float, read_at: float
    ) -> None:
        """Cache ``session``, read under ``ticket`` at ``read_at`` with ``ttl`` seconds left,
        unless it may have changed since (an invalidation of it or of any user arrived, the
        subscription changed or is unhealthy)."""
        with self._lock:
            if (
                self._closed
                or ticket.epoch != self._epoch
                or self._slot_seen[_slot(key)] > ticket.seen
                or self._user_seen > ticket.seen
                or not self.healthy()
            ):
                return
            if len(self._entries) >= self.size:
                self._entries.clear()
                self._by_user.clear()
            self._entries[key] = (session, read_at + min(self.max_age, ttl), self._epoch)
            if session.username is not None:
                self._by_user.setdefault(session.username, set()).add(key)

    # ------------------------------------------------------------------ invalidation

    def forget(self, key: bytes) -> None:
        """Drop one session (a write by this process, or a message naming it)."""
        with self._lock:
            self._seen += 1
            self._slot_seen[_slot(key)] = self._seen
            entry = self._entries.pop(key, None)
            if entry is not None and entry[0].username is not None:
                keys = self._by_user.get(entry[0].username)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._by_user[entry[0].username]

    def forget_user(self, username: str) -> None:
        """Drop every session of ``username``."""
        with self._lock:
            self._seen += 1
            self._user_seen = self._seen
            for key in self._by_user.pop(username, ()):
                self._entries.pop(key, None)

    def clear(self) -> None:
        """Drop everything, and every read under way (a new epoch)."""
        with self._lock:
            self._seen += 1
            self._epoch += 1
            self._entries.clear()
            self._by_user.clear()

    def received(self, data: bytes) -> None:
        """Apply one message of the channel; one not understood empties the cache."""
        if data.startswith(b"s:"):
            try:
                key = bytes.fromhex(data[2:].decode("ascii"))
            except ValueError:
                key = b""
            if len(key) == 32:
                self.forget(key)
                return
        elif data.startswith(b"u:"):
            try:
                self.forget_user(data[2:].decode("utf-8"))
                return
            except UnicodeDecodeError:
                pass
        self.clear()

    # ------------------------------------------------------------------ the subscription

    def start(self) -> None:
        """Start this process's subscriber thread (once; again in a forked child)."""
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = Subscriber(self)
        self._thread.start()

    def subscribed(self) -> None:
        """A new subscription: nothing cached before it is trusted."""
        self.clear()

    def answered(self, sent: float) -> None:
        """A PING sent at ``sent`` (monotonic) was answered on the current subscription."""
        if sent > self.heartbeat:
            self.heartbeat = sent
        self.outage.ok()

    def dropped(self, error: BaseException) -> None:
        """The subscription failed: bypass and empty the cache until a new one answers."""
        self.heartbeat = -math.inf
        self.clear()
        if not self._closed:
            self.outage.failed(ChannelError(f"{type(error).__name__}: {error}"))

    def forked(self) -> None:
        """In a forked child: no subscription, no entries, fresh locks."""
        self._lock = blocking.Lock()
        self._thread = None
        self.heartbeat = -math.inf
        self._epoch += 1
        self._entries = {}
        self._by_user = {}

    def close(self) -> None:
        """Stop the subscriber and forget everything."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self.heartbeat = -math.inf
        self.clear()
        if thread is not None:
            thread.stop()

    @property
    def client(self) -> redis.Redis:
        """The client the subscription is made with."""
        return self._client

    def __len__(self) -> int:
        return len(self._entries)


class Subscriber(threading.Thread):
    """The thread that reads the invalidation channel and answers for its health."""

    def __init__(self, cache: SessionCache) -> None:
        super().__init__(name="authctl-session-invalidations", daemon=True)
        self._cache = cache
        self._stopped = threading.Event()

    def stop(self) -> None:
        """Ask the thread to end (within ``PING_INTERVAL``) and wait a little for it."""
        self._stopped.set()
        if self is not threading.current_thread() and self.is_alive():
            self.join(timeout=2 * PING_INTERVAL)

    def run(self) -> None:
        delay = RETRY_MIN
        while not self._stopped.is_set():
            pubsub = self._cache.client.pubsub()
            try:
                if self._listen(pubsub):
                    delay = RETRY_MIN  # it was healthy: the next failure is new
            except (RedisError, OSError, ValueError, ChannelError) as exc:
                self._cache.dropped(exc)
            finally:
                with contextlib.suppress(RedisError, OSError, ValueError):
                    pubsub.close()
            if self._stopped.wait(delay):
                break
            delay = min(RETRY_MAX, delay * 2)

    def _listen(self, pubsub: PubSub) -> bool:
        """Subscribe and read until stopped or failed (raises); True when it was healthy."""
        cache = self._cache
        monotonic = time.monotonic
        pubsub.subscribe(cache.channel)
        confirmed = False
        healthy = False
        pings: dict[bytes, float] = {}
        counter = 0
        next_ping = 0.0
        last_answer = monotonic()
        while not self._stopped.is_set():
            now = monotonic()
            if now - last_answer > RECONNECT_AFTER:
                raise ChannelError(f"no answer to PING for {RECONNECT_AFTER:g} s")
            if now >= next_ping:
                counter += 1
                tag = str(counter)
                pings[tag.encode()] = now
                pubsub.ping(tag)
                next_ping = now + PING_INTERVAL
                if len(pings) > 64:  # unanswered ones: keep the newest
                    for old in sorted(pings, key=pings.__getitem__)[:-32]:
                        del pings[old]
            message = pubsub.get_message(timeout=max(0.0, next_ping - monotonic()))
            if message is None:
                continue
            kind = message["type"]
            if kind == "message":
                cache.received(bytes(message["data"]))
            elif kind == "subscribe":
                confirmed = True
                cache.subscribed()
            elif kind == "pong":
                sent = pings.pop(bytes(message["data"]), None)
                if sent is not None:
                    last_answer = monotonic()
                    if confirmed:
                        cache.answered(sent)
                        healthy = True
            elif kind in ("unsubscribe", "punsubscribe"):
                raise ChannelError("unsubscribed")
        return healthy
