"""The issuer's RS256 key: made by ``authctl oidc keygen``/``init``, checked at config load,
published at ``/jwks.json`` with a ``kid`` derived from the public key (RFC 7638 thumbprint),
so every host sharing the key file publishes the same ``kid``."""

from __future__ import annotations

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey

#: The smallest RSA modulus accepted (NIST SP 800-131A; RFC 7518 §3.3 demands 2048).
MIN_RSA_BITS = 2048
#: The size ``keygen`` writes.
KEYGEN_BITS = 3072


def generate_pem(bits: int = KEYGEN_BITS) -> bytes:
    """A new RSA private key as PKCS#8 PEM (unencrypted: the file's mode protects it)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def key_problem(pem: bytes) -> str | None:
    """Why ``pem`` cannot be the issuer key (the reason completes a sentence), or None."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        return "is encrypted with a passphrase; authctl needs an unencrypted PEM key (mode 0600)"
    except (ValueError, UnsupportedAlgorithm):
        return "is not a PEM private key"
    if not isinstance(key, rsa.RSAPrivateKey):
        return "is not an RSA key (RS256 needs RSA)"
    if key.key_size < MIN_RSA_BITS:
        return f"is a {key.key_size}-bit RSA key; at least {MIN_RSA_BITS} bits are needed"
    return None


def signing_key(pem: bytes) -> RSAKey:
    """The issuer key as a joserfc JWK with ``kid`` (thumbprint), ``use`` sig and ``alg`` RS256.

    Raises:
        ValueError: ``pem`` is not a usable key (see :func:`key_problem`).
    """
    problem = key_problem(pem)
    if problem is not None:
        raise ValueError(f"the OIDC issuer key {problem}")
    key = RSAKey.import_key(pem)
    kid = key.thumbprint()
    return RSAKey.import_key(pem, {"kid": kid, "use": "sig", "alg": "RS256"})


def public_jwks(key: RSAKey) -> dict[str, object]:
    """The JWK Set for ``/jwks.json``: the public half only."""
    return {"keys": [key.as_dict(private=False)]}
