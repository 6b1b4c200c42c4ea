"""Authelia's durations (``internal/utils/time.go``): ``"5m"``, ``"1 hour"``, ``"2 days and 3
hours"``, ``"1M"``, a number of seconds, ``-1`` where it means "disabled"."""

from __future__ import annotations

import re

_UNITS: dict[str, float] = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600,
    "d": 86400, "w": 7 * 86400, "M": 30 * 86400, "y": 365 * 86400,
    "millisecond": 1e-3, "milliseconds": 1e-3, "second": 1, "seconds": 1, "minute": 60,
    "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400,
    "week": 7 * 86400, "weeks": 7 * 86400, "month": 30 * 86400, "months": 30 * 86400,
    "year": 365 * 86400, "years": 365 * 86400,
}  # fmt: skip

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([^\d\s.]+)")


def parse_authelia_duration(value: object) -> int:
    """Whole seconds of an Authelia duration (fractions of a second round up).

    Raises:
        ValueError: not a duration Authelia reads.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration, got a boolean")
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a duration, got {type(value).__name__}")
    text = value.strip()
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    compact = text.replace("and", "").replace(" ", "")
    parts = _PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{value!r} is not a duration")
    total = 0.0
    for number, unit in parts:
        if unit not in _UNITS:
            raise ValueError(f"{value!r}: the unit {unit!r} is not valid")
        total += float(number) * _UNITS[unit]
    whole = int(total)
    return whole + (1 if total > whole else 0)
