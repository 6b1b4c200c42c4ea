"""Which peers may speak for the client, who the client is, and what method it used.

X-Forwarded-* and X-Original-* headers are believed only from ``server.trusted_proxies``
(CVE-2026-40575: a client-sent ``X-Forwarded-Uri`` made rules run on the wrong path). The
client IP is found by walking ``X-Forwarded-For`` right to left, skipping trusted hops, so a
client cannot choose the address the ``networks`` criterion sees.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from functools import lru_cache

from server.core.config import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The peer of a connection on a unix socket (``server.address = "unix:/path"``), as
#: ``authctl serve`` sets REMOTE_ADDR for it. Such a peer is always trusted, like a listed
#: proxy: only a process allowed to open the socket file (mode 0660: authctl's user and
#: group) can connect, which is the same proof a trusted_proxies entry asks of a TCP peer.
#: No TCP peer can have this REMOTE_ADDR (waitress gives those as IP addresses).
UNIX_PEER = "unix"

#: Longest method accepted. Authelia sets no bound, but the method goes into the portal
#: redirect (``rm=``) and the decision log, and no registered method is longer than 17
#: letters (UPDATEREDIRECTREF), so a longer one is malformed input like any other.
METHOD_MAX = 32
#: ``^[A-Z]+$`` (SPEC §7.5, Authelia's ``hasInvalidMethodCharacters``: bytes 0x41-0x5A), as
#: a fullmatch: ``$`` alone would let a final newline through.
_METHOD = re.compile(f"[A-Z]{{1,{METHOD_MAX}}}")


@lru_cache(maxsize=4096)
def parse_ip(text: str) -> IPAddress | None:
    """Parse an IP address (``[v6]`` brackets, IPv4-mapped IPv6 to IPv4); None if invalid."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return None
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
    return address


class TrustedProxies:
    """The configured proxy networks, with a cached membership test."""

    def __init__(self, networks: Sequence[IPNetwork]) -> None:
        self._networks = tuple(networks)
        self._cache: dict[str, bool] = {}

    def __contains__(self, peer: object) -> bool:
        if not isinstance(peer, str):
            return False
        if peer == UNIX_PEER:
            return True
        known = self._cache.get(peer)
        if known is not None:
            return known
        address = parse_ip(peer)
        result = address is not None and any(address in net for net in self._networks)
        if len(self._cache) < 4096:
            self._cache[peer] = result
        return result

    def client_ip(self, peer: str, forwarded_for: str | None) -> IPAddress | None:
        """The client's address: the right-most ``X-Forwarded-For`` entry that is not a
        trusted proxy, or the peer itself when it is not trusted or sent no header.

        Returns None when the chain holds an unparseable entry before an untrusted one, or
        for a unix-socket peer that sent no header: an unknown address matches no
        ``networks`` criterion, which is the safe reading.
        """
        peer_ip = parse_ip(peer)
        if not forwarded_for or peer not in self:
            return peer_ip
        hops = [hop.strip() for hop in forwarded_for.split(",")]
        for hop in reversed(hops):
            address = parse_ip(hop)
            if address is None:
                return None
            if not any(address in net for net in self._networks):
                return address
        return parse_ip(hops[0])


def valid_method(value: object) -> bool:
    """Whether ``value`` is a method authctl judges: 1 to METHOD_MAX of ``A``-``Z``.

    Nothing is stripped or upper-cased: ``get``, `` GET`` and ``GET\\r`` are not GET to
    every application behind the proxy, so a rule must not judge them as GET. ``str.upper``
    and ``isalpha`` are no help here (U+0131 dotless i upper-cases to ``I``; the fullwidth
    U+FF27 is alphabetic).
    """
    return type(value) is str and _METHOD.fullmatch(value) is not None
