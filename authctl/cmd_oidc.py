"""``authctl oidc``: the OpenID Provider's issuer key and clients (SPEC §7.3).

``keygen`` writes the RS256 key named by ``identity_providers.oidc.issuer_private_key_file``
(read from the file as written, so it works while the provider is enabled and the key is
still missing); ``client new`` prints the TOML block to paste, with the secret's argon2id
hash, and the plain secret once; ``client list`` shows the configured clients.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path

import click

from authctl.cli import DataError
from authctl.cli import State
from authctl.cli import pass_state

#: Where the key goes when the config does not say.
DEFAULT_KEY = "secrets/oidc-rs256.pem"
#: argon2id parameters for client secrets: OWASP's minimum (19 MiB, t=2, p=1). A secret is
#: 256 random bits, so hashing only has to make a leaked config useless, not slow a guesser;
#: cheap enough that the token endpoint stays fast (SPEC §7.7).
SECRET_HASH = {"memory_kib": 19456, "iterations": 2, "parallelism": 1}


@click.group("oidc")
def oidc() -> None:
    """The OpenID Connect provider: its signing key and its clients."""


def key_path(config_path: Path) -> Path:
    """``issuer_private_key_file`` as written in the config (default beside it)."""
    folder = config_path.expanduser().absolute().parent
    name = DEFAULT_KEY
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DataError(f"{config_path}: cannot be read ({exc}); fix it first") from None
    section = data.get("identity_providers", {})
    section = section.get("oidc", {}) if isinstance(section, dict) else {}
    value = section.get("issuer_private_key_file") if isinstance(section, dict) else None
    if isinstance(value, str) and value.strip():
        name = value
    return (folder / Path(name).expanduser()).resolve()


def write_key(path: Path, *, force: bool) -> None:
    """Write a new issuer key at ``path`` (0600, its folder 0700), atomically.

    Raises:
        DataError: the file exists and ``force`` is not set, or it cannot be written.
    """
    from server.core.oidc.keys import generate_pem

    if (path.exists() or path.is_symlink()) and not force:
        raise DataError(
            f"{path} exists; pass --force to replace it (tokens it signed stop working)"
        )
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, generate_pem())
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot be written ({exc.strerror or exc})") from None


@oidc.command("keygen")
@click.option(
    "--force", is_flag=True, help="Replace an existing key (signed ID tokens stop verifying)."
)
@pass_state
def keygen(state: State, force: bool) -> None:
    """Write the RS256 issuer key (identity_providers.oidc.issuer_private_key_file)."""
    path = key_path(state.config_path)
    write_key(path, force=force)
    click.echo(f"wrote {path} (RSA 3072, mode 0600); every host of this deployment needs it")


@oidc.group("client")
def client() -> None:
    """Register and list OpenID Connect clients."""


@client.command("new")
@click.argument("client_id")
@click.option(
    "--redirect-uri", "redirect_uris", multiple=True, required=True, metavar="URI",
    help="A callback URL of the client (repeatable); https, or loopback http with --public.",
)  # fmt: skip
@click.option("--public", is_flag=True, help="A client without a secret (native or browser app).")
@click.option(
    "--scope", "scopes", multiple=True, metavar="S",
    help="A scope the client may ask for (repeatable; default openid profile email groups).",
)  # fmt: skip
@click.option(
    "--policy", type=click.Choice(["one_factor", "two_factor"]), default="two_factor",
    show_default=True, help="The sign-in the client's users need.",
)  # fmt: skip
@click.option("--name", "client_name", default=None, help="The name the consent page shows.")
@click.option("--json", "as_json", is_flag=True, help="Print {client_id, client_secret, toml}.")
def client_new(
    client_id: str,
    redirect_uris: tuple[str, ...],
    public: bool,
    scopes: tuple[str, ...],
    policy: str,
    client_name: str | None,
    as_json: bool,
) -> None:
    """Print the TOML block for a new client, and its secret once.

    Paste the block into authctl.toml; the secret goes into the client's own settings and is
    not kept anywhere by authctl (the block holds its argon2id hash).
    """
    from server.core.config import OIDC_SCOPES
    from server.core.config import PasswordHashConfig
    from server.core.config.oidc import CLIENT_ID
    from server.core.config.oidc import redirect_uri_problem
    from server.core.passwords import PasswordHasher

    if not CLIENT_ID.fullmatch(client_id):
        raise click.BadParameter(
            "use 1 to 100 letters, digits, '.', '_', '~' or '-'", param_hint="CLIENT_ID"
        )
    for uri in redirect_uris:
        why = redirect_uri_problem(uri, public)
        if why is not None:
            raise click.BadParameter(f"{uri!r} {why}", param_hint="--redirect-uri")
    chosen = list(dict.fromkeys(scopes or ("openid", "profile", "email", "groups")))
    for scope in chosen:
        if scope not in OIDC_SCOPES:
            raise click.BadParameter(
                f"{scope!r} is not one of {', '.join(OIDC_SCOPES)}", param_hint="--scope"
            )
    if "openid" not in chosen:
        chosen.insert(0, "openid")
    secret = "" if public else secrets.token_urlsafe(32)
    lines = [
        "[[identity_providers.oidc.clients]]",
        f"client_id = {_toml(client_id)}",
        f"client_name = {_toml(client_name or client_id)}",
    ]
    if public:
        lines.append("public = true")
    else:
        digest = PasswordHasher(PasswordHashConfig(**SECRET_HASH)).hash(secret)
        lines.append(f"client_secret = {_toml(digest)}")
    lines += [
        f"redirect_uris = [{', '.join(_toml(u) for u in redirect_uris)}]",
        f"scopes = [{', '.join(_toml(s) for s in chosen)}]",
        f"authorization_policy = {_toml(policy)}",
        'consent_mode = "explicit"',
        f"token_endpoint_auth_method = {_toml('none' if public else 'client_secret_basic')}",
    ]
    block = "\n".join(lines) + "\n"
    if as_json:
        from authctl.output import echo_json

        echo_json({"client_id": client_id, "client_secret": secret or None, "toml": block})
        return
    click.echo(block)
    if secret:
        click.echo(
            "# the client secret (shown once; give it to the client, authctl keeps only the hash):"
        )
        click.echo(secret)


def _toml(text: str) -> str:
    """A TOML basic string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


