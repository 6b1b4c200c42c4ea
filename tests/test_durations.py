"""Tests for ``server.core.durations``: the duration syntax of SPEC §2 and its rendering."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.core.durations import UNITS
from server.core.durations import format_duration
from server.core.durations import parse_duration

DAY = 86400


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("2d", 2 * DAY),
        ("1w", 7 * DAY),
        ("1M", 30 * DAY),
        ("1y", 365 * DAY),
        ("1h30m", 5400),
        ("1d12h", 36 * 3600),
        ("90", 90),
        ("0", 0),
        ("0s", 0),
        (" 5m ", 300),
        ("007s", 7),
        (90, 90),
        (0, 0),
    ],
    ids=repr,
)
def test_parse(value: object, seconds: int) -> None:
    """Each documented spelling parses to its number of seconds."""
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("", "is not a duration"),
        ("1 h", "is not a duration"),
        ("1hour", "is not a duration"),
        ("5x", "is not a duration"),
        ("1H", "is not a duration"),
        ("h", "is not a duration"),
        ("-5m", "is not a duration"),
        ("1.5h", "is not a duration"),
        ("5m1", "is not a duration"),
        ("\u0663m", "is not a duration"),
        ("\u00b2", "is not a duration"),
        (-1, "cannot be negative"),
        (True, "got a boolean"),
        (1.5, "expected a duration"),
        (None, "expected a duration"),
        (["5m"], "expected a duration"),
    ],
    ids=repr,
)
def test_parse_refuses(value: object, words: str) -> None:
    """Anything but digits with known units (or a plain non-negative integer) is refused."""
    with pytest.raises(ValueError, match=words) as info:
        parse_duration(value)
    assert "30s" in str(info.value) or "negative" in str(info.value)


def test_month_is_not_minute() -> None:
    """``M`` (30 days) and ``m`` (minutes) are different units."""
    assert parse_duration("1M") == 30 * DAY
    assert parse_duration("1m") == 60


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1, "1s"),
        (60, "1m"),
        (5400, "1h30m"),
        (DAY + 1, "1d1s"),
        (30 * DAY, "1M"),
        (365 * DAY + 7 * DAY, "1y1w"),
    ],
)
def test_format(seconds: int, text: str) -> None:
    """Durations render with the largest units that divide them."""
    assert format_duration(seconds) == text


def test_format_refuses_negative() -> None:
    """A negative number of seconds has no rendering."""
    with pytest.raises(ValueError, match="negative"):
        format_duration(-1)


@given(st.integers(min_value=0, max_value=10**12))
def test_format_round_trips(seconds: int) -> None:
    """Rendering n seconds with units and parsing the result gives n back."""
    assert parse_duration(format_duration(seconds)) == seconds


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(UNITS))),
        min_size=1,
        max_size=8,
    )
)
def test_parts_add_up(parts: list[tuple[int, str]]) -> None:
    """Any sequence of ``<number><unit>`` parts parses to the sum of its parts."""
    text = "".join(f"{count}{unit}" for count, unit in parts)
    assert parse_duration(text) == sum(count * UNITS[unit] for count, unit in parts)


@given(st.text(max_size=20))
def test_parse_only_raises_value_error(text: str) -> None:
    """Arbitrary text either parses to a non-negative integer or raises ValueError."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert isinstance(seconds, int)
    assert seconds >= 0
