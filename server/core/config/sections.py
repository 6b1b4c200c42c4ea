"""Reading each table of the config but ``[access_control]`` (``server.core.config.access``):
one function per section, each returning its dataclass and reporting problems to the reader."""

from __future__ import annotations

import os
import re
import stat
import typing as t
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit

from server.core.config.model import ARGON2_MAX_ITERATIONS
from server.core.config.model import ARGON2_MAX_MEMORY_KIB
from server.core.config.model import ARGON2_MAX_PARALLELISM
from server.core.config.model import CUSTOM_CSS_MAX_BYTES
from server.core.config.model import KEYS
from server.core.config.model import LOG_FORMATS
from server.core.config.model import LOG_LEVELS
from server.core.config.model import LOGO_MAX_BYTES
from server.core.config.model import PORTAL_THEMES
from server.core.config.model import PORTAL_TITLE_MAX
from server.core.config.model import REGULATION_MODES
from server.core.config.model import SAME_SITE
from server.core.config.model import SESSION_STORES
from server.core.config.model import STORAGE_BACKENDS
from server.core.config.model import TOTP_ALGORITHMS
from server.core.config.model import WEBAUTHN_ATTESTATION
from server.core.config.model import WEBAUTHN_USER_VERIFICATION
from server.core.config.model import CookieConfig
from server.core.config.model import LogConfig
from server.core.config.model import MetricsConfig
from server.core.config.model import NotifierConfig
from server.core.config.model import PasswordHashConfig
from server.core.config.model import PasswordPolicyConfig
from server.core.config.model import PortalConfig
from server.core.config.model import PostgresConfig
from server.core.config.model import RegulationConfig
from server.core.config.model import SentinelConfig
from server.core.config.model import ServerConfig
from server.core.config.model import SessionConfig
from server.core.config.model import SmtpConfig
from server.core.config.model import StorageConfig
from server.core.config.model import TelemetryConfig
from server.core.config.model import TotpConfig
from server.core.config.model import UsersConfig
from server.core.config.model import WebAuthnConfig
from server.core.config.values import Reader
from server.core.config.values import https_fix
from server.core.config.values import https_url
from server.core.config.values import is_ip
from server.core.config.values import normalise_domain
from server.core.config.values import parse_network
from server.core.config.values import resolve
from server.core.config.values import write_host

_COOKIE_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")


def server(r: Reader, data: dict[str, t.Any]) -> ServerConfig:
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
        host, port = _host_port(
            r,
            "server.address",
            address,
            (host, port),
            'write "127.0.0.1:9091", "[::1]:9091" or "unix:/path/to.sock"',
        )
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
    watch = r.boolean(tbl, key, "watch_config", default.watch_config)
    return ServerConfig(address, host, port, unix, tuple(proxies), threads, grace, inline, watch)


_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})")


def _host_port(
    r: Reader, field: str, address: str, default: tuple[str, int], hint: str
) -> tuple[str, int]:
    """``address`` split into host (brackets removed) and port; ``default`` and a problem if
    it is not ``host:port``."""
    found = _HOST_PORT.fullmatch(address)
    if not found or int(found.group(2)) > 65535:
        r.error(field, f"{address!r} is not host:port", hint)
        return default
    return found.group(1).strip("[]"), int(found.group(2))


def users(r: Reader, data: dict[str, t.Any], base: Path) -> UsersConfig:
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


def storage(r: Reader, data: dict[str, t.Any], base: Path) -> StorageConfig:
    key = "storage"
    tbl = r.table(data.get(key, {}), key, KEYS[key])
    backend = r.option(tbl, key, "backend", STORAGE_BACKENDS, "sqlite")
    postgres = _postgres(r, tbl, base) if "postgres" in tbl else None
    if backend == "postgres" and postgres is None and "postgres" not in tbl:
        r.error(
            "storage.postgres",
            'backend = "postgres" needs a [storage.postgres] table',
            'add [storage.postgres] with dsn = "postgresql://authctl@127.0.0.1:5432/authctl"',
        )
    return StorageConfig(
        path=r.file_path(base, tbl, key, "path", "authctl.db"),
        encryption_key_file=r.file_path(
            base, tbl, key, "encryption_key_file", "secrets/storage.key"
        ),
        backend=backend,
        postgres=postgres,
    )


