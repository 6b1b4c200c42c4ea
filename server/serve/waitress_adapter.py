"""Every use authctl makes of waitress beyond ``create_server``, in one module.

Answering authz in the I/O thread (``server.serve.inline``), draining on SIGTERM and
accepting in batches (``server.serve.drain``) need waitress's channel, task, server and
loop internals, which waitress does not promise to keep. They are touched here only: the
other modules of ``server.serve`` import nothing from waitress. Each internal is named in
``INTERNALS``, and ``tests/test_waitress_contract.py`` checks every one of them (that it
exists, its signature, the behaviour relied on) against the installed waitress, so an
upgrade that changes one fails there, by name, instead of as a hang or a reset in production.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import typing as t
from collections.abc import Callable
from collections.abc import Iterable

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.server import create_server
from waitress.task import Task
from waitress.task import WSGITask
from waitress.task import hop_by_hop
from waitress.utilities import build_http_date

__all__ = ["HOP_BY_HOP", "build_http_date", "create_server"]

#: The waitress internals used below, checked one by one by ``tests/test_waitress_contract.py``
#: (a new use here gets a name here and a check there).
INTERNALS: tuple[str, ...] = (
    "server.create_server",  # map=, sockets=, returns .task_dispatcher, ._map or .map
    "server.BaseWSGIServer",  # the listeners in a socket map
    "BaseWSGIServer._map",
    "BaseWSGIServer.adj",  # .connection_limit, .asyncore_loop_timeout, .ident
    "BaseWSGIServer.family",
    "BaseWSGIServer.handle_accept",  # accepts one connection per call into ._map
    "BaseWSGIServer.fix_addr",
    "BaseWSGIServer.channel_class",
    "BaseWSGIServer.add_task",  # called with the channel whose request is queued
    "BaseWSGIServer.pull_trigger",
    "BaseWSGIServer.trigger",  # .pull_trigger(thunk): thunk runs in the loop's thread
    "BaseWSGIServer.task_dispatcher",  # .shutdown(), .threads, .queue_logger.warning
    "channel.HTTPChannel",
    "HTTPChannel.requests",  # queued requests; the first is the one being answered
    "HTTPChannel.request",  # the request being parsed
    "HTTPChannel.total_outbufs_len",
    "HTTPChannel.will_close",
    "HTTPChannel.close_when_flushed",
    "HTTPChannel.connected",
    "HTTPChannel.socket",
    "HTTPChannel.adj",
    "HTTPChannel.task_class",  # called as task_class(channel, request)
    "HTTPChannel.handle_read",  # recv, parse, add_task for the first request queued
    "HTTPChannel.handle_close",
    "HTTPChannel.service",  # answers requests[0], add_task for the next one
    "HTTPChannel.write_soon",
    "task.Task",  # __init__(channel, request); execute; status, wrote_header, ...
    "task.WSGITask",  # get_environment() builds the environ; .environ reuses it
    "task.hop_by_hop",
    "utilities.build_http_date",
    "parser.HTTPRequestParser",  # .error, .version, .headers (upper-case names)
    "wasyncore.dispatcher",  # __init__(sock, map), recv, close, the handle_* hooks
    "wasyncore.poll2",  # poll2(timeout, map): one turn of the loop
    "wasyncore.close_all",
)

#: Header names waitress refuses from an application (its ``hop_by_hop``).
HOP_BY_HOP: frozenset[str] = frozenset(hop_by_hop)

SocketMap = dict[int, t.Any]
#: ``(environ, HTTP version, Connection header in lower case, server ident)`` to the status
#: line, the bytes to send and whether the connection closes after them; None: the pool answers.
Rendered = tuple[str, bytes, bool]
Answer = Callable[[dict[str, t.Any], str, str, str], Rendered | None]

# ------------------------------------------------------------------ servers and the loop


def socket_map(server: t.Any) -> SocketMap:
    """waitress's socket map of ``server`` (one listener, or a ``MultiSocketServer``)."""
    found = getattr(server, "map", None)
    return t.cast(SocketMap, found if found is not None else server._map)


def listeners(the_map: SocketMap) -> list[BaseWSGIServer]:
    """The listening servers of a socket map."""
    return [obj for obj in list(the_map.values()) if isinstance(obj, BaseWSGIServer)]


def channels(the_map: SocketMap) -> list[HTTPChannel]:
    """The client connections of a socket map."""
    return [obj for obj in list(the_map.values()) if isinstance(obj, HTTPChannel)]


def poll(timeout: float, the_map: SocketMap) -> None:
    """One turn of waitress's loop (``poll()``, as ``asyncore_use_poll`` makes it)."""
    wasyncore.poll2(timeout, the_map)


def loop_timeout(server: t.Any) -> float:
    """How long one turn of the loop waits for an event."""
    return float(server.adj.asyncore_loop_timeout)


