"""The Prometheus listener (``[telemetry.metrics]``): ``/metrics`` on an address of its own.

Not on the main port: the metrics say who signs in how often and which answers a site
gets, so they belong to whoever runs authctl, on loopback by default, not to every client
that reaches the portal. A small threaded server of the standard library (wsgiref) in a
daemon thread; a connection idle for ``IDLE_TIMEOUT`` seconds is closed.

With ``serve --workers N`` the supervisor serves the metrics: the workers write their
values to mmap'ed files in a private directory (:class:`MultiprocessDir`, mode 0700,
created empty at start and removed at exit), and each scrape sums the files of every
worker, living or dead, so a restarted worker's counts are not lost.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import typing as t
from collections.abc import Callable
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.simple_server import WSGIServer

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

#: The Prometheus text format's content type.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Seconds a scrape connection may stay silent before it is closed.
IDLE_TIMEOUT = 10.0
PATH = "/metrics"


class _Handler(WSGIRequestHandler):
    timeout = IDLE_TIMEOUT

    def log_message(self, format: str, *args: t.Any) -> None:
        """Scrapes are not logged (one line every few seconds, forever)."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def metrics_app(
    render: Callable[[], bytes],
) -> Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]:
    """A WSGI app: ``GET /metrics`` is ``render()``; anything else 404 or 405."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            status, headers, body = "404 Not Found", [], b"404 Not Found: see /metrics\n"
        elif environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            status, headers, body = "405 Method Not Allowed", [("Allow", "GET, HEAD")], b""
        else:
            status, headers, body = "200 OK", [("Cache-Control", "no-store")], render()
        if status != "200 OK":
            headers.append(("Content-Type", "text/plain; charset=utf-8"))
        else:
            headers.append(("Content-Type", CONTENT_TYPE))
        headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]

    return app


class MetricsListener:
    """``/metrics`` served on ``host:port`` from ``render()`` until :meth:`close`.

    Raises:
        OSError: the address cannot be listened on (in use, not of this machine, a
            privileged port); ``server.serve.httpd.listen_problem`` words it.
    """

    def __init__(self, host: str, port: int, render: Callable[[], bytes]) -> None:
        server_class = _Server6 if ":" in host else _Server
        self.server: WSGIServer = server_class((host, port), _Handler)
        self.server.set_app(metrics_app(render))
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="authctl-metrics",
            daemon=True,
        )
        self.thread.start()

    @property
    def port(self) -> int:
        """The port listened on (the one chosen when 0 was asked)."""
        return int(self.server.server_address[1])

    def forget(self) -> None:
        """In a forked worker: close this process's copy of the listening socket, so the
        port is free once the supervisor closes its own (the thread did not cross the fork)."""
        self.server.socket.close()

    def close(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class MultiprocessDir:
    """A private directory for the workers' metric files, set as
    ``PROMETHEUS_MULTIPROC_DIR`` (which workers inherit) until :meth:`remove`.

    Created empty and mode 0700 (``tempfile.mkdtemp``): no file of an earlier run is summed
    in, and no other user reads or plants values.
    """

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="authctl-metrics-")
        self._previous = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.path

    def remove(self) -> None:
        """Delete the directory and its files; restore the environment."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._previous is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = self._previous
