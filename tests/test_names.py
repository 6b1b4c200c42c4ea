"""User and group name rules, and that the ASCII fast paths agree with the general rule."""

from __future__ import annotations

import unicodedata
from pathlib import Path

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


GROUP_NAMES = [
    "admins", "dev-ops", "Admins", "team:red", "\u00e9quipe", "a b", "a,b", "", "a\tb",
    "x\u200by", "\u3000", "caf\u00e9\u0301",
]  # fmt: skip


@pytest.mark.parametrize("name", GROUP_NAMES, ids=[repr(n) for n in GROUP_NAMES])
def test_config_and_users_file_agree_on_group_names(name: str, tmp_path: Path) -> None:
    """A group name is valid in a rule's subject exactly when it is valid in the users file
    (and in `rules test` cases): all three ask ``check_group``."""
    import json

    from server.core.config import load_config
    from server.core.errors import ConfigError
    from server.core.policy_tests import RequestError
    from server.core.policy_tests import parse_groups
    from server.core.users import parse_users
    from tests.conftest import BASE_CONFIG

    quoted = json.dumps(name)
    config = BASE_CONFIG + (
        '\n[[access_control.rules]]\ndomain = "x.example.com"\n'
        f'subject = [{json.dumps("group:" + name)}]\npolicy = "one_factor"\n'
    )
    path = tmp_path / "authctl.toml"
    path.write_text(config, encoding="utf-8")
    try:
        load_config(path)
        in_config = True
    except ConfigError:
        in_config = False
    text = f'[users.alice]\npassword = "x"\ngroups = [{quoted}]\n'
    import tomli

    problems = []
    try:
        parse_users(text, tomli.loads(text))
    except ValueError as exc:
        problems = [str(p) for p in getattr(exc, "problems", [])]
    in_users = not any("groups[0]" in p for p in problems)
    try:
        parse_groups([name], "groups")
        in_cases = True
    except RequestError:
        in_cases = False
    assert in_config == in_users == in_cases
