"""The CLI's one error boundary: ``authctl.errors.EXIT_CODES`` maps each core error class to
its exit code, the root group applies it once, and no command module catches a core error
class itself (issue 14 §2)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import server.core
from authctl import cli as cli_module
from authctl.cli import cli
from authctl.errors import EXIT_CODES
from authctl.errors import ExitCode
from authctl.errors import bad_parameter
from authctl.errors import exit_code
from authctl.errors import reworded
from server.core.certs import CertificateError
from server.core.errors import AuthError
from server.core.errors import ConfigError
from server.core.errors import InvalidCredentials
from server.core.errors import InvalidTargetError
from server.core.errors import Problem
from server.core.errors import UserError
from server.core.errors import UserStoreError
from server.core.notifier import NotifierError
from server.core.policy_tests import CasesError
from server.core.policy_tests import UnknownUserError
from server.core.session_store import SessionStoreError
from server.core.storage import StorageError
from server.core.storage import StorageKeyError
from server.core.totp import TotpAlreadyEnrolled
from tests.conftest import ROOT
from tests.conftest import command_paths

#: (module, class) pairs that catch a core error for a reason other than translating it.
NOT_TRANSLATIONS = {
    # `rules check` prints a broken config as its findings (exit 1): the output, not an error
    ("authctl.cmd_rules", "ConfigError"),
    # `user add --force` keeps a password the policy refuses, with a warning
    ("authctl.cmd_user", "WeakPassword"),
}


def core_error_names() -> set[str]:
    """The name of every exception class the core defines (every module of ``server.core``)."""
    names: set[str] = set()
    for info in pkgutil.walk_packages(server.core.__path__, "server.core."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__.startswith("server.core")
            ):
                names.add(name)
    return names


def caught_core_errors(source: str, core: set[str]) -> list[tuple[int, str]]:
    """``(line, class name)`` of each core error class an ``except`` clause in ``source``
    names, plainly (``except StorageError``), dotted (``certs.CertificateError``) or in a
    tuple."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            for part in ast.walk(node.type):
                name = (
                    part.id
                    if isinstance(part, ast.Name)
                    else part.attr
                    if isinstance(part, ast.Attribute)
                    else None
                )
                if name in core:
                    found.append((node.lineno, name))
    return found


def command_at(path: tuple[str, ...]) -> click.Command:
    """The command at ``path`` of the Click tree."""
    command: click.Command = cli
    ctx = click.Context(cli, info_name="authctl")
    for name in path:
        assert isinstance(command, click.Group)
        sub = command.get_command(ctx, name)
        assert sub is not None, path
        command = sub
        ctx = click.Context(command, info_name=name, parent=ctx)
    return command


def command_modules() -> set[str]:
    """The module of every command's callback, found by walking the Click tree."""
    modules = set()
    for path in command_paths():
        callback = command_at(path).callback
        if callback is not None:
            modules.add(inspect.unwrap(callback).__module__)
    return modules


def test_the_tree_walk_finds_every_command_module() -> None:
    """Every ``authctl/cmd_*.py`` defines a command of the tree, so the scan below sees it."""
    files = {f"authctl.{p.stem}" for p in (ROOT / "authctl").glob("cmd_*.py")}
    assert files <= command_modules()


def test_no_command_module_catches_a_core_error() -> None:
    """Only the root group turns core errors into messages and exit codes: a command wraps a
    call in ``reworded``/``bad_parameter`` to say more, it never catches the error itself."""
    core = core_error_names()
    caught = set()
    for module in sorted(command_modules()):
        if module == "authctl.cli":
            continue  # the boundary itself
        source = Path(importlib.import_module(module).__file__ or "").read_text()
        for line, name in caught_core_errors(source, core):
            caught.add((module, name))
            assert (module, name) in NOT_TRANSLATIONS, f"{module}:{line} catches {name}"
    assert caught == NOT_TRANSLATIONS  # the exceptions are still needed, and still there


