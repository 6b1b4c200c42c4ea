"""Verify the password hashes Authelia's file backend stores, so its users keep their passwords.

Authelia (through go-crypt) reads argon2 (``$argon2id$``, ``$argon2i$``, ``$argon2d$``),
sha-crypt (``$6$`` sha512, ``$5$`` sha256), pbkdf2 (``$pbkdf2$`` = sha1, ``$pbkdf2-sha1$`` …
``$pbkdf2-sha512$``, the same spelling passlib writes, and LDAP's ``{PBKDF2-SHA256}``),
bcrypt (``$2a$``, ``$2b$``, ``$2y$``) and scrypt (``$scrypt$ln=…,r=…,p=…$salt$key``). authctl
only verifies them: after the first successful sign-in the hash is rewritten as argon2id with
the configured parameters (:mod:`server.core.signin`); nothing here makes a new hash.

**Cost bounds.** A hash is a cost the server pays at every sign-in, and a hand-edited one must
not stall a login or eat the memory: every cost parameter is checked when the users file loads
(:func:`check`, a clear error naming the user) and again before any hashing (:func:`verify`
refuses what :func:`check` refuses). Each limit is several times Authelia's default, and one
verify at the limit takes about one to two seconds on one core (measured 2026, the project's
2-core CI machine):

=============  ==============================  ======================================  =======
scheme         Authelia's default              limit                                   at limit
=============  ==============================  ======================================  =======
argon2         m=64 MiB, t=3, p=4              m <= 1 GiB, t <= 20, p <= 16 (as new)   -
bcrypt         cost 12                         cost <= 15                              2.3 s
sha-crypt      50,000 rounds                   rounds <= 2,000,000                     1.3 s
pbkdf2         sha512, 310,000 iterations      iterations x blocks <= 3,000,000        1.5 s
scrypt         ln=16, r=8, p=1 (N*r*p = 2^19)  N*r*p <= 2^22 (memory 128*N*r <= 512 MiB) 1.8 s
=============  ==============================  ======================================  =======

("blocks": pbkdf2 runs once per digest-sized block of the stored key, so a long key multiplies
the iterations.) Salts and keys are bounded too (argon2 salts 8-64 bytes, other salts 1-1024,
keys 16-128 bytes), so a four-byte key cannot be matched by chance.

**Missing parameters** take go-crypt's decoding defaults, as Authelia does: argon2 ``t=1``,
``p=4``, ``m=32768`` (the ``v=19`` segment itself must be there, as go-crypt requires six
``$`` parts; ``k=`` is ignored); scrypt ``ln=16``, ``r=8``, ``p=1``; sha-crypt without
``rounds=`` is 5,000 rounds (the sha-crypt specification).

**The password's bytes** are its UTF-8, exactly as typed (no NFKC): Authelia hashed the bytes it
received. bcrypt only reads 72 bytes; a longer password is refused, never truncated (it would
otherwise match any password sharing its first 72 bytes). Comparisons are constant-time
(:func:`hmac.compare_digest`; bcrypt's and libpass's own checks are too).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import typing as t
from collections.abc import Callable
from dataclasses import dataclass

import bcrypt
from argon2.exceptions import HashingError
from argon2.low_level import Type
from argon2.low_level import hash_secret_raw

from server.core.config import ARGON2_MAX_ITERATIONS
from server.core.config import ARGON2_MAX_MEMORY_KIB
from server.core.config import ARGON2_MAX_PARALLELISM

#: Largest bcrypt cost (2^15 rounds of the key schedule; Authelia's default is 12).
BCRYPT_MAX_COST = 15
#: The bytes of a password bcrypt reads; a longer password is refused.
BCRYPT_MAX_PASSWORD_BYTES = 72
#: sha-crypt rounds: the specification's minimum, the default when ``rounds=`` is left out,
#: and authctl's limit.
SHA_CRYPT_MIN_ROUNDS = 1000
SHA_CRYPT_OMITTED_ROUNDS = 5000
SHA_CRYPT_MAX_ROUNDS = 2_000_000
#: pbkdf2: iterations times the digest-sized blocks of the key.
PBKDF2_MAX_WORK = 3_000_000
#: scrypt: N*r*p (time), which also bounds the memory 128*N*r to 512 MiB.
SCRYPT_MAX_WORK = 1 << 22
#: go-crypt's defaults for parameters missing from a stored hash.
ARGON2_DEFAULTS = {"m": 32 * 1024, "t": 1, "p": 4}
SCRYPT_DEFAULTS = {"ln": 16, "r": 8, "p": 1}
#: Salt and key lengths accepted, in bytes.
ARGON2_SALT_RANGE = (8, 64)
SALT_RANGE = (1, 1024)
KEY_RANGE = (16, 128)

_ARGON2 = {"argon2id": Type.ID, "argon2i": Type.I, "argon2d": Type.D}
_PBKDF2 = {
    "pbkdf2": "sha1",
    "pbkdf2-sha1": "sha1",
    "pbkdf2-sha224": "sha224",
    "pbkdf2-sha256": "sha256",
    "pbkdf2-sha384": "sha384",
    "pbkdf2-sha512": "sha512",
}
_SHA_CRYPT = {"5": "sha256-crypt", "6": "sha512-crypt"}
#: Schemes Authelia or other tools write that authctl does not verify, and why.
_REFUSED = {
    "1": "md5-crypt, which is too weak to keep",
    "sha1": "sha1-crypt, which is too weak to keep",
    "plaintext": "a plain-text password",
    "y": "yescrypt, which authctl cannot verify",
    "7": "scrypt in yescrypt's spelling, which authctl cannot verify",
    "bcrypt-sha256": "passlib's bcrypt-sha256, which authctl cannot verify",
    "2x": "crypt_blowfish's buggy $2x$ bcrypt, which authctl cannot verify",
    "2": "the original $2$ bcrypt, which authctl cannot verify",
}
_NUMBER = re.compile(r"[0-9]{1,10}")
_LDAP_PBKDF2 = re.compile(r"\{(PBKDF2(?:-SHA[0-9]+)?)\}([0-9]+\$.*)", re.DOTALL)
_BCRYPT = re.compile(r"\$(2[aby])\$([0-9]{2})\$[./A-Za-z0-9]{53}")
_SHA_ROUNDS = re.compile(r"rounds=([0-9]{1,10})")
_AB64 = bytes.maketrans(b".", b"+")
#: Accepted schemes, for messages.
ACCEPTED = "argon2id/argon2i/argon2d, bcrypt, sha512-crypt/sha256-crypt, pbkdf2 and scrypt"


class Refused(ValueError):
    """A stored hash authctl will not verify; the text completes "the password of user X …"."""


@dataclass(frozen=True, slots=True)
class Hash:
    """A parsed stored hash within the bounds: its scheme's name and how to check a password."""

    scheme: str
    matches: Callable[[bytes], bool]


