"""Run a waitress server until SIGTERM, then drain: answer what was received, then exit.

waitress's own ``run()`` turns SIGTERM into closing every socket at once. A request already
in a keep-alive connection's receive buffer was then never answered, and closing a socket
with unread input makes the kernel send a TCP reset (measured before this module: 16 resets
with one process, 33 with two workers, for requests sent just before the signal).

``serve_until_stopped`` runs waitress's ``poll()`` loop itself. On SIGTERM or SIGINT it:

1. accepts the connections already waiting in the listen backlog, then closes the listening
   sockets (new connections are refused once no process holds them);
2. stops answering in the I/O thread (``server.serve.inline``), so each request goes through a
   task, and gives the last request a connection has sent ``Connection: close`` (the last:
   none queued behind it and no unread byte in the socket);
3. closes each connection once it is idle (nothing queued, everything sent, no unread
   input) with a lingering close: ``shutdown(SHUT_WR)`` sends FIN after the answers, and
   what the client still sends is read and dropped until it closes too, or for ``LINGER``
   seconds of silence, so a request that crossed the FIN gets an end of file, not a reset;
4. exits when no connection is left, or when ``grace`` seconds have passed (then whatever is
   left is closed and logged).

Also here, for the accepting side of the loop: ``accept_in_batches`` makes a listener accept
up to ``ACCEPT_BATCH`` connections per wake-up instead of one. waitress's loop visits every
connection on each wake-up, so accepting thousands one at a time took quadratic time.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
import typing as t

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer

log = logging.getLogger("authctl.serve")

#: Connections a listener accepts per wake-up of the loop (bounded so that reading the
#: connections already open is not starved by a flood of new ones).
ACCEPT_BATCH = 64
#: Seconds a closed connection keeps reading (and dropping) what the client still sends
#: after the last byte it sent; an end of file from the client ends it at once.
LINGER = 1.0
#: How often the draining loop looks at its connections (seconds).
DRAIN_TICK = 0.05


def socket_map(server: t.Any) -> dict[int, t.Any]:
    """waitress's socket map of ``server`` (one listener, or a ``MultiSocketServer``)."""
    found = getattr(server, "map", None)
    return t.cast(dict[int, t.Any], found if found is not None else server._map)


def listeners(socket_map: dict[int, t.Any]) -> list[BaseWSGIServer]:
    return [obj for obj in list(socket_map.values()) if isinstance(obj, BaseWSGIServer)]


def channels(socket_map: dict[int, t.Any]) -> list[HTTPChannel]:
    return [obj for obj in list(socket_map.values()) if isinstance(obj, HTTPChannel)]


# ------------------------------------------------------------------ accepting


def accept_some(listener: t.Any, most: int, *, limit: int | None = None) -> int:
    """Accept up to ``most`` waiting connections (waitress's ``handle_accept`` each time),
    stopping at the first wake-up with nothing to accept, or when the map reaches ``limit``;
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


def accept_in_batches(socket_map: dict[int, t.Any], batch: int = ACCEPT_BATCH) -> None:
    """Make each listener of ``socket_map`` accept up to ``batch`` connections per wake-up,
    never beyond its ``connection_limit``."""
    for listener in listeners(socket_map):

        def handle_accept(listener: BaseWSGIServer = listener) -> None:
            accept_some(listener, batch, limit=listener.adj.connection_limit)

        listener.handle_accept = handle_accept  # type: ignore[method-assign]


# ------------------------------------------------------------------ draining


def unread_input(sock: socket.socket | None) -> bool:
    """Whether ``sock`` holds received bytes nobody has read yet."""
    if sock is None:
        return False
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:  # nothing yet (EAGAIN), or the connection is gone
        return False


def _idle(channel: HTTPChannel) -> bool:
    """Nothing queued or half received, nothing left to send, not already closing."""
    return not (
        channel.requests
        or channel.request is not None
        or channel.total_outbufs_len
        or channel.will_close
        or channel.close_when_flushed
    )


class _Linger(wasyncore.dispatcher):
    """A connection whose answers are sent: FIN sent, the client's late bytes read and
    dropped until it closes, or until ``LINGER`` seconds pass without a byte."""

    def __init__(self, sock: socket.socket, the_map: dict[int, t.Any]) -> None:
        super().__init__(sock, the_map)
        self.quiet_since = time.monotonic()
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
            self.quiet_since = time.monotonic()

    def handle_close(self) -> None:
        self.close()

    def handle_error(self) -> None:
        self.close()

    def expired(self, now: float) -> bool:
        return now - self.quiet_since >= LINGER


def _lingering_close(channel: t.Any) -> None:
    """waitress's close of ``channel``, with its socket handed to a ``_Linger`` first."""
    sock = channel.socket
    the_map = channel._map
    if sock is not None and channel.connected:
        with contextlib.suppress(OSError):
            _Linger(sock.dup(), the_map)
    HTTPChannel.handle_close(channel)


