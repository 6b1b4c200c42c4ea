"""Authz answered in waitress's I/O thread (server.serve.inline, server.core.blocking,
App.decide_inline).

Three layers: the guard (every place that may block refuses inside ``blocking.forbidden``,
before changing anything), the app's decision (answers from memory only, and the same answer
the thread pool would give), and a real waitress server on a socket (keep-alive, pipelining
order, connection close, fallbacks to the pool).
"""

from __future__ import annotations

import base64
import logging
import re
import socket
import threading
import time
import typing as t
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from server.core import blocking
from server.core.blocking import WouldBlock
from server.core.redis_store import RedisStore
from server.core.session_store import SQLiteStore
from server.core.sqlite_util import Connections
from server.core.users import UsersSource
from server.serve import waitress_adapter
from server.serve.httpd import make_server
from server.web.authz import Reply
from tests.apphelpers import PASSWORDS
from tests.apphelpers import Harness
from tests.apphelpers import build
from tests.conftest import Clock

# --------------------------------------------------------------------------- the guard


def test_check_is_silent_outside_forbidden() -> None:
    blocking.check()


def test_check_raises_inside_forbidden_and_nests() -> None:
    with blocking.forbidden:
        with blocking.forbidden, pytest.raises(WouldBlock):
            blocking.check()
        with pytest.raises(WouldBlock):
            blocking.check()
    blocking.check()


def test_forbidden_is_per_thread() -> None:
    seen: list[bool] = []

    def other() -> None:
        try:
            blocking.check()
            seen.append(True)
        except WouldBlock:
            seen.append(False)

    with blocking.forbidden:
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert seen == [True]


def test_sqlite_connection_refused_inside_forbidden(tmp_path: Path) -> None:
    connections = Connections(
        tmp_path / "x.db", name="test database", error=RuntimeError, busy_timeout=1.0
    )
    connections.get().execute("SELECT 1")  # this thread already has one: still refused
    with blocking.forbidden, pytest.raises(WouldBlock):
        connections.get()
    connections.close()


def test_sqlite_store_answers_from_its_cache_only(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "sessions.db")
    try:
        cookie = build(tmp_path, Clock(), store=store, users_interval=3600).login()
        session_id = cookie.split("=", 1)[1]
        store._cache.clear()
        with blocking.forbidden, pytest.raises(WouldBlock):
            store.get(session_id)  # not cached: a SELECT would be needed
        assert store.get(session_id) is not None  # read, and now cached
        with blocking.forbidden:
            assert store.get(session_id) is not None
    finally:
        store.close()


def test_sqlite_touch_refused_before_anything_changes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "sessions.db")
    try:
        harness = build(tmp_path, Clock(), store=store, users_interval=3600)
        session_id = harness.login().split("=", 1)[1]
        session = store.get(session_id)
        assert session is not None
        table = store._changes._map
        before = bytes(table)
        with blocking.forbidden, pytest.raises(WouldBlock):
            store.touch(session_id, session.last_activity + 100)
        assert bytes(table) == before  # no change was announced to other processes
        assert store.get(session_id).last_activity == session.last_activity  # type: ignore[union-attr]
    finally:
        store.close()


def test_users_check_refused_only_when_due(tmp_path: Path) -> None:
    harness = build(tmp_path, Clock())
    clock = Clock(0.0)
    users = UsersSource(harness.config.users.file, interval=10, now=clock)
    with blocking.forbidden:
        assert "alice" in users.current()  # not due: the snapshot in memory
        clock.now = 11
        with pytest.raises(WouldBlock):
            users.current()
    assert "alice" in users.current()


def test_redis_refused_before_any_round_trip() -> None:
    # nothing listens on port 1: reaching the network would be a SessionStoreError instead
    store = RedisStore.from_url("redis://127.0.0.1:1/0")
    with blocking.forbidden, pytest.raises(WouldBlock):
        store.get("x" * 43)
    assert store.inline_reads is False


