"""Sliding-window rate limits (server/core/ratelimit.py), counted in a real storage database, on
a fake clock; a hypothesis test holds them to a naive model of the sliding windows."""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from server.core.config import StorageConfig
from server.core.ratelimit import PURGE_INTERVAL
from server.core.ratelimit import Limit
from server.core.ratelimit import RateLimiter
from server.core.ratelimit import RateLimits
from server.core.ratelimit import limits
from server.core.ratelimit import retry_after_header
from server.core.storage import Storage
from server.core.storage import StorageError
from tests.conftest import Clock
from tests.pgcluster import PASSWORD
from tests.pgcluster import pg_cluster  # noqa: F401 - a fixture
from tests.pgcluster import pg_dsn  # noqa: F401 - a fixture


def open_storage(folder: Path, clock: Clock) -> Storage:
    """A SQLite storage in ``folder`` (no key: rate limits store no secret)."""
    return Storage(
        StorageConfig(folder / "authctl.db", folder / "missing.key"), clock, require_key=False
    )


#: Both engines; PostgreSQL runs on the throwaway cluster of tests/pgcluster.py.
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.slow)]


@pytest.fixture(params=BACKENDS)
def config(request: pytest.FixtureRequest, tmp_path: Path) -> StorageConfig:
    """The storage of a test, on each backend (PostgreSQL: a fresh database)."""
    sqlite = StorageConfig(tmp_path / "authctl.db", tmp_path / "missing.key")
    if request.param == "sqlite":
        return sqlite
    cluster = request.getfixturevalue("pg_cluster")
    dsn = request.getfixturevalue("pg_dsn")
    return replace(sqlite, backend="postgres", postgres=cluster.postgres_config(dsn))


@pytest.fixture
def storage(config: StorageConfig, clock: Clock) -> Iterator[Storage]:
    opened = Storage(config, clock, require_key=False)
    yield opened
    opened.close()


@pytest.fixture
def group(storage: Storage, clock: Clock) -> RateLimits:
    return RateLimits(storage, now=clock)