#: A password inside a libpq DSN: URI userinfo ``user:secret@`` or a ``password=`` keyword.
_DSN_PASSWORD = re.compile(r"^postgres(?:ql)?://[^/@?#]*:[^/@?#]*@|(?:^|\s)password\s*=", re.I)


def _postgres(r: Reader, tbl: dict[str, t.Any], base: Path) -> PostgresConfig | None:
    key = "storage.postgres"
    pg = r.table(tbl["postgres"], key, KEYS[key])
    if not isinstance(tbl["postgres"], dict):
        return None
    dsn = r.value(
        pg, key, "dsn", str, hint='write dsn = "postgresql://authctl@127.0.0.1:5432/authctl"'
    )
    if dsn is None:
        return None
    if not dsn.strip():
        r.error(
            f"{key}.dsn", "cannot be empty", 'write dsn = "postgresql://authctl@db:5432/authctl"'
        )
    elif _DSN_PASSWORD.search(dsn):
        r.error(
            f"{key}.dsn",
            "holds a password (it would end up in logs, backups and process listings)",
            "remove it from the DSN and put it in a file named by password_file",
        )
    password_file = r.value(pg, key, "password_file", str, None)
    d = PostgresConfig(dsn="")
    return PostgresConfig(
        dsn=dsn,
        password_file=resolve(base, password_file) if password_file else None,
        pool_size=r.integer(pg, key, "pool_size", d.pool_size, 1, 1000),
        timeout=r.duration(pg, key, "timeout", d.timeout, minimum=1),
    )


def _sentinel(r: Reader, raw: object) -> SentinelConfig | None:
    key = "session.redis_sentinel"
    tbl = r.table(raw, key, KEYS[key])
    if not isinstance(raw, dict):
        return None
    master = r.value(tbl, key, "master_name", str, hint='write master_name = "authctl"')
    if master is not None and not master.strip():
        r.error(f"{key}.master_name", "cannot be empty", 'write master_name = "authctl"')
    raw_nodes = r.value(
        tbl, key, "nodes", list, hint='write nodes = ["127.0.0.1:26379", "127.0.0.1:26380"]'
    )
    nodes: list[tuple[str, int]] = []
    for i, node in enumerate(raw_nodes or []):
        host, _, port = str(node).rpartition(":")
        host = host.strip("[]")
        if not isinstance(node, str) or not host or not port.isdigit() or not 0 < int(port) < 65536:
            r.error(
                f"{key}.nodes[{i}]",
                f"{node!r} is not host:port",
                'write "sentinel1.example.com:26379"',
            )
            continue
        nodes.append((host, int(port)))
    if raw_nodes is not None and not raw_nodes:
        r.error(f"{key}.nodes", "lists no Sentinel", 'write nodes = ["127.0.0.1:26379"]')
    if master is None or not nodes:
        return None
    return SentinelConfig(master_name=master, nodes=tuple(nodes))


