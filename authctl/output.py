"""Output helpers for the CLI: a rich console (imported lazily) and JSON.

rich is imported inside the functions so that ``authctl --help`` stays cheap.
"""

from __future__ import annotations

import json
import typing as t

import click

if t.TYPE_CHECKING:
    from rich.console import Console


def console(stderr: bool = False) -> Console:
    """A rich Console that respects NO_COLOR and plain (non-tty) output."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def echo_json(value: object) -> None:
    """Print ``value`` as indented JSON, the format scripts read."""
    click.echo(json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False))
