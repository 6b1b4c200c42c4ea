"""The Redis session store against a real ``redis-server`` started on a free loopback port.

The whole store contract of ``tests/test_session_store.py`` runs here too (with real-time
versions of the tests that move a fake clock, since Redis expires keys on its own clock),
then what only Redis has: hashed keys, the per-user index outliving its sessions, a stopped
or killed Redis answered as "not signed in" within 2 s and never 200, recovery when Redis
returns, and two authctl servers sharing sessions. ``redis-server`` is required: without it
these tests fail (CI installs it), they are never skipped.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import shutil
import signal
import time
import typing as t
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.core.redis_cache import HEARTBEAT_BOUND
from server.core.redis_store import RedisStore
from server.core.session_store import SessionStore
from server.core.session_store import SessionStoreError
from server.core.session_store import hash_session_id
from tests import test_session_store as contract
from tests.redis_services import RedisServer
from tests.redis_services import free_port
from tests.test_serve import SQLITE_CONFIG
from tests.test_serve import Server
from tests.test_serve import cookie_of
from tests.test_serve import make_folder
from tests.test_session_store import FakeClock
from tests.test_session_store import make_session

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the contract tests (emptied before each test)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, free to be stopped or killed."""
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


# --------------------------------------------------------------------------- the contract


@pytest.fixture
def clock() -> FakeClock:
    """The contract's clock (Redis ignores it: TTLs run on Redis's own clock)."""
    return FakeClock()


@pytest.fixture
def make_store(shared_redis: RedisServer) -> Iterator[Callable[[FakeClock], SessionStore]]:
    """Redis stores on the shared server, emptied first and closed after the test."""
    with shared_redis.client() as client:
        client.flushdb()
    made: list[RedisStore] = []

    def make(_clock: FakeClock) -> SessionStore:
        store = RedisStore.from_url(shared_redis.url)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def store(make_store: Callable[[FakeClock], SessionStore], clock: FakeClock) -> SessionStore:
    """One Redis store."""
    return make_store(clock)


class TestRedisContract(contract.TestContract):
    """The shared store contract on Redis; TTL tests use real (short) time instead."""

    def test_ttl_is_honoured(self, store: SessionStore) -> None:  # type: ignore[override]
        """A session is returned until its TTL ends, and never after."""
        session = make_session()
        store.put(session, 0.3)
        assert store.get(session.id) == session
        time.sleep(0.45)
        assert store.get(session.id) is None

    def test_put_replaces(self, store: SessionStore) -> None:  # type: ignore[override]
        """Putting the same id again replaces the record and its TTL."""
        session = make_session()
        store.put(session, 0.2)
        changed = contract.Session(
            id=session.id,
            cookie_domain="example.com",
            username="alice",
            level=contract.Level.TWO_FACTOR,
            created=contract.T0,
            last_activity=contract.T0,
            auth_time=contract.T0 + 1,
            user_stamp="other",
        )
        store.put(changed, 60)
        time.sleep(0.3)
        assert store.get(session.id) == changed

    def test_touch_keeps_the_ttl(self, store: SessionStore) -> None:  # type: ignore[override]
        """touch does not extend the absolute lifetime given to put."""
        session = make_session()
        store.put(session, 0.4)
        store.touch(session.id, contract.T0 + 5)
        got = store.get(session.id)
        assert got is not None
        assert got.last_activity == contract.T0 + 5
        time.sleep(0.55)
        assert store.get(session.id) is None

    def test_purge_expired_counts(self, store: SessionStore) -> None:  # type: ignore[override]
        """Redis expires sessions itself: purge has nothing to count, expired ones are gone."""
        short = [make_session() for _ in range(2)]
        long = make_session()
        for session in short:
            store.put(session, 0.2)
        store.put(long, 60)
        time.sleep(0.3)
        assert store.purge_expired(time.time()) == 0
        assert all(store.get(s.id) is None for s in short)
        assert store.get(long.id) == long