def test_allows_up_to_count_then_refuses(group: RateLimits, clock: Clock) -> None:
    """Three hits per minute pass, the fourth waits until the first leaves the window."""
    limiter = group.limiter("l", limits((3, 60)))
    assert [limiter.hit("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.hit("k") == pytest.approx(60.0)
    clock.advance(59.5)
    assert limiter.hit("k") == pytest.approx(0.5)
    clock.advance(0.5)
    assert limiter.hit("k") == 0.0


def test_window_slides(group: RateLimits, clock: Clock) -> None:
    """Hits spread over time free their slots one by one (a sliding window, not a fixed one)."""
    limiter = group.limiter("l", limits((2, 10)))
    assert limiter.hit("k") == 0.0
    clock.advance(6)
    assert limiter.hit("k") == 0.0
    assert limiter.hit("k") == pytest.approx(4.0)
    clock.advance(4)
    assert limiter.hit("k") == 0.0
    assert limiter.hit("k") == pytest.approx(6.0)


def test_every_limit_must_hold(group: RateLimits, clock: Clock) -> None:
    """With 2/10 s and 3/100 s, the longer limit bites once the short one has recovered."""
    limiter = group.limiter("l", limits((2, 10), (3, 100)))
    assert limiter.hit("k") == limiter.hit("k") == 0.0
    assert limiter.hit("k") == pytest.approx(10.0)
    clock.advance(10)
    assert limiter.hit("k") == 0.0
    clock.advance(10)
    assert limiter.hit("k") == pytest.approx(80.0)


def test_refused_hits_are_not_recorded(group: RateLimits, clock: Clock) -> None:
    """Hammering while refused does not extend the wait (no self-extending lockout)."""
    limiter = group.limiter("l", limits((1, 30)))
    assert limiter.hit("k") == 0.0
    for _ in range(50):
        clock.advance(0.5)
        assert limiter.hit("k") > 0
    clock.advance(5)
    assert limiter.hit("k") == 0.0


def test_keys_are_independent(group: RateLimits) -> None:
    """One key's hits never count against another."""
    limiter = group.limiter("l", limits((1, 60)))
    assert limiter.hit("alice") == 0.0
    assert limiter.hit("bob") == 0.0
    assert limiter.hit("alice") > 0


def test_keys_are_namespaced_by_limiter(group: RateLimits, storage: Storage) -> None:
    """Two limiters never share a count for one key: the store sees ``name:key``."""
    per_user = group.limiter("code_send_user", limits((1, 60)))
    per_ip = group.limiter("code_send_ip", limits((1, 60)))
    assert per_user.key("alice") == "code_send_user:alice"
    assert per_user.hit("alice") == 0.0
    assert per_ip.hit("alice") == 0.0
    assert per_user.hit("alice") > 0
    assert per_ip.hit("alice") > 0


def test_hit_all_records_only_when_all_allow(group: RateLimits) -> None:
    """A request refused for its IP does not eat the user's allowance, and vice versa."""
    per_user = group.limiter("user", limits((2, 60)))
    per_ip = group.limiter("ip", limits((1, 60)))
    assert RateLimiter.hit_all([(per_user, "alice"), (per_ip, "10.0.0.1")]) == 0.0
    assert RateLimiter.hit_all([(per_user, "alice"), (per_ip, "10.0.0.1")]) > 0
    # the refused request was not counted: alice still has one hit left
    assert RateLimiter.hit_all([(per_user, "alice"), (per_ip, "10.0.0.2")]) == 0.0
    assert per_user.hit("alice") > 0


def test_hit_all_of_nothing_asks_no_store(group: RateLimits, storage: Storage) -> None:
    """No pairs (every key of the route was missing): allowed, the store is not asked."""
    storage.close()
    assert RateLimiter.hit_all([]) == 0.0
    assert group.hit_all([]) == 0.0


def test_hit_all_takes_one_store(group: RateLimits, tmp_path: Path, clock: Clock) -> None:
    """Limiters of two stores cannot be hit in one transaction: refused, not half-done."""
    (tmp_path / "other").mkdir()
    other = open_storage(tmp_path / "other", clock)
    try:
        mine = group.limiter("a", limits((1, 60)))
        theirs = RateLimits(other, now=clock).limiter("b", limits((1, 60)))
        with pytest.raises(ValueError, match="one store"):
            RateLimiter.hit_all([(mine, "k"), (theirs, "k")])
        assert mine.hit("k") == 0.0
    finally:
        other.close()


def test_parallel_hits_respect_the_limit(group: RateLimits) -> None:
    """Of 50 parallel hits on one key with a limit of 5, exactly 5 pass."""
    limiter = group.limiter("l", limits((5, 60)))
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: limiter.hit("k"), range(50)))
    assert sum(1 for r in results if r == 0.0) == 5


def test_a_storage_failure_fails_closed(group: RateLimits, storage: Storage) -> None:
    """A store that fails raises (the request is refused), it never lets the hit through."""
    limiter = group.limiter("l", limits((5, 60)))
    storage.close()
    with pytest.raises(StorageError):
        limiter.hit("k")
    with pytest.raises(StorageError):
        RateLimiter.hit_all([(limiter, "k"), (limiter, "j")])


def rows(config: StorageConfig) -> int:
    """Rate-limit hits stored in the database (read behind the storage's back)."""
    sql = "SELECT count(*) FROM rate_limit_hits"
    if config.postgres is not None:
        with psycopg.connect(config.postgres.dsn, password=PASSWORD, connect_timeout=5) as conn:
            found = conn.execute(sql).fetchone()
    else:
        with contextlib.closing(sqlite3.connect(config.path)) as conn:
            found = conn.execute(sql).fetchone()
    assert found is not None
    return int(found[0])


def test_old_hits_are_purged_once_an_interval(
    group: RateLimits, config: StorageConfig, clock: Clock
) -> None:
    """Hits older than the longest window are forgotten, on a hit, at most once a minute."""
    short = group.limiter("short", limits((5, 10)))
    group.limiter("long", limits((5, 100)))  # the longest window decides what may go
    for key in ("a", "b", "c"):
        short.hit(key)  # the first hit purges (nothing yet) and sets the next purge
    assert rows(config) == 3
    clock.advance(PURGE_INTERVAL + 50)  # 110 s: the hits are past every window
    short.hit("d")
    assert rows(config) == 1
    clock.advance(101)
    short.hit("e")
    short.hit("f")
    clock.advance(1)
    short.hit("g")  # under a minute after the last purge: nothing purged
    assert rows(config) == 3


