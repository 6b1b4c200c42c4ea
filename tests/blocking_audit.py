"""A test that opens a file, connects a socket or opens SQLite inside ``blocking.forbidden`` fails.

``server.core.blocking`` relies on every place that may block calling ``check()`` first; a
new one that forgets would make waitress's I/O thread wait, and since the inline path turns
any exception into a hand-off to the pool, nothing would show it. This plugin watches the
interpreter's audit events (``open``, ``socket.connect``, ``sqlite3.connect``): one inside
``forbidden``, in any thread, is refused at once (the operation raises ``BlockingCall``) and
recorded, and the test during which it happened fails naming it. ``tests/conftest.py``
loads it; ``-p tests.blocking_audit`` loads it into another pytest run.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Generator

import pytest

from server.core import blocking

#: The audit events of work that may wait on a disk or the network.
WATCHED = frozenset({"open", "socket.connect", "sqlite3.connect"})


class BlockingCall(RuntimeError):
    """Raised by the audit hook: this call may block, and runs inside ``blocking.forbidden``."""


_lock = threading.Lock()
_seen: list[str] = []


def _hook(event: str, args: tuple[object, ...]) -> None:
    if event not in WATCHED or not blocking._state.depth:
        return
    with _lock:
        _seen.append(f"{event}{args!r:.200} in {threading.current_thread().name}, {_where()}")
    raise BlockingCall(f"{event} inside blocking.forbidden")


def _where(depth: int = 6) -> str:
    """The callers, innermost first, without their source lines (reading those would open
    files: another audit event)."""
    frame = sys._getframe(2)
    places = []
    while frame is not None and len(places) < depth:
        places.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        frame = frame.f_back
    return " < ".join(places)


def taken() -> list[str]:
    """The violations recorded since the last call, which forgets them."""
    with _lock:
        found = list(_seen)
        _seen.clear()
    return found


sys.addaudithook(_hook)  # for the rest of the process: audit hooks cannot be removed


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """Fail the test if any thread made a watched call inside ``forbidden`` while it ran."""
    taken()
    result = yield
    found = taken()
    if found:
        pytest.fail(
            "a call that may block ran inside blocking.forbidden (call blocking.check() "
            "before it):\n" + "\n".join(found),
            pytrace=False,
        )
    return result
