"""Parse and render durations: ``"30s"``, ``"5m"``, ``"1h30m"``, ``"1M"`` or an integer.

A duration is a whole number of seconds, written either as a non-negative integer (TOML
integer or a string of ASCII digits) or as one or more ``<number><unit>`` parts with the units
of :data:`UNITS`; the parts add up (``"1h30m"`` is 5400).
"""

from __future__ import annotations

import re

#: Seconds per unit. ``M`` is a 30-day month and ``y`` a 365-day year, as in Authelia.
UNITS: dict[str, int] = {
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "M": 30 * 86400,
    "y": 365 * 86400,
}

# ASCII digits only: ``\d`` would also accept Arabic-Indic and other Unicode digits, which
# ``int()`` happily converts, so "٣m" would silently mean three minutes.
_PART = re.compile(r"([0-9]+)([smhdwMy])")
_WHOLE = re.compile(r"(?:[0-9]+[smhdwMy])+|[0-9]+")

_EXPECTED = 'expected a duration such as "30s", "5m", "1h" or a number of seconds'


def parse_duration(value: object) -> int:
    """Return the duration in whole seconds.

    Raises:
        ValueError: with a sentence saying what is accepted.
    """
    if isinstance(value, bool):
        raise ValueError(f"{_EXPECTED}, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError(_EXPECTED)
    text = value.strip()
    if not _WHOLE.fullmatch(text):
        raise ValueError(
            f"{value!r} is not a duration; use a number followed by s, m, h, d, w, M (30 days) or "
            'y (365 days), such as "30s", "5m" or "1h30m", or a plain number of seconds'
        )
    if text.isdigit():
        return int(text)
    return sum(int(n) * UNITS[u] for n, u in _PART.findall(text))


def format_duration(seconds: int) -> str:
    """Render ``seconds`` with the largest units that divide it: 5400 -> ``"1h30m"``.

    The result always parses back to ``seconds`` with :func:`parse_duration`; 0 is ``"0s"``.

    Raises:
        ValueError: ``seconds`` is negative.
    """
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds == 0:
        return "0s"
    parts = []
    rest = seconds
    for unit, size in sorted(UNITS.items(), key=lambda item: -item[1]):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