def wake(trigger: t.Any, thunk: Callable[[], None] | None = None) -> None:
    """Wake the loop from another thread; ``thunk`` then runs in the loop's thread."""
    trigger.pull_trigger(thunk)


def triggers(the_map: SocketMap) -> list[t.Any]:
    """The triggers (the pipes that wake the loop) of the listeners in ``the_map``."""
    return [listener.trigger for listener in listeners(the_map)]


def close_listening_socket(listener: BaseWSGIServer) -> None:
    """Close the listening socket only: waitress's ``close()`` also closes the trigger, which
    the pool threads still pull when an answer is written."""
    wasyncore.dispatcher.close(listener)


def stop_threads(server: t.Any) -> None:
    """Stop waitress's thread pool (tasks still queued are cancelled)."""
    server.task_dispatcher.shutdown()


def close_all(the_map: SocketMap) -> None:
    """Close every socket of ``the_map`` (and the triggers)."""
    wasyncore.close_all(the_map)


def run_until(server: t.Any, stopped: threading.Event) -> None:
    """Run the loop in this thread until ``stopped`` is set (``stop_loop`` sets it)."""
    the_map = socket_map(server)
    timeout = loop_timeout(server)
    while not stopped.is_set():
        poll(timeout, the_map)


def stop_loop(server: t.Any, stopped: threading.Event) -> None:
    """Ask ``run_until`` in another thread to return after its current turn.

    Nothing is closed here: a thunk on the trigger that closes the sockets (as waitress's
    own tests do) may run before ``pull_trigger`` writes its byte, if the loop wakes for
    another reason in between, and the write then fails on the closed trigger ("bad file
    descriptor"); close with ``shut_down`` once the loop's thread has returned.
    """
    stopped.set()
    for trigger in triggers(socket_map(server))[:1]:
        wake(trigger)


def shut_down(server: t.Any) -> bool:
    """Once no thread runs the loop: stop the pool, then close every socket and the
    trigger (a pool thread finishing a task pulls the trigger, so the pool goes first);
    whether every pool thread stopped."""
    stop_threads(server)
    close_all(socket_map(server))
    return not server.task_dispatcher.threads


def throttle_queue_warnings(server: t.Any, wrap: Callable[[t.Any], t.Any]) -> None:
    """Replace the pool's "Task queue depth" logger by ``wrap(logger)``."""
    dispatcher = server.task_dispatcher
    dispatcher.queue_logger = wrap(dispatcher.queue_logger)


def name_unix_peers(the_map: SocketMap, peer: str) -> None:
    """Call every unix-socket peer ``peer`` (waitress calls them all "localhost")."""
    for listener in listeners(the_map):
        if getattr(listener, "family", None) == socket.AF_UNIX:
            listener.fix_addr = lambda _addr: (peer, None)  # type: ignore[method-assign,assignment]


# ------------------------------------------------------------------ accepting


def accept_some(listener: t.Any, most: int, *, limit: int | None = None) -> int:
    """Accept up to ``most`` waiting connections (waitress's ``handle_accept`` each time),
    stopping at the first call that accepts nothing, or when the map reaches ``limit``;
    how many were accepted."""
    accept = type(listener).handle_accept
    the_map = listener._map
    accepted = 0
    while accepted < most and (limit is None or len(the_map) < limit):
        before = len(the_map)
        accept(listener)
        if len(the_map) == before:  # nothing waiting, or a connection that failed at once
            break
        accepted += 1
    return accepted


def accept_in_batches(the_map: SocketMap, batch: int) -> None:
    """Make each listener of ``the_map`` accept up to ``batch`` connections per wake-up,
    never beyond its ``connection_limit``."""
    for listener in listeners(the_map):

        def handle_accept(listener: BaseWSGIServer = listener) -> None:
            accept_some(listener, batch, limit=listener.adj.connection_limit)

        listener.handle_accept = handle_accept  # type: ignore[method-assign]


# ------------------------------------------------------------------ draining a connection


def idle(channel: t.Any) -> bool:
    """Nothing queued or half received, nothing left to send, not already closing."""
    return not (
        channel.requests
        or channel.request is not None
        or channel.total_outbufs_len
        or channel.will_close
        or channel.close_when_flushed
    )


def last_request(channel: t.Any, unread: Callable[[socket.socket | None], bool]) -> bool:
    """Whether the request being answered is the last the client sent: none queued behind
    it, none half received, and (``unread``) no byte waiting in the socket."""
    return len(channel.requests) <= 1 and channel.request is None and not unread(channel.socket)


def ask_to_close(request: t.Any) -> None:
    """Answer ``request`` with ``Connection: close`` (waitress then closes after it)."""
    request.headers["CONNECTION"] = "close"


