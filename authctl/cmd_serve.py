"""``authctl serve``: run the server under waitress.

This is the only module that imports waitress. Forwarded headers are left alone
(``clear_untrusted_proxy_headers=False``, no waitress ``trusted_proxy``): the app itself
checks the TCP peer against ``server.trusted_proxies`` (SPEC §3.4).
"""

from __future__ import annotations

import typing as t

import click

from authctl.cli import DataError
from authctl.cli import State
from authctl.cli import pass_state

if t.TYPE_CHECKING:
    from server.config import Config

#: waitress settings that are not user choices (SPEC §3.4, security.md §1.4 and §2.K).
WAITRESS_FIXED: dict[str, t.Any] = {
    "clear_untrusted_proxy_headers": False,
    "expose_tracebacks": False,
    "max_request_body_size": 64 * 1024,
    "max_request_header_size": 64 * 1024,
    "channel_timeout": 30,
    "connection_limit": 1000,
    "channel_request_lookahead": 0,
    "ident": "authctl",
}


def runtime_problems(config: Config) -> list[str]:
    """Files ``serve`` needs that ``rules check`` only warns about."""
    problems = []
    if not config.users.file.is_file():
        problems.append(
            f"{config.users.file}: users file not found (create it with `authctl init` or "
            "`authctl user add`)"
        )
    if not config.storage.encryption_key_file.is_file():
        problems.append(
            f"{config.storage.encryption_key_file}: storage key not found (create it with "
            "`authctl init`)"
        )
    return problems


def listen_kwargs(config: Config, address: str | None) -> dict[str, t.Any]:
    """waitress's listen arguments from ``server.address`` or ``--address``."""
    if address is None:
        address = config.server.address
    if address.startswith("unix:"):
        return {"unix_socket": address[len("unix:") :], "unix_socket_perms": "660"}
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{address!r} is not HOST:PORT", param_hint="--address")
    return {"host": host.strip("[]"), "port": int(port)}


@click.command()
@click.option(
    "--address",
    metavar="HOST:PORT",
    help="Listen here instead of server.address (also unix:/path/to.sock).",
)
@pass_state
def serve(state: State, address: str | None) -> None:
    """Run the authctl server (waitress) with the config file.

    Refuses to start on an invalid config or when the users file or storage key is missing.
    Stops cleanly on SIGTERM or Ctrl-C.
    """
    import signal

    from waitress.server import create_server

    from server.app import make_app
    from server.logs import configure_logging

    config = state.config()
    listen = listen_kwargs(config, address)
    problems = runtime_problems(config)
    if problems:
        raise DataError("\n".join(problems))
    configure_logging(config.log)
    try:
        app = make_app(config)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    server = create_server(app, threads=config.server.threads, **listen, **WAITRESS_FIXED)

    def stop(_signum: int, _frame: object) -> None:
        # waitress's run() turns SystemExit into a graceful shutdown of its task threads
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    where = listen.get("unix_socket") or f"{listen['host']}:{server.effective_port}"  # type: ignore[union-attr]
    click.echo(f"authctl serving on {where} (config {config.path})", err=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    click.echo("authctl stopped", err=True)
