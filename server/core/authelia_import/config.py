"""Authelia's ``configuration.yml`` (4.38/4.39 keys, and the deprecated ones still met in the
wild) to the data of an ``authctl.toml``, every key accounted for in the report.

Pure: a dict in, a dict of TOML data, the secrets to write as files and the report out. A
secret found inline in the YAML (Redis, PostgreSQL, SMTP passwords) goes to a file under
``secrets/`` that the config names; it never reaches the TOML or the report.
"""

from __future__ import annotations

import ipaddress
import typing as t
from dataclasses import dataclass
from dataclasses import field
from urllib.parse import quote
from urllib.parse import urlencode
from urllib.parse import urlsplit

from server.core.authelia_import.access import convert_access_control
from server.core.authelia_import.report import Report
from server.core.authelia_import.walk import Source
from server.core.authelia_import.walk import leaves
from server.core.config.model import ARGON2_MAX_ITERATIONS
from server.core.config.model import ARGON2_MAX_MEMORY_KIB
from server.core.config.model import ARGON2_MAX_PARALLELISM
from server.core.config.model import PORTAL_TITLE_MAX
from server.core.config.sections import WEBAUTHN_MAX_TIMEOUT
from server.core.durations import format_duration

#: Shortest ``[webauthn] timeout`` authctl takes (seconds).
WEBAUTHN_MIN_TIMEOUT = 10

#: Environment variables naming a file that holds a secret with an authctl ``*_file`` key.
ENV_FILE_KEYS = {
    "AUTHELIA_SESSION_REDIS_PASSWORD_FILE": ("session", "redis_password_file"),
    "AUTHELIA_STORAGE_POSTGRES_PASSWORD_FILE": ("storage.postgres", "password_file"),
    "AUTHELIA_NOTIFIER_SMTP_PASSWORD_FILE": ("notifier.smtp", "password_file"),
}

#: Authelia's ``webauthn:`` keys with no authctl counterpart: (key, why, needs attention).
_WEBAUTHN_UNMAPPED = (
    ("filtering", "authctl accepts every authenticator (no AAGUID or backup-eligibility "
     "filter): remove unwanted passkeys with `authctl user webauthn remove`", True),
    ("metadata", "authctl does not check authenticators against the FIDO Metadata Service",
     True),
    ("selection_criteria.attachment", "authctl lets the browser offer every kind of "
     "authenticator (platform and cross-platform)", False),
    ("selection_criteria.discoverability", "authctl asks for a discoverable credential "
     "(residentKey preferred), so a key can sign in without a user name", False),
)  # fmt: skip

#: Whole sections authctl has no counterpart for, and why (reported once per section).
_DROPPED_SECTIONS = {
    "theme": "the portal's look is authctl's own (branding is configured separately)",
    "default_2fa_method": "authctl offers the second factors a user has, TOTP first",
    "ntp": "authctl trusts the host clock (run an NTP client such as chrony on the host)",
    "privacy_policy": "authctl's portal has no privacy-policy link",
    "identity_validation": "authctl makes its own reset-token and one-time-code secrets "
    "(under secrets/) and uses fixed lifespans (reset link 5 min, elevation 10 min)",
    "jwt_secret": "authctl makes its own reset-token secret",
    "telemetry": "authctl has no Prometheus endpoint in this version",
    "default_redirection_url": "used for the legacy session.domain cookie (see session)",
}


@dataclass
class Conversion:
    """The result of converting Authelia's configuration."""

    config: dict[str, t.Any]
    report: Report
    #: Relative path under the new folder -> file content (each written mode 0600).
    secrets: dict[str, str] = field(default_factory=dict)
    #: Hosts for the self-signed certificate (portal hosts, cookie domains and wildcards).
    cert_hosts: tuple[str, ...] = ()
    #: ``authentication_backend.file.path`` when set (where Authelia read its users).
    users_path: str | None = None