@client.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the clients as JSON.")
@pass_state
def client_list(state: State, as_json: bool) -> None:
    """List the configured clients (never their secrets)."""
    oidc_config = state.config().identity_providers.oidc
    rows = [
        {
            "client_id": c.client_id,
            "client_name": c.client_name,
            "public": c.public,
            "redirect_uris": list(c.redirect_uris),
            "scopes": list(c.scopes),
            "authorization_policy": c.authorization_policy,
            "consent_mode": c.consent_mode,
            "token_endpoint_auth_method": c.token_endpoint_auth_method,
        }
        for c in oidc_config.clients
    ]
    if as_json:
        from authctl.output import echo_json

        echo_json({"enabled": oidc_config.enable, "clients": rows})
        return
    from rich.markup import escape
    from rich.table import Table

    from authctl.output import console

    out = console()
    if not rows:
        out.print("No OIDC clients." + ("" if oidc_config.enable else " (the provider is off)"))
        return
    table = Table("client_id", "name", "type", "policy", "consent", "redirect URIs")
    for row in rows:
        table.add_row(
            escape(str(row["client_id"])),
            escape(str(row["client_name"])),
            "public" if row["public"] else "confidential",
            str(row["authorization_policy"]),
            str(row["consent_mode"]),
            escape("\n".join(t for t in row["redirect_uris"])),  # type: ignore[attr-defined]
        )
    out.print(table)
    if not oidc_config.enable:
        out.print("[dim]the provider is off (identity_providers.oidc.enable = false)[/dim]")
