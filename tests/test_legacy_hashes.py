"""Tests for server.core.legacy_hashes: Authelia's hashes verify, and every cost is bounded.

The known answers come from outside authctl: go-crypt's test vectors (the library Authelia
reads hashes with; password "password"), Authelia's documentation, ``openssl passwd -5/-6``,
pyca ``bcrypt.hashpw``, libpass's ``pbkdf2_sha*`` (passlib's encoding), ``hashlib.scrypt`` and
argon2-cffi's ``hash_secret``. They are copied here, never read from elsewhere at run time.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from server.core import legacy_hashes
from server.core.legacy_hashes import Refused
from server.core.legacy_hashes import check
from server.core.legacy_hashes import normalise
from server.core.legacy_hashes import parse
from server.core.legacy_hashes import scheme
from server.core.legacy_hashes import verify

UTF8_PASSWORD = "pässwörd ✓"
#: (scheme, password, hash)
KNOWN = [
    # go-crypt's vectors (t_*_test.go), password "password"
    ("bcrypt", "password", "$2a$10$3o9IF74Phgdz4Q6j7K7s0unovt.v.7YBLKFyV73pGTd2.tfdz/F8e"),
    ("bcrypt", "password", "$2b$10$3o9IF74Phgdz4Q6j7K7s0unovt.v.7YBLKFyV73pGTd2.tfdz/F8e"),
    ("bcrypt", "password", "$2y$10$3o9IF74Phgdz4Q6j7K7s0unovt.v.7YBLKFyV73pGTd2.tfdz/F8e"),
    ("sha256-crypt", "password", "$5$4X/QmdRP6q7Ilhpc$2sperIXN6jawEYd8a8arineQHqYIEGURjZGdD4H4xs8"),
    (
        "sha512-crypt",
        "password",
        "$6$rB2PL49BuajVczWm$sA.XUPEt/j6k4kFnO58EDKsEU8rXau47.eSH6lpqc/tgC9Y0BbYcG7H3.KmMMpthWMcip"
        "/xmDn83nTUXK5Vp90",
    ),
    (
        "sha512-crypt",
        "password",
        "$6$rounds=1000$eG49klxUKySvBpju$.1paw1pj51FdmvNAnsNoX8lyHMdH/S74DfkZnWWTOnGI9keTp/DXjR9ro5"
        "kJrncPSF5fc.krAwdkBxc4C8kSU1",
    ),
    (
        "argon2d",
        "password",
        "$argon2d$v=19$m=65536,t=3,p=4$HV/RIiFSYEMoRYqBcFnqfg$eGNckPZjkL2xOIHZv8Q4ROg5xbcdD8ijIJOgPwVAPmA",
    ),
    (
        "argon2i",
        "password",
        "$argon2i$v=19$m=65536,t=3,p=4$ScGiEq8Low5K7B7/IwYxgA$q6Zo0u/aDtZk404ZNmBi33WXkC5g0y60QdOQQ3oziyU",
    ),
    (
        "pbkdf2-sha1",
        "password",
        "$pbkdf2$100000$atrXFCWdBlpmzIi/nXwJOw$20Lsx44nZwmh09bjGHFJ//oRZh8",
    ),
    (
        "pbkdf2-sha224",
        "password",
        "$pbkdf2-sha224$100000$qRzrfXPp6ilID9bO89rJkA$akPivgY3p3gLDj8Kd7agycHkM5b0xlTxeLEsqg",
    ),
    (
        "pbkdf2-sha256",
        "password",
        "$pbkdf2-sha256$100000$aoWHXwyz0im1Hqg93.N.tA$bO5LsjmnnPle2Xm9RE6W1PMWdJTy1TnEia1TLzynuIQ",
    ),
    (
        "pbkdf2-sha384",
        "password",
        "$pbkdf2-sha384$100000$GIZt3eMjZrEs0ycxed3zHg$o8IZWpxd.shbcATBSk9nHqktuvLTv1YeLYowxZM7mO5hhWL"
        "a3s4tVFejl9NH9jSO",
    ),
    (
        "pbkdf2-sha512",
        "password",
        "$pbkdf2-sha512$100000$bHfSOIyj0UDoCo1Q4Bz49w$v/olF/T/R6On84NuHlNCiI/sUwsdyOC7J4cO8Cz7feNtLHHE"
        "KNjayeEZj0b/Js/cgkMK6zLFw2vynLo2el028Q",
    ),
    (
        "scrypt",
        "password",
        "$scrypt$ln=4,r=8,p=1$ySYknWRq9On6wWfpsOUQQg$C28LpWaXQ3P0/dcbN0njxJx4VL/UCQIAWlnYAJgT/mY",
    ),
    # Authelia's documentation and its own hashing tests
    (
        "sha512-crypt",
        "password",
        "$6$rounds=50000$aFr56HjK3DrB8t3S$zhPQiS85cgBlNhUKKE6n/AHMlpqrvYSnSL3fEVkK0yHFQ.oFFAd8D4OhPAy"
        "18K5U61Z2eBhxQXExGU/eknXlY1",
    ),
    (
        "sha512-crypt",
        "yourpassword",
        "$6$rounds=50000$BpLnfgDsc2WD8F2q$be7OyobnQ8K09dyDiGjY.cULh4yDePMh6CUMpLwF4WHTJmLcPE2ijM2ZsqZL"
        ".hVAANojEfDu3sU9u9uD7AeBJ/",
    ),
    # openssl passwd -6 / -5 -salt … (implicit 5,000 rounds)
    (
        "sha512-crypt",
        "correct horse",
        "$6$Wq3mVv6y8Qk2$oxuMPQqPVJ1Dn.6KE9VSL7hz8Eaz6wn1gNfw.vPCzaBw0fl9bIvuuo1P6GFTm60VHSWWWWzhUfe"
        "PElps8JYOF.",
    ),
    (
        "sha256-crypt",
        "correct horse",
        "$5$Wq3mVv6y8Qk2$z7L0JBfmTYbsdB1MAtZZtI0NUPJRXLEXkOsPnlerxA0",
    ),
    (
        "sha512-crypt",
        UTF8_PASSWORD,
        "$6$saltsalt$5iylxQxyoVdCHt/L9wrvcs2X1UdDdc7mvifLz.M4HpSpc4CKw2pNQtolaPMEG.N1K20i3raRkX/euVzl"
        "7526a0",
    ),
    # pyca bcrypt.hashpw
    ("bcrypt", UTF8_PASSWORD, "$2b$05$abcdefghijklmnopqrstuucXzl.EdFiYZ8M9ef3QFcQ5vnOe67Nqe"),
    ("bcrypt", "x" * 72, "$2b$04$abcdefghijklmnopqrstuubzadhGtS2zEF.gu0yd0opP6cVzb.e0i"),
    # libpass pbkdf2_sha256 / pbkdf2_sha1 / pbkdf2_sha512 (passlib's encoding)
    (
        "pbkdf2-sha256",
        "correct horse",
        "$pbkdf2-sha256$29000$MDEyMzQ1Njc4OWFiY2RlZg$uHVoxjLD1v3uqpdY8ehNPGUYMiKj8ROQSRwMSE033NY",
    ),
    (
        "pbkdf2-sha1",
        "correct horse",
        "$pbkdf2$131000$MDEyMzQ1Njc4OWFiY2RlZg$v.Rl5HLt6vzYJOC/iHnYbajH9OY",
    ),
    (
        "pbkdf2-sha512",
        UTF8_PASSWORD,
        "$pbkdf2-sha512$25000$MDEyMzQ1Njc4OWFiY2RlZg$8Ttornv4McLh3Wqzf.XMp1MSBIJN20ndqArduXl/YwYjZBHF2"
        "IP70mRCRGCFerlZJFV38IRcAVYa.avWEJiHdA",
    ),
    # hashlib.scrypt, go-crypt's encoding
    (
        "scrypt",
        "correct horse",
        "$scrypt$ln=10,r=8,p=2$MDEyMzQ1Njc4OWFiY2RlZg$I4YuHpx/6xJJ4+sk74hQU+KhW++gPE8aHzXbHijxgzg",
    ),
    # argon2-cffi hash_secret (libargon2)
    (
        "argon2i",
        "password",
        "$argon2i$v=19$m=32768,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$IjEkGU6b9rI79ISOfNPqptQQ8QY1D6JMmoA+FkQLUb0",
    ),
]
KNOWN_IDS = [f"{i}-{case[0]}" for i, case in enumerate(KNOWN)]

#: Parameters left out take go-crypt's defaults (argon2 t=1, p=4, m=32768; scrypt r=8, p=1):
#: each is a known answer above (or libargon2's, for m=32768,t=1,p=4) with those parameters
#: dropped.
ARGON2ID_DEFAULTS = "c2FsdHNhbHRzYWx0c2FsdA$476W1Xq7gbgv1lAidu+4eQxtBdosO9z8i9T9GGzrr0k"
MISSING = [
    ("argon2id", f"$argon2id$v=19$m=32768,t=1,p=4${ARGON2ID_DEFAULTS}"),  # complete, for contrast
    ("argon2id", f"$argon2id$v=19$p=4${ARGON2ID_DEFAULTS}"),
    ("argon2id", f"$argon2id$v=19$m=32768${ARGON2ID_DEFAULTS}"),
    ("argon2id", f"$argon2id$v=19$t=1,m=32768,k=32${ARGON2ID_DEFAULTS}"),
    ("argon2id", f"$argon2id$m=32768,t=1$v=19${ARGON2ID_DEFAULTS}"),
    (
        "argon2id",
        "$argon2id$v=19$m=65536,t=3$QmkpoTw3W72fzd7RrWofuw$r0xig+VVj7ynnE2S1jrE5us7dPKv2S2ff6Z6ts4mVuU",
    ),
    ("scrypt", "$scrypt$ln=4$ySYknWRq9On6wWfpsOUQQg$C28LpWaXQ3P0/dcbN0njxJx4VL/UCQIAWlnYAJgT/mY"),
    (
        "scrypt",
        "$scrypt$p=1,ln=4$ySYknWRq9On6wWfpsOUQQg$C28LpWaXQ3P0/dcbN0njxJx4VL/UCQIAWlnYAJgT/mY",
    ),
]


@pytest.mark.parametrize(("name", "password", "stored"), KNOWN, ids=KNOWN_IDS)
def test_known_answers(name: str, password: str, stored: str) -> None:
    """Each reference hash is accepted, named, and matches its password and nothing else."""
    assert check(stored) is None
    assert scheme(stored) == name
    assert parse(stored).scheme == name
    assert verify(stored, password)
    assert not verify(stored, password + "x")
    assert not verify(stored, password[:-1])
    assert not verify(stored, "wrong_password")


@pytest.mark.parametrize(("name", "password", "stored"), KNOWN, ids=KNOWN_IDS)
def test_a_changed_hash_does_not_match(name: str, password: str, stored: str) -> None:
    """One character of the stored key changed: the right password no longer matches."""
    last = stored[-2]
    changed = stored[:-2] + ("A" if last != "A" else "B") + stored[-1]
    assert not verify(changed, password)


@pytest.mark.parametrize(("name", "stored"), MISSING, ids=[s for _, s in MISSING])
def test_missing_parameters_take_go_crypts_defaults(name: str, stored: str) -> None:
    """Parameters left out of an argon2 or scrypt hash take the defaults Authelia reads them
    with; ``k=`` is ignored and the two parameter segments may come in either order."""
    assert check(stored) is None
    assert scheme(stored) == name
    assert verify(stored, "password")
    assert not verify(stored, "Password")


def test_a_wrong_default_would_not_match() -> None:
    """The defaults matter: the same key under other explicit parameters does not match."""
    assert not verify(f"$argon2id$v=19$m=32768,t=1,p=2${ARGON2ID_DEFAULTS}", "password")
    assert not verify(f"$argon2id$v=19$m=32768,t=2,p=4${ARGON2ID_DEFAULTS}", "password")


def test_bcrypt_refuses_passwords_over_72_bytes() -> None:
    """bcrypt reads 72 bytes; a longer password is refused, not truncated to match."""
    stored = "$2b$04$abcdefghijklmnopqrstuubzadhGtS2zEF.gu0yd0opP6cVzb.e0i"  # "x" * 72
    assert verify(stored, "x" * 72)
    assert not verify(stored, "x" * 72 + "y")
    assert not verify(stored, "x" * 71 + "é")  # 73 bytes


def test_passwords_are_their_utf8_bytes() -> None:
    """Legacy hashes see the bytes as typed: the decomposed spelling is another password."""
    stored = KNOWN[KNOWN_IDS.index("18-sha512-crypt")][2]
    assert verify(stored, UTF8_PASSWORD)
    assert not verify(stored, "pa\u0308sswo\u0308rd ✓")


def test_nul_bytes_and_lone_surrogates_never_raise() -> None:
    """A NUL byte (libpass refuses it) or a lone surrogate (from JSON) is simply no match."""
    for _, _, stored in KNOWN:
        assert not verify(stored, "pass\x00word")
        assert not verify(stored, "pass\ud800word")


@pytest.mark.parametrize(
    ("spelled", "plain"),
    [
        (
            "{CRYPT}$5$4X/QmdRP6q7Ilhpc$2sperIXN6jawEYd8a8arineQHqYIEGURjZGdD4H4xs8",
            "$5$4X/QmdRP6q7Ilhpc$2sperIXN6jawEYd8a8arineQHqYIEGURjZGdD4H4xs8",
        ),
        (
            "{ARGON2}$argon2i$v=19$m=65536,t=3,p=4$ScGiEq8Low5K7B7/IwYxgA$q6Zo0u/aDtZk404ZNmBi33WXk"
            "C5g0y60QdOQQ3oziyU",
            "$argon2i$v=19$m=65536,t=3,p=4$ScGiEq8Low5K7B7/IwYxgA$q6Zo0u/aDtZk404ZNmBi33WXkC5g0y60Q"
            "dOQQ3oziyU",
        ),
        (
            "{PBKDF2-SHA256}100000$aoWHXwyz0im1Hqg93.N.tA$bO5LsjmnnPle2Xm9RE6W1PMWdJTy1TnEia1TLzynuIQ",
            "$pbkdf2-sha256$100000$aoWHXwyz0im1Hqg93.N.tA$bO5LsjmnnPle2Xm9RE6W1PMWdJTy1TnEia1TLzynuIQ",
        ),
        (
            "{PBKDF2}100000$atrXFCWdBlpmzIi/nXwJOw$20Lsx44nZwmh09bjGHFJ//oRZh8",
            "$pbkdf2$100000$atrXFCWdBlpmzIi/nXwJOw$20Lsx44nZwmh09bjGHFJ//oRZh8",
        ),
    ],
    ids=["crypt", "argon2", "ldap-pbkdf2-sha256", "ldap-pbkdf2"],
)
def test_ldap_spellings(spelled: str, plain: str) -> None:
    """The ``{CRYPT}``/``{ARGON2}``/``{PBKDF2…}`` spellings go-crypt normalises are read too."""
    assert normalise(spelled) == plain
    assert check(spelled) is None
    assert verify(spelled, "password")


# --------------------------------------------------------------------------- refusals

SALT16 = "c2FsdHNhbHRzYWx0c2FsdA"
KEY32 = "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
SHA512_KEY = "a" * 86
REFUSED = [
    ("hunter2", "plain-text"),
    ("$plaintext$hunter2", "plain-text password"),
    ("$1$saltsalt$qjXMvbEw8oaL.CzflDugX/", "md5-crypt"),
    ("$sha1$48000$salt$key", "sha1-crypt"),
    ("$y$j9T$salt$key", "yescrypt"),
    ("$2x$10$3o9IF74Phgdz4Q6j7K7s0unovt.v.7YBLKFyV73pGTd2.tfdz/F8e", "$2x$"),
    (
        "$bcrypt-sha256$v=2,t=2b,r=12$n79VH.0Q2TMWmt3Oqt9uku$Kq4Noyk3094Y2QlB8NdRT8SvGiI4ft2",
        "sha256",
    ),
    ("$md5$salt$key", "'md5' scheme"),
    ("$", "unknown scheme"),
    # bcrypt
    ("$2b$16$3o9IF74Phgdz4Q6j7K7s0unovt.v.7YBLKFyV73pGTd2.tfdz/F8e", "cost 16, more than"),
    ("$2b$31$3o9IF74Phgdz4Q6j7K7s0unovt.v.7YBLKFyV73pGTd2.tfdz/F8e", "cost 31, more than"),
    ("$2b$03$3o9IF74Phgdz4Q6j7K7s0unovt.v.7YBLKFyV73pGTd2.tfdz/F8e", "start at 4"),
    ("$2b$10$3o9IF74Phgdz4Q6j7K7s0unovt.v.7YBLKFyV73pGTd2.tfdz/F8", "well-formed bcrypt"),
    ("$2b$10$3o9IF74Phgdz4Q6j7K7s0unovt.v.7YBLKFyV73pGTd2.tfdz/F8!", "well-formed bcrypt"),
    ("$2b$04$abcdefghijklmnopqrstuabzadhGtS2zEF.gu0yd0opP6cVzb.e0i", "one of . O e u"),
    # sha-crypt
    (f"$6$rounds=2000001$saltsalt${SHA512_KEY}", "more than the limit of 2,000,000"),
    (f"$6$rounds=999999999$saltsalt${SHA512_KEY}", "999999999 rounds"),
    (f"$5$rounds=999$saltsalt${'a' * 43}", "fewer than sha-crypt's minimum of 1000"),
    (f"$6$round=5000$saltsalt${SHA512_KEY}", "is not rounds=N"),
    (f"$6$rounds=5000$saltsalt${SHA512_KEY}$x", "well-formed sha512-crypt"),
    ("$6$saltsalt$tooshort", "well-formed sha512-crypt"),
    (f"$6$saltsaltsaltsaltsalt${SHA512_KEY}", "well-formed sha512-crypt"),
    (f"$6${SHA512_KEY}", "well-formed sha512-crypt"),
    # pbkdf2
    (f"$pbkdf2-sha512$3000001${SALT16}${'a' * 86}", "more than the limit of 3,000,000"),
    (f"$pbkdf2$1000000${SALT16}${'a' * 86}", "x 4 block(s) of 20 bytes"),
    (f"$pbkdf2-sha256$0${SALT16}${KEY32}", "0 iterations"),
    (f"$pbkdf2-sha256$-5${SALT16}${KEY32}", "well-formed pbkdf2-sha256"),
    (f"$pbkdf2-sha256$1000${SALT16}", "well-formed pbkdf2-sha256"),
    (f"$pbkdf2-sha256$1000${SALT16}$aGFz+GhhaGFzaGhhc2hoYXNo", "hash is not base64"),
    (f"$pbkdf2-sha256$1000$c2F=${KEY32}", "salt is not base64"),
    (f"$pbkdf2-sha256$1000$a${KEY32}", "salt is not base64"),
    (f"$pbkdf2-sha256$1000${SALT16}$aGFzaA", "4-byte hash"),
    (f"$pbkdf2-sha256$1000$${KEY32}", "0-byte salt"),
    (f"$pbkdf2-sha256$1000${'a' * 1400}${KEY32}", "1050-byte salt"),
    (f"$pbkdf2-sha256$1000${SALT16}${'a' * 200}", "150-byte hash"),
    # scrypt
    (f"$scrypt$ln=23,r=2,p=1${SALT16}${KEY32}", "2^23*2*1"),
    (f"$scrypt$ln=19,r=8,p=2${SALT16}${KEY32}", "2^19*8*2, more than the limit of 2^22"),
    (f"$scrypt$ln=40,r=8,p=1${SALT16}${KEY32}", "more than the limit"),
    (f"$scrypt$ln=16,r=1,p=1${SALT16}${KEY32}", "ln < 16*r"),
    (f"$scrypt$ln=0,r=8,p=1${SALT16}${KEY32}", "impossible"),
    (f"$scrypt$ln=4,r=8,p=0${SALT16}${KEY32}", "impossible"),
    (f"$scrypt$ln=4,n=8${SALT16}${KEY32}", "'n=8' is not one of its parameters"),
    (f"$scrypt$${SALT16}${KEY32}", "'' is not one of its parameters"),
    (f"$scrypt$ln=4,ln=5${SALT16}${KEY32}", "'ln=5' is not one of its parameters"),
    (f"$scrypt$ln=4${SALT16}", "well-formed scrypt"),
    (f"$scrypt$ln=4${SALT16}$!!!!", "hash is not base64"),
    # argon2 (other than authctl's own form)
    (f"$argon2i$v=19$m=4194304,t=1,p=1${SALT16}${KEY32}", "4194304 KiB"),
    (f"$argon2i$v=19$m=65536,t=21,p=1${SALT16}${KEY32}", "21 iterations"),
    (f"$argon2d$v=19$m=65536,t=1,p=17${SALT16}${KEY32}", "parallelism 17"),
    (f"$argon2id$v=19$m=4194304${SALT16}${KEY32}", "4194304 KiB"),  # t and p left out
    (f"$argon2i$v=19$m=16,t=1,p=4${SALT16}${KEY32}", "impossible"),
    (f"$argon2i$v=19$m=65536,t=0,p=1${SALT16}${KEY32}", "impossible"),
    (f"$argon2i$v=16$m=65536,t=1,p=1${SALT16}${KEY32}", "version 16"),
    (f"$argon2i$v=19$m=65536,t=1,x=1${SALT16}${KEY32}", "'x=1' is not one of its parameters"),
    (f"$argon2i$v=19$m=٨,t=1,p=1${SALT16}${KEY32}", "'m=٨' is not one of its parameters"),
    (f"$argon2i$m=65536,t=1,p=1${SALT16}${KEY32}", "well-formed argon2i"),
    (f"$argon2i$v=19$$m=65536${SALT16}${KEY32}", "well-formed argon2i"),
    (f"$argon2i$v=19$m=65536$c2FsdA${KEY32}", "4-byte salt"),
    (f"$argon2i$v=19$m=65536${SALT16}${KEY32}\n", "hash is not base64"),
]


@pytest.mark.parametrize(("stored", "reason"), REFUSED, ids=[r for _, r in REFUSED])
def test_refused_with_a_reason(stored: str, reason: str) -> None:
    """Malformed, unknown and over-the-bound hashes are refused, saying why."""
    found = check(stored)
    assert found is not None
    assert reason in found, found
    assert scheme(stored) is None
    assert verify(stored, "password") is False
    with pytest.raises(Refused, match=r".+"):
        parse(stored)


@pytest.mark.parametrize(
    "stored",
    [
        "$2b$31$3o9IF74Phgdz4Q6j7K7s0unovt.v.7YBLKFyV73pGTd2.tfdz/F8e",  # days
        f"$6$rounds=999999999$saltsalt${SHA512_KEY}",  # minutes
        f"$pbkdf2-sha512$2147483647${SALT16}${'a' * 86}",  # tens of minutes
        f"$scrypt$ln=30,r=8,p=1${SALT16}${KEY32}",  # 128 GiB
        f"$argon2id$v=19$m=65536,t=4294967295,p=1${SALT16}${KEY32}",  # hours
    ],
    ids=["bcrypt-31", "sha-crypt-1e9", "pbkdf2-2^31", "scrypt-2^30", "argon2-t-2^32"],
)
def test_over_the_bound_never_reaches_a_hash_function(stored: str) -> None:
    """A hand-edited cost is refused before any hashing: were it hashed, this test would
    run far past pytest's 60-second timeout (or run out of memory)."""
    assert verify(stored, "password") is False


