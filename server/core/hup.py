"""SIGHUP: one signal, several listeners (the audit log reopens its file, the config reloads).

``on_hangup(callback)`` registers a callback; ``install()`` (called by ``authctl serve`` in
each serving process) makes SIGHUP run every callback. The signal handler itself only starts
a thread: a callback may take a lock the interrupted main thread holds (the audit log's, for
one), and running it inside the handler would deadlock. Callbacks run one at a time, in
registration order, in that thread; one that raises is logged and the others still run.
``hangup()`` runs them at once in the calling thread (tests). The ``--workers`` parent
forwards SIGHUP to every worker and runs its own callbacks too (``hangup_soon``); a worker
ignores SIGHUP from its fork until it calls ``install()``, and inherits the parent's
callbacks (register in the worker what belongs to the worker's app).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

_callbacks: list[Callable[[], None]] = []
_registry_lock = threading.Lock()
_run_lock = threading.Lock()


def on_hangup(callback: Callable[[], None]) -> Callable[[], None]:
    """Run ``callback`` on each SIGHUP; returns a function that unregisters it."""
    with _registry_lock:
        _callbacks.append(callback)

    def remove() -> None:
        with _registry_lock:
            if callback in _callbacks:
                _callbacks.remove(callback)

    return remove


def callbacks() -> list[Callable[[], None]]:
    """The callbacks registered now, in the order they run."""
    with _registry_lock:
        return list(_callbacks)


def hangup() -> None:
    """Run every registered callback now, in order; errors are logged, never raised."""
    with _run_lock:
        for callback in callbacks():
            try:
                callback()
            except Exception:
                log.exception("SIGHUP: %s failed", getattr(callback, "__qualname__", callback))


def hangup_soon() -> None:
    """Run the callbacks in a new thread: safe from a signal handler (module doc)."""
    threading.Thread(target=hangup, name="authctl-hangup", daemon=True).start()


def _on_signal(_signum: int, _frame: object) -> None:
    hangup_soon()


def install() -> None:
    """Make SIGHUP run the callbacks (in a thread of their own). Main thread only."""
    signal.signal(signal.SIGHUP, _on_signal)


def _after_fork_in_child() -> None:
    """A lock held by a parent's hangup thread at fork time would never be released here."""
    global _run_lock, _registry_lock
    _run_lock = threading.Lock()
    _registry_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
