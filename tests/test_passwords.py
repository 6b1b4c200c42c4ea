"""Tests for server.core.passwords: argon2id hashing, verification, bounds and the dummy verify."""

from __future__ import annotations

import base64
import hashlib
import typing as t

import argon2
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import server.core.passwords
from server.core.config import PasswordHashConfig
from server.core.passwords import PasswordHasher
from server.core.passwords import check_hash
from server.core.passwords import is_legacy
from server.core.passwords import scheme_of

CHEAP = PasswordHashConfig(memory_kib=8, iterations=1, parallelism=1)
SALT = "c2FsdHNhbHRzYWx0c2FsdA"  # 16 bytes
TAG = "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"  # 32 bytes


def phc(kind: str = "argon2id", version: str = "v=19", params: str = "m=8,t=1,p=1") -> str:
    """A syntactically valid PHC string with the given parts."""
    return f"${kind}${version}${params}${SALT}${TAG}"


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    """A hasher with the cheapest parameters, so the tests stay fast."""
    return PasswordHasher(CHEAP)


def test_hash_then_verify(hasher: PasswordHasher) -> None:
    """A password verifies against its own hash and a different one does not."""
    stored = hasher.hash("correct horse battery staple")
    assert hasher.verify(stored, "correct horse battery staple")
    assert not hasher.verify(stored, "correct horse battery stapl")


def test_hash_uses_configured_parameters() -> None:
    """New hashes are argon2id with exactly the configured memory, time and parallelism."""
    params = PasswordHashConfig(memory_kib=32, iterations=2, parallelism=2)
    got = argon2.extract_parameters(PasswordHasher(params).hash("pw"))
    assert (got.type, got.memory_cost, got.time_cost, got.parallelism) == (
        argon2.Type.ID,
        32,
        2,
        2,
    )


def test_hashes_are_salted(hasher: PasswordHasher) -> None:
    """Two hashes of one password differ (random salt)."""
    assert hasher.hash("pw") != hasher.hash("pw")


def test_password_is_not_trimmed_or_case_folded(hasher: PasswordHasher) -> None:
    """White space and case are part of the password (ASVS 6.2.8)."""
    stored = hasher.hash(" Secret ")
    assert hasher.verify(stored, " Secret ")
    assert not hasher.verify(stored, "Secret")
    assert not hasher.verify(stored, " secret ")


@pytest.mark.parametrize(
    ("set_as", "typed"),
    [
        ("\u00e9t\u00e9", "e\u0301te\u0301"),
        ("e\u0301te\u0301", "\u00e9t\u00e9"),
        ("\ufb01x", "fix"),
    ],
    ids=["composed-then-decomposed", "decomposed-then-composed", "ligature"],
)
def test_nfkc_normalisation(hasher: PasswordHasher, set_as: str, typed: str) -> None:
    """Passwords are NFKC-normalised at set and verify time alike (NIST SP 800-63B)."""
    assert hasher.verify(hasher.hash(set_as), typed)


def test_lone_surrogate_does_not_raise(hasher: PasswordHasher) -> None:
    """A lone surrogate (possible from JSON) hashes and verifies instead of raising."""
    stored = hasher.hash("a\ud800b")
    assert hasher.verify(stored, "a\ud800b")
    assert not hasher.verify(stored, "ab")


