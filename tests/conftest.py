"""Shared fixtures: a CLI runner, cheap argon2 parameters, a settable clock, config files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck
from hypothesis import settings

# a call that may block (open, socket.connect, sqlite3.connect) inside blocking.forbidden fails
# the test that made it (tests/blocking_audit.py)
from tests.blocking_audit import pytest_runtest_call  # noqa: F401

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

ROOT = Path(__file__).resolve().parent.parent


def command_paths() -> list[tuple[str, ...]]:
    """Every command and group of ``authctl``, found by walking the Click tree from the root
    (``()`` is the root group itself), so a new command is covered without editing a list."""
    from authctl.cli import cli

    found: list[tuple[str, ...]] = []

    def walk(command: click.Command, path: tuple[str, ...], parent: click.Context | None) -> None:
        found.append(path)
        if isinstance(command, click.Group):
            ctx = click.Context(command, info_name=path[-1] if path else "authctl", parent=parent)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None, (path, name)
                walk(sub, (*path, name), ctx)

    walk(cli, (), None)
    return found


#: A config that exercises every section, written by the ``config_file`` fixture.
BASE_CONFIG = """\
[server]
address = "127.0.0.1:9091"
trusted_proxies = ["127.0.0.1/32", "::1/128"]
threads = 4

[users]
file = "users.toml"
watch = true
password_hash = { memory_kib = 8, iterations = 1, parallelism = 1 }

[storage]
path = "authctl.db"
encryption_key_file = "secrets/storage.key"

[session]
name = "authctl_session"
expiration = "1h"
inactivity = "5m"
remember_me = "1M"
store = "memory"

[[session.cookies]]
domain = "example.com"
portal_url = "https://auth.example.com"
default_redirect_url = "https://www.example.com"

[access_control]
default_policy = "deny"
networks = { internal = ["10.0.0.0/8", "192.168.0.0/16"] }

[[access_control.rules]]
domain = ["public.example.com"]
policy = "bypass"

[[access_control.rules]]
domain = "app.example.com"
resources = ["^/admin([/?].*)?$"]
subject = ["group:admins"]
policy = "two_factor"

[[access_control.rules]]
domain = "*.example.com"
policy = "one_factor"
"""


class Clock:
    """A settable clock to inject as ``now``."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def runner() -> CliRunner:
    """A click test runner."""
    return CliRunner()


@pytest.fixture
def clock() -> Clock:
    """A fake clock starting at a fixed time."""
    return Clock()


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write a config text into a fresh folder and return its path."""

    def write(text: str = BASE_CONFIG) -> Path:
        path = tmp_path / "authctl.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def config_file(write_config: Callable[[str], Path]) -> Path:
    """The base config written to disk (users file not created)."""
    return write_config(BASE_CONFIG)
