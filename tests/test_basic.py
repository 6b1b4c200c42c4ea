"""Basic credentials parsing and the HMAC-keyed credential cache."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.core.basic import BasicCredentials
from server.core.basic import CredentialCache
from server.core.basic import MalformedCredentials
from server.core.basic import parse_basic


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("Bearer abc", None),
        ("Token xyz", None),
        (f"Basic {b64('alice:secret')}", BasicCredentials("alice", "secret")),
        (f"basic {b64('alice:se:cret')}", BasicCredentials("alice", "se:cret")),
        (f"  BASIC   {b64('Zoë:pässword')}", BasicCredentials("Zoë", "pässword")),
    ],
    ids=["none", "empty", "bearer", "token", "basic", "colon-in-password", "case-utf8"],
)
def test_parse_basic(header: str | None, expected: BasicCredentials | None) -> None:
    """Basic headers decode; other schemes are ignored rather than failing."""
    assert parse_basic(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "Basic",
        "Basic !!!notbase64",
        f"Basic {b64('nocolon')}",
        f"Basic {b64(':nouser')}",
        f"Basic {b64('nopassword:')}",
        "Basic " + base64.b64encode(b"alice:\xff").decode(),
        "Basic " + b64("alice:pa\nss"),
        "Basic " + "A" * 5000,
    ],
    ids=["empty", "bad-b64", "no-colon", "no-user", "no-password", "bad-utf8", "ctl", "huge"],
)
def test_parse_basic_malformed(header: str) -> None:
    """A Basic header that does not decode to user:password is malformed."""
    with pytest.raises(MalformedCredentials):
        parse_basic(header)


def test_cache_hit_and_expiry() -> None:
    """A cached check is returned until its TTL passes."""
    now = [100.0]
    cache = CredentialCache(ttl=60, now=lambda: now[0])
    creds = BasicCredentials("alice", "secret")
    assert cache.get(creds) is None
    cache.put(creds, "alice", "stamp1")
    assert cache.get(creds) == ("alice", "stamp1")
    assert cache.get(BasicCredentials("alice", "other")) is None
    now[0] += 61
    assert cache.get(creds) is None


def test_cache_disabled_and_clear() -> None:
    """TTL 0 disables the cache; clear() forgets everything."""
    off = CredentialCache(ttl=0)
    creds = BasicCredentials("alice", "secret")
    off.put(creds, "alice", "s")
    assert off.get(creds) is None
    on = CredentialCache(ttl=60)
    on.put(creds, "alice", "s")
    on.clear()
    assert on.get(creds) is None


def test_cache_bounded() -> None:
    """The cache never grows without bound."""
    cache = CredentialCache(ttl=60)
    for i in range(10_001):
        cache.put(BasicCredentials(f"u{i}", "p"), f"u{i}", "s")
    assert len(cache._entries) <= 10_000


@given(st.text(min_size=1, max_size=8), st.text(min_size=1, max_size=8), st.integers(1, 7))
def test_cache_key_has_no_split_collisions(user: str, password: str, cut: int) -> None:
    """Moving characters between user and password never hits another entry."""
    cache = CredentialCache(ttl=60)
    joined = user + password
    cut = min(cut, len(joined) - 1)
    other = BasicCredentials(joined[:cut], joined[cut:])
    cache.put(BasicCredentials(user, password), user, "s")
    if other != BasicCredentials(user, password):
        assert cache.get(other) is None
