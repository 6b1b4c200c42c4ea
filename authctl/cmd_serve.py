"""``authctl serve``: run the server under waitress.

This is the only module that imports waitress. Forwarded headers are left alone
(``clear_untrusted_proxy_headers=False``, no waitress ``trusted_proxy``): the app itself
checks the TCP peer against ``server.trusted_proxies`` (SPEC §3.4).
"""

from __future__ import annotations

import logging
import socket
import time
import typing as t

import click

from authctl.cli import DataError
from authctl.cli import State
from authctl.cli import pass_state

if t.TYPE_CHECKING:
    from server.core.config import Config

#: waitress settings that are not user choices (SPEC §3.4, security.md §1.4 and §2.K).
WAITRESS_FIXED: dict[str, t.Any] = {
    "clear_untrusted_proxy_headers": False,
    "expose_tracebacks": False,
    "max_request_body_size": 64 * 1024,
    "max_request_header_size": 64 * 1024,
    "channel_timeout": 30,
    "channel_request_lookahead": 0,
    "ident": "authctl",
    # select() cannot watch a descriptor above 1023: about 1,000 idle connections made
    # waitress's loop raise "filedescriptor out of range in select()" and the server die
    "asyncore_use_poll": True,
}
#: The soft ``RLIMIT_NOFILE`` that ``serve`` raises itself to, within the hard limit: enough
#: for tens of thousands of connections, without one process watching unboundedly many.
FD_TARGET = 65536
#: Connections one process accepts at most. waitress's loop visits every connection on each
#: wake-up, so far more would make every answer slow (measured in tests/test_serve_idle.py).
MAX_CONNECTIONS = 20000


