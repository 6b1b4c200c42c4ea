"""Load and validate ``authctl.toml`` into frozen, typed objects.

Validation happens once, at load, and is complete: every problem is collected with the file,
the key path (``access_control.rules[3].networks[0]``), the line where it can be found, what
is wrong and how to fix it. Unknown keys are errors, so a typo such as ``polcy`` never passes
silently.

The package: :mod:`.model` (the keys and dataclasses), :mod:`.values` (one value: durations,
paths, hosts, URLs), :mod:`.sections` (each table) and :mod:`.access` (``[access_control]``).
Everything other modules use is importable from here.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

from server.core.config import access
from server.core.config import oidc
from server.core.config import sections
from server.core.config.model import ARGON2_MAX_ITERATIONS
from server.core.config.model import ARGON2_MAX_MEMORY_KIB
from server.core.config.model import ARGON2_MAX_PARALLELISM
from server.core.config.model import CUSTOM_CSS_MAX_BYTES
from server.core.config.model import HTTP_METHODS
from server.core.config.model import KEYS
from server.core.config.model import LOG_FORMATS
from server.core.config.model import LOG_LEVELS
from server.core.config.model import LOGO_MAX_BYTES
from server.core.config.model import LOGO_TYPES
from server.core.config.model import OIDC_AUTH_METHODS
from server.core.config.model import OIDC_CONSENT_MODES
from server.core.config.model import OIDC_ENFORCE_PKCE
from server.core.config.model import OIDC_POLICIES
from server.core.config.model import OIDC_SCOPES
from server.core.config.model import PORTAL_THEMES
from server.core.config.model import PORTAL_TITLE_MAX
from server.core.config.model import QUERY_OPERATORS
from server.core.config.model import REGULATION_MODES
from server.core.config.model import SAME_SITE
from server.core.config.model import SESSION_STORES
from server.core.config.model import STORAGE_BACKENDS
from server.core.config.model import TOTP_ALGORITHMS
from server.core.config.model import WEBAUTHN_ATTESTATION
from server.core.config.model import WEBAUTHN_USER_VERIFICATION
from server.core.config.model import AccessControlConfig
from server.core.config.model import Config
from server.core.config.model import CookieConfig
from server.core.config.model import IdentityProvidersConfig
from server.core.config.model import IPNetwork
from server.core.config.model import LogConfig
from server.core.config.model import MetricsConfig
from server.core.config.model import NetworkRef
from server.core.config.model import NotifierConfig
from server.core.config.model import OidcClientConfig
from server.core.config.model import OidcConfig
from server.core.config.model import PasswordHashConfig
from server.core.config.model import PasswordPolicyConfig
from server.core.config.model import PortalConfig
from server.core.config.model import PostgresConfig
from server.core.config.model import QueryCondition
from server.core.config.model import RegulationConfig
from server.core.config.model import RuleConfig
from server.core.config.model import SentinelConfig
from server.core.config.model import ServerConfig
from server.core.config.model import SessionConfig
from server.core.config.model import SmtpConfig
from server.core.config.model import StorageConfig
from server.core.config.model import TelemetryConfig
from server.core.config.model import TotpConfig
from server.core.config.model import UsersConfig
from server.core.config.model import WebAuthnConfig
from server.core.config.values import DomainError
from server.core.config.values import Reader
from server.core.config.values import normalise_domain
from server.core.config.values import parse_network
from server.core.errors import ConfigError
from server.core.tomlread import read_toml

__all__ = [
    "ARGON2_MAX_ITERATIONS", "ARGON2_MAX_MEMORY_KIB", "ARGON2_MAX_PARALLELISM",
    "CUSTOM_CSS_MAX_BYTES", "HTTP_METHODS", "KEYS", "LOGO_MAX_BYTES", "LOGO_TYPES",
    "LOG_FORMATS", "LOG_LEVELS", "OIDC_AUTH_METHODS", "OIDC_CONSENT_MODES", "OIDC_ENFORCE_PKCE",
    "OIDC_POLICIES", "OIDC_SCOPES", "PORTAL_THEMES", "PORTAL_TITLE_MAX", "QUERY_OPERATORS",
    "REGULATION_MODES", "SAME_SITE", "SESSION_STORES", "STORAGE_BACKENDS", "TOTP_ALGORITHMS",
    "WEBAUTHN_ATTESTATION", "WEBAUTHN_USER_VERIFICATION",
    "AccessControlConfig", "Config", "CookieConfig", "DomainError", "IPNetwork",
    "IdentityProvidersConfig", "LogConfig", "MetricsConfig", "NetworkRef", "NotifierConfig",
    "OidcClientConfig", "OidcConfig", "PasswordHashConfig",
    "PasswordPolicyConfig", "PortalConfig", "PostgresConfig", "QueryCondition",
    "RegulationConfig", "RuleConfig", "SentinelConfig", "ServerConfig", "SessionConfig",
    "SmtpConfig", "StorageConfig", "TelemetryConfig", "TotpConfig", "UsersConfig",
    "WebAuthnConfig",
    "load_config", "normalise_domain", "parse_config", "parse_network", "read_toml",
]  # fmt: skip


def parse_config(text: str, data: dict[str, t.Any], path: Path) -> Config:
    """Validate parsed TOML ``data`` (from ``text`` at ``path``) into a Config.

    Raises:
        ConfigError: with every problem found.
    """
    r = Reader(path, text)
    r.table(data, "", KEYS[""])
    base = path.parent
    server = sections.server(r, data)
    session = sections.session(r, data, base)
    config = Config(
        path=path,
        server=server,
        users=sections.users(r, data, base),
        storage=sections.storage(r, data, base),
        session=session,
        totp=sections.totp(r, data),
        regulation=sections.regulation(r, data),
        notifier=sections.notifier(r, data, base),
        password_policy=sections.password_policy(r, data),
        log=sections.log(r, data, base),
        access_control=access.access_control(r, data),
        portal=sections.portal(r, data, base),
        telemetry=sections.telemetry(r, data, server),
        webauthn=sections.webauthn(r, data, session.cookies),
        identity_providers=oidc.identity_providers(r, data, base),
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
