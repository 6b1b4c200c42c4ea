"""Marks the code that must not block: authz answered in waitress's I/O thread
(``server.serve.inline``).

The I/O thread serves every connection, so if it waited on a disk, a lock or Redis, every
client would wait. The inline path therefore runs inside ``with forbidden:``, and each place
that may block (a SQLite connection, a Redis command, the users-file check, password
hashing) calls ``check()`` before doing anything: inside ``forbidden`` that raises
``WouldBlock`` with nothing changed yet, and the request goes to the thread pool instead.
Elsewhere ``check()`` costs one thread-local attribute read.
"""

from __future__ import annotations

import threading


class WouldBlock(Exception):
    """Raised by ``check`` inside ``forbidden``: this work belongs in a thread-pool thread."""


class _State(threading.local):
    depth = 0


_state = _State()


def check() -> None:
    """Raise ``WouldBlock`` when the calling thread is inside ``forbidden``."""
    if _state.depth:
        raise WouldBlock


class Lock:
    """A ``threading.Lock`` for ``with``; inside ``forbidden`` it is only taken when free.

    Another thread may hold it for long (a purge of every expired session): the I/O thread
    then gets ``WouldBlock`` instead of waiting.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        if not _state.depth:
            self._lock.acquire()
        elif not self._lock.acquire(blocking=False):
            raise WouldBlock

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class _Forbidden:
    """``with forbidden:`` makes ``check()`` raise in this thread (nests)."""

    def __enter__(self) -> None:
        _state.depth += 1

    def __exit__(self, *exc: object) -> None:
        _state.depth -= 1


forbidden = _Forbidden()
