"""Sliding-window rate limits (server/core/ratelimit.py) on a fake clock."""

from __future__ import annotations

import concurrent.futures
import typing as t

import pytest

from server.core.ratelimit import Limit
from server.core.ratelimit import RateLimiter
from server.core.ratelimit import limits
from server.core.ratelimit import retry_after_header


def test_allows_up_to_count_then_refuses(clock: t.Any) -> None:
    """Three hits per minute pass, the fourth waits until the first leaves the window."""
    limiter = RateLimiter(limits((3, 60)), now=clock)
    assert [limiter.hit("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.hit("k") == pytest.approx(60.0)
    clock.advance(59.5)
    assert limiter.hit("k") == pytest.approx(0.5)
    clock.advance(0.5)
    assert limiter.hit("k") == 0.0


def test_window_slides(clock: t.Any) -> None:
    """Hits spread over time free their slots one by one (a sliding window, not a fixed one)."""
    limiter = RateLimiter(limits((2, 10)), now=clock)
    assert limiter.hit("k") == 0.0
    clock.advance(6)
    assert limiter.hit("k") == 0.0
    assert limiter.retry_after("k") == pytest.approx(4.0)
    clock.advance(4)
    assert limiter.hit("k") == 0.0
    assert limiter.retry_after("k") == pytest.approx(6.0)


def test_every_limit_must_hold(clock: t.Any) -> None:
    """With 2/10 s and 3/100 s, the longer limit bites once the short one has recovered."""
    limiter = RateLimiter(limits((2, 10), (3, 100)), now=clock)
    assert limiter.hit("k") == limiter.hit("k") == 0.0
    assert limiter.hit("k") == pytest.approx(10.0)
    clock.advance(10)
    assert limiter.hit("k") == 0.0
    clock.advance(10)
    assert limiter.hit("k") == pytest.approx(80.0)


def test_refused_hits_are_not_recorded(clock: t.Any) -> None:
    """Hammering while refused does not extend the wait (no self-extending lockout)."""
    limiter = RateLimiter(limits((1, 30)), now=clock)
    assert limiter.hit("k") == 0.0
    for _ in range(50):
        clock.advance(0.5)
        assert limiter.hit("k") > 0
    clock.advance(5)
    assert limiter.hit("k") == 0.0


def test_keys_are_independent(clock: t.Any) -> None:
    """One key's hits never count against another."""
    limiter = RateLimiter(limits((1, 60)), now=clock)
    assert limiter.hit("alice") == 0.0
    assert limiter.hit("bob") == 0.0
    assert limiter.hit("alice") > 0


def test_hit_all_records_only_when_all_allow(clock: t.Any) -> None:
    """A request refused for its IP does not eat the user's allowance, and vice versa."""
    per_user = RateLimiter(limits((2, 60)), now=clock)
    per_ip = RateLimiter(limits((1, 60)), now=clock)
    assert RateLimiter.hit_all([(per_user, "alice"), (per_ip, "10.0.0.1")]) == 0.0
    assert RateLimiter.hit_all([(per_user, "alice"), (per_ip, "10.0.0.1")]) > 0
    assert per_user.retry_after("alice") == 0.0  # the refused request was not counted
    assert RateLimiter.hit_all([(per_user, "alice"), (per_ip, "10.0.0.2")]) == 0.0
    assert per_user.retry_after("alice") > 0


def test_memory_is_bounded(clock: t.Any) -> None:
    """Past ``max_keys`` stale keys go first, then the longest-idle one."""
    limiter = RateLimiter(limits((1, 10)), now=clock, max_keys=3)
    for key in ("a", "b", "c"):
        limiter.hit(key)
    clock.advance(11)
    limiter.hit("c")  # refreshed: stays
    limiter.hit("d")  # a and b are stale
    assert len(limiter) == 2
    limiter.hit("e")
    limiter.hit("f")  # full of live keys: the longest-idle (c) goes
    assert len(limiter) == 3
    assert limiter.retry_after("c") == 0.0
    assert limiter.retry_after("d") > 0


def test_reset_forgets_a_key(clock: t.Any) -> None:
    """``reset`` lifts a key's limit at once."""
    limiter = RateLimiter(limits((1, 60)), now=clock)
    limiter.hit("k")
    limiter.reset("k")
    assert limiter.hit("k") == 0.0


def test_parallel_hits_respect_the_limit(clock: t.Any) -> None:
    """Of 50 parallel hits on one key with a limit of 5, exactly 5 pass."""
    limiter = RateLimiter(limits((5, 60)), now=clock)
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: limiter.hit("k"), range(50)))
    assert sum(1 for r in results if r == 0.0) == 5


@pytest.mark.parametrize(
    ("count", "window"), [(0, 10), (1, 0), (1, -1)], ids=["zero-count", "zero-window", "negative"]
)
def test_bad_limits_are_refused(count: int, window: float) -> None:
    """A limit needs a positive count and window."""
    with pytest.raises(ValueError, match="rate limit"):
        Limit(count, window)


def test_bad_limiters_are_refused() -> None:
    """A limiter needs at least one limit and room for one key."""
    with pytest.raises(ValueError, match="at least one limit"):
        RateLimiter(())
    with pytest.raises(ValueError, match="max_keys"):
        RateLimiter(limits((1, 1)), max_keys=0)


@pytest.mark.parametrize(("wait", "header"), [(0.1, "1"), (1.0, "1"), (59.2, "60"), (0.0, "1")])
def test_retry_after_header(wait: float, header: str) -> None:
    """``Retry-After`` is whole seconds, rounded up, at least 1."""
    assert retry_after_header(wait) == header
