"""Load and validate ``authctl.toml`` into frozen, typed objects.

Validation happens once, at load, and is complete: every problem is collected with the file,
the key path (``access_control.rules[3].networks[0]``), the line where it can be found, what
is wrong and how to fix it. Unknown keys are errors, so a typo such as ``polcy`` never passes
silently.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import typing as t
from dataclasses import dataclass
from dataclasses import field
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import quote
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

from server.core.durations import format_duration
from server.core.durations import parse_duration
from server.core.errors import ConfigError
from server.core.errors import InvalidTargetError
from server.core.names import check_group
from server.core.names import check_username
from server.core.policy import POLICIES
from server.core.policy import Policy
from server.core.regex import Regex
from server.core.regex import RegexError
from server.core.regex import compile_rule_regex
from server.core.tomlpos import locate
from server.core.tomlread import MISSING as _MISSING
from server.core.tomlread import ProblemReader
from server.core.tomlread import join as _join
from server.core.tomlread import kind_of as _kind
from server.core.tomlread import read_toml
from server.core.urls import canonical_host

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SAME_SITE = ("lax", "strict", "none")
SESSION_STORES = ("memory", "sqlite", "redis")
TOTP_ALGORITHMS = ("SHA1", "SHA256", "SHA512")
REGULATION_MODES = ("user", "ip")
QUERY_OPERATORS = ("present", "absent", "equal", "not equal", "pattern", "not pattern")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
#: HTTP methods a ``methods`` criterion may name (RFC 7231, 5789, 4918), as Authelia accepts.
HTTP_METHODS = (
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK",
)  # fmt: skip

#: Bounds of the argon2id parameters used for new hashes (and accepted in the users file).
ARGON2_MAX_MEMORY_KIB = 1024 * 1024
ARGON2_MAX_ITERATIONS = 20
ARGON2_MAX_PARALLELISM = 16

_COOKIE_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
_NETWORK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

#: Every key the loader accepts, by table. ``[]`` marks the entries of an array of tables
#: (``session.cookies[]`` is one ``[[session.cookies]]``); ``query[][]`` is one condition of
#: a rule's ``query``. A key outside this table is an error (with a did-you-mean), and
#: ``tests/test_docs.py`` checks that each one is documented in ``man/authctl.toml.5``.
KEYS: dict[str, tuple[str, ...]] = {
    "": (
        "server", "users", "storage", "session", "totp", "regulation", "notifier",
        "password_policy", "log", "access_control",
    ),
    "server": ("address", "trusted_proxies", "threads", "shutdown_grace", "inline_authz"),
    "users": ("file", "watch", "password_hash"),
    "users.password_hash": ("memory_kib", "iterations", "parallelism"),
    "storage": ("path", "encryption_key_file"),
    "session": (
        "name", "same_site", "expiration", "inactivity", "remember_me", "store", "redis_url",
        "cookies",
    ),
    "session.cookies[]": ("domain", "portal_url", "default_redirect_url"),
    "totp": ("issuer", "algorithm", "digits", "period", "skew"),
    "regulation": ("max_retries", "find_time", "ban_time", "modes"),
    "notifier": ("filesystem", "smtp"),
    "notifier.smtp": (
        "host", "port", "username", "password_file", "sender", "starttls", "tls", "timeout",
        "startup_check",
    ),
    "password_policy": ("min_length", "max_length", "check_common"),
    "log": ("level", "format"),
    "access_control": ("default_policy", "networks", "rules"),
    "access_control.rules[]": (
        "domain", "domain_regex", "resources", "methods", "networks", "subject", "query",
        "policy",
    ),
    "access_control.rules[].query[][]": ("key", "operator", "value"),
}  # fmt: skip


# --------------------------------------------------------------------------- value objects


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """``[server]``: where to listen and whom to believe."""

    address: str = "127.0.0.1:9091"
    host: str = "127.0.0.1"
    port: int = 9091
    unix_socket: str | None = None
    trusted_proxies: tuple[IPNetwork, ...] = (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
    threads: int = 8
    #: Seconds SIGTERM waits for answers to requests already received (``server.serve.drain``).
    shutdown_grace: int = 10
    #: Whether authz answered from memory is sent from the I/O thread (``server.serve.inline``)
    #: instead of the thread pool; the same bytes either way.
    inline_authz: bool = True


@dataclass(frozen=True, slots=True)
class PasswordHashConfig:
    """argon2id parameters for NEW hashes (memory in KiB)."""

    memory_kib: int = 65536
    iterations: int = 3
    parallelism: int = 4


@dataclass(frozen=True, slots=True)
class UsersConfig:
    """``[users]``: the users file and how new passwords are hashed."""

    file: Path
    watch: bool = True
    password_hash: PasswordHashConfig = field(default_factory=PasswordHashConfig)


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """``[storage]``: the SQLite database and the key that encrypts TOTP secrets in it."""

    path: Path
    encryption_key_file: Path


@dataclass(frozen=True, slots=True)
class CookieConfig:
    """One ``[[session.cookies]]`` entry: a protected root domain and its portal."""

    domain: str
    portal_url: str
    default_redirect_url: str | None = None

    def covers(self, host: str) -> bool:
        """True when ``host`` (lowercase, no port) is the domain or one of its subdomains."""
        return host == self.domain or host.endswith("." + self.domain)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """``[session]``: the cookie, lifetimes (seconds) and where sessions are stored."""

    cookies: tuple[CookieConfig, ...]
    name: str = "authctl_session"
    same_site: str = "lax"
    expiration: int = 3600
    inactivity: int = 300
    remember_me: int = 30 * 86400
    store: str = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"

    def cookie_for(self, host: str) -> CookieConfig | None:
        """The cookie entry whose domain covers ``host``, or None."""
        for cookie in self.cookies:
            if cookie.covers(host):
                return cookie
        return None


@dataclass(frozen=True, slots=True)
class TotpConfig:
    """``[totp]``: parameters of new TOTP secrets and of code checks."""

    issuer: str = "authctl"
    algorithm: str = "SHA1"
    digits: int = 6
    period: int = 30
    skew: int = 1


@dataclass(frozen=True, slots=True)
class RegulationConfig:
    """``[regulation]``: brute-force bans (Authelia's algorithm)."""

    max_retries: int = 3
    find_time: int = 120
    ban_time: int = 300
    modes: tuple[str, ...] = ("user",)


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """``[notifier.smtp]``: an SMTP relay."""

    host: str
    sender: str
    port: int = 587
    username: str | None = None
    password_file: Path | None = None
    starttls: bool = True
    tls: bool = False
    timeout: int = 10
    startup_check: bool = True


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    """``[notifier]``: where one-time codes and reset links are sent."""

    filesystem: Path | None = None
    smtp: SmtpConfig | None = None


@dataclass(frozen=True, slots=True)
class PasswordPolicyConfig:
    """``[password_policy]``: rules for passwords chosen in the portal."""

    min_length: int = 8
    max_length: int = 128
    check_common: bool = True


@dataclass(frozen=True, slots=True)
class LogConfig:
    """``[log]``: level and format (``json`` gives one JSON line per decision)."""

    level: str = "info"
    format: str = "text"


@dataclass(frozen=True, slots=True)
class QueryCondition:
    """One ``{key, operator, value}`` of a rule's ``query`` criterion."""

    key: str
    operator: str
    value: str | None = None
    pattern: Regex | None = None


@dataclass(frozen=True, slots=True)
class NetworkRef:
    """A ``networks`` entry as written, with the networks it stands for."""

    text: str
    networks: tuple[IPNetwork, ...]


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """One ``[[access_control.rules]]`` entry, validated, regexes compiled."""

    index: int
    policy: Policy
    domain: tuple[str, ...] = ()
    domain_regex: tuple[Regex, ...] = ()
    resources: tuple[Regex, ...] = ()
    methods: tuple[str, ...] = ()
    networks: tuple[NetworkRef, ...] = ()
    subject: tuple[tuple[str, ...], ...] = ()
    query: tuple[tuple[QueryCondition, ...], ...] = ()
    line: int | None = None


@dataclass(frozen=True, slots=True)
class AccessControlConfig:
    """``[access_control]``: the default policy, named networks and the ordered rules."""

    default_policy: Policy = Policy.DENY
    networks: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = ()
    rules: tuple[RuleConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration."""

    path: Path
    server: ServerConfig
    users: UsersConfig
    storage: StorageConfig
    session: SessionConfig
    totp: TotpConfig
    regulation: RegulationConfig
    notifier: NotifierConfig
    password_policy: PasswordPolicyConfig
    log: LogConfig
    access_control: AccessControlConfig

    @property
    def base_dir(self) -> Path:
        """The folder relative paths in the config resolve against."""
        return self.path.parent


# --------------------------------------------------------------------------- the reader


class _Reader(ProblemReader):
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
        return _resolve(base, self.string(table, key, name, default))


def _resolve(base: Path, text: str) -> Path:
    return (base / Path(text).expanduser()).resolve()


# --------------------------------------------------------------------------- helpers


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


def _write_host(exc: ValueError, fallback: str) -> str:
    """The fix for a refused host: the spelling to use when there is one, else ``fallback``."""
    spelling = exc.spelling if isinstance(exc, DomainError) else None
    return f"write {spelling!r}" if spelling else fallback


def _is_ip(text: str) -> bool:
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


def _https_fix(url: str, fallback: str) -> str:
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
    if not raw or _is_ip(raw):
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


def _https_url(url: str) -> tuple[str, str]:
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
    if _is_ip(raw_host):
        raise ValueError("must name a host, not an IP address")
    host = normalise_domain(raw_host)
    netloc = host if port is None else f"{host}:{port}"
    path, query, fragment = (quote(x, safe=_URL_SAFE) for x in parts[2:])
    return host, urlunsplit(("https", netloc, path, query, fragment))


# --------------------------------------------------------------------------- sections


def _server(r: _Reader, data: dict[str, t.Any]) -> ServerConfig:
    key = "server"
    tbl = r.table(data.get(key, {}), key, KEYS[key])
    default = ServerConfig()
    address = r.string(tbl, key, "address", default.address)
    host, port, unix = default.host, default.port, None
    if address.startswith("unix:"):
        unix = address[len("unix:") :]
        if not unix.startswith("/"):
            r.error(
                "server.address",
                "a unix socket path must be absolute",
                'write "unix:/run/authctl/authctl.sock"',
            )
    else:
        found = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})", address)
        if not found or int(found.group(2)) > 65535:
            r.error(
                "server.address",
                f"{address!r} is not host:port",
                'write "127.0.0.1:9091", "[::1]:9091" or "unix:/path/to.sock"',
            )
        else:
            host, port = found.group(1).strip("[]"), int(found.group(2))
    proxies = [] if "trusted_proxies" in tbl else list(default.trusted_proxies)
    for i, item in enumerate(r.string_list(tbl, key, "trusted_proxies", allow_string=False)):
        try:
            proxies.append(parse_network(item))
        except ValueError:
            r.error(
                f"server.trusted_proxies[{i}]",
                f"{item!r} is not an IP address or CIDR",
                'write "127.0.0.1/32" or "10.0.0.0/8"',
            )
    threads = r.integer(tbl, key, "threads", default.threads, 1, 256)
    grace = r.duration(tbl, key, "shutdown_grace", default.shutdown_grace)
    inline = r.boolean(tbl, key, "inline_authz", default.inline_authz)
    return ServerConfig(address, host, port, unix, tuple(proxies), threads, grace, inline)


def _users(r: _Reader, data: dict[str, t.Any], base: Path) -> UsersConfig:
    key = "users"
    tbl = r.table(data.get(key, {}), key, KEYS[key])
    ph_key = "users.password_hash"
    ph = r.table(tbl.get("password_hash", {}), ph_key, KEYS[ph_key])
    d = PasswordHashConfig()
    params = PasswordHashConfig(
        memory_kib=r.integer(ph, ph_key, "memory_kib", d.memory_kib, 8, ARGON2_MAX_MEMORY_KIB),
        iterations=r.integer(ph, ph_key, "iterations", d.iterations, 1, ARGON2_MAX_ITERATIONS),
        parallelism=r.integer(ph, ph_key, "parallelism", d.parallelism, 1, ARGON2_MAX_PARALLELISM),
    )
    if params.memory_kib < 8 * params.parallelism:
        r.error(
            f"{ph_key}.memory_kib",
            f"argon2 needs at least 8 KiB per lane ({8 * params.parallelism} for "
            f"parallelism = {params.parallelism})",
            "raise memory_kib or lower parallelism",
        )
    return UsersConfig(
        file=r.file_path(base, tbl, key, "file", "users.toml"),
        watch=r.boolean(tbl, key, "watch", True),
        password_hash=params,
    )


def _storage(r: _Reader, data: dict[str, t.Any], base: Path) -> StorageConfig:
    key = "storage"
    tbl = r.table(data.get(key, {}), key, KEYS[key])
    return StorageConfig(
        path=r.file_path(base, tbl, key, "path", "authctl.db"),
        encryption_key_file=r.file_path(
            base, tbl, key, "encryption_key_file", "secrets/storage.key"
        ),
    )


def _cookie(r: _Reader, raw: object, key: str) -> CookieConfig | None:
    tbl = r.table(raw, key, KEYS["session.cookies[]"])
    domain_raw = r.value(tbl, key, "domain", str, hint='write domain = "example.com"')
    portal = r.value(
        tbl, key, "portal_url", str, hint='write portal_url = "https://auth.example.com"'
    )
    if domain_raw is None or portal is None:
        return None
    lowered = domain_raw.strip().lower()
    if _is_ip(domain_raw) or lowered == "localhost" or lowered.endswith(".localhost"):
        r.error(
            f"{key}.domain",
            f"{domain_raw!r} cannot be a cookie domain (an IP address or localhost cannot carry "
            "a shared cookie)",
            "use a real domain name such as example.com, or example.test for testing",
        )
        return None
    try:
        domain = normalise_domain(domain_raw)
    except ValueError as exc:
        r.error(
            f"{key}.domain", str(exc), _write_host(exc, 'write a domain name such as "example.com"')
        )
        return None
    if "." not in domain:
        r.error(
            f"{key}.domain",
            f"{domain!r} is a bare top-level domain; browsers refuse cookies for it",
            "use a registrable domain such as example.com",
        )
        return None
    cookie = CookieConfig(domain, portal)
    try:
        portal_host, portal_url = _https_url(portal)
    except ValueError as exc:
        r.error(
            f"{key}.portal_url",
            f"{portal!r} {exc}",
            _https_fix(portal, 'write "https://auth.example.com"'),
        )
        return None
    if not cookie.covers(portal_host):
        r.error(
            f"{key}.portal_url",
            f"the portal host {portal_host!r} is outside the cookie domain {domain!r}",
            f"serve the portal on {domain} or one of its subdomains",
        )
    parts = urlsplit(portal_url)
    if parts.query or parts.fragment:
        r.error(f"{key}.portal_url", "must not have a query or fragment", "remove the ?… or #…")
    default_redirect = r.value(tbl, key, "default_redirect_url", str, None)
    if default_redirect is not None:
        try:
            host, default_redirect = _https_url(default_redirect)
        except ValueError as exc:
            r.error(
                f"{key}.default_redirect_url",
                f"{default_redirect!r} {exc}",
                _https_fix(default_redirect, f'write "https://{domain}/"'),
            )
        else:
            if not cookie.covers(host):
                r.error(
                    f"{key}.default_redirect_url",
                    f"{host!r} is outside the cookie domain {domain!r}",
                    f"redirect to {domain} or one of its subdomains",
                )
    return CookieConfig(domain, portal_url.rstrip("/"), default_redirect)


def _session(r: _Reader, data: dict[str, t.Any]) -> SessionConfig:
    key = "session"
    tbl = r.table(data.get(key, {}), key, KEYS[key])
    d = SessionConfig(cookies=())
    name = r.string(tbl, key, "name", d.name)
    if not _COOKIE_NAME.fullmatch(name):
        r.error(
            "session.name",
            f"{name!r} is not a valid cookie name",
            "use letters, digits, '_' or '-'",
        )
    cookies: list[CookieConfig] = []
    raw_cookies = tbl.get("cookies")
    if not raw_cookies:
        r.error(
            "session.cookies",
            "at least one [[session.cookies]] entry is required",
            'add [[session.cookies]] with domain = "example.com" and '
            'portal_url = "https://auth.example.com"',
        )
    elif not isinstance(raw_cookies, list):
        r.error("session.cookies", "must be an array of tables", "write [[session.cookies]]")
    else:
        for i, raw in enumerate(raw_cookies):
            cookie = _cookie(r, raw, f"session.cookies[{i}]")
            if cookie is None:
                continue
            for other in cookies:
                if other.covers(cookie.domain) or cookie.covers(other.domain):
                    r.error(
                        f"session.cookies[{i}].domain",
                        f"{cookie.domain!r} overlaps the cookie domain {other.domain!r}",
                        "list each root domain once; its subdomains are covered already",
                    )
                    break
            else:
                cookies.append(cookie)
    redis_url = r.string(tbl, key, "redis_url", d.redis_url)
    if urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
        r.error(
            "session.redis_url",
            f"{redis_url!r} is not a redis URL",
            'write "redis://127.0.0.1:6379/0"',
        )
    return SessionConfig(
        cookies=tuple(cookies),
        name=name,
        same_site=r.option(tbl, key, "same_site", SAME_SITE, d.same_site),
        expiration=r.duration(tbl, key, "expiration", d.expiration, minimum=1),
        inactivity=r.duration(tbl, key, "inactivity", d.inactivity),
        remember_me=r.duration(tbl, key, "remember_me", d.remember_me),
        store=r.option(tbl, key, "store", SESSION_STORES, d.store),
        redis_url=redis_url,
    )


def _totp(r: _Reader, data: dict[str, t.Any]) -> TotpConfig:
    key = "totp"
    tbl = r.table(data.get(key, {}), key, KEYS[key])
    d = TotpConfig()
    issuer = r.string(tbl, key, "issuer", d.issuer)
    if ":" in issuer or any(ord(c) < 0x20 or ord(c) == 0x7F for c in issuer):
        r.error(
            "totp.issuer", "must not contain ':' or control characters", 'write issuer = "authctl"'
        )
    digits = r.integer(tbl, key, "digits", d.digits, 6, 8)
    if digits == 7:
        r.error("totp.digits", "authenticator apps support 6 or 8 digits", "use 6 or 8")
    return TotpConfig(
        issuer=issuer,
        algorithm=r.option(tbl, key, "algorithm", TOTP_ALGORITHMS, d.algorithm),
        digits=digits,
        period=r.integer(tbl, key, "period", d.period, 15, 300),
        skew=r.integer(tbl, key, "skew", d.skew, 0, 2),
    )


def _regulation(r: _Reader, data: dict[str, t.Any]) -> RegulationConfig:
    key = "regulation"
    tbl = r.table(data.get(key, {}), key, KEYS[key])
    d = RegulationConfig()
    modes = r.string_list(tbl, key, "modes") if "modes" in tbl else list(d.modes)
    for i, mode in enumerate(modes):
        if mode not in REGULATION_MODES:
            r.error(f"regulation.modes[{i}]", f"{mode!r} is not a mode", 'use "user" and/or "ip"')
    if "modes" in tbl and not modes and isinstance(tbl["modes"], list):
        r.error("regulation.modes", "must name at least one mode", 'use ["user"], ["ip"] or both')
    return RegulationConfig(
        max_retries=r.integer(tbl, key, "max_retries", d.max_retries, 0, 1000),
        find_time=r.duration(tbl, key, "find_time", d.find_time, minimum=1),
        ban_time=r.duration(tbl, key, "ban_time", d.ban_time, minimum=1),
        modes=tuple(dict.fromkeys(m for m in modes if m in REGULATION_MODES)),
    )


def _notifier(r: _Reader, data: dict[str, t.Any], base: Path) -> NotifierConfig:
    key = "notifier"
    tbl = r.table(data.get(key, {}), key, KEYS[key])
    if "smtp" not in tbl:
        return NotifierConfig(
            filesystem=r.file_path(base, tbl, key, "filesystem", "notifications.txt")
        )
    if "filesystem" in tbl:
        r.error(
            "notifier.filesystem",
            "both filesystem and smtp are set",
            "keep one: filesystem for testing, [notifier.smtp] for real mail",
        )
    skey = "notifier.smtp"
    s = r.table(tbl["smtp"], skey, KEYS[skey])
    if not isinstance(tbl["smtp"], dict):
        return NotifierConfig()
    host = r.value(s, skey, "host", str, hint='write host = "smtp.example.com"')
    if host is not None and not host.strip():
        r.error(f"{skey}.host", "cannot be empty", 'write host = "smtp.example.com"')
    sender = r.value(s, skey, "sender", str, hint='write sender = "authctl <auth@example.com>"')
    if sender is not None and "@" not in parseaddr(sender)[1]:
        r.error(
            f"{skey}.sender",
            f"{sender!r} is not an email address",
            'write sender = "authctl <auth@example.com>"',
        )
    username = r.value(s, skey, "username", str, None)
    password_file = r.value(s, skey, "password_file", str, None)
    if (username is None) != (password_file is None):
        missing = "password_file" if password_file is None else "username"
        present = "username" if password_file is None else "password_file"
        r.error(
            f"{skey}.{present}",
            f"{present} has no meaning without {missing}",
            f"add {missing}, or remove {present} to send without logging in",
        )
    starttls = r.boolean(s, skey, "starttls", True)
    implicit = r.boolean(s, skey, "tls", False)
    if starttls and implicit and "starttls" in s:
        r.error(
            f"{skey}.tls",
            "starttls and tls (implicit TLS) exclude each other",
            "set starttls = false with tls = true (port 465), or remove tls (port 587)",
        )
    smtp = SmtpConfig(
        host=host or "",
        sender=sender or "",
        port=r.integer(s, skey, "port", 465 if implicit else 587, 1, 65535),
        username=username,
        password_file=_resolve(base, password_file) if password_file else None,
        starttls=starttls and not implicit,
        tls=implicit,
        timeout=r.duration(s, skey, "timeout", 10, minimum=1),
        startup_check=r.boolean(s, skey, "startup_check", True),
    )
    return NotifierConfig(smtp=smtp)


def _password_policy(r: _Reader, data: dict[str, t.Any]) -> PasswordPolicyConfig:
    key = "password_policy"
    tbl = r.table(data.get(key, {}), key, KEYS[key])
    d = PasswordPolicyConfig()
    low = r.integer(tbl, key, "min_length", d.min_length, 1, 1024)
    high = r.integer(tbl, key, "max_length", d.max_length, 8, 1024)
    if low > high:
        r.error("password_policy.min_length", "is larger than max_length", "lower min_length")
    return PasswordPolicyConfig(low, high, r.boolean(tbl, key, "check_common", d.check_common))


def _log(r: _Reader, data: dict[str, t.Any]) -> LogConfig:
    key = "log"
    tbl = r.table(data.get(key, {}), key, KEYS[key])
    return LogConfig(
        level=r.option(tbl, key, "level", LOG_LEVELS, "info"),
        format=r.option(tbl, key, "format", LOG_FORMATS, "text"),
    )


# --------------------------------------------------------------------------- access control


def _regex(r: _Reader, key: str, text: str) -> Regex | None:
    """``text`` compiled with RE2 (linear-time matching, Go's syntax as in Authelia)."""
    try:
        return compile_rule_regex(text)
    except RegexError as exc:
        r.error(key, f"invalid regular expression {text!r}: {exc.reason}", exc.fix)
        return None


def _rule_domain(r: _Reader, key: str, text: str) -> str | None:
    stripped = text.strip()
    prefix = ""
    rest = stripped
    for special in ("*.", "{user}.", "{group}."):
        if stripped.lower().startswith(special):
            prefix, rest = special, stripped[len(special) :]
            break
    try:
        return prefix + normalise_domain(rest)
    except DomainError as exc:
        fix = (
            'write a host ("app.example.com"), a wildcard ("*.example.com") or "{user}.example.com"'
        )
        r.error(key, str(exc), f"write {prefix + exc.spelling!r}" if exc.spelling else fix)
        return None


def _subject(r: _Reader, key: str, raw: object) -> tuple[tuple[str, ...], ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        r.error(
            key,
            f"expected a string or list, got {_kind(raw)}",
            'write ["user:alice", "group:admins"]',
        )
        return ()
    out: list[tuple[str, ...]] = []
    for i, item in enumerate(raw):
        inner = item if isinstance(item, list) else [item]
        if not inner:
            r.error(f"{key}[{i}]", "an inner subject list cannot be empty", "remove the []")
            continue
        group: list[str] = []
        for j, entry in enumerate(inner):
            here = f"{key}[{i}][{j}]" if isinstance(item, list) else f"{key}[{i}]"
            if not isinstance(entry, str):
                r.error(here, f"expected a string, got {_kind(entry)}", 'write "user:NAME"')
                continue
            kind, _, name = entry.partition(":")
            try:
                if kind == "user" and name:
                    group.append("user:" + check_username(name))
                elif kind == "group" and name:
                    group.append("group:" + check_group(name))
                else:
                    r.error(
                        here,
                        f"{entry!r} is not a subject",
                        f'write "user:{entry}" or "group:{entry}"'
                        if ":" not in entry
                        else 'write "user:NAME" or "group:NAME"',
                    )
            except ValueError as exc:
                r.error(here, str(exc), "fix the name; it must match the users file")
        if len(group) == len(inner):
            out.append(tuple(group))
    return tuple(out)


def _query(r: _Reader, key: str, raw: object) -> tuple[tuple[QueryCondition, ...], ...]:
    if not isinstance(raw, list):
        r.error(
            key,
            f"expected a list of lists of tables, got {_kind(raw)}",
            'write [[{ key = "debug", operator = "present" }]]',
        )
        return ()
    out = []
    for i, inner in enumerate(raw):
        items = inner if isinstance(inner, list) else [inner]
        if not items:
            r.error(f"{key}[{i}]", "an inner query list cannot be empty", "remove the []")
            continue
        conditions = []
        for j, item in enumerate(items):
            here = f"{key}[{i}][{j}]" if isinstance(inner, list) else f"{key}[{i}]"
            tbl = r.table(item, here, KEYS["access_control.rules[].query[][]"])
            if not isinstance(item, dict):
                continue
            name = r.value(tbl, here, "key", str, hint='add key = "NAME"')
            value = r.value(tbl, here, "value", str, None)
            default_op = "equal" if value is not None else "present"
            operator = r.choice(tbl, here, "operator", QUERY_OPERATORS, default_op)
            if name is None or operator is None:
                continue
            if not name:
                r.error(f"{here}.key", "cannot be empty", 'write key = "NAME"')
                continue
            pattern = None
            if operator in ("present", "absent"):
                if value is not None:
                    r.error(
                        f"{here}.value",
                        f"operator {operator!r} takes no value",
                        "remove value, or use operator equal",
                    )
                    continue
            elif value is None:
                r.error(f"{here}.value", f"operator {operator!r} needs a value", 'add value = "…"')
                continue
            elif operator in ("pattern", "not pattern"):
                pattern = _regex(r, f"{here}.value", value)
                if pattern is None:
                    continue
            conditions.append(QueryCondition(name, operator, value, pattern))
        if conditions:
            out.append(tuple(conditions))
    return tuple(out)


def _networks(
    r: _Reader, tbl: dict[str, t.Any], key: str, named: dict[str, tuple[IPNetwork, ...]]
) -> list[NetworkRef]:
    networks = []
    for i, text in enumerate(r.string_list(tbl, key, "networks")):
        if text in named:
            networks.append(NetworkRef(text, named[text]))
            continue
        try:
            networks.append(NetworkRef(text, (parse_network(text),)))
        except ValueError:
            close = difflib.get_close_matches(text, list(named), n=1)
            r.error(
                f"{key}.networks[{i}]",
                f"{text!r} is neither an IP, a CIDR nor a name from access_control.networks",
                f"did you mean {close[0]!r}?"
                if close
                else "define it under [access_control.networks] or write a CIDR such as 10.0.0.0/8",
            )
    return networks


def _methods(r: _Reader, tbl: dict[str, t.Any], key: str) -> list[str]:
    methods: list[str] = []
    for i, text in enumerate(r.string_list(tbl, key, "methods")):
        if text not in HTTP_METHODS:
            r.error(
                f"{key}.methods[{i}]",
                f"{text!r} is not an HTTP method",
                f"write {text.upper()!r}"
                if text.upper() in HTTP_METHODS
                else f"use upper case: {', '.join(HTTP_METHODS[:9])}, …",
            )
        elif text in methods:
            r.error(f"{key}.methods[{i}]", f"{text!r} is listed twice", "remove the duplicate")
        else:
            methods.append(text)
    return methods


def _rule(
    r: _Reader, raw: object, index: int, named: dict[str, tuple[IPNetwork, ...]]
) -> RuleConfig | None:
    key = f"access_control.rules[{index}]"
    tbl = r.table(raw, key, KEYS["access_control.rules[]"])
    if not isinstance(raw, dict):
        return None
    problems_before = len(r.problems)
    chosen = r.choice(tbl, key, "policy", POLICIES, _MISSING)
    policy = None if chosen is None else Policy(chosen)
    domains = []
    for i, text in enumerate(r.string_list(tbl, key, "domain")):
        domain = _rule_domain(r, f"{key}.domain[{i}]", text)
        if domain is not None:
            domains.append(domain)
    domain_regex = []
    for i, text in enumerate(r.string_list(tbl, key, "domain_regex")):
        pattern = _regex(r, f"{key}.domain_regex[{i}]", text)
        if pattern is not None:
            domain_regex.append(pattern)
    if all(tbl.get(name) in (None, []) for name in ("domain", "domain_regex")):
        # An empty list is no criterion at all: the rule would match every host.
        r.error(key, "a rule needs domain or domain_regex", 'add domain = "app.example.com"')
    resources = []
    for i, text in enumerate(r.string_list(tbl, key, "resources")):
        pattern = _regex(r, f"{key}.resources[{i}]", text)
        if pattern is not None:
            resources.append(pattern)
    methods = _methods(r, tbl, key)
    networks = _networks(r, tbl, key, named)
    subject = _subject(r, f"{key}.subject", tbl["subject"]) if "subject" in tbl else ()
    query = _query(r, f"{key}.query", tbl["query"]) if "query" in tbl else ()
    binds_subject = any({"User", "Group"} & set(p.groupindex) for p in domain_regex) or any(
        d.startswith(("{user}.", "{group}.")) for d in domains
    )
    if policy is Policy.BYPASS and (subject or binds_subject):
        r.error(
            f"{key}.policy",
            "a bypass rule cannot depend on who the user is (subject, {user}/{group} or named "
            "groups): bypass lets anonymous requests through before anyone signs in",
            "remove the subject, or use policy one_factor",
        )
    if len(r.problems) != problems_before or policy is None:
        return None
    return RuleConfig(
        index=index,
        policy=policy,
        domain=tuple(domains),
        domain_regex=tuple(domain_regex),
        resources=tuple(resources),
        methods=tuple(methods),
        networks=tuple(networks),
        subject=subject,
        query=query,
        line=locate(r.text, key),
    )


def _named_networks(r: _Reader, raw: object, key: str) -> dict[str, tuple[IPNetwork, ...]]:
    named: dict[str, tuple[IPNetwork, ...]] = {}
    nets = r.table(raw, key, raw if isinstance(raw, dict) else ())
    for name, value in nets.items():
        here = f"{key}.{name}"
        if not _NETWORK_NAME.fullmatch(name):
            r.error(
                here,
                f"{name!r} is not a usable network name",
                "use letters, digits, '_' and '-', starting with a letter",
            )
            continue
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            r.error(here, "expected a non-empty list of IPs or CIDRs", 'write ["10.0.0.0/8"]')
            continue
        parsed = []
        for i, item in enumerate(items):
            try:
                if not isinstance(item, str):
                    raise ValueError(item)
                parsed.append(parse_network(item))
            except ValueError:
                r.error(
                    f"{here}[{i}]",
                    f"{item!r} is not an IP address or CIDR",
                    'write "10.0.0.0/8"',
                )
        named[name] = tuple(parsed)
    return named


def _access_control(r: _Reader, data: dict[str, t.Any]) -> AccessControlConfig:
    key = "access_control"
    tbl = r.table(data.get(key, {}), key, KEYS[key])
    default_policy = Policy(r.option(tbl, key, "default_policy", POLICIES, Policy.DENY))
    named = _named_networks(r, tbl.get("networks", {}), f"{key}.networks")
    rules: list[RuleConfig] = []
    raw_rules = tbl.get("rules", [])
    if not isinstance(raw_rules, list):
        r.error(f"{key}.rules", "must be an array of tables", "write [[access_control.rules]]")
        raw_rules = None
    for index, raw in enumerate(raw_rules or ()):
        rule = _rule(r, raw, index, named)
        if rule is not None:
            rules.append(rule)
    if raw_rules == [] and default_policy in (Policy.BYPASS, Policy.DENY):
        r.error(
            f"{key}.default_policy",
            f"with no rules, default_policy {default_policy!r} would "
            + ("let everyone in" if default_policy is Policy.BYPASS else "refuse every request"),
            'add [[access_control.rules]] or set default_policy = "one_factor"',
        )
    return AccessControlConfig(default_policy, tuple(named.items()), tuple(rules))


# --------------------------------------------------------------------------- entry points


def parse_config(text: str, data: dict[str, t.Any], path: Path) -> Config:
    """Validate parsed TOML ``data`` (from ``text`` at ``path``) into a Config.

    Raises:
        ConfigError: with every problem found.
    """
    r = _Reader(path, text)
    r.table(data, "", KEYS[""])
    base = path.parent
    config = Config(
        path=path,
        server=_server(r, data),
        users=_users(r, data, base),
        storage=_storage(r, data, base),
        session=_session(r, data),
        totp=_totp(r, data),
        regulation=_regulation(r, data),
        notifier=_notifier(r, data, base),
        password_policy=_password_policy(r, data),
        log=_log(r, data),
        access_control=_access_control(r, data),
    )
    r.check(ConfigError)  # every problem, in file order
    return config


def load_config(path: Path) -> Config:
    """Read and validate the config file at ``path``.

    Raises:
        ConfigError: the file is missing, unreadable or invalid; every problem is listed.
    """
    path = path.expanduser().absolute()
    text, data = read_toml(path)
    return parse_config(text, data, path)