class TestCachedRedisContract(TestRedisContract):
    """The same contract with the per-process cache on (``from_config``'s default), each
    store warmed up first so that reads are really answered from the cache."""

    @pytest.fixture
    def make_store(  # type: ignore[override]
        self, shared_redis: RedisServer
    ) -> Iterator[Callable[[FakeClock], SessionStore]]:
        with shared_redis.client() as client:
            client.flushdb()
        made: list[RedisStore] = []

        def make(_clock: FakeClock) -> SessionStore:
            store = RedisStore.from_url(shared_redis.url, cache=True)
            assert store.inline_reads is True
            store.get(contract.new_session_id())  # starts the subscriber
            wait_until(lambda: store.cache is not None and store.cache.healthy())
            made.append(store)
            return store

        yield make
        for store in made:
            store.close()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Seconds until ``condition()`` holds (fails after ``timeout``)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "condition not met in time"
        time.sleep(0.005)
    return time.monotonic() - started


# --------------------------------------------------------------------------- Redis only


def test_ids_are_never_stored(store: SessionStore, shared_redis: RedisServer) -> None:
    """Keys hold SHA-256 of the id; neither keys nor values contain the id itself."""
    session = make_session()
    store.put(session, 60)
    with shared_redis.client() as client:
        keys = [k.decode() for k in client.keys("*")]
        values = [client.get(k) for k in keys if ":session:" in k]
    assert f"authctl:session:{hash_session_id(session.id).hex()}" in keys
    assert all(session.id not in key for key in keys)
    assert all(value is not None and session.id.encode() not in value for value in values)


def test_user_index_outlives_every_session(store: SessionStore, shared_redis: RedisServer) -> None:
    """The per-user index's TTL is raised to the longest session's and never lowered."""
    long = make_session()
    short = make_session()
    store.put(long, 600)
    store.put(short, 5)
    with shared_redis.client() as client:
        index_ttl = client.pttl("authctl:user:alice")
        long_ttl = client.pttl(f"authctl:session:{hash_session_id(long.id).hex()}")
    assert index_ttl >= long_ttl > 5000
    assert store.delete_user("alice") == 2


def test_a_dead_redis_fails_closed_and_fast(tmp_path: Path) -> None:
    """Nothing listening: get raises SessionStoreError within 2 s, then fails at once."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    with pytest.raises(SessionStoreError):
        store.get(make_session().id)
    assert time.monotonic() - started < 2
    started = time.monotonic()
    with pytest.raises(SessionStoreError, match="not retrying yet"):
        store.put(make_session(), 60)
    assert time.monotonic() - started < 0.1
    store.close()


def test_corrupt_record_is_no_session(store: SessionStore, shared_redis: RedisServer) -> None:
    """A record that is not a session (foreign data under our key) fails closed: no session."""
    session = make_session()
    with shared_redis.client() as client:
        client.set(f"authctl:session:{hash_session_id(session.id).hex()}", b'{"level": 9}')
    assert store.get(session.id) is None


def session_key(session_id: str) -> str:
    """The Redis key a session is stored under."""
    return f"authctl:session:{hash_session_id(session_id).hex()}"


def test_record_copied_under_another_id_is_refused(
    store: SessionStore, shared_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever can write to Redis copies a victim's record under a cookie of their choosing:
    no session (sealed to the victim's hashed id); the victim's still works; logged once."""
    victim = make_session(level=contract.Level.TWO_FACTOR)
    store.put(victim, 60)
    chosen = contract.new_session_id()
    with shared_redis.client() as client:
        client.set(session_key(chosen), t.cast(bytes, client.get(session_key(victim.id))))
    with caplog.at_level("WARNING", logger="authctl.sessions"):
        assert all(store.get(chosen) is None for _ in range(5))
    assert store.get(victim.id) == victim
    assert len([r for r in caplog.records if "possible tampering" in r.getMessage()]) <= 1


