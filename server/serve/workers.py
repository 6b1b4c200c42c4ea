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
  the parent exits with that worker's status, so a broken first start is never retried;
- restarts a worker that dies afterwards (a crash, the OOM killer, a stray ``kill``), logged
  at ERROR with the reason a failed start gave. The first restart is immediate; while the
  replacements of a slot keep failing (a full disk, a broken users file) the next start waits
  ``backoff_base`` seconds, doubling up to ``backoff_max``, and every failure is logged with
  its reason and the wait. The other workers keep serving all along, and the slot comes back
  by itself once a start succeeds; its count of failures is forgotten after a worker has
  served for ``stable_after`` seconds. The parent never gives up;
- on TCP, a dead worker's socket is closed at once (only the parent still held it), so the
  kernel stops giving it connections that nobody would accept; its replacement binds a new
  socket on the same port once its app is built;
- on SIGTERM or SIGINT closes its copies of the listening sockets, forwards SIGTERM to
  every worker (each drains as a single ``serve`` does: ``server.serve.drain``), waits up to
  ``stop_grace`` seconds, kills what is left, and exits 0;
- on SIGHUP forwards SIGHUP to every worker (each runs its ``server.core.hup`` callbacks:
  the audit log reopens its file, the config reloads) and runs its own callbacks. A worker
  ignores SIGHUP from its fork until its server installs the handler, so a HUP that comes
  while a worker starts never kills it.

