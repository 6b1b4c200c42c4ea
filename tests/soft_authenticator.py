"""A software WebAuthn authenticator for tests and the bench: real EC P-256 keys, real
signatures, the byte layouts of the WebAuthn spec (§6.1 authenticator data, §6.5 attestation
object with ``fmt`` "none", §5.8.1 client data), nothing mocked.

It plays both the authenticator and the browser: :meth:`SoftAuthenticator.create` answers
``navigator.credentials.create()`` options and :meth:`SoftAuthenticator.get` answers
``navigator.credentials.get()`` options, each returning the credential in the JSON form the
portal posts (``toJSON()``: every byte field base64url). The helpers at the end tamper with
such a response for negative tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
import typing as t
from dataclasses import dataclass
from dataclasses import field

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

FLAG_UP = 0x01
FLAG_UV = 0x04
FLAG_BE = 0x08
FLAG_BS = 0x10
FLAG_AT = 0x40


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def cose_key(public: ec.EllipticCurvePublicKey) -> bytes:
    """The COSE_Key of an EC2 P-256 ES256 public key (RFC 9053)."""
    numbers = public.public_numbers()
    return cbor2.dumps(
        {
            1: 2,  # kty: EC2
            3: -7,  # alg: ES256
            -1: 1,  # crv: P-256
            -2: numbers.x.to_bytes(32, "big"),
            -3: numbers.y.to_bytes(32, "big"),
        }
    )


@dataclass
class SoftCredential:
    """One key pair the authenticator holds."""

    credential_id: bytes
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    rp_id: str
    user_handle: bytes
    sign_count: int = 0


@dataclass
class SoftAuthenticator:
    """An authenticator with a browser in front of it, at ``origin``.

    ``uv``: it verifies the user (PIN/biometrics); ``backup``: its credentials are synced
    passkeys (backup eligible and backed up); ``counter``: it keeps a sign count (a synced
    passkey usually keeps 0).
    """

    origin: str
    uv: bool = True
    backup: bool = False
    counter: bool = True
    aaguid: bytes = bytes(16)
    credentials: dict[bytes, SoftCredential] = field(default_factory=dict)

    def _flags(self, *, attested: bool = False, uv: bool | None = None) -> int:
        flags = FLAG_UP
        if self.uv if uv is None else uv:
            flags |= FLAG_UV
        if self.backup:
            flags |= FLAG_BE | FLAG_BS
        if attested:
            flags |= FLAG_AT
        return flags

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps(
            {
                "type": kind,
                "challenge": challenge,
                "origin": origin or self.origin,
                "crossOrigin": False,
            },
            separators=(",", ":"),
        ).encode()

    def create(
        self,
        options: t.Mapping[str, t.Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        uv: bool | None = None,
    ) -> dict[str, t.Any]:
        """A new credential for creation ``options`` (the ``publicKey`` object)."""
        rp = rp_id or options["rp"]["id"]
        excluded = {unb64url(c["id"]) for c in options.get("excludeCredentials", [])}
        if excluded & set(self.credentials):
            raise ValueError("InvalidStateError: this authenticator is registered already")
        key = ec.generate_private_key(ec.SECP256R1())
        cred_id = secrets.token_bytes(32)
        count = 1 if self.counter else 0
        cred = SoftCredential(cred_id, key, rp, unb64url(options["user"]["id"]), count)
        self.credentials[cred_id] = cred
        attested = (
            self.aaguid + struct.pack(">H", len(cred_id)) + cred_id + cose_key(key.public_key())
        )
        auth_data = (
            hashlib.sha256(rp.encode()).digest()
            + bytes([self._flags(attested=True, uv=uv)])
            + struct.pack(">I", count)
            + attested
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        return {
            "id": b64url(cred_id),
            "rawId": b64url(cred_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["internal", "hybrid"],
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {"credProps": {"rk": True}},
        }

    def get(
        self,
        options: t.Mapping[str, t.Any],
        *,
        credential_id: bytes | None = None,
        origin: str | None = None,
        rp_id: str | None = None,
        uv: bool | None = None,
        sign_count: int | None = None,
    ) -> dict[str, t.Any]:
        """An assertion for request ``options``: with one of ``allowCredentials`` it holds,
        or (empty list: a passkey sign-in) ``credential_id`` or its first credential."""
        allowed = [unb64url(c["id"]) for c in options.get("allowCredentials", [])]
        if credential_id is None:
            usable = [c for c in allowed if c in self.credentials] if allowed else []
            usable = usable or list(self.credentials)
            if not usable:
                raise ValueError("NotAllowedError: no credential for this site")
            credential_id = usable[0]
        cred = self.credentials[credential_id]
        rp = rp_id or options.get("rpId") or cred.rp_id
        if self.counter:
            cred.sign_count += 1
        count = cred.sign_count if sign_count is None else sign_count
        auth_data = (
            hashlib.sha256(rp.encode()).digest()
            + bytes([self._flags(uv=uv)])
            + struct.pack(">I", count)
        )
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = cred.private_key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": b64url(credential_id),
            "rawId": b64url(credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(cred.user_handle),
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
        }


# ---------------------------------------------------------------------- tampering


def with_field(response: dict[str, t.Any], name: str, raw: bytes) -> dict[str, t.Any]:
    """A copy of ``response`` whose ``response.<name>`` holds ``raw``."""
    copy = json.loads(json.dumps(response))
    copy["response"][name] = b64url(raw)
    return copy


def flip_byte(response: dict[str, t.Any], name: str, index: int = -1) -> dict[str, t.Any]:
    """A copy of ``response`` with one bit of ``response.<name>`` flipped at ``index``."""
    raw = bytearray(unb64url(response["response"][name]))
    raw[index] ^= 0x01
    return with_field(response, name, bytes(raw))


def edit_client_data(response: dict[str, t.Any], **changes: object) -> dict[str, t.Any]:
    """A copy of ``response`` whose clientDataJSON has ``changes`` (the signature is not
    remade, as an attacker without the key could not)."""
    data = json.loads(unb64url(response["response"]["clientDataJSON"]))
    data.update(changes)
    return with_field(response, "clientDataJSON", json.dumps(data).encode())
