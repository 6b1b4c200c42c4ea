"""The waitress internals authctl relies on, each checked against the installed waitress.

``server.serve.waitress_adapter`` is the only module that touches waitress beyond
``create_server``, and its ``INTERNALS`` names every internal it uses. Each name has a check
here (that it exists, its signature, the behaviour the adapter relies on), and a name
without a check fails: a waitress upgrade that moves one fails in this file, by name.
"""

from __future__ import annotations

import ast
import inspect
import socket
import threading
import typing as t
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import BaseWSGIServer
from waitress.server import create_server
from waitress.task import Task
from waitress.task import WSGITask
from waitress.task import hop_by_hop
from waitress.utilities import build_http_date

from server.serve import waitress_adapter
from tests.conftest import ROOT

REQUEST = b"GET /x?q=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"


def _app(environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


def _params(func: Callable[..., t.Any]) -> list[str]:
    return list(inspect.signature(func).parameters)


class Made:
    """A waitress server on loopback (not running), and a client connected to it."""

    def __init__(self) -> None:
        self.map: dict[int, t.Any] = {}
        self.server = create_server(
            _app, map=self.map, host="127.0.0.1", port=0, threads=1, ident="contract"
        )
        self.queued: list[t.Any] = []
        self.server.add_task = self.queued.append  # type: ignore[method-assign]

    def connect(self) -> tuple[socket.socket, HTTPChannel]:
        """A client socket and the server's channel for it (``handle_accept``)."""
        client = socket.create_connection(("127.0.0.1", self.server.effective_port))
        before = set(self.map)
        for _ in range(100):
            self.server.handle_accept()
            if set(self.map) - before:
                break
        (fd,) = set(self.map) - before
        return client, self.map[fd]

    def close(self) -> None:
        self.server.task_dispatcher.shutdown()
        wasyncore.close_all(self.map)


@pytest.fixture
def made() -> Iterator[Made]:
    server = Made()
    yield server
    server.close()


def _read_request(made: Made, raw: bytes = REQUEST) -> tuple[socket.socket, HTTPChannel]:
    client, channel = made.connect()
    client.sendall(raw)
    for _ in range(100):
        channel.handle_read()
        if channel.requests:
            break
    return client, channel


# --------------------------------------------------------------------------- the checks


def check_create_server(made: Made) -> None:
    assert "map" in _params(create_server)
    assert made.server._map is made.map
    assert made.server.task_dispatcher is not None
    a, b = (socket.socket() for _ in range(2))
    for sock in (a, b):
        sock.bind(("127.0.0.1", 0))
        sock.listen()
    multi_map: dict[int, t.Any] = {}
    multi = create_server(_app, map=multi_map, sockets=[a, b], threads=1)
    try:
        assert multi.map is multi_map  # a MultiSocketServer: .map, not ._map
        assert waitress_adapter.socket_map(multi) is multi_map
        assert len(waitress_adapter.listeners(multi_map)) == 2
    finally:
        multi.task_dispatcher.shutdown()
        wasyncore.close_all(multi_map)


def check_base_server(made: Made) -> None:
    assert isinstance(made.server, BaseWSGIServer)
    assert made.server in made.map.values()


def check_server_map(made: Made) -> None:
    assert waitress_adapter.socket_map(made.server) is made.map


def check_server_adj(made: Made) -> None:
    adj = made.server.adj
    assert adj.ident == "contract"
    assert isinstance(adj.connection_limit, int)
    assert waitress_adapter.loop_timeout(made.server) == adj.asyncore_loop_timeout


def check_family(made: Made, tmp_path: Path) -> None:
    assert made.server.family == socket.AF_INET
    unix_map: dict[int, t.Any] = {}
    unix = create_server(_app, map=unix_map, unix_socket=str(tmp_path / "s"), threads=1)
    try:
        assert unix.family == socket.AF_UNIX
        waitress_adapter.name_unix_peers(unix_map, "unix-peer")
        assert unix.fix_addr("anything") == ("unix-peer", None)
    finally:
        unix.task_dispatcher.shutdown()
        wasyncore.close_all(unix_map)


def check_handle_accept(made: Made) -> None:
    assert _params(BaseWSGIServer.handle_accept) == ["self"]
    made.server.handle_accept()  # nothing waiting: no channel, no error
    assert len(waitress_adapter.channels(made.map)) == 0
    clients = [socket.create_connection(("127.0.0.1", made.server.effective_port)) for _ in "ab"]
    try:
        assert waitress_adapter.accept_some(made.server, 10) == 2  # one per call, then none
        assert len(waitress_adapter.channels(made.map)) == 2
    finally:
        for client in clients:
            client.close()


def check_fix_addr(made: Made) -> None:
    assert _params(BaseWSGIServer.fix_addr) == ["self", "addr"]
    made.server.fix_addr = lambda addr: ("fixed", 1)  # type: ignore[method-assign]
    client, channel = made.connect()
    client.close()
    assert channel.addr == ("fixed", 1)


def check_channel_class(made: Made) -> None:
    class Mine(HTTPChannel):
        pass

    made.server.channel_class = Mine
    client, channel = made.connect()
    client.close()
    assert type(channel) is Mine


def check_add_task(made: Made) -> None:
    assert _params(BaseWSGIServer.add_task) == ["self", "task"]
    client, channel = _read_request(made, REQUEST.replace(b"close", b"keep-alive") * 2)
    client.close()
    assert made.queued == [channel]  # once, for the first of two pipelined requests
    assert len(channel.requests) == 2


def check_pull_trigger(made: Made) -> None:
    assert _params(BaseWSGIServer.pull_trigger) == ["self"]
    made.server.pull_trigger()
    waitress_adapter.poll(0.0, made.map)  # the trigger's byte is read; nothing else happens


def check_trigger(made: Made) -> None:
    ran: list[str] = []
    (trigger,) = waitress_adapter.triggers(made.map)
    assert trigger is made.server.trigger
    waitress_adapter.wake(trigger, lambda: ran.append(threading.current_thread().name))
    assert ran == []  # not in the caller's thread: in the loop's
    loop = threading.Thread(target=waitress_adapter.poll, args=(1.0, made.map), name="loop")
    loop.start()
    loop.join()
    assert ran == ["loop"]


def check_task_dispatcher(made: Made) -> None:
    dispatcher = made.server.task_dispatcher
    assert {"cancel_pending", "timeout"} <= set(_params(dispatcher.shutdown))
    assert callable(dispatcher.queue_logger.warning)
    assert dispatcher.threads
    waitress_adapter.throttle_queue_warnings(made.server, lambda logger: ("wrapped", logger))
    assert dispatcher.queue_logger[0] == "wrapped"  # type: ignore[index]
    waitress_adapter.stop_threads(made.server)
    assert not dispatcher.threads


def check_http_channel(made: Made) -> None:
    assert issubclass(HTTPChannel, wasyncore.dispatcher)
    assert _params(HTTPChannel.__init__) == ["self", "server", "sock", "addr", "adj", "map"]
    assert isinstance(made.server.channel_class, type)
    assert issubclass(made.server.channel_class, HTTPChannel)


def check_requests(made: Made) -> None:
    client, channel = made.connect()
    assert channel.requests == []
    client.sendall(REQUEST)
    channel.handle_read()
    client.close()
    assert len(channel.requests) == 1
    assert isinstance(channel.requests[0], HTTPRequestParser)


def check_request(made: Made) -> None:
    client, channel = made.connect()
    assert channel.request is None
    client.sendall(REQUEST[:20])  # half a request: being parsed
    channel.handle_read()
    client.close()
    assert isinstance(channel.request, HTTPRequestParser)
    assert not channel.requests
    assert not waitress_adapter.idle(channel)


def check_total_outbufs_len(made: Made) -> None:
    client, channel = made.connect()
    client.close()
    assert channel.total_outbufs_len == 0
    assert waitress_adapter.idle(channel)
    channel.adj.send_bytes = 1 << 20  # buffer what a task writes until the loop sends it
    channel.write_soon(b"abc" * 10)
    assert channel.total_outbufs_len == 30
    assert not waitress_adapter.idle(channel)


def check_will_close(made: Made) -> None:
    client, channel = made.connect()
    client.close()
    assert channel.will_close is False
    channel.will_close = True
    assert not channel.readable()
    assert not waitress_adapter.idle(channel)


def check_close_when_flushed(made: Made) -> None:
    client, channel = made.connect()
    client.close()
    assert channel.close_when_flushed is False
    channel.close_when_flushed = True
    assert channel.writable()
    assert not waitress_adapter.idle(channel)


def check_connected(made: Made) -> None:
    client, channel = made.connect()
    client.close()
    assert channel.connected is True
    channel.handle_close()
    assert channel.connected is False


def check_socket(made: Made) -> None:
    client, channel = made.connect()
    assert isinstance(waitress_adapter.channel_socket(channel), socket.socket)
    assert channel.socket.getpeername() == client.getsockname()
    client.close()


def check_channel_adj(made: Made) -> None:
    client, channel = made.connect()
    client.close()
    assert channel.adj is made.server.adj


def check_task_class(made: Made) -> None:
    assert HTTPChannel.task_class is WSGITask
    made_tasks: list[tuple[t.Any, t.Any]] = []
    client, channel = _read_request(made)

    def task_class(ch: t.Any, request: t.Any) -> t.Any:
        made_tasks.append((ch, request))
        return WSGITask(ch, request)

    channel.task_class = task_class  # type: ignore[assignment]
    request = channel.requests[0]
    channel.service()
    client.close()
    assert made_tasks == [(channel, request)]


def check_handle_read(made: Made) -> None:
    assert _params(HTTPChannel.handle_read) == ["self"]
    client, channel = _read_request(made)
    client.close()
    assert made.queued == [channel]
    assert channel.requests[0].path == "/x"


def check_handle_close(made: Made) -> None:
    client, channel = made.connect()
    client.close()
    fd = channel._fileno
    HTTPChannel.handle_close(channel)
    assert fd not in made.map
    assert channel.socket is None or channel.socket.fileno() == -1


def check_service(made: Made) -> None:
    raw = REQUEST.replace(b"close", b"keep-alive") * 2
    client, channel = _read_request(made, raw)
    made.queued.clear()
    channel.service()  # answers requests[0], then queues the channel for the next one
    assert len(channel.requests) == 1
    assert made.queued == [channel]
    channel.service()
    assert channel.requests == []
    assert made.queued == [channel]
    while channel.total_outbufs_len:
        channel.handle_write()
    client.settimeout(5)
    data = b""
    while data.count(b"ok") < 2:
        data += client.recv(4096)
    client.close()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")


def check_write_soon(made: Made) -> None:
    assert _params(HTTPChannel.write_soon) == ["self", "data"]
    client, channel = made.connect()
    assert channel.write_soon(b"x") == 1
    client.close()


def check_task(made: Made) -> None:
    assert _params(Task.__init__) == ["self", "channel", "request"]
    for name in ("status", "wrote_header", "close_on_finish", "complete"):
        assert hasattr(Task, name), name
    client, channel = _read_request(made)
    rendered = ("200 OK", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True)
    task = waitress_adapter.InlineTask(channel, channel.requests[0], rendered)
    task.service()  # Task.service calls execute, then finishes without writing more
    assert task.status == "200 OK"
    assert task.close_on_finish is True
    client.settimeout(5)
    assert client.recv(4096) == rendered[1]  # exactly the rendered bytes
    client.close()


def check_wsgi_task(made: Made) -> None:
    client, channel = _read_request(made)
    client.close()
    request = channel.requests[0]
    environ = WSGITask(channel, request).get_environment()
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["PATH_INFO"] == "/x"
    assert environ["QUERY_STRING"] == "q=1"
    reused = WSGITask(channel, request)
    reused.environ = {"prebuilt": True}
    assert reused.get_environment() == {"prebuilt": True}


def check_hop_by_hop(made: Made) -> None:
    assert {"connection", "transfer-encoding", "upgrade", "keep-alive"} <= set(hop_by_hop)
    assert frozenset(hop_by_hop) == waitress_adapter.HOP_BY_HOP


def check_build_http_date(made: Made) -> None:
    assert build_http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"


def check_request_parser(made: Made) -> None:
    client, channel = _read_request(made)
    client.close()
    request = channel.requests[0]
    assert request.error is None
    assert request.version == "1.1"
    assert request.headers["CONNECTION"] == "close"
    waitress_adapter.ask_to_close(request)
    assert request.headers["CONNECTION"] == "close"


def check_dispatcher(made: Made) -> None:
    assert _params(wasyncore.dispatcher.__init__) == ["self", "sock", "map"]
    a, b = socket.socketpair()
    the_map: dict[int, t.Any] = {}
    linger = waitress_adapter.Lingering(a, the_map, 1.0, lambda: 0.0)
    assert a.fileno() in the_map
    assert b.recv(1) == b""  # the lingering side sent its FIN
    b.sendall(b"late")
    waitress_adapter.poll(1.0, the_map)  # read and dropped
    b.close()
    waitress_adapter.poll(1.0, the_map)  # end of file: wasyncore's recv closes it
    assert the_map == {}
    assert not linger.expired(0.5)
    assert linger.expired(1.0)


def check_poll2(made: Made) -> None:
    assert _params(wasyncore.poll2) == ["timeout", "map"]
    client = socket.create_connection(("127.0.0.1", made.server.effective_port))
    waitress_adapter.poll(1.0, made.map)  # the listener is readable: accepts
    client.close()
    assert len(waitress_adapter.channels(made.map)) == 1


def check_close_all(made: Made) -> None:
    assert _params(wasyncore.close_all) == ["map", "ignore_all"]
    (trigger,) = waitress_adapter.triggers(made.map)
    made.server.task_dispatcher.shutdown()
    waitress_adapter.close_all(made.map)
    assert made.map == {}
    assert made.server.socket is None or made.server.socket.fileno() == -1
    assert trigger._closed


CHECKS: dict[str, Callable[..., None]] = {
    "server.create_server": check_create_server,
    "server.BaseWSGIServer": check_base_server,
    "BaseWSGIServer._map": check_server_map,
    "BaseWSGIServer.adj": check_server_adj,
    "BaseWSGIServer.family": check_family,
    "BaseWSGIServer.handle_accept": check_handle_accept,
    "BaseWSGIServer.fix_addr": check_fix_addr,
    "BaseWSGIServer.channel_class": check_channel_class,
    "BaseWSGIServer.add_task": check_add_task,
    "BaseWSGIServer.pull_trigger": check_pull_trigger,
    "BaseWSGIServer.trigger": check_trigger,
    "BaseWSGIServer.task_dispatcher": check_task_dispatcher,
    "channel.HTTPChannel": check_http_channel,
    "HTTPChannel.requests": check_requests,
    "HTTPChannel.request": check_request,
    "HTTPChannel.total_outbufs_len": check_total_outbufs_len,
    "HTTPChannel.will_close": check_will_close,
    "HTTPChannel.close_when_flushed": check_close_when_flushed,
    "HTTPChannel.connected": check_connected,
    "HTTPChannel.socket": check_socket,
    "HTTPChannel.adj": check_channel_adj,
    "HTTPChannel.task_class": check_task_class,
    "HTTPChannel.handle_read": check_handle_read,
    "HTTPChannel.handle_close": check_handle_close,
    "HTTPChannel.service": check_service,
    "HTTPChannel.write_soon": check_write_soon,
    "task.Task": check_task,
    "task.WSGITask": check_wsgi_task,
    "task.hop_by_hop": check_hop_by_hop,
    "utilities.build_http_date": check_build_http_date,
    "parser.HTTPRequestParser": check_request_parser,
    "wasyncore.dispatcher": check_dispatcher,
    "wasyncore.poll2": check_poll2,
    "wasyncore.close_all": check_close_all,
}


def test_every_internal_has_a_check() -> None:
    assert list(CHECKS) == list(waitress_adapter.INTERNALS)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CHECKS))
def test_internal(name: str, made: Made, tmp_path: Path) -> None:
    check = CHECKS[name]
    if "tmp_path" in _params(check):
        check(made, tmp_path)
    else:
        check(made)


def test_only_the_adapter_imports_waitress() -> None:
    """Any other module of the project reaches waitress through the adapter (``httpd`` may
    name it in prose)."""
    importers = []
    for path in sorted([*(ROOT / "server").rglob("*.py"), *(ROOT / "authctl").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(name == "waitress" or name.startswith("waitress.") for name in names):
                importers.append(str(path.relative_to(ROOT)))
    assert sorted(set(importers)) == ["server/serve/waitress_adapter.py"]
