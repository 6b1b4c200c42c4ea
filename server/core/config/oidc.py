"""``[identity_providers.oidc]`` and its ``[[clients]]`` (SPEC §7.3): lifespans, PKCE, the
issuer key (read and checked here, at load) and each client, refused with the fix when a
setting would make the provider unsafe (a plain secret, an http redirect URI, an unknown
scope, a public client with a secret)."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import stat
import typing as t
from pathlib import Path
from urllib.parse import urlsplit

from server.core.config.model import KEYS
from server.core.config.model import OIDC_AUTH_METHODS
from server.core.config.model import OIDC_CONSENT_MODES
from server.core.config.model import OIDC_ENFORCE_PKCE
from server.core.config.model import OIDC_POLICIES
from server.core.config.model import OIDC_SCOPES
from server.core.config.model import IdentityProvidersConfig
from server.core.config.model import OidcClientConfig
from server.core.config.model import OidcConfig
from server.core.config.values import Reader
from server.core.config.values import https_url
from server.core.config.values import resolve
from server.core.oidc.keys import key_problem

log = logging.getLogger("authctl.config")

KEY = "identity_providers.oidc"
CLIENT_KEY = "identity_providers.oidc.clients[]"
#: RFC 6749 §A.1 allows any visible ASCII; authctl keeps ids to what is safe in URLs and logs.
CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,99}")
#: The longest lifespan of each token kind (a day for codes is already absurd).
_MAX_CODE_LIFESPAN = 10 * 60
_MAX_LIFESPAN = 366 * 86400
#: The hosts of loopback redirect URIs a public (native) client may use over http (RFC 8252 §7.3).
_LOOPBACK = ("localhost",)
#: The largest key file read.
_KEY_MAX_BYTES = 64 * 1024
_HASH_HINT = (
    "write the argon2id hash that `authctl oidc client new ID --redirect-uri URI` prints "
    "(or `authctl hash-password`), never the secret itself"
)


def identity_providers(r: Reader, data: dict[str, t.Any], base: Path) -> IdentityProvidersConfig:
    key = "identity_providers"
    tbl = r.table(data.get(key, {}), key, KEYS[key])
    if "oidc" not in tbl:
        return IdentityProvidersConfig()
    return IdentityProvidersConfig(oidc=oidc(r, tbl["oidc"], base))


def oidc(r: Reader, raw: object, base: Path) -> OidcConfig:
    tbl = r.table(raw, KEY, KEYS[KEY])
    d = OidcConfig()
    enable = r.boolean(tbl, KEY, "enable", d.enable)
    key_text = r.string(
        tbl, KEY, "issuer_private_key_file", "secrets/oidc-rs256.pem",
        hint='write issuer_private_key_file = "secrets/oidc-rs256.pem"',
    )  # fmt: skip
    key_file = resolve(base, key_text)
    code_life = r.duration(tbl, KEY, "authorize_code_lifespan", d.authorize_code_lifespan, 1)
    if code_life > _MAX_CODE_LIFESPAN:
        r.error(
            f"{KEY}.authorize_code_lifespan",
            "must be at most 10 minutes (RFC 6749 §4.1.2: codes are short-lived)",
            'write authorize_code_lifespan = "1m"',
        )
        code_life = d.authorize_code_lifespan
    lifespans = {
        name: _lifespan(r, tbl, name, getattr(d, name))
        for name in ("access_token_lifespan", "id_token_lifespan", "refresh_token_lifespan")
    }
    clients = _clients(r, tbl)
    pem = _read_key(r, key_file) if enable else b""
    return OidcConfig(
        enable=enable,
        issuer_private_key_file=key_file,
        authorize_code_lifespan=code_life,
        enforce_pkce=r.option(tbl, KEY, "enforce_pkce", OIDC_ENFORCE_PKCE, d.enforce_pkce),
        clients=clients,
        issuer_key_pem=pem,
        **lifespans,
    )


def _lifespan(r: Reader, tbl: dict[str, t.Any], name: str, default: int) -> int:
    value = r.duration(tbl, KEY, name, default, minimum=60)
    if value > _MAX_LIFESPAN:
        r.error(f"{KEY}.{name}", "must be at most a year", f'write {name} = "1h"')
        return default
    return value


def _read_key(r: Reader, path: Path) -> bytes:
    """The issuer key's PEM, checked (RSA, private, >= 2048 bits); b"" and a problem if not.
    A key others may read is a warning in the log (it still works; fix the mode)."""
    field = f"{KEY}.issuer_private_key_file"
    shown = repr(str(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        r.error(field, f"{shown} does not exist", "create it with `authctl oidc keygen`")
        return b""
    except OSError as exc:
        r.error(field, f"{shown} cannot be opened: {exc.strerror}", "make it readable by authctl")
        return b""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            r.error(field, f"{shown} is not a regular file", "name the PEM key file")
            return b""
        pem = os.read(fd, _KEY_MAX_BYTES + 1)
    finally:
        os.close(fd)
    problem = key_problem(pem) if len(pem) <= _KEY_MAX_BYTES else "is too large for a key"
    if problem is not None:
        r.error(field, f"{shown} {problem}", "create a new key with `authctl oidc keygen --force`")
        return b""
    if info.st_mode & 0o077:
        log.warning(
            "the OIDC issuer key %s can be read by others (mode %04o); run chmod 600 on it",
            path,
            stat.S_IMODE(info.st_mode),
        )
    return pem


def _clients(r: Reader, tbl: dict[str, t.Any]) -> tuple[OidcClientConfig, ...]:
    raw = tbl.get("clients", [])
    if not isinstance(raw, list):
        r.error(
            f"{KEY}.clients",
            "expected a list of tables",
            "write each client under its own [[identity_providers.oidc.clients]] header",
        )
        return ()
    out: list[OidcClientConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        client = _client(r, entry, f"{KEY}.clients[{i}]")
        if client is None:
            continue
        if client.client_id in seen:
            r.error(
                f"{KEY}.clients[{i}].client_id",
                f"{client.client_id!r} is used by another client",
                "give each client its own client_id",
            )
            continue
        seen.add(client.client_id)
        out.append(client)
    return tuple(out)


def _client(r: Reader, raw: object, key: str) -> OidcClientConfig | None:
    tbl = r.table(raw, key, KEYS[CLIENT_KEY])
    if not isinstance(raw, dict):
        return None
    problems = len(r.problems)
    d = OidcClientConfig(client_id="", redirect_uris=())
    client_id = r.value(tbl, key, "client_id", str, hint='write client_id = "grafana"')
    if client_id is not None and not CLIENT_ID.fullmatch(client_id):
        r.error(
            f"{key}.client_id",
            f"{client_id!r} is not a usable client id",
            "use 1 to 100 letters, digits, '.', '_', '~' or '-', starting with a letter or digit",
        )
    name = r.value(tbl, key, "client_name", str, "", hint='write client_name = "Grafana"')
    if name and (len(name) > 100 or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name)):
        r.error(f"{key}.client_name", "must be at most 100 characters on one line", "shorten it")
    public = r.boolean(tbl, key, "public", d.public)
    method_default = "none" if public else d.token_endpoint_auth_method
    method = r.option(tbl, key, "token_endpoint_auth_method", OIDC_AUTH_METHODS, method_default)
    if public and method != "none":
        r.error(
            f"{key}.token_endpoint_auth_method",
            f"{method!r} needs a secret, and a public client has none",
            'write token_endpoint_auth_method = "none" (or public = false with a client_secret)',
        )
    elif not public and method == "none":
        r.error(
            f"{key}.token_endpoint_auth_method",
            '"none" is only for public clients (no secret)',
            'write public = true, or use "client_secret_basic" with a client_secret',
        )
    secret = _secret(r, tbl, key, public)
    uris = _redirect_uris(r, tbl, key, public)
    scopes = _scopes(r, tbl, key, d.scopes)
    client = OidcClientConfig(
        client_id=client_id or "",
        redirect_uris=uris,
        client_name=name or client_id or "",
        client_secret=secret,
        public=public,
        scopes=scopes,
        authorization_policy=r.option(
            tbl, key, "authorization_policy", OIDC_POLICIES, d.authorization_policy
        ),
        consent_mode=r.option(tbl, key, "consent_mode", OIDC_CONSENT_MODES, d.consent_mode),
        pre_configured_consent_duration=r.duration(
            tbl, key, "pre_configured_consent_duration", d.pre_configured_consent_duration, 60
        ),
        token_endpoint_auth_method=method,
    )
    return client if len(r.problems) == problems else None


def _secret(r: Reader, tbl: dict[str, t.Any], key: str, public: bool) -> str:
    """The client secret's argon2id hash ("" for a public client)."""
    from server.core.passwords import check_hash  # here: passwords imports config
    from server.core.passwords import is_native

    field = f"{key}.client_secret"
    if public:
        if "client_secret" in tbl:
            r.error(
                field, "a public client has no secret", "remove client_secret, or public = false"
            )
        return ""
    secret = r.value(tbl, key, "client_secret", str, hint=_HASH_HINT)
    if secret is None:
        return ""
    if not secret.startswith("$argon2id$"):
        r.error(field, "is not an argon2id hash (a plain secret must never be stored)", _HASH_HINT)
        return ""
    why = check_hash(secret)
    if why is not None or not is_native(secret):
        r.error(field, f"the hash {why or 'is not in the $argon2id$v=19$ form'}", _HASH_HINT)
        return ""
    return secret


