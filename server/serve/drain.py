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

What this needs of waitress's internals is in ``server.serve.waitress_adapter``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
import typing as t

from server.serve import waitress_adapter as wa

log = logging.getLogger("authctl.serve")

#: Connections a listener accepts per wake-up of the loop (bounded so that reading the
#: connections already open is not starved by a flood of new ones).
ACCEPT_BATCH = 64
#: Seconds a closed connection keeps reading (and dropping) what the client still sends
#: after the last byte it sent; an end of file from the client ends it at once.
LINGER = 1.0
#: How often the draining loop looks at its connections (seconds).
DRAIN_TICK = 0.05


def accept_in_batches(socket_map: dict[int, t.Any], batch: int = ACCEPT_BATCH) -> None:
    """Make each listener of ``socket_map`` accept up to ``batch`` connections per wake-up,
    never beyond its ``connection_limit``."""
    wa.accept_in_batches(socket_map, batch)


# ------------------------------------------------------------------ draining


def unread_input(sock: socket.socket | None) -> bool:
    """Whether ``sock`` holds received bytes nobody has read yet."""
    if sock is None:
        return False
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:  # nothing yet (EAGAIN), or the connection is gone
        return False


def _linger(sock: socket.socket, the_map: dict[int, t.Any]) -> None:
    wa.Lingering(sock, the_map, LINGER, time.monotonic)


def _drain_channel(channel: t.Any) -> None:
    """From now on: no answer in the I/O thread, reads (``recv`` and parsing) under a lock
    that the making of a task takes too, ``Connection: close`` on the last request, a
    lingering close.

    "Last" is judged under that read lock: a pool thread makes the task while the I/O
    thread may be between its ``recv`` and the parsing of what it read, and judging then
    could take a request in the middle of a pipelined batch for the last one, and waitress
    would then drop the requests behind it unanswered.
    """
    if getattr(channel, "_authctl_draining", False):
        return
    channel._authctl_draining = True
    # reentrant: an inline channel's read may go on to serve a task in the I/O thread
    lock = threading.RLock()

    def read(waitress_read: t.Callable[[], None]) -> None:
        with lock:
            waitress_read()

    def task(make: t.Callable[[t.Any, t.Any], t.Any], channel: t.Any, request: t.Any) -> t.Any:
        with lock:
            last = wa.last_request(channel, unread_input)
        if last:
            wa.ask_to_close(request)
        return make(channel, request)

    wa.hook_channel(
        channel, read=read, task=task, close=lambda channel: wa.close_channel(channel, _linger)
    )


class Stopper:
    """``serve_until_stopped``'s state: whether a stop was asked, and the drain."""

    def __init__(self, server: t.Any, grace: float) -> None:
        self.server = server
        self.map = wa.socket_map(server)
        self.grace = grace
        self.stopping = False
        self.triggers: list[t.Any] = wa.triggers(self.map)

    def ask(self, _signum: int = 0, _frame: object = None) -> None:
        """Signal handler: stop at the loop's next turn (the trigger wakes it now)."""
        self.stopping = True
        for channel in wa.channels(self.map):  # before the loop handles what woke it
            _drain_channel(channel)
        for trigger in self.triggers[:1]:
            with contextlib.suppress(OSError):
                wa.wake(trigger)

    def serve(self) -> None:
        timeout = wa.loop_timeout(self.server)
        while not self.stopping:
            wa.poll(timeout, self.map)

    def drain(self) -> None:
        """Answer what was received, close every connection, within ``grace`` seconds."""
        start = time.monotonic()
        deadline = start + self.grace
        for listener in wa.listeners(self.map):
            wa.accept_some(listener, 1 << 30)  # the listen backlog, which closing would reset
            wa.close_listening_socket(listener)
        open_at_stop = wa.channels(self.map)
        for channel in open_at_stop:
            _drain_channel(channel)
        log.info(
            "stopping: answering what %d open connections sent (at most %gs)",
            len(open_at_stop),
            self.grace,
        )
        while True:
            now = time.monotonic()
            lingering = wa.lingering(self.map)
            left = wa.channels(self.map)
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
                if wa.idle(channel) and not unread_input(wa.channel_socket(channel)):
                    channel.handle_close()
            for linger in lingering:
                if linger.expired(now):
                    linger.close()
            wa.poll(min(DRAIN_TICK, max(0.0, deadline - now)), self.map)

    def close(self) -> None:
        """Close whatever is left, and stop waitress's threads."""
        wa.shut_down(self.server)


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