BAD_HASHES = [
    ("", "not a hash"),
    ("correct horse", "plain-text"),
    ("$2b$16$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW", "bcrypt"),
    ("$1$saltsalt$qjXMvbEw8oaL.CzflDugX/", "md5-crypt"),
    (phc("argon2i", params="m=4194304,t=1,p=1"), "memory"),
    (phc("argon2d", version="v=16"), "version"),
    ("$pbkdf2-sha512$25000$c2FsdA$aGFzaA", "pbkdf2-sha512"),
    (phc(params="m=4194304,t=1,p=1"), "memory"),
    (phc(params="m=65536,t=1000,p=1"), "iterations"),
    (phc(params="m=65536,t=1,p=255"), "parallelism"),
    (phc(params="m=8,t=1,p=4"), "impossible"),
    (phc(params="m=8,t=0,p=1"), "impossible"),
    (phc(version="v=16"), "version"),
    (f"$argon2id$m=8,t=1,p=1${SALT}${TAG}", "well-formed"),
    (phc(params="m=٨,t=1,p=1"), "well-formed"),
    (phc(params="m= 8,t=1,p=1"), "well-formed"),
    (f"$argon2id$v=19$m=8,t=1,p=1${SALT}", "well-formed"),
    (f"$argon2id$v=19$m=8,t=1,p=1$!!!!${TAG}", "well-formed"),
    (f"$argon2id$v=19$m=8,t=1,p=1${SALT}$aGFzaGhhc2hoYXNo", "16 to 128"),
    (f"$argon2id$v=19$m=8,t=1,p=1$c2FsdA${TAG}", "8 to 64"),
    (f"$argon2id$v=19$m=8,t=1,p=1${SALT}${TAG[:-1]}h", "base64"),
    (f"$argon2id$v=19$m=8,t=1,p=1${SALT}${TAG}BB", "base64"),
    (phc() + "\n", "well-formed"),
]
BAD_IDS = [
    "empty", "plain-text", "bcrypt-cost-16", "md5-crypt", "argon2i-4GiB", "argon2d-v16",
    "pbkdf2", "memory-4GiB", "t-1000", "p-255", "m-below-8p", "t-0", "version-16",
    "no-version", "arabic-digit", "space",
    "missing-tag", "bad-salt", "short-tag", "short-salt", "non-canonical-base64",
    "base64-length", "newline",
]  # fmt: skip


@pytest.mark.parametrize(("stored", "reason"), BAD_HASHES, ids=BAD_IDS)
def test_check_hash_refuses(stored: str, reason: str) -> None:
    """Hashes that are not acceptable argon2id PHC strings are refused with a reason."""
    found = check_hash(stored)
    assert found is not None
    assert reason in found


@pytest.mark.parametrize("stored", [1, None, b"$argon2id$"], ids=["int", "none", "bytes"])
def test_check_hash_refuses_non_strings(stored: object) -> None:
    """A value that is not a string is refused, not crashed on."""
    assert check_hash(stored) == "must be a string holding a password hash"


def test_check_hash_accepts_bounds() -> None:
    """Hashes exactly at the limits (1 GiB, t=20, p=16) are accepted."""
    assert check_hash(phc(params="m=1048576,t=20,p=16")) is None
    assert check_hash(phc()) is None


@pytest.mark.parametrize(("stored", "reason"), BAD_HASHES, ids=BAD_IDS)
def test_verify_never_raises(hasher: PasswordHasher, stored: str, reason: str) -> None:
    """verify() answers False for any unacceptable hash instead of raising."""
    assert hasher.verify(stored, "correct horse") is False


def test_verify_false_for_tag_mismatch(hasher: PasswordHasher) -> None:
    """A well-formed hash with a wrong tag fails verification."""
    assert hasher.verify(phc(), "anything") is False


class Recorder:
    """Stands in for argon2's verify_secret, remembering the hashes it was given."""

    def __init__(self) -> None:
        self.hashes: list[bytes] = []

    def __call__(self, stored: bytes, secret: bytes, kind: argon2.Type) -> t.Literal[True]:
        self.hashes.append(stored)
        raise argon2.exceptions.VerifyMismatchError("recorded")