class _Converter:
    def __init__(self, data: dict[str, t.Any], env: t.Mapping[str, str]) -> None:
        self.report = Report()
        self.src = Source(data, self.report)
        self.env = env
        self.out: dict[str, t.Any] = {}
        self.secrets: dict[str, str] = {}
        self.cert_hosts: list[str] = []
        self.users_path: str | None = None

    # ------------------------------------------------------------------ helpers

    def table(self, name: str) -> dict[str, t.Any]:
        """The authctl table ``name`` (dotted), created on first use."""
        node = self.out
        for part in name.split("."):
            node = node.setdefault(part, {})
        return node

    def put(self, key: str, table: str, name: str, value: object) -> None:
        """Write ``table.name = value`` and record that Authelia's ``key`` became it."""
        self.table(table)[name] = value
        self.report.map(key, f"{table}.{name}")

    def secret(self, key: str, value: object, filename: str) -> str | None:
        """Store an inline secret as ``secrets/<filename>``; return its relative path."""
        if not isinstance(value, str) or not value:
            if value not in (None, ""):
                self.report.attend(key, "expected a string: not imported")
            return None
        if "{{" in value:
            self.report.attend(
                key,
                "is an Authelia template ({{ … }}): put the secret it stands for into "
                f"secrets/{filename} and name it in authctl.toml",
            )
            return None
        path = f"secrets/{filename}"
        self.secrets[path] = value if value.endswith("\n") else value + "\n"
        return path

    def duration(self, key: str, table: str, name: str, *, minimum: int = 0) -> None:
        seconds = self.src.duration(key, self.src.raw(key))
        if seconds is None:
            return
        if seconds < minimum:
            self.report.attend(key, f"{seconds} seconds is below authctl's minimum of {minimum}")
            return
        self.put(key, table, name, format_duration(seconds))

    # ------------------------------------------------------------------ sections

    def server(self) -> None:
        src = self.src
        address = src.string("server.address", src.raw("server.address"))
        if address is not None:
            listen = self._listen(address)
            if listen is not None:
                self.put("server.address", "server", "address", listen)
        elif src.has("server.host") or src.has("server.port"):
            host = src.string("server.host", src.raw("server.host")) or ""
            port = src.integer("server.port", src.raw("server.port")) or 9091
            listen = self._listen(f"tcp://{_bracket(host)}:{port}/")
            if listen is not None:
                self.table("server")["address"] = listen
                for key in ("server.host", "server.port"):
                    if src.has(key):
                        self.report.map(key, "server.address")
        self.report.attend(
            "server",
            "Authelia believes X-Forwarded-* and X-Original-* from any peer; authctl only from "
            "server.trusted_proxies (default: loopback). List your proxy's address there",
        )
        for key, reason in (
            ("server.tls", "authctl serves plain HTTP behind the proxy; TLS ends at the proxy"),
            ("server.asset_path", "authctl's portal assets are built in"),
            ("server.disable_healthcheck", "authctl always answers /api/health"),
            ("server.headers", "authctl sets its own security headers"),
            ("server.buffers", "waitress sizes its own buffers"),
            ("server.timeouts", "authctl's timeouts are fixed"),
            ("server.endpoints.enable_pprof", "no profiler endpoint in authctl"),
            ("server.endpoints.enable_expvars", "no expvars endpoint in authctl"),
            ("server.endpoints.rate_limits", "authctl's own rate limits apply"),
            ("server.read_buffer_size", "waitress sizes its own buffers"),
            ("server.write_buffer_size", "waitress sizes its own buffers"),
            ("server.path", "authctl serves at the root of its address"),
        ):
            if src.has(key):
                if key == "server.tls":
                    self.report.attend(key, reason)
                else:
                    self.report.drop(key, reason)
        if src.has("server.endpoints.authz"):
            self.report.attend(
                "server.endpoints.authz",
                "authctl's endpoints are fixed (/api/verify, /api/authz/forward-auth, "
                "auth-request, ext-authz; Basic credentials on all): check custom endpoint "
                "names and authn_strategies in your proxy config (`authctl proxy-snippet`)",
            )

    def _listen(self, address: str) -> str | None:
        text = address if "://" in address else "tcp://" + address
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme == "unix":
            return "unix:" + (parts.netloc + parts.path if parts.netloc else parts.path)
        if scheme not in ("tcp", "tcp4", "tcp6"):
            self.report.attend(
                "server.address", f"the {scheme!r} listener has no authctl counterpart"
            )
            return None
        if parts.path not in ("", "/"):
            self.report.attend(
                "server.address",
                f"Authelia served under the path {parts.path!r}; authctl serves at the root: "
                "adjust the proxy's location",
            )
        try:
            port = parts.port or 9091
        except ValueError:
            self.report.attend("server.address", f"{address!r} has no valid port: not imported")
            return None
        host = parts.hostname or ("::" if scheme == "tcp6" else "0.0.0.0")  # noqa: S104
        return f"{_bracket(host)}:{port}"

    def log(self) -> None:
        src = self.src
        level = src.string("log.level", src.raw("log.level"))
        if level is not None:
            levels = {"trace": "debug", "debug": "debug", "info": "info", "warn": "warning"}
            levels |= {"warning": "warning", "error": "error"}
            if level.lower() in levels:
                self.put("log.level", "log", "level", levels[level.lower()])
            else:
                self.report.attend("log.level", f"{level!r} is not a log level: not imported")
        fmt = src.string("log.format", src.raw("log.format"))
        if fmt is not None:
            if fmt.lower() in ("text", "json"):
                self.put("log.format", "log", "format", fmt.lower())
            else:
                self.report.attend("log.format", f"{fmt!r} is not text or json: not imported")
        if src.has("log.file_path"):
            self.report.attend(
                "log.file_path",
                "authctl logs to standard error: redirect it (systemd journal, docker logs)",
            )
        if src.has("log.keep_stdout"):
            self.report.drop("log.keep_stdout", "authctl always logs to standard error")

    def totp(self) -> None:
        src = self.src
        if src.boolean("totp.disable", src.raw("totp.disable")):
            self.report.attend(
                "totp.disable",
                "authctl always offers TOTP; users can only enrol when a rule asks for two_factor",
            )
        issuer = src.string("totp.issuer", src.raw("totp.issuer"))
        if issuer is not None:
            if ":" in issuer:
                self.report.attend("totp.issuer", "authctl refuses ':' in an issuer")
            else:
                self.put("totp.issuer", "totp", "issuer", issuer)
        algorithm = src.string("totp.algorithm", src.raw("totp.algorithm"))
        if algorithm is not None:
            if algorithm.upper() in ("SHA1", "SHA256", "SHA512"):
                self.put("totp.algorithm", "totp", "algorithm", algorithm.upper())
            else:
                self.report.attend("totp.algorithm", f"{algorithm!r} is not a TOTP algorithm")
        for name, low, high in (("digits", 6, 8), ("period", 15, 300), ("skew", 0, 2)):
            key = f"totp.{name}"
            value = src.integer(key, src.raw(key))
            if value is None:
                continue
            if not low <= value <= high or (name == "digits" and value == 7):
                self.report.attend(key, f"{value} is outside what authctl accepts ({low}-{high})")
            else:
                self.put(key, "totp", name, value)
        for name, reason in (
            ("secret_size", "authctl makes 20-byte secrets (imported ones keep their size)"),
            ("allowed_algorithms", "users enrol with the configured algorithm only; imported "
             "secrets keep their own"),
            ("allowed_digits", "users enrol with the configured digits only; imported secrets "
             "keep their own"),
            ("allowed_periods", "users enrol with the configured period only; imported secrets "
             "keep their own"),
            ("disable_reuse_security_policy", "authctl always refuses a code used before"),
        ):  # fmt: skip
            if src.has(f"totp.{name}"):
                self.report.drop(f"totp.{name}", reason)

    def webauthn(self) -> None:
        """``webauthn:`` to ``[webauthn]``. Authelia offers passkey sign-in, and counts a
        verified passkey as two factors, only when asked to; authctl does both by default, so
        both are always written as Authelia had them (its rp id is the portal host, authctl's
        default, so imported credentials keep working)."""
        src = self.src
        disable = src.boolean("webauthn.disable", src.raw("webauthn.disable"))
        if disable is not None:
            self.put("webauthn.disable", "webauthn", "enable", not disable)
        name = src.string("webauthn.display_name", src.raw("webauthn.display_name"))
        if name is not None:
            if len(name) > PORTAL_TITLE_MAX or not name.isprintable():
                self.report.attend(
                    "webauthn.display_name",
                    f"authctl takes at most {PORTAL_TITLE_MAX} printable characters",
                )
            else:
                self.put("webauthn.display_name", "webauthn", "display_name", name)
        self._webauthn_option(
            "attestation_conveyance_preference", "attestation", ("none", "indirect", "direct")
        )
        uv_choices = ("discouraged", "preferred", "required")
        self._webauthn_option("user_verification", "user_verification", uv_choices)
        self._webauthn_option(
            "selection_criteria.user_verification", "user_verification", uv_choices
        )
        self._webauthn_timeout()
        self._webauthn_flag(
            ("enable_passkey_login", "experimental_enable_passkey_login"), "passkey_login"
        )
        self._webauthn_flag(
            ("experimental_enable_passkey_uv_two_factors",), "passkey_uv_two_factor"
        )
        for key, reason, attend in _WEBAUTHN_UNMAPPED:
            if src.has(f"webauthn.{key}"):
                note = self.report.attend if attend else self.report.drop
                note(f"webauthn.{key}", reason)

    def _webauthn_option(self, key: str, name: str, choices: tuple[str, ...]) -> None:
        where = f"webauthn.{key}"
        value = self.src.string(where, self.src.raw(where))
        if value is None:
            return
        if value.lower() in choices:
            self.put(where, "webauthn", name, value.lower())
        else:
            self.report.attend(where, f"{value!r} is not one of {', '.join(choices)}")

    def _webauthn_timeout(self) -> None:
        seconds = self.src.duration("webauthn.timeout", self.src.raw("webauthn.timeout"))
        if seconds is None:
            return
        if not WEBAUTHN_MIN_TIMEOUT <= seconds <= WEBAUTHN_MAX_TIMEOUT:
            self.report.attend(
                "webauthn.timeout",
                f"{seconds} seconds is outside what authctl accepts "
                f"({WEBAUTHN_MIN_TIMEOUT}-{WEBAUTHN_MAX_TIMEOUT})",
            )
            return
        self.put("webauthn.timeout", "webauthn", "timeout", format_duration(seconds))

    def _webauthn_flag(self, keys: tuple[str, ...], name: str) -> None:
        """``name`` from the first of Authelia's ``keys`` that is set, else Authelia's default
        (off), which is not authctl's."""
        value = False
        for key in reversed(keys):
            where = f"webauthn.{key}"
            found = self.src.boolean(where, self.src.raw(where))
            if found is not None:
                value = found
                self.report.map(where, f"webauthn.{name}")
        self.table("webauthn")[name] = value

    def regulation(self) -> None:
        src = self.src
        retries = src.integer("regulation.max_retries", src.raw("regulation.max_retries"))
        if retries is not None:
            if 0 <= retries <= 1000:
                self.put("regulation.max_retries", "regulation", "max_retries", retries)
            else:
                self.report.attend("regulation.max_retries", f"{retries} is outside 0-1000")
        self.duration("regulation.find_time", "regulation", "find_time", minimum=1)
        self.duration("regulation.ban_time", "regulation", "ban_time", minimum=1)
        modes = src.strings("regulation.modes", src.raw("regulation.modes"))
        if modes is not None:
            known = [m for m in dict.fromkeys(m.lower() for m in modes) if m in ("user", "ip")]
            if known and len(known) == len(set(modes)):
                self.put("regulation.modes", "regulation", "modes", known)
            else:
                self.report.attend("regulation.modes", "use user and/or ip: not imported")

    # ------------------------------------------------------------------ session

    def session(self) -> None:
        src = self.src
        session = src.mapping("session", src.raw("session")) or {}
        if src.has("session.secret"):
            self.report.drop(
                "session.secret",
                "authctl keeps sessions in its own store: Authelia's sessions are not carried "
                "over, everyone signs in once more",
            )
        cookies = self._cookies(session)
        common = self._cookie_common(session, cookies)
        for name, value in common.items():
            self.table("session")[name] = value
        self.table("session")["cookies"] = [c for c in cookies if c]
        self._redis()

    def _cookies(self, session: dict[str, t.Any]) -> list[dict[str, t.Any]]:
        src = self.src
        raw = session.get("cookies")
        entries: list[dict[str, t.Any]] = []
        legacy = src.string("session.domain", session.get("domain"))
        if raw:
            if not isinstance(raw, list):
                self.report.attend("session.cookies", "expected a list: not imported")
                raw = []
            for i, item in enumerate(raw):
                entry = self._cookie(f"session.cookies[{i}]", item)
                if entry is not None:
                    entries.append(entry)
            if legacy is not None:
                self.report.drop(
                    "session.domain", "session.cookies is set; Authelia refuses both together"
                )
        elif legacy is not None:
            domain = legacy.strip().lstrip(".").lower()
            portal = f"https://auth.{domain}"
            entry = {"domain": domain, "portal_url": portal}
            self.report.map("session.domain", "session.cookies[0].domain")
            self.report.attend(
                "session.cookies[0].portal_url",
                f"the legacy session.domain has no portal URL (the proxy passed it as rd=): "
                f"{portal} was written; correct it to your portal's address",
            )
            redirect = src.string("default_redirection_url", src.raw("default_redirection_url"))
            if redirect is not None:
                entry["default_redirect_url"] = redirect
                self.report.map(
                    "default_redirection_url", "session.cookies[0].default_redirect_url"
                )
            entries.append(entry)
            self.cert_hosts += [f"auth.{domain}", f"*.{domain}", domain]
        if not entries:
            self.report.attend(
                "session.cookies",
                "no cookie domain in the Authelia config: example.com and "
                "https://auth.example.com were written as placeholders; set your own",
            )
            entries.append({"domain": "example.com", "portal_url": "https://auth.example.com"})
            self.cert_hosts += ["auth.example.com", "*.example.com", "example.com"]
        return entries

    def _cookie(self, key: str, item: object) -> dict[str, t.Any] | None:
        src = self.src
        raw = src.mapping(key, item)
        if raw is None:
            return None
        domain = src.string(f"{key}.domain", raw.get("domain"))
        if domain is None:
            self.report.attend(key, "a cookie entry without a domain: not imported")
            return None
        domain = domain.strip().lstrip(".").lower()
        entry: dict[str, t.Any] = {"domain": domain}
        self.report.map(f"{key}.domain", f"{key}.domain")
        portal = src.string(f"{key}.authelia_url", raw.get("authelia_url"))
        if portal is None:
            portal = f"https://auth.{domain}"
            self.report.attend(
                f"{key}.authelia_url",
                f"missing (the proxy passed the portal as rd=): {portal} was written; correct "
                "it to your portal's address",
            )
        else:
            self.report.map(f"{key}.authelia_url", f"{key}.portal_url")
        entry["portal_url"] = portal
        redirect = src.string(f"{key}.default_redirection_url", raw.get("default_redirection_url"))
        if redirect is not None:
            entry["default_redirect_url"] = redirect
            self.report.map(f"{key}.default_redirection_url", f"{key}.default_redirect_url")
        host = urlsplit(portal).hostname
        self.cert_hosts += [h for h in (host, f"*.{domain}", domain) if h]
        return entry

    def _cookie_common(
        self, session: dict[str, t.Any], cookies: list[dict[str, t.Any]]
    ) -> dict[str, t.Any]:
        """name, same_site and the lifetimes: authctl has one of each for every cookie domain.

        When the cookie entries of Authelia differ, the strictest value is kept (the shortest
        lifetime, the strictest SameSite) and the difference is reported.
        """
        raw_cookies = session.get("cookies") if isinstance(session.get("cookies"), list) else []
        out: dict[str, t.Any] = {}
        for name in ("name", "same_site", "expiration", "inactivity", "remember_me"):
            values: list[tuple[str, t.Any]] = []
            base = session.get(name)
            base_key = f"session.{name}"
            for i, cookie in enumerate(t.cast(list[t.Any], raw_cookies)):
                if isinstance(cookie, dict) and name in cookie:
                    values.append((f"session.cookies[{i}].{name}", cookie[name]))
                elif base is not None:
                    values.append((base_key, base))
            if not raw_cookies and base is not None:
                values.append((base_key, base))
            if not values:
                continue
            parsed = [(k, self._common_value(k, name, v)) for k, v in values]
            good = [(k, v) for k, v in parsed if v is not None]
            if not good:
                continue
            if name == "remember_me":
                choice = min((v for _, v in good), key=lambda s: (s != "0", _secs(s)))
            elif name in ("expiration", "inactivity"):
                choice = min((v for _, v in good), key=_secs)
            elif name == "same_site":
                order = {"strict": 0, "lax": 1, "none": 2}
                choice = min((v for _, v in good), key=lambda s: order[s])
            else:
                choice = good[0][1]
            out[name] = choice
            for k in dict.fromkeys(k for k, _ in good):
                self.report.map(k, base_key)
            if len({v for _, v in good}) > 1:
                self.report.attend(
                    base_key,
                    f"the cookie domains had different values; authctl has one for all and "
                    f"keeps the strictest: {choice!r}",
                )
        return out

    def _common_value(self, key: str, name: str, value: object) -> str | None:
        src = self.src
        if name == "name":
            text = src.string(key, value)
            return text
        if name == "same_site":
            text = src.string(key, value)
            if text is not None and text.lower() not in ("lax", "strict", "none"):
                self.report.attend(key, f"{text!r} is not lax, strict or none")
                return None
            return text.lower() if text is not None else None
        seconds = src.duration(key, value)
        if seconds is None:
            return None
        if name == "remember_me" and seconds < 0:
            return "0"
        if seconds <= 0:
            self.report.attend(key, "must be positive: not imported (Authelia used its default)")
            return None
        return format_duration(seconds)

    def _redis(self) -> None:
        src = self.src
        redis = src.mapping("session.redis", src.raw("session.redis"))
        if redis is None:
            return
        ha = src.mapping("session.redis.high_availability", redis.get("high_availability"))
        host = src.string("session.redis.host", redis.get("host")) or "127.0.0.1"
        default_port = 26379 if ha else 6379
        port = src.integer("session.redis.port", redis.get("port")) or default_port
        db = src.integer("session.redis.database_index", redis.get("database_index")) or 0
        username = src.string("session.redis.username", redis.get("username"))
        tls = redis.get("tls") is not None
        user = f"{quote(username, safe='')}@" if username else ""
        if host.startswith("/"):
            url = f"unix://{user}{host}?{urlencode({'db': db})}"
        else:
            url = f"{'rediss' if tls else 'redis'}://{user}{_bracket(host)}:{port}/{db}"
        self.put("session.redis", "session", "store", "redis")
        self.table("session")["redis_url"] = url
        for key in ("host", "port", "database_index", "username"):
            if key in redis:
                self.report.map(f"session.redis.{key}", "session.redis_url")
        if tls:
            self.report.map("session.redis.tls", "session.redis_url (rediss://)")
            tls_map = redis.get("tls")
            if isinstance(tls_map, dict) and set(tls_map) - {"minimum_version", "maximum_version"}:
                self.report.attend(
                    "session.redis.tls",
                    "server_name, skip_verify and client certificates have no authctl key: "
                    "the system's CA store verifies the Redis certificate",
                )
        password_file = self.secret(
            "session.redis.password", redis.get("password"), "redis.password"
        )
        if password_file is not None:
            self.put("session.redis.password", "session", "redis_password_file", password_file)
        for key, reason in (
            ("timeout", "authctl's Redis timeout is fixed"),
            ("max_retries", "authctl fails closed on a Redis error, then reconnects"),
            ("maximum_active_connections", "redis-py sizes its own pool"),
            ("minimum_idle_connections", "redis-py sizes its own pool"),
        ):
            if key in redis:
                self.report.drop(f"session.redis.{key}", reason)
        if ha is None:
            return
        hkey = "session.redis.high_availability"
        master = src.string(f"{hkey}.sentinel_name", ha.get("sentinel_name"))
        nodes = [] if host.startswith("/") else [f"{_bracket(host)}:{port}"]
        raw_nodes = ha.get("nodes") or []
        for i, node in enumerate(raw_nodes if isinstance(raw_nodes, list) else []):
            node_map = src.mapping(f"{hkey}.nodes[{i}]", node) or {}
            node_host = src.string(f"{hkey}.nodes[{i}].host", node_map.get("host"))
            if node_host is None:
                continue
            node_port = src.integer(f"{hkey}.nodes[{i}].port", node_map.get("port")) or 26379
            nodes.append(f"{_bracket(node_host)}:{node_port}")
            self.report.map(f"{hkey}.nodes[{i}]", "session.redis_sentinel.nodes")
        if master is None or not nodes:
            self.report.attend(hkey, "needs sentinel_name and a node: Sentinel not imported")
            return
        self.put(f"{hkey}.sentinel_name", "session.redis_sentinel", "master_name", master)
        self.table("session.redis_sentinel")["nodes"] = list(dict.fromkeys(nodes))
        if "sentinel_username" in ha or "sentinel_password" in ha:
            self.report.attend(
                f"{hkey}.sentinel_password",
                "authctl has no Sentinel credentials yet: Sentinels must accept it without a "
                "password (the Redis password applies to the data nodes only)",
            )
        for key in ("route_by_latency", "route_randomly"):
            if key in ha:
                self.report.drop(f"{hkey}.{key}", "authctl always talks to the primary")

    # ------------------------------------------------------------------ storage

    def storage(self) -> None:
        src = self.src
        if src.has("storage.encryption_key"):
            self.report.drop(
                "storage.encryption_key",
                "authctl encrypts with its own new key (secrets/storage.key); Authelia's key "
                "only opens Authelia's database, which is not converted",
            )
        if src.has("storage.local"):
            path = src.raw("storage.local.path")
            self.report.attend(
                "storage.local.path",
                f"Authelia's SQLite database ({path}) is not converted: authctl starts a new "
                "one at authctl.db. Bring TOTP secrets over with `authelia storage user totp "
                "export` and --totp-export; bans and logs start empty",
            )
        if src.has("storage.mysql"):
            self.report.attend(
                "storage.mysql",
                "authctl has no MySQL backend: the new storage is SQLite (authctl.db); "
                'PostgreSQL is the other choice ([storage] backend = "postgres")',
            )
        if src.has("storage.postgres"):
            self._postgres()

    def _postgres(self) -> None:
        src = self.src
        key = "storage.postgres"
        pg = src.mapping(key, src.raw(key))
        if pg is None:
            return
        hosts: list[str] = []
        for k, value in [("address", pg.get("address"))] + [
            (f"servers[{i}].address", (s or {}).get("address") if isinstance(s, dict) else None)
            for i, s in enumerate(pg.get("servers") or [])
        ]:
            if value is None:
                continue
            text = src.string(f"{key}.{k}", value)
            if text is None:
                continue
            host = _pg_host(text)
            if host is None:
                self.report.attend(f"{key}.{k}", f"{text!r} is not a tcp:// address")
                continue
            hosts.append(host)
            self.report.map(f"{key}.{k}", "storage.postgres.dsn")
        if not hosts and ("host" in pg or "port" in pg):
            host = src.string(f"{key}.host", pg.get("host")) or "localhost"
            port = src.integer(f"{key}.port", pg.get("port")) or 5432
            hosts.append(f"{_bracket(host)}:{port}")
            for k in ("host", "port"):
                if k in pg:
                    self.report.map(f"{key}.{k}", "storage.postgres.dsn")
        if not hosts:
            hosts.append("localhost:5432")
        hosts = list(dict.fromkeys(hosts))
        database = src.string(f"{key}.database", pg.get("database")) or "authelia"
        username = src.string(f"{key}.username", pg.get("username")) or "authelia"
        schema = src.string(f"{key}.schema", pg.get("schema"))
        params: dict[str, str] = {}
        if schema and schema != "public":
            params["options"] = f"-c search_path={schema}"
        if len(hosts) > 1:
            params["target_session_attrs"] = "read-write"
        tls = pg.get("tls")
        ssl = pg.get("ssl")
        if isinstance(tls, dict):
            params["sslmode"] = "require" if tls.get("skip_verify") is True else "verify-full"
            self.report.map(f"{key}.tls", "storage.postgres.dsn (sslmode)")
            if set(tls) - {"skip_verify", "minimum_version", "maximum_version"}:
                self.report.attend(
                    f"{key}.tls",
                    "server_name and certificates: add sslrootcert/sslcert/sslkey to the dsn",
                )
        elif isinstance(ssl, dict) and isinstance(ssl.get("mode"), str):
            params["sslmode"] = ssl["mode"]
            self.report.map(f"{key}.ssl.mode", "storage.postgres.dsn (sslmode)")
            if set(ssl) - {"mode"}:
                self.report.attend(
                    f"{key}.ssl", "certificates: add sslrootcert/sslcert/sslkey to the dsn"
                )
        elif isinstance(pg.get("sslmode"), str):
            params["sslmode"] = pg["sslmode"]
            self.report.map(f"{key}.sslmode", "storage.postgres.dsn (sslmode)")
        dsn = (
            f"postgresql://{quote(username, safe='')}@{','.join(hosts)}/{quote(database, safe='')}"
        )
        if params:
            dsn += "?" + urlencode(params)
        self.table("storage")["backend"] = "postgres"
        self.table("storage.postgres")["dsn"] = dsn
        for k in ("database", "username", "schema"):
            if k in pg:
                self.report.map(f"{key}.{k}", "storage.postgres.dsn")
        password_file = self.secret(f"{key}.password", pg.get("password"), "postgres.password")
        if password_file is not None:
            self.put(f"{key}.password", "storage.postgres", "password_file", password_file)
        timeout = src.duration(f"{key}.timeout", pg.get("timeout"))
        if timeout is not None and timeout >= 1:
            self.put(f"{key}.timeout", "storage.postgres", "timeout", format_duration(timeout))
        self.report.attend(
            key,
            "authctl makes its own tables: use a new, empty database (or schema) for it, not "
            "Authelia's; Authelia's data is not converted",
        )

    # ------------------------------------------------------------------ notifier

    def notifier(self) -> None:
        src = self.src
        if not src.has("notifier"):
            return
        smtp = src.mapping("notifier.smtp", src.raw("notifier.smtp"))
        filename = src.string(
            "notifier.filesystem.filename", src.raw("notifier.filesystem.filename")
        )
        if smtp is not None:
            self._smtp(smtp)
            if filename is not None:
                self.report.drop(
                    "notifier.filesystem", "smtp is set too; Authelia refuses both together"
                )
        elif filename is not None:
            self.put("notifier.filesystem.filename", "notifier", "filesystem", filename)
        if src.has("notifier.template_path"):
            self.report.attend(
                "notifier.template_path", "authctl's e-mails use its own built-in templates"
            )

    def _smtp(self, smtp: dict[str, t.Any]) -> None:
        src = self.src
        key = "notifier.smtp"
        address = src.string(f"{key}.address", smtp.get("address"))
        scheme, host, port = "smtp", None, None
        if address is not None:
            parts = urlsplit(address if "://" in address else "smtp://" + address)
            scheme, host = parts.scheme.lower(), parts.hostname
            try:
                port = parts.port
            except ValueError:
                port = None
            if scheme not in ("smtp", "submission", "submissions"):
                self.report.attend(f"{key}.address", f"the {scheme!r} scheme is not SMTP")
                scheme = "smtp"
            self.report.map(f"{key}.address", f"{key}.host/port/tls")
        else:
            host = src.string(f"{key}.host", smtp.get("host"))
            port = src.integer(f"{key}.port", smtp.get("port"))
            for k in ("host", "port"):
                if k in smtp:
                    self.report.map(f"{key}.{k}", f"{key}.{k}")
        if not host:
            self.report.attend(key, "no host in the SMTP settings: localhost was written")
            host = "localhost"
        implicit = scheme == "submissions" or (port == 465 and scheme == "smtp")
        port = port or {"smtp": 25, "submission": 587, "submissions": 465}[scheme]
        out = self.table("notifier.smtp")
        out["host"] = host
        out["port"] = port
        if implicit:
            out["tls"] = True
            out["starttls"] = False
        else:
            starttls = smtp.get("disable_starttls") is not True
            out["starttls"] = starttls
            if "disable_starttls" in smtp:
                self.report.map(f"{key}.disable_starttls", f"{key}.starttls")
        if smtp.get("disable_require_tls") is True:
            self.report.attend(
                f"{key}.disable_require_tls",
                "authctl has no 'TLS if offered' mode: with starttls = true the relay must "
                "offer STARTTLS; set starttls = false only for a relay on a trusted network",
            )
        sender = src.string(f"{key}.sender", smtp.get("sender"))
        if sender is not None:
            self.put(f"{key}.sender", "notifier.smtp", "sender", sender)
        else:
            self.report.attend(f"{key}.sender", "missing: write sender in [notifier.smtp]")
        username = src.string(f"{key}.username", smtp.get("username"))
        password_file = self.secret(f"{key}.password", smtp.get("password"), "smtp.password")
        env_file = self.env.get("AUTHELIA_NOTIFIER_SMTP_PASSWORD_FILE")
        if password_file is None and env_file:
            password_file = env_file
        if username is not None and password_file is not None:
            self.put(f"{key}.username", "notifier.smtp", "username", username)
            out["password_file"] = password_file
            if "password" in smtp:
                self.report.map(f"{key}.password", f"{key}.password_file")
        elif username is not None:
            self.report.attend(
                f"{key}.username",
                "no password for it in the file (set in the environment?): write the password "
                "to a file and add username and password_file to [notifier.smtp]",
            )
        timeout = src.duration(f"{key}.timeout", smtp.get("timeout"))
        if timeout is not None and timeout >= 1:
            self.put(f"{key}.timeout", "notifier.smtp", "timeout", format_duration(timeout))
        disable_check = src.boolean(
            "notifier.disable_startup_check", src.raw("notifier.disable_startup_check")
        )
        if disable_check is not None:
            out["startup_check"] = not disable_check
            self.report.map("notifier.disable_startup_check", f"{key}.startup_check")
        for k, reason in (
            ("identifier", "authctl greets the relay with the host name"),
            ("subject", "authctl's subjects are fixed"),
            ("startup_check_address", "authctl's startup check sends no mail"),
            ("disable_html_emails", "authctl's e-mails are plain text"),
        ):
            if k in smtp:
                self.report.drop(f"{key}.{k}", reason)
        tls = smtp.get("tls")
        if isinstance(tls, dict) and set(tls) - {"minimum_version", "maximum_version"}:
            self.report.attend(
                f"{key}.tls",
                "server_name, skip_verify and client certificates have no authctl key: the "
                "system's CA store verifies the relay",
            )
        elif tls is not None:
            self.report.drop(f"{key}.tls", "authctl uses the system's TLS defaults (1.2+)")

    # ------------------------------------------------------------------ policy, users

    def password_policy(self) -> None:
        src = self.src
        std = src.mapping("password_policy.standard", src.raw("password_policy.standard"))
        zx = src.mapping("password_policy.zxcvbn", src.raw("password_policy.zxcvbn"))
        if std is not None and std.get("enabled") is True:
            key = "password_policy.standard"
            low = src.integer(f"{key}.min_length", std.get("min_length"))
            high = src.integer(f"{key}.max_length", std.get("max_length"))
            if low is not None and 1 <= low <= 1024:
                self.put(f"{key}.min_length", "password_policy", "min_length", low)
            if high is not None and high > 0:
                if max(8, low or 8) <= high <= 1024:
                    self.put(f"{key}.max_length", "password_policy", "max_length", high)
                else:
                    self.report.attend(f"{key}.max_length", f"{high} is outside 8-1024")
            elif high == 0:
                self.report.map(f"{key}.max_length", "password_policy.max_length (default)")
            self.report.map(f"{key}.enabled", "password_policy")
            for k in std:
                if k.startswith("require_") and std[k] is True:
                    self.report.attend(
                        f"{key}.{k}",
                        "authctl does not require character classes; it refuses common "
                        "passwords instead (check_common)",
                    )
            for k in std:
                if k.startswith("require_") and std[k] is not True:
                    self.report.drop(f"{key}.{k}", "off in Authelia; authctl has no such rule")
        elif std is not None:
            self.report.drop(
                "password_policy.standard",
                "disabled in Authelia; authctl's policy (8-128 characters, no common "
                "passwords) applies",
            )
        if zx is not None:
            if zx.get("enabled") is True:
                self.report.attend(
                    "password_policy.zxcvbn",
                    "authctl has no zxcvbn scoring: it refuses common passwords and applies "
                    "min_length instead",
                )
            else:
                self.report.drop("password_policy.zxcvbn", "disabled in Authelia")

    def authentication(self) -> None:
        src = self.src
        key = "authentication_backend"
        if src.has(f"{key}.ldap"):
            self.report.attend(
                f"{key}.ldap",
                "authctl reads users from users.toml only: LDAP users cannot be imported; add "
                "them with `authctl user add`",
            )
        path = src.string(f"{key}.file.path", src.raw(f"{key}.file.path"))
        if path is not None:
            self.users_path = path
            self.report.map(f"{key}.file.path", "users.file (users.toml, from --users)")
        watch = src.boolean(f"{key}.file.watch", src.raw(f"{key}.file.watch"))
        if watch is not None:
            self.put(f"{key}.file.watch", "users", "watch", watch)
        for k, reason in (
            ("file.search.email", "users sign in with their user name"),
            ("file.search.case_insensitive", "authctl always compares user names "
             "case-insensitively (NFKC, then case folding)"),
            ("file.extra_attributes", "authctl keeps no extra attributes"),
            ("refresh_interval", "authctl re-reads users.toml when it changes"),
        ):  # fmt: skip
            if src.has(f"{key}.{k}"):
                self.report.drop(f"{key}.{k}", reason)
        if src.raw(f"{key}.password_reset.disable") is True:
            self.report.attend(
                f"{key}.password_reset.disable",
                "authctl's portal always offers a password reset by e-mail",
            )
        elif src.has(f"{key}.password_reset"):
            self.report.drop(f"{key}.password_reset", "authctl's reset by e-mail is built in")
        if src.raw(f"{key}.password_change.disable") is True:
            self.report.attend(
                f"{key}.password_change.disable",
                "authctl lets signed-in users change their password",
            )
        elif src.has(f"{key}.password_change"):
            self.report.drop(f"{key}.password_change", "on in authctl too")
        self._hash_params()

    def _hash_params(self) -> None:
        src = self.src
        key = "authentication_backend.file.password"
        pw = src.mapping(key, src.raw(key))
        if pw is None:
            return
        algorithm = src.string(f"{key}.algorithm", pw.get("algorithm")) or "argon2"
        argon = pw.get("argon2") if isinstance(pw.get("argon2"), dict) else None
        if argon is None and algorithm.lower() == "argon2":
            # Authelia < 4.36 wrote the argon2 parameters flat, memory in MiB.
            legacy = {k: pw[k] for k in ("iterations", "memory", "parallelism") if k in pw}
            if "memory" in legacy and isinstance(legacy["memory"], int):
                legacy["memory"] = legacy["memory"] * 1024
            argon = legacy or None
            prefix = key
        else:
            prefix = f"{key}.argon2"
        if algorithm.lower() != "argon2":
            self.report.attend(
                f"{key}.algorithm",
                f"authctl hashes new passwords with argon2id, not {algorithm}; existing "
                f"{algorithm} hashes keep working and become argon2id at the next sign-in",
            )
        else:
            self.report.map(f"{key}.algorithm", "users.password_hash (argon2id)")
        for other in ("scrypt", "pbkdf2", "sha2crypt", "bcrypt"):
            if other in pw:
                self.report.drop(f"{key}.{other}", "authctl makes argon2id hashes only")
        if argon is None:
            return
        variant = argon.get("variant")
        if variant not in (None, "argon2id"):
            self.report.attend(f"{key}.argon2.variant", f"authctl uses argon2id, not {variant}")
        elif variant is not None:
            self.report.map(f"{key}.argon2.variant", "users.password_hash (argon2id)")
        for name, to, high in (
            ("memory", "memory_kib", ARGON2_MAX_MEMORY_KIB),
            ("iterations", "iterations", ARGON2_MAX_ITERATIONS),
            ("parallelism", "parallelism", ARGON2_MAX_PARALLELISM),
        ):
            value = src.integer(f"{prefix}.{name}", argon.get(name))
            if value is None:
                continue
            if not 1 <= value <= high:
                self.report.attend(
                    f"{prefix}.{name}", f"{value} is outside authctl's bounds (1-{high})"
                )
                continue
            self.put(f"{prefix}.{name}", "users.password_hash", to, value)
        ph = self.out.get("users", {}).get("password_hash", {})
        memory, lanes = ph.get("memory_kib"), ph.get("parallelism", 4)
        if memory is not None and memory < 8 * lanes:
            self.report.attend(f"{prefix}.memory", "below 8 KiB per lane: not imported")
            del ph["memory_kib"]
        for name in ("key_length", "salt_length"):
            if name in argon:
                self.report.drop(f"{prefix}.{name}", "authctl uses a 32-byte hash, 16-byte salt")

    def identity_providers(self) -> None:
        src = self.src
        if not src.has("identity_providers"):
            return
        clients = src.raw("identity_providers.oidc.clients")
        ids: list[str] = []
        for client in clients if isinstance(clients, list) else []:
            if isinstance(client, dict):
                cid = client.get("client_id", client.get("id"))
                if isinstance(cid, str):
                    ids.append(cid)
        self.report.attend(
            "identity_providers.oidc",
            "authctl has no OpenID Connect section yet: the clients "
            + (", ".join(repr(i) for i in ids) if ids else "(none)")
            + " cannot sign in through it; keep Authelia for them or wait for authctl's OIDC "
            "provider",
        )

    def duo(self) -> None:
        if self.src.has("duo_api"):
            self.report.attend(
                "duo_api",
                "authctl has no Duo push: Duo users need TOTP or a passkey",
            )

    def definitions(self) -> None:
        if self.src.has("definitions.user_attributes"):
            self.report.drop(
                "definitions.user_attributes",
                "authctl has no computed user attributes (Authelia uses them for OIDC claims)",
            )

    def misc(self) -> None:
        src = self.src
        for key, reason in _DROPPED_SECTIONS.items():
            if src.has(key) and not self.report.covers(key):
                self.report.drop(key, reason)
        if src.has("certificates_directory"):
            self.report.attend(
                "certificates_directory",
                "authctl trusts the system's CA store: install your private CAs there "
                "(update-ca-certificates)",
            )
        for name in sorted(self.env):
            if not name.startswith("AUTHELIA_"):
                continue
            mapped = ENV_FILE_KEYS.get(name)
            if mapped is not None and name != "AUTHELIA_NOTIFIER_SMTP_PASSWORD_FILE":
                table, key = mapped
                if table == "storage.postgres" and "postgres" not in self.out.get("storage", {}):
                    self.report.drop(f"env:{name}", "no PostgreSQL storage in the config")
                    continue
                if table == "session" and self.out.get("session", {}).get("store") != "redis":
                    self.report.drop(f"env:{name}", "no Redis in the config")
                    continue
                self.table(table)[key] = self.env[name]
                self.report.map(f"env:{name}", f"{table}.{key}")
                self.report.attend(
                    f"env:{name}",
                    "the file it names was taken over: check that authctl can read it there",
                )
            elif mapped is not None:
                if "password_file" in self.out.get("notifier", {}).get("smtp", {}):
                    self.report.map(f"env:{name}", "notifier.smtp.password_file")
                else:
                    self.report.drop(f"env:{name}", "no SMTP username in the config")
            else:
                self.report.attend(
                    f"env:{name}",
                    "set in the environment: authctl does not read AUTHELIA_* variables; put "
                    "the setting (or, for a secret, a file named by a *_file key) into "
                    "authctl.toml",
                )

    def leftovers(self) -> None:
        """Every key nothing above spoke for: not an Authelia key authctl knows of."""
        for path in leaves(self.src.data):
            if not self.report.covers(path):
                self.report.drop(path, "not a key of Authelia 4.39 that authctl knows")

    def run(self) -> Conversion:
        self.server()
        self.log()
        self.totp()
        self.webauthn()
        self.regulation()
        self.session()
        self.storage()
        self.notifier()
        self.password_policy()
        self.authentication()
        self.identity_providers()
        self.duo()
        self.definitions()
        access = convert_access_control(self.src)
        if access:
            self.out["access_control"] = access
        self.misc()
        self.leftovers()
        order = (
            "server", "users", "storage", "session", "totp", "webauthn", "regulation", "notifier",
            "password_policy", "log", "access_control",
        )  # fmt: skip
        config = {k: self.out[k] for k in order if k in self.out}
        hosts = tuple(dict.fromkeys(h for h in self.cert_hosts if h))
        return Conversion(config, self.report, self.secrets, hosts, self.users_path)


