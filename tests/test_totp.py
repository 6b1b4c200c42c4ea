"""Tests for TOTP: RFC vectors, strict code parsing, the skew window, replay protection
(sequential, parallel, after a restart) and the TotpService flows (``server.core.totp``)."""

from __future__ import annotations

import base64
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import pyotp
import pytest

from server.core.config import RegulationConfig
from server.core.config import StorageConfig
from server.core.config import TotpConfig
from server.core.errors import Banned
from server.core.regulation import Regulator
from server.core.storage import Storage
from server.core.totp import MalformedCode
from server.core.totp import TotpAlreadyEnrolled
from server.core.totp import TotpService
from server.core.totp import decode_secret
from server.core.totp import encode_secret
from server.core.totp import hotp
from server.core.totp import match_step
from server.core.totp import new_secret
from server.core.totp import parse_code
from server.core.totp import provisioning_uri
from server.core.totp import time_step
from server.core.totp import totp_at
from server.core.totp import verify
from tests.conftest import Clock

# RFC 6238 Appendix B: the seeds are ASCII "1234567890" repeated to the digest's size.
SEEDS = {
    "SHA1": b"12345678901234567890",
    "SHA256": b"12345678901234567890123456789012",
    "SHA512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
RFC6238 = [
    (59, "SHA1", "94287082"),
    (59, "SHA256", "46119246"),
    (59, "SHA512", "90693936"),
    (1111111109, "SHA1", "07081804"),
    (1111111109, "SHA256", "68084774"),
    (1111111109, "SHA512", "25091201"),
    (1111111111, "SHA1", "14050471"),
    (1111111111, "SHA256", "67062674"),
    (1111111111, "SHA512", "99943326"),
    (1234567890, "SHA1", "89005924"),
    (1234567890, "SHA256", "91819424"),
    (1234567890, "SHA512", "93441116"),
    (2000000000, "SHA1", "69279037"),
    (2000000000, "SHA256", "90698825"),
    (2000000000, "SHA512", "38618901"),
    (20000000000, "SHA1", "65353130"),
    (20000000000, "SHA256", "77737706"),
    (20000000000, "SHA512", "47863826"),
]
# RFC 4226 Appendix D: HOTP values of counters 0..9 for the SHA1 seed.
RFC4226 = [
    "755224",
    "287082",
    "359152",
    "969429",
    "338314",
    "254676",
    "287922",
    "162583",
    "399871",
    "520489",
]
MALFORMED = [
    ("\uff11\uff12\uff13\uff14\uff15\uff16", "fullwidth"),
    ("١٢٣٤٥٦", "arabic-indic"),
    ("۱۲۳۴۵۶", "extended-arabic-indic"),
    (123456, "int"),
    (123456.0, "float"),
    (True, "bool"),
    (" 123456", "leading-space"),
    ("123456 ", "trailing-space"),
    ("123456\n", "newline"),
    ("12345", "too-short"),
    ("1234567", "too-long"),
    ("", "empty"),
    ("12 456", "inner-space"),
    ("12345a", "letter"),
    ("+12345", "sign"),
    (None, "null"),
    (["123456"], "list"),
    ({"code": "123456"}, "dict"),
    (b"123456", "bytes"),
]

CONFIG = TotpConfig()
FULLWIDTH = "\uff11\uff12\uff13\uff14\uff15\uff16"
SECRET = encode_secret(SEEDS["SHA1"])
T0 = 1_700_000_000.0  # the conftest clock's start


def code_at(when: float, offset: int = 0, secret: str = SECRET) -> str:
    """The SHA1/6/30 code ``offset`` steps from ``when``."""
    return totp_at(secret, when + offset * 30, CONFIG)


# --------------------------------------------------------------------------- algorithm


@pytest.mark.parametrize(("when", "algorithm", "expected"), RFC6238)
def test_rfc6238_vectors(when: int, algorithm: str, expected: str) -> None:
    """Every RFC 6238 Appendix B value, 8 digits, for SHA1, SHA256 and SHA512."""
    config = TotpConfig(algorithm=algorithm, digits=8, period=30)
    assert totp_at(SEEDS[algorithm], when, config) == expected
    assert totp_at(encode_secret(SEEDS[algorithm]), when, config) == expected


@pytest.mark.parametrize(("counter", "expected"), list(enumerate(RFC4226)))
def test_rfc4226_vectors(counter: int, expected: str) -> None:
    """Every RFC 4226 Appendix D HOTP value."""
    assert hotp(SEEDS["SHA1"], counter) == expected


@pytest.mark.parametrize("algorithm", ["SHA1", "SHA256", "SHA512"])
@pytest.mark.parametrize("digits", [6, 8])
def test_agrees_with_pyotp(algorithm: str, digits: int) -> None:
    """Our codes equal pyotp's for random secrets, both lengths and every algorithm."""
    import hashlib

    secret = new_secret()
    config = TotpConfig(algorithm=algorithm, digits=digits, period=30)
    reference = pyotp.TOTP(secret, digits=digits, digest=getattr(hashlib, algorithm.lower()))
    for when in (0, 59, T0, T0 + 29, T0 + 30, 4_102_444_800):
        assert totp_at(secret, when, config) == reference.at(when)


def test_time_step() -> None:
    """The time step is floor(unix time / period)."""
    assert time_step(59.9, 30) == 1
    assert time_step(60, 30) == 2
    assert time_step(0, 30) == 0


# --------------------------------------------------------------------------- secrets and URIs


def test_new_secret_is_160_random_bits_in_base32() -> None:
    """A new secret is 20 random bytes as unpadded base32; two are never equal."""
    secret = new_secret()
    assert len(secret) == 32
    assert "=" not in secret
    assert len(decode_secret(secret)) == 20
    assert new_secret() != secret
    assert len(decode_secret(new_secret(32))) == 32


def test_new_secret_refuses_weak_sizes() -> None:
    """Fewer than 160 bits is refused (RFC 4226 R6)."""
    with pytest.raises(ValueError, match="at least 20"):
        new_secret(16)


def test_decode_secret_forms() -> None:
    """Lower case, spaces and padding are accepted; bytes pass through; garbage is refused."""
    raw = b"\x01\x02\x03\x04\x05"
    text = base64.b32encode(raw).decode()
    assert decode_secret(text.lower()) == raw
    assert decode_secret(text.rstrip("=")) == raw
    assert decode_secret(" ".join(text[i : i + 4] for i in range(0, len(text), 4))) == raw
    assert decode_secret(raw) is raw
    with pytest.raises(ValueError, match="not base32"):
        decode_secret("not-base32!")


def test_provisioning_uri() -> None:
    """The URI names issuer and user and carries every parameter authenticator apps read."""
    config = TotpConfig(issuer="authctl", algorithm="SHA256", digits=8, period=60)
    uri = provisioning_uri(SECRET, "alice", config)
    assert uri == (
        f"otpauth://totp/authctl:alice?secret={SECRET}&issuer=authctl&algorithm=SHA256"
        "&digits=8&period=60"
    )
    parsed = pyotp.parse_uri(uri)
    assert parsed.name == "alice"
    assert parsed.issuer == "authctl"


def test_provisioning_uri_escapes_names() -> None:
    """Spaces, '&', '?' and '#' in the issuer or the name cannot inject URI parameters."""
    config = TotpConfig(issuer="My Co&x=1")
    uri = provisioning_uri("ABC", "bob@example.com#?x", config)
    parts = urlsplit(uri)
    assert parts.fragment == ""
    query = parse_qs(parts.query, strict_parsing=True)
    assert query["issuer"] == ["My Co&x=1"]
    assert set(query) == {"secret", "issuer", "algorithm", "digits", "period"}
    assert parts.path == "/My%20Co%26x%3D1:bob%40example.com%23%3Fx"


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("value", [v for v, _ in MALFORMED], ids=[i for _, i in MALFORMED])
def test_malformed_codes_are_refused(value: object) -> None:
    """Only a str of exactly 6 ASCII digits passes; everything else is MalformedCode (400)."""
    with pytest.raises(MalformedCode):
        parse_code(value, 6)


def test_malformed_code_is_a_value_error() -> None:
    """MalformedCode is a ValueError, so generic input handling maps it to 400."""
    assert issubclass(MalformedCode, ValueError)


@pytest.mark.parametrize(
    ("value", "digits"),
    [("000000", 6), ("123456", 6), ("12345678", 8), ("123456", (6, 8)), ("12345678", (6, 8))],
)
def test_valid_codes_pass(value: str, digits: int | tuple[int, ...]) -> None:
    """Exactly ``digits`` ASCII digits (leading zeros included) are returned unchanged."""
    assert parse_code(value, digits) == value


def test_eight_digits_when_six_are_expected() -> None:
    """A code of the other length is refused, and lengths other than 6 and 8 match nothing."""
    with pytest.raises(MalformedCode):
        parse_code("12345678", 6)
    with pytest.raises(MalformedCode):
        parse_code("1234567", 7)


# --------------------------------------------------------------------------- the window


@pytest.mark.parametrize(
    ("skew", "offset", "accepted"),
    [
        (1, -2, False),
        (1, -1, True),
        (1, 0, True),
        (1, 1, True),
        (1, 2, False),
        (0, -1, False),
        (0, 0, True),
        (0, 1, False),
    ],
)
def test_window(skew: int, offset: int, accepted: bool) -> None:
    """With skew 1, steps t-1..t+1 pass and ±2 fail; with skew 0 only step t passes."""
    config = TotpConfig(skew=skew)
    step = verify(SECRET, code_at(T0, offset), None, T0, config)
    if accepted:
        assert step == time_step(T0, 30) + offset
    else:
        assert step is None


def test_verify_refuses_steps_not_after_last() -> None:
    """verify returns None for a step at or before last_step (replay), the step otherwise."""
    now_step = time_step(T0, 30)
    code = code_at(T0)
    assert verify(SECRET, code, now_step - 1, T0, CONFIG) == now_step
    assert verify(SECRET, code, now_step, T0, CONFIG) is None
    assert verify(SECRET, code_at(T0, -1), now_step, T0, CONFIG) is None


def test_wrong_code_and_non_ascii_code() -> None:
    """A wrong code, or one with non-ASCII characters, matches no step (no exception)."""
    right = code_at(T0)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    assert match_step(SECRET, wrong, T0, CONFIG) is None
    assert match_step(SECRET, FULLWIDTH, T0, CONFIG) is None


def test_window_never_goes_below_step_zero() -> None:
    """At the epoch the window starts at step 0 (no negative counters)."""
    assert match_step(SECRET, code_at(0), 5, CONFIG) == 0


# --------------------------------------------------------------------------- the service


@pytest.fixture
def storage_config(tmp_path: Path) -> StorageConfig:
    """A storage config with a key file."""
    key = tmp_path / "storage.key"
    key.write_text("9f" * 32)
    key.chmod(0o600)
    return StorageConfig(tmp_path / "authctl.db", key)


@pytest.fixture
def storage(storage_config: StorageConfig, clock: Clock) -> Iterator[Storage]:
    """An open storage on the fake clock."""
    opened = Storage(storage_config, clock)
    yield opened
    opened.close()


@pytest.fixture
def service(storage: Storage, clock: Clock) -> TotpService:
    """A TotpService without regulation."""
    return TotpService(storage, CONFIG, now=clock)


def enrolled(service: TotpService, name: str = "alice") -> str:
    """Enrol ``name`` and return the base32 secret."""
    secret, _ = service.enrol(name)
    return secret


def log_rows(storage: Storage) -> list[tuple[str, str, str, int, int]]:
    """(username, ip, kind, success, banned) of every log row, oldest first."""
    with contextlib.closing(sqlite3.connect(storage.path)) as conn:  # the file, as stored
        rows = conn.execute(
            "SELECT username, ip, kind, success, banned FROM authentication_logs ORDER BY id"
        )
        return [tuple(r) for r in rows]


class TestService:
    """Enrolment, removal and checks through TotpService."""

    def test_enrol_returns_secret_and_uri(self, service: TotpService) -> None:
        """enrol gives a fresh base32 secret and its otpauth URI, and stores it."""
        secret, uri = service.enrol("Alice")
        assert uri.startswith("otpauth://totp/authctl:alice?secret=" + secret)
        assert service.has_totp("ALICE")
        info = service.info("alice")
        assert info is not None
        assert (info.algorithm, info.digits, info.period, info.last_used_at) == (
            "SHA1",
            6,
            30,
            None,
        )

    def test_enrol_with_other_parameters(self, service: TotpService, clock: Clock) -> None:
        """enrol(config=…) stores that algorithm, length and period, and check uses them."""
        config = TotpConfig(algorithm="SHA512", digits=8, period=60)
        secret, uri = service.enrol("alice", config)
        assert "digits=8" in uri
        assert service.check("alice", totp_at(secret, clock.now, config))

    def test_enrol_refuses_to_replace_without_force(self, service: TotpService) -> None:
        """A second enrol fails unless force=True, which makes the old secret useless."""
        old = enrolled(service)
        with pytest.raises(TotpAlreadyEnrolled):
            service.enrol("alice")
        new, _ = service.enrol("alice", force=True)
        assert new != old
        assert not service.check("alice", code_at(T0, secret=old))
        assert service.check("alice", code_at(T0, secret=new))

    def test_remove(self, service: TotpService) -> None:
        """remove deletes the secret; a second remove returns False; checks then fail."""
        secret = enrolled(service)
        assert service.remove("ALICE")
        assert not service.remove("alice")
        assert not service.has_totp("alice")
        assert service.info("alice") is None
        assert not service.check("alice", code_at(T0, secret=secret))

    def test_check_success_updates_last_used(
        self, service: TotpService, storage: Storage, clock: Clock
    ) -> None:
        """A right code passes once, moves last_used_at and logs one successful TOTP row."""
        secret = enrolled(service)
        clock.advance(5)
        assert service.check("alice", code_at(clock.now, secret=secret), "10.0.0.1")
        info = service.info("alice")
        assert info is not None
        assert info.last_used_at == clock.now
        assert log_rows(storage) == [("alice", "10.0.0.1", "TOTP", 1, 0)]

    def test_sequential_replay_fails(
        self, service: TotpService, clock: Clock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The same code twice: the second is refused and logged as reuse (ASVS 2.8.5)."""
        secret = enrolled(service)
        code = code_at(clock.now, secret=secret)
        assert service.check("alice", code)
        with caplog.at_level(logging.WARNING, logger="server.totp"):
            assert not service.check("alice", code)
        assert "reuse" in caplog.text
        assert code not in caplog.text

    def test_previous_step_after_current_fails(self, service: TotpService, clock: Clock) -> None:
        """After the code of step t is used, the code of t-1 (still in the window) fails."""
        secret = enrolled(service)
        assert service.check("alice", code_at(clock.now, secret=secret))
        assert not service.check("alice", code_at(clock.now, -1, secret=secret))
        assert service.check("alice", code_at(clock.now, 1, secret=secret))

    def test_next_period_code_passes(self, service: TotpService, clock: Clock) -> None:
        """Thirty seconds later the new code passes."""
        secret = enrolled(service)
        assert service.check("alice", code_at(clock.now, secret=secret))
        clock.advance(30)
        assert service.check("alice", code_at(clock.now, secret=secret))

    def test_twenty_parallel_submissions_one_success(
        self, service: TotpService, clock: Clock
    ) -> None:
        """20 threads submitting one valid code at once: exactly one succeeds."""
        secret = enrolled(service)
        code = code_at(clock.now, secret=secret)
        barrier = threading.Barrier(20)
        results: list[bool] = []
        lock = threading.Lock()

        def submit() -> None:
            barrier.wait()
            ok = service.check("alice", code)
            with lock:
                results.append(ok)

        threads = [threading.Thread(target=submit) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results.count(True) == 1
        assert len(results) == 20

    def test_replay_after_restart_fails(self, storage_config: StorageConfig, clock: Clock) -> None:
        """A code used before a restart (a new Storage on the same file) is still refused."""
        first = Storage(storage_config, clock)
        service = TotpService(first, CONFIG, now=clock)
        secret = enrolled(service)
        code = code_at(clock.now, secret=secret)
        assert service.check("alice", code)
        first.close()
        second = Storage(storage_config, clock)
        assert not TotpService(second, CONFIG, now=clock).check("alice", code)
        second.close()

    def test_unknown_and_unenrolled_users_fail(
        self, service: TotpService, storage: Storage
    ) -> None:
        """A user without a secret fails like a wrong code, and the attempt is logged."""
        assert not service.check("nobody", "123456", "10.0.0.9")
        assert log_rows(storage) == [("nobody", "10.0.0.9", "TOTP", 0, 0)]

    def test_code_of_the_wrong_length_fails(self, service: TotpService, clock: Clock) -> None:
        """An 8-digit code for a 6-digit enrolment is well-formed but wrong."""
        enrolled(service)
        assert not service.check("alice", "12345678")

    @pytest.mark.parametrize("value", [v for v, _ in MALFORMED], ids=[i for _, i in MALFORMED])
    def test_malformed_codes_are_not_counted(
        self, service: TotpService, storage: Storage, value: object
    ) -> None:
        """A malformed code raises MalformedCode before anything is read or logged."""
        with pytest.raises(MalformedCode):
            service.check("alice", value)
        assert log_rows(storage) == []

    def test_canonical_names(self, service: TotpService, clock: Clock) -> None:
        """Enrolling 'Alice' and checking fullwidth 'ALICE' is one account."""
        secret = enrolled(service, "Alice")
        assert service.check("\uff21\uff2c\uff29\uff23\uff25", code_at(clock.now, secret=secret))

    def test_confirm_stores_and_consumes_the_code(self, service: TotpService, clock: Clock) -> None:
        """confirm stores a pending secret when its code is right, and that code is then used."""
        pending = new_secret()
        code = code_at(clock.now, secret=pending)
        assert service.confirm("alice", pending, code)
        assert service.has_totp("alice")
        assert not service.check("alice", code)
        clock.advance(30)
        assert service.check("alice", code_at(clock.now, secret=pending))

    def test_confirm_refuses_a_wrong_code(self, service: TotpService, clock: Clock) -> None:
        """A wrong confirmation code stores nothing; a malformed one raises MalformedCode."""
        pending = new_secret()
        wrong = f"{(int(code_at(clock.now, secret=pending)) + 1) % 1_000_000:06d}"
        assert not service.confirm("alice", pending, wrong)
        assert not service.has_totp("alice")
        with pytest.raises(MalformedCode):
            service.confirm("alice", pending, FULLWIDTH)

    def test_confirm_without_replace(self, service: TotpService, clock: Clock) -> None:
        """confirm(replace=False) refuses to overwrite an enrolment."""
        enrolled(service)
        pending = new_secret()
        with pytest.raises(TotpAlreadyEnrolled):
            service.confirm("alice", pending, code_at(clock.now, secret=pending), replace=False)


class TestServiceWithRegulation:
    """TotpService with a Regulator: bans before secrets, failures counted."""

    @pytest.fixture
    def regulated(self, storage: Storage, clock: Clock) -> TotpService:
        """A TotpService wired to a 3-failure regulator in user and ip modes."""
        regulator = Regulator(
            RegulationConfig(max_retries=3, find_time=120, ban_time=300, modes=("user", "ip")),
            storage,
            clock,
        )
        return TotpService(storage, CONFIG, regulator=regulator, now=clock)

    def test_three_bad_codes_then_the_valid_code_is_banned(
        self, regulated: TotpService, storage: Storage, clock: Clock
    ) -> None:
        """After 3 wrong codes the user is banned: the valid code raises Banned too."""
        secret = enrolled(regulated)
        good = code_at(clock.now, secret=secret)
        bad = f"{(int(good) + 1) % 1_000_000:06d}"
        for _ in range(3):
            clock.advance(1)
            assert not regulated.check("alice", bad, "10.0.0.1")
        with pytest.raises(Banned):
            regulated.check("alice", good, "10.0.0.2")
        clock.advance(301)
        assert regulated.check("alice", code_at(clock.now, secret=secret), "10.0.0.2")

    def test_each_check_logs_once(
        self, regulated: TotpService, storage: Storage, clock: Clock
    ) -> None:
        """With a regulator the attempt is logged by it, exactly once."""
        secret = enrolled(regulated)
        assert regulated.check("alice", code_at(clock.now, secret=secret), "10.0.0.1")
        assert log_rows(storage) == [("alice", "10.0.0.1", "TOTP", 1, 0)]

    def test_banned_check_reads_no_secret(
        self, regulated: TotpService, storage: Storage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A banned user is refused before the secret is loaded, and logged as banned."""
        storage.save_ban("user", "alice", T0 + 100, "test")

        def forbidden(name: str) -> None:
            raise AssertionError("the secret was read during a ban")

        monkeypatch.setattr(storage, "load_totp", forbidden)
        with pytest.raises(Banned):
            regulated.check("alice", "123456", "10.0.0.1")
        assert log_rows(storage) == [("alice", "10.0.0.1", "TOTP", 0, 1)]