def test_out_of_bounds_hash_never_reaches_argon2(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 4 GiB hash is not handed to argon2; a dummy verify with the configured params runs."""
    recorder = Recorder()
    monkeypatch.setattr(server.core.passwords, "verify_secret", recorder)
    assert hasher.verify(phc(params="m=4194304,t=1,p=1"), "pw") is False
    assert len(recorder.hashes) == 1
    got = argon2.extract_parameters(recorder.hashes[0].decode())
    assert (got.memory_cost, got.time_cost, got.parallelism) == (8, 1, 1)


def test_dummy_verify_costs_a_configured_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    """dummy_verify runs one argon2id verify with the configured parameters and returns False."""
    params = PasswordHashConfig(memory_kib=64, iterations=2, parallelism=2)
    recorder = Recorder()
    monkeypatch.setattr(server.core.passwords, "verify_secret", recorder)
    assert PasswordHasher(params).dummy_verify("pw") is False
    got = argon2.extract_parameters(recorder.hashes[0].decode())
    assert (got.type, got.memory_cost, got.time_cost, got.parallelism) == (argon2.Type.ID, 64, 2, 2)
    assert (got.salt_len, got.hash_len) == (16, 32)


def test_dummy_verify_really_verifies(hasher: PasswordHasher) -> None:
    """Without a stand-in, dummy_verify runs argon2 and never matches."""
    assert hasher.dummy_verify("") is False
    assert hasher.dummy_verify("pw") is False


def test_needs_rehash(hasher: PasswordHasher) -> None:
    """A hash made with other parameters, or an unacceptable one, needs a rehash."""
    assert not hasher.needs_rehash(hasher.hash("pw"))
    other = PasswordHasher(PasswordHashConfig(memory_kib=16, iterations=1, parallelism=1))
    assert hasher.needs_rehash(other.hash("pw"))
    assert hasher.needs_rehash("plain")
    assert hasher.needs_rehash(phc(params="m=4194304,t=1,p=1"))
    # argon2id with a parameter left out (Authelia reads it with go-crypt's default): legacy
    assert hasher.needs_rehash(phc(params="m=8,t=1"))


#: Authelia's documented example (password "password") and legacy hashes of "password".
AUTHELIA_ARGON2ID = (
    "$argon2id$v=19$m=65536,t=3,p=2$BpLnfgDsc2WD8F2q$o/vzA4myCqZZ36bUGsDY//8mKUYNZZaR0t4MFFSs+iM"
)
LEGACY = {
    "bcrypt": "$2a$10$3o9IF74Phgdz4Q6j7K7s0unovt.v.7YBLKFyV73pGTd2.tfdz/F8e",
    "argon2i": "$argon2i$v=19$m=65536,t=3,p=4$ScGiEq8Low5K7B7/IwYxgA"
    "$q6Zo0u/aDtZk404ZNmBi33WXkC5g0y60QdOQQ3oziyU",
    "sha256-crypt": "$5$4X/QmdRP6q7Ilhpc$2sperIXN6jawEYd8a8arineQHqYIEGURjZGdD4H4xs8",
}


def test_native_argon2id_is_not_legacy(hasher: PasswordHasher) -> None:
    """authctl's own form (Authelia's usual one too) is argon2id, verified here, not legacy."""
    assert scheme_of(AUTHELIA_ARGON2ID) == "argon2id"
    assert not is_legacy(AUTHELIA_ARGON2ID)
    assert hasher.verify(AUTHELIA_ARGON2ID, "password")
    assert scheme_of(hasher.hash("pw")) == "argon2id"
    assert scheme_of("plain") is None
    assert not is_legacy("plain")


@pytest.mark.parametrize(("scheme", "stored"), LEGACY.items(), ids=list(LEGACY))
def test_legacy_hashes_verify_and_need_a_rehash(
    hasher: PasswordHasher, scheme: str, stored: str
) -> None:
    """Authelia's other schemes are accepted, verified, and always due for a rehash."""
    assert check_hash(stored) is None
    assert scheme_of(stored) == scheme
    assert is_legacy(stored)
    assert hasher.verify(stored, "password")
    assert not hasher.verify(stored, "Password")
    assert hasher.needs_rehash(stored)


def test_legacy_hash_verifies_the_bytes_as_typed(hasher: PasswordHasher) -> None:
    """A legacy hash is checked against the UTF-8 of the password as typed (Authelia hashed
    those bytes), not its NFKC form: "ﬁx" set in Authelia is not "fix"."""
    stored = "$pbkdf2-sha256$1000$c2FsdHNhbHQ$" + pbkdf2_ab64("\ufb01x".encode(), b"saltsalt")
    assert hasher.verify(stored, "\ufb01x")
    assert not hasher.verify(stored, "fix")


def pbkdf2_ab64(secret: bytes, salt: bytes) -> str:
    """The key of a pbkdf2-sha256 hash (1000 iterations) in passlib's ab64."""
    key = hashlib.pbkdf2_hmac("sha256", secret, salt, 1000)
    return base64.b64encode(key).decode().rstrip("=").replace("+", ".")


def test_default_parameters() -> None:
    """Without parameters the hasher uses the config defaults."""
    assert PasswordHasher().params == PasswordHashConfig()


@settings(max_examples=50)
@given(password=st.text(max_size=40))
def test_round_trip_any_text(password: str) -> None:
    """Any str hashes and then verifies (and never raises)."""
    hasher = PasswordHasher(CHEAP)
    assert hasher.verify(hasher.hash(password), password)


@settings(max_examples=200)
@given(stored=st.text(max_size=120))
def test_verify_total_on_arbitrary_text(stored: str) -> None:
    """verify() and check_hash() are total: any text gives a bool or a reason."""
    hasher = PasswordHasher(CHEAP)
    assert hasher.verify(stored, "pw") is False
    assert check_hash(stored) is None or isinstance(check_hash(stored), str)
