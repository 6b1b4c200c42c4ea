"""TOTP second factor: secrets, provisioning URIs, strict code parsing, verification, replay guard.

HOTP (RFC 4226 §5) and TOTP (RFC 6238 §4) are computed here with :mod:`hmac`, on the injected
clock, for SHA1, SHA256 and SHA512. Attacks defended, with where:

- **Look-alike digits** (security.md §2.G, §2.L): :func:`parse_code` accepts only a JSON string
  of exactly ``digits`` ASCII digits. ``\\d`` matches Arabic-Indic digits, ``int()`` parses
  them, and pyotp's verify NFKC-normalises fullwidth digits, so none of those is used; a bad
  shape is a :class:`MalformedCode` (400), never "a different code".
- **Replay** (RFC 6238 §5.2, ASVS 2.8.4/2.8.5): :func:`verify` only accepts a time step newer
  than the last accepted one, and :meth:`TotpService.check` records the step with
  :meth:`server.core.storage.Storage.accept_totp_step`, atomically, so a code is good once even
  when submitted twenty times in parallel or after a restart; reuse is logged.
- **Timing**: codes are compared with :func:`hmac.compare_digest`, every step of the window.
- **Guessing**: every check is logged as a ``TOTP`` attempt through the regulator, which bans
  after ``max_retries`` failures (RFC 4226 §7.3); the window is ``skew`` steps each way
  (default 1, Authelia's; ASVS 5 6.5.5 asks for ≤ 30 s, so ``skew = 0`` is allowed).
- **Weak secrets**: 160 random bits from :mod:`secrets` (RFC 4226 R6), never fewer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import struct
import time
import typing as t
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace
from urllib.parse import quote
from urllib.parse import urlencode

from server.core import metrics
from server.core.errors import AuthError
from server.core.errors import Banned
from server.core.errors import UserError
from server.core.names import canonical_username

if t.TYPE_CHECKING:
    from server.core.config import TotpConfig
    from server.core.regulation import Regulator
    from server.core.storage import Storage
    from server.core.storage import TotpRecord

log = logging.getLogger("server.totp")

#: Bytes of a new secret: 160 bits, RFC 4226 R6's recommendation.
SECRET_BYTES = 20
#: Digest per algorithm name of ``[totp] algorithm``.
ALGORITHMS: dict[str, Callable[[], t.Any]] = {
    "SHA1": hashlib.sha1,
    "SHA256": hashlib.sha256,
    "SHA512": hashlib.sha512,
}
#: Code lengths authenticator apps support.
DIGITS = (6, 8)
_CODE = {n: re.compile(f"[0-9]{{{n}}}") for n in DIGITS}


class MalformedCode(AuthError, ValueError):
    """A submitted code is not a string of exactly 6 (or 8) ASCII digits: answer 400."""


class TotpAlreadyEnrolled(UserError):
    """The user has a TOTP secret already and replacing it was not asked for."""


def new_secret(size: int = SECRET_BYTES) -> str:
    """A new random secret of ``size`` bytes (at least 20), base32 without padding."""
    if size < SECRET_BYTES:
        raise ValueError(f"a TOTP secret needs at least {SECRET_BYTES} bytes")
    return encode_secret(secrets.token_bytes(size))


def encode_secret(raw: bytes) -> str:
    """``raw`` as base32 without padding (what authenticator apps read)."""
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def decode_secret(secret: str | bytes) -> bytes:
    """The raw key of a base32 secret (padding optional, case-insensitive); bytes pass as is.

    Raises:
        ValueError: not base32.
    """
    if isinstance(secret, bytes):
        return secret
    text = secret.strip().replace(" ", "").upper()
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        raise ValueError("the TOTP secret is not base32") from None


def provisioning_uri(secret: str, username: str, config: TotpConfig) -> str:
    """The ``otpauth://totp/ISSUER:USER?…`` URI that authenticator apps scan.

    The label and every parameter are percent-encoded, so no name can inject a parameter.
    """
    label = f"{quote(config.issuer, safe='')}:{quote(username, safe='')}"
    query = urlencode(
        {
            "secret": secret,
            "issuer": config.issuer,
            "algorithm": config.algorithm,
            "digits": config.digits,
            "period": config.period,
        },
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{query}"


def parse_code(value: object, digits: int | tuple[int, ...]) -> str:
    """``value`` if it is a ``str`` of exactly ``digits`` ASCII digits (one of them if a tuple).

    Raises:
        MalformedCode: anything else (ints, None, lists, fullwidth or Arabic-Indic digits,
            white space, newlines, other lengths).
    """
    lengths = (digits,) if isinstance(digits, int) else digits
    if type(value) is str:
        for n in lengths:
            pattern = _CODE.get(n)
            if pattern is not None and pattern.fullmatch(value):
                return value
    raise MalformedCode(f"the code must be a string of {' or '.join(map(str, lengths))} digits")


def hotp(key: bytes, counter: int, digits: int = 6, algorithm: str = "SHA1") -> str:
    """The HOTP value of ``counter`` (RFC 4226 §5.3, dynamic truncation)."""
    mac = hmac.new(key, struct.pack(">Q", counter), ALGORITHMS[algorithm]).digest()
    offset = mac[-1] & 0x0F
    number = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def time_step(now: float, period: int) -> int:
    """The RFC 6238 time step of unix time ``now``."""
    return int(now // period)


def totp_at(secret: str | bytes, now: float, config: TotpConfig) -> str:
    """The code of ``secret`` at unix time ``now`` (for tests and enrolment checks)."""
    key = decode_secret(secret)
    return hotp(key, time_step(now, config.period), config.digits, config.algorithm)


def match_step(secret: str | bytes, code: str, now: float, config: TotpConfig) -> int | None:
    """The time step within ±``config.skew`` of ``now`` whose code is ``code``, or None.

    Every step of the window is compared in constant time; a collision picks the newest.
    """
    key = decode_secret(secret)
    current = time_step(now, config.period)
    found: int | None = None
    encoded = code.encode("ascii", "replace")
    for step in range(current - config.skew, current + config.skew + 1):
        if step < 0:
            continue
        expected = hotp(key, step, config.digits, config.algorithm).encode("ascii")
        if hmac.compare_digest(expected, encoded):
            found = step
    return found


def verify(
    secret: str | bytes, code: str, last_step: int | None, now: float, config: TotpConfig
) -> int | None:
    """The matched time step if ``code`` is valid at ``now`` and newer than ``last_step``.

    Returns None for a wrong code, a step outside ±skew, or a step at or before ``last_step``
    (a replay). The caller must still record the step atomically
    (:meth:`server.core.storage.Storage.accept_totp_step`).
    """
    step = match_step(secret, code, now, config)
    if step is None or (last_step is not None and step <= last_step):
        return None
    return step


@dataclass(frozen=True, slots=True)
class TotpInfo:
    """A user's enrolment without its secret (for ``has_totp``, settings pages, ``user show``)."""

    algorithm: str
    digits: int
    period: int
    created_at: float
    last_used_at: float | None


