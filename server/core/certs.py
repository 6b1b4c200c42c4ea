"""TLS certificates for the portal and the protected sites: self-signed, or signed by a small CA.

authctl refuses plain HTTP by design, so a fresh install needs a certificate before the first
request can pass (SPEC §4 ``cert generate``; ``authctl init`` writes one to ``certs/``). This
module is the pure logic behind both, on the ``cryptography`` library, so
``init`` and the tests can call it directly. Files are written with mode 0600 from the first
byte (``mkstemp`` creates them so, ``fchmod`` sets the final mode past the umask), through a
temporary file renamed into place, so a crash never leaves half a key and nobody can read one
in between.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
import typing as t
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.oid import NameOID

from server.core.config import normalise_domain
from server.core.errors import AuthError

KEY_TYPES = ("rsa", "ecdsa")
RSA_SIZES = (2048, 3072)
DEFAULT_DAYS = 365
MAX_DAYS = 3650
#: Backdating absorbs small clock differences between this machine and its clients.
BACKDATE = dt.timedelta(hours=1)

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
CA_CERT_NAME = "ca.pem"
CA_KEY_NAME = "ca-key.pem"
#: SPEC §4 writes cert.pem and key.pem with mode 0600. Certificates are public; chmod 644 one
#: that another user (a proxy's own account) must read.
CERT_MODE = 0o600
KEY_MODE = 0o600

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class CertificateError(AuthError, ValueError):
    """A certificate cannot be made or written as asked (bad host name, existing file)."""


@dataclass(frozen=True, slots=True)
class PemFile:
    """One file of a bundle: its name, PEM bytes, mode, and what it is."""

    name: str
    data: bytes
    mode: int
    what: str
    certificate: x509.Certificate | None = None


@dataclass(frozen=True, slots=True)
class Bundle:
    """A leaf certificate and its key, plus the CA that signed it when there is one."""

    cert: x509.Certificate
    key: PrivateKey
    ca_cert: x509.Certificate | None = None
    ca_key: PrivateKey | None = None

    def files(self) -> list[PemFile]:
        """The PEM files to write, leaf first."""
        out = [
            PemFile(CERT_NAME, cert_pem(self.cert), CERT_MODE, "certificate", self.cert),
            PemFile(KEY_NAME, key_pem(self.key), KEY_MODE, "private key"),
        ]
        if self.ca_cert is not None and self.ca_key is not None:
            out.append(
                PemFile(
                    CA_CERT_NAME, cert_pem(self.ca_cert), CERT_MODE, "CA certificate", self.ca_cert
                )
            )
            out.append(PemFile(CA_KEY_NAME, key_pem(self.ca_key), KEY_MODE, "CA private key"))
        return out


# --------------------------------------------------------------------------- host names


def normalise_host(text: str) -> str | ipaddress.IPv4Address | ipaddress.IPv6Address:
    """A DNS name (lowercase, IDNA-encoded; ``*.`` allowed as the whole first label) or an IP.

    Raises:
        CertificateError: the text is neither (the message says why).
    """
    raw = text.strip()
    try:
        return ipaddress.ip_address(raw.strip("[]"))
    except ValueError:
        pass
    wildcard = raw.startswith("*.")
    name = raw[2:] if wildcard else raw
    if not name or name.endswith(".") or "*" in name:
        raise CertificateError(
            f"{text!r} is not a host name (a wildcard must be the whole first label: *.example.com)"
        )
    try:
        ascii_name = normalise_domain(name)
    except ValueError:
        raise CertificateError(
            f"{text!r} is not a valid host name (letters, digits, hyphens and dots only)"
        ) from None
    labels = ascii_name.split(".")
    if wildcard and len(labels) < 2:
        raise CertificateError(f"{text!r}: a wildcard needs a domain below it (*.example.com)")
    return f"*.{ascii_name}" if wildcard else ascii_name


def subject_alternative_names(hosts: t.Sequence[str]) -> list[x509.GeneralName]:
    """The SAN entries for ``hosts``, in order, duplicates removed.

    Raises:
        CertificateError: no host was given, or one is not a host name or IP address.
    """
    if not hosts:
        raise CertificateError("at least one host is needed (--host app.example.com)")
    names: list[x509.GeneralName] = []
    for host in hosts:
        value = normalise_host(host)
        entry: x509.GeneralName = (
            x509.DNSName(value) if isinstance(value, str) else x509.IPAddress(value)
        )
        if entry not in names:
            names.append(entry)
    return names


# --------------------------------------------------------------------------- generation


def new_key(key_type: str = "rsa", rsa_bits: int = 2048) -> PrivateKey:
    """A fresh private key: RSA 2048/3072 or ECDSA P-256.

    Raises:
        CertificateError: an unknown key type or RSA size.
    """
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        if rsa_bits not in RSA_SIZES:
            raise CertificateError(f"RSA keys are {' or '.join(map(str, RSA_SIZES))} bits")
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    raise CertificateError(f"unknown key type {key_type!r} (use {' or '.join(KEY_TYPES)})")


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "authctl"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def _key_usage(key: PrivateKey, *, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        # RSA key exchange (TLS 1.2 without ECDHE) encrypts with the leaf's key
        key_encipherment=not ca and isinstance(key, rsa.RSAPrivateKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def generate(
    hosts: t.Sequence[str],
    *,
    days: int = DEFAULT_DAYS,
    key_type: str = "rsa",
    rsa_bits: int = 2048,
    ca: bool = False,
    now: dt.datetime | None = None,
) -> Bundle:
    """A server certificate for ``hosts`` (all as SANs, the first as CN), valid ``days``.

    Self-signed, or with ``ca`` signed by a new CA made for it (``ca.pem`` can then be given to
    browsers or curl as the one thing to trust). ``now`` is a seam for tests.

    Raises:
        CertificateError: a bad host, key type or number of days.
    """
    if not 1 <= days <= MAX_DAYS:
        raise CertificateError(f"--days must be between 1 and {MAX_DAYS}")
    sans = subject_alternative_names(hosts)
    first = sans[0].value
    common_name = str(first)
    start = (now or dt.datetime.now(dt.UTC)) - BACKDATE
    end = start + BACKDATE + dt.timedelta(days=days)
    key = new_key(key_type, rsa_bits)

    ca_cert: x509.Certificate | None = None
    ca_key: PrivateKey | None = None
    issuer = _name(common_name)
    signing_key: PrivateKey = key
    if ca:
        ca_key = new_key(key_type, rsa_bits)
        ca_name = _name(f"authctl local CA for {common_name}")
        ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca_key, ca=True), critical=True)
            .add_extension(ca_ski, critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        issuer = ca_name
        signing_key = ca_key

    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(key, ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca_key is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    cert = builder.sign(signing_key, hashes.SHA256())
    return Bundle(cert, key, ca_cert, ca_key)


# --------------------------------------------------------------------------- serialisation


def cert_pem(cert: x509.Certificate) -> bytes:
    """The certificate in PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    """The private key in unencrypted PKCS#8 PEM, which every proxy reads."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def fingerprint(cert: x509.Certificate) -> str:
    """The SHA-256 fingerprint as colon-separated upper-case hex (what browsers show)."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def describe(cert: x509.Certificate) -> str:
    """One line: the names the certificate covers and until when."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n.value) for n in sans]
    except x509.ExtensionNotFound:
        names = [cert.subject.rfc4514_string()]
    until = cert.not_valid_after_utc.strftime("%Y-%m-%d")
    return f"{', '.join(names)}; valid until {until}"


# --------------------------------------------------------------------------- files


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with ``mode`` through a temp file in the same folder.

    The temp file is created with ``mode`` (0600 for keys), so the secret is never readable by
    others, not even for a moment; ``os.replace`` then swaps it in whole.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        Path(tmp).replace(path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise


def write_files(folder: Path, files: t.Sequence[PemFile], *, force: bool = False) -> list[Path]:
    """Write ``files`` into ``folder`` (created 0755 if missing); return the paths written.

    Nothing is written when any target exists and ``force`` is false, so a refused run leaves
    the old certificate and key together, never a new certificate beside an old key.

    Raises:
        CertificateError: a target exists (without ``force``) or is not a regular file.
        OSError: the folder or a file cannot be written.
    """
    targets = [folder / f.name for f in files]
    for path in targets:
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise CertificateError(f"{path} is not a regular file; refusing to write over it")
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        names = ", ".join(str(p) for p in existing)
        raise CertificateError(
            f"{names} already exist{'s' if len(existing) == 1 else ''}; nothing was written "
            "(use --force to replace)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for f, path in zip(files, targets, strict=True):
        atomic_write(path, f.data, f.mode)
    return targets


def default_certificate_paths(folder: Path) -> tuple[Path, Path]:
    """Where ``authctl init`` puts the certificate and key: ``certs/`` beside the config."""
    certs = folder / "certs"
    return certs / CERT_NAME, certs / KEY_NAME


def write_default_certificate(folder: Path, hosts: t.Sequence[str]) -> list[Path]:
    """Write a self-signed certificate for ``hosts`` to ``folder/certs/`` (never overwriting).

    For ``authctl init``: the portal host and the cookie domain's wildcard, e.g.
    ``["auth.example.com", "*.example.com", "example.com"]``, so every proxy snippet works
    out of the box. ECDSA P-256 (fast to make, small), one year. Returns the paths written.

    Raises:
        CertificateError: ``certs/cert.pem`` or ``certs/key.pem`` exists, or a host is invalid.
    """
    bundle = generate(hosts, key_type="ecdsa")
    return write_files(folder / "certs", bundle.files())


def load_certificate(path: Path) -> x509.Certificate:
    """The first certificate in a PEM file.

    Raises:
        CertificateError: the file holds no PEM certificate.
    """
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise CertificateError(f"{path}: not a PEM certificate ({exc})") from None