def test_limits_themselves_are_accepted() -> None:
    """Hashes exactly at each limit load (no hashing happens in check)."""
    assert check("$2b$15$3o9IF74Phgdz4Q6j7K7s0unovt.v.7YBLKFyV73pGTd2.tfdz/F8e") is None
    assert check(f"$6$rounds=2000000$saltsalt${SHA512_KEY}") is None
    assert check(f"$5$rounds=1000$saltsalt${'a' * 43}") is None
    assert check(f"$pbkdf2-sha512$3000000${SALT16}${'a' * 86}") is None  # 64 bytes: one block
    assert check(f"$pbkdf2$750000${SALT16}${'a' * 106}") is None  # 80 bytes: four sha1 blocks
    assert check(f"$scrypt$ln=19,r=8,p=1${SALT16}${KEY32}") is None
    assert check(f"$scrypt$ln=21,r=2,p=1${SALT16}${KEY32}") is None
    assert check(f"$argon2i$v=19$m=1048576,t=20,p=16${SALT16}${KEY32}") is None


def test_bounds_sit_above_authelias_defaults() -> None:
    """Authelia's default costs (docs: bcrypt 12, sha2crypt 50,000, pbkdf2 sha512 310,000,
    scrypt ln=16 r=8 p=1) load with room to spare."""
    assert legacy_hashes.BCRYPT_MAX_COST >= 12 + 3
    assert legacy_hashes.SHA_CRYPT_MAX_ROUNDS >= 10 * 50_000
    assert legacy_hashes.PBKDF2_MAX_WORK >= 5 * 310_000
    assert legacy_hashes.SCRYPT_MAX_WORK >= 4 * (1 << 16) * 8


SCHEME_PREFIXES = ["$argon2id$", "$argon2i$", "$6$", "$5$", "$pbkdf2$", "$scrypt$", "$2b$10$", ""]


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from(SCHEME_PREFIXES),
    rest=st.text(alphabet=st.sampled_from("$=,.+/0123456789lnrptvmkAaZz\n"), max_size=60),
)
def test_total_on_arbitrary_text(prefix: str, rest: str) -> None:
    """check and verify never raise: any text is a reason or a (cheap) verdict."""
    stored = prefix + rest
    reason = check(stored)
    assert reason is None or isinstance(reason, str)
    assert verify(stored, "password") in (True, False)
