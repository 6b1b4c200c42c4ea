"""Import-cost guards: the pure core stays free of web and CLI libraries, and ``--help`` is cheap.

Each check runs in a fresh interpreter, because the test process itself has everything loaded
(the idea of click's own ``tests/test_imports.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

CORE = (
    "server.core.config",
    "server.core.users",
    "server.core.userfile",
    "server.core.passwords",
    "server.core.names",
)
NOT_IN_CORE = ("webob", "waitress", "click", "rich")
NOT_IN_HELP = ("webob", "waitress", "argon2", "pyotp", "rich")


def modules_after(code: str) -> set[str]:
    """Run ``code`` in a fresh interpreter and return the modules it left imported."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
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


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["user", "--help"],
        ["user", "add", "--help"],
        ["init", "--help"],
        ["hash-password", "--help"],
    ],
    ids=["root", "user", "user-add", "init", "hash-password"],
)
def test_help_is_cheap(argv: list[str]) -> None:
    """``authctl … --help`` imports none of webob, waitress, argon2, pyotp or rich."""
    code = (
        "import sys\n"
        f"sys.argv = ['authctl', *{argv!r}]\n"
        "from authctl.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
    )
    loaded = top_level(modules_after(code))
    assert "click" in loaded
    assert not loaded & set(NOT_IN_HELP), sorted(loaded & set(NOT_IN_HELP))