def _secs(text: str) -> int:
    from server.core.durations import parse_duration

    return parse_duration(text)


def _bracket(host: str) -> str:
    """``host`` as written before ``:port`` (IPv6 in brackets)."""
    try:
        if isinstance(ipaddress.ip_address(host.strip("[]")), ipaddress.IPv6Address):
            return f"[{host.strip('[]')}]"
    except ValueError:
        pass
    return host


def _pg_host(address: str) -> str | None:
    """``host:port`` of an Authelia PostgreSQL address (``tcp://db:5432``, ``db``)."""
    parts = urlsplit(address if "://" in address else "tcp://" + address)
    if parts.scheme not in ("tcp", "tcp4", "tcp6") or not parts.hostname:
        return None
    try:
        port = parts.port or 5432
    except ValueError:
        return None
    return f"{_bracket(parts.hostname)}:{port}"


def convert_config(data: object, env: t.Mapping[str, str] | None = None) -> Conversion:
    """Convert Authelia's parsed ``configuration.yml`` (and its ``AUTHELIA_*`` environment).

    Raises:
        ValueError: ``data`` is not a mapping (the caller names the file).
    """
    if not isinstance(data, dict):
        raise ValueError("the top level is not a mapping of keys")
    return _Converter(data, env or {}).run()