def test_a_failed_purge_only_logs(
    group: RateLimits,
    storage: Storage,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Forgetting old hits late allows nothing, so a purge failure does not refuse the hit."""
    limiter = group.limiter("l", limits((1, 60)))

    def broken(before: float) -> int:
        raise StorageError("database is locked")

    monkeypatch.setattr(storage, "purge_rate_limits", broken)
    with caplog.at_level(logging.WARNING, "server.ratelimit"):
        assert limiter.hit("k") == 0.0
    assert caplog.messages == ["old rate-limit hits could not be purged: database is locked"]
    assert limiter.hit("k") > 0


@pytest.mark.parametrize(
    ("count", "window"), [(0, 10), (1, 0), (1, -1)], ids=["zero-count", "zero-window", "negative"]
)
def test_bad_limits_are_refused(count: int, window: float) -> None:
    """A limit needs a positive count and window."""
    with pytest.raises(ValueError, match="rate limit"):
        Limit(count, window)


def test_bad_limiters_are_refused(group: RateLimits) -> None:
    """A limiter needs at least one limit and a name that cannot blur the namespaces."""
    with pytest.raises(ValueError, match="at least one limit"):
        group.limiter("l", ())
    for name in ("", "a:b"):
        with pytest.raises(ValueError, match="name"):
            group.limiter(name, limits((1, 1)))
    assert repr(group.limiter("l", limits((1, 1)))) == "<RateLimiter l>"


@pytest.mark.parametrize(("wait", "header"), [(0.1, "1"), (1.0, "1"), (59.2, "60"), (0.0, "1")])
def test_retry_after_header(wait: float, header: str) -> None:
    """``Retry-After`` is whole seconds, rounded up, at least 1."""
    assert retry_after_header(wait) == header


# --------------------------------------------------------------------------- against a model


class Model:
    """The sliding windows the naive way: every allowed hit's time, per key."""

    def __init__(self) -> None:
        self.hits: dict[str, list[float]] = {}

    def wait(self, key: str, rules: tuple[Limit, ...], now: float) -> float:
        hits = self.hits.get(key, [])
        wait = 0.0
        for rule in rules:
            inside = sorted(when for when in hits if when > now - rule.window)
            if len(inside) >= rule.count:
                wait = max(wait, inside[len(inside) - rule.count] + rule.window - now)
        return wait

    def hit_all(self, pairs: list[tuple[str, tuple[Limit, ...]]], now: float) -> float:
        wait = max((self.wait(key, rules, now) for key, rules in pairs), default=0.0)
        if wait == 0:
            for key, _ in pairs:
                self.hits.setdefault(key, []).append(now)
        return wait


RULES = {
    "a": limits((2, 10)),
    "b": limits((1, 5), (3, 30)),
    "c": limits((4, 60), (2, 7)),
}
steps = st.lists(
    st.tuples(
        st.integers(0, 12),  # seconds to wait first (whole: the window edges are exact)
        st.lists(
            st.tuples(st.sampled_from(sorted(RULES)), st.sampled_from(["x", "y"])),
            min_size=1,
            max_size=3,
            unique=True,
        ),
    ),
    max_size=40,
)


_examples = itertools.count()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=steps)
def test_limits_match_a_naive_model(
    storage: Storage, script: list[tuple[int, list[tuple[str, str]]]]
) -> None:
    """Any sequence of waits and multi-limiter hits gets the model's verdicts and waits.

    One storage serves every example (a database per example is slow on PostgreSQL); each
    example's limiters have names of their own, so nothing carries over."""
    clock = Clock()
    model = Model()
    group = RateLimits(storage, now=clock, purge_interval=1e12)
    run = next(_examples)
    limiters = {name: group.limiter(f"{name}{run}", rules) for name, rules in RULES.items()}
    for pause, hits in script:
        clock.advance(pause)
        got = RateLimiter.hit_all([(limiters[name], key) for name, key in hits])
        want = model.hit_all([(f"{name}:{key}", RULES[name]) for name, key in hits], clock.now)
        assert got == pytest.approx(want, abs=1e-6)
