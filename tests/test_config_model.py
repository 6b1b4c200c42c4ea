"""``server.core.config.KEYS`` (the keys the loader accepts) and the dataclasses it fills agree:
every field is a key of its table and every key is a field, except the differences listed here
with their reason (issue 14 §3). A new setting added to one side only fails here.

KEYS stays a written table rather than one derived from the fields because its order is
visible: ``known keys: …`` hints list it, and authctl.toml(5) documents the tables in it.
"""

from __future__ import annotations

import dataclasses

import pytest

from server.core import config
from server.core.config import KEYS

#: The dataclass that each table of KEYS fills.
MODEL: dict[str, type] = {
    "": config.Config,
    "server": config.ServerConfig,
    "users": config.UsersConfig,
    "users.password_hash": config.PasswordHashConfig,
    "storage": config.StorageConfig,
    "storage.postgres": config.PostgresConfig,
    "session": config.SessionConfig,
    "session.redis_sentinel": config.SentinelConfig,
    "session.cookies[]": config.CookieConfig,
    "totp": config.TotpConfig,
    "regulation": config.RegulationConfig,
    "notifier": config.NotifierConfig,
    "notifier.smtp": config.SmtpConfig,
    "password_policy": config.PasswordPolicyConfig,
    "log": config.LogConfig,
    "access_control": config.AccessControlConfig,
    "access_control.rules[]": config.RuleConfig,
    "access_control.rules[].query[][]": config.QueryCondition,
    "portal": config.PortalConfig,
    "telemetry": config.TelemetryConfig,
    "telemetry.metrics": config.MetricsConfig,
    "webauthn": config.WebAuthnConfig,
    "identity_providers": config.IdentityProvidersConfig,
    "identity_providers.oidc": config.OidcConfig,
    "identity_providers.oidc.clients[]": config.OidcClientConfig,
}

#: Fields that are no key, by table, and why.
FIELDS_WITHOUT_KEY: dict[str, dict[str, str]] = {
    "": {"path": "where the file was read from, not a setting in it"},
    "server": {
        "host": "parsed from address",
        "port": "parsed from address",
        "unix_socket": "parsed from address (unix:/path)",
    },
    "access_control.rules[]": {
        "index": "the rule's position in the file, for messages and `rules check`",
        "line": "the rule's line in the file, for messages",
    },
    "access_control.rules[].query[][]": {
        "pattern": "value compiled with RE2 for the pattern operators",
    },
    "portal": {
        "logo_type": "the logo's media type, found from its content at load",
        "logo": "the logo file's content, read and checked at load",
        "custom_css": "the custom CSS file's content, read and checked at load",
    },
    "telemetry.metrics": {
        "host": "parsed from address",
        "port": "parsed from address",
    },
    "identity_providers.oidc": {
        "issuer_key_pem": "the issuer key file's content, read and checked at load",
    },
}

#: Keys that are no field, by table, and why (none today).
KEYS_WITHOUT_FIELD: dict[str, dict[str, str]] = {}


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_every_table_has_its_dataclass() -> None:
    """No table of KEYS is left out of the comparison, nor any ``…Config`` of the model.

    (``Config`` is the root; ``NetworkRef`` is a resolved value, not a table.)
    """
    assert set(MODEL) == set(KEYS)
    tables = {
        value
        for name, value in vars(config.model).items()
        if name.endswith("Config") and dataclasses.is_dataclass(value)
    }
    assert tables | {config.QueryCondition} == set(MODEL.values())


@pytest.mark.parametrize("table", list(KEYS), ids=lambda t: t or "root")
def test_keys_and_fields_agree(table: str) -> None:
    """The keys of ``table`` are its dataclass's fields, but the listed differences."""
    fields = _fields(MODEL[table])
    keys = set(KEYS[table])
    assert fields - keys == set(FIELDS_WITHOUT_KEY.get(table, {}))
    assert keys - fields == set(KEYS_WITHOUT_FIELD.get(table, {}))
    assert len(keys) == len(KEYS[table]), "a key listed twice"


def test_the_differences_are_still_differences() -> None:
    """Every listed exception names a real field that really has no key (no stale entries)."""
    for table, names in FIELDS_WITHOUT_KEY.items():
        assert set(names) <= _fields(MODEL[table])
        assert not set(names) & set(KEYS[table])
