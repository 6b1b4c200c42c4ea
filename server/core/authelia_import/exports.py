"""The files of ``authelia storage user totp export`` and ``… webauthn export``.

Authelia writes ``totp_configurations:`` (username, issuer, algorithm, digits, period,
created_at, last_used_at, secret) and ``webauthn_credentials:`` (id, rpid, username,
description, kid, aaguid, attestation_type, attachment, transports, sign_count, flags,
public_key, attestation). Byte fields are standard base64; a TOTP ``secret`` is the base64 of
the base32 text Authelia keeps, so it is decoded twice. Every record is checked completely
before anything is stored: a file with one broken record is refused as a whole (exit 3), with
the record named, rather than half imported.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import typing as t
import uuid
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from server.core.authelia_import.yamltext import AutheliaInputError
from server.core.errors import Problem
from server.core.names import check_username
from server.core.totp import SECRET_BYTES
from server.core.totp import decode_secret

_TOTP_KEYS = {
    "created_at", "last_used_at", "username", "issuer", "algorithm", "digits", "period", "secret",
}  # fmt: skip
_WEBAUTHN_KEYS = {
    "id", "created_at", "last_used_at", "rpid", "username", "description", "kid", "aaguid",
    "attestation_type", "attestation_format", "attachment", "transports", "sign_count",
    "clone_warning", "legacy", "discoverable", "present", "verified", "backup_eligible",
    "backup_state", "public_key", "attestation",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class TotpImport:
    """One TOTP enrolment from the export, secret decoded to its raw key (never printed)."""

    username: str
    secret: bytes = field(repr=False)
    algorithm: str
    digits: int
    period: int
    created_at: float | None = None


@dataclass(frozen=True, slots=True)
class WebauthnImport:
    """One WebAuthn credential from the export, byte fields decoded."""

    username: str
    rpid: str
    description: str
    credential_id: bytes
    public_key: bytes = field(repr=False)
    sign_count: int
    aaguid: str | None
    attestation_type: str
    attachment: str
    transports: tuple[str, ...]
    discoverable: bool
    backup_eligible: bool
    backup_state: bool
    clone_warning: bool
    created_at: float | None
    last_used_at: float | None
    attestation: bytes = field(repr=False, default=b"")


class _Records:
    def __init__(self, path: Path | None, data: object, top: str, keys: set[str]) -> None:
        self.path = path
        self.problems: list[Problem] = []
        self.keys = keys
        records = data.get(top) if isinstance(data, dict) else None
        if not isinstance(data, dict) or set(data) - {top} or not isinstance(records, list):
            self.fail("", f"expected a top-level {top!r} list (Authelia's export format)")
            records = []
        self.items: list[dict[str, t.Any]] = []
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                self.fail(f"{top}[{i}]", "is not a mapping")
                continue
            for extra in sorted(set(record) - keys):
                self.fail(f"{top}[{i}].{extra}", "is not a field of Authelia's export")
            self.items.append(record)
        self.top = top

    def fail(self, key: str, message: str, hint: str = "") -> None:
        self.problems.append(Problem(self.path, key, message, hint))

    def check(self) -> None:
        if self.problems:
            raise AutheliaInputError(self.problems)


def _b64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None


def _time(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return stamp.timestamp()
    if isinstance(value, str):
        try:
            return _time(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            pass
    raise ValueError("is not a date and time")


def _name(r: _Records, key: str, value: object) -> str | None:
    if not isinstance(value, str):
        r.fail(f"{key}.username", "is missing")
        return None
    try:
        return check_username(value)
    except ValueError as exc:
        r.fail(f"{key}.username", str(exc))
        return None


def parse_totp_export(data: object, path: Path | None = None) -> list[TotpImport]:
    """The enrolments of a TOTP export, each checked as authctl would enrol it.

    Raises:
        AutheliaInputError: every problem found, each naming its record.
    """
    r = _Records(path, data, "totp_configurations", _TOTP_KEYS)
    out: list[TotpImport] = []
    seen: set[str] = set()
    for i, rec in enumerate(r.items):
        key = f"totp_configurations[{i}]"
        before = len(r.problems)
        name = _name(r, key, rec.get("username"))
        algorithm = rec.get("algorithm", "SHA1")
        if not isinstance(algorithm, str) or algorithm.upper() not in ("SHA1", "SHA256", "SHA512"):
            r.fail(f"{key}.algorithm", f"{algorithm!r} is not SHA1, SHA256 or SHA512")
        digits = rec.get("digits", 6)
        if digits not in (6, 8) or isinstance(digits, bool):
            r.fail(f"{key}.digits", f"{digits!r}: authctl checks 6 or 8 digits")
        period = rec.get("period", 30)
        if not isinstance(period, int) or isinstance(period, bool) or not 15 <= period <= 300:
            r.fail(f"{key}.period", f"{period!r}: authctl accepts 15 to 300 seconds")
        secret = b""
        try:
            text = _b64(rec.get("secret")).decode("ascii")
            secret = decode_secret(text)
        except (ValueError, UnicodeDecodeError):
            r.fail(f"{key}.secret", "is not the base64 of a base32 TOTP secret")
        else:
            if len(secret) < SECRET_BYTES // 2:
                r.fail(f"{key}.secret", f"is {len(secret)} bytes; at least 10 are needed")
        try:
            created = _time(rec.get("created_at"))
        except ValueError as exc:
            r.fail(f"{key}.created_at", str(exc))
            created = None
        if name is not None and name in seen:
            r.fail(f"{key}.username", f"{name!r} has a second TOTP configuration")
        if len(r.problems) != before or name is None:
            continue
        seen.add(name)
        out.append(
            TotpImport(
                name,
                secret,
                t.cast(str, algorithm).upper(),
                t.cast(int, digits),
                t.cast(int, period),
                created,
            )
        )
    r.check()
    return out


def parse_webauthn_export(data: object, path: Path | None = None) -> list[WebauthnImport]:
    """The credentials of a WebAuthn export, each checked completely.

    Raises:
        AutheliaInputError: every problem found, each naming its record.
    """
    r = _Records(path, data, "webauthn_credentials", _WEBAUTHN_KEYS)
    out: list[WebauthnImport] = []
    seen: set[bytes] = set()
    for i, rec in enumerate(r.items):
        key = f"webauthn_credentials[{i}]"
        before = len(r.problems)
        name = _name(r, key, rec.get("username"))
        decoded: dict[str, bytes] = {}
        for fld in ("kid", "public_key", "attestation"):
            if fld == "attestation" and not rec.get(fld):
                decoded[fld] = b""
                continue
            try:
                decoded[fld] = _b64(rec.get(fld))
            except ValueError as exc:
                r.fail(f"{key}.{fld}", str(exc))
        if decoded.get("kid") == b"" or decoded.get("public_key") == b"":
            r.fail(key, "has an empty kid or public_key")
        rpid = rec.get("rpid")
        if not isinstance(rpid, str) or not rpid:
            r.fail(f"{key}.rpid", "is missing")
        count = rec.get("sign_count", 0)
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count < 2**32:
            r.fail(f"{key}.sign_count", f"{count!r} is not a counter")
        aaguid = rec.get("aaguid")
        if aaguid is not None:
            try:
                aaguid = str(uuid.UUID(str(aaguid)))
            except ValueError:
                r.fail(f"{key}.aaguid", "is not a UUID")
        transports = rec.get("transports") or []
        if not isinstance(transports, list) or not all(isinstance(x, str) for x in transports):
            r.fail(f"{key}.transports", "is not a list of strings")
        flags = {}
        for fld in ("discoverable", "backup_eligible", "backup_state", "clone_warning"):
            flags[fld] = rec.get(fld, False)
            if not isinstance(flags[fld], bool):
                r.fail(f"{key}.{fld}", "is not true or false")
        times: dict[str, float | None] = {}
        for fld in ("created_at", "last_used_at"):
            try:
                times[fld] = _time(rec.get(fld))
            except ValueError as exc:
                r.fail(f"{key}.{fld}", str(exc))
        kid = decoded.get("kid", b"")
        if kid and kid in seen:
            r.fail(f"{key}.kid", "the same credential is listed twice")
        if len(r.problems) != before or name is None:
            continue
        seen.add(kid)
        out.append(
            WebauthnImport(
                username=name,
                rpid=t.cast(str, rpid),
                description=str(rec.get("description") or ""),
                credential_id=kid,
                public_key=decoded["public_key"],
                sign_count=t.cast(int, count),
                aaguid=aaguid,
                attestation_type=str(rec.get("attestation_type") or ""),
                attachment=str(rec.get("attachment") or ""),
                transports=tuple(t.cast(list[str], transports)),
                discoverable=flags["discoverable"],
                backup_eligible=flags["backup_eligible"],
                backup_state=flags["backup_state"],
                clone_warning=flags["clone_warning"],
                created_at=times.get("created_at"),
                last_used_at=times.get("last_used_at"),
                attestation=decoded["attestation"],
            )
        )
    r.check()
    return out
