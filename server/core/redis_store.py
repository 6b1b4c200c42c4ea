"""Sessions in Redis (``session.store = "redis"``): shared by every process on every host.

SQLite shares sessions between the workers of one machine; several authctl hosts behind one
load balancer need a store they all reach, and Redis is the one self-hosters already run
(Authelia's choice too). The client is the ``redis`` package: a well-kept, typed client with
connection pooling and fork safety; this module only needs GET, SET, DEL, PEXPIRE and one
set per user.

Layout (``PREFIX`` = ``authctl:``):

- ``authctl:session:<hex SHA-256 of the id>`` -> the session sealed by ``RecordSeal``
  (AES-256-GCM, key from ``secrets/storage.key``, the hashed id as associated data), with the
  session's TTL. The id itself is never stored (a leaked dump or ``MONITOR`` output does not
  hand out live cookies), exactly like ``SQLiteStore``; and whoever can write to Redis cannot
  forge, copy or raise a session: a record that does not open is no session.
- ``authctl:user:<name>`` -> the set of that user's session keys, for ``delete_user``
  (password change, disable, removal). Its TTL is raised to the longest member's, never
  lowered, so the index outlives every session it lists (needs Redis >= 7.0: ``PEXPIRE`` NX
  and GT). It grants nothing: ``delete_user`` only deletes members that are session keys
  (64 hex digits, under the session prefix), so a planted member can at worst end a session,
  which write access to Redis allows anyway.

Failure handling (security.md §3 R5): every Redis error becomes ``SessionStoreError``,
which the web layer answers as "not signed in" (302/401), never 200. Connect and command
timeouts are ``TIMEOUT`` (1 s) and redis-py's own retries are off, so a stopped or
unreachable Redis costs one request at most ~1 s; after a connection failure the store stays
"down" for ``RETRY_AFTER`` seconds and fails at once (no thread waits on a dead server
meanwhile), then tries again, so it recovers by itself within about a second of Redis coming
back. An outage is logged when it starts and when it ends, with the count of failed calls,
never once per request. A refused command (a read-only replica, out of memory) fails that
command only: reads go on.
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
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError
from redis.retry import Retry

from server.core.blocking import check as check_blocking
from server.core.outage import Outage
from server.core.session_store import RecordSeal
from server.core.session_store import SessionStoreError
from server.core.session_store import hash_session_id
from server.core.session_store import log
from server.core.sessions import Session

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
    if string.len(key) == 64 and not string.find(key, '[^0-9a-f]') then
        n = n + redis.call('DEL', ARGV[1] .. key)
    end
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
        key: bytes | None = None,
        prefix: str = PREFIX,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``key``: the storage key file's material, the same on every host (None: a key of
        this process only, for tests)."""
        self._redis = client
        self._seal = RecordSeal(key)
        self._prefix = prefix
        self._monotonic = monotonic
        self._down_until = 0.0
        self._closed = False
        self._lock = threading.Lock()
        self._delete_user = client.register_script(_DELETE_USER)
        self.outage = Outage("session store (Redis)", log, monotonic)
        self.write_outage = Outage("session store (Redis) writes", log, monotonic)

    @classmethod
    def from_url(cls, url: str, *, key: bytes | None = None, prefix: str = PREFIX) -> RedisStore:
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
        return cls(client, key=key, prefix=prefix)

    # ------------------------------------------------------------------ keys

    def _key(self, session_id: str) -> tuple[str, bytes]:
        """The Redis key of a session, and the hashed id its record is bound to."""
        hashed = hash_session_id(session_id)
        return f"{self._prefix}session:{hashed.hex()}", hashed

    def _user_key(self, username: str) -> str:
        return f"{self._prefix}user:{username}"

    # ------------------------------------------------------------------ error boundary

    def _call(self, operation: Callable[[], t.Any], *, write: bool = False) -> t.Any:
        """Run ``operation``; any Redis failure is a SessionStoreError (fail closed).

        A failure to reach Redis starts (or counts in) the outage and keeps the store down
        for ``RETRY_AFTER``; a refused command (read-only, out of memory) fails alone and,
        for a ``write``, counts in the write outage.
        """
        check_blocking()  # a network round trip: never in waitress's I/O thread
        if self._closed:
            raise SessionStoreError("the session store is closed")
        if self._monotonic() < self._down_until:
            self.outage.failed(self.outage.error or SessionStoreError("Redis is down"))
            raise SessionStoreError(
                "Redis failed a moment ago; not retrying yet", reason="cannot reach Redis"
            )
        try:
            result = operation()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self._down_until = self._monotonic() + RETRY_AFTER
            error = SessionStoreError(
                f"Redis: {type(exc).__name__}: {exc}",
                reason="Redis timed out"
                if isinstance(exc, RedisTimeoutError)
                else "cannot reach Redis",
            )
            self.outage.failed(error)
            raise error from None
        except RedisError as exc:
            self.outage.ok()  # it answered
            why = "Redis is read-only" if isinstance(exc, ReadOnlyError) else "Redis refused"
            error = SessionStoreError(f"Redis: {type(exc).__name__}: {exc}", reason=why)
            if write:
                self.write_outage.failed(error)
            raise error from None
        self.outage.ok()
        if write:
            self.write_outage.ok()
        return result

    # ------------------------------------------------------------------ the protocol

    def get(self, session_id: str) -> Session | None:
        """The session under ``session_id``; Redis drops it when its TTL ends. A record that
        does not authenticate is no session."""
        key, hashed = self._key(session_id)
        raw = self._call(lambda: self._redis.get(key))
        if raw is None:
            return None
        return self._seal.open(hashed, session_id, raw)

    def put(self, session: Session, ttl: float) -> None:
        """Insert or replace ``session`` for ``ttl`` seconds (and list it under its user)."""
        key, hashed = self._key(session.id)
        ms = max(1, math.ceil(ttl * 1000))
        record = self._seal.seal(hashed, session)

        def write() -> None:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, record, px=ms)
                if session.username is not None:
                    user_key = self._user_key(session.username)
                    pipe.sadd(user_key, hashed.hex())
                    pipe.pexpire(user_key, ms, nx=True)  # a new index: this TTL
                    pipe.pexpire(user_key, ms, gt=True)  # an existing one: never shorter
                pipe.execute()

        self._call(write, write=True)

    def delete(self, session_id: str) -> bool:
        """Remove one session; True when this call removed it (DEL is atomic)."""
        key = self._key(session_id)[0]
        return bool(self._call(lambda: self._redis.delete(key), write=True))

    def discard(self, session_id: str) -> None:
        """Remove a dead session (Redis never waits on a lock; failures are the caller's)."""
        self.delete(session_id)

    def delete_user(self, username: str) -> int:
        """Remove every session of ``username``."""
        count = self._call(
            lambda: self._delete_user(
                keys=[self._user_key(username)], args=[f"{self._prefix}session:"]
            ),
            write=True,
        )
        return int(count)

    def touch(self, session_id: str, last_activity: float) -> None:
        """Move ``last_activity`` forward (never back), keeping the TTL; never resurrects.

        An optimistic transaction (WATCH, read, SET KEEPTTL): a concurrent change makes it
        read again, and a session deleted meanwhile stays deleted.
        """
        key, hashed = self._key(session_id)

        def update() -> None:
            for _ in range(TOUCH_ATTEMPTS):
                with self._redis.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(key)  # type: ignore[no-untyped-call]
                        raw = pipe.get(key)
                        if raw is None:
                            return
                        session = self._seal.open(hashed, session_id, t.cast(bytes, raw))
                        if session is None or session.last_activity >= last_activity:
                            return
                        pipe.multi()
                        touched = replace(session, last_activity=last_activity)
                        pipe.set(key, self._seal.seal(hashed, touched), keepttl=True, xx=True)
                        pipe.execute()
                        return
                    except WatchError:
                        continue

        self._call(update)  # best effort: not counted as a write outage (the caller logs it)

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
            self.check()
        except SessionStoreError:
            return False
        return True

    def check(self) -> None:
        """Raise SessionStoreError unless Redis answers now as a master (a replica refuses
        writes). Read-only commands: a probe, never a remembered failure, so a host taken out
        of a load balancer is seen healthy again without traffic."""
        role = self._call(lambda: self._redis.execute_command("ROLE"))  # type: ignore[no-untyped-call]
        kind = role[0] if role else None
        if kind not in (b"master", "master"):
            raise SessionStoreError(f"Redis has the role {kind!r}", reason="Redis is read-only")