def test_record_with_raised_level_is_refused(
    store: SessionStore, shared_redis: RedisServer
) -> None:
    """Raising a record's level to skip TOTP, by any edit, gives no session."""
    session = make_session(level=contract.Level.ONE_FACTOR)
    store.put(session, 60)
    with shared_redis.client() as client:
        raw = t.cast(bytes, client.get(session_key(session.id)))
    try:  # an unsealed record (before records were sealed): edit the JSON
        record = json.loads(raw)
        record["level"] = 2
        candidates = [json.dumps(record).encode()]
    except ValueError:
        raised = dataclasses.replace(session, level=contract.Level.TWO_FACTOR)
        candidates = contract.forgeries(raw, raised)
    for forged in candidates:
        with shared_redis.client() as client:
            client.set(session_key(session.id), forged, keepttl=True)
        got = store.get(session.id)
        assert got is None or got.level is contract.Level.ONE_FACTOR
        assert got is None


def test_record_sealed_on_a_host_with_another_key_is_refused(shared_redis: RedisServer) -> None:
    """Hosts share sessions only with the same secrets/storage.key."""
    with shared_redis.client() as client:
        client.flushdb()
    ours = RedisStore.from_url(shared_redis.url, key=b"k" * 32)
    theirs = RedisStore.from_url(shared_redis.url, key=b"x" * 32)
    same = RedisStore.from_url(shared_redis.url, key=b"k" * 32)
    session = make_session()
    ours.put(session, 60)
    assert same.get(session.id) == session
    assert theirs.get(session.id) is None
    for each in (ours, theirs, same):
        each.close()


def test_planted_index_members_end_only_sessions(
    store: SessionStore, shared_redis: RedisServer
) -> None:
    """The per-user index grants nothing: members that are not session keys are ignored by
    delete_user (no other key is deleted), and listing a session under a user does not make
    it that user's."""
    mine = make_session("mallory")
    alice = make_session("alice")
    store.put(mine, 60)
    store.put(alice, 60)
    with shared_redis.client() as client:
        client.set("authctl:user:bob", b"keep")
        client.set("authctl:session:x", b"keep")
        client.sadd(
            "authctl:user:mallory", "../user:bob", "x", "*", hash_session_id(alice.id).hex()
        )
        assert store.delete_user("mallory") == 2  # mallory's own, and the planted real key
        assert client.get("authctl:user:bob") == b"keep"
        assert client.get("authctl:session:x") == b"keep"
    assert store.get(mine.id) is None


def test_planted_index_members_never_list_another_users_session(
    store: SessionStore, shared_redis: RedisServer
) -> None:
    """Mallory plants alice's session key (and junk) in her own index: her list shows only
    her session, and she cannot end alice's through it."""
    mine = contract.client_session("mallory")
    alice = contract.client_session("alice")
    store.put(mine, 60)
    store.put(alice, 60)
    with shared_redis.client() as client:
        client.sadd("authctl:user:mallory", hash_session_id(alice.id).hex(), "x", "../x")
        client.sadd("authctl:user:bob", "0" * 64)  # a member whose session is gone
    listed = store.sessions_of("mallory")
    assert [item.key for item in listed] == [hash_session_id(mine.id)]
    assert {item.session.username for item in store.sessions_of(None)} == {"mallory", "alice"}
    assert store.get(alice.id) == alice


def test_records_of_the_previous_version_open_and_list(
    store: SessionStore, shared_redis: RedisServer
) -> None:
    """A record sealed by the previous version (no handle, ip, user_agent) still opens, is
    listed with None for them, and gets a handle at its next write."""
    assert isinstance(store, RedisStore)
    session = make_session()
    hashed = hash_session_id(session.id)
    sealed = store._seal._box.seal(contract.old_json(session), b"authctl session\x00" + hashed)
    with shared_redis.client() as client:
        client.set(session_key(session.id), sealed, ex=60)
        client.sadd("authctl:user:alice", hashed.hex())
    assert store.get(session.id) == session
    assert [item.session.handle for item in store.sessions_of("alice")] == [None]
    store.touch(session.id, contract.T0 + 10)
    [listed] = store.sessions_of("alice")
    assert listed.session.handle is not None
    assert contract.is_handle(listed.session.handle)