class TotpService:
    """Enrol, remove and check users' TOTP codes on :class:`server.core.storage.Storage`.

    Usernames are canonicalised here too. ``regulator`` (when given) refuses banned users and
    IPs before any secret is read, and receives every check as a ``TOTP`` attempt; without it
    attempts go straight to the authentication log. Either way each check logs exactly once.

    Raises (every method):
        StorageError: the store failed; callers deny (fail closed).
    """

    def __init__(
        self,
        storage: Storage,
        config: TotpConfig,
        *,
        regulator: Regulator | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.config = config
        self.regulator = regulator
        self._now = now

    def enrol(
        self, username: str, config: TotpConfig | None = None, *, force: bool = False
    ) -> tuple[str, str]:
        """Give ``username`` a new secret; returns ``(base32 secret, otpauth URI)``.

        Raises:
            TotpAlreadyEnrolled: the user has a secret and ``force`` is false.
        """
        name = canonical_username(username)
        cfg = config or self.config
        secret = new_secret()
        stored = self.storage.save_totp(
            name,
            decode_secret(secret),
            algorithm=cfg.algorithm,
            digits=cfg.digits,
            period=cfg.period,
            replace=force,
        )
        if not stored:
            raise TotpAlreadyEnrolled(f"user {name!r} has a TOTP secret already")
        log.info("TOTP secret %s for %s", "replaced" if force else "enrolled", name)
        return secret, provisioning_uri(secret, name, cfg)

    def confirm(
        self,
        username: str,
        secret: str,
        code: str,
        config: TotpConfig | None = None,
        *,
        replace: bool = True,
    ) -> bool:
        """Store a pending ``secret`` if ``code`` proves the user's app has it (web enrolment).

        The code's step becomes the user's last accepted step, so it cannot be replayed as a
        second factor. False when the code is wrong (nothing stored).

        Raises:
            MalformedCode: ``code`` is not a string of the configured number of digits.
            TotpAlreadyEnrolled: the user has a secret and ``replace`` is false.
        """
        name = canonical_username(username)
        cfg = config or self.config
        parse_code(code, cfg.digits)
        step = match_step(secret, code, self._now(), cfg)
        if step is None:
            return False
        stored = self.storage.save_totp(
            name,
            decode_secret(secret),
            algorithm=cfg.algorithm,
            digits=cfg.digits,
            period=cfg.period,
            replace=replace,
            last_step=step,
        )
        if not stored:
            raise TotpAlreadyEnrolled(f"user {name!r} has a TOTP secret already")
        log.info("TOTP secret enrolled for %s", name)
        return True

    def remove(self, username: str) -> bool:
        """Remove the user's secret and replay history; True when there was one."""
        name = canonical_username(username)
        removed = self.storage.delete_totp(name)
        if removed:
            log.info("TOTP secret removed for %s", name)
        return removed

    def has_totp(self, username: str) -> bool:
        """True when the user has a TOTP secret."""
        return self.storage.has_totp(canonical_username(username))

    def info(self, username: str) -> TotpInfo | None:
        """The user's enrolment without its secret, or None."""
        record = self.storage.load_totp(canonical_username(username))
        if record is None:
            return None
        return TotpInfo(
            record.algorithm, record.digits, record.period, record.created_at, record.last_used_at
        )

    def check(self, username: str, code: object, ip: str = "") -> bool:
        """True when ``code`` is the user's current code, not used before; logs the attempt.

        Order: the code's shape (400 before anything else), the ban check, then the secret.
        A wrong code, a replay (logged as reuse), an unknown or unenrolled user are all False.

        Raises:
            MalformedCode: not a string of 6 or 8 ASCII digits (not logged, not counted).
            Banned: the user or IP is banned (``regulator`` given; logged as a banned
                attempt); answer as a failure.
        """
        token = parse_code(code, DIGITS)
        name = canonical_username(username)
        if self.regulator is not None:
            # reserved before the check, so parallel guesses cannot all pass the ban check
            try:
                reservation = self.regulator.reserve(name, ip, "TOTP")  # Banned: logged
            except Banned:
                metrics.second_factor("totp", success=False, banned=True)
                raise
            with reservation as attempt:
                ok = self._verify(name, token)
                attempt.settle(ok)
            metrics.second_factor("totp", success=ok, banned=False)
            return ok
        ok = self._verify(name, token)
        self.storage.append_log(self._now(), name, ip, "TOTP", ok)
        return ok

    def _verify(self, name: str, token: str) -> bool:
        record = self.storage.load_totp(name)
        if record is None or len(token) != record.digits:
            return False
        cfg = _with(self.config, record)
        step = match_step(record.secret, token, self._now(), cfg)
        if step is None:
            return False
        if not self.storage.accept_totp_step(name, step):  # atomic: one winner per step
            log.warning("TOTP code reuse refused for %s (time step %d)", name, step)
            return False
        return True


def _with(config: TotpConfig, record: TotpRecord) -> TotpConfig:
    """``config`` (for the skew) with the algorithm, digits and period of an enrolment."""
    return replace(config, algorithm=record.algorithm, digits=record.digits, period=record.period)
