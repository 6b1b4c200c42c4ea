"""``authctl import authelia``: Authelia's configuration, users and second factors, converted.

Pure parts, file I/O at the edges (``authctl/cmd_import.py`` reads and writes):

- :mod:`.yamltext` reads YAML 1.2 in safe mode;
- :mod:`.config` (+ :mod:`.access`) turns ``configuration.yml`` into ``authctl.toml`` data,
  the secrets to write as files and a :class:`~.report.Report` of every key;
- :mod:`.users` turns ``users_database.yml`` into ``users.toml``;
- :mod:`.exports` checks the TOTP and WebAuthn export files.
"""

from __future__ import annotations

import typing as t

import tomli_w

from server.core.authelia_import.config import Conversion
from server.core.authelia_import.config import convert_config
from server.core.authelia_import.exports import TotpImport
from server.core.authelia_import.exports import WebauthnImport
from server.core.authelia_import.exports import parse_totp_export
from server.core.authelia_import.exports import parse_webauthn_export
from server.core.authelia_import.report import Report
from server.core.authelia_import.tomltext import tidy_toml
from server.core.authelia_import.users import convert_users
from server.core.authelia_import.users import render_users
from server.core.authelia_import.yamltext import AutheliaInputError
from server.core.authelia_import.yamltext import load_yaml
from server.core.authelia_import.yamltext import read_yaml

__all__ = [
    "AutheliaInputError", "Conversion", "Report", "TotpImport", "WebauthnImport",
    "convert_config", "convert_users", "load_yaml", "parse_totp_export",
    "parse_webauthn_export", "read_yaml", "render_config", "render_users",
]  # fmt: skip

CONFIG_HEADER = """\
# authctl configuration, written by `authctl import authelia` from {source}.
# Keys left at authctl's defaults are not written; `man authctl.toml` lists them all.
# Check it with `authctl rules check`. Secrets are files under secrets/, never in here.

"""


def render_config(config: dict[str, t.Any], source: str) -> str:
    """The text of ``authctl.toml`` for ``config`` (tomli_w, after a comment header)."""
    return CONFIG_HEADER.format(source=source) + tidy_toml(tomli_w.dumps(config))
