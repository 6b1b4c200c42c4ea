"""The per-process cache of the Redis store (``server.core.redis_cache``), against a real
``redis-server``: two ``RedisStore`` instances stand for two hosts.

A change on host A (delete, delete_user, a touch, a replaced record) reaches host B's cache
within 1 s (measured: median and max are printed); a killed pub/sub connection or a frozen
Redis makes B bypass its cache (a revoked session is never served from memory) until the
subscription is back; a cached read works inside ``blocking.forbidden`` and a miss raises
``WouldBlock`` before any round trip. Never mocked, never skipped.
"""

from __future__ import annotations

import dataclasses
import signal
import statistics
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.core import blocking
from server.core.blocking import WouldBlock
from server.core.redis_cache import HEARTBEAT_BOUND
from server.core.redis_cache import RECONNECT_AFTER
from server.core.redis_cache import SessionCache
from server.core.redis_cache import Ticket
from server.core.redis_cache import session_message
from server.core.redis_cache import user_message
from server.core.redis_store import RedisStore
from server.core.session_store import hash_session_id
from server.core.sessions import Level
from server.core.sessions import Session
from tests.redis_services import RedisServer
from tests.test_session_store import T0
from tests.test_session_store import make_session

pytestmark = pytest.mark.slow


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Seconds until ``condition()`` holds (fails after ``timeout``)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "condition not met in time"
        time.sleep(0.002)
    return time.monotonic() - started


def cache_of(store: RedisStore) -> SessionCache:
    assert store.cache is not None
    return store.cache


def warm(store: RedisStore) -> None:
    """Start the store's subscriber and wait until its cache is trusted."""
    store.get(make_session().id)
    wait_until(cache_of(store).healthy)


def cached(store: RedisStore, session_id: str) -> Session | None:
    """The session as the I/O thread would get it: None for a miss (WouldBlock)."""
    try:
        with blocking.forbidden:
            return store.get(session_id)
    except WouldBlock:
        return None


def read_into_cache(store: RedisStore, session: Session) -> None:
    """Read ``session`` until the store caches it (a read racing the message of the write
    that created it is not cached, by design)."""

    def read() -> bool:
        assert store.get(session.id) == session
        return cached(store, session.id) == session

    wait_until(read, timeout=1.0)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def hosts(redis_server: RedisServer) -> Iterator[tuple[RedisStore, RedisStore]]:
    """Two hosts' stores (same key) on one Redis, both caches warm."""
    key = b"k" * 32
    one = RedisStore.from_url(redis_server.url, key=key, cache=True)
    two = RedisStore.from_url(redis_server.url, key=key, cache=True)
    warm(one)
    warm(two)
    yield one, two
    one.close()
    two.close()


def test_cached_read_in_the_io_thread_and_a_miss_would_block(
    hosts: tuple[RedisStore, RedisStore],
) -> None:
    """With the cache warm, get works inside forbidden; a miss raises WouldBlock; the store
    says it can be read inline."""
    one, two = hosts
    session = make_session()
    one.put(session, 60)
    assert two.inline_reads is True
    with blocking.forbidden, pytest.raises(WouldBlock):
        two.get(session.id)  # not read yet by this host
    read_into_cache(two, session)  # a pool thread reads it
    with blocking.forbidden:
        assert two.get(session.id) == session
        with pytest.raises(WouldBlock):
            two.get(make_session().id)


def test_a_store_without_cache_never_reads_inline(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url)
    session = make_session()
    store.put(session, 60)
    assert store.get(session.id) == session
    assert store.inline_reads is False
    with blocking.forbidden, pytest.raises(WouldBlock):
        store.get(session.id)
    store.close()


def test_first_use_in_the_io_thread_would_block(redis_server: RedisServer) -> None:
    """Starting the subscriber thread is left to a pool thread."""
    store = RedisStore.from_url(redis_server.url, cache=True)
    with blocking.forbidden, pytest.raises(WouldBlock):
        store.get(make_session().id)
    assert not cache_of(store).healthy()
    store.close()


def delays(
    one: RedisStore,
    two: RedisStore,
    change: Callable[[Session], object],
    seen: Callable[[Session], bool],
    rounds: int = 20,
) -> list[float]:
    """Seconds from ``change`` on host one until ``seen`` on host two's cache, per round."""
    found = []
    for _ in range(rounds):
        session = make_session()
        one.put(session, 60)
        read_into_cache(two, session)
        change(session)
        found.append(wait_until(lambda s=session: seen(s), timeout=1.0))  # type: ignore[misc]
    return found


