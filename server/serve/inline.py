"""Answer authz sub-requests in waitress's I/O thread, without the thread-pool hand-off.

waitress parses every request in its I/O thread, queues it for a pool thread and is woken
through a pipe when the answer is written: per request a condition-variable wake-up, GIL
hand-offs between threads, and a pipe write and read. A bare "hello" pays that too, but
verify with a cached session is a few microseconds of in-memory work, so the hand-off cost
more than the work: against a bare waitress "hello" (``bench/run.py``, same run, SPEC §5)
verify reached about half its throughput through the pool, and about 0.9 answered here.

``install`` gives the servers a channel class whose requests, when waitress hands them to
the pool from the I/O thread, first go to ``decide(environ)`` (``App.decide_inline``). It
runs inside ``server.core.blocking.forbidden``, so it can only answer from memory. Its reply is
written by ``InlineTask`` (``server.serve.waitress_adapter``, which holds every use of
waitress's internals) within waitress's own ``HTTPChannel.service``, so keep-alive,
connection close and the order of pipelined answers stay waitress's; the bytes are the
ones waitress's ``WSGITask`` would write (``render``, tested byte for byte), in one send
instead of two. Everything else (portal pages, logins, a session missing from the cache, a
due activity write, a logged answer, a header waitress would refuse, an exception) goes to
the pool exactly as before, with the environ already built.
"""

from __future__ import annotations

import time
import typing as t
from collections.abc import Callable
from collections.abc import Iterable
from operator import itemgetter

from server.core import blocking
from server.core.metrics import Recorder
from server.serve import waitress_adapter
from server.serve.waitress_adapter import HOP_BY_HOP
from server.serve.waitress_adapter import Rendered
from server.serve.waitress_adapter import build_http_date
from server.web.authz import Reply

#: Output already waiting for the client above which a request goes to the pool. waitress
#: makes a writer wait while a connection holds more than its high watermark (16 MiB); a pool
#: thread may wait, the I/O thread must not (nobody else would send the data).
MAX_BUFFERED = 64 * 1024

Decide = Callable[[dict[str, t.Any]], Reply | None]

# ------------------------------------------------------------------ the bytes


#: Entries kept by the memo tables below; a full table is emptied.
MEMO_SIZE = 4096
_names: dict[str, str] = {}
_heads: dict[tuple[object, ...], tuple[bytes, bytes, bool]] = {}
_date: list[t.Any] = [0, b""]


def _header_name(name: str) -> str:
    """waitress's spelling of a header name (``WWW-Authenticate`` -> ``Www-Authenticate``)."""
    spelled = _names.get(name)
    if spelled is None:
        spelled = "-".join(part.capitalize() for part in name.split("-"))
        if len(_names) < 256:
            _names[name] = spelled
    return spelled


def _http_date(now: float) -> bytes:
    second = int(now)
    if _date[0] != second:
        _date[:] = [second, build_http_date(second).encode("latin-1")]
    return t.cast(bytes, _date[1])


def render(
    version: str, connection: str, reply: Reply, ident: str, now: float
) -> tuple[bytes, bool]:
    """The bytes waitress's ``WSGITask`` writes for ``reply`` to a request of HTTP
    ``version`` (1.0 or 1.1) with this ``Connection`` header (lower case), and whether the
    connection closes after it.

    Raises:
        ValueError: a header waitress would refuse (CR or LF, a hop-by-hop header) or
            treat differently (Date, Server); the caller leaves the request to the pool.
        UnicodeEncodeError: a header value outside latin-1 (waitress fails on it too).
    """
    status, headers, body = reply
    key = (version, connection, status, tuple(headers), ident)
    head = _heads.get(key)
    if head is None:
        head = _head(version, connection, status, headers, ident)
        if len(_heads) >= MEMO_SIZE:
            _heads.clear()
        _heads[key] = head
    before_date, after_date, close = head
    return before_date + _http_date(now) + after_date + body, close


def _head(
    version: str, connection: str, status: str, headers: list[tuple[str, str]], ident: str
) -> tuple[bytes, bytes, bool]:
    """``render``'s response head, split where the date goes, and whether it closes."""
    out: list[tuple[str, str]] = []
    for name, value in headers:
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError("carriage return/line feed character present in a header")
        if name.lower() in HOP_BY_HOP:
            raise ValueError(f"{name} is a hop-by-hop header")
        spelled = _header_name(name)
        if spelled in ("Date", "Server"):
            raise ValueError(f"{name} is waitress's to set")  # it would add Via, keep Date
        out.append((spelled, value))
    close = False
    if version == "1.0":
        if connection == "keep-alive":
            out.append(("Connection", "Keep-Alive"))
        else:
            close = True
    elif connection == "close":
        close = True
    if close:
        out.append(("Connection", "close"))
    if ident:
        out.append(("Server", ident))
    out.append(("Date", ""))  # the value is filled in per second by render
    out.sort(key=itemgetter(0))  # stable, as waitress's sorted()
    lines = [f"HTTP/{version} {status}", *(f"{name}: {value}" for name, value in out)]
    head = "\r\n".join(lines) + "\r\n\r\n"
    split = head.index("\r\nDate: \r\n") + len("\r\nDate: ")  # no value holds CR or LF
    return head[:split].encode("latin-1"), head[split:].encode("latin-1"), close


# ------------------------------------------------------------------ waitress integration


def answer_with(decide: Decide, recorder: Recorder | None = None) -> waitress_adapter.Answer:
    """The I/O thread's answer to a request: ``decide`` under ``blocking.forbidden``, rendered
    as waitress would write it; None when the pool must answer. Raises what ``decide`` and
    ``render`` raise (the pool answers then too). ``recorder`` (metrics on) counts each
    answer given here; one the pool gives is counted there (``server.serve.httpd.counted``)."""
    if recorder is not None and recorder.enabled:
        return _counted_answer(decide, recorder)

    def answer(
        environ: dict[str, t.Any], version: str, connection: str, ident: str
    ) -> Rendered | None:
        with blocking.forbidden:
            reply = decide(environ)
        if reply is None:
            return None
        data, close = render(version, connection, reply, ident, time.time())
        return reply[0], data, close

    return answer


def _counted_answer(decide: Decide, recorder: Recorder) -> waitress_adapter.Answer:
    """``answer_with``'s answer, each one tallied (``Recorder.answered``: a few dict updates
    of this thread's own, no lock, no I/O) once it is rendered."""
    answered = recorder.answered

    def answer(
        environ: dict[str, t.Any], version: str, connection: str, ident: str
    ) -> Rendered | None:
        started = time.perf_counter()
        with blocking.forbidden:
            reply = decide(environ)
        if reply is None:
            return None
        data, close = render(version, connection, reply, ident, time.time())
        status = reply[0]
        answered(
            status, environ.get("REQUEST_METHOD", ""), time.perf_counter() - started, authz=True
        )
        return status, data, close

    return answer


def install(servers: Iterable[object], decide: Decide, recorder: Recorder | None = None) -> None:
    """Serve the connections of ``servers`` (waitress's socket map values: listeners,
    channels, triggers) with answers from ``decide`` in the I/O thread when it can, each
    counted by ``recorder`` (metrics on)."""
    waitress_adapter.serve_inline(servers, answer_with(decide, recorder), MAX_BUFFERED)
