"""The waitress server authctl runs: its fixed settings, the descriptor limits, and the app.

Forwarded headers are left alone (``clear_untrusted_proxy_headers=False``, no waitress
``trusted_proxy``): the app itself checks the TCP peer against ``server.trusted_proxies``
(SPEC §3.4). ``authctl serve`` builds its app and servers here, and reaches the web tier
through :func:`build_app` only.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
import typing as t
from pathlib import Path

from server.core import endpoints
from server.core import metrics
from server.core.forwarded import UNIX_PEER
from server.serve import waitress_adapter
from server.serve.drain import accept_in_batches

if t.TYPE_CHECKING:
    from server.core.config import Config
    from server.web.app import App

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
    recorder: metrics.Recorder | None = None,
) -> t.Any:
    """A waitress server for ``app`` with authctl's fixed settings.

    Either ``listen`` (``authctl serve``'s ``listen_kwargs``: waitress binds) or ``sockets``
    (already bound and listening, e.g. inherited from the ``--workers`` parent). ``inline``
    (the app's ``decide_inline``) lets authz requests be answered in the I/O thread
    (``server.serve.inline``), counted by ``recorder`` (``server.core.metrics``) if given.
    The benchmark's baseline apps are served through this function too, so they run on
    exactly the same settings.
    """
    where: dict[str, t.Any] = {"sockets": sockets} if sockets is not None else dict(listen or {})
    socket_map: dict[int, t.Any] = {}
    server = waitress_adapter.create_server(
        app,
        map=socket_map,
        threads=threads,
        connection_limit=connection_limit(threads),
        **where,
        **WAITRESS_FIXED,
    )
    waitress_adapter.throttle_queue_warnings(server, QueueDepthLogger)
    accept_in_batches(socket_map)
    # waitress calls every unix peer "localhost"; the app trusts UNIX_PEER explicitly
    waitress_adapter.name_unix_peers(socket_map, UNIX_PEER)
    if inline is not None:
        from server.serve.inline import install

        install(list(socket_map.values()), inline, recorder)
    return server


def make_app_server(
    app: App,
    config: Config,
    listen: dict[str, t.Any] | None = None,
    sockets: list[socket.socket] | None = None,
) -> t.Any:
    """``authctl serve``'s waitress server for ``app``: ``config.server.threads`` pool threads,
    and authz answered in the I/O thread unless ``server.inline_authz`` is false. Every
    answer is counted by the installed metrics recorder (``server.core.metrics``) when
    metrics are on: here for the pool, in ``server.serve.inline`` for the I/O thread."""
    inline = app.decide_inline if config.server.inline_authz else None
    recorder = metrics.active()
    wsgi = counted(app, recorder) if recorder.enabled else app
    return make_server(
        wsgi, config.server.threads, listen, sockets, inline=inline, recorder=recorder
    )


def _is_authz(path: str) -> bool:
    """Whether ``path`` is an authz endpoint (``authctl_authz_total`` counts its answers)."""
    return path in endpoints.AUTHZ or path.startswith(f"{endpoints.EXT_AUTHZ}/")


def counted(app: t.Any, recorder: metrics.Recorder) -> t.Any:
    """``app`` with each answer given to ``recorder.answered`` (status, method, time), an
    exception as the 500 waitress sends for it."""
    answered = recorder.answered

    def wsgi(environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        started = time.perf_counter()
        status = ["500 Internal Server Error"]

        def start(line: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> t.Any:
            status[0] = line
            return start_response(line, headers, exc_info)

        try:
            return app(environ, start)
        finally:
            answered(
                status[0],
                environ.get("REQUEST_METHOD", ""),
                time.perf_counter() - started,
                authz=_is_authz(environ.get("PATH_INFO", "")),
            )

    return wsgi


def address_of(listen: dict[str, t.Any]) -> str:
    """``listen``'s address as a user writes it: ``host:port``, ``[v6]:port``, ``unix:/path``."""
    if "unix_socket" in listen:
        return f"unix:{listen['unix_socket']}"
    host = str(listen["host"])
    return f"[{host}]:{listen['port']}" if ":" in host else f"{host}:{listen['port']}"


def check_host(listen: dict[str, t.Any]) -> None:
    """Resolve a TCP host before waitress does (waitress turns a failure into a bare
    ``ValueError``).

    Raises:
        socket.gaierror: the host name does not resolve.
    """
    if "unix_socket" not in listen:
        socket.getaddrinfo(
            listen["host"], listen["port"], type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )


def listen_problem(where: str, exc: OSError, setting: str) -> str:
    """One line for an address ``serve`` cannot listen on: what is wrong with ``where`` and
    how to fix it in ``setting`` (``--address``, or ``server.address in FILE``)."""
    unix = where.startswith("unix:")
    path = where[len("unix:") :]
    folder = str(Path(path).parent)
    code = exc.errno
    if isinstance(exc, socket.gaierror):
        problem = f"the host name does not resolve ({exc.strerror})"
        fix = (
            "write an IP address of this machine (127.0.0.1, [::1], 0.0.0.0) or a name it "
            f"resolves in {setting}"
        )
    elif code == errno.EADDRINUSE and unix:
        problem = "another server listens on that socket"
        fix = f"stop it, or choose another path in {setting}"
    elif code == errno.EADDRINUSE:
        problem = "the port is already in use"
        fix = f"stop the server that holds it, or choose another port in {setting}"
    elif code == errno.ENOENT and unix:
        problem = f"the folder {folder} does not exist"
        fix = f"create it with `mkdir -p {folder}`, or choose another path in {setting}"
    elif code in (errno.EACCES, errno.EPERM) and unix:
        problem = f"this user may not create a socket in {folder}"
        fix = f"give it write access to the folder, or choose another path in {setting}"
    elif code in (errno.EACCES, errno.EPERM):
        problem = "this user may not listen on that port (below 1024 needs privileges)"
        fix = f"choose a port above 1023 in {setting}, or run with CAP_NET_BIND_SERVICE"
    elif code == errno.EADDRNOTAVAIL:
        problem = "no interface of this machine has that address"
        fix = (
            "write an address of this machine (127.0.0.1, or 0.0.0.0 for every interface) "
            f"in {setting}"
        )
    elif code == errno.EEXIST and unix:
        problem = f"{path} exists and is not a socket"
        fix = f"move it away, or choose another path in {setting}"
    elif unix and "too long" in str(exc):
        problem = "the path is too long for a unix socket"
        fix = f"choose a path of at most 107 bytes in {setting}"
    else:
        problem = exc.strerror or str(exc)
        fix = f"choose another address in {setting}"
    return f"cannot listen on {where}: {problem} (fix: {fix})"


def build_app(config: Config) -> App:
    """The WSGI app ``authctl serve`` runs for ``config`` (:func:`server.web.app.make_app`).

    Raises what ``make_app`` raises (``ValueError``, ``AuthError``) for a broken
    collaborator: the users file, the databases or their key.
    """
    from server.web.app import make_app

    return make_app(config)
