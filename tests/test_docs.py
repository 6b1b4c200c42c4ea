"""Every key the loaders accept is documented in the hand-written man pages, and nothing more.

The key lists come from the code (``server.core.config.KEYS``,
``server.core.users.USER_KEYS``), so a new setting without documentation, or documentation
of a setting that does not exist, fails here (datasette's ``test_docs.py`` idea).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from scripts.manpages import PINNED_DATE
from scripts.manpages import package_version
from server.core.config import KEYS
from server.core.config import load_config
from server.core.users import USER_KEYS
from tests.conftest import ROOT
from tests.test_manpages import roff_problems

CONFIG_PAGE = ROOT / "man" / "authctl.toml.5"
USERS_PAGE = ROOT / "man" / "users.toml.5"

#: A documented key: a ``.TP`` paragraph whose tag starts with ``\fBname\fR =``.
_ENTRY = re.compile(r"^\.TP\n\\fB([a-z_]+)\\fR = ", re.MULTILINE)


def _read(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _sections(text: str, macro: str) -> dict[str, str]:
    """The body of each ``.SH``/``.SS`` section of a page, by its title (quotes removed)."""
    parts = re.split(rf"^\.{macro} (.+)$", text, flags=re.MULTILINE)
    return {title.strip('"'): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def _heading(table: str) -> str:
    """The subsection of authctl.toml(5) that documents the keys of ``table`` (a KEYS name).

    Tables inside an array-of-tables entry (a rule's query conditions) are documented within
    that entry's subsection.
    """
    entry, found, _ = table.partition("[].")
    if found:
        table = entry + "[]"
    return f"[[{table[:-2]}]]" if table.endswith("[]") else f"[{table}]"


def _config_tables() -> list[tuple[str, str, tuple[str, ...]]]:
    """``(table, heading, keys)`` for every table of KEYS; root keys are tables of their own."""
    out = [(table, _heading(table), keys) for table, keys in KEYS.items() if table]
    out += [("", _heading(name), ()) for name in KEYS[""]]
    return out


@pytest.mark.parametrize(
    ("table", "heading", "keys"),
    _config_tables(),
    ids=[f"{table or 'top'}:{heading}" for table, heading, _ in _config_tables()],
)
def test_every_config_key_is_documented(table: str, heading: str, keys: tuple[str, ...]) -> None:
    """Each table of the config has its own subsection, documenting each of its keys."""
    sections = _sections(_read(CONFIG_PAGE), "SS")
    assert heading in sections, f"authctl.toml(5) has no .SS {heading!r} for [{table}]"
    documented = set(_ENTRY.findall(sections[heading]))
    missing = [key for key in keys if key not in documented]
    assert not missing, f"authctl.toml(5) {heading} does not document {missing}"


def test_config_page_documents_no_other_keys() -> None:
    """Every key documented in authctl.toml(5) is one the loader accepts, in that table."""
    sections = _sections(_read(CONFIG_PAGE), "SS")
    accepted: dict[str, set[str]] = {}
    for _table, heading, keys in _config_tables():
        accepted.setdefault(heading, set()).update(keys)
    for heading, body in sections.items():
        if not heading.startswith("["):
            continue
        extra = set(_ENTRY.findall(body)) - accepted.get(heading, set())
        assert not extra, f"authctl.toml(5) {heading} documents unknown keys {sorted(extra)}"


def test_every_section_of_the_config_is_documented_in_order() -> None:
    """The subsections follow the loader's order of sections, so the page reads like a file."""
    headings = [h for h in _sections(_read(CONFIG_PAGE), "SS") if h.startswith("[")]
    tops = [h.strip("[]").split(".")[0] for h in headings]
    assert list(dict.fromkeys(tops)) == list(KEYS[""])


def test_every_user_key_is_documented() -> None:
    """Each key of a users.toml entry is documented in users.toml(5), and nothing more."""
    keys = _sections(_read(USERS_PAGE), "SH")["KEYS"]
    assert sorted(_ENTRY.findall(keys)) == sorted(USER_KEYS)


def _examples(text: str) -> list[str]:
    """The ``.EX``/``.EE`` blocks of a page, with the roff escapes they use undone."""
    blocks = re.findall(r"^\.EX\n(.*?)^\.EE$", text, flags=re.MULTILINE | re.DOTALL)
    return [b.replace("\\-", "-").replace("\\e", "\\") for b in blocks]


def test_config_example_loads(tmp_path: Path) -> None:
    """The EXAMPLE of authctl.toml(5) is a valid config."""
    (example,) = _examples(_read(CONFIG_PAGE))
    path = tmp_path / "authctl.toml"
    path.write_text(example, encoding="utf-8")
    config = load_config(path)
    assert len(config.access_control.rules) == 3


def test_users_example_uses_known_keys() -> None:
    """The entry shown in users.toml(5) uses only the keys the users loader reads."""
    (example,) = _examples(_read(USERS_PAGE))
    data = tomllib.loads(example)
    assert set(data["users"]["alice"]) == set(USER_KEYS)


@pytest.mark.parametrize("page", [CONFIG_PAGE, USERS_PAGE], ids=lambda p: p.name)
def test_hand_written_pages(page: Path) -> None:
    """Each hand-written page says so, carries the release's date and version, and is clean."""
    text = _read(page)
    assert text.startswith('.\\" Hand-written, not generated')
    title = f".TH {page.name.removesuffix('.5').upper()} 5 {PINNED_DATE} "
    assert text.splitlines()[2] == title + f'"authctl {package_version()}" "File Formats Manual"'

    assert not roff_problems(text), roff_problems(text)