def raise_fd_limit(target: int = FD_TARGET) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` towards ``target`` (never above the hard limit, never
    lowering it); the soft limit now in force. Forked workers inherit it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):  # a container may refuse; the old limit still works
            pass
    return soft


def connection_limit(threads: int, fd_limit: int | None = None) -> int:
    """waitress's ``connection_limit`` for a process allowed ``fd_limit`` descriptors (the
    soft ``RLIMIT_NOFILE`` by default).

    Headroom stays free for everything else a process opens: the listening sockets and
    waitress's trigger pipe, log and users files, the SQLite files of each thread's
    connections (storage and sessions, with their journals), Redis connections. Reaching the
    limit makes waitress stop accepting (new connections wait in the listen backlog) instead
    of failing ``accept()`` with EMFILE in a busy loop.
    """
    import resource

    if fd_limit is None:
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if fd_limit == resource.RLIM_INFINITY:
        fd_limit = FD_TARGET
    headroom = 128 + 8 * threads
    return max(1, min(MAX_CONNECTIONS, max(fd_limit - headroom, fd_limit // 2)))


class QueueDepthLogger:
    """Stands in for waitress's ``waitress.queue`` logger: one warning per ``interval``.

    waitress warns "Task queue depth is N" on EVERY request queued while all its threads are
    busy, so under load the server spent a good part of its time building and writing one
    stderr line per request (a slowdown that feeds itself). A logging filter would still pay
    for each record; this checks the clock first. One line every few seconds still tells an
    operator that the thread pool is saturated.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._next = 0.0

    def warning(self, msg: str, *args: object) -> None:
        """Log at most once per ``interval`` seconds."""
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            self.logger.warning(msg + " (repeats are not logged for %ds)", *args, self.interval)


def make_server(
    app: t.Any,
    threads: int,
    listen: dict[str, t.Any] | None = None,
    sockets: list[socket.socket] | None = None,
    *,
    inline: t.Callable[[dict[str, t.Any]], t.Any] | None = None,
) -> t.Any:
    """A waitress server for ``app`` with authctl's fixed settings.

    Either ``listen`` (``listen_kwargs``: waitress binds) or ``sockets`` (already bound and
    listening, e.g. inherited from the ``--workers`` parent). ``inline`` (the app's
    ``decide_inline``) lets authz requests be answered in the I/O thread (``server.serve.inline``).
    The benchmark's baseline apps are served through this function too, so they run on
    exactly the same settings.
    """
    from waitress.server import create_server

    from server.core.forwarded import UNIX_PEER
    from server.serve.drain import accept_in_batches

    where: dict[str, t.Any] = {"sockets": sockets} if sockets is not None else dict(listen or {})
    socket_map: dict[int, t.Any] = {}
    server = create_server(
        app,
        map=socket_map,
        threads=threads,
        connection_limit=connection_limit(threads),
        **where,
        **WAITRESS_FIXED,
    )
    dispatcher = server.task_dispatcher
    dispatcher.queue_logger = QueueDepthLogger(dispatcher.queue_logger)  # type: ignore[assignment]
    accept_in_batches(socket_map)
    for listener in socket_map.values():
        if getattr(listener, "family", None) == socket.AF_UNIX:
            # waitress calls every unix peer "localhost"; the app trusts UNIX_PEER explicitly
            listener.fix_addr = lambda _addr: (UNIX_PEER, None)
    if inline is not None:
        from server.serve.inline import install

        install(list(socket_map.values()), inline)
    return server


def runtime_problems(config: Config) -> list[str]:
    """Files ``serve`` needs that ``rules check`` only warns about."""
    problems = []
    if not config.users.file.is_file():
        problems.append(
            f"{config.users.file}: users file not found (create it with `authctl user add NAME`)"
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
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes sharing the socket (one core each); needs session.store "
    "sqlite or redis.",
)
@pass_state
def serve(state: State, address: str | None, workers: int) -> None:
    """Run the authctl server (waitress) with the config file.

    Refuses to start on an invalid config or when the users file or storage key is missing.
    On SIGTERM or Ctrl-C it stops accepting, answers the requests it has received and exits
    (within server.shutdown_grace). With --workers N the parent binds the socket and
    supervises N worker processes: a worker that dies is restarted; while new workers keep
    failing to start, the parent logs why and retries after 1 s, doubling up to 30 s, and
    the other workers keep serving. SIGTERM stops them all.
    """
    from server.core.logs import configure_logging

    config = state.config()
    listen = listen_kwargs(config, address)
    if workers > 1 and config.session.store == "memory":
        raise click.UsageError(
            'session.store = "memory" is private to one process: with --workers, use '
            '"sqlite" (the default) or "redis" so that every worker sees every session'
        )
    problems = runtime_problems(config)
    if problems:
        raise DataError("\n".join(problems))
    configure_logging(config.log)
    raise_fd_limit()
    _check_notifier(config)
    if workers == 1:
        _serve_one(config, listen)
    else:
        status = _serve_workers(config, listen, workers)
        if status:
            raise SystemExit(status)
    click.echo("authctl stopped", err=True)


def _build_app(config: Config) -> t.Any:
    """``make_app``, with a broken collaborator (users file, databases) as exit status 3."""
    from server.core.errors import AuthError
    from server.web.app import make_app

    try:
        return make_app(config)
    except (ValueError, AuthError) as exc:
        raise DataError(str(exc)) from None


def _check_notifier(config: Config) -> None:
    """The notifier's start-up check (SMTP: connect, EHLO, TLS, login; file: writable)."""
    from server.core.notifier import NotifierError
    from server.core.notifier import make_notifier

    try:
        make_notifier(config.notifier).startup_check()
    except NotifierError as exc:
        raise DataError(f"notifier: {exc}") from None


def _run(server: t.Any, config: Config, started: t.Callable[[], None] = lambda: None) -> None:
    """Serve until SIGTERM or SIGINT, then answer what was received (``server.serve.drain``)."""
    from server.serve.drain import serve_until_stopped

    serve_until_stopped(server, config.server.shutdown_grace, started)


def _serve_one(config: Config, listen: dict[str, t.Any]) -> None:
    """One process: the app and waitress's thread pool."""
    app = _build_app(config)
    sockets = None
    if "unix_socket" in listen:  # bound here: mode 0660 from the start, a stale file removed
        from server.serve.workers import bind

        try:
            sockets = bind(listen)
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {listen['unix_socket']}: {exc}") from None
    server = make_server(app, config.server.threads, listen, sockets, inline=app.decide_inline)
    where = listen.get("unix_socket") or f"{listen['host']}:{server.effective_port}"
    click.echo(f"authctl serving on {where} (config {config.path})", err=True)
    try:
        _run(server, config)
    finally:
        if app.selfservice is not None:
            app.selfservice.close()  # send what the outbox still holds


def _serve_workers(config: Config, listen: dict[str, t.Any], workers: int) -> int:
    """The socket bound here, ``workers`` forked processes serving it (``server.serve.workers``)."""
    from server.serve.workers import StartError
    from server.serve.workers import Supervisor
    from server.serve.workers import bind
    from server.serve.workers import rebinder

    try:
        sockets = bind(listen, workers)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc}") from None
    if "unix_socket" in listen:
        where = listen["unix_socket"]
    else:
        where = f"{listen['host']}:{sockets[0].getsockname()[1]}"

    def worker(listen_socket: t.Callable[[], socket.socket], ready: t.Callable[[], None]) -> int:
        try:
            app = _build_app(config)
        except click.ClickException as exc:  # the parent logs it
            raise StartError(exc.format_message(), exc.exit_code) from None
        try:
            sock = listen_socket()
        except OSError as exc:
            raise StartError(f"cannot listen on {where}: {exc}") from None
        server = make_server(app, config.server.threads, sockets=[sock], inline=app.decide_inline)
        _run(server, config, ready)
        return 0

    def announce() -> None:
        click.echo(
            f"authctl serving on {where} (config {config.path}, {workers} workers)", err=True
        )

    supervisor = Supervisor(
        sockets,
        workers,
        worker,
        rebind=rebinder(listen, sockets),
        # each worker drains for up to shutdown_grace, then closes what is left
        stop_grace=config.server.shutdown_grace + 5.0,
    )
    try:
        return supervisor.run(on_ready=announce)
    finally:
        for sock in sockets:
            sock.close()