def test_a_revocation_on_one_host_is_honoured_on_another_within_a_second(
    shared_redis: RedisServer,
) -> None:
    """Two hosts (two stores with their own caches and subscriptions) serve one session from
    memory; the user ends it by handle on host A: host B refuses it within 1 s (SPEC §7.2),
    and so does A at once."""
    from server.core.config import CookieConfig
    from server.core.config import SessionConfig
    from server.core.sessions import SessionManager

    with shared_redis.client() as client:
        client.flushdb()
    config = SessionConfig(cookies=(CookieConfig("example.com", "https://auth.example.com"),))
    hosts = [RedisStore.from_url(shared_redis.url, key=b"k" * 32, cache=True) for _ in "ab"]
    try:
        a, b = (SessionManager(config, host) for host in hosts)
        laptop = a.create("example.com", "alice", 1, ip="203.0.113.7", user_agent="Firefox")
        phone = a.create("example.com", "alice", 1, ip="198.51.100.2", user_agent="Safari")
        for host in hosts:
            host.get(contract.new_session_id())  # starts the subscriber
            wait_until(lambda host=host: host.cache is not None and host.cache.healthy())  # type: ignore[misc]
        for _ in range(3):  # read twice: the second answer comes from B's memory
            assert b.load(laptop.id, "example.com") is not None
        assert hosts[1].cache is not None
        assert len(hosts[1].cache) >= 1
        assert laptop.handle is not None
        assert a.revoke("alice", laptop.handle) is True
        assert a.load(laptop.id, "example.com") is None
        took = wait_until(lambda: b.load(laptop.id, "example.com") is None, timeout=1.0)
        assert took < 1.0
        assert b.load(phone.id, "example.com") is not None
        assert [s.session.handle for s in b.list_sessions("alice")] == [phone.handle]
        tablet = a.create("example.com", "alice", 1)
        assert a.load(tablet.id, "example.com") is not None  # cached on A
        assert b.revoke_others("alice", phone) == 1
        assert wait_until(lambda: a.load(tablet.id, "example.com") is None, timeout=1.0) < 1.0
        assert a.load(phone.id, "example.com") is not None
    finally:
        for host in hosts:
            host.close()


# --------------------------------------------------------------------------- through the server


def redis_config(url: str) -> str:
    """The serve tests' config with the Redis store."""
    return SQLITE_CONFIG.replace('store = "sqlite"', f'store = "redis"\nredis_url = "{url}"')


def timed_verify(server: Server, cookie: str) -> tuple[int, float]:
    """One verify with ``cookie``: its status and how long it took."""
    started = time.monotonic()
    try:
        status = server.verify("https://app.example.com/", cookie).status
    except (OSError, http.client.HTTPException):
        status = 0
    return status, time.monotonic() - started


@pytest.fixture
def redis_site(tmp_path: Path, own_redis: RedisServer) -> Iterator[tuple[Server, RedisServer]]:
    """``authctl serve`` with ``session.store = "redis"`` on this test's own redis-server."""
    server = Server(make_folder(tmp_path / "site", redis_config(own_redis.url)))
    yield server, own_redis
    server.stop()


