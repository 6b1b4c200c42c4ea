"""``authctl hash-password``: print an argon2id PHC string for a password.

For pasting into a hand-written users file. It uses ``users.password_hash`` from the config;
without a config file it still works, with the default parameters (said on stderr), because
it is often run before anything is set up. A config that exists but is broken is an error:
silently hashing with other parameters than the admin configured would surprise.
"""

from __future__ import annotations

import click

from authctl.cli import State
from authctl.cli import pass_state
from authctl.cmd_user import read_password


@click.command("hash-password")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of stdin instead of prompting.",
)
@pass_state
def hash_password(state: State, password_stdin: bool) -> None:
    """Print an argon2id hash of a password, with the configured parameters."""
    from server.core.config import PasswordHashConfig
    from server.core.passwords import PasswordHasher

    if state.config_path.exists():
        params = state.config().users.password_hash
    else:
        params = PasswordHashConfig()
        click.echo(
            f"note: {state.config_path} does not exist; using the default argon2id parameters "
            f"(m={params.memory_kib} KiB, t={params.iterations}, p={params.parallelism})",
            err=True,
        )
    password = read_password(password_stdin)
    click.echo(PasswordHasher(params).hash(password))
