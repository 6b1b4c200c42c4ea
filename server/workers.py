"""Pre-forked worker processes on one port: ``authctl serve --workers N``.

Why processes: CPython runs Python code on one core at a time (the GIL), so waitress's
threads overlap waiting, not computing; a verify is pure computation. N processes use N
cores. The parent binds the listening sockets, then forks N children; each builds its own
app (nothing with an open database, thread or lock crosses the fork) and runs a waitress
server on an inherited socket. On TCP the parent binds one socket per worker to the same
port with ``SO_REUSEPORT``, so the kernel spreads new connections evenly over the workers;
with one shared socket, whichever worker woke first accepted most of a burst of keep-alive
connections, and a second worker often had nothing to do (measured: 0.95x one worker). A
unix socket cannot be shared that way, so there all workers accept from one socket. The
workers share nothing in memory, so sessions must live in a store every process
sees (SQLite or Redis; ``serve`` refuses the memory store with more than one worker), and
any worker can answer any request.

What the parent does, and only that:

- waits until every worker reports ready (its app built, its server listening); a worker
  that exits before that (an invalid users file, an unusable database) stops the others and
  the parent exits with that worker's status, so a broken start is never retried in a loop;
- restarts a worker that dies afterwards (a crash, the OOM killer, a stray ``kill``), logged
  at ERROR; more than ``MAX_RESTARTS`` restarts within ``RESTART_WINDOW`` seconds means the
  failure is not transient: the parent stops everything and exits 1 rather than crash-loop;
- on SIGTERM, SIGINT or SIGHUP forwards SIGTERM to every worker (each lets its in-flight
  requests finish, as a single ``serve`` does), waits up to ``STOP_GRACE`` seconds, kills
  what is left, and exits 0.

A worker whose parent dies (``kill -9`` of the parent) notices within a second and stops,
so no orphan keeps serving with nobody to supervise it. POSIX only (``os.fork``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import threading
import time
import traceback
import typing as t
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field

log = logging.getLogger("authctl.workers")

#: Restarts of dead workers allowed within ``RESTART_WINDOW`` seconds before giving up.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
#: Seconds the workers get to finish their requests after SIGTERM before they are killed.
STOP_GRACE = 30.0
#: Seconds a worker may take to build its app and start listening.
START_TIMEOUT = 60.0
#: How often the parent looks at its children, and a worker at its parent (seconds).
POLL_INTERVAL = 0.1
PARENT_CHECK_INTERVAL = 1.0

#: ``serve(sock, ready)`` runs in a worker: build the app, call ``ready()`` once listening,
#: serve until SIGTERM; returns the worker's exit status.
WorkerMain = Callable[[socket.socket, Callable[[], None]], int]


class StartFailed(Exception):
    """A worker exited before it was ready; ``status`` is its exit status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"a worker exited with status {status} while starting")
        self.status = status