def test_password_check_refused(tmp_path: Path) -> None:
    harness = build(tmp_path, Clock())
    with blocking.forbidden, pytest.raises(WouldBlock):
        harness.app.portal.identities.check_password("alice", PASSWORDS["alice"])


# --------------------------------------------------------------------------- the app's decision


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return build(tmp_path, Clock(), users_interval=3600)


@contextmanager
def decision_log_level(level: int) -> Iterator[None]:
    """Set the decision log's level (what it logs is never answered inline)."""
    decisions = logging.getLogger("authctl.authz")
    before = decisions.level
    decisions.setLevel(level)
    try:
        yield
    finally:
        decisions.setLevel(before)


def _environ(
    path: str = "/api/authz/forward-auth",
    *,
    method: str = "GET",
    url: str = "https://app.example.com/",
    headers: dict[str, str] | None = None,
) -> dict[str, t.Any]:
    scheme, _, rest = url.partition("://")
    host, slash, uri = rest.partition("/")
    environ: dict[str, t.Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_X_FORWARDED_PROTO": scheme,
        "HTTP_X_FORWARDED_HOST": host,
        "HTTP_X_FORWARDED_URI": slash + uri,
        "HTTP_X_FORWARDED_METHOD": "GET",
        "HTTP_ACCEPT": "text/html",
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def _call(harness: Harness, environ: dict[str, t.Any]) -> Reply:
    """The pool's answer: the WSGI call."""
    answer: list[t.Any] = []
    body = harness.app(environ, lambda status, headers: answer.extend([status, headers]))
    return answer[0], answer[1], b"".join(body)


def _decide(harness: Harness, environ: dict[str, t.Any]) -> Reply | None:
    with blocking.forbidden:
        return harness.app.decide_inline(environ)


def test_signed_in_verify_is_answered_inline(harness: Harness) -> None:
    reply = _decide(harness, _environ(headers={"Cookie": harness.login()}))
    assert reply is not None
    status, headers, body = reply
    assert status == "200 OK"
    assert ("Remote-User", "alice") in headers
    assert ("Content-Length", "0") in headers
    assert body == b""


def test_inline_answer_equals_the_pool_answer(harness: Harness) -> None:
    cookie = harness.login()
    reply = _decide(harness, _environ(headers={"Cookie": cookie}))
    assert reply == _call(harness, _environ(headers={"Cookie": cookie}))


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/api/health", "GET"),
        ("/", "GET"),
        ("/api/firstfactor", "POST"),
        ("/api/authz/forward-auth", "POST"),  # 405: the pool answers it
    ],
)
def test_other_requests_go_to_the_pool(harness: Harness, path: str, method: str) -> None:
    assert _decide(harness, _environ(path, method=method)) is None


def test_logged_answers_go_to_the_pool(harness: Harness) -> None:
    cookie = harness.login()
    with decision_log_level(logging.INFO):
        assert not _decide(harness, _environ())  # 302, logged at INFO
        assert _decide(harness, _environ(headers={"Cookie": cookie}))
    with decision_log_level(logging.DEBUG):  # now the allow is logged too
        assert not _decide(harness, _environ(headers={"Cookie": cookie}))
    with decision_log_level(logging.WARNING):
        assert _decide(harness, _environ())  # an unlogged redirect needs nothing but memory


def test_store_without_memory_reads_never_inline(harness: Harness) -> None:
    harness.app.inline_authz = False
    assert not _decide(harness, _environ(headers={"Cookie": harness.login()}))


def test_due_users_check_goes_to_the_pool(tmp_path: Path) -> None:
    harness = build(tmp_path, Clock())  # interval 0: every request checks the file
    assert not _decide(harness, _environ(headers={"Cookie": harness.login()}))


def test_basic_inline_only_with_a_warm_cache(harness: Harness) -> None:
    credentials = base64.b64encode(f"alice:{PASSWORDS['alice']}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}"}
    assert not _decide(harness, _environ(headers=headers))  # argon2 needed
    status = _call(harness, _environ(headers=headers))[0]  # the pool checks the password
    assert status == "200 OK"
    assert _decide(harness, _environ(headers=headers))


