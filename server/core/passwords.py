"""Hash and verify passwords with argon2id, and judge hashes read from the users file.

Passwords are NFKC-normalised before hashing and before verifying (NIST SP 800-63B 5.1.1.2), so
``é`` typed as one code point or as ``e`` + combining accent is the same password; nothing is
trimmed and case is kept (ASVS 6.2.8). Hashes from the users file are checked by
:func:`check_hash` at load, so a hand-edited ``m=4194304`` cannot make a login allocate 4 GiB,
and :meth:`PasswordHasher.verify` never trusts a hash it has not checked either.

New hashes are always argon2id. The users file may also hold the hashes Authelia writes
(bcrypt, sha-crypt, pbkdf2, scrypt, argon2i/d, argon2id with a parameter left out): those are
*legacy* hashes, verified by :mod:`server.core.legacy_hashes` against the password's bytes as
typed (as Authelia hashed them), and :meth:`PasswordHasher.needs_rehash` says to replace them
at the next sign-in. An argon2id hash in the full PHC form, Authelia's usual one, is verified
here as authctl's own, after NFKC: a password that NFKC changes (compatibility characters such
as a ligature or a no-break space) set in Authelia does not verify and must be set again.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import re
import secrets
import unicodedata

import argon2
from argon2.exceptions import InvalidHashError
from argon2.exceptions import VerificationError
from argon2.low_level import Type
from argon2.low_level import verify_secret

from server.core import legacy_hashes
from server.core.config import ARGON2_MAX_ITERATIONS
from server.core.config import ARGON2_MAX_MEMORY_KIB
from server.core.config import ARGON2_MAX_PARALLELISM
from server.core.config import PasswordHashConfig

#: Length in bytes of the salt and of the tag of new hashes (argon2-cffi's defaults).
SALT_LENGTH = 16
HASH_LENGTH = 32
#: Salt and tag lengths accepted in stored hashes; a 4-byte tag would be guessable.
SALT_RANGE = (8, 64)
HASH_RANGE = (16, 128)

_PHC = re.compile(
    r"\$argon2id\$v=(?P<v>[0-9]{1,3})\$m=(?P<m>[0-9]{1,10}),t=(?P<t>[0-9]{1,10}),"
    r"p=(?P<p>[0-9]{1,10})\$(?P<salt>[A-Za-z0-9+/]+)\$(?P<tag>[A-Za-z0-9+/]+)"
)
#: Name of authctl's own scheme (:func:`scheme_of`).
ARGON2ID = "argon2id"
#: How to fix a refused hash (``NAME`` stands for the user).
HASH_FIX = "set a new one with `authctl user passwd NAME` (or paste `authctl hash-password` output)"


def _b64_bytes(text: str) -> bytes | None:
    """Decode unpadded base64 as libargon2 does: only the canonical spelling is accepted."""
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:
        return None
    if base64.b64encode(raw).decode("ascii").rstrip("=") != text:
        return None
    return raw


def check_hash(phc: object) -> str | None:
    """Return why ``phc`` is not an acceptable stored hash, or None when it is.

    Acceptable means an argon2id PHC string (version 19) whose memory, time and parallelism
    are within the bounds that ``[users.password_hash]`` allows, with a sane salt and tag; or
    one of Authelia's legacy hashes within :mod:`server.core.legacy_hashes`' cost bounds. A
    plain-text password, an unknown scheme or a hash with huge parameters is refused here, at
    load, so it never reaches :meth:`PasswordHasher.verify` (a hand-edited hash must not be able
    to make one login allocate gigabytes or run for minutes). The reason completes a sentence
    about the hash; :data:`HASH_FIX` says how to fix it.
    """
    if not isinstance(phc, str):
        return "must be a string holding a password hash"
    return _check_hash(phc)


def is_native(phc: str) -> bool:
    """True for authctl's own form: ``$argon2id$v=19$m=…,t=…,p=…$salt$tag`` (maybe refused)."""
    return _PHC.fullmatch(phc) is not None


def scheme_of(phc: str) -> str | None:
    """The scheme of an acceptable hash: ``argon2id`` for authctl's own form, else the legacy
    scheme's name (``bcrypt``, ``sha512-crypt``, ``pbkdf2-sha256``, ``argon2i`` …); None when
    :func:`check_hash` refuses it."""
    if check_hash(phc) is not None:
        return None
    return ARGON2ID if is_native(phc) else legacy_hashes.scheme(phc)


def is_legacy(phc: str) -> bool:
    """True for an acceptable hash that is not in authctl's own argon2id form."""
    return check_hash(phc) is None and not is_native(phc)


