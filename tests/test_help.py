"""``--help`` of every command and group works: exit 0 and a usage line naming the command.

The commands come from walking the Click tree, not from a list, because the root group loads
its subcommands lazily and click's docs warn that each lazily loaded command's ``--help``
needs a test of its own (a broken import shows only there).
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from authctl.cli import cli
from tests.conftest import command_paths

PATHS = command_paths()


def test_tree_has_every_top_level_command() -> None:
    """The walk reaches every command the root group registers, and some nested ones."""
    from authctl.cli import COMMANDS

    assert {path[0] for path in PATHS if path} == set(COMMANDS)
    assert ("user", "totp", "add") in PATHS


@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(path) or "authctl")
def test_help(runner: CliRunner, path: tuple[str, ...]) -> None:
    """``authctl … --help`` exits 0 and starts with the command's usage line."""
    result = runner.invoke(cli, [*path, "--help"], prog_name="authctl")
    assert result.exit_code == 0, result.output
    usage = " ".join(("Usage: authctl", *path))
    assert result.output.startswith(usage + " "), result.output