def normalise(stored: str) -> str:
    """Authelia's spellings of one hash: ``{CRYPT}``/``{ARGON2}`` prefixes dropped, LDAP's
    ``{PBKDF2-SHA256}29000$…`` as ``$pbkdf2-sha256$29000$…`` (go-crypt's ``Normalize``)."""
    for prefix in ("{CRYPT}", "{ARGON2}"):
        if stored.startswith(prefix):
            return stored[len(prefix) :]
    found = _LDAP_PBKDF2.fullmatch(stored)
    if found is not None:
        return f"${found[1].lower()}${found[2]}"
    return stored


def parse(stored: str) -> Hash:
    """The parsed hash, checked against every bound.

    Raises:
        Refused: not a hash authctl verifies, malformed, or a cost over its limit.
    """
    found = _parse(stored)
    if isinstance(found, str):
        raise Refused(found)
    return found


def check(stored: str) -> str | None:
    """Why ``stored`` is refused (completing "the password of user X …"), or None."""
    found = _parse(stored)
    return found if isinstance(found, str) else None


def scheme(stored: str) -> str | None:
    """The scheme's name (``bcrypt``, ``sha512-crypt``, ``pbkdf2-sha256`` …), None if refused."""
    found = _parse(stored)
    return None if isinstance(found, str) else found.scheme