def _closing_task(original: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
    """``channel.task_class`` that asks the client to close after the last request it sent.

    "Last" is judged under the channel's read lock (``_drain_channel``): a pool thread makes
    the task while the I/O thread may be between its ``recv`` and the parsing of what it
    read, and judging then took a request in the middle of a pipelined batch for the last
    one, so waitress dropped the requests behind it unanswered (seen under load).
    """

    def make(channel: t.Any, request: t.Any) -> t.Any:
        with channel._authctl_read_lock:
            last = (
                len(channel.requests) <= 1
                and channel.request is None
                and not unread_input(channel.socket)
            )
        if last:
            request.headers["CONNECTION"] = "close"
        return original(channel, request)

    return make


def _drain_channel(channel: t.Any) -> None:
    """From now on: no answer in the I/O thread, reads (``recv`` and parsing) under a lock
    that ``_closing_task`` takes too, ``Connection: close`` on the last request, a lingering
    close."""
    if getattr(channel, "_authctl_draining", False):
        return
    channel._authctl_draining = True
    if hasattr(channel, "try_inline"):
        channel.try_inline = lambda: False
    # reentrant: an inline channel's read may go on to serve a task in the I/O thread
    lock = channel._authctl_read_lock = threading.RLock()
    read = channel.handle_read

    def locked_read() -> None:
        with lock:
            read()

    channel.handle_read = locked_read
    channel.task_class = _closing_task(channel.task_class)
    channel.handle_close = lambda: _lingering_close(channel)


class Stopper:
    """``serve_until_stopped``'s state: whether a stop was asked, and the drain."""

    def __init__(self, server: t.Any, grace: float) -> None:
        self.server = server
        self.map = socket_map(server)
        self.grace = grace
        self.stopping = False
        self.triggers: list[t.Any] = [listener.trigger for listener in listeners(self.map)]

    def ask(self, _signum: int = 0, _frame: object = None) -> None:
        """Signal handler: stop at the loop's next turn (the trigger wakes it now)."""
        self.stopping = True
        for channel in channels(self.map):  # before the loop handles what woke it
            _drain_channel(channel)
        for trigger in self.triggers[:1]:
            with contextlib.suppress(OSError):
                trigger.pull_trigger()

    def serve(self) -> None:
        timeout = self.server.adj.asyncore_loop_timeout
        while not self.stopping:
            wasyncore.poll2(timeout, self.map)

    def drain(self) -> None:
        """Answer what was received, close every connection, within ``grace`` seconds."""
        start = time.monotonic()
        deadline = start + self.grace
        for listener in listeners(self.map):
            accept_some(listener, 1 << 30)  # the listen backlog, which closing would reset
            # the socket only: waitress's close() also closes the trigger, which the task
            # threads still pull to wake this loop when an answer is written
            wasyncore.dispatcher.close(listener)
        open_at_stop = channels(self.map)
        for channel in open_at_stop:
            _drain_channel(channel)
        log.info(
            "stopping: answering what %d open connections sent (at most %gs)",
            len(open_at_stop),
            self.grace,
        )
        while True:
            now = time.monotonic()
            lingering = [obj for obj in list(self.map.values()) if isinstance(obj, _Linger)]
            left = channels(self.map)
            if not left and not lingering:
                log.info("stopped: every connection closed in %.1fs", now - start)
                return
            if now >= deadline:
                log.warning(
                    "stopping: shutdown_grace (%gs) is over with %d connections still "
                    "answering; closing them",
                    self.grace,
                    len(left),
                )
                return
            for channel in left:
                _drain_channel(channel)
                if _idle(channel) and not unread_input(channel.socket):
                    channel.handle_close()
            for linger in lingering:
                if linger.expired(now):
                    linger.close()
            wasyncore.poll2(min(DRAIN_TICK, max(0.0, deadline - now)), self.map)

    def close(self) -> None:
        """Close whatever is left, and stop waitress's threads."""
        # the threads first: one finishing a task still pulls the trigger that close_all closes
        self.server.task_dispatcher.shutdown()
        wasyncore.close_all(self.map)


def serve_until_stopped(
    server: t.Any, grace: float, started: t.Callable[[], None] = lambda: None
) -> None:
    """Serve until SIGTERM or SIGINT, then drain for at most ``grace`` seconds (module doc);
    ``started`` is called once the signal handlers are in place."""
    stopper = Stopper(server, grace)
    previous = {sig: signal.signal(sig, stopper.ask) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        started()
        stopper.serve()
        stopper.drain()
    finally:
        stopper.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
