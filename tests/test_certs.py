"""``server.core.certs``: the certificates behind every HTTPS-only authctl setup.

A wrong SAN, a CA that does not chain, or a key readable by others would each break a proxy or
leak the key, and none of it shows until a browser complains; these tests read the generated
certificates back with ``cryptography`` and check what clients check.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from server.core import certs


def sans(cert: x509.Certificate) -> list[object]:
    """The SAN values of ``cert``."""
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [name.value for name in ext]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("App.Example.COM", "app.example.com"),
        ("*.example.com", "*.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("127.0.0.1", ipaddress.ip_address("127.0.0.1")),
        ("[::1]", ipaddress.ip_address("::1")),
    ],
    ids=["lowercased", "wildcard", "idna", "ipv4", "ipv6"],
)
def test_normalise_host_accepts(text: str, expected: object) -> None:
    """Host names are lowercased and IDNA-encoded; IP addresses become IP SANs."""
    assert certs.normalise_host(text) == expected


@pytest.mark.parametrize(
    "text",
    ["a*.example.com", "*.*.example.com", "*.com", "app.example.com.", "exa mple.com", "", "-a.b"],
    ids=["partial-wildcard", "double-wildcard", "wildcard-tld", "trailing-dot", "space", "empty",
         "leading-hyphen"],
)  # fmt: skip
def test_normalise_host_refuses(text: str) -> None:
    """Partial or stacked wildcards, trailing dots and invalid labels are refused."""
    with pytest.raises(certs.CertificateError):
        certs.normalise_host(text)


def test_self_signed_rsa_has_every_san() -> None:
    """A self-signed RSA 2048 certificate lists every host as a SAN, the first as its CN."""
    bundle = certs.generate(["auth.example.com", "*.example.com", "127.0.0.1", "auth.example.com"])
    assert sans(bundle.cert) == [
        "auth.example.com",
        "*.example.com",
        ipaddress.ip_address("127.0.0.1"),
    ]
    cn = bundle.cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    assert cn == "auth.example.com"
    assert isinstance(bundle.key, rsa.RSAPrivateKey)
    assert bundle.key.key_size == 2048
    assert bundle.cert.issuer == bundle.cert.subject
    bundle.cert.verify_directly_issued_by(bundle.cert)
    assert bundle.ca_cert is None
    assert [f.name for f in bundle.files()] == ["cert.pem", "key.pem"]


def test_leaf_extensions_are_for_a_tls_server() -> None:
    """The leaf is not a CA, is for server auth, and may sign (and for RSA, encipher)."""
    cert = certs.generate(["app.example.com"]).cert
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert usage.key_encipherment


def test_rsa_3072_and_ecdsa_keys() -> None:
    """RSA 3072 and ECDSA P-256 keys are made on request; other sizes are refused."""
    assert certs.new_key("rsa", 3072).key_size == 3072
    key = certs.generate(["a.example.com"], key_type="ecdsa").key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    with pytest.raises(certs.CertificateError):
        certs.new_key("rsa", 1024)
    with pytest.raises(certs.CertificateError):
        certs.new_key("dsa")


def test_ca_signs_the_leaf_and_the_chain_verifies() -> None:
    """With ca=True the leaf is issued by a fresh CA and verifies against it for its host."""
    bundle = certs.generate(["auth.example.com", "*.example.com"], key_type="ecdsa", ca=True)
    assert bundle.ca_cert is not None
    bundle.cert.verify_directly_issued_by(bundle.ca_cert)
    constraints = bundle.ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    assert constraints.path_length == 0
    from cryptography.x509.verification import PolicyBuilder
    from cryptography.x509.verification import Store

    verifier = (
        PolicyBuilder()
        .store(Store([bundle.ca_cert]))
        .time(dt.datetime.now(dt.UTC))
        .build_server_verifier(x509.DNSName("app.example.com"))
    )
    chain = verifier.verify(bundle.cert, [])
    assert chain[-1] == bundle.ca_cert
    assert [f.name for f in bundle.files()] == ["cert.pem", "key.pem", "ca.pem", "ca-key.pem"]


def test_validity_follows_days() -> None:
    """The certificate is valid from (a little before) now for the given days; 0 is refused."""
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    cert = certs.generate(["a.example.com"], days=30, key_type="ecdsa", now=now).cert
    assert cert.not_valid_before_utc < now
    assert cert.not_valid_after_utc == now + dt.timedelta(days=30)
    with pytest.raises(certs.CertificateError):
        certs.generate(["a.example.com"], days=0)
    with pytest.raises(certs.CertificateError):
        certs.generate([])


def test_write_files_modes_and_no_overwrite(tmp_path: Path) -> None:
    """Every file is written 0600 (SPEC §4); existing files stop the write unless forced."""
    bundle = certs.generate(["a.example.com"], key_type="ecdsa", ca=True)
    folder = tmp_path / "certs"
    written = certs.write_files(folder, bundle.files())
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in written}
    assert modes == {"cert.pem": 0o600, "key.pem": 0o600, "ca.pem": 0o600, "ca-key.pem": 0o600}
    before = (folder / "key.pem").read_bytes()
    other = certs.generate(["b.example.com"], key_type="ecdsa")
    with pytest.raises(certs.CertificateError, match="already exist"):
        certs.write_files(folder, other.files())
    assert (folder / "key.pem").read_bytes() == before
    certs.write_files(folder, other.files(), force=True)
    assert (folder / "key.pem").read_bytes() != before
    assert sorted(p.name for p in folder.iterdir()) == [
        "ca-key.pem",
        "ca.pem",
        "cert.pem",
        "key.pem",
    ]


def test_write_refuses_symlink(tmp_path: Path) -> None:
    """A symlink where the key goes is never written through, even with force."""
    (tmp_path / "elsewhere").write_text("x")
    (tmp_path / "key.pem").symlink_to(tmp_path / "elsewhere")
    bundle = certs.generate(["a.example.com"], key_type="ecdsa")
    with pytest.raises(certs.CertificateError, match="not a regular file"):
        certs.write_files(tmp_path, bundle.files(), force=True)
    assert (tmp_path / "elsewhere").read_text() == "x"


def test_pem_round_trip_and_fingerprint(tmp_path: Path) -> None:
    """Written PEM loads back; the fingerprint is the colon-separated SHA-256 of the DER."""
    bundle = certs.generate(["a.example.com"], key_type="ecdsa")
    certs.write_files(tmp_path, bundle.files())
    loaded = certs.load_certificate(tmp_path / "cert.pem")
    assert loaded == bundle.cert
    fp = certs.fingerprint(loaded)
    assert len(fp.split(":")) == 32
    assert fp == fp.upper()
    assert "a.example.com" in certs.describe(loaded)
    (tmp_path / "bad.pem").write_text("nope")
    with pytest.raises(certs.CertificateError):
        certs.load_certificate(tmp_path / "bad.pem")


def test_write_default_certificate(tmp_path: Path) -> None:
    """init's helper writes certs/cert.pem and certs/key.pem for the hosts, and never twice."""
    paths = certs.write_default_certificate(tmp_path, ["auth.example.com", "*.example.com"])
    assert paths == list(certs.default_certificate_paths(tmp_path))
    assert sans(certs.load_certificate(paths[0])) == ["auth.example.com", "*.example.com"]
    assert stat.S_IMODE(paths[1].stat().st_mode) == 0o600
    with pytest.raises(certs.CertificateError):
        certs.write_default_certificate(tmp_path, ["auth.example.com"])
