"""Answer authz sub-requests in waitress's I/O thread, without the thread-pool hand-off.

waitress parses every request in its I/O thread, queues it for a pool thread and is woken
through a pipe when the answer is written: per request a condition-variable wake-up, GIL
hand-offs between threads, and a pipe write and read. A bare "hello" pays that too, but
verify with a cached session is a few microseconds of in-memory work, so the hand-off cost
more than the work: against a bare waitress "hello" (``bench/run.py``, same run, SPEC §5)
verify reached about half its throughput through the pool, and about 0.9 answered here.

``install`` gives the servers a channel class whose requests, when waitress hands them to
the pool from the I/O thread, first go to ``decide(environ)`` (``App.decide_inline``). It
runs inside ``server.core.blocking.forbidden``, so it can only answer from memory. Its reply is
written by ``InlineTask`` within waitress's own ``HTTPChannel.service``, so keep-alive,
connection close and the order of pipelined answers stay waitress's; the bytes are the
ones waitress's ``WSGITask`` would write (``render``, tested byte for byte), in one send
instead of two. Everything else (portal pages, logins, a session missing from the cache, a
due activity write, a logged answer, a header waitress would refuse, an exception) goes to
the pool exactly as before, with the environ already built.
"""

from __future__ import annotations

import threading
import time
import typing as t
from collections.abc import Callable
from collections.abc import Iterable
from operator import itemgetter

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.task import Task
from waitress.task import WSGITask
from waitress.task import hop_by_hop
from waitress.utilities import build_http_date

from server.core import blocking
from server.web.authz import Reply

#: Output already waiting for the client above which a request goes to the pool. waitress
#: makes a writer wait while a connection holds more than its high watermark (16 MiB); a pool
#: thread may wait, the I/O thread must not (nobody else would send the data).
MAX_BUFFERED = 64 * 1024
#: Attributes set on waitress's request object: the environ built for the decision (reused
#: by the pool's task), and the rendered inline answer.
_ENVIRON = "_authctl_environ"
_RENDERED = "_authctl_rendered"

Decide = Callable[[dict[str, t.Any]], Reply | None]
#: status line, the bytes to send, whether the connection closes after them
Rendered = tuple[str, bytes, bool]


class _IOThread(threading.local):
    #: The channel whose input this thread is handling (set only in the I/O thread).
    channel: InlineChannel | None = None


_io = _IOThread()

# ------------------------------------------------------------------ the bytes


#: Entries kept by the memo tables below; a full table is emptied.
MEMO_SIZE = 4096
_names: dict[str, str] = {}
_heads: dict[tuple[object, ...], tuple[bytes, bytes, bool]] = {}
_date: list[t.Any] = [0, b""]


def _header_name(name: str) -> str:
    """waitress's spelling of a header name (``WWW-Authenticate`` -> ``Www-Authenticate``)."""
    spelled = _names.get(name)
    if spelled is None:
        spelled = "-".join(part.capitalize() for part in name.split("-"))
        if len(_names) < 256:
            _names[name] = spelled
    return spelled


def _http_date(now: float) -> bytes:
    second = int(now)
    if _date[0] != second:
        _date[:] = [second, build_http_date(second).encode("latin-1")]
    return t.cast(bytes, _date[1])


def render(
    version: str, connection: str, reply: Reply, ident: str, now: float
) -> tuple[bytes, bool]:
    """The bytes waitress's ``WSGITask`` writes for ``reply`` to a request of HTTP
    ``version`` (1.0 or 1.1) with this ``Connection`` header (lower case), and whether the
    connection closes after it.

    Raises:
        ValueError: a header waitress would refuse (CR or LF, a hop-by-hop header) or
            treat differently (Date, Server); the caller leaves the request to the pool.
        UnicodeEncodeError: a header value outside latin-1 (waitress fails on it too).
    """
    status, headers, body = reply
    key = (version, connection, status, tuple(headers), ident)
    head = _heads.get(key)
    if head is None:
        head = _head(version, connection, status, headers, ident)
        if len(_heads) >= MEMO_SIZE:
            _heads.clear()
        _heads[key] = head
    before_date, after_date, close = head
    return before_date + _http_date(now) + after_date + body, close


