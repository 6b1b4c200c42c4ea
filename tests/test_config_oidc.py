"""``[identity_providers.oidc]`` (SPEC §7.3): each bad value is refused at load, naming the
field, what is wrong and the fix; the issuer key is read and checked at load."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa

from server.core.config import OidcClientConfig
from server.core.config import OidcConfig
from server.core.config import load_config
from server.core.config.oidc import redirect_uri_problem
from server.core.errors import ConfigError
from server.core.errors import Problem

WriteConfig = Callable[[str], Path]
KEY = Path(__file__).parent / "data" / "oidc-rs256.pem"
P = "identity_providers.oidc."
HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI"

MINIMAL = """\
[[session.cookies]]
domain = "example.com"
portal_url = "https://auth.example.com"

[access_control]
default_policy = "one_factor"
"""
OIDC = MINIMAL + '[identity_providers.oidc]\nenable = true\nissuer_private_key_file = "k.pem"\n'
CLIENT = f"""
[[identity_providers.oidc.clients]]
client_id = "app"
client_secret = "{HASH}"
redirect_uris = ["https://app.example.com/cb"]
"""
PUBLIC = """
[[identity_providers.oidc.clients]]
client_id = "cli"
public = true
redirect_uris = ["http://127.0.0.1:8400/cb"]
"""


def _write(write_config: WriteConfig, text: str, key: bytes | None = None) -> Path:
    path = write_config(text)
    pem = KEY.read_bytes() if key is None else key
    (path.parent / "k.pem").write_bytes(pem)
    (path.parent / "k.pem").chmod(0o600)
    return path


def _problems(write_config: WriteConfig, text: str, key: bytes | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_config(_write(write_config, text, key))
    return info.value.problems


def test_defaults_and_a_minimal_client(write_config: WriteConfig) -> None:
    """SPEC §7.3's defaults; a confidential client gets client_secret_basic, a public one
    none; the name defaults to the id."""
    assert load_config(write_config(MINIMAL)).identity_providers.oidc == OidcConfig()
    config = load_config(_write(write_config, OIDC + CLIENT + PUBLIC))
    oidc = config.identity_providers.oidc
    assert oidc.enable
    assert oidc.issuer_key_pem == KEY.read_bytes()
    assert (oidc.access_token_lifespan, oidc.authorize_code_lifespan) == (3600, 60)
    assert (oidc.id_token_lifespan, oidc.refresh_token_lifespan) == (3600, 5400)
    app, cli = oidc.clients
    assert app == OidcClientConfig(
        client_id="app",
        client_name="app",
        client_secret=HASH,
        redirect_uris=("https://app.example.com/cb",),
    )
    assert (cli.public, cli.token_endpoint_auth_method, cli.client_secret) == (True, "none", "")
    assert oidc.client("cli") is cli
    assert oidc.client("nope") is None
    assert HASH not in repr(app)


def test_disabled_provider_reads_no_key(write_config: WriteConfig) -> None:
    """With enable = false the key file is neither needed nor read."""
    text = MINIMAL + '[identity_providers.oidc]\nissuer_private_key_file = "missing.pem"\n'
    assert load_config(write_config(text)).identity_providers.oidc.issuer_key_pem == b""


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, password: bytes = b"") -> bytes:
    crypt = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, crypt)


@pytest.mark.parametrize(
    ("key", "words"),
    [
        (b"not a key", "not a PEM private key"),
        (_pem(ec.generate_private_key(ec.SECP256R1())), "not an RSA key"),
        (_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "1024-bit"),  # noqa: S505
        (
            _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048), b"pw"),
            "passphrase",
        ),
        (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            "not a PEM private key",
        ),
        (b"x" * 70000, "too large"),
    ],
    ids=["garbage", "ec", "small", "encrypted", "public", "huge"],
)
def test_bad_issuer_keys_are_refused(write_config: WriteConfig, key: bytes, words: str) -> None:
    """The key must be an unencrypted RSA private key of 2048 bits or more."""
    problems = _problems(write_config, OIDC, key)
    field = P + "issuer_private_key_file"
    assert any(p.key == field and words in p.message and "keygen" in p.hint for p in problems)


def test_missing_or_odd_key_file(write_config: WriteConfig) -> None:
    """A missing key names the command that makes one; a folder is not a key."""
    text = MINIMAL + '[identity_providers.oidc]\nenable = true\nissuer_private_key_file = "n.pem"\n'
    problems = _problems(write_config, text)
    assert any("does not exist" in p.message and "oidc keygen" in p.hint for p in problems)
    path = write_config(text.replace("n.pem", "d"))
    (path.parent / "d").mkdir()
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(path)


def test_readable_key_is_warned(
    write_config: WriteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """A key others can read still loads, and the log says to chmod 600 it."""
    path = _write(write_config, OIDC)
    (path.parent / "k.pem").chmod(0o644)
    with caplog.at_level(logging.WARNING, "authctl.config"):
        load_config(path)
    assert any("chmod 600" in r.getMessage() for r in caplog.records)


def _client(**fields: str) -> str:
    body = {
        "client_id": '"app"',
        "client_secret": f'"{HASH}"',
        "redirect_uris": '["https://app.example.com/cb"]',
    }
    body.update(fields)
    lines = [f"{k} = {v}" for k, v in body.items() if v]
    return "\n[[identity_providers.oidc.clients]]\n" + "\n".join(lines) + "\n"


F = P + "clients[0]."


@pytest.mark.parametrize(
    ("body", "field", "words", "fix"),
    [
        (_client(client_secret='"s3cret-plain"'), F + "client_secret", "not an argon2id", "hash"),
        (
            _client(client_secret='"$argon2id$v=19$m=1,t=1,p=1$x$y"'),
            F + "client_secret",
            "",
            "hash",
        ),
        (_client(client_secret=""), F + "client_secret", "required", "hash"),
        (_client(client_id='"a b"'), F + "client_id", "not a usable", "letters"),
        (_client(client_id=""), F + "client_id", "required", "client_id"),
        (
            _client(redirect_uris='["http://app.example.com/cb"]'),
            F + "redirect_uris[0]",
            "http",
            "https://",
        ),
        (
            _client(redirect_uris='["https://app.example.com/cb#x"]'),
            F + "redirect_uris[0]",
            "fragment",
            "",
        ),
        (
            _client(redirect_uris='["https://u@app.example.com/cb"]'),
            F + "redirect_uris[0]",
            "user",
            "",
        ),
        (
            _client(redirect_uris='["http://127.0.0.1/cb"]'),
            F + "redirect_uris[0]",
            "only public",
            "",
        ),
        (_client(redirect_uris="[]"), F + "redirect_uris", "at least one", ""),
        (_client(redirect_uris=""), F + "redirect_uris", "required", ""),
        (
            _client(scopes='["openid", "admin"]'),
            F + "scopes[0]".replace("0", "1"),
            "not a scope",
            "profile",
        ),
        (_client(scopes='["profile"]'), F + "scopes", "openid", "openid"),
        (_client(authorization_policy='"bypass"'), F + "authorization_policy", "not one of", ""),
        (_client(consent_mode='"always"'), F + "consent_mode", "not one of", ""),
        (
            _client(token_endpoint_auth_method='"none"'),
            F + "token_endpoint_auth_method",
            "public",
            "",
        ),
        (
            _client(token_endpoint_auth_method='"private_key_jwt"'),
            F + "token_endpoint_auth_method",
            "not one of",
            "",
        ),
        (
            _client(
                public="true", client_secret="", token_endpoint_auth_method='"client_secret_basic"'
            ),
            F + "token_endpoint_auth_method",
            "needs a secret",
            "none",
        ),
        (
            _client(public="true", token_endpoint_auth_method='"none"'),
            F + "client_secret",
            "public client has no secret",
            "",
        ),
        (
            _client(
                public="true",
                client_secret="",
                token_endpoint_auth_method='"none"',
                redirect_uris='["http://app.example.com/cb"]',
            ),
            F + "redirect_uris[0]",
            "not loopback",
            "127.0.0.1",
        ),
        (
            _client(pre_configured_consent_duration='"1s"'),
            F + "pre_configured_consent_duration",
            "at least",
            "",
        ),
        (_client(client_name='"a\\nb"'), F + "client_name", "one line", ""),
        (_client(secret='"x"'), F + "secret", "unknown", ""),
        (_client() + _client(), P + "clients[1].client_id", "another client", ""),
        (
            '\n[identity_providers.oidc]\nauthorize_code_lifespan = "1h"\n',
            P + "authorize_code_lifespan",
            "10 minutes",
            "1m",
        ),
        (
            '\n[identity_providers.oidc]\naccess_token_lifespan = "2y"\n',
            P + "access_token_lifespan",
            "a year",
            "",
        ),
        (
            '\n[identity_providers.oidc]\nenforce_pkce = "plain"\n',
            P + "enforce_pkce",
            "not one of",
            "",
        ),
        ("\n[identity_providers.oidc]\nclients = 3\n", P + "clients", "list of tables", ""),
        ("\n[identity_providers]\nsaml = 1\n", "identity_providers.saml", "unknown", ""),
    ],
)
def test_bad_client_settings_are_refused(
    write_config: WriteConfig, body: str, field: str, words: str, fix: str
) -> None:
    """Each unsafe or malformed setting names the field, what is wrong and the fix."""
    problems = _problems(write_config, MINIMAL + body)
    assert any(p.key == field and words in p.message and fix in p.hint for p in problems), problems


@pytest.mark.parametrize(
    ("uri", "public", "ok"),
    [
        ("https://app.example.com/cb?x=1", False, True),
        ("http://127.0.0.1:8400/cb", True, True),
        ("http://[::1]:8400/cb", True, True),
        ("http://localhost/cb", True, True),
        ("http://localhost/cb", False, False),
        ("http://127.0.0.1\\@evil/cb", True, False),
        ("https://192.0.2.1/cb", False, False),
        ("ftp://app.example.com/", False, False),
        ("https://app.example.com/" + "a" * 2000, False, False),
    ],
)
def test_redirect_uri_rules(uri: str, public: bool, ok: bool) -> None:
    """https only, loopback http for public clients (RFC 8252 §7.3), nothing ambiguous."""
    assert (redirect_uri_problem(uri, public) is None) is ok