def _cookie(r: Reader, raw: object, key: str) -> CookieConfig | None:
    tbl = r.table(raw, key, KEYS["session.cookies[]"])
    domain_raw = r.value(tbl, key, "domain", str, hint='write domain = "example.com"')
    portal = r.value(
        tbl, key, "portal_url", str, hint='write portal_url = "https://auth.example.com"'
    )
    if domain_raw is None or portal is None:
        return None
    lowered = domain_raw.strip().lower()
    if is_ip(domain_raw) or lowered == "localhost" or lowered.endswith(".localhost"):
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
            f"{key}.domain", str(exc), write_host(exc, 'write a domain name such as "example.com"')
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
        portal_host, portal_url = https_url(portal)
    except ValueError as exc:
        r.error(
            f"{key}.portal_url",
            f"{portal!r} {exc}",
            https_fix(portal, 'write "https://auth.example.com"'),
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
            host, default_redirect = https_url(default_redirect)
        except ValueError as exc:
            r.error(
                f"{key}.default_redirect_url",
                f"{default_redirect!r} {exc}",
                https_fix(default_redirect, f'write "https://{domain}/"'),
            )
        else:
            if not cookie.covers(host):
                r.error(
                    f"{key}.default_redirect_url",
                    f"{host!r} is outside the cookie domain {domain!r}",
                    f"redirect to {domain} or one of its subdomains",
                )
    return CookieConfig(domain, portal_url.rstrip("/"), default_redirect)


def session(r: Reader, data: dict[str, t.Any], base: Path) -> SessionConfig:
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
    password_file = r.value(tbl, key, "redis_password_file", str, None)
    return SessionConfig(
        cookies=tuple(cookies),
        name=name,
        same_site=r.option(tbl, key, "same_site", SAME_SITE, d.same_site),
        expiration=r.duration(tbl, key, "expiration", d.expiration, minimum=1),
        inactivity=r.duration(tbl, key, "inactivity", d.inactivity),
        remember_me=r.duration(tbl, key, "remember_me", d.remember_me),
        store=r.option(tbl, key, "store", SESSION_STORES, d.store),
        redis_url=redis_url,
        redis_password_file=resolve(base, password_file) if password_file else None,
        redis_sentinel=_sentinel(r, tbl["redis_sentinel"]) if "redis_sentinel" in tbl else None,
    )


def totp(r: Reader, data: dict[str, t.Any]) -> TotpConfig:
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


def regulation(r: Reader, data: dict[str, t.Any]) -> RegulationConfig:
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


def notifier(r: Reader, data: dict[str, t.Any], base: Path) -> NotifierConfig:
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
        password_file=resolve(base, password_file) if password_file else None,
        starttls=starttls and not implicit,
        tls=implicit,
        timeout=r.duration(s, skey, "timeout", 10, minimum=1),
        startup_check=r.boolean(s, skey, "startup_check", True),
    )
    return NotifierConfig(smtp=smtp)


def password_policy(r: Reader, data: dict[str, t.Any]) -> PasswordPolicyConfig:
    key = "password_policy"
    tbl = r.table(data.get(key, {}), key, KEYS[key])
    d = PasswordPolicyConfig()
    low = r.integer(tbl, key, "min_length", d.min_length, 1, 1024)
    high = r.integer(tbl, key, "max_length", d.max_length, 8, 1024)
    if low > high:
        r.error("password_policy.min_length", "is larger than max_length", "lower min_length")
    return PasswordPolicyConfig(low, high, r.boolean(tbl, key, "check_common", d.check_common))


def log(r: Reader, data: dict[str, t.Any], base: Path) -> LogConfig:
    key = "log"
    tbl = r.table(data.get(key, {}), key, KEYS[key])
    audit = r.value(tbl, key, "audit_file", str, "", hint='write audit_file = "audit.log"')
    return LogConfig(
        level=r.option(tbl, key, "level", LOG_LEVELS, "info"),
        format=r.option(tbl, key, "format", LOG_FORMATS, "text"),
        audit_file=resolve(base, audit) if audit and audit.strip() else None,
    )


def telemetry(r: Reader, data: dict[str, t.Any], server: ServerConfig) -> TelemetryConfig:
    key = "telemetry"
    tbl = r.table(data.get(key, {}), key, KEYS[key])
    mkey = "telemetry.metrics"
    raw = tbl.get("metrics", {})
    m = r.table(raw, mkey, KEYS[mkey])
    d = MetricsConfig()
    enable = r.boolean(m, mkey, "enable", d.enable)
    address = r.string(m, mkey, "address", d.address)
    host, port = _host_port(
        r, f"{mkey}.address", address, (d.host, d.port), 'write "127.0.0.1:9959" or "[::1]:9959"'
    )
    if enable and server.unix_socket is None and (host, port) == (server.host, server.port):
        r.error(
            f"{mkey}.address",
            f"{address!r} is the server's own address; metrics need a listener of their own",
            'use another port, such as "127.0.0.1:9959"',
        )
    return TelemetryConfig(MetricsConfig(enable, address, host, port))