def exit_status(wait_status: int) -> int:
    """A shell-style exit status from ``os.waitpid``'s status (128 + N for signal N)."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


def bind(kwargs: dict[str, t.Any], count: int = 1, backlog: int = 1024) -> list[socket.socket]:
    """Listening sockets from ``listen_kwargs``-style arguments (host and port, or a
    ``unix_socket`` path with ``unix_socket_perms``), bound in the parent before forking.

    TCP: ``count`` sockets on one port with ``SO_REUSEPORT`` (port 0 picks a free port for
    all of them), one per worker. A unix socket: one socket, shared by every worker.
    """
    if "unix_socket" in kwargs:
        return [_bind_one(kwargs, 0, backlog)]
    first = _bind_one(kwargs, kwargs["port"], backlog, reuse_port=count > 1)
    sockets = [first]
    try:
        port = first.getsockname()[1]
        for _ in range(count - 1):
            sockets.append(_bind_one(kwargs, port, backlog, reuse_port=True))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind_one(
    kwargs: dict[str, t.Any], port: int, backlog: int, *, reuse_port: bool = False
) -> socket.socket:
    if "unix_socket" in kwargs:
        path = kwargs["unix_socket"]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if os.path.exists(path):  # noqa: PTH110 - a stale socket file from a previous run
                os.unlink(path)  # noqa: PTH108
            sock.bind(path)
            os.chmod(path, int(str(kwargs.get("unix_socket_perms", "600")), 8))  # noqa: PTH101
        except OSError:
            sock.close()
            raise
    else:
        host = kwargs["host"]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


@dataclass
class _Worker:
    pid: int
    slot: int  # which of the sockets it serves (its replacement takes the same one)
    ready_fd: int | None  # read end of the readiness pipe, until the worker reported
    died_starting: bool = False  # the pipe closed without a word: the worker is exiting


@dataclass
class Supervisor:
    """Forks ``count`` workers running ``main`` and keeps them running; worker ``i`` serves
    ``sockets[i % len(sockets)]`` (one socket per worker, or one shared by all)."""

    sockets: list[socket.socket]
    count: int
    main: WorkerMain
    workers: dict[int, _Worker] = field(default_factory=dict)
    restarts: list[float] = field(default_factory=list)
    _stop_signal: int | None = None

    # ------------------------------------------------------------------ parent

    def run(self, on_ready: Callable[[], None] = lambda: None) -> int:
        """Start the workers, supervise them until a stop signal; the exit status."""
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        try:
            try:
                for slot in range(self.count):
                    self._spawn(slot)
                self._wait_ready()
            except StartFailed as exc:
                log.error("%s; stopping", exc)
                self._stop_all()
                return exc.status or 1
            if self._stop_signal is None:
                on_ready()
            return self._supervise()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stop_signal = signum

    def _spawn(self, slot: int) -> None:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            os.close(read_fd)
            self._child(write_fd, slot)
        os.close(write_fd)
        self.workers[pid] = _Worker(pid, slot, read_fd)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while any(w.ready_fd is not None or w.died_starting for w in self.workers.values()):
            if self._stop_signal is not None:
                return
            self._check_ready(timeout=POLL_INTERVAL)
            for _pid, status in self._reap():
                raise StartFailed(status)
            if time.monotonic() > deadline:
                raise StartFailed(1)

    def _check_ready(self, timeout: float) -> None:
        waiting = {w.ready_fd: w for w in self.workers.values() if w.ready_fd is not None}
        if not waiting:
            time.sleep(timeout)
            return
        readable, _, _ = select.select(list(waiting), [], [], timeout)
        for fd in readable:
            worker = waiting[fd]
            worker.died_starting = os.read(fd, 1) != b"r"  # b"": it exits (reaped later)
            os.close(fd)
            worker.ready_fd = None

    def _reap(self) -> list[tuple[_Worker, int]]:
        """Workers that exited since the last call, with their exit status."""
        gone = []
        while self.workers:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            if worker.ready_fd is not None:
                os.close(worker.ready_fd)
            gone.append((worker, exit_status(wait_status)))
        return gone

    def _supervise(self) -> int:
        while self._stop_signal is None:
            self._check_ready(timeout=POLL_INTERVAL)
            for worker, status in self._reap():
                if self._stop_signal is not None:
                    break
                pid = worker.pid
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW]
                if len(self.restarts) >= MAX_RESTARTS:
                    log.error(
                        "worker %d exited with status %d; %d restarts in %ds, giving up",
                        pid,
                        status,
                        len(self.restarts),
                        RESTART_WINDOW,
                    )
                    self._stop_all()
                    return 1
                self.restarts.append(now)
                log.error("worker %d exited with status %d; starting a new one", pid, status)
                self._spawn(worker.slot)
        self._stop_all()
        return 0

    def _stop_all(self) -> None:
        """SIGTERM every worker, wait up to ``STOP_GRACE``, SIGKILL the rest, reap all."""
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while self.workers and time.monotonic() < deadline:
            self._reap()
            if self.workers:
                time.sleep(POLL_INTERVAL / 2)
        for pid in list(self.workers):
            log.error("worker %d did not stop within %ds; killing it", pid, STOP_GRACE)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while self.workers:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                self.workers.clear()
                break
            worker = self.workers.pop(pid, None)
            if worker is not None and worker.ready_fd is not None:
                os.close(worker.ready_fd)

    # ------------------------------------------------------------------ child

    def _child(self, ready_fd: int, slot: int) -> t.NoReturn:  # pragma: no cover - after fork
        status = 1
        try:
            for sig in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)  # main() installs its own SIGTERM handler
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for worker in self.workers.values():  # the siblings' pipes are not ours
                if worker.ready_fd is not None:
                    os.close(worker.ready_fd)
            self.workers = {}
            _watch_parent(os.getppid())
            mine = self.sockets[slot % len(self.sockets)]
            for sock in self.sockets:  # the siblings' sockets are not ours either
                if sock is not mine:
                    sock.close()

            def ready() -> None:
                os.write(ready_fd, b"r")
                os.close(ready_fd)

            status = self.main(mine, ready)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except KeyboardInterrupt:
            status = 0
        except BaseException:
            traceback.print_exc()
            status = 1
        finally:
            try:
                logging.shutdown()
            finally:
                os._exit(status)


def _watch_parent(parent: int) -> None:  # pragma: no cover - runs in workers
    """Stop this worker (SIGTERM to itself) when the parent is gone."""

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_INTERVAL)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="authctl-parent-watch", daemon=True).start()
