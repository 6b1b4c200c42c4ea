"""The shape of a validated ``authctl.toml``: the accepted keys and values, and the frozen
dataclasses the loader builds (``server.core.config.sections`` and ``.access`` fill them in).

``tests/test_config_model.py`` checks that :data:`KEYS` and the dataclass fields agree.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from server.core.policy import Policy
from server.core.regex import Regex

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SAME_SITE = ("lax", "strict", "none")
SESSION_STORES = ("memory", "sqlite", "redis")
STORAGE_BACKENDS = ("sqlite", "postgres")
TOTP_ALGORITHMS = ("SHA1", "SHA256", "SHA512")
REGULATION_MODES = ("user", "ip")
QUERY_OPERATORS = ("present", "absent", "equal", "not equal", "pattern", "not pattern")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
PORTAL_THEMES = ("auto", "light", "dark")
WEBAUTHN_ATTESTATION = ("none", "indirect", "direct")
WEBAUTHN_USER_VERIFICATION = ("discouraged", "preferred", "required")
#: OpenID Connect (SPEC §7.3): the scopes a client may ask for, PKCE enforcement, the
#: policies a client's sign-in may need, consent modes and token endpoint client auth.
OIDC_SCOPES = ("openid", "profile", "email", "groups", "offline_access")
OIDC_ENFORCE_PKCE = ("never", "public_clients_only", "always")
OIDC_POLICIES = ("one_factor", "two_factor")
OIDC_CONSENT_MODES = ("explicit", "implicit", "pre-configured")
OIDC_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
#: HTTP methods a ``methods`` criterion may name (RFC 7231, 5789, 4918), as Authelia accepts.
HTTP_METHODS = (
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK",
)  # fmt: skip

#: Bounds of the argon2id parameters used for new hashes (and accepted in the users file).
ARGON2_MAX_MEMORY_KIB = 1024 * 1024
ARGON2_MAX_ITERATIONS = 20
ARGON2_MAX_PARALLELISM = 16

#: Bounds of the portal's branding (``[portal]``): the title's length in characters and the
#: size in bytes of the logo and custom CSS files, which are read whole at load.
PORTAL_TITLE_MAX = 64
LOGO_MAX_BYTES = 256 * 1024
CUSTOM_CSS_MAX_BYTES = 128 * 1024
#: The media types a logo may have, recognised by its first bytes (never by its name).
LOGO_TYPES = ("image/svg+xml", "image/png")

#: Every key the loader accepts, by table. ``[]`` marks the entries of an array of tables
#: (``session.cookies[]`` is one ``[[session.cookies]]``); ``query[][]`` is one condition of
#: a rule's ``query``. A key outside this table is an error (with a did-you-mean), and
#: ``tests/test_docs.py`` checks that each one is documented in ``man/authctl.toml.5``.
KEYS: dict[str, tuple[str, ...]] = {
    "": (
        "server", "users", "storage", "session", "totp", "regulation", "notifier",
        "password_policy", "log", "access_control", "portal", "telemetry", "webauthn",
        "identity_providers",
    ),
    "server": (
        "address", "trusted_proxies", "threads", "shutdown_grace", "inline_authz",
        "watch_config",
    ),
    "users": ("file", "watch", "password_hash"),
    "users.password_hash": ("memory_kib", "iterations", "parallelism"),
    "storage": ("backend", "path", "encryption_key_file", "postgres"),
    "storage.postgres": ("dsn", "password_file", "pool_size", "timeout"),
    "session": (
        "name", "same_site", "expiration", "inactivity", "remember_me", "store", "redis_url",
        "redis_password_file", "redis_sentinel", "cookies",
    ),
    "session.redis_sentinel": ("master_name", "nodes"),
    "session.cookies[]": ("domain", "portal_url", "default_redirect_url"),
    "totp": ("issuer", "algorithm", "digits", "period", "skew"),
    "regulation": ("max_retries", "find_time", "ban_time", "modes"),
    "notifier": ("filesystem", "smtp"),
    "notifier.smtp": (
        "host", "port", "username", "password_file", "sender", "starttls", "tls", "timeout",
        "startup_check",
    ),
    "password_policy": ("min_length", "max_length", "check_common"),
    "log": ("level", "format", "audit_file"),
    "access_control": ("default_policy", "networks", "rules"),
    "access_control.rules[]": (
        "domain", "domain_regex", "resources", "methods", "networks", "subject", "query",
        "policy",
    ),
    "access_control.rules[].query[][]": ("key", "operator", "value"),
    "portal": ("title", "logo_file", "custom_css_file", "theme"),
    "telemetry": ("metrics",),
    "telemetry.metrics": ("enable", "address"),
    "webauthn": (
        "enable", "display_name", "rp_id", "attestation", "user_verification", "timeout",
        "passkey_login", "passkey_uv_two_factor",
    ),
    "identity_providers": ("oidc",),
    "identity_providers.oidc": (
        "enable", "issuer_private_key_file", "access_token_lifespan", "authorize_code_lifespan",
        "id_token_lifespan", "refresh_token_lifespan", "enforce_pkce", "clients",
    ),
    "identity_providers.oidc.clients[]": (
        "client_id", "client_name", "client_secret", "public", "redirect_uris", "scopes",
        "authorization_policy", "consent_mode", "pre_configured_consent_duration",
        "token_endpoint_auth_method",
    ),
}  # fmt: skip


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
    #: Whether a change of the config file reloads it, as SIGHUP does.
    watch_config: bool = False


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
class PostgresConfig:
    """``[storage.postgres]``: a libpq DSN (several hosts and ``target_session_attrs`` for
    failover), the password read from a file (never in the DSN), the pool and a bounded
    connect/statement ``timeout`` in seconds."""

    dsn: str
    password_file: Path | None = None
    pool_size: int = 10
    timeout: int = 5


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """``[storage]``: the backend (SQLite at ``path``, or PostgreSQL) and the key that
    encrypts secrets in it. ``path`` also names the SQLite session store's file."""

    path: Path
    encryption_key_file: Path
    backend: str = "sqlite"
    postgres: PostgresConfig | None = None


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
class SentinelConfig:
    """``[session.redis_sentinel]``: the Sentinel nodes that name the Redis primary; they
    replace ``redis_url``'s host and port (its database number and TLS scheme still apply)."""

    master_name: str
    nodes: tuple[tuple[str, int], ...]


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
    redis_password_file: Path | None = None
    redis_sentinel: SentinelConfig | None = None

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
    """``[log]``: level and format (``json`` gives one JSON line per decision), and the
    audit log of security events (None: none is written)."""

    level: str = "info"
    format: str = "text"
    audit_file: Path | None = None


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
class PortalConfig:
    """``[portal]``: the portal's branding. The logo and custom CSS are read and checked at
    load and kept here, so the pages are rendered from exactly what was validated (and a
    reload that changes a file's content is a change of config)."""

    title: str = "authctl"
    logo_file: Path | None = None
    custom_css_file: Path | None = None
    theme: str = "auto"
    #: The logo's media type (one of :data:`LOGO_TYPES`) and content; "" and b"" without one.
    logo_type: str = ""
    logo: bytes = field(default=b"", repr=False)
    #: The custom stylesheet's text; "" without one.
    custom_css: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``[telemetry.metrics]``: the Prometheus listener, a TCP address of its own."""

    enable: bool = False
    address: str = "127.0.0.1:9959"
    host: str = "127.0.0.1"
    port: int = 9959


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """``[telemetry]``: what authctl exposes about itself."""

    metrics: MetricsConfig = field(default_factory=MetricsConfig)


@dataclass(frozen=True, slots=True)
class WebAuthnConfig:
    """``[webauthn]``: security keys and passkeys (SPEC §7.1). ``rp_id`` "" means the host
    of the portal of the cookie domain in use; ``timeout`` is in seconds."""

    enable: bool = True
    display_name: str = "authctl"
    rp_id: str = ""
    attestation: str = "none"
    user_verification: str = "preferred"
    timeout: int = 60
    passkey_login: bool = True
    passkey_uv_two_factor: bool = True


@dataclass(frozen=True, slots=True)
class OidcClientConfig:
    """One ``[[identity_providers.oidc.clients]]`` entry (SPEC §7.3). ``client_secret`` is
    an argon2id hash ("" for a public client); ``redirect_uris`` are matched exactly, as
    written; ``pre_configured_consent_duration`` is in seconds."""

    client_id: str
    redirect_uris: tuple[str, ...]
    client_name: str = ""
    client_secret: str = field(default="", repr=False)
    public: bool = False
    scopes: tuple[str, ...] = ("openid", "profile", "email", "groups")
    authorization_policy: str = "two_factor"
    consent_mode: str = "explicit"
    pre_configured_consent_duration: int = 7 * 86400
    token_endpoint_auth_method: str = "client_secret_basic"  # noqa: S105 - a method name


@dataclass(frozen=True, slots=True)
class OidcConfig:
    """``[identity_providers.oidc]``: the OpenID Provider. Lifespans are in seconds; the
    issuer's RSA key is read and checked at load (``issuer_key_pem``, PEM, never logged)."""

    enable: bool = False
    issuer_private_key_file: Path | None = None
    access_token_lifespan: int = 3600
    authorize_code_lifespan: int = 60
    id_token_lifespan: int = 3600
    refresh_token_lifespan: int = 5400
    enforce_pkce: str = "public_clients_only"
    clients: tuple[OidcClientConfig, ...] = ()
    #: The issuer key file's content, read and checked at load; b"" when disabled.
    issuer_key_pem: bytes = field(default=b"", repr=False)

    def client(self, client_id: str) -> OidcClientConfig | None:
        """The registered client ``client_id``, or None."""
        for client in self.clients:
            if client.client_id == client_id:
                return client
        return None


@dataclass(frozen=True, slots=True)
class IdentityProvidersConfig:
    """``[identity_providers]``: authctl as an identity provider for other apps."""

    oidc: OidcConfig = field(default_factory=OidcConfig)


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
    portal: PortalConfig = field(default_factory=PortalConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    webauthn: WebAuthnConfig = field(default_factory=WebAuthnConfig)
    identity_providers: IdentityProvidersConfig = field(default_factory=IdentityProvidersConfig)

    @property
    def base_dir(self) -> Path:
        """The folder relative paths in the config resolve against."""
        return self.path.parent