A worker whose parent dies (``kill -9`` of the parent) notices within a second and stops,
so no orphan keeps serving with nobody to supervise it. POSIX only (``os.fork``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import socket
import stat
import threading
import time
import traceback
import typing as t
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field

from server.core import hup

log = logging.getLogger("authctl.workers")

#: The wait before the second start of a slot whose worker keeps failing, doubled for each
#: further failure up to ``BACKOFF_MAX`` (seconds).
BACKOFF_BASE = 1.0
BACKOFF_MAX = 30.0
#: Seconds a worker must serve before its slot's failures are forgotten.
STABLE_AFTER = 30.0
#: Seconds the workers get to finish their requests after SIGTERM before they are killed.
STOP_GRACE = 30.0
#: Bytes of a failed start's reason sent to the parent (one atomic pipe write).
REASON_BYTES = 2000
#: Seconds a worker may take to build its app and start listening.
START_TIMEOUT = 60.0
#: How often the parent looks at its children, and a worker at its parent (seconds).
POLL_INTERVAL = 0.1
PARENT_CHECK_INTERVAL = 1.0

#: ``main(listen, ready)`` runs in a worker: build the app, then take its listening socket
#: from ``listen()``, call ``ready()`` once serving, serve until SIGTERM; returns the
#: worker's exit status. ``StartError`` (or any exception) before ``ready()`` is a failed
#: start, whose message the parent logs.
WorkerMain = Callable[[Callable[[], socket.socket], Callable[[], None]], int]


class StartError(Exception):
    """A worker cannot start: ``str(exc)`` says why, ``status`` is its exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class StartFailed(Exception):
    """A worker exited before it was ready; ``status`` is its exit status."""

    def __init__(self, status: int, reason: str = "") -> None:
        why = f": {reason}" if reason else ""
        super().__init__(f"a worker exited with status {status} while starting{why}")
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
            _remove_stale_socket(path)
            mask = os.umask(0o177)  # created 0600, so nobody else can connect before chmod
            try:
                sock.bind(path)
            finally:
                os.umask(mask)
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


def rebinder(
    kwargs: dict[str, t.Any], sockets: list[socket.socket], backlog: int = 1024
) -> Callable[[], socket.socket] | None:
    """For TCP: a function that binds one more ``SO_REUSEPORT`` socket on the port of
    ``sockets`` (a replacement worker's own); None for a unix socket, which is shared."""
    if "unix_socket" in kwargs:
        return None
    port = sockets[0].getsockname()[1]
    return lambda: _bind_one(kwargs, port, backlog, reuse_port=True)


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a previous run; refuse to remove anything else, or a
    socket another server still listens on."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # noqa: PTH108 - nobody listens: stale
            return
    raise OSError(errno.EADDRINUSE, f"another server listens on {path}")


@dataclass
class _Worker:
    pid: int
    slot: int  # which of the sockets it serves (its replacement takes the same slot)
    ready_fd: int | None  # read end of the readiness pipe, until the worker reported
    started: float  # time.monotonic() of the fork
    died_starting: bool = False  # the pipe closed or said why: the worker is exiting
    ready_at: float | None = None  # when it reported ready
    reason: str = ""  # why its start failed, as it told the parent


@dataclass
class _Slot:
    failures: int = 0  # failed starts (or early deaths) in a row
    next_start: float | None = None  # when to start its next worker; None: one is running


@dataclass
class Supervisor:
    """Forks ``count`` workers running ``main`` and keeps them running; worker ``i`` serves
    ``sockets[i % len(sockets)]`` (one socket per worker, or one shared by all).

    ``rebind`` (``rebinder``): with one socket per worker, the parent closes a dead worker's
    socket and its replacement binds its own with this. ``on_exit(pid)`` runs in the parent
    for every worker reaped (the metrics' ``mark_process_dead``). The timings are fields so
    that tests can shorten them.
    """

    sockets: list[socket.socket]
    count: int
    main: WorkerMain
    rebind: Callable[[], socket.socket] | None = None
    on_exit: Callable[[int], None] | None = None
    backoff_base: float = BACKOFF_BASE
    backoff_max: float = BACKOFF_MAX
    stable_after: float = STABLE_AFTER
    stop_grace: float = STOP_GRACE
    start_timeout: float = START_TIMEOUT
    workers: dict[int, _Worker] = field(default_factory=dict)
    slots: list[_Slot] = field(default_factory=list)
    _stop_signal: int | None = None

    # ------------------------------------------------------------------ parent

    def run(self, on_ready: Callable[[], None] = lambda: None) -> int:
        """Start the workers, supervise them until a stop signal; the exit status."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hangup)
        try:
            self.slots = [_Slot() for _ in range(self.count)]
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

    def _on_hangup(self, _signum: int, _frame: object) -> None:
        """Forward SIGHUP to every worker, then run this process's own callbacks."""
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)
        hup.hangup_soon()

    def delay(self, failures: int) -> float:
        """Seconds before the next start of a slot with ``failures`` failures in a row: none
        after a worker that had served for a while, then doubling up to ``backoff_max``."""
        if failures <= 0:
            return 0.0
        return float(min(self.backoff_max, self.backoff_base * 2 ** min(failures - 1, 60)))

    def _spawn(self, slot: int) -> None:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            os.close(read_fd)
            self._child(write_fd, slot)
        os.close(write_fd)
        self.workers[pid] = _Worker(pid, slot, read_fd, time.monotonic())
        self.slots[slot].next_start = None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while any(w.ready_fd is not None or w.died_starting for w in self.workers.values()):
            if self._stop_signal is not None:
                return
            self._check_ready(timeout=POLL_INTERVAL)
            for worker, status in self._reap():
                raise StartFailed(status, worker.reason)
            if time.monotonic() > deadline:
                raise StartFailed(1, f"not ready within {self.start_timeout:g}s")

    def _check_ready(self, timeout: float) -> None:
        waiting = {w.ready_fd: w for w in self.workers.values() if w.ready_fd is not None}
        if not waiting:
            time.sleep(timeout)
            return
        readable, _, _ = select.select(list(waiting), [], [], timeout)
        for fd in readable:
            worker = waiting[fd]
            said = os.read(fd, REASON_BYTES + 1)
            os.close(fd)
            worker.ready_fd = None
            if said == b"r":
                worker.ready_at = time.monotonic()
                self._on_started(worker)
            else:  # b"": it exits without a word (reaped later); b"f...": why it failed
                worker.died_starting = True
                worker.reason = said[1:].decode("utf-8", "replace")

    def _on_started(self, worker: _Worker) -> None:
        slot = self.slots[worker.slot]
        if slot.failures:
            log.warning(
                "worker %d started and serves again after %d failed starts",
                worker.pid,
                slot.failures,
            )

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
                # it may have said why (b"f...") just before exiting
                readable, _, _ = select.select([worker.ready_fd], [], [], 0)
                if readable:
                    said = os.read(worker.ready_fd, REASON_BYTES + 1)
                    if said.startswith(b"f"):
                        worker.reason = said[1:].decode("utf-8", "replace")
                os.close(worker.ready_fd)
                worker.ready_fd = None
            gone.append((worker, exit_status(wait_status)))
            self._exited(pid)
        return gone

    def _exited(self, pid: int) -> None:
        if self.on_exit is not None:
            try:
                self.on_exit(pid)
            except Exception:  # bookkeeping must never stop the supervision
                log.exception("after worker %d exited", pid)

    def _supervise(self) -> int:
        while self._stop_signal is None:
            self._check_ready(timeout=POLL_INTERVAL)
            now = time.monotonic()
            for worker, status in self._reap():
                if self._stop_signal is not None:
                    break
                self._on_exit(worker, status, now)
            self._kill_stuck_starts(now)
            for number, slot in enumerate(self.slots):
                due = slot.next_start is not None and slot.next_start <= now
                if due and self._stop_signal is None:
                    self._spawn(number)
        self._stop_all()
        return 0

    def _on_exit(self, worker: _Worker, status: int, now: float) -> None:
        """Log why ``worker`` is gone and schedule its slot's next start."""
        slot = self.slots[worker.slot]
        if self.rebind is not None:
            # only this parent still holds it: close it, or the kernel would keep giving it
            # a share of the new connections that nobody accepts
            self.sockets[worker.slot].close()
        if worker.ready_at is not None:
            if now - worker.ready_at >= self.stable_after:
                slot.failures = 0
            what = f"worker {worker.pid} exited with status {status}"
        else:
            why = worker.reason or "it exited before it was ready"
            what = f"worker {worker.pid} could not start (status {status}): {why}"
        wait = self.delay(slot.failures)
        slot.failures += 1
        slot.next_start = now + wait
        serving = sum(1 for w in self.workers.values() if w.ready_at is not None)
        if wait == 0:
            log.error("%s; starting a new one", what)
        else:
            log.error(
                "%s; next try in %gs (%d failures in a row; %d of %d workers serving)",
                what,
                wait,
                slot.failures,
                serving,
                self.count,
            )

    def _kill_stuck_starts(self, now: float) -> None:
        """A replacement not ready within ``start_timeout`` is killed (and counted failed)."""
        for worker in self.workers.values():
            stuck = worker.ready_at is None and now - worker.started > self.start_timeout
            if stuck and not worker.reason:
                worker.reason = f"not ready within {self.start_timeout:g}s; killed"
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)

    def _stop_all(self) -> None:
        """Close the listening sockets here, SIGTERM every worker, wait up to
        ``stop_grace``, SIGKILL the rest, reap all."""
        for sock in self.sockets:  # once each worker closes its copy, connections are refused
            sock.close()
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        while self.workers and time.monotonic() < deadline:
            self._reap()
            if self.workers:
                time.sleep(POLL_INTERVAL / 2)
        for pid in list(self.workers):
            log.error("worker %d did not stop within %gs; killing it", pid, self.stop_grace)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while self.workers:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                self.workers.clear()
                break
            worker = self.workers.pop(pid, None)
            if worker is not None:
                self._exited(pid)
            if worker is not None and worker.ready_fd is not None:
                os.close(worker.ready_fd)

    # ------------------------------------------------------------------ child

    def _child(self, ready_fd: int, slot: int) -> t.NoReturn:  # pragma: no cover - after fork
        status = 1
        told = False

        def tell(message: bytes) -> None:
            nonlocal told
            if not told:
                told = True
                with contextlib.suppress(OSError):
                    os.write(ready_fd, message[: REASON_BYTES + 1])
                    os.close(ready_fd)

        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # main() installs its own handler
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until main() installs hup's
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

            def listen() -> socket.socket:
                if mine.fileno() == -1 and self.rebind is not None:
                    return self.rebind()  # the first worker's socket was closed with it
                return mine

            status = self.main(listen, lambda: tell(b"r"))
        except StartError as exc:
            tell(b"f" + str(exc).encode("utf-8", "replace"))
            status = exc.status
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except KeyboardInterrupt:
            status = 0
        except BaseException as exc:
            tell(b"f" + f"{type(exc).__name__}: {exc}".encode("utf-8", "replace"))
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