def verify(stored: str, password: str) -> bool:
    """True when ``password`` matches ``stored``; False for a mismatch or a refused hash.

    Never raises: a hash outside the bounds is never handed to a hash function.
    """
    found = _parse(stored)
    if isinstance(found, str):
        return False
    return found.matches(password.encode("utf-8", "surrogatepass"))


@functools.lru_cache(maxsize=16384)
def _parse(stored: str) -> Hash | str:
    # Cached: a reload of the users file checks every hash, and sign-ins check again.
    try:
        return _dispatch(normalise(stored))
    except Refused as exc:
        return str(exc)


def _dispatch(stored: str) -> Hash:
    if not stored.startswith("$"):
        raise Refused("is not a hash (a plain-text password?): store only password hashes")
    parts = stored.split("$")
    name = parts[1] if len(parts) > 2 else ""
    if name in _ARGON2:
        return _argon2(name, parts)
    if name in _SHA_CRYPT:
        return _sha_crypt(_SHA_CRYPT[name], stored, parts)
    if name in _PBKDF2:
        return _pbkdf2(name, parts)
    if name == "scrypt":
        return _scrypt(parts)
    if name in ("2a", "2b", "2y"):
        return _bcrypt(stored)
    if name in _REFUSED:
        raise Refused(f"is {_REFUSED[name]}; authctl accepts {ACCEPTED}")
    label = repr(name) if name else "unknown"
    raise Refused(f"uses the {label} scheme; authctl accepts {ACCEPTED}")


# --------------------------------------------------------------------------- encodings


def _b64(text: str, what: str, scheme_name: str, *, adapted: bool = False) -> bytes:
    """Unpadded base64 as go-crypt reads it (``adapted``: ``./`` for ``+/``, as passlib's ab64)."""
    alphabet = r"[./A-Za-z0-9]*" if adapted else r"[+/A-Za-z0-9]*"
    if not re.fullmatch(alphabet, text) or len(text) % 4 == 1:
        raise Refused(f"is not a well-formed {scheme_name} hash: the {what} is not base64")
    raw = text.encode("ascii")
    if adapted:
        raw = raw.translate(_AB64)
    try:
        return base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except binascii.Error:  # pragma: no cover - the pattern and length admit only valid text
        raise Refused(
            f"is not a well-formed {scheme_name} hash: the {what} is not base64"
        ) from None


def _lengths(scheme_name: str, salt: bytes, key: bytes, salts: tuple[int, int]) -> None:
    if not salts[0] <= len(salt) <= salts[1]:
        raise Refused(
            f"is a {scheme_name} hash with a {len(salt)}-byte salt; authctl accepts "
            f"{salts[0]} to {salts[1]} bytes"
        )
    if not KEY_RANGE[0] <= len(key) <= KEY_RANGE[1]:
        raise Refused(
            f"is a {scheme_name} hash with a {len(key)}-byte hash; authctl accepts "
            f"{KEY_RANGE[0]} to {KEY_RANGE[1]} bytes"
        )


def _params(text: str, known: tuple[str, ...], scheme_name: str, shape: str) -> dict[str, int]:
    """``m=65536,t=3,p=4`` as a dict; an unknown, repeated or non-numeric one is refused."""
    out: dict[str, int] = {}
    for item in text.split(","):
        key, equals, value = item.partition("=")
        if not equals or key not in known or key in out or not _NUMBER.fullmatch(value):
            raise Refused(
                f"is not a well-formed {scheme_name} hash: {item!r} is not one of its "
                f"parameters ({shape})"
            )
        out[key] = int(value)
    return out


# --------------------------------------------------------------------------- argon2


