"""Answer authz sub-requests in waitress's I/O thread, without the thread-pool hand-off.

waitress parses every request in its I/O thread, queues it for a pool thread and is woken
through a pipe when the answer is written: per request a condition-variable wake-up, GIL
hand-offs between threads, and a pipe write and read. A bare "hello" pays that too, but
verify with a cached session is a few microseconds of in-memory work, so the hand-off cost
more than the work: verify reached 0.72-0.89 of a bare waitress's throughput through the
pool, and about 1.04 answered inline (``bench/run.py``, same run, SPEC §5).

``install`` gives the servers a channel class whose requests, when waitress hands them to
the pool from the I/O thread, first go to ``decide(environ)``. It runs inside
``server.blocking.forbidden``, so it can only answer from memory; when it answers (returns
True) the request is served right there through waitress's own ``WSGITask``, so HTTP
framing, keep-alive and the order of pipelined answers stay waitress's. Everything else
(portal pages, logins, a session missing from the cache, a due activity write, an exception)
goes to the pool exactly as before, with the environ already built.
"""

from __future__ import annotations

import logging
import threading
import typing as t
from collections.abc import Callable
from collections.abc import Iterable

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.task import WSGITask

from server import blocking

log = logging.getLogger("authctl.inline")

#: Output already waiting for the client above which a request goes to the pool. waitress
#: makes a writer wait while a connection holds more than its high watermark (16 MiB); a pool
#: thread may wait, the I/O thread must not (nobody else would send the data).
MAX_BUFFERED = 64 * 1024
#: The environ built for the decision, reused by the task that serves the request.
_ENVIRON = "_authctl_environ"

Decide = Callable[[dict[str, t.Any]], bool]


class _IOThread(threading.local):
    #: The channel whose input this thread is handling (set only in the I/O thread).
    channel: InlineChannel | None = None


_io = _IOThread()


class _Task(WSGITask):
    """waitress's WSGI task, reusing the environ built for the inline decision."""

    def __init__(self, channel: HTTPChannel, request: t.Any) -> None:
        super().__init__(channel, request)
        self.environ = getattr(request, _ENVIRON, None)


class InlineChannel(HTTPChannel):
    """An ``HTTPChannel`` that serves the requests ``decide`` answered in the I/O thread."""

    task_class = _Task
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
            environ = self.task_class(self, request).get_environment()
            setattr(request, _ENVIRON, environ)
            with blocking.forbidden:
                return bool(type(self).decide(environ))
        except Exception:  # the pool answers (and logs) it
            return False


def install(servers: Iterable[object], decide: Decide) -> int:
    """Serve the connections of ``servers`` (waitress's socket map values) through
    ``InlineChannel`` with ``decide``; how many servers were changed."""
    channel_class = type("InlineChannel", (InlineChannel,), {"decide": staticmethod(decide)})
    count = 0
    for server in servers:
        if isinstance(server, BaseWSGIServer):
            _install(server, channel_class)
            count += 1
    return count


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
