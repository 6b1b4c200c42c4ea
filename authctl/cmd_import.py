"""``authctl import authelia``: turn an Authelia setup into an authctl folder."""

from __future__ import annotations

import click


@click.group("import")
def import_() -> None:
    """Import another server's configuration, users and second factors."""
