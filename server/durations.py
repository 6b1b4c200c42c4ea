"""Parse duration values from config files: ``"30s"``, ``"5m"``, ``"1h30m"``, ``"1M"`` or an integer.

Pure core: standard library only.
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

_PART = re.compile(r"(\d+)([smhdwMy])")
_WHOLE = re.compile(r"(?:\d+[smhdwMy])+|\d+")


def parse_duration(value: object) -> int:
    """Return the duration in whole seconds.

    Raises:
        ValueError: with a sentence saying what is accepted.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as \"30s\", \"5m\", \"1h\" or a number of seconds")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError("expected a duration such as \"30s\", \"5m\", \"1h\" or a number of seconds")
    text = value.strip()
    if not _WHOLE.fullmatch(text):
        raise ValueError(
            f"{value!r} is not a duration; use a number followed by s, m, h, d, w, M (30 days) or "
            "y, such as \"90s\", \"5m\" or \"1h30m\", or a plain number of seconds"
        )
    if text.isdigit():
        return int(text)
    return sum(int(n) * UNITS[u] for n, u in _PART.findall(text))