def channel_socket(channel: t.Any) -> socket.socket | None:
    """The connection's socket (None once closed)."""
    return t.cast("socket.socket | None", channel.socket)


def hook_channel(
    channel: t.Any,
    *,
    read: Callable[[Callable[[], None]], None],
    task: Callable[[Callable[[t.Any, t.Any], t.Any], t.Any, t.Any], t.Any],
    close: Callable[[t.Any], None],
) -> None:
    """Route one connection's reads through ``read(waitress_read)``, the making of its tasks
    through ``task(waitress_task_class, channel, request)`` and its close through
    ``close(channel)``; no more answers in the I/O thread."""
    if hasattr(channel, "try_inline"):
        channel.try_inline = lambda: False
    waitress_read = channel.handle_read
    waitress_task = channel.task_class
    channel.handle_read = lambda: read(waitress_read)
    channel.task_class = lambda ch, request: task(waitress_task, ch, request)
    channel.handle_close = lambda: close(channel)


def close_channel(channel: t.Any, then_linger: Callable[[socket.socket, SocketMap], None]) -> None:
    """waitress's close of ``channel``, after ``then_linger`` got a duplicate of its socket
    and the socket map (while the connection is still open)."""
    sock = channel.socket
    if sock is not None and channel.connected:
        with contextlib.suppress(OSError):
            then_linger(sock.dup(), channel._map)
    HTTPChannel.handle_close(channel)


class Lingering(wasyncore.dispatcher):
    """A connection whose answers are sent: FIN sent, the client's late bytes read and
    dropped until it closes, or until ``linger`` seconds pass without a byte."""

    def __init__(
        self, sock: socket.socket, the_map: SocketMap, linger: float, now: Callable[[], float]
    ) -> None:
        super().__init__(sock, the_map)
        self.linger = linger
        self.now = now
        self.quiet_since = now()
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def handle_read(self) -> None:
        if self.recv(65536):  # wasyncore's recv closes on end of file or error
            self.quiet_since = self.now()

    def handle_close(self) -> None:
        self.close()

    def handle_error(self) -> None:
        self.close()

    def expired(self, now: float) -> bool:
        return now - self.quiet_since >= self.linger


def lingering(the_map: SocketMap) -> list[Lingering]:
    """The closed connections still lingering in ``the_map``."""
    return [obj for obj in list(the_map.values()) if isinstance(obj, Lingering)]


# ------------------------------------------------------------------ answering in the I/O thread

#: Attributes set on waitress's request object: the environ built for the decision (reused
#: by the pool's task), and the rendered inline answer.
_ENVIRON = "_authctl_environ"
_RENDERED = "_authctl_rendered"


class _IOThread(threading.local):
    #: The channel whose input this thread is handling (set only in the I/O thread).
    channel: InlineChannel | None = None


_io = _IOThread()


class InlineTask(Task):
    """Writes an answer rendered in the I/O thread; ``HTTPChannel.service`` does the rest."""

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
    """An ``HTTPChannel`` that serves the requests ``answer`` rendered in the I/O thread."""

    task_class = staticmethod(_task)  # type: ignore[assignment]
    #: Set by ``serve_inline`` on a subclass.
    answer: t.ClassVar[Answer]
    max_buffered: t.ClassVar[int]
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
        """Whether the next request was answered in this thread (``handle_read`` serves it).

        Called under waitress's ``requests_lock``; builds the environ once for both paths.
        """
        request = self.requests[0]
        if request.error is not None or self.total_outbufs_len > self.max_buffered:
            return False
        try:
            environ = WSGITask(self, request).get_environment()  # type: ignore[arg-type]
            setattr(request, _ENVIRON, environ)
            version = request.version if request.version in ("1.0", "1.1") else "1.0"
            connection = request.headers.get("CONNECTION", "").lower()
            rendered = type(self).answer(environ, version, connection, self.adj.ident)
        except Exception:  # the pool answers (and logs) it
            return False
        if rendered is None:
            return False
        setattr(request, _RENDERED, rendered)
        return True


def serve_inline(servers: Iterable[object], answer: Answer, max_buffered: int) -> None:
    """Serve the connections of ``servers`` (waitress's socket map values: listeners,
    channels, triggers) through ``InlineChannel``: each request is first offered to
    ``answer`` in the I/O thread, unless more than ``max_buffered`` bytes wait to be sent."""
    channel_class = type(
        "InlineChannel",
        (InlineChannel,),
        {"answer": staticmethod(answer), "max_buffered": max_buffered},
    )
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
        # the trigger wakes the I/O thread from poll(); it is awake if it is the caller
        if _io.channel is None:
            pull_trigger()

    server.channel_class = channel_class
    server.add_task = add_task  # type: ignore[method-assign,assignment]
    server.pull_trigger = trigger  # type: ignore[method-assign]
