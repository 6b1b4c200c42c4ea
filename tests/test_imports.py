"""Import-cost guards: the core stays free of web and CLI libraries, and ``--help`` is cheap.

Each check runs in a fresh interpreter, because the test process itself has everything loaded.
``--help`` is checked against an allowlist, as click's own ``tests/test_imports.py`` does: a
module that is not on it (a library, or one of our modules that ``--help`` has no reason to
load) fails the test until someone decides it belongs there. The tier rules themselves are
import-linter contracts (``pyproject.toml``, ``[tool.importlinter]``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.conftest import command_paths

CORE = (
    "server.core.config",
    "server.core.users",
    "server.core.userfile",
    "server.core.passwords",
    "server.core.names",
)
NOT_IN_CORE = ("webob", "waitress", "click", "rich")

#: Top-level packages besides the standard library that ``authctl … --help`` may import.
HELP_ALLOWED_PACKAGES = frozenset({"authctl", "click", "server"})
#: The ``server`` modules it may import: the CLI's single error translation needs the errors.
HELP_ALLOWED_SERVER = frozenset({"server", "server.core", "server.core.errors"})


def modules_after(code: str) -> set[str]:
    """Run ``code`` in a fresh interpreter and return the modules it imported."""
    script = (
        "import sys\n"
        "_before = set(sys.modules)\n"
        f"{code}\n"
        "import json\n"
        "print(json.dumps(sorted(set(sys.modules) - _before)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def top_level(modules: set[str]) -> set[str]:
    """The top-level package names among ``modules``."""
    return {name.partition(".")[0] for name in modules}


def test_core_imports_no_web_or_cli_library() -> None:
    """Importing the core modules (users, passwords, names, config) loads no web or CLI library."""
    loaded = top_level(modules_after("\n".join(f"import {m}" for m in CORE)))
    assert not loaded & set(NOT_IN_CORE)
    assert "argon2" in loaded


def not_allowed(modules: set[str]) -> set[str]:
    """The modules among ``modules`` that ``--help`` may not import."""
    stdlib = sys.stdlib_module_names
    return {
        m
        for m in modules
        if (top := m.partition(".")[0]) not in stdlib
        and top.lstrip("_") not in stdlib
        and (top not in HELP_ALLOWED_PACKAGES or (top == "server" and m not in HELP_ALLOWED_SERVER))
    }


def test_allowlist_catches_a_library() -> None:
    """A library or a ``server`` module outside the allowlist is reported; the stdlib is not."""
    assert not_allowed({"json", "_json", "click.core", "authctl.cmd_user"}) == set()
    assert not_allowed({"rich.console", "server.web.app", "server.core.errors"}) == {
        "rich.console",
        "server.web.app",
    }


@pytest.mark.parametrize("path", command_paths(), ids=lambda path: " ".join(path) or "authctl")
def test_help_imports_only_the_allowlist(path: tuple[str, ...]) -> None:
    """``authctl … --help`` imports only the standard library, click and the allowed modules."""
    argv = [*path, "--help"]
    code = (
        f"sys.argv = ['authctl', *{argv!r}]\n"
        "from authctl.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
    )
    loaded = modules_after(code)
    assert "click" in top_level(loaded)
    assert not not_allowed(loaded), sorted(not_allowed(loaded))
