"""Tests for ``server.core.tomlpos``: finding the line of a key path in TOML text."""

from __future__ import annotations

import tomllib
import typing as t

import pytest
import tomli_w
from hypothesis import example
from hypothesis import given
from hypothesis import strategies as st

from server.core.tomlpos import key_at
from server.core.tomlpos import locate
from server.core.tomlpos import locate_position
from server.core.tomlpos import parent_paths
from server.core.tomlpos import parse_key_path
from server.core.tomlpos import positions

DOCUMENT = """\
# a comment with [brackets] and key = "value"
top = 1
"quoted key" = 'literal'
dotted.inner = "x # not a comment"

[server]   # trailing comment
address = "127.0.0.1:9091"
trusted_proxies = [
  "127.0.0.1/32",  # first
  # a comment line inside the list
  "::1/128",
]

[users]
password_hash = { memory_kib = 8, iterations = 1 }
note = \"\"\"
[fake]
fake = 1
\"\"\"
after = true

[[access_control.rules]]
domain = "a.example.com"

[[access_control.rules]]
subject = ["group:a", [
    "user:alice", "group:dev"
]]
query = [[{ key = "debug", operator = "present" }]]
policy = 'two_factor'

[[access_control.rules.extra]]
x = 1

[ access_control . networks ]
internal = ["10.0.0.0/8"]
"""


@pytest.mark.parametrize(
    ("key", "position"),
    [
        ("top", (2, 1)),
        ("quoted key", (3, 1)),
        ("dotted", (4, 1)),
        ("dotted.inner", (4, 1)),
        ("server", (6, 1)),
        ("server.address", (7, 1)),
        ("server.trusted_proxies", (8, 1)),
        ("server.trusted_proxies[0]", (9, 3)),
        ("server.trusted_proxies[1]", (11, 3)),
        ("users.password_hash", (15, 1)),
        ("users.password_hash.memory_kib", (15, 19)),
        ("users.password_hash.iterations", (15, 35)),
        ("users.note", (16, 1)),
        ("users.after", (20, 1)),
        ("access_control.rules", (22, 1)),
        ("access_control.rules[0]", (22, 1)),
        ("access_control.rules[0].domain", (23, 1)),
        ("access_control.rules[1]", (25, 1)),
        ("access_control.rules[1].subject[0]", (26, 12)),
        ("access_control.rules[1].subject[1]", (26, 23)),
        ("access_control.rules[1].subject[1][0]", (27, 5)),
        ("access_control.rules[1].subject[1][1]", (27, 19)),
        ("access_control.rules[1].query[0][0]", (29, 11)),
        ("access_control.rules[1].query[0][0].operator", (29, 28)),
        ("access_control.rules[1].policy", (30, 1)),
        ("access_control.rules[1].extra[0].x", (33, 1)),
        ("access_control.networks.internal[0]", (36, 13)),
    ],
)
def test_locate_position(key: str, position: tuple[int, int]) -> None:
    """Headers, keys, list elements and inline-table keys are found at their line and column."""
    assert key in positions(DOCUMENT)
    assert locate_position(DOCUMENT, key) == position
    assert locate(DOCUMENT, key) == position[0]


@pytest.mark.parametrize(
    ("key", "line"),
    [
        ("server.threads", 6),
        ("server.trusted_proxies[5]", 8),
        ("access_control.rules[1].methods[0]", 25),
        ("access_control.rules[7].policy", 22),
        ("users.password_hash.parallelism", 15),
        ("fake", None),
        ("fake.fake", None),
        ("", None),
    ],
)
def test_locate_falls_back_to_the_nearest_ancestor(key: str, line: int | None) -> None:
    """A key that is not written is reported at its nearest written ancestor, else None."""
    assert key not in positions(DOCUMENT)
    assert locate(DOCUMENT, key) == line


@pytest.mark.parametrize(
    ("line", "key"),
    [
        (1, None),
        (2, "top"),
        (5, "dotted.inner"),
        (9, "server.trusted_proxies[0]"),
        (10, "server.trusted_proxies[0]"),
        (18, "users.note"),
        (27, "access_control.rules[1].subject[1][1]"),
        (36, "access_control.networks.internal[0]"),
        (99, "access_control.networks.internal[0]"),
    ],
)
def test_key_at(line: int, key: str | None) -> None:
    """``key_at`` names the last key written on or before a line."""
    assert key_at(DOCUMENT, line) == key


def test_document_is_valid_toml() -> None:
    """The sample document is real TOML, so the expectations above are about valid input."""
    data = tomllib.loads(DOCUMENT)
    assert data["access_control"]["rules"][1]["subject"][1] == ["user:alice", "group:dev"]
    assert "fake" not in data