def test_the_scan_would_catch_one() -> None:
    """The AST scan sees a core error class however the ``except`` clause spells it."""
    core = core_error_names()
    assert {"StorageError", "CertificateError", "UserError", "RequestError"} <= core
    source = (
        "try:\n    pass\nexcept StorageError:\n    pass\n"
        "try:\n    pass\nexcept (OSError, certs.CertificateError) as exc:\n    pass\n"
        "try:\n    pass\nexcept ValueError:\n    pass\n"
    )
    assert caught_core_errors(source, core) == [(3, "StorageError"), (7, "CertificateError")]


PROBLEM = [Problem(Path("authctl.toml"), "server.address", "not HOST:PORT", line=3)]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError(PROBLEM), ExitCode.DATA_ERROR),
        (UserStoreError(PROBLEM), ExitCode.DATA_ERROR),
        (CasesError(PROBLEM), ExitCode.DATA_ERROR),
        (UserError("no user 'zed'"), ExitCode.DATA_ERROR),
        (TotpAlreadyEnrolled("user 'alice' has a TOTP secret already"), ExitCode.DATA_ERROR),
        (StorageError("disk I/O error"), ExitCode.DATA_ERROR),
        (StorageKeyError("wrong key"), ExitCode.DATA_ERROR),
        (SessionStoreError("redis down"), ExitCode.DATA_ERROR),
        (InvalidTargetError("not a URL"), ExitCode.DATA_ERROR),
        (CertificateError("bad host"), ExitCode.DATA_ERROR),
        (NotifierError("cannot connect"), ExitCode.DATA_ERROR),
        (InvalidCredentials(), ExitCode.DATA_ERROR),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(int(v)),
)
def test_the_one_mapping(
    error: AuthError, code: ExitCode, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each core error class has its exit code in the table, and a command that raises it
    ends with click's ``Error: <message>`` on stderr and that code (no traceback)."""
    assert exit_code(error) == code

    @click.command()
    def boom() -> None:
        raise error

    monkeypatch.setitem(cli_module.COMMANDS, "boom", f"{__name__}:_boom")
    monkeypatch.setitem(globals(), "_boom", boom)
    result = runner.invoke(cli, ["boom"])
    assert (result.exit_code, result.stdout, result.stderr) == (code, "", f"Error: {error}\n")


def test_every_row_of_the_table_is_reachable() -> None:
    """No row is shadowed by an earlier, wider one, and the root class comes last."""
    classes = [cls for cls, _ in EXIT_CODES]
    for i, cls in enumerate(classes):
        assert not any(issubclass(cls, earlier) for earlier in classes[:i]), cls
    assert classes[-1] is AuthError


def test_reworded_and_bad_parameter(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    """``reworded`` keeps the table's exit code with the command's words; ``bad_parameter``
    is a usage error (exit 2) naming the option; other errors pass through untouched."""

    @click.command()
    @click.argument("which")
    def boom(which: str) -> None:
        if which == "reworded":
            with reworded("{0}; nothing was written", CertificateError):
                raise CertificateError("bad host")
        if which == "attributes":
            with reworded("{0.field}: {0.message}; {0.fix}", UnknownUserError):
                raise UnknownUserError("--user", "user 'zed' is unknown", "add zed")
        if which == "usage":
            with bad_parameter("--host", CertificateError):
                raise CertificateError("bad host")
        with reworded("never: {}", CertificateError):
            raise StorageError("disk I/O error")

    monkeypatch.setitem(cli_module.COMMANDS, "boom", f"{__name__}:_boom")
    monkeypatch.setitem(globals(), "_boom", boom)
    outcomes = {
        which: (r.exit_code, r.stderr)
        for which in ("reworded", "attributes", "usage", "other")
        for r in [runner.invoke(cli, ["boom", which])]
    }
    assert outcomes["reworded"] == (3, "Error: bad host; nothing was written\n")
    assert outcomes["attributes"] == (3, "Error: --user: user 'zed' is unknown; add zed\n")
    assert outcomes["usage"][0] == 2
    assert "Usage: cli boom [OPTIONS] WHICH" in outcomes["usage"][1]
    assert "Error: Invalid value for --host: bad host" in outcomes["usage"][1]
    assert outcomes["other"] == (3, "Error: disk I/O error\n")
