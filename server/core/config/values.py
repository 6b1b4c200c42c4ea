"""Reading one value of the config: durations, paths, networks, host names and https URLs,
each refused with the spelling to write instead where there is one."""

from __future__ import annotations

import ipaddress
import re
import typing as t
from pathlib import Path
from urllib.parse import quote
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

from server.core.config.model import IPNetwork
from server.core.durations import format_duration
from server.core.durations import parse_duration
from server.core.errors import InvalidTargetError
from server.core.tomlread import ProblemReader
from server.core.tomlread import join as _join
from server.core.urls import canonical_host


class Reader(ProblemReader):
    """The config's reader: the TOML kinds plus durations and paths."""

    def duration(
        self, table: dict[str, t.Any], key: str, name: str, default: int, minimum: int = 0
    ) -> int:
        if name not in table:
            return default
        try:
            seconds = parse_duration(table[name])
        except ValueError as exc:
            self.error(_join(key, name), str(exc), 'write "30s", "5m", "1h30m" or a number')
            return default
        if seconds < minimum:
            self.error(
                _join(key, name),
                f"must be at least {format_duration(minimum)}",
                f'write a duration such as "{format_duration(max(minimum, 60))}"',
            )
            return default
        return seconds

    def file_path(
        self, base: Path, table: dict[str, t.Any], key: str, name: str, default: str
    ) -> Path:
        """A path; relative paths resolve against ``base`` (the config file's folder)."""
        return resolve(base, self.string(table, key, name, default))


def resolve(base: Path, text: str) -> Path:
    return (base / Path(text).expanduser()).resolve()


def parse_network(text: str) -> IPNetwork:
    """Parse an IP address or CIDR into a network; IPv4-mapped IPv6 becomes IPv4.

    Raises:
        ValueError: not an address or CIDR.
    """
    network = ipaddress.ip_network(text.strip(), strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped:
        mapped = network.network_address.ipv4_mapped
        prefix = max(0, network.prefixlen - 96)
        return ipaddress.ip_network(f"{mapped}/{prefix}", strict=False)
    return network


class DomainError(ValueError):
    """A host name the config cannot use; ``spelling`` is the one to write instead, if any."""

    def __init__(self, message: str, spelling: str | None = None) -> None:
        super().__init__(message)
        self.spelling = spelling


def normalise_domain(text: str) -> str:
    """The canonical host name (lowercase IDNA A-labels), or DomainError.

    The same function reads the hosts of requests (``server.core.urls.canonical_host``), so
    a spelling a request may not use (fullwidth letters, ``。``, an upper-case non-ASCII
    letter, an IP address) cannot be configured either: the config says which spelling to
    write. No trailing dot: one more spelling of the same host is one more way round a rule.
    """
    host = text.strip()
    if not host:
        raise DomainError("the host name is empty")
    if host.endswith("."):
        raise DomainError(f"{text!r} ends with a dot; write it without", host.rstrip("."))
    try:
        return canonical_host(host, allow_unicode=True)
    except InvalidTargetError as exc:
        spelling = _mapped_spelling(host)
        raise DomainError(f"{text!r} is not a valid host name: {exc}", spelling) from None


def _mapped_spelling(host: str) -> str | None:
    """What IDNA would make of ``host`` (fullwidth ``app`` -> ``app``), if that is a usable name."""
    try:
        mapped = host.encode("idna").decode("ascii").encode("ascii").decode("idna")
        canonical_host(mapped, allow_unicode=True)
    except (UnicodeError, InvalidTargetError):
        return None
    return mapped if mapped != host else None


def write_host(exc: ValueError, fallback: str) -> str:
    """The fix for a refused host: the spelling to use when there is one, else ``fallback``."""
    spelling = exc.spelling if isinstance(exc, DomainError) else None
    return f"write {spelling!r}" if spelling else fallback


def is_ip(text: str) -> bool:
    """True for an IP address, including the short and numeric IPv4 spellings browsers accept.

    ``127.1`` or ``2130706433`` are IPv4 addresses to a browser (WHATWG URL: a host whose last
    label is numeric is parsed as IPv4), so they are not domain names either.
    """
    host = text.strip().strip("[]").lower()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        last = host.rstrip(".").rsplit(".", 1)[-1]
        return bool(re.fullmatch(r"[0-9]+|0x[0-9a-f]*", last))
    return True


_URL_SAFE = "/:@!$&'()*+,;=-._~%?"


def _raw_host(netloc: str) -> str:
    """The host of ``netloc`` as written (``urlsplit().hostname`` lowercases Unicode too)."""
    host = netloc.rpartition("@")[2]
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.partition(":")[0]


def https_fix(url: str, fallback: str) -> str:
    """The fix for a refused URL: the https URL with the original host, port and path.

    ``http://auth.example.org:8443/`` gives ``write "https://auth.example.org:8443/"``;
    ``fallback`` when there is no usable host in it.
    """
    text = "".join(ch for ch in url if not (ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F))
    text = text.replace("\\", "/")
    if "://" not in text:
        text = "https://" + text.lstrip("/")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return fallback
    raw = _raw_host(parts.netloc)
    if not raw or is_ip(raw):
        return fallback
    try:
        host = normalise_domain(raw)
    except DomainError as exc:
        if exc.spelling is None:
            return fallback
        host = normalise_domain(exc.spelling)
    netloc = host if port in (None, 0, 443) else f"{host}:{port}"
    fixed = urlunsplit(("https", netloc, parts.path, parts.query, parts.fragment))
    return f"write {fixed!r}".replace("'", '"')


def https_url(url: str) -> tuple[str, str]:
    """Check an absolute https URL; return its host and the URL re-serialised in ASCII.

    The host is lowercased and IDNA-encoded and any other non-ASCII character is
    percent-encoded, so the URL can go into a ``Location`` header as it is.

    Raises:
        ValueError: the URL is not a clean https URL (the message completes a sentence).
    """
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F or ch == "\\" for ch in url):
        raise ValueError("contains white space, control characters or a backslash")
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ValueError("must be an https:// URL (authctl refuses plain HTTP by design)")
    if "@" in parts.netloc:
        raise ValueError("must not contain user information (user@)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    if port == 0:
        raise ValueError("has an invalid port")
    raw_host = _raw_host(parts.netloc)
    if not raw_host:
        raise ValueError("has no host")
    if is_ip(raw_host):
        raise ValueError("must name a host, not an IP address")
    host = normalise_domain(raw_host)
    netloc = host if port is None else f"{host}:{port}"
    path, query, fragment = (quote(x, safe=_URL_SAFE) for x in parts[2:])
    return host, urlunsplit(("https", netloc, path, query, fragment))