def report(label: str, found: list[float]) -> None:
    print(
        f"\n{label}: median {statistics.median(found) * 1000:.2f} ms, "
        f"max {max(found) * 1000:.2f} ms over {len(found)}"
    )


def test_delete_on_one_host_reaches_the_other_within_a_second(
    hosts: tuple[RedisStore, RedisStore],
) -> None:
    """Logout on A: B's cache drops the session within 1 s (measured), and B reads None."""
    one, two = hosts
    found = delays(one, two, lambda s: one.delete(s.id), lambda s: cached(two, s.id) is None)
    report("revocation delay (delete)", found)
    assert max(found) < 1.0
    session = make_session()
    one.put(session, 60)
    read_into_cache(two, session)
    one.delete(session.id)
    wait_until(lambda: cached(two, session.id) is None, timeout=1.0)
    assert two.get(session.id) is None


def test_delete_user_on_one_host_reaches_the_other(
    hosts: tuple[RedisStore, RedisStore],
) -> None:
    """Password change or disable on A (delete_user): every cached session of that user on B
    is dropped within 1 s; another user's stays cached."""
    one, two = hosts
    found = delays(
        one, two, lambda s: one.delete_user("alice"), lambda s: cached(two, s.id) is None
    )
    report("revocation delay (delete_user)", found)
    assert max(found) < 1.0
    alice, bob = make_session("alice"), make_session("bob")
    for session in (alice, bob):
        one.put(session, 60)
        read_into_cache(two, session)
    one.delete_user("alice")
    wait_until(lambda: cached(two, alice.id) is None, timeout=1.0)
    assert cached(two, bob.id) == bob
    assert two.get(alice.id) is None


def test_replaced_and_touched_sessions_reach_the_other_host(
    hosts: tuple[RedisStore, RedisStore],
) -> None:
    """A put (a new level) and a touch that moved last_activity on A are seen by B's cache."""
    one, two = hosts
    raised = delays(
        one,
        two,
        lambda s: one.put(dataclasses.replace(s, level=Level.TWO_FACTOR), 60),
        lambda s: cached(two, s.id) is None,
        rounds=5,
    )
    touched = delays(
        one, two, lambda s: one.touch(s.id, T0 + 30), lambda s: cached(two, s.id) is None, rounds=5
    )
    assert max(raised + touched) < 1.0
    session = make_session()
    one.put(session, 60)
    read_into_cache(two, session)
    one.touch(session.id, T0 + 30)
    wait_until(lambda: cached(two, session.id) is None, timeout=1.0)
    got = two.get(session.id)
    assert got is not None
    assert got.last_activity == T0 + 30


def test_killed_pubsub_connection_bypasses_the_cache_until_back(
    hosts: tuple[RedisStore, RedisStore], redis_server: RedisServer
) -> None:
    """CLIENT KILL TYPE pubsub: B stops trusting its cache at once and empties it, so a
    session revoked while the channel is down (the message is lost) is never served from
    memory; once B has subscribed again its cache is used again."""
    one, two = hosts
    session = make_session()
    one.put(session, 60)
    read_into_cache(two, session)
    with redis_server.client() as client:
        started = time.monotonic()
        assert client.client_kill_filter(_type="pubsub") >= 2
        dropped = wait_until(lambda: not cache_of(two).healthy(), timeout=HEARTBEAT_BOUND)
        # revoked without a message (as if it were lost): only the Redis copy knows
        client.delete(f"authctl:session:{hash_session_id(session.id).hex()}")
    assert len(cache_of(two)) == 0
    served = 0
    while cache_of(two).heartbeat < started or not cache_of(two).healthy():
        served += cached(two, session.id) is not None
        assert two.get(session.id) is None
        assert time.monotonic() - started < 5, "no new subscription within 5 s"
    back = time.monotonic() - started
    print(f"\npub/sub killed: drop seen after {dropped * 1000:.1f} ms, back after {back:.2f} s")
    assert served == 0
    assert cached(two, session.id) is None
    assert two.get(session.id) is None
    fresh = make_session()
    one.put(fresh, 60)
    read_into_cache(two, fresh)  # used again


def test_frozen_redis_bypasses_the_cache_within_the_heartbeat_bound(
    hosts: tuple[RedisStore, RedisStore], redis_server: RedisServer
) -> None:
    """SIGSTOP: no PING is answered, so within HEARTBEAT_BOUND (plus a PING interval) the
    cache is no longer used; SIGCONT: trusted again."""
    _, two = hosts
    session = make_session()
    two.put(session, 60)
    read_into_cache(two, session)
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        bypassed = wait_until(lambda: cached(two, session.id) is None, timeout=2.0)
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    print(f"\nfrozen Redis: cache bypassed after {bypassed * 1000:.0f} ms")
    assert bypassed <= HEARTBEAT_BOUND + 0.15
    wait_until(cache_of(two).healthy)
    read_into_cache(two, session)