def _argon2(variant: str, parts: list[str]) -> Hash:
    shape = f"${variant}$v=19$m=…,t=…,p=…$salt$hash"
    if len(parts) != 6:
        raise Refused(f"is not a well-formed {variant} hash ({shape})")
    params = {
        **ARGON2_DEFAULTS,
        **_params(f"{parts[3]},{parts[2]}", tuple("vkmtp"), variant, shape),
    }
    if params.get("v", 19) != 19:
        raise Refused(f"uses argon2 version {params['v']}; only version 19 is supported")
    memory, time_cost, lanes = params["m"], params["t"], params["p"]
    if memory > ARGON2_MAX_MEMORY_KIB:
        raise Refused(
            f"asks for {memory} KiB of memory, more than the limit of "
            f"{ARGON2_MAX_MEMORY_KIB} KiB (1 GiB)"
        )
    if time_cost > ARGON2_MAX_ITERATIONS:
        raise Refused(
            f"asks for {time_cost} iterations, more than the limit of {ARGON2_MAX_ITERATIONS}"
        )
    if lanes > ARGON2_MAX_PARALLELISM:
        raise Refused(
            f"asks for parallelism {lanes}, more than the limit of {ARGON2_MAX_PARALLELISM}"
        )
    if time_cost < 1 or lanes < 1 or memory < 8 * lanes:
        raise Refused("has impossible parameters (argon2 needs t>=1, p>=1 and m>=8*p)")
    salt = _b64(parts[4], "salt", variant)
    key = _b64(parts[5], "hash", variant)
    _lengths(variant, salt, key, ARGON2_SALT_RANGE)
    kind = _ARGON2[variant]

    def matches(secret: bytes) -> bool:
        try:
            derived = hash_secret_raw(
                secret, salt, time_cost, memory, lanes, len(key), kind, version=19
            )
        except HashingError:  # pragma: no cover - the parameters were checked above
            return False
        return hmac.compare_digest(derived, key)

    return Hash(variant, matches)


# --------------------------------------------------------------------------- sha-crypt


def _sha_crypt(name: str, stored: str, parts: list[str]) -> Hash:
    if len(parts) not in (4, 5):
        raise Refused(f"is not a well-formed {name} hash ($6$rounds=N$salt$hash)")
    rounds = SHA_CRYPT_OMITTED_ROUNDS
    if len(parts) == 5:
        found = _SHA_ROUNDS.fullmatch(parts[2])
        if found is None:
            raise Refused(
                f"is not a well-formed {name} hash: {parts[2]!r} is not rounds=N "
                "($6$rounds=N$salt$hash)"
            )
        rounds = int(found[1])
    if rounds < SHA_CRYPT_MIN_ROUNDS:
        raise Refused(
            f"is a {name} hash with {rounds} rounds, fewer than sha-crypt's minimum of "
            f"{SHA_CRYPT_MIN_ROUNDS}"
        )
    if rounds > SHA_CRYPT_MAX_ROUNDS:
        raise Refused(
            f"is a {name} hash with {rounds} rounds, more than the limit of "
            f"{SHA_CRYPT_MAX_ROUNDS:,}"
        )
    handler = _sha_crypt_handler(name)
    try:
        handler.from_string(stored)
    except ValueError as exc:
        raise Refused(f"is not a well-formed {name} hash: {exc}") from None

    def matches(secret: bytes) -> bool:
        try:
            return bool(handler.verify(secret, stored))
        except (ValueError, TypeError):  # a NUL byte, or a password over libpass's size limit
            return False

    return Hash(name, matches)


def _sha_crypt_handler(name: str) -> t.Any:
    """libpass's handler (imported here: only users files with sha-crypt hashes need it)."""
    from passlib.handlers.sha2_crypt import sha256_crypt  # type: ignore[import-untyped]
    from passlib.handlers.sha2_crypt import sha512_crypt

    return sha512_crypt if name == "sha512-crypt" else sha256_crypt


# --------------------------------------------------------------------------- pbkdf2