#: Longest WebAuthn challenge lifetime: a ceremony is a user at a prompt, not a stored token.
WEBAUTHN_MAX_TIMEOUT = 600


def webauthn(
    r: Reader, data: dict[str, t.Any], cookies: tuple[CookieConfig, ...]
) -> WebAuthnConfig:
    """``[webauthn]`` (SPEC §7.1). A set ``rp_id`` must cover every portal host, or the
    browser refuses the ceremony there: that is found here, not at a user's first try."""
    key = "webauthn"
    tbl = r.table(data.get(key, {}), key, KEYS[key])
    d = WebAuthnConfig()
    name = r.string(
        tbl, key, "display_name", d.display_name, hint='write display_name = "Example SSO"'
    )
    if _CONTROL.search(name) or len(name) > PORTAL_TITLE_MAX:
        r.error(
            f"{key}.display_name",
            f"must be at most {PORTAL_TITLE_MAX} characters on one line",
            'write display_name = "Example SSO"',
        )
        name = d.display_name
    rp_raw = r.value(tbl, key, "rp_id", str, "", hint='write rp_id = "auth.example.com"')
    rp_id = ""
    if rp_raw and rp_raw.strip():
        try:
            if is_ip(rp_raw):
                raise ValueError(f"{rp_raw!r} is an IP address; WebAuthn needs a domain name")
            rp_id = normalise_domain(rp_raw)
        except ValueError as exc:
            r.error(f"{key}.rp_id", str(exc), write_host(exc, 'write rp_id = "example.com"'))
        for i, cookie in enumerate(cookies):
            host = urlsplit(cookie.portal_url).hostname or ""
            if rp_id and host != rp_id and not host.endswith("." + rp_id):
                r.error(
                    f"{key}.rp_id",
                    f"{rp_id!r} does not cover the portal host {host!r} of session.cookies[{i}]",
                    f'set rp_id to {host!r} or a parent domain of it, or leave it "" to use '
                    "each portal's host",
                )
    timeout = r.duration(tbl, key, "timeout", d.timeout, minimum=10)
    if timeout > WEBAUTHN_MAX_TIMEOUT:
        r.error(
            f"{key}.timeout",
            f"must be at most {WEBAUTHN_MAX_TIMEOUT // 60} minutes (a challenge lives that long)",
            'write timeout = "60s"',
        )
        timeout = d.timeout
    return WebAuthnConfig(
        enable=r.boolean(tbl, key, "enable", d.enable),
        display_name=name,
        rp_id=rp_id,
        attestation=r.option(tbl, key, "attestation", WEBAUTHN_ATTESTATION, d.attestation),
        user_verification=r.option(
            tbl, key, "user_verification", WEBAUTHN_USER_VERIFICATION, d.user_verification
        ),
        timeout=timeout,
        passkey_login=r.boolean(tbl, key, "passkey_login", d.passkey_login),
        passkey_uv_two_factor=r.boolean(tbl, key, "passkey_uv_two_factor", d.passkey_uv_two_factor),
    )