@pytest.mark.parametrize(
    ("text", "key", "position"),
    [
        ('a = "x\\"y"\nb = 1\n', "b", (2, 1)),
        ("a = 'x\\'\nb = 1\n", "b", (2, 1)),
        ('a = """x\\"""\n[b]\n"""\nc = 1\n', "c", (4, 1)),
        ("a = '''x''''\nc = 1\n", "c", (2, 1)),
        ('a = """x"""""\nc = 1\n', "c", (2, 1)),
        ("a = 1979-05-27 07:32:00Z\nb = 2\n", "b", (2, 1)),
        ("a = [ ]\nb = {}\nc = 3\n", "c", (3, 1)),
        ("[[a]]\n[[a]]\n[a.b]\nc = 1\n", "a[1].b.c", (4, 1)),
        ("[[a]]\n[[a.b]]\n[[a]]\n[[a.b]]\nc = 1\n", "a[1].b[0].c", (5, 1)),
        ("'lit.eral' = 1\n", "lit.eral", (1, 1)),
        ("a = { b = { c = [1, { d = 2 }] } }\n", "a.b.c[1].d", (1, 23)),
    ],
    ids=[
        "escaped-quote",
        "literal-backslash",
        "multiline-escaped-quote",
        "literal-multiline-extra-quote",
        "multiline-extra-quotes",
        "datetime",
        "empty-containers",
        "table-under-array-of-tables",
        "nested-arrays-of-tables",
        "quoted-key-with-dot",
        "nested-inline",
    ],
)
def test_locate_tricky_toml(text: str, key: str, position: tuple[int, int]) -> None:
    """Strings with escapes and extra quotes, dates and nested tables do not confuse the scan."""
    tomllib.loads(text)  # each case is valid TOML
    assert locate_position(text, key) == position


@pytest.mark.parametrize(
    "text",
    [
        "[",
        "[[",
        "[a",
        "[a]]",
        "a",
        "a =",
        "a = [",
        "a = [1 2]",
        "a = {",
        "a = { b }",
        "a = { b = 1 c }",
        'a = "x',
        "a = 'x\nb = 1",
        'a = """x',
        "a = ]",
        '"a',
        "a.",
        "= 1",
        "a = [" * 500,
        "a = {b = " * 500,
        "\\",
        '"\\',
    ],
)
def test_broken_text_never_raises(text: str) -> None:
    """Text the scanner cannot follow gives fewer positions, never an exception."""
    locate(text, "a.b[0]")
    key_at(text, 1)


def test_unterminated_lines_are_skipped() -> None:
    """After a line the scanner cannot follow it carries on with the next one."""
    text = "a = [1 2]\nb = 1\nc = 'x\nd = 2\n"
    assert locate_position(text, "b") == (2, 1)
    assert locate_position(text, "d") == (4, 1)


def test_positions_are_cached() -> None:
    """Asking about many keys of one text scans it once."""
    assert positions(DOCUMENT) is positions(DOCUMENT)


@pytest.mark.parametrize(
    ("key", "parsed"),
    [
        ("a", [("a", None)]),
        ("a.b[3].c", [("a", None), ("b", 3), ("c", None)]),
        ("s[1][0]", [("s", 1)]),
        ("", []),
    ],
)
def test_parse_key_path(key: str, parsed: list[tuple[str, int | None]]) -> None:
    """Key paths split into names and (first) indexes."""
    assert parse_key_path(key) == parsed


def test_parent_paths() -> None:
    """A key path's ancestors run from longest to shortest."""
    assert parent_paths("a.b[3].s[1][0].c") == [
        "a.b[3].s[1][0].c",
        "a.b[3].s[1][0]",
        "a.b[3].s[1]",
        "a.b[3].s",
        "a.b[3]",
        "a.b",
        "a",
    ]
    assert parent_paths("") == []
    assert parent_paths("x]") == ["x]"]


@given(st.text(max_size=300), st.text(max_size=30), st.integers(min_value=-5, max_value=50))
@example(text="", key="]", line=0)  # once crashed parent_paths
def test_locate_never_raises(text: str, key: str, line: int) -> None:
    """On arbitrary text and keys, locate and key_at return a position or None, never raise."""
    found = locate_position(text, key)
    if found is not None:
        assert found[0] >= 1
        assert found[1] >= 1
    key_at(text, line)


_TOKENS = st.sampled_from(
    [
        *("[", "]", "[[", "]]", "{", "}", "=", ",", ".", "a", "b", " ", "\n", "#", '"', "'"),
        *('"""', "'''", "\\", "1", "x = ", "[a]\n", "[[a.b]]\n", "c = [", "d = {"),
    ]
)


@given(st.lists(_TOKENS, max_size=60))
def test_locate_never_raises_on_toml_like_text(tokens: list[str]) -> None:
    """Text built from TOML's own punctuation never makes the scanner raise."""
    text = "".join(tokens)
    locate(text, "a.b[0].c")
    key_at(text, 3)


_KEY = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='.[]"\\'),
    min_size=1,
    max_size=8,
)
_SCALAR = st.one_of(st.integers(), st.booleans(), st.text(max_size=10), st.floats(allow_nan=False))
_VALUE = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEY, inner, max_size=3),
    max_leaves=12,
)


def _paths(value: object, prefix: str = "") -> t.Iterator[str]:
    if isinstance(value, dict):
        for name, item in value.items():
            path = f"{prefix}.{name}" if prefix else name
            yield path
            yield from _paths(item, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield f"{prefix}[{index}]"
            yield from _paths(item, f"{prefix}[{index}]")


@given(st.dictionaries(_KEY, _VALUE, max_size=4), st.booleans())
def test_every_written_path_is_found(data: dict[str, object], multiline: bool) -> None:
    """For any document tomli_w writes, every key and element path is found exactly."""
    text = tomli_w.dumps(data, multiline_strings=multiline)
    found = positions(text)
    for path in _paths(data):
        assert path in found, f"{path!r} not found in:\n{text}"
