"""``authctl storage …``: what the storage holds, and moving it from SQLite to PostgreSQL.

Only click and the standard library are imported at the top: ``server.*`` and rich load inside
the commands, so ``authctl --help`` stays cheap.
"""

from __future__ import annotations

import click


@click.group("storage")
def storage() -> None:
    """Show the storage (backend, schema, row counts) or move it to PostgreSQL."""