def test_due_activity_write_goes_to_the_pool(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteStore(tmp_path / "sessions.db", now=clock)
    try:
        harness = build(tmp_path, clock, store=store, users_interval=3600)
        cookie = harness.login()
        assert not _decide(harness, _environ(headers={"Cookie": cookie}))  # not read yet
        assert _call(harness, _environ(headers={"Cookie": cookie}))[0] == "200 OK"
        assert _decide(harness, _environ(headers={"Cookie": cookie}))  # cached now
        clock.now += harness.app.portal.identities.sessions.touch_interval + 1
        store._cache.clear()
        assert _call(harness, _environ(headers={"Cookie": cookie}))[0] == "200 OK"  # re-read
        assert not _decide(harness, _environ(headers={"Cookie": cookie}))  # touch is due
        assert _call(harness, _environ(headers={"Cookie": cookie}))[0] == "200 OK"  # written
        store._cache.clear()
        assert _call(harness, _environ(headers={"Cookie": cookie}))[0] == "200 OK"
        assert _decide(harness, _environ(headers={"Cookie": cookie}))
    finally:
        store.close()


def test_a_failing_decision_goes_to_the_pool(harness: Harness) -> None:
    environ = _environ(headers={"Cookie": harness.login()})
    environ["REMOTE_ADDR"] = object()  # not a string: the decision raises
    assert not _decide(harness, environ)
    assert _call(harness, environ)[0] == "400 Bad Request"


_HEADER_VALUES = st.sampled_from(
    [
        "",
        "x",
        "GET",
        "https",
        "/",
        "text/html",
        "*/*",
        "basic x",
        "Bearer authctl_" + "A" * 43,  # an unknown token: 401 Bearer, inline once cached
        "Bearer authctl_x",
        "Bearer app-token",
        "get",
        " GET",
        "GET\r",
        "PROPFIND",
    ]
)


@given(
    url=st.sampled_from(
        [
            "https://app.example.com/",
            "https://public.example.com/a",
            "https://app.example.com/public/x",
            "http://app.example.com/",
            "https://nowhere.test/",
            "https://admin.example.com/?q=1",
        ]
    ),
    signed_in=st.booleans(),
    extra=st.dictionaries(
        st.sampled_from(
            [
                "X-Forwarded-Method",
                "X-Original-Method",
                "Accept",
                "X-Requested-With",
                "Authorization",
            ]
        ),
        _HEADER_VALUES,
        max_size=3,
    ),
    path=st.sampled_from(["/api/authz/forward-auth", "/api/verify", "/api/authz/auth-request"]),
)
def test_inline_and_pool_always_agree(
    tmp_path_factory: pytest.TempPathFactory,
    url: str,
    signed_in: bool,
    extra: dict[str, str],
    path: str,
) -> None:
    harness = _shared_harness(tmp_path_factory)
    headers = dict(extra)
    if signed_in:
        headers["Cookie"] = _shared_cookie(harness)
    if path == "/api/authz/auth-request":
        headers["X-Original-URL"] = url
    with decision_log_level(logging.WARNING):  # nothing logged: every answer may be inline
        reply = _decide(harness, _environ(path, url=url, headers=headers))
        if reply is not None:
            assert reply == _call(harness, _environ(path, url=url, headers=headers))


_SHARED: dict[str, t.Any] = {}


def _shared_harness(factory: pytest.TempPathFactory) -> Harness:
    if "harness" not in _SHARED:
        _SHARED["harness"] = build(factory.mktemp("inline"), Clock(), users_interval=3600)
    return t.cast(Harness, _SHARED["harness"])


def _shared_cookie(harness: Harness) -> str:
    if "cookie" not in _SHARED:
        _SHARED["cookie"] = harness.login()
    return t.cast(str, _SHARED["cookie"])


# --------------------------------------------------------------------------- a real server


class Served:
    """The harness app behind a real waitress server with the inline path, in a thread."""

    def __init__(
        self,
        harness: Harness,
        decide: t.Callable[[dict[str, t.Any]], Reply | None] | None,
        sockets: list[socket.socket] | None = None,
    ) -> None:
        self.harness = harness
        self.inline = 0
        self._decide = decide
        self.server = make_server(
            harness.app,
            2,
            {"host": "127.0.0.1", "port": 0},
            sockets,
            inline=self.decide if decide is not None else None,
        )
        self.port = sockets[0].getsockname()[1] if sockets else self.server.effective_port
        self.stopped = threading.Event()
        self.thread = threading.Thread(
            target=waitress_adapter.run_until, args=(self.server, self.stopped), daemon=True
        )
        self.thread.start()

    def decide(self, environ: dict[str, t.Any]) -> Reply | None:
        assert self._decide is not None
        reply = self._decide(environ)
        self.inline += reply is not None
        return reply

    def exchange(self, raw: bytes, *, until_close: bool = False, answers: int = 1) -> bytes:
        """Send ``raw`` on a new connection; read ``answers`` whole answers (or until the
        server closes the connection)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as conn:
            conn.sendall(raw)
            data = b""
            while until_close or _complete(data) < answers:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data

    def stop(self) -> None:
        """End the loop, then (no thread polls any more) stop the pool and close every socket.

        Closing the sockets in a thunk on the trigger instead raced: the loop, woken by a
        pool thread's pull, could run the thunk and close the trigger before this thread's
        own pull wrote to it ("bad file descriptor", 1 run in 18).
        """
        waitress_adapter.stop_loop(self.server, self.stopped)
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
        assert waitress_adapter.shut_down(self.server)


def test_stopping_closes_nothing_a_pool_thread_may_still_pull(harness: Harness) -> None:
    """Pool threads pull the trigger after each answer, at any time: the trigger stays open
    until the loop has returned and the pool is stopped. The old stop closed every socket in
    a thunk on the trigger, which a wake-up from such a pull could run before the stop's own
    pull wrote its byte: "bad file descriptor", 1 run of the pipelined test in 18."""
    running = Served(harness, harness.app.decide_inline)
    (trigger,) = waitress_adapter.triggers(waitress_adapter.socket_map(running.server))
    failures: list[OSError] = []
    done = threading.Event()

    def like_a_pool_thread() -> None:
        while not done.is_set():
            try:
                trigger.pull_trigger()
            except OSError as exc:
                failures.append(exc)
                return
            time.sleep(0.0005)

    puller = threading.Thread(target=like_a_pool_thread)
    puller.start()
    try:
        waitress_adapter.stop_loop(running.server, running.stopped)
        running.thread.join(10)
        assert not running.thread.is_alive()
        time.sleep(0.05)  # pulls after the loop returned still find the trigger open
    finally:
        done.set()
        puller.join(10)
    assert failures == []
    assert not trigger._closed
    assert waitress_adapter.shut_down(running.server)
    assert trigger._closed
    assert waitress_adapter.socket_map(running.server) == {}


@pytest.fixture
def served(harness: Harness) -> Iterator[Served]:
    running = Served(harness, harness.app.decide_inline)
    yield running
    running.stop()


def _request(
    path: str = "/api/authz/forward-auth",
    *,
    cookie: str | None = None,
    method: str = "GET",
    version: str = "1.1",
    extra: str = "",
) -> bytes:
    lines = [
        f"{method} {path} HTTP/{version}",
        "Host: auth.internal",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: app.example.com",
        "X-Forwarded-Uri: /",
        "X-Forwarded-Method: GET",
        "Accept: text/html",
    ]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def _answers(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """The complete answers in ``data``: (status, head, body), framed by Content-Length."""
    answers = []
    while b"\r\n\r\n" in data:
        head, data = data.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        if len(data) < length:
            break
        answers.append((int(head.split(b" ", 2)[1]), head, data[:length]))
        data = data[length:]
    return answers


def _complete(data: bytes) -> int:
    return len(_answers(data))


def _statuses(data: bytes) -> list[int]:
    return [status for status, _, _ in _answers(data)]


def test_keep_alive_verifies_are_answered_inline(served: Served) -> None:
    cookie = served.harness.login()
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as conn:
        for _ in range(20):
            conn.sendall(_request(cookie=cookie))
            answer = conn.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"\r\nRemote-User: alice\r\n" in answer
    assert served.inline == 20


def test_pipelined_answers_keep_their_order(served: Served) -> None:
    cookie = served.harness.login()
    raw = (
        _request(cookie=cookie)  # inline, 200
        + _request("/no-such-page", method="GET")  # the pool: 404
        + _request(cookie=cookie)  # after a pool answer
        + _request(method="POST")  # 405 (pool)
        + _request(cookie=cookie)
    )
    data = served.exchange(raw, answers=5)
    assert _statuses(data) == [200, 404, 200, 405, 200]
    assert served.inline >= 1


def test_connection_close_and_http_1_0(served: Served) -> None:
    cookie = served.harness.login()
    data = served.exchange(_request(cookie=cookie, extra="Connection: close\r\n"), until_close=True)
    assert _statuses(data) == [200]
    data = served.exchange(_request(cookie=cookie, version="1.0"), until_close=True)
    assert data.startswith(b"HTTP/1.0 200 OK\r\n")
    assert served.inline == 2


def test_head_has_no_body(served: Served) -> None:
    with decision_log_level(logging.WARNING):  # the redirect is not logged: inline
        data = served.exchange(_request(method="HEAD"))
    assert data.startswith(b"HTTP/1.1 302 Found\r\n")
    assert b"\r\nContent-Length: 0\r\n" in data
    assert data.endswith(b"\r\n\r\n")
    assert served.inline == 1


def test_a_raising_decision_falls_back_to_the_pool(harness: Harness) -> None:
    def broken(environ: dict[str, t.Any]) -> Reply | None:
        raise RuntimeError("boom")

    running = Served(harness, broken)
    try:
        data = running.exchange(_request(cookie=harness.login()), answers=1)
        assert _statuses(data) == [200]
        assert running.inline == 0
    finally:
        running.stop()


def test_too_much_waiting_output_goes_to_the_pool(served: Served) -> None:
    from server.serve.inline import MAX_BUFFERED
    from server.serve.waitress_adapter import InlineChannel

    waiting = SimpleNamespace(
        requests=[SimpleNamespace(error=None)],
        total_outbufs_len=MAX_BUFFERED + 1,
        max_buffered=MAX_BUFFERED,
    )
    assert InlineChannel.try_inline(waiting) is False  # type: ignore[arg-type]


def test_busy_memory_store_lock_refuses_the_io_thread() -> None:
    from server.core.session_store import MemoryStore

    store = MemoryStore()
    holding = threading.Event()
    release = threading.Event()

    def purge() -> None:  # stands for a long purge holding the lock
        with store._lock:
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=purge)
    thread.start()
    try:
        assert holding.wait(10)
        with blocking.forbidden, pytest.raises(WouldBlock):
            store.get("x" * 43)
    finally:
        release.set()
        thread.join()
    with blocking.forbidden:
        assert store.get("x" * 43) is None  # free again: taken at once


# --------------------------------------------------------------------------- the same bytes


@pytest.fixture
def both(harness: Harness) -> Iterator[tuple[Served, Served]]:
    """One app behind two servers: with the inline path, and through the pool only."""
    inline = Served(harness, harness.app.decide_inline)
    pool = Served(harness, None)
    yield inline, pool
    inline.stop()
    pool.stop()


def _without_date(data: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", data)


@pytest.mark.parametrize("version", ["1.1", "1.0"])
@pytest.mark.parametrize("connection", [None, "close", "keep-alive", "Keep-Alive", "Upgrade"])
@pytest.mark.parametrize(
    ("method", "who", "extra"),
    [
        ("GET", "alice", ""),  # 200 with the Remote-* headers
        ("HEAD", "alice", ""),
        ("GET", None, ""),  # 302 with a body
        ("HEAD", None, ""),  # 302 without
        ("GET", None, "X-Requested-With: XMLHttpRequest\r\n"),  # 401 + Location
        ("GET", "bob", "X-Forwarded-Host: admin.example.com\r\n"),  # 403 or 200, by rule
    ],
)
def test_inline_bytes_are_waitress_bytes(
    both: tuple[Served, Served],
    version: str,
    connection: str | None,
    method: str,
    who: str | None,
    extra: str,
) -> None:
    inline, pool = both
    cookie = inline.harness.login(who) if who else None
    if connection:
        extra += f"Connection: {connection}\r\n"
    raw = _request(cookie=cookie, method=method, version=version, extra=extra)
    if "admin.example.com" in extra:
        raw = raw.replace(b"X-Forwarded-Host: app.example.com\r\n", b"")
    closes = version == "1.0" and connection != "keep-alive" and connection != "Keep-Alive"
    closes = closes or (connection == "close")
    with decision_log_level(logging.WARNING):  # nothing is logged: every answer is inline
        got = inline.exchange(raw, until_close=closes)
        want = pool.exchange(raw, until_close=closes)
    assert inline.inline == 1
    assert _without_date(got) == _without_date(want)
    assert _answers(got), got


def test_render_refuses_what_waitress_refuses() -> None:
    from server.serve.inline import render

    ok: Reply = ("200 OK", [("Remote-Name", "Zoë"), ("Content-Length", "0")], b"")
    data, close = render("1.1", "", ok, "authctl", 0.0)
    assert b"\r\nRemote-Name: Zo\xeb\r\n" in data
    assert not close
    for headers, why in (
        ([("Remote-Name", "a\r\nSet-Cookie: x=1")], "line feed"),
        ([("Remote-Name\n", "a")], "line feed"),
        ([("Connection", "close")], "hop-by-hop"),
        ([("Transfer-Encoding", "chunked")], "hop-by-hop"),
        ([("date", "Thu, 01 Jan 1970 00:00:00 GMT")], "waitress's"),
        ([("Server", "other")], "waitress's"),
    ):
        with pytest.raises(ValueError, match=why):
            render("1.1", "", ("200 OK", headers, b""), "authctl", 0.0)
    with pytest.raises(UnicodeEncodeError):
        render("1.1", "", ("200 OK", [("Remote-Name", "雪")], b""), "authctl", 0.0)


def test_render_memo_stays_bounded_and_dates_move() -> None:
    from server.serve import inline

    for i in range(inline.MEMO_SIZE + 300):
        reply: Reply = ("302 Found", [(f"X-Header-{i}", "v"), ("Location", f"/{i}")], b"")
        inline.render("1.1", "", reply, "authctl", 0.0)
    assert len(inline._heads) <= inline.MEMO_SIZE
    assert len(inline._names) <= 256
    ok: Reply = ("200 OK", [("Content-Length", "2")], b"ok")
    first, _ = inline.render("1.1", "", ok, "authctl", 0.0)
    later, _ = inline.render("1.1", "", ok, "authctl", 86400.0)
    assert b"\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n" in first
    assert b"\r\nDate: Fri, 02 Jan 1970 00:00:00 GMT\r\n" in later
    assert first.endswith(b"\r\n\r\nok")
    assert first.replace(b"Thu, 01", b"Fri, 02") == later
    anonymous, _ = inline.render("1.1", "", ok, "", 0.0)  # waitress with ident=""
    assert b"\r\nServer:" not in anonymous


def test_every_listening_socket_gets_the_inline_path(harness: Harness) -> None:
    listeners = []
    for _ in range(2):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listeners.append(listener)
    running = Served(harness, harness.app.decide_inline, listeners)  # MultiSocketServer
    try:
        cookie = harness.login()
        for listener in listeners:
            running.port = listener.getsockname()[1]
            assert _statuses(running.exchange(_request(cookie=cookie))) == [200]
        assert running.inline == 2
    finally:
        running.stop()


_KINDS = {
    # kind: (request bytes builder, status); cookie filled in per example
    "allow": (lambda cookie: _request(cookie=cookie), 200),  # inline
    "redirect": (lambda cookie: _request(), 302),  # inline (decision log quiet)
    "missing": (lambda cookie: _request("/no-such-page"), 404),  # pool
    "post": (lambda cookie: _request(method="POST"), 405),  # pool
    "bad": (lambda cookie: _request(cookie=cookie).replace(b"https", b"http"), 400),  # pool
}


@settings(max_examples=40)
@given(kinds=st.lists(st.sampled_from(sorted(_KINDS)), min_size=1, max_size=12))
def test_pipelined_mixes_keep_their_order(
    tmp_path_factory: pytest.TempPathFactory, kinds: list[str]
) -> None:
    harness = _shared_harness(tmp_path_factory)
    cookie = _shared_cookie(harness)
    running = Served(harness, harness.app.decide_inline)
    try:
        raw = b"".join(_KINDS[kind][0](cookie) for kind in kinds)
        with decision_log_level(logging.WARNING):
            data = running.exchange(raw, answers=len(kinds))
        assert _statuses(data) == [_KINDS[kind][1] for kind in kinds]
    finally:
        running.stop()


# --------------------------------------------------------------------------- tokens (SPEC §7.6)


def _token(harness: Harness, **kw: t.Any) -> str:
    tokens = harness.app.authorizer.tokens
    assert tokens is not None
    return tokens.create("alice", "inline", created_by="cli", **kw)[0]


def test_a_token_is_verified_inline_once_cached(harness: Harness) -> None:
    """The first use reads storage (pool); later ones within the re-check bound are
    answered in the I/O thread, with the bytes the pool would send."""
    headers = {"Authorization": f"Bearer {_token(harness)}"}
    assert _decide(harness, _environ(headers=headers)) is None  # storage read: the pool
    pool = _call(harness, _environ(headers=headers))
    assert pool[0] == "200 OK"
    assert ("Remote-User", "alice") in pool[1]
    assert _decide(harness, _environ(headers=headers)) == pool


def test_a_due_token_recheck_goes_to_the_pool(harness: Harness) -> None:
    """Once the cached entry is RECHECK_SECONDS old, the I/O thread hands over (storage is
    read again, so a revocation elsewhere is seen)."""
    tokens = harness.app.authorizer.tokens
    assert tokens is not None
    mono = [100.0]
    tokens._monotonic = lambda: mono[0]
    headers = {"Authorization": f"Bearer {_token(harness)}"}
    _call(harness, _environ(headers=headers))
    assert _decide(harness, _environ(headers=headers)) is not None
    mono[0] += 1.0
    assert _decide(harness, _environ(headers=headers)) is None
    _call(harness, _environ(headers=headers))
    assert _decide(harness, _environ(headers=headers)) is not None


def test_token_refusals_agree_inline_and_in_the_pool(harness: Harness) -> None:
    """Refusals are logged, so they go to the pool; unlogged, inline and pool agree."""
    good = _token(harness)
    weak_url = "https://secure.example.com/"
    cases = [
        ({"Authorization": f"Bearer {good}"}, "https://app.example.com/"),
        ({"Proxy-Authorization": f"Bearer {good}"}, "https://app.example.com/"),
        ({"Authorization": f"Bearer {good}"}, weak_url),  # one factor too few: 401
        ({"Authorization": "Bearer authctl_" + "A" * 43}, "https://app.example.com/"),
        ({"Authorization": "Bearer authctl_x"}, "https://public.example.com/"),
        ({"Authorization": "Bearer some-app-token"}, "https://app.example.com/"),
    ]
    for headers, url in cases:
        _call(harness, _environ(url=url, headers=headers))  # warm the cache
        with decision_log_level(logging.INFO):
            status = _call(harness, _environ(url=url, headers=headers))[0]
            if status != "200 OK":
                assert _decide(harness, _environ(url=url, headers=headers)) is None
        with decision_log_level(logging.WARNING):
            reply = _decide(harness, _environ(url=url, headers=headers))
            assert reply is not None, (headers, url)
            assert reply == _call(harness, _environ(url=url, headers=headers))