def _pbkdf2(name: str, parts: list[str]) -> Hash:
    digest = _PBKDF2[name]
    label = f"pbkdf2-{digest}"
    shape = f"${name}$iterations$salt$hash"
    if len(parts) != 5 or not _NUMBER.fullmatch(parts[2]):
        raise Refused(f"is not a well-formed {label} hash ({shape})")
    iterations = int(parts[2])
    salt = _b64(parts[3], "salt", label, adapted=True)
    key = _b64(parts[4], "hash", label, adapted=True)
    _lengths(label, salt, key, SALT_RANGE)
    size = hashlib.new(digest).digest_size
    blocks = -(-len(key) // size)
    if iterations < 1:
        raise Refused(f"is a {label} hash with 0 iterations")
    if iterations * blocks > PBKDF2_MAX_WORK:
        raise Refused(
            f"is a {label} hash asking for {iterations:,} iterations x {blocks} block(s) of "
            f"{size} bytes, more than the limit of {PBKDF2_MAX_WORK:,}"
        )

    def matches(secret: bytes) -> bool:
        derived = hashlib.pbkdf2_hmac(digest, secret, salt, iterations, len(key))
        return hmac.compare_digest(derived, key)

    return Hash(label, matches)


# --------------------------------------------------------------------------- scrypt


def _scrypt(parts: list[str]) -> Hash:
    shape = "$scrypt$ln=…,r=…,p=…$salt$hash"
    if len(parts) != 5:
        raise Refused(f"is not a well-formed scrypt hash ({shape})")
    params = {**SCRYPT_DEFAULTS, **_params(parts[2], ("ln", "r", "p"), "scrypt", shape)}
    log_n, block, lanes = params["ln"], params["r"], params["p"]
    if log_n < 1 or block < 1 or lanes < 1:
        raise Refused("has impossible parameters (scrypt needs ln>=1, r>=1 and p>=1)")
    if log_n >= 16 * block:
        raise Refused(f"has impossible parameters (scrypt needs ln < 16*r, got ln={log_n})")
    if log_n > 22 or (1 << log_n) * block * lanes > SCRYPT_MAX_WORK:
        raise Refused(
            f"is a scrypt hash asking for N*r*p = 2^{log_n}*{block}*{lanes}, more than the "
            "limit of 2^22"
        )
    salt = _b64(parts[3], "salt", "scrypt")
    key = _b64(parts[4], "hash", "scrypt")
    _lengths("scrypt", salt, key, SALT_RANGE)
    cost = 1 << log_n
    # OpenSSL's own count (128*r*(N+2) for V, 128*r*p for B), plus room to spare
    memory = 128 * block * (cost + 2 + lanes) + (1 << 20)

    def matches(secret: bytes) -> bool:
        derived = hashlib.scrypt(
            secret, salt=salt, n=cost, r=block, p=lanes, maxmem=memory, dklen=len(key)
        )
        return hmac.compare_digest(derived, key)

    return Hash("scrypt", matches)


# --------------------------------------------------------------------------- bcrypt


def _bcrypt(stored: str) -> Hash:
    found = _BCRYPT.fullmatch(stored)
    if found is None:
        raise Refused("is not a well-formed bcrypt hash ($2b$12$ and 53 characters)")
    cost = int(found[2])
    if cost < 4:
        raise Refused(f"is a bcrypt hash with cost {cost}; bcrypt's costs start at 4")
    if cost > BCRYPT_MAX_COST:
        raise Refused(
            f"is a bcrypt hash with cost {cost}, more than the limit of {BCRYPT_MAX_COST}"
        )
    if stored[28] not in ".Oeu":
        # the salt's 22nd character carries 2 bits; pyca's bcrypt reads only the exact ones
        raise Refused(
            "is not a well-formed bcrypt hash: the last character of its salt (the 29th of "
            "the hash) must be one of . O e u"
        )
    encoded = stored.encode("ascii")

    def matches(secret: bytes) -> bool:
        if len(secret) > BCRYPT_MAX_PASSWORD_BYTES:
            return False  # bcrypt would read only the first 72 bytes: refused, not truncated
        try:
            return bcrypt.checkpw(secret, encoded)
        except ValueError:  # pragma: no cover - the shape was checked above
            return False

    return Hash("bcrypt", matches)