def test_stopped_redis_answers_login_within_two_seconds(
    redis_site: tuple[Server, RedisServer],
) -> None:
    """SIGSTOP on Redis: once the invalidation channel's heartbeat is overdue (the cache is
    then bypassed), verifies answer 302 in under 2 s, never 200; SIGCONT: 200 again."""
    server, redis_server = redis_site
    cookie = cookie_of(server.login("alice"))
    assert server.verify("https://app.example.com/", cookie).status == 200
    time.sleep(0.3)  # the subscriber is up: the next verify is cached
    assert server.verify("https://app.example.com/", cookie).status == 200
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(HEARTBEAT_BOUND)  # a frozen Redis answers no PING: cache no longer trusted
        answers = [timed_verify(server, cookie) for _ in range(5)]
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    assert all(status == 302 for status, _ in answers), answers
    assert all(elapsed < 2.0 for _, elapsed in answers), answers
    deadline = time.monotonic() + 5
    while timed_verify(server, cookie)[0] != 200:
        assert time.monotonic() < deadline, "no recovery within 5 s of Redis returning"
        time.sleep(0.1)


def test_killed_redis_fails_closed_then_recovers(redis_site: tuple[Server, RedisServer]) -> None:
    """SIGKILL on Redis: 302 at once; a new Redis on the same port: sign-in works again."""
    server, redis_server = redis_site
    cookie = cookie_of(server.login("alice"))
    redis_server.stop(signal.SIGKILL)
    status, elapsed = timed_verify(server, cookie)
    assert status == 302
    assert elapsed < 2.0
    assert server.login("alice").status != 200  # no session can be created either
    redis_server.start()
    deadline = time.monotonic() + 5
    while (resp := server.login("alice")).status != 200:
        assert time.monotonic() < deadline, "no recovery within 5 s of Redis returning"
        time.sleep(0.2)
    assert server.verify("https://app.example.com/", cookie_of(resp)).status == 200
    assert server.verify("https://app.example.com/", cookie).status == 302  # old data gone


def test_two_servers_share_sessions(tmp_path: Path, own_redis: RedisServer) -> None:
    """Signed in through one authctl, accepted by another; logged out there, refused here."""
    first = make_folder(tmp_path / "one", redis_config(own_redis.url))
    second = make_folder(tmp_path / "two", redis_config(own_redis.url))
    # one users file and one storage key for both hosts, as a real deployment has (the
    # password stamp matches, and records sealed by one host open on the other)
    shutil.copy(first / "users.toml", second / "users.toml")
    shutil.copy(first / "secrets" / "storage.key", second / "secrets" / "storage.key")
    one = Server(first)
    two = Server(second)
    try:
        cookie = cookie_of(one.login("alice"))
        assert two.verify("https://app.example.com/", cookie).status == 200
        resp = two.request(
            "POST",
            "/api/logout",
            {
                "Content-Type": "application/json",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "auth.example.com",
                "Origin": "https://auth.example.com",
                "Cookie": cookie,
            },
            json.dumps({}).encode(),
        )
        assert resp.status == 200
        assert one.verify("https://app.example.com/", cookie).status == 302
    finally:
        one.stop()
        two.stop()


def test_store_is_fork_safe(store: SessionStore) -> None:
    """A forked child uses its own connections and sees the parent's sessions."""
    session = make_session()
    store.put(session, 60)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        ok = store.get(session.id) == session
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert store.get(session.id) == session


def test_cached_store_is_fork_safe(shared_redis: RedisServer) -> None:
    """A forked child starts with an empty cache and no subscription (it reads Redis), and
    gets a subscription of its own."""
    store = RedisStore.from_url(shared_redis.url, cache=True)
    session = make_session()
    store.put(session, 60)
    store.get(session.id)
    wait_until(lambda: store.cache is not None and store.cache.healthy())
    assert store.get(session.id) == session
    assert store.cache is not None
    assert len(store.cache) == 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        cache = store.cache
        ok = len(cache) == 0 and not cache.healthy() and store.get(session.id) == session
        deadline = time.monotonic() + 5
        while ok and not cache.healthy():
            ok = time.monotonic() < deadline
            time.sleep(0.01)
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert store.get(session.id) == session
    store.close()