def _head(
    version: str, connection: str, status: str, headers: list[tuple[str, str]], ident: str
) -> tuple[bytes, bytes, bool]:
    """``render``'s response head, split where the date goes, and whether it closes."""
    out: list[tuple[str, str]] = []
    for name, value in headers:
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError("carriage return/line feed character present in a header")
        if name.lower() in hop_by_hop:
            raise ValueError(f"{name} is a hop-by-hop header")
        spelled = _header_name(name)
        if spelled in ("Date", "Server"):
            raise ValueError(f"{name} is waitress's to set")  # it would add Via, keep Date
        out.append((spelled, value))
    close = False
    if version == "1.0":
        if connection == "keep-alive":
            out.append(("Connection", "Keep-Alive"))
        else:
            close = True
    elif connection == "close":
        close = True
    if close:
        out.append(("Connection", "close"))
    if ident:
        out.append(("Server", ident))
    out.append(("Date", ""))  # the value is filled in per second by render
    out.sort(key=itemgetter(0))  # stable, as waitress's sorted()
    lines = [f"HTTP/{version} {status}", *(f"{name}: {value}" for name, value in out)]
    head = "\r\n".join(lines) + "\r\n\r\n"
    split = head.index("\r\nDate: \r\n") + len("\r\nDate: ")  # no value holds CR or LF
    return head[:split].encode("latin-1"), head[split:].encode("latin-1"), close


# ------------------------------------------------------------------ waitress integration


class InlineTask(Task):
    """Writes an answer ``render`` produced; ``HTTPChannel.service`` does the rest."""

    complete = True

    def __init__(self, channel: HTTPChannel, request: t.Any, rendered: Rendered) -> None:
        super().__init__(channel, request)
        self.rendered = rendered

    def execute(self) -> None:
        self.status, data, close = self.rendered
        self.wrote_header = True
        self.close_on_finish = close
        self.channel.write_soon(data)


def _task(channel: HTTPChannel, request: t.Any) -> Task:
    """The task for ``request``: its inline answer, or the WSGI app with the environ
    already built for the decision."""
    rendered = getattr(request, _RENDERED, None)
    if rendered is not None:
        return InlineTask(channel, request, rendered)
    task = WSGITask(channel, request)
    task.environ = getattr(request, _ENVIRON, None)
    return task


class InlineChannel(HTTPChannel):
    """An ``HTTPChannel`` that serves the requests ``decide`` answered in the I/O thread."""

    task_class = staticmethod(_task)  # type: ignore[assignment]
    #: Set by ``install`` on a subclass: the app's ``decide_inline``.
    decide: t.ClassVar[Decide]
    _serve_inline = False

    def handle_read(self) -> None:
        """Read (waitress), then serve what was answered inline.

        ``service`` sends the answer itself (waitress flushes as it writes); what the socket
        does not take at once is sent by the loop, as for any answer.
        """
        _io.channel = self
        try:
            super().handle_read()
            while self._serve_inline:
                self._serve_inline = False
                self.service()  # a pipelined request after this one comes back to try_inline
        finally:
            _io.channel = None
            # after an exception waitress's loop closes this connection (handle_error)
            self._serve_inline = False

    def try_inline(self) -> bool:
        """Whether the next request was answered from memory (then ``handle_read`` serves it).

        Called under waitress's ``requests_lock``; builds the environ once for both paths.
        """
        request = self.requests[0]
        if request.error is not None or self.total_outbufs_len > MAX_BUFFERED:
            return False
        try:
            environ = WSGITask(self, request).get_environment()  # type: ignore[arg-type]
            setattr(request, _ENVIRON, environ)
            with blocking.forbidden:
                reply = type(self).decide(environ)
            if reply is None:
                return False
            version = request.version if request.version in ("1.0", "1.1") else "1.0"
            connection = request.headers.get("CONNECTION", "").lower()
            data, close = render(version, connection, reply, self.adj.ident, time.time())
        except Exception:  # the pool answers (and logs) it
            return False
        rendered: Rendered = (reply[0], data, close)
        setattr(request, _RENDERED, rendered)
        return True


def install(servers: Iterable[object], decide: Decide) -> None:
    """Serve the connections of ``servers`` (waitress's socket map values: listeners,
    channels, triggers) through ``InlineChannel`` with ``decide``."""
    channel_class = type("InlineChannel", (InlineChannel,), {"decide": staticmethod(decide)})
    for server in servers:
        if isinstance(server, BaseWSGIServer):
            _install(server, channel_class)


def _install(server: BaseWSGIServer, channel_class: type[InlineChannel]) -> None:
    dispatch = server.add_task
    pull_trigger = server.pull_trigger

    def add_task(channel: t.Any) -> None:
        # waitress calls this in the I/O thread for a connection's first queued request,
        # and in a pool thread for the next one after a pipelined answer: only the I/O
        # thread, reading this very channel, may serve it inline
        reading = _io.channel
        if reading is not None and reading is channel and reading.try_inline():
            reading._serve_inline = True
            return
        dispatch(channel)

    def trigger() -> None:
        # the trigger wakes the I/O thread from select(); it is awake if it is the caller
        if _io.channel is None:
            pull_trigger()

    server.channel_class = channel_class
    server.add_task = add_task  # type: ignore[method-assign,assignment]
    server.pull_trigger = trigger  # type: ignore[method-assign]
