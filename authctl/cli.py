"""The root ``authctl`` command: global options, exit codes and the one error translation.

Subcommands live in ``authctl/cmd_*.py`` and are imported only when they run (or when
``--help`` lists them). This module and those modules import only click, the standard library
and ``authctl.errors`` at the top, so ``authctl --help`` never pays for webob, waitress, argon2,
pyotp or rich.
"""

from __future__ import annotations

import importlib
import typing as t
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import click

from authctl.errors import CheckFailed as CheckFailed
from authctl.errors import DataError as DataError
from authctl.errors import ExitCode as ExitCode
from authctl.errors import to_click
from server.core.errors import AuthError

if t.TYPE_CHECKING:
    from server.core.config import Config


@dataclass
class State:
    """What the root command hands its subcommands."""

    config_path: Path
    _config: Config | None = field(default=None, repr=False)

    def config(self) -> Config:
        """Load (once) and return the config; a broken file ends the command with exit 3."""
        if self._config is None:
            from server.core.config import load_config

            self._config = load_config(self.config_path)
        return self._config


pass_state = click.make_pass_decorator(State)


def username_callback(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Canonicalise a user name argument; an invalid one is a usage error (exit 2)."""
    from server.core.names import check_username

    try:
        return check_username(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


#: name -> "module:attribute"; modules are imported on first use.
COMMANDS: dict[str, str] = {
    "init": "authctl.cmd_init:init",
    "user": "authctl.cmd_user:user",
    "hash-password": "authctl.cmd_hash:hash_password",
    "rules": "authctl.cmd_rules:rules",
    "serve": "authctl.cmd_serve:serve",
    "bans": "authctl.cmd_bans:bans",
    "cert": "authctl.cmd_cert:cert",
    "proxy-snippet": "authctl.cmd_proxy:proxy_snippet",
    "storage": "authctl.cmd_storage:storage",
    "import": "authctl.cmd_import:import_",
    "doctor": "authctl.cmd_doctor:doctor",
    "session": "authctl.cmd_session:session",
    "token": "authctl.cmd_token:token",
    "oidc": "authctl.cmd_oidc:oidc",
}


class LazyGroup(click.Group):
    """A group that imports each subcommand's module only when it is needed, and turns every
    core error into its message and exit code in one place (``authctl.errors``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):  # pragma: no cover - a wiring mistake
            raise TypeError(f"{target} is not a click command")
        return command

    def invoke(self, ctx: click.Context) -> t.Any:
        try:
            return super().invoke(ctx)
        except AuthError as exc:
            raise to_click(exc) from None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version

    try:
        return version("authctl")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"authctl {_version()}")
        ctx.exit()


@click.group(
    cls=LazyGroup,
    short_help="forward-auth server with a login portal and single sign-on",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default="authctl.toml",
    envvar="AUTHCTL_CONFIG",
    show_default=True,
    show_envvar=True,
    help="The config file. Relative paths inside it resolve against its folder.",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path) -> None:
    """authctl: a forward-auth server with a login portal and single sign-on.

    Reverse proxies (Traefik, nginx, Caddy, HAProxy, Envoy) ask authctl whether each request
    may pass; authctl answers from the session cookie and the access rules.

    \b
    Exit codes: 0 ok, 1 a check failed, 2 usage error, 3 config or data error.
    Shell completion: eval "$(_AUTHCTL_COMPLETE=bash_source authctl)" (or zsh_source,
    fish_source).
    """
    ctx.obj = State(config_path)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="authctl")
