"""Tests for ``scripts/manpages.py`` and the committed pages in ``man/``."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import click
import pytest

from authctl.cli import cli
from scripts.manpages import COMMAND
from scripts.manpages import GENERATED
from scripts.manpages import MAN_DIR
from scripts.manpages import PINNED_DATE
from scripts.manpages import build
from scripts.manpages import differences
from scripts.manpages import loaded_tree
from scripts.manpages import main
from scripts.manpages import package_version
from scripts.manpages import roff_text
from scripts.manpages import write
from tests.conftest import ROOT

#: roff requests the pages may use (man(7) macros and the few low-level ones they need).
REQUESTS = {"TH", "SH", "SS", "TP", "PP", "LP", "P", "IP", "RS", "RE", "B", "I", "BR", "IR"}
REQUESTS |= {"BI", "RB", "RI", "nf", "fi", "EX", "EE", "sp", "br", "in", "ft", "TQ", "UR", "UE"}
#: Escapes the pages may use.
ESCAPE = re.compile(r"\\(?:[-e&\":]|f[BIRP]|\[u[0-9A-F]{4,5}\]|\(..|\[[a-z]{2}\]|~|\|)")


def roff_problems(text: str) -> list[str]:
    """What in ``text`` a roff formatter would warn about or render wrongly (pure Python)."""
    problems = []
    no_fill = False  # inside .nf/.fi or .EX/.EE, where a blank line is a blank line
    for number, line in enumerate(text.splitlines(), 1):
        no_fill = (no_fill or line in (".nf", ".EX")) and line not in (".fi", ".EE")
        if any(ord(ch) > 127 for ch in line):
            problems.append(f"line {number}: non-ASCII character (use \\[uXXXX])")
        if line.startswith((".", "'")) and not line.startswith('.\\"'):
            request = line[1:].split(maxsplit=1)[0] if line[1:].strip() else ""
            if request not in REQUESTS:
                problems.append(f"line {number}: unknown request {line.split()[0]!r}")
        rest = ESCAPE.sub("", line) if not line.startswith('.\\"') else ""
        if "\\" in rest:
            problems.append(f"line {number}: unknown escape in {line!r}")
        if line.strip() == "" and not no_fill:
            problems.append(f"line {number}: blank line (use .PP or .sp)")
    return problems


def command_paths(command: click.Command, path: str = "authctl") -> list[str]:
    """Every visible command path of the tree, loaded the way the CLI loads it."""
    out = [path]
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=path.rsplit(" ", 1)[-1])
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, f"{path} lists {name} but cannot load it"
            if not sub.hidden:
                out += command_paths(sub, f"{path} {name}")
    return out


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    """The pages generated from the current command tree."""
    return build()


def test_committed_pages_are_current(tmp_path: Path, pages: dict[str, str]) -> None:
    """``man/*.1`` is exactly what the generator writes for the current commands."""
    assert main(["--out", str(tmp_path)]) == 0
    regenerated = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.glob("*.1")}
    assert regenerated == pages
    found = differences(regenerated, MAN_DIR)
    assert not found, (
        f"The man pages in {MAN_DIR} are out of date; run `{COMMAND}` and commit man/.\n\n"
        + "\n".join(found)[:4000]
    )


def test_every_command_has_a_page(pages: dict[str, str]) -> None:
    """Every command and sub-subcommand of the lazy tree has its own page, and only those."""
    expected = {path.replace(" ", "-") + ".1" for path in command_paths(cli)}
    assert "authctl-user-add.1" in expected
    assert set(pages) == expected


def test_pages_name_their_command(pages: dict[str, str]) -> None:
    """Each page is headed by its command, the pinned date and the package version."""
    for command in command_paths(cli):
        lines = pages[command.replace(" ", "-") + ".1"].splitlines()
        assert lines[0] == GENERATED
        assert lines[1].startswith(f'.TH "{command.upper()}" "1" ')
        assert f'"{PINNED_DATE}" "authctl {package_version()}"' in lines[1]
        see_also = lines[lines.index('.SH "SEE ALSO"') + 1]
        if " " in command:  # a subcommand's page points back to its parent's
            parent = command.rsplit(" ", 1)[0].replace(" ", "\\-")
            assert see_also.startswith(f"\\fB{parent}\\fP(1), ")
        assert see_also.endswith("\\fBauthctl.toml\\fP(5), \\fBusers.toml\\fP(5)")


def test_cross_references_use_page_names(pages: dict[str, str]) -> None:
    """A group's page refers to its subcommands' pages by their file names."""
    text = pages["authctl-user.1"]
    assert "See \\fBauthctl\\-user\\-add\\fP(1)" in text
    assert "authctl user\\-add(1)" not in text
    for reference in re.findall(r"\\fB([a-z\\.-]+)\\fP\((\d)\)", "".join(pages.values())):
        page = reference[0].replace("\\-", "-") + "." + reference[1]
        assert page in pages or (MAN_DIR / page).exists(), f"dangling reference to {page}"


def test_pages_are_valid_roff(pages: dict[str, str]) -> None:
    """The generated pages use only known requests and escapes, in ASCII."""
    for name, text in pages.items():
        assert not roff_problems(text), f"{name}: {roff_problems(text)}"


def test_groff_renders_without_warnings(tmp_path: Path, pages: dict[str, str]) -> None:
    """Where groff is installed, it formats every page (generated and hand-written) silently."""
    for name, text in pages.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    files = sorted(tmp_path.glob("*.1")) + sorted(MAN_DIR.glob("*.5"))
    assert len(files) >= len(pages) + 2
    groff = shutil.which("groff")
    if groff is None:  # the pure-Python checks above and in test_docs.py still ran
        return
    for path in files:
        run = subprocess.run(
            [groff, "-man", "-Tutf8", "-ww", "-z", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert (run.returncode, run.stderr) == (0, ""), f"{path.name}: {run.stderr}"


def test_output_does_not_depend_on_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pages: dict[str, str]
) -> None:
    """Another folder, home and config variable give the same bytes, naming none of them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AUTHCTL_CONFIG", str(tmp_path / "elsewhere.toml"))
    monkeypatch.setenv("COLUMNS", "37")
    assert build() == pages
    everything = "".join(pages.values())
    for local in (str(tmp_path), str(Path.home()), str(Path.cwd()), socket.gethostname()):
        assert local not in everything


def test_check_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--check`` fails naming the command to run, and passes once the pages are written."""
    assert main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"Run `{COMMAND}`" in err
    assert "authctl.1 is missing" in err
    assert main(["--out", str(tmp_path / "new")]) == 0
    assert "changed: authctl" in capsys.readouterr().out
    assert main(["--check", "--out", str(tmp_path / "new")]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["--out", str(tmp_path / "new")]) == 0
    assert "changed: none" in capsys.readouterr().out


def test_check_shows_a_diff(tmp_path: Path, pages: dict[str, str]) -> None:
    """A page edited by hand is reported with a unified diff; an extra one as stale."""
    write(pages, tmp_path)
    page = tmp_path / "authctl.1"
    page.write_text(page.read_text(encoding="utf-8").replace("Manual", "Handbook"), "utf-8")
    (tmp_path / "authctl-gone.1").write_text(f"{GENERATED}\n.TH GONE 1\n", encoding="utf-8")
    stale, edited = differences(pages, tmp_path)  # sorted by name: "-" sorts before "."
    assert "-.TH" in edited
    assert "+.TH" in edited
    assert "authctl-gone.1 is stale" in stale


def test_write_removes_only_stale_generated_pages(tmp_path: Path, pages: dict[str, str]) -> None:
    """Regenerating deletes pages of removed commands, never hand-written pages."""
    (tmp_path / "authctl-gone.1").write_text(f"{GENERATED}\n.TH GONE 1\n", encoding="utf-8")
    (tmp_path / "hand.1").write_text('.\\" hand-written\n.TH HAND 1\n', encoding="utf-8")
    changed = write(pages, tmp_path)
    assert "authctl-gone.1" in changed
    assert not (tmp_path / "authctl-gone.1").exists()
    assert (tmp_path / "hand.1").exists()
    assert differences(pages, tmp_path) == []


@pytest.mark.parametrize(
    ("text", "roff"),
    [
        (None, None),
        ("plain text", "plain text"),
        ("use --config", "use \\-\\-config"),
        ("a \\ backslash", "a \\e backslash"),
        (".starts with a dot\n'and a quote", "\\&.starts with a dot\n\\&'and a quote"),
        ("caf\u00e9 \u2026", "caf\\[u00E9] \\[u2026]"),
        ("shown\fhidden", "shown"),
        ("one\n\n\b\nkeep  this\nas is", "one\n\n.nf\nkeep  this\nas is\n.fi"),
    ],
    ids=["none", "plain", "hyphens", "backslash", "requests", "unicode", "form-feed", "no-rewrap"],
)
def test_roff_text(text: str | None, roff: str | None) -> None:
    """Help text is escaped so roff prints it literally."""
    assert roff_text(text) == roff


def test_loaded_tree_fills_lazy_groups() -> None:
    """A lazy group's copy lists its subcommands; hidden ones are left out, the original kept."""

    class Lazy(click.Group):
        def list_commands(self, ctx: click.Context) -> list[str]:
            return ["b", "a", "secret"]

        def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
            return click.Command(name, help=f"Do {name}.", hidden=name == "secret")

    group = Lazy("root", help="Root.", params=[click.Option(["--x"], help="The x-value.")])
    tree = loaded_tree(group, "root")
    assert isinstance(tree, click.Group)
    assert list(tree.commands) == ["b", "a"]
    assert tree.commands["a"].help == "Do a."
    assert group.commands == {}
    option = tree.params[0]
    assert option.get_help_record(click.Context(tree)) == ("--x TEXT", "The x\\-value.")


def test_build_any_tree(tmp_path: Path) -> None:
    """A small tree with hyphenated names gets one page per command, linked both ways."""
    root = click.Group("authctl", help="Root.")
    group = click.Group("two-words", help="A group.")
    group.add_command(click.Command("sub-cmd", help="Leaf -- see .this."))
    root.add_command(group)
    pages = build(root)
    assert sorted(pages) == ["authctl-two-words-sub-cmd.1", "authctl-two-words.1", "authctl.1"]
    leaf = pages["authctl-two-words-sub-cmd.1"]
    assert "authctl\\-two\\-words\\-sub\\-cmd \\- Leaf \\-\\- see .this." in leaf
    assert '.SH "SEE ALSO"\n\\fBauthctl\\-two\\-words\\fP(1), ' in leaf
    assert "See \\fBauthctl\\-two\\-words\\-sub\\-cmd\\fP(1)" in pages["authctl-two-words.1"]
    assert differences(pages, tmp_path / "absent") == [
        f"{tmp_path / 'absent' / name} is missing" for name in sorted(pages)
    ]


def test_loaded_tree_refuses_a_missing_command() -> None:
    """A group that lists a command it cannot load is an error, not a silently missing page."""

    class Broken(click.Group):
        def list_commands(self, ctx: click.Context) -> list[str]:
            return ["ghost"]

    with pytest.raises(RuntimeError, match="lists 'ghost' but cannot load it"):
        loaded_tree(Broken("root"), "root")


def test_loaded_tree_names_a_command_that_fails_to_import() -> None:
    """A lazy command whose module is missing is named in the error, with the import error."""

    class Lazy(click.Group):
        def list_commands(self, ctx: click.Context) -> list[str]:
            return ["later"]

        def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
            raise ModuleNotFoundError("No module named 'authctl.cmd_later'")

    with pytest.raises(RuntimeError, match=r"root later: cannot load it: No module named"):
        loaded_tree(Lazy("root"), "root")


def test_main_reports_a_command_that_fails_to_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A command registered before its module exists stops the generator with a clear error."""
    from authctl import cli as cli_module

    monkeypatch.setitem(cli_module.COMMANDS, "ghost", "authctl.cmd_ghost:ghost")
    assert main(["--out", str(tmp_path)]) == 2
    assert "authctl ghost: cannot load it" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_module_runs_as_a_script(tmp_path: Path) -> None:
    """``python scripts/manpages.py --out DIR`` writes the pages, from any folder."""
    import sys

    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "manpages.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "authctl.1").exists()
