"""Encryption at rest for the storage database: key file, HKDF, AES-256-GCM, key check.

What it defends against: a copied database file or backup must not hand out TOTP secrets
(with them, a stolen password is enough to pass two-factor rules). Each value is sealed with
AES-256-GCM under a key derived by HKDF-SHA256 from the key file, with a fresh random 96-bit
nonce per value, and with associated data naming the table and the user, so a ciphertext
copied onto another user's row (an attacker with write access to the file swapping secrets)
fails to decrypt instead of verifying that user's codes. A separate HKDF output is the key
check value: a wrong key file is found at startup, never by silently failing every check.

Errors are ``ValueError`` with a
message; :mod:`server.core.storage` turns them into its own errors.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: Fewest bytes a key file must hold (``authctl init`` writes 64 hex digits).
MIN_KEY_BYTES = 32
#: Largest key file read; anything bigger is not a key file.
MAX_KEY_BYTES = 4096
#: First byte of every sealed value: the format, so a later format can be told apart.
FORMAT_V1 = b"\x01"
NONCE_BYTES = 12
TAG_BYTES = 16
_SALT = b"authctl storage v1"
_INFO_AEAD = b"authctl storage aes-256-gcm"
_INFO_CHECK = b"authctl storage key check"
#: HKDF label of the key that seals session records (``server.core.session_store``): the same
#: key file, a key of its own.
INFO_SESSIONS = b"authctl session records aes-256-gcm"
#: How to make a new key, for error messages.
NEW_KEY_HINT = "run `authctl init` in a new folder, or `openssl rand -hex 32 > FILE` (mode 0600)"


def read_key_file(path: Path) -> bytes:
    """The key material in ``path``: its bytes without surrounding white space.

    White space is stripped so that an editor adding a final newline does not change the key.

    Raises:
        ValueError: the file is missing, unreadable, too short or too long; the message says
            how to fix it.
    """
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_KEY_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(
            f"the storage key file {path} is missing: restore the secrets/storage.key the "
            f"database was created with; for a new installation, {NEW_KEY_HINT}"
        ) from None
    except OSError as exc:
        raise ValueError(f"cannot read the storage key file {path}: {exc.strerror}") from None
    if len(data) > MAX_KEY_BYTES:
        raise ValueError(f"the storage key file {path} is larger than {MAX_KEY_BYTES} bytes")
    key = data.strip()
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"the storage key file {path} holds {len(key)} bytes; at least {MIN_KEY_BYTES} are "
            f"needed ({NEW_KEY_HINT})"
        )
    return key


def key_file_is_private(path: Path) -> bool:
    """True unless the key file can be read or written by its group or by others."""
    try:
        return not (path.stat().st_mode & 0o077)
    except OSError:
        return True  # read_key_file reports the real problem


def _derive(material: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=info).derive(material)


class SecretBox:
    """Seal and open small values with AES-256-GCM under a key derived from key material."""

    __slots__ = ("_aead", "check_value")

    def __init__(self, material: bytes, *, info: bytes = _INFO_AEAD) -> None:
        """A box whose key is HKDF(``material``, ``info``): one label per use of a key file."""
        if len(material) < MIN_KEY_BYTES:
            raise ValueError(f"key material must be at least {MIN_KEY_BYTES} bytes")
        self._aead = AESGCM(_derive(material, info))
        #: Stored in the database; a different key file gives a different value.
        self.check_value = _derive(material, _INFO_CHECK)

    def __repr__(self) -> str:
        return "<SecretBox>"

    def matches(self, stored_check: bytes) -> bool:
        """True when ``stored_check`` was made from the same key material (constant time)."""
        return hmac.compare_digest(self.check_value, stored_check)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """``FORMAT_V1 || nonce || ciphertext+tag``, with a fresh random nonce."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return FORMAT_V1 + nonce + self._aead.encrypt(nonce, plaintext, FORMAT_V1 + aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        """The plaintext of a value made by :meth:`seal` with the same ``aad``.

        Raises:
            ValueError: unknown format, truncated, tampered with, another key, or another
                row's value (``aad`` differs).
        """
        if len(sealed) < 1 + NONCE_BYTES + TAG_BYTES or sealed[:1] != FORMAT_V1:
            raise ValueError("not a sealed value of a known format")
        nonce = sealed[1 : 1 + NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, sealed[1 + NONCE_BYTES :], FORMAT_V1 + aad)
        except InvalidTag:
            raise ValueError("the value does not decrypt (wrong key, moved or altered)") from None
