"""``authctl cert generate``: a TLS certificate for the portal and the protected sites.

authctl only serves https targets, so a test setup or a home lab needs a certificate before the
proxy can start. This writes one (self-signed, or signed by a small CA with ``--ca`` so that
only ``ca.pem`` has to be trusted), every file at mode 0600 and never over existing files
unless ``--force``. The work is in ``server.core.certs``; this module only imports click at
the top so ``authctl --help`` stays cheap.
"""

from __future__ import annotations

from pathlib import Path

import click

from authctl.cli import State
from authctl.cli import pass_state


@click.group("cert")
def cert() -> None:
    """Make TLS certificates for the portal and the protected sites."""


@cert.command("generate")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    required=True,
    metavar="NAME",
    help="A DNS name (*.example.com allowed) or IP the certificate covers; repeat for more. "
    "The first one is also the subject CN.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for cert.pem and key.pem (and ca.pem, ca-key.pem with --ca).  "
    "[default: certs/ beside the config file, where init and proxy-snippet look; "
    "./certs when there is no config]",
)
@click.option(
    "--days",
    type=click.IntRange(1, 3650),
    default=365,
    show_default=True,
    help="Validity in days.",
)
@click.option(
    "--key-type",
    type=click.Choice(["rsa", "ecdsa"]),
    default="rsa",
    show_default=True,
    help="RSA (see --rsa-bits) or ECDSA P-256.",
)
@click.option(
    "--rsa-bits",
    type=click.Choice(["2048", "3072"]),
    default="2048",
    show_default=True,
    help="RSA key size (ignored for ecdsa).",
)
@click.option(
    "--ca",
    is_flag=True,
    help="Also make a small CA (ca.pem, ca-key.pem) and sign the certificate with it.",
)
@click.option("--force", is_flag=True, help="Replace existing files.")
@pass_state
def generate(
    state: State,
    hosts: tuple[str, ...],
    out_dir: Path | None,
    days: int,
    key_type: str,
    rsa_bits: str,
    ca: bool,
    force: bool,
) -> None:
    """Write DIR/cert.pem and DIR/key.pem for the given hosts.

    \b
    Files are written with mode 0600 and never over existing files unless --force
    (exit 3). Prints each file written and the SHA-256 fingerprint of each certificate.
    Example: authctl cert generate --host auth.example.com --host '*.example.com' --ca
    """
    from authctl.cli import DataError
    from authctl.errors import bad_parameter
    from server.core import certs

    with bad_parameter("--host", certs.CertificateError):
        for host in hosts:
            certs.normalise_host(host)
    if out_dir is None:
        out_dir = default_folder(state.config_path)
    bundle = certs.generate(hosts, days=days, key_type=key_type, rsa_bits=int(rsa_bits), ca=ca)
    files = bundle.files()
    try:
        paths = certs.write_files(out_dir, files, force=force)
    except OSError as exc:
        raise DataError(f"cannot write {exc.filename or out_dir}: {exc.strerror}") from None
    for f, path in zip(files, paths, strict=True):
        click.echo(f"wrote {path}  ({f.what}, mode {f.mode:04o})")
        if f.certificate is not None:
            click.echo(f"  covers   {certs.describe(f.certificate)}")
            click.echo(f"  SHA-256  {certs.fingerprint(f.certificate)}")
    if ca:
        click.echo(f"Trust {paths[2]} in your browser or curl (--cacert) to skip warnings.")


def default_folder(config_path: Path) -> Path:
    """``certs/`` beside the config file (where ``init`` writes and ``proxy-snippet`` reads);
    ``./certs`` when there is no config file (SPEC §4)."""
    from server.core.certs import default_certificate_paths

    cert_path, _key = default_certificate_paths(
        config_path.parent if config_path.is_file() else Path()
    )
    return cert_path.parent
