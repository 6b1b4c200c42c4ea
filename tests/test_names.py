"""User and group name rules, and that the ASCII fast paths agree with the general rule."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.core.names import check_display_text
from server.core.names import check_group


def slow_group_ok(name: str) -> bool:
    return bool(name) and all(
        ch != "," and not ch.isspace() and unicodedata.category(ch)[0] not in ("C", "Z")
        for ch in name
    )


def slow_text_ok(value: str) -> bool:
    return all(unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in value)


def accepts(check: object, value: str) -> bool:
    try:
        check(value)  # type: ignore[operator]
    except ValueError:
        return False
    return True


@given(st.text(max_size=12) | st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=12))
def test_group_fast_path_matches_the_rule(name: str) -> None:
    """check_group accepts exactly the names the per-character rule accepts."""
    assert accepts(check_group, name) == slow_group_ok(name)


@given(st.text(max_size=12) | st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=12))
def test_display_text_fast_path_matches_the_rule(value: str) -> None:
    """check_display_text accepts exactly the values without control characters."""
    assert accepts(lambda v: check_display_text(v, "x"), value) == slow_text_ok(value)


@pytest.mark.parametrize("name", ["admins", "dev-ops", "team_1", "a.b", "Zoë"])
def test_good_groups(name: str) -> None:
    """Ordinary group names pass unchanged."""
    assert check_group(name) == name


@pytest.mark.parametrize("name", ["", "a,b", "a b", "a\tb", "a\nb", "a\u200bb", "a\u00a0b"])
def test_bad_groups(name: str) -> None:
    """Empty names, commas, white space and invisible characters are refused."""
    with pytest.raises(ValueError, match="group name"):
        check_group(name)


INVISIBLE = [
    ("\u202e", "RIGHT-TO-LEFT OVERRIDE"),
    ("\u202a", "LEFT-TO-RIGHT EMBEDDING"),
    ("\u2066", "LEFT-TO-RIGHT ISOLATE"),
    ("\u200f", "RIGHT-TO-LEFT MARK"),
    ("\u200b", "ZERO WIDTH SPACE"),
    ("\ufeff", "ZERO WIDTH NO-BREAK SPACE"),
    ("\u00ad", "SOFT HYPHEN"),
    ("\u2028", "LINE SEPARATOR"),
    ("\u2029", "PARAGRAPH SEPARATOR"),
]


@pytest.mark.parametrize(("char", "name"), INVISIBLE, ids=[n for _, n in INVISIBLE])
def test_display_text_refuses_invisible_formatting(char: str, name: str) -> None:
    """Bidi overrides and other invisible format characters (Cf, Zl, Zp) are refused like
    control characters, and the message names the field and the character."""
    with pytest.raises(ValueError, match="invisible formatting character") as caught:
        check_display_text(f"Alice{char}ecilA", "the displayname of user 'alice'")
    message = str(caught.value)
    assert "the displayname of user 'alice'" in message
    assert f"U+{ord(char):04X}" in message
    assert name in message


@pytest.mark.parametrize("char", ["\u202e", "\u200b", "\u2066"])
def test_group_refuses_invisible_formatting(char: str) -> None:
    """Group names refuse the same characters."""
    with pytest.raises(ValueError, match="group name"):
        check_group(f"adm{char}ins")


@pytest.mark.parametrize("value", ["Zoë Ångström", "李小龍", "Олег", "محمد", "👩‍💻"[0]])
def test_display_text_keeps_visible_unicode(value: str) -> None:
    """Ordinary non-ASCII names pass unchanged."""
    assert check_display_text(value, "x") == value
