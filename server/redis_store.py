"""Sessions in Redis (``session.store = "redis"``): shared by every process on every host.

SQLite shares sessions between the workers of one machine; several authctl hosts behind one
load balancer need a store they all reach, and Redis is the one self-hosters already run
(Authelia's choice too). The client is the ``redis`` package: a well-kept, typed client with
connection pooling and fork safety; this module only needs GET, SET, DEL, PEXPIRE and one
set per user.

Layout (``PREFIX`` = ``authctl:``):

- ``authctl:session:<hex SHA-256 of the id>`` -> ``session_to_json`` of the session, with
  the session's TTL. The id itself is never stored (a leaked dump or ``MONITOR`` output does
  not hand out live cookies), exactly like ``SQLiteStore``.
- ``authctl:user:<name>`` -> the set of that user's session keys, for ``delete_user``
  (password change, disable, removal). Its TTL is raised to the longest member's, never
  lowered, so the index outlives every session it lists (needs Redis >= 7.0: ``PEXPIRE`` NX
  and GT).

Failure handling (security.md §3 R5): every Redis error becomes ``SessionStoreError``,
which the web layer answers as "not signed in" (302/401), never 200. Connect and command
timeouts are ``TIMEOUT`` (1 s) and redis-py's own retries are off, so a stopped or
unreachable Redis costs one request at most ~1 s; after a failure the store stays "down"
for ``RETRY_AFTER`` seconds and fails at once (no thread waits on a dead server meanwhile),
then tries again, so it recovers by itself within about a second of Redis coming back.
``purge_expired`` has nothing to do: Redis expires keys itself.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import typing as t
from collections.abc import Callable
from dataclasses import replace

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import WatchError
from redis.retry import Retry

from server.blocking import check as check_blocking
from server.session_store import SessionStoreError
from server.session_store import hash_session_id
from server.session_store import session_from_json
from server.session_store import session_to_json
from server.sessions import Session

PREFIX = "authctl:"
#: Seconds allowed to connect to Redis, and to wait for one answer.
TIMEOUT = 1.0
#: After a failure, seconds during which calls fail at once instead of waiting on Redis.
RETRY_AFTER = 1.0
#: Attempts of an optimistic ``touch`` before giving up (another writer kept winning).
TOUCH_ATTEMPTS = 5

# Ends every session listed in a user's index, then the index; the count of sessions ended.
# One script, so a session created meanwhile is either ended or listed in a fresh index.
_DELETE_USER = """
local n = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    n = n + redis.call('DEL', ARGV[1] .. key)
end
redis.call('DEL', KEYS[1])
return n
"""


class RedisStore:
    """A ``SessionStore`` on Redis. Thread-safe (a connection pool) and fork-safe (redis-py
    opens new connections in a forked child).

    Raises (from every method):
        SessionStoreError: Redis is unreachable, timed out, refused the command, or holds a
            record that is not a session; also after ``close()``.
    """

    inline_reads = False  # no local cache: every read is a round trip to Redis

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = PREFIX,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._monotonic = monotonic
        self._down_until = 0.0
        self._closed = False
        self._lock = threading.Lock()
        self._delete_user = client.register_script(_DELETE_USER)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = PREFIX) -> RedisStore:
        """A store on the Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``), with
        short timeouts and no client-side retries.

        Nothing is sent yet: an unreachable Redis shows as errors on use (fail closed), so
        authctl starts, answers "log in", and recovers when Redis comes back.
        """
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=TIMEOUT,
            socket_timeout=TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
        )
        return cls(client, prefix=prefix)

    # ------------------------------------------------------------------ keys

    def _key(self, session_id: str) -> str:
        return f"{self._prefix}session:{hash_session_id(session_id).hex()}"

    def _user_key(self, username: str) -> str:
        return f"{self._prefix}user:{username}"

    # ------------------------------------------------------------------ error boundary

    def _call(self, operation: Callable[[], t.Any]) -> t.Any:
        """Run ``operation``; any Redis failure is a SessionStoreError (fail closed)."""
        check_blocking()  # a network round trip: never in waitress's I/O thread
        if self._closed:
            raise SessionStoreError("the session store is closed")
        if self._monotonic() < self._down_until:
            raise SessionStoreError("Redis failed a moment ago; not retrying yet")
        try:
            return operation()
        except (RedisError, OSError) as exc:
            self._down_until = self._monotonic() + RETRY_AFTER
            raise SessionStoreError(f"Redis: {type(exc).__name__}: {exc}") from None

    # ------------------------------------------------------------------ the protocol

    def get(self, session_id: str) -> Session | None:
        """The session under ``session_id``; Redis drops it when its TTL ends."""
        raw = self._call(lambda: self._redis.get(self._key(session_id)))
        if raw is None:
            return None
        return session_from_json(session_id, raw)

    def put(self, session: Session, ttl: float) -> None:
        """Insert or replace ``session`` for ``ttl`` seconds (and list it under its user)."""
        key = self._key(session.id)
        ms = max(1, math.ceil(ttl * 1000))
        record = session_to_json(session)

        def write() -> None:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, record, px=ms)
                if session.username is not None:
                    user_key = self._user_key(session.username)
                    pipe.sadd(user_key, key[len(self._prefix) + len("session:") :])
                    pipe.pexpire(user_key, ms, nx=True)  # a new index: this TTL
                    pipe.pexpire(user_key, ms, gt=True)  # an existing one: never shorter
                pipe.execute()

        self._call(write)

    def delete(self, session_id: str) -> bool:
        """Remove one session; True when this call removed it (DEL is atomic)."""
        return bool(self._call(lambda: self._redis.delete(self._key(session_id))))

    def delete_user(self, username: str) -> int:
        """Remove every session of ``username``."""
        count = self._call(
            lambda: self._delete_user(
                keys=[self._user_key(username)], args=[f"{self._prefix}session:"]
            )
        )
        return int(count)

    def touch(self, session_id: str, last_activity: float) -> None:
        """Move ``last_activity`` forward (never back), keeping the TTL; never resurrects.

        An optimistic transaction (WATCH, read, SET KEEPTTL): a concurrent change makes it
        read again, and a session deleted meanwhile stays deleted.
        """
        key = self._key(session_id)

        def update() -> None:
            for _ in range(TOUCH_ATTEMPTS):
                with self._redis.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(key)  # type: ignore[no-untyped-call]
                        raw = pipe.get(key)
                        if raw is None:
                            return
                        session = session_from_json(session_id, t.cast(bytes, raw))
                        if session.last_activity >= last_activity:
                            return
                        pipe.multi()
                        touched = replace(session, last_activity=last_activity)
                        pipe.set(key, session_to_json(touched), keepttl=True, xx=True)
                        pipe.execute()
                        return
                    except WatchError:
                        continue

        self._call(update)

    def purge_expired(self, now: float) -> int:
        """Nothing to do: Redis expires sessions itself."""
        if self._closed:
            raise SessionStoreError("the session store is closed")
        return 0

    def close(self) -> None:
        """Drop the connections; later calls raise SessionStoreError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(RedisError, OSError):
            self._redis.close()

    def ping(self) -> bool:
        """True when Redis answers now (for health reporting)."""
        try:
            return bool(self._call(self._redis.ping))
        except SessionStoreError:
            return False
