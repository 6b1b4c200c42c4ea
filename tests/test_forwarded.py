"""Trusted proxies and client-IP derivation (SPEC §3.4)."""

from __future__ import annotations

import ipaddress

import pytest

from server.core.config import parse_network
from server.core.forwarded import TrustedProxies
from server.core.forwarded import parse_ip

PROXIES = TrustedProxies([parse_network("127.0.0.1/32"), parse_network("10.0.0.0/8")])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        (" 10.1.2.3 ", "10.1.2.3"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("fe80::1%eth0", None),
        ("not-an-ip", None),
        ("", None),
        ("1.2.3.4:80", None),
    ],
    ids=["v4", "spaces", "v6", "bracketed", "mapped", "scoped", "garbage", "empty", "port"],
)
def test_parse_ip(text: str, expected: str | None) -> None:
    """Addresses parse strictly; IPv4-mapped IPv6 becomes IPv4; anything else is None."""
    result = parse_ip(text)
    assert (str(result) if result else None) == expected


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        ("127.0.0.1", True),
        ("10.200.0.1", True),
        ("::ffff:127.0.0.1", True),
        ("127.0.0.2", False),
        ("192.168.1.1", False),
        ("", False),
        ("garbage", False),
    ],
)
def test_trusted_membership(peer: str, trusted: bool) -> None:
    """Only peers inside a configured network are trusted."""
    assert (peer in PROXIES) is trusted
    assert (peer in PROXIES) is trusted  # cached answer is the same


def test_non_string_peer_is_untrusted() -> None:
    """A missing REMOTE_ADDR (None) is never trusted."""
    assert (None in PROXIES) is False


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "203.0.113.7", "203.0.113.7"),
        ("127.0.0.1", "198.51.100.1, 203.0.113.7", "203.0.113.7"),
        ("127.0.0.1", "203.0.113.7, 10.0.0.5", "203.0.113.7"),
        ("127.0.0.1", "10.9.9.9, 10.0.0.5", "10.9.9.9"),
        ("127.0.0.1", "garbage, 203.0.113.7", "203.0.113.7"),
        ("127.0.0.1", "203.0.113.7, garbage", None),
        ("192.0.2.1", "10.0.0.1", "192.0.2.1"),
        ("127.0.0.1", "::ffff:203.0.113.9", "203.0.113.9"),
    ],
    ids=[
        "no-header",
        "one-hop",
        "spoofed-left-ignored",
        "skip-trusted",
        "all-trusted-leftmost",
        "garbage-left-ignored",
        "garbage-right-unknown",
        "untrusted-peer-header-ignored",
        "mapped",
    ],
)
def test_client_ip(peer: str, xff: str | None, expected: str | None) -> None:
    """X-Forwarded-For is walked right to left from a trusted peer only."""
    result = PROXIES.client_ip(peer, xff)
    assert (str(result) if result else None) == expected


def test_client_ip_is_an_address_object() -> None:
    """The client IP is an ipaddress object the rules can test against networks."""
    assert isinstance(PROXIES.client_ip("127.0.0.1", "203.0.113.7"), ipaddress.IPv4Address)


def test_unix_socket_peer_is_trusted_explicitly() -> None:
    """A unix-socket peer (REMOTE_ADDR "unix", set by serve) speaks for the client, even
    when no network is listed; its client IP comes from X-Forwarded-For, or is unknown."""
    from server.core.forwarded import UNIX_PEER

    for proxies in (PROXIES, TrustedProxies([])):
        assert UNIX_PEER in proxies
        assert proxies.client_ip(UNIX_PEER, "203.0.113.9") == ipaddress.ip_address("203.0.113.9")
        assert proxies.client_ip(UNIX_PEER, None) is None
        assert proxies.client_ip(UNIX_PEER, "garbage") is None
    assert "localhost" not in PROXIES  # waitress's own name for it is not trusted
    assert "unix:" not in PROXIES