def test_a_read_racing_an_invalidation_is_not_cached(
    hosts: tuple[RedisStore, RedisStore],
) -> None:
    """A ticket taken before an invalidation (of that session, of any user, or a new
    subscription) cannot cache what was read under it."""
    _, two = hosts
    cache = cache_of(two)
    session = make_session()
    key = hash_session_id(session.id)
    for invalidate in (
        lambda: cache.forget(key),
        lambda: cache.forget_user("someone"),
        cache.clear,
        lambda: cache.received(session_message(key)),
        lambda: cache.received(user_message("bob")),
    ):
        ticket = cache.ticket()
        assert ticket is not None
        invalidate()
        cache.store(ticket, key, session, 60, time.monotonic())
        assert cached(two, session.id) is None
    ticket = cache.ticket()
    assert ticket is not None
    cache.forget(b"\x01" * 32)  # another slot: no effect
    cache.store(ticket, key, session, 60, time.monotonic())
    assert cached(two, session.id) == session
    assert cache.ticket() != Ticket(ticket.epoch - 1, ticket.seen)


@pytest.mark.parametrize(
    "message", [b"garbage", b"s:zz", b"s:abcd", b"u:\xff\xfe", b"", b"x:" + b"0" * 64]
)
def test_a_message_not_understood_empties_the_cache(
    hosts: tuple[RedisStore, RedisStore], message: bytes
) -> None:
    """Fail safe: anything but a well-formed session or user message drops everything."""
    one, two = hosts
    session = make_session()
    one.put(session, 60)
    read_into_cache(two, session)
    cache_of(two).received(message)
    assert cached(two, session.id) is None


def test_entries_are_bounded_in_number_and_age(hosts: tuple[RedisStore, RedisStore]) -> None:
    """A full cache is emptied; an entry older than max_age or past its TTL is not used."""
    one, two = hosts
    cache = cache_of(two)
    cache.size = 3
    sessions = [make_session() for _ in range(4)]
    for session in sessions:
        one.put(session, 60)
        read_into_cache(two, session)
    assert len(cache) == 1  # the fourth emptied the full cache
    assert cached(two, sessions[3].id) == sessions[3]
    cache.max_age = 0.05
    young = make_session()
    one.put(young, 60)
    read_into_cache(two, young)
    time.sleep(0.06)
    assert cached(two, young.id) is None
    cache.max_age = 10
    short = make_session()
    one.put(short, 0.3)
    read_into_cache(two, short)
    time.sleep(0.32)
    assert cached(two, short.id) is None
    assert two.get(short.id) is None


def test_an_entry_under_a_colliding_key_is_not_another_session(
    hosts: tuple[RedisStore, RedisStore],
) -> None:
    """The cache checks the id, not only its hash."""
    _, two = hosts
    cache = cache_of(two)
    session = make_session()
    other = make_session()
    ticket = cache.ticket()
    assert ticket is not None
    cache.store(ticket, hash_session_id(other.id), session, 60, time.monotonic())
    assert cached(two, other.id) is None


def test_closed_cache_caches_nothing(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url, cache=True)
    warm(store)
    cache = cache_of(store)
    ticket = cache.ticket()
    store.close()
    assert ticket is not None
    session = make_session()
    cache.store(ticket, hash_session_id(session.id), session, 60, time.monotonic())
    assert len(cache) == 0
    assert not cache.healthy()
    cache.start()  # closed: no new thread
    assert cache.ticket() is None


def test_a_connection_silent_for_long_is_opened_again(
    hosts: tuple[RedisStore, RedisStore],
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Frozen longer than RECONNECT_AFTER: the subscriber drops the silent connection (one
    outage line per host), subscribes anew once Redis answers, and logs the end."""
    one, two = hosts
    with caplog.at_level("INFO", logger="authctl.sessions"):
        redis_server.proc.send_signal(signal.SIGSTOP)
        try:  # both hosts see the silence (under load one may see it later than the other)
            wait_until(
                lambda: cache_of(one).outage.down and cache_of(two).outage.down,
                timeout=RECONNECT_AFTER + 5,
            )
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: cache_of(one).healthy() and cache_of(two).healthy(), timeout=10)
    messages = [r.getMessage() for r in caplog.records]
    # one line each per host (both stores here log to the same logger), no flood
    assert len([m for m in messages if "pub/sub) outage started" in m]) == 2, messages
    assert len([m for m in messages if "pub/sub) outage ended" in m]) == 2, messages
