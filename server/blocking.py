"""Marks the code that must not block: authz answered in waitress's I/O thread (``server.inline``).

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


class _Forbidden:
    """``with forbidden:`` makes ``check()`` raise in this thread (nests)."""

    def __enter__(self) -> None:
        _state.depth += 1

    def __exit__(self, *exc: object) -> None:
        _state.depth -= 1


forbidden = _Forbidden()
