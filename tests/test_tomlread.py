"""Tests for ``server.core.tomlread``: the one TOML reader of the config, users and case files."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.core.config import load_config
from server.core.errors import ConfigError
from server.core.errors import FileProblemError
from server.core.errors import UserStoreError
from server.core.tomlread import ProblemReader
from server.core.tomlread import read_toml
from server.core.users import load_users
from tests.conftest import BASE_CONFIG

UNCLOSED = [
    ("basic-string", 'name = "authctl_session\nexpiration = "1h"\n', 'name = "authctl_session'),
    ("literal-string", 'name = \'authctl_session\nexpiration = "1h"\n', "name = 'authctl_session"),
]


@pytest.mark.parametrize(("_id", "text", "line_text"), UNCLOSED, ids=[u[0] for u in UNCLOSED])
def test_unclosed_string_says_so(tmp_path: Path, _id: str, text: str, line_text: str) -> None:
    """A string left open at the end of its line is 'not closed', never a control character."""
    config = BASE_CONFIG.replace('name = "authctl_session"\n', text)
    path = tmp_path / "authctl.toml"
    path.write_text(config, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.message == "invalid TOML: a string is not closed"
    assert "control character" not in problem.hint
    assert "close the string with the quote it started with" in problem.hint
    assert problem.line == config.splitlines().index(line_text) + 1
    assert problem.key == "session.name"


def test_a_real_control_character_still_says_control_character(tmp_path: Path) -> None:
    """A control character inside a closed string keeps its own fix."""
    path = tmp_path / "authctl.toml"
    path.write_text(BASE_CONFIG.replace("authctl_session", "authctl\x01session"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "remove the control character" in info.value.problems[0].hint


def test_users_file_read_the_same_way(tmp_path: Path) -> None:
    """The users file goes through the same reader: same message, its own error type."""
    path = tmp_path / "users.toml"
    path.write_text('[users.alice]\npassword = "$argon2id\ngroups = []\n', encoding="utf-8")
    with pytest.raises(UserStoreError) as info:
        load_users(path)
    assert info.value.problems[0].message == "invalid TOML: a string is not closed"
    assert info.value.problems[0].line == 2


def test_missing_file_fix_is_the_callers(tmp_path: Path) -> None:
    """Each file says how to create it (a case file is not made by `authctl init`)."""
    with pytest.raises(FileProblemError) as info:
        read_toml(tmp_path / "cases.toml", create="write the [[cases]] of your policy")
    assert info.value.problems[0].hint == "write the [[cases]] of your policy"


def test_reader_collects_every_problem_in_file_order(tmp_path: Path) -> None:
    """Problems are all kept, sorted by line, each with a column and a fix."""
    text = 'b = 1\n[t]\nx = "s"\ny = true\n'
    reader = ProblemReader(tmp_path / "f.toml", text)
    data = reader.table({"t": {"x": "s", "y": True}, "b": 1}, "", ("t", "a"))
    reader.value(data["t"], "t", "y", int)
    reader.value(data["t"], "t", "x", int)
    with pytest.raises(ConfigError) as info:
        reader.check(ConfigError)
    problems = info.value.problems
    assert [(p.key, p.line) for p in problems] == [("b", 1), ("t.x", 3), ("t.y", 4)]
    assert all(p.hint and p.column == 1 for p in problems)