def _redirect_uris(r: Reader, tbl: dict[str, t.Any], key: str, public: bool) -> tuple[str, ...]:
    """The redirect URIs as written (matched exactly): https, or loopback http for public
    (native) clients (RFC 8252 §7.3); no fragment (RFC 6749 §3.1.2)."""
    field = f"{key}.redirect_uris"
    if "redirect_uris" not in tbl:
        r.error(field, "is required", 'write redirect_uris = ["https://app.example.com/callback"]')
        return ()
    uris = r.string_list(tbl, key, "redirect_uris")
    if not uris and isinstance(tbl["redirect_uris"], list):
        r.error(field, "needs at least one URI", 'write ["https://app.example.com/callback"]')
    for i, uri in enumerate(uris):
        why = redirect_uri_problem(uri, public)
        if why is not None:
            r.error(f"{field}[{i}]", f"{uri!r} {why}", _uri_fix(public))
    return tuple(uris)


def _uri_fix(public: bool) -> str:
    fix = 'write the exact callback URL, e.g. "https://app.example.com/oauth2/callback"'
    if public:
        fix += ' (a native app may use "http://127.0.0.1:PORT/callback")'
    return fix


def redirect_uri_problem(uri: str, public: bool) -> str | None:
    """Why ``uri`` cannot be a registered redirect URI (completes a sentence), or None."""
    if len(uri) > 2000:
        return "is longer than 2000 characters"
    if "#" in uri:
        return "has a fragment (#…), which RFC 6749 §3.1.2 forbids"
    parts = urlsplit(uri)
    if parts.scheme == "http" and public and _is_loopback(parts.hostname or ""):
        if any(ch.isspace() or ord(ch) < 0x20 or ch == "\\" for ch in uri) or "@" in parts.netloc:
            return "has white space, a backslash or user information"
        return None
    if parts.scheme == "http":
        return (
            "is plain http; only public clients may use http, and only to a loopback address"
            if not public
            else "is plain http to a host that is not loopback"
        )
    try:
        https_url(uri)
    except ValueError as exc:
        return str(exc)
    return None


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _scopes(
    r: Reader, tbl: dict[str, t.Any], key: str, default: tuple[str, ...]
) -> tuple[str, ...]:
    if "scopes" not in tbl:
        return default
    scopes = r.string_list(tbl, key, "scopes", allow_string=False)
    for i, scope in enumerate(scopes):
        if scope not in OIDC_SCOPES:
            r.error(
                f"{key}.scopes[{i}]",
                f"{scope!r} is not a scope authctl knows",
                f"use some of {', '.join(OIDC_SCOPES)}",
            )
    if scopes and "openid" not in scopes:
        r.error(f"{key}.scopes", "must include 'openid'", 'add "openid" to the list')
    return tuple(dict.fromkeys(scopes))
