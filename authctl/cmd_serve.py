"""``authctl serve``: run the server under waitress.

The server and the app come from ``server.serve.httpd`` (waitress's settings live there);
this module parses the options, checks the files ``serve`` needs and reports in the terminal.
"""

from __future__ import annotations

import os
import signal
import socket
import typing as t

import click

from authctl.cli import DataError
from authctl.cli import State
from authctl.cli import pass_state
from authctl.errors import reworded

if t.TYPE_CHECKING:
    from server.core.config import Config
    from server.core.reload import Reloader
    from server.core.reload import Stamp


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

    SIGHUP reopens log.audit_file (after logrotate moved it) and reloads the config file
    (with server.watch_config = true, so does a change of the file): an invalid file is
    logged (file, key, line) and not applied; rules, cookie domains, regulation, session
    lifetimes, notifier, password policy and branding apply to the next request; a changed
    key that needs a restart (address, threads, stores, users file, log, telemetry) is
    logged and keeps its running value. With --workers the parent forwards SIGHUP to every
    worker and each reloads.

    With telemetry.metrics.enable, Prometheus metrics are served at /metrics on
    telemetry.metrics.address (by the parent with --workers, summing every worker's).
    """
    from server.core.logs import configure_logging
    from server.core.reload import stamp
    from server.core.runtime import runtime_problems
    from server.serve.httpd import raise_fd_limit

    config = state.config()
    loaded = stamp(config.path)  # what a reload compares the file with
    listen = listen_kwargs(config, address)
    # an address this machine cannot listen on is reported like a config error (exit 3)
    setting = "--address" if address is not None else f"server.address in {config.path}"
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
    _check_host(listen, setting)
    if workers == 1:
        _serve_one(config, listen, setting, loaded)
    else:
        status = _serve_workers(config, listen, workers, setting, loaded)
        if status:
            raise SystemExit(status)
    click.echo("authctl stopped", err=True)


def _build_app(config: Config) -> t.Any:
    """``make_app``, with a broken collaborator (users file, databases) as exit status 3."""
    from server.core.errors import AuthError
    from server.serve.httpd import build_app

    # here, not at the root group: a worker process reports it to the parent (StartError)
    with reworded("{}", ValueError, AuthError):
        return build_app(config)


def _check_notifier(config: Config) -> None:
    """The notifier's start-up check (SMTP: connect, EHLO, TLS, login; file: writable)."""
    from server.core.notifier import NotifierError
    from server.core.notifier import make_notifier

    with reworded("notifier: {}", NotifierError):
        make_notifier(config.notifier).startup_check()


def _listen_error(listen: dict[str, t.Any], exc: OSError, setting: str) -> DataError:
    """An address ``serve`` cannot listen on, as one line with the fix (exit 3)."""
    from server.serve.httpd import address_of
    from server.serve.httpd import listen_problem

    return DataError(listen_problem(address_of(listen), exc, setting))


def _check_host(listen: dict[str, t.Any], setting: str) -> None:
    """A host name that does not resolve, before anything is built."""
    from server.serve.httpd import check_host

    try:
        check_host(listen)
    except OSError as exc:
        raise _listen_error(listen, exc, setting) from None


def _metrics_listener(config: Config, render: t.Callable[[], bytes]) -> t.Any:
    """The ``/metrics`` listener on ``telemetry.metrics.address``; an address it cannot
    listen on is a config error (exit 3) that names the key and the fix."""
    from server.serve.httpd import listen_problem
    from server.serve.metrics_listener import MetricsListener

    metrics_config = config.telemetry.metrics
    try:
        return MetricsListener(metrics_config.host, metrics_config.port, render)
    except OSError as exc:
        setting = f"telemetry.metrics.address in {config.path}"
        raise DataError(listen_problem(metrics_config.address, exc, setting)) from None


def _run(server: t.Any, config: Config, started: t.Callable[[], None] = lambda: None) -> None:
    """Serve until SIGTERM or SIGINT, then answer what was received (``server.serve.drain``);
    SIGHUP runs the ``server.core.hup`` callbacks (the audit log reopens its file)."""
    from server.core import hup
    from server.serve.drain import serve_until_stopped

    hup.install()

    serve_until_stopped(server, config.server.shutdown_grace, started)


def _reloads(
    config: Config,
    apply: t.Callable[[Config], None],
    loaded: Stamp | None,
    *,
    report: bool = True,
    count: bool = True,
    name: str = "",
) -> tuple[Reloader, t.Callable[[], None]]:
    """A started ``server.core.reload.Reloader`` that SIGHUP wakes (``server.core.hup``), and
    the function that unregisters it. SIGHUP's handler is installed here already (main
    thread), so a SIGHUP sent as soon as ``serve`` says it serves reloads, never kills."""
    from server.core import hup
    from server.core.reload import Reloader

    reloader = Reloader(config, apply, loaded=loaded, report=report, count=count, name=name)
    remove = hup.on_hangup(reloader.request)
    hup.install()
    reloader.start()
    return reloader, remove


def _serve_one(
    config: Config, listen: dict[str, t.Any], setting: str, loaded: Stamp | None = None
) -> None:
    """One process: the app and waitress's thread pool (and the metrics listener, if on)."""
    listener = None
    if config.telemetry.metrics.enable:
        from server.core import metrics

        recorder = metrics.Metrics()
        metrics.install(recorder)
        listener = _metrics_listener(config, recorder.scrape)
    try:
        _serve_app(config, listen, setting, loaded)
    finally:
        if listener is not None:
            listener.close()


def _serve_app(
    config: Config, listen: dict[str, t.Any], setting: str, loaded: Stamp | None
) -> None:
    from server.serve.httpd import make_app_server

    app = _build_app(config)
    sockets = None
    if "unix_socket" in listen:  # bound here: mode 0660 from the start, a stale file removed
        from server.serve.workers import bind

        try:
            sockets = bind(listen)
        except OSError as exc:
            raise _listen_error(listen, exc, setting) from None
    try:
        server = make_app_server(app, config, listen, sockets)
    except OSError as exc:  # waitress binds a TCP address itself
        raise _listen_error(listen, exc, setting) from None
    reloader, _ = _reloads(config, app.reload, loaded)  # SIGHUP reloads from now on
    if config.server.watch_config:
        from server.core.reload import Watcher

        Watcher(config.path, reloader.request, initial=loaded).start()
    where = listen.get("unix_socket") or f"{listen['host']}:{server.effective_port}"
    click.echo(f"authctl serving on {where} (config {config.path})", err=True)
    try:
        _run(server, config)
    finally:
        if app.selfservice is not None:
            app.selfservice.close()  # send what the outbox still holds


def _serve_workers(
    config: Config,
    listen: dict[str, t.Any],
    workers: int,
    setting: str,
    loaded: Stamp | None = None,
) -> int:
    """The socket bound here, ``workers`` forked processes serving it (``server.serve.workers``)."""
    from server.core import audit
    from server.serve.httpd import address_of
    from server.serve.httpd import listen_problem
    from server.serve.httpd import make_app_server
    from server.serve.workers import StartError
    from server.serve.workers import Supervisor
    from server.serve.workers import bind
    from server.serve.workers import rebinder

    # the parent writes config_reload events; each worker inherits the file (make_app keeps it)
    audit.configure(config.log.audit_file)
    try:
        sockets = bind(listen, workers)
    except OSError as exc:
        raise _listen_error(listen, exc, setting) from None
    if "unix_socket" in listen:
        where = listen["unix_socket"]
    else:
        where = f"{listen['host']}:{sockets[0].getsockname()[1]}"
    try:
        shared = _shared_metrics(config)
    except DataError:
        for sock in sockets:
            sock.close()
        raise

    # The parent validates each reload, logs its problems and counts it once, and keeps the
    # last good config, which a worker forked later starts from; each worker reloads its own
    # app on SIGHUP (quietly, uncounted).
    if shared is not None:
        from server.core import metrics

        metrics.install(metrics.ReloadCounter())  # workers install their own recorder
    parent, unhook = _reloads(config, lambda _config: None, loaded)

    def worker(listen_socket: t.Callable[[], socket.socket], ready: t.Callable[[], None]) -> int:
        recorder = None
        if shared is not None:
            from server.core import metrics

            shared[1].forget()  # the supervisor's listener is not this process's
            recorder = metrics.Metrics(multiprocess=True)
            metrics.install(recorder)
            recorder.start_flusher()
        try:
            return _work(listen_socket, ready)
        finally:
            if recorder is not None:
                recorder.close()  # its last counts into its file, kept after it exits

    def _work(listen_socket: t.Callable[[], socket.socket], ready: t.Callable[[], None]) -> int:
        unhook()  # the parent's reloader has no thread here
        current, current_stamp = parent.config, parent.loaded
        try:
            app = _build_app(current)
        except click.ClickException as exc:  # the parent logs it
            raise StartError(exc.format_message(), exc.exit_code) from None
        try:
            sock = listen_socket()
        except OSError as exc:
            raise StartError(listen_problem(address_of(listen), exc, setting)) from None
        server = make_app_server(app, current, sockets=[sock])
        # quiet: the parent reports the file's problems; a file changed since is reloaded now
        name = f"worker {os.getpid()}"
        _reloads(current, app.reload, current_stamp, report=False, count=False, name=name)
        _run(server, current, ready)
        return 0

    def announce() -> None:
        click.echo(
            f"authctl serving on {where} (config {config.path}, {workers} workers)", err=True
        )
        if config.server.watch_config:  # a change is a SIGHUP to the parent: every worker
            from server.core.reload import Watcher

            hangup = lambda: os.kill(os.getpid(), signal.SIGHUP)  # noqa: E731
            Watcher(config.path, hangup, initial=loaded).start()

    on_exit = None
    if shared is not None:
        from server.core.metrics import mark_process_dead

        folder = shared[0].path
        on_exit = lambda pid: mark_process_dead(pid, folder)  # noqa: E731
    supervisor = Supervisor(
        sockets,
        workers,
        worker,
        rebind=rebinder(listen, sockets),
        on_exit=on_exit,
        # each worker drains for up to shutdown_grace, then closes what is left
        stop_grace=config.server.shutdown_grace + 5.0,
    )
    try:
        return supervisor.run(on_ready=announce)
    finally:
        for sock in sockets:
            sock.close()
        if shared is not None:
            from server.core import metrics

            metrics.install(None)
            shared[1].close()
            shared[0].remove()


def _shared_metrics(config: Config) -> tuple[t.Any, t.Any] | None:
    """With metrics on, for ``--workers``: the private folder the workers write their values
    to (``PROMETHEUS_MULTIPROC_DIR``, which they inherit) and the supervisor's listener that
    sums them; None with metrics off."""
    if not config.telemetry.metrics.enable:
        return None
    from server.core.metrics import exposition
    from server.core.metrics import multiprocess_registry
    from server.serve.metrics_listener import MultiprocessDir

    folder = MultiprocessDir()
    registry = multiprocess_registry(folder.path)
    try:
        listener = _metrics_listener(config, lambda: exposition(registry))
    except DataError:
        folder.remove()
        raise
    return folder, listener
