"""``RedisStore.from_config``: Redis Sentinel and ``redis_password_file``, against real
``redis-server`` and ``redis-sentinel`` processes (``tests.redis_services``).

A session survives a failover of the primary: while it is down every call raises
``SessionStoreError`` (fail closed; counted), and once a replica is promoted the same session
is read again by the same store, with no restart (the failover time is measured and
printed). The password from the file is used for Redis and the Sentinels; a wrong or missing
one is a clear error, and a missing file a clear start-up error naming the key.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.core.config.model import SentinelConfig
from server.core.config.model import SessionConfig
from server.core.redis_cache import HEARTBEAT_BOUND
from server.core.redis_store import RedisStore
from server.core.session_store import SessionStoreError
from server.core.session_store import hash_session_id
from tests.redis_services import MASTER_NAME
from tests.redis_services import RedisServer
from tests.redis_services import SentinelCluster
from tests.test_serve import AUTHCTL
from tests.test_serve import SQLITE_CONFIG
from tests.test_serve import make_folder
from tests.test_session_store import make_session

pytestmark = pytest.mark.slow

PASSWORD = "s3cret-redis-pass"


def session_config(**changes: object) -> SessionConfig:
    return SessionConfig(cookies=(), store="redis", **changes)  # type: ignore[arg-type]


def wait_healthy(store: RedisStore, timeout: float = 5.0) -> None:
    assert store.cache is not None
    deadline = time.monotonic() + timeout
    while not store.cache.healthy():
        assert time.monotonic() < deadline, "the invalidation channel did not come up"
        time.sleep(0.01)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    """A primary, a replica and three Sentinels, all with PASSWORD."""
    made = SentinelCluster(tmp_path / "sentinel", password=PASSWORD)
    yield made
    made.stop()


def sentinel_store(cluster: SentinelCluster, folder: Path) -> RedisStore:
    config = session_config(
        redis_url="redis://ignored.invalid:1/0",
        redis_password_file=cluster.write_password_file(folder / "redis.password"),
        redis_sentinel=SentinelConfig(MASTER_NAME, tuple(cluster.nodes)),
    )
    return RedisStore.from_config(config, key=b"k" * 32)


def test_sentinel_round_trip(cluster: SentinelCluster, tmp_path: Path) -> None:
    """Through the Sentinels (with the password) to the primary: put, get, delete; the record
    is replicated; the store has the inline cache."""
    store = sentinel_store(cluster, tmp_path)
    assert store.inline_reads is True
    session = make_session()
    store.put(session, 60)
    assert store.get(session.id) == session
    cluster.replicate()
    key = f"authctl:session:{hash_session_id(session.id).hex()}"
    replica = next(s for s in cluster.servers if s is not cluster.primary)
    with replica.client() as client:
        assert client.exists(key) == 1
    store.check()
    assert store.delete(session.id) is True
    assert store.get(session.id) is None
    store.close()


def test_failover_keeps_sessions_and_fails_closed_meanwhile(
    cluster: SentinelCluster, tmp_path: Path
) -> None:
    """Kill the primary: every call raises SessionStoreError until the Sentinels promote the
    replica (none returns a session or "no session"), then the same store reads the same
    session again and writes work, with no restart."""
    store = sentinel_store(cluster, tmp_path)
    session = make_session()
    store.put(session, 600)
    store.get(session.id)
    wait_healthy(store)
    cluster.replicate()
    assert store.get(session.id) == session
    killed = time.monotonic()
    old = cluster.kill_primary()
    early, failed, wrong = 0, 0, []
    while True:
        try:
            got = store.get(session.id)
        except SessionStoreError:
            failed += 1
        else:
            if got == session and failed == 0 and time.monotonic() - killed < HEARTBEAT_BOUND:
                early += 1  # from the cache, before the dropped channel was seen
            elif got == session:
                break  # recovered
            else:
                wrong.append(got)
        assert time.monotonic() - killed < 40, "no recovery within 40 s"
        time.sleep(0.02)
    recovered = time.monotonic() - killed
    promoted = cluster.wait_for_promotion(old)
    print(
        f"\nSentinel failover: {failed} calls failed closed, {len(wrong)} wrong, {early} "
        f"served from cache in the first {HEARTBEAT_BOUND} s; store recovered "
        f"{recovered:.2f} s after the kill"
    )
    assert wrong == []  # never "no session" (lost), never another answer
    assert failed > 10
    assert promoted >= 0
    fresh = make_session()
    store.put(fresh, 60)
    assert store.get(fresh.id) == fresh
    assert store.delete(session.id) is True
    store.close()


def test_password_file_is_used(tmp_path: Path) -> None:
    """requirepass on Redis: the file's password opens it; a wrong one and none are clear
    errors (SessionStoreError naming authentication), and the password is never logged."""
    server = RedisServer(tmp_path / "redis", password=PASSWORD)
    try:
        good = tmp_path / "good.password"
        good.write_text(PASSWORD + "\n", encoding="utf-8")
        store = RedisStore.from_config(
            session_config(redis_url=server.url, redis_password_file=good)
        )
        session = make_session()
        store.put(session, 60)
        assert store.get(session.id) == session
        store.close()

        bad = tmp_path / "bad.password"
        bad.write_text("not-" + PASSWORD, encoding="utf-8")
        for config in (
            session_config(redis_url=server.url, redis_password_file=bad),
            session_config(redis_url=server.url),
        ):
            store = RedisStore.from_config(config, cache=False)
            with pytest.raises(SessionStoreError) as caught:
                store.get(session.id)
            message = str(caught.value)
            assert "Authentication" in message or "NOAUTH" in message, message
            assert PASSWORD not in message
            store.close()
    finally:
        server.stop()


def test_password_file_beats_a_password_in_the_url(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", password=PASSWORD)
    try:
        good = tmp_path / "good.password"
        good.write_text(PASSWORD, encoding="utf-8")
        url = f"redis://:wrong@127.0.0.1:{server.port}/0"
        store = RedisStore.from_config(
            session_config(redis_url=url, redis_password_file=good), cache=False
        )
        store.check()
        store.close()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "is missing"),
        (b"", "is empty"),
        (b"\n", "is empty"),
        (b"one\ntwo\n", "more than one line"),
        (b"\xff\xfe", "not UTF-8"),
        (b"x" * 5000, "larger than"),
    ],
)
def test_unusable_password_file_is_a_clear_error(
    tmp_path: Path, content: bytes | None, expected: str
) -> None:
    path = tmp_path / "redis.password"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=expected) as caught:
        RedisStore.from_config(session_config(redis_password_file=path))
    assert "session.redis_password_file" in str(caught.value)
    assert str(path) in str(caught.value)


def test_unreadable_password_file_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "redis.password"
    folder.mkdir()  # a directory: EISDIR
    with pytest.raises(ValueError, match=r"session\.redis_password_file: cannot read"):
        RedisStore.from_config(session_config(redis_password_file=folder))


def test_unix_url_with_sentinel_is_refused() -> None:
    config = session_config(
        redis_url="unix:///run/redis.sock",
        redis_sentinel=SentinelConfig(MASTER_NAME, (("127.0.0.1", 26379),)),
    )
    with pytest.raises(ValueError, match=r"session\.redis_url"):
        RedisStore.from_config(config)


def test_tls_url_with_sentinel_builds_a_tls_client() -> None:
    """rediss:// keeps TLS for the primary and the Sentinels (nothing is sent yet)."""
    config = session_config(
        redis_url="rediss://127.0.0.1:1/3",
        redis_sentinel=SentinelConfig(MASTER_NAME, (("127.0.0.1", 26379),)),
    )
    store = RedisStore.from_config(config, cache=False)
    pool = store._redis.connection_pool
    assert "SSL" in pool.connection_class.__name__
    assert pool.connection_kwargs["db"] == 3
    store.close()


def test_serve_refuses_a_missing_password_file(tmp_path: Path) -> None:
    """authctl serve exits 3 at start-up, naming the key and the file."""
    config = SQLITE_CONFIG.replace(
        'store = "sqlite"',
        'store = "redis"\nredis_password_file = "secrets/redis.password"',
    )
    folder = make_folder(tmp_path / "site", config)
    result = subprocess.run(
        [AUTHCTL, "--config", str(folder / "authctl.toml"), "serve"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 3, result.stderr
    assert "session.redis_password_file" in result.stderr
    assert "redis.password" in result.stderr