#: Control characters (C0, DEL, C1) and the line/paragraph separators: never in a title.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: What may come before an SVG's root element: a BOM, white space, the XML declaration,
#: comments, processing instructions and a DOCTYPE (without an internal subset).
_SVG_PROLOG = re.compile(r"\A\ufeff?(?:\s+|<\?[^>]*\?>|<!--.*?-->|<!DOCTYPE[^>\[]*>)*", re.S | re.I)
_SVG_ROOT = re.compile(r"<svg[\s/>]")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def portal(r: Reader, data: dict[str, t.Any], base: Path) -> PortalConfig:
    key = "portal"
    tbl = r.table(data.get(key, {}), key, KEYS[key])
    d = PortalConfig()
    title = r.string(tbl, key, "title", d.title, hint='write title = "Example SSO"')
    if _CONTROL.search(title):
        r.error(
            f"{key}.title",
            "must not contain control characters or line breaks",
            "write it on one line",
        )
        title = d.title
    elif len(title) > PORTAL_TITLE_MAX:
        r.error(
            f"{key}.title",
            f"is {len(title)} characters long; the limit is {PORTAL_TITLE_MAX}",
            "shorten it",
        )
        title = d.title
    logo_path = _optional_path(r, tbl, key, "logo_file", base)
    css_path = _optional_path(r, tbl, key, "custom_css_file", base)
    logo_type, logo = "", b""
    if logo_path is not None:
        content = _read_bounded(r, f"{key}.logo_file", logo_path, LOGO_MAX_BYTES)
        if content is not None:
            logo_type = _logo_type(content)
            if logo_type:
                logo = content
            else:
                r.error(
                    f"{key}.logo_file",
                    f"{str(logo_path)!r} is neither an SVG nor a PNG image (judged by its content)",
                    "convert the logo to SVG or PNG",
                )
    css = ""
    if css_path is not None:
        content = _read_bounded(r, f"{key}.custom_css_file", css_path, CUSTOM_CSS_MAX_BYTES)
        if content is not None:
            try:
                css = content.decode("utf-8").removeprefix("\ufeff")
            except UnicodeDecodeError:
                r.error(
                    f"{key}.custom_css_file",
                    f"{str(css_path)!r} is not UTF-8 text",
                    "save the stylesheet as UTF-8",
                )
            else:
                if "\x00" in css:
                    r.error(
                        f"{key}.custom_css_file",
                        f"{str(css_path)!r} holds a NUL character",
                        "save the stylesheet as plain UTF-8 text",
                    )
                    css = ""
    return PortalConfig(
        title=title,
        logo_file=logo_path,
        custom_css_file=css_path,
        theme=r.option(tbl, key, "theme", PORTAL_THEMES, d.theme),
        logo_type=logo_type,
        logo=logo,
        custom_css=css,
    )


def _optional_path(
    r: Reader, tbl: dict[str, t.Any], key: str, name: str, base: Path
) -> Path | None:
    """A path that may be left out or empty (off); relative to the config's folder."""
    text = r.value(tbl, key, name, str, "", hint=f'write {name} = "branding/file"')
    return resolve(base, text) if text and text.strip() else None


def _read_bounded(r: Reader, field: str, path: Path, limit: int) -> bytes | None:
    """The whole content of the regular file at ``path`` if it holds at most ``limit`` bytes;
    None and a problem otherwise. Opened without blocking, so a FIFO cannot hang the load."""
    shown = repr(str(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        r.error(
            field,
            f"{shown} does not exist",
            "fix the path (a relative one is read from the config file's folder) or remove the key",
        )
        return None
    except OSError as exc:
        r.error(field, f"{shown} cannot be opened: {exc.strerror}", "make it readable by authctl")
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            r.error(field, f"{shown} is not a regular file", "name a file, not a folder or device")
            return None
        content = b""
        while len(content) <= limit and (more := os.read(fd, limit + 1 - len(content))):
            content += more
    except OSError as exc:
        r.error(field, f"{shown} cannot be read: {exc.strerror}", "make it readable by authctl")
        return None
    finally:
        os.close(fd)
    if len(content) > limit:
        r.error(
            field,
            f"{shown} is larger than {limit // 1024} KiB",
            f"shrink it to {limit // 1024} KiB or less",
        )
        return None
    return content


def _logo_type(content: bytes) -> str:
    """The media type of a logo by its first bytes: a PNG signature or an SVG root element
    after the XML prolog; "" for anything else."""
    if content.startswith(_PNG_MAGIC):
        return "image/png"
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    prolog = _SVG_PROLOG.match(text)
    rest = text[prolog.end() if prolog else 0 :]
    return "image/svg+xml" if _SVG_ROOT.match(rest) else ""
