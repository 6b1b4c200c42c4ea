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
  which write access to Redis allows anyway. It also lists a user's sessions (SPEC §7.6,
  ``sessions_of``): a listed record must open and name that user, so a planted member never
  shows one user another's session.

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

Building it from ``[session]`` (``RedisStore.from_config``, what ``authctl serve`` does):

- ``redis_password_file``: the password (the file's one line), sent to Redis and to the
  Sentinels (give them the same ``requirepass``); a missing, unreadable or empty file stops
  start-up with a message naming the key. It is never logged, and overrides a password in
  ``redis_url``.
- ``[session.redis_sentinel]``: redis-py's ``Sentinel`` asks the nodes for the primary of
  ``master_name`` on every new connection (``redis_url`` still gives the database number and
  TLS). While the primary is down every call raises ``SessionStoreError`` (fail closed);
  once a Sentinel has promoted a replica the next connection reaches it, with no restart,
  and the sessions are there (they were replicated). Sentinel connections have the same
  timeouts and no retries.
- The per-process cache (``server.core.redis_cache``, on unless ``cache=False``): ``get``
  answers from this process's memory while the invalidation channel is healthy, so verify
  stays in waitress's I/O thread (``inline_reads``); a miss there raises ``WouldBlock``
  before any round trip. Every write publishes its invalidation in the same MULTI/EXEC (or
  script) as the write, whether or not this store caches: other hosts may. ``from_url``
  builds a store without a cache (tests, tools).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import typing as t
from collections.abc import Callable
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.connection import ConnectionPool
from redis.connection import SSLConnection
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError
from redis.retry import Retry
from redis.sentinel import Sentinel

from server.core.blocking import check as check_blocking
from server.core.outage import Outage
from server.core.redis_cache import SessionCache
from server.core.redis_cache import session_message
from server.core.redis_cache import user_message
from server.core.session_store import RecordSeal
from server.core.session_store import SessionStoreError
from server.core.session_store import hash_session_id
from server.core.session_store import log
from server.core.session_store import touched
from server.core.sessions import Listed
from server.core.sessions import Session

if t.TYPE_CHECKING:
    from server.core.config.model import SentinelConfig
    from server.core.config.model import SessionConfig

PREFIX = "authctl:"
#: Seconds allowed to connect to Redis, and to wait for one answer.
TIMEOUT = 1.0
#: After a failure, seconds during which calls fail at once instead of waiting on Redis.
RETRY_AFTER = 1.0
#: Attempts of an optimistic ``touch`` before giving up (another writer kept winning).
TOUCH_ATTEMPTS = 5
#: Longest password file read (a password is one short line).
MAX_PASSWORD_BYTES = 4096
#: Keys asked for per SCAN step when every user's sessions are listed (``authctl session``).
SCAN_COUNT = 500

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
redis.call('PUBLISH', ARGV[2], ARGV[3])
return n
"""

# Ends one session listed in a user's index (``delete_listed``), only if it is listed there.
_DELETE_LISTED = """
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then
    return 0
end
local n = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return n
"""


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def read_password_file(path: Path, name: str = "session.redis_password_file") -> str:
    """The password in ``path``: its one line, without the line ending.

    Raises:
        ValueError: the file is missing, unreadable, too long, empty, not UTF-8 or holds more
            than one line; the message names the key ``name`` and the file, never the content.
    """
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_PASSWORD_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(
            f"{name}: the file {path} is missing: write the Redis password in it (one line) "
            f"or remove the key"
        ) from None
    except OSError as exc:
        raise ValueError(f"{name}: cannot read the file {path}: {exc.strerror}") from None
    if len(data) > MAX_PASSWORD_BYTES:
        raise ValueError(f"{name}: the file {path} is larger than {MAX_PASSWORD_BYTES} bytes")
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{name}: the file {path} is not UTF-8 text") from None
    if len(lines) > 1 and any(line for line in lines[1:]):
        raise ValueError(
            f"{name}: the file {path} holds more than one line; keep the password only"
        )
    if not lines or not lines[0]:
        raise ValueError(f"{name}: the file {path} is empty; write the Redis password in it")
    return lines[0]


def _client_options() -> dict[str, t.Any]:
    """Short timeouts and no client-side retries, for every connection (Sentinels too)."""
    return {
        "socket_connect_timeout": TIMEOUT,
        "socket_timeout": TIMEOUT,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }


def session_key(prefix: str, hashed: bytes) -> str:
    """The Redis key of the session whose id hashes to ``hashed`` (the store's layout, which
    ``storage migrate`` writes too)."""
    return f"{prefix}session:{hashed.hex()}"


def user_key(prefix: str, username: str) -> str:
    """The Redis key of ``username``'s index of sessions (hex of the hashed ids)."""
    return f"{prefix}user:{username}"


def client_from_config(config: SessionConfig) -> redis.Redis:
    """A client of the Redis ``[session]`` names: ``redis_url``, or the primary that the
    Sentinels of ``redis_sentinel`` name, with the password of ``redis_password_file``, short
    timeouts and no retries. The store's and ``storage migrate``'s one way in; nothing is sent
    yet.

    Raises:
        ValueError: the password file cannot be used, or the URL does not fit Sentinel; the
            message names the key.
    """
    password = (
        read_password_file(config.redis_password_file)
        if config.redis_password_file is not None
        else None
    )
    if config.redis_sentinel is not None:
        return _sentinel_client(config.redis_url, config.redis_sentinel, password)
    options = {**parse_url(config.redis_url), **_client_options()}  # type: ignore[no-untyped-call]
    if password is not None:
        options["password"] = password
    return redis.Redis.from_pool(ConnectionPool(**options))


def _sentinel_client(url: str, sentinel: SentinelConfig, password: str | None) -> redis.Redis:
    """A client of the primary ``sentinel``'s nodes name; ``url`` gives the database, the
    user name and TLS."""
    options = parse_url(url)  # type: ignore[no-untyped-call]
    if "path" in options:
        raise ValueError(
            "session.redis_url: a unix:// URL cannot be used with [session.redis_sentinel]; "
            "use redis:// or rediss:// (its host and port are replaced by the Sentinels')"
        )
    for name in ("host", "port"):
        options.pop(name, None)
    tls = options.pop("connection_class", None) is SSLConnection
    if password is not None:
        options["password"] = password
    node_options = _client_options()
    if password is not None:
        node_options["password"] = password
    if tls:
        node_options["ssl"] = True
        node_options.update({k: v for k, v in options.items() if k.startswith("ssl_")})
    manager = Sentinel(list(sentinel.nodes), sentinel_kwargs=node_options, **_client_options())
    return t.cast(redis.Redis, manager.master_for(sentinel.master_name, ssl=tls, **options))


class RedisStore:
    """A ``SessionStore`` on Redis. Thread-safe (a connection pool) and fork-safe (redis-py
    opens new connections in a forked child).

    Raises (from every method):
        SessionStoreError: Redis is unreachable, timed out, refused the command, or holds a
            record that is not a session; also after ``close()``.
    """

    #: False without the cache: every read is a round trip to Redis. True with it (an
    #: instance attribute): a cached read is answered in memory, a miss is WouldBlock.
    inline_reads = False

    def __init__(
        self,
        client: redis.Redis,
        *,
        key: bytes | None = None,
        prefix: str = PREFIX,
        monotonic: Callable[[], float] = time.monotonic,
        cache: bool = False,
    ) -> None:
        """``key``: the storage key file's material, the same on every host (None: a key of
        this process only, for tests). ``cache``: keep opened sessions in this process
        (``server.core.redis_cache``)."""
        self._redis = client
        self.channel = f"{prefix}invalidate"
        self.cache = SessionCache(client, self.channel, monotonic=monotonic) if cache else None
        self.inline_reads = cache
        self._seal = RecordSeal(key)
        self._prefix = prefix
        self._monotonic = monotonic
        self._down_until = 0.0
        self._closed = False
        self._lock = threading.Lock()
        self._delete_user = client.register_script(_DELETE_USER)
        self._delete_listed = client.register_script(_DELETE_LISTED)
        self.outage = Outage("session store (Redis)", log, monotonic)
        self.write_outage = Outage("session store (Redis) writes", log, monotonic)

    @classmethod
    def from_url(
        cls, url: str, *, key: bytes | None = None, prefix: str = PREFIX, cache: bool = False
    ) -> RedisStore:
        """A store on the Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``), with
        short timeouts and no client-side retries.

        Nothing is sent yet: an unreachable Redis shows as errors on use (fail closed), so
        authctl starts, answers "log in", and recovers when Redis comes back. No per-process
        cache unless ``cache`` (``from_config`` has one by default).
        """
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=TIMEOUT,
            socket_timeout=TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
        )
        return cls(client, key=key, prefix=prefix, cache=cache)

    @classmethod
    def from_config(
        cls,
        config: SessionConfig,
        *,
        key: bytes | None = None,
        prefix: str = PREFIX,
        cache: bool = True,
    ) -> RedisStore:
        """The store ``[session]`` describes: ``redis_url``, or the primary that the Sentinels
        of ``redis_sentinel`` name; the password from ``redis_password_file``; with the
        per-process cache unless ``cache`` is False. Nothing is sent yet (as ``from_url``).

        Raises:
            ValueError: the password file cannot be used, or the URL does not fit Sentinel;
                the message names the key.
        """
        return cls(client_from_config(config), key=key, prefix=prefix, cache=cache)

    # ------------------------------------------------------------------ keys

    def _key(self, session_id: str) -> tuple[str, bytes]:
        """The Redis key of a session, and the hashed id its record is bound to."""
        hashed = hash_session_id(session_id)
        return session_key(self._prefix, hashed), hashed

    def _user_key(self, username: str) -> str:
        return user_key(self._prefix, username)

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
        does not authenticate is no session.

        With the cache: from memory while the invalidation channel is healthy and nothing
        changed the session since it was read (less than ``CACHE_MAX_AGE`` ago); otherwise
        GET and PTTL in one round trip (``WouldBlock`` first in the I/O thread).
        """
        key, hashed = self._key(session_id)
        cache = self.cache
        if cache is None:
            raw = self._call(lambda: self._redis.get(key))
            return None if raw is None else self._seal.open(hashed, session_id, raw)
        cached = cache.lookup(hashed, session_id)
        if cached is not None:
            return cached
        ticket = cache.ticket()
        read_at = self._monotonic()
        raw, pttl = self._call(lambda: self._get_with_ttl(key))
        if raw is None:
            return None
        session = self._seal.open(hashed, session_id, raw)
        if session is not None and ticket is not None and pttl > 0:
            cache.store(ticket, hashed, session, pttl / 1000, read_at)
        return session

    def _get_with_ttl(self, key: str) -> tuple[bytes | None, int]:
        """The record under ``key`` and its TTL in ms (negative: gone or without one)."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            raw, pttl = pipe.execute()
        return raw, int(pttl)

    def _forget(self, hashed: bytes) -> None:
        """This process's copy of a session it just wrote (others get the message)."""
        if self.cache is not None:
            self.cache.forget(hashed)

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
                pipe.publish(self.channel, session_message(hashed))
                pipe.execute()

        try:
            self._call(write, write=True)
        finally:
            self._forget(hashed)

    def delete(self, session_id: str) -> bool:
        """Remove one session; True when this call removed it (DEL is atomic)."""
        key, hashed = self._key(session_id)

        def write() -> int:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.publish(self.channel, session_message(hashed))
                return int(pipe.execute()[0])

        try:
            return bool(self._call(write, write=True))
        finally:
            self._forget(hashed)

    def discard(self, session_id: str) -> None:
        """Remove a dead session (Redis never waits on a lock; failures are the caller's)."""
        self.delete(session_id)

    def delete_user(self, username: str) -> int:
        """Remove every session of ``username`` (and tell every process to forget them)."""
        try:
            count = self._call(
                lambda: self._delete_user(
                    keys=[self._user_key(username)],
                    args=[f"{self._prefix}session:", self.channel, user_message(username)],
                ),
                write=True,
            )
        finally:
            if self.cache is not None:
                self.cache.forget_user(username)
        return int(count)

    def touch(self, session_id: str, last_activity: float) -> None:
        """Move ``last_activity`` forward (never back), keeping the TTL; never resurrects.

        An optimistic transaction (WATCH, read, SET KEEPTTL, PUBLISH): a concurrent change
        makes it read again, and a session deleted meanwhile stays deleted. Only a touch that
        moved ``last_activity`` is published (it changes when verify next writes, and when
        the session ends for inactivity).
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
                        record = self._seal.seal(hashed, touched(session, last_activity))
                        pipe.set(key, record, keepttl=True, xx=True)
                        pipe.publish(self.channel, session_message(hashed))
                        pipe.execute()
                        return
                    except WatchError:
                        continue

        try:
            self._call(update)  # best effort: not a write outage (the caller logs it)
        finally:
            self._forget(hashed)

    def sessions_of(self, username: str | None) -> list[Listed]:
        """The sessions listed in ``username``'s index (None: in every user's, found with
        SCAN) that are still stored, open and name that user."""
        return t.cast(list[Listed], self._call(lambda: self._list(username)))

    def _list(self, username: str | None) -> list[Listed]:
        user_prefix = f"{self._prefix}user:"
        if username is None:
            names = [
                bytes(name)[len(user_prefix) :].decode("utf-8", "replace")
                for name in self._redis.scan_iter(match=f"{user_prefix}*", count=SCAN_COUNT)
            ]
        else:
            names = [username]
        found: list[Listed] = []
        for name in names:
            members = [
                bytes(m).decode("ascii", "replace")
                for m in t.cast(set[bytes], self._redis.smembers(self._user_key(name)))
            ]
            hexes = sorted(m for m in members if len(m) == 64 and _is_hex(m))
            if not hexes:
                continue
            records = self._redis.mget([f"{self._prefix}session:{h}" for h in hexes])
            for hexed, raw in zip(hexes, t.cast(list[bytes | None], records), strict=True):
                if raw is None:
                    continue
                hashed = bytes.fromhex(hexed)
                session = self._seal.open(hashed, "", raw)
                if session is not None and session.username == name:
                    found.append(Listed(hashed, session))
        return found

    def delete_listed(self, key: bytes, username: str) -> bool:
        """Remove the session under ``key`` (from ``sessions_of``) if ``username``'s index
        lists it, drop it from the index, and tell every process to forget it, in one
        script."""
        hexed = key.hex()
        try:
            count = self._call(
                lambda: self._delete_listed(
                    keys=[session_key(self._prefix, key), self._user_key(username)],
                    args=[hexed, self.channel, session_message(key)],
                ),
                write=True,
            )
        finally:
            self._forget(key)
        return bool(count)

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
        if self.cache is not None:
            self.cache.close()
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