@functools.lru_cache(maxsize=16384)
def _check_hash(phc: str) -> str | None:
    # Cached: a reload of the users file re-checks every hash, and most are unchanged.
    found = _PHC.fullmatch(phc)
    if found is None:
        return legacy_hashes.check(phc)
    try:
        params = argon2.extract_parameters(phc)
    except InvalidHashError:  # pragma: no cover - argon2-cffi reads whatever the pattern admits
        params = None
    if params is None or params.type is not argon2.Type.ID:  # pragma: no cover
        return "is not a well-formed argon2id PHC string ($argon2id$v=19$m=…,t=…,p=…$salt$hash)"
    if params.version != 19:
        return f"uses argon2 version {params.version}; only version 19 is supported"
    if params.memory_cost > ARGON2_MAX_MEMORY_KIB:
        return (
            f"asks for {params.memory_cost} KiB of memory, more than the limit of "
            f"{ARGON2_MAX_MEMORY_KIB} KiB (1 GiB)"
        )
    if params.time_cost > ARGON2_MAX_ITERATIONS:
        return (
            f"asks for {params.time_cost} iterations, more than the limit of "
            f"{ARGON2_MAX_ITERATIONS}"
        )
    if params.parallelism > ARGON2_MAX_PARALLELISM:
        return (
            f"asks for parallelism {params.parallelism}, more than the limit of "
            f"{ARGON2_MAX_PARALLELISM}"
        )
    if (
        params.time_cost < 1
        or params.parallelism < 1
        or params.memory_cost < 8 * params.parallelism
    ):
        return "has impossible parameters (argon2 needs t>=1, p>=1 and m>=8*p)"
    salt = _b64_bytes(found["salt"])
    tag = _b64_bytes(found["tag"])
    if salt is None or tag is None:
        return "has a salt or hash that is not valid unpadded base64"
    if not SALT_RANGE[0] <= len(salt) <= SALT_RANGE[1]:
        return f"has a {len(salt)}-byte salt; use {SALT_RANGE[0]} to {SALT_RANGE[1]} bytes"
    if not HASH_RANGE[0] <= len(tag) <= HASH_RANGE[1]:
        return f"has a {len(tag)}-byte hash; use {HASH_RANGE[0]} to {HASH_RANGE[1]} bytes"
    return None


def normalise_password(password: str) -> bytes:
    """The bytes that are hashed for ``password``: NFKC, then UTF-8.

    Lone surrogates (possible from JSON ``"\\ud800"``) are encoded with ``surrogatepass`` so
    that any str hashes deterministically instead of raising.
    """
    return unicodedata.normalize("NFKC", password).encode("utf-8", "surrogatepass")


class PasswordHasher:
    """argon2id with the configured parameters, plus a dummy verify for unknown users.

    How many hashes run at once is capped by the caller (``server.core.hashcap.HashGate``), which
    can then answer a flood with a generic failure instead of queueing forever.
    """

    def __init__(self, params: PasswordHashConfig | None = None) -> None:
        self.params = params if params is not None else PasswordHashConfig()
        self._hasher = argon2.PasswordHasher(
            time_cost=self.params.iterations,
            memory_cost=self.params.memory_kib,
            parallelism=self.params.parallelism,
            hash_len=HASH_LENGTH,
            salt_len=SALT_LENGTH,
            type=argon2.Type.ID,
        )
        # The dummy hash needs no hashing: a random tag under a random salt costs exactly what a
        # real verify with these parameters costs, and no password can match it.
        salt = base64.b64encode(secrets.token_bytes(SALT_LENGTH)).decode("ascii").rstrip("=")
        tag = base64.b64encode(secrets.token_bytes(HASH_LENGTH)).decode("ascii").rstrip("=")
        p = self.params
        self._dummy = (
            f"$argon2id$v=19$m={p.memory_kib},t={p.iterations},p={p.parallelism}${salt}${tag}"
        ).encode("ascii")

    def hash(self, password: str) -> str:
        """Return a new argon2id PHC string for ``password`` with the configured parameters."""
        return self._hasher.hash(normalise_password(password))

    def verify(self, phc: str, password: str) -> bool:
        """True when ``password`` matches ``phc``.

        Never raises for bad input: a mismatch, a malformed hash or one outside the parameter
        bounds all give False. A hash that fails :func:`check_hash` is not handed to argon2 at
        all; a dummy verify runs instead so that the answer takes the usual time. A legacy hash
        is verified by :mod:`server.core.legacy_hashes` (the password's bytes as typed; its
        cost, cheaper or dearer than the configured one, is evened out by the caller's padding
        of failures, :class:`server.core.hashcap.HashTimer`).
        """
        secret = normalise_password(password)
        if check_hash(phc) is not None:
            self._verify_dummy(secret)
            return False
        if not is_native(phc):
            return legacy_hashes.verify(phc, password)
        try:
            return verify_secret(phc.encode("ascii"), secret, Type.ID)
        except (VerificationError, InvalidHashError):
            return False

    def dummy_verify(self, password: str) -> bool:
        """Spend what a real verify costs and return False.

        Called for unknown, disabled or banned users so that the time of a failed login does not
        reveal which accounts exist (SPEC §3.4).
        """
        self._verify_dummy(normalise_password(password))
        return False

    def _verify_dummy(self, secret: bytes) -> None:
        with contextlib.suppress(VerificationError, InvalidHashError):
            verify_secret(self._dummy, secret, Type.ID)

    def needs_rehash(self, phc: str) -> bool:
        """True when ``phc`` was not made with the configured parameters (or is not acceptable,
        or is a legacy hash: every one is rewritten as argon2id at the next sign-in).

        After a successful login the caller may then store ``hash(password)`` instead.
        """
        if check_hash(phc) is not None or not is_native(phc):
            return True
        return self._hasher.check_needs_rehash(phc)
