"""Request smuggling through each generated proxy config: authctl judges what the app gets.

An adversarial review found that four generated configs let authctl judge a different request
than the one the proxy routes to the app: nginx built ``X-Original-URL`` from the client's Host
(absolute-form targets, ``Host: app:8443?``), HAProxy's Lua glued the raw Host into the judged
URL (``Host: app:8443/static/x?``), Caddy and HAProxy tunnelled ``Upgrade: h2c`` to the app, and
Traefik and Caddy passed a client's ``X-Original-URL`` on to authctl.

Here every variant is sent as exact bytes over TLS (raw HTTP/1.1, and hand-made HTTP/2 frames
where the proxy offers h2) by an anonymous client, through a stack whose app is a recorder in
this process and whose authctl is reached through a recording relay. The oracle, for every
variant and every proxy: each request the app receives has one well-formed Host naming a host
the client could have meant, and a path that authctl allows anonymously for *every* such host
(``public`` is bypass, on ``app`` only ``/static/NAME`` and ``/`` are); no ``Upgrade: h2c``
reaches the app; and no client-sent forwarding header reaches authctl. Controls prove the
recorders see the traffic that should pass.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import ssl
import struct
import threading
import typing as t
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import CONFIG
from tests.e2e.conftest import DOMAIN
from tests.e2e.conftest import PROXIES
from tests.e2e.conftest import Stack
from tests.e2e.conftest import Stacks
from tests.e2e.conftest import build_stack
from tests.e2e.conftest import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

#: ``app`` gets bypass paths of its own: a static folder and its landing page (any query).
APP_BYPASS = """\
[[access_control.rules]]
domain = "app.example.test"
resources = ["^/static/[A-Za-z0-9._-]+([?].*)?$", "^/([?].*)?$"]
policy = "bypass"

"""
ONE_FACTOR_APP = '[[access_control.rules]]\ndomain = "app.example.test"\npolicy = "one_factor"'
SMUGGLING_CONFIG = CONFIG.replace(ONE_FACTOR_APP, APP_BYPASS + ONE_FACTOR_APP)
#: Every client-sent forwarding header carries this; none may reach authctl.
MARKER = "smuggled"
#: A well-formed Host: a name and an optional port.
HOST_RE = re.compile(r"([A-Za-z0-9.-]+)(?::[0-9]{1,5})?")
READ_TIMEOUT = 5.0
#: The snippets that refuse an h2c upgrade with 400. Traefik and Envoy drop the upgrade
#: headers on their own (the oracle checks that the app never sees them).
H2C_REFUSED = ("nginx", "caddy", "haproxy")


# --------------------------------------------------------------------------- recorders


@dataclass
class Seen:
    """One request head as a recorder received it."""

    method: str
    target: str
    headers: list[tuple[str, str]]

    def values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        return [v for n, v in self.headers if n.lower() == name.lower()]


class _Recording(BaseHTTPRequestHandler):
    """Records each request head; subclasses answer."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    seen: list[Seen]
    target_port = 0  # the relay's authctl

    def _record(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append(Seen(self.command, self.path, list(self.headers.items())))
        return body

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


class _Backend(_Recording):
    """The app: records, answers 200 ``backend``."""

    def _answer(self) -> None:
        self._record()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "7")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(b"backend")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer


HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"}


class _Relay(_Recording):
    """Between the proxy and authctl: records what the proxy asks, passes authctl's answer."""

    def _answer(self) -> None:
        body = self._record()
        conn = http.client.HTTPConnection("127.0.0.1", self.target_port, timeout=10)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    conn.putheader(name, value)
            if body:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status)
            for name, value in resp.getheaders():
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except OSError:
            self.send_error(502)
        finally:
            conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _answer


class _Server(ThreadingHTTPServer):
    """A threaded server that stays quiet when a proxy drops a connection."""

    daemon_threads = True

    def handle_error(self, request: t.Any, client_address: t.Any) -> None:
        """A reset or a timeout from the proxy is not the test's business."""


class Recorder:
    """A threaded HTTP/1.1 server in this process, with the list of what it received."""

    def __init__(self, handler: type[_Recording], **attrs: t.Any) -> None:
        self.seen: list[Seen] = []
        self.handler = type("Handler", (handler,), {"seen": self.seen, **attrs})
        self.server = _Server(("127.0.0.1", 0), self.handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop serving and close the listening socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@dataclass
class Rig:
    """A stack whose app is a recorder and whose authctl is behind a recording relay."""

    stack: Stack
    backend: Recorder
    relay: Recorder
    closers: list[t.Callable[[], None]] = field(default_factory=list)

    @property
    def port(self) -> int:
        """The proxy's TLS port."""
        return self.stack.proxy_port

    def name(self, sub: str) -> str:
        """``sub.example.test:PORT``."""
        return f"{sub}.{DOMAIN}:{self.port}"

    def clear(self) -> None:
        """Forget what the recorders saw."""
        self.backend.seen.clear()
        self.relay.seen.clear()


@pytest.fixture(scope="module", params=PROXIES)
def rig(request: pytest.FixtureRequest, stacks: Stacks) -> Iterator[Rig]:
    """One proxy with its own recorders and config, for every variant of this module."""
    proxy: str = request.param
    backend = Recorder(_Backend)
    relay = Recorder(_Relay)
    # picked after the recorders hold their ports, so authctl cannot be given one of them
    authctl_port = free_port()
    relay.handler.target_port = authctl_port
    stack = build_stack(
        proxy,
        stacks.base / f"smuggling-{proxy}",
        backend.port,
        config=SMUGGLING_CONFIG,
        authctl_port=authctl_port,
        proxy_authctl_port=relay.port,
    )
    try:
        yield Rig(stack, backend, relay)
    finally:
        stack.stop()
        backend.close()
        relay.close()


# --------------------------------------------------------------------------- clients


def tls(rig: Rig, sni: str, alpn: list[str]) -> ssl.SSLSocket:
    """A TLS connection to the proxy with ``sni``, the certificate checked for it."""
    context = ssl.create_default_context(cafile=str(rig.stack.ca_file))
    context.set_alpn_protocols(alpn)
    sock = socket.create_connection(("127.0.0.1", rig.port), timeout=READ_TIMEOUT)
    try:
        return context.wrap_socket(sock, server_hostname=sni)
    except BaseException:
        sock.close()
        raise


def read_response(sock: ssl.SSLSocket) -> int:
    """Read one HTTP/1.1 response (head and body); its status, or 0 when closed unanswered."""
    data = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if not match:
        return 0
    status = int(match.group(1))
    length = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
    chunked = re.search(rb"\r\ntransfer-encoding: *chunked", head, re.I)
    with contextlib.suppress(OSError):
        if length:
            while len(rest) < int(length.group(1)):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
        elif chunked:
            while not rest.endswith(b"0\r\n\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
        elif status not in (101, 204, 304):
            while sock.recv(65536):
                pass
    return status


def send_h1(rig: Rig, sni: str, head: list[str]) -> int:
    """Send the request head lines as they are (CRLF-joined) and read the answer."""
    raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
    with tls(rig, sni, ["http/1.1"]) as sock:
        sock.sendall(raw)
        return read_response(sock)


def _hpack_int(value: int, prefix: int, first: int) -> bytes:
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def _hpack(headers: list[tuple[str, str]]) -> bytes:
    """Literal header fields, never indexed, no Huffman: exactly the bytes we mean."""
    out = b""
    for name, value in headers:
        out += b"\x10"
        for text in (name.encode("latin-1"), value.encode("latin-1")):
            out += _hpack_int(len(text), 7, 0) + text
    return out


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    head = struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream)
    return head + payload


def send_h2(rig: Rig, sni: str, headers: list[tuple[str, str]]) -> None:
    """One HTTP/2 request (HEADERS with END_STREAM); waits for its answer, reset or GOAWAY."""
    with tls(rig, sni, ["h2", "http/1.1"]) as sock:
        assert sock.selected_alpn_protocol() == "h2", f"{rig.stack.proxy} offered no HTTP/2"
        block = _hpack(headers)
        sock.sendall(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b"") + _frame(1, 0x5, 1, block)
        )
        buffer = b""
        with contextlib.suppress(OSError):
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                while len(buffer) >= 9:
                    length = int.from_bytes(buffer[:3], "big")
                    if len(buffer) < 9 + length:
                        break
                    kind, flags = buffer[3], buffer[4]
                    stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                    buffer = buffer[9 + length :]
                    if kind == 4 and not flags & 1:
                        sock.sendall(_frame(4, 1, 0, b""))  # SETTINGS ACK
                    if kind == 7 or (kind == 3 and stream == 1):
                        return  # GOAWAY, or our stream reset
                    if stream == 1 and kind in (0, 1) and flags & 1:
                        return  # the answer, complete


# --------------------------------------------------------------------------- the oracle


def bypass(host: str, target: str) -> bool:
    """Would authctl let an anonymous client reach ``target`` on ``host``? (the config above)"""
    path = urlsplit(target).path if "://" in target else target.split("?", 1)[0]
    if host == f"public.{DOMAIN}":
        return True
    if host == f"app.{DOMAIN}":
        return path == "/" or re.fullmatch(r"/static/[A-Za-z0-9._-]+", path) is not None
    return False


def problems_at_the_app(rig: Rig, hosts: t.Collection[str]) -> list[str]:
    """What the app got that it should not have: a Host that is not exactly one well-formed
    name of ``hosts``, a path authctl does not allow on each of ``hosts``, an h2c upgrade."""
    found = []
    for seen in rig.backend.seen:
        host_lines = seen.values("Host")
        match = HOST_RE.fullmatch(host_lines[0]) if len(host_lines) == 1 else None
        if match is None or match.group(1).lower() not in hosts:
            found.append(f"app got Host {host_lines} for {seen}")
        for candidate in hosts:
            if not bypass(candidate, seen.target):
                found.append(f"app got {seen.target!r}, not allowed on {candidate}: {seen}")
        for upgrade in seen.values("Upgrade") + seen.values("HTTP2-Settings"):
            if "h2" in upgrade.lower():
                found.append(f"app got an h2c upgrade: {seen}")
    return found


def problems_at_authctl(rig: Rig) -> list[str]:
    """Client-sent text (the marker) that reached authctl."""
    return [
        f"client's {name}: {value} reached authctl"
        for seen in rig.relay.seen
        for name, value in [*seen.headers, ("request line", seen.target)]
        if MARKER in value
    ]


def check(rig: Rig, hosts: t.Collection[str]) -> None:
    """Fail with every problem found (plain text: short, and cheap for pytest to report)."""
    found = problems_at_the_app(rig, hosts) + problems_at_authctl(rig)
    if found:
        pytest.fail("\n".join(found), pytrace=False)


# --------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    """One attack: SNI, request line, header lines, the hosts the client could mean."""

    sni: str
    target: str
    headers: tuple[str, ...]
    hosts: tuple[str, ...]
    refused: bool = True  # nothing at all may reach the app
    method: str = "GET"


A = "app"
P = "public"


def _h(template: str, rig: Rig) -> str:
    """``{app}``/``{public}`` -> ``app.example.test:PORT``, ``{port}`` -> PORT."""
    return template.format(app=rig.name(A), public=rig.name(P), port=rig.port, d=DOMAIN)


VARIANTS: dict[str, Variant] = {
    # absolute-form request targets naming another host than Host: the target's host is the
    # request's (RFC 9112 3.2.2), so the app may only get that host, if anything
    "absolute_app_host_public": Variant(
        P, "https://{app}/admin", ("Host: {public}",), (A,), refused=False
    ),
    "absolute_public_host_app": Variant(
        A, "https://{public}/admin", ("Host: {app}",), (P,), refused=False
    ),
    "absolute_http_scheme": Variant(
        P, "http://{app}/admin", ("Host: {public}",), (A,), refused=False
    ),
    "absolute_userinfo": Variant(
        P, "https://{public}@{app}/admin", ("Host: {public}",), (A,), refused=False
    ),
    "absolute_no_host": Variant(A, "https://{app}/admin", (), (A,)),
    # Host values that carry URL syntax
    "host_query": Variant(A, "/admin", ("Host: {app}?",), (A,)),
    "host_query_no_port": Variant(A, "/admin", ("Host: app.{d}?",), (A,)),
    "host_path_query": Variant(A, "/admin", ("Host: {app}/static/x?",), (A,)),
    "host_path": Variant(A, "/admin", ("Host: {app}/static/x",), (A,)),
    "host_fragment": Variant(A, "/admin", ("Host: {app}#",), (A,)),
    "host_path_fragment": Variant(A, "/admin", ("Host: {app}/static/x#",), (A,)),
    "host_userinfo_public_at_app": Variant(A, "/admin", ("Host: {public}@{app}",), (A, P)),
    "host_userinfo_app_at_public": Variant(A, "/admin", ("Host: {app}@{public}",), (A, P)),
    "host_bad_port": Variant(A, "/admin", ("Host: app.{d}:{port}x",), (A,)),
    "host_two_ports": Variant(A, "/admin", ("Host: {app}:1",), (A,)),
    "host_backslash": Variant(A, "/admin", ("Host: {app}\\static\\x",), (A,)),
    "host_space": Variant(A, "/admin", ("Host: app.{d} public.{d}",), (A, P)),
    # duplicate and comma-joined Host headers
    "host_duplicate_public_first": Variant(P, "/admin", ("Host: {public}", "Host: {app}"), (A, P)),
    "host_duplicate_app_first": Variant(A, "/admin", ("Host: {app}", "Host: {public}"), (A, P)),
    "host_comma_public_first": Variant(P, "/admin", ("Host: {public}, {app}",), (A, P)),
    "host_comma_app_first": Variant(A, "/admin", ("Host: {app},{public}",), (A, P)),
    # SNI names one site, Host another: routed and judged by Host, consistently
    "sni_public_host_app": Variant(P, "/admin", ("Host: {app}",), (A,), refused=False),
    "sni_app_host_public": Variant(A, "/admin", ("Host: {public}",), (P,), refused=False),
    # client-sent forwarding headers naming the bypass site or path
    "forwarding_headers": Variant(
        A,
        "/admin",
        (
            "Host: {app}",
            "X-Original-URL: https://{public}/" + MARKER,
            "X-Original-Method: " + MARKER,
            "X-Original-URI: /static/" + MARKER,
            "X-Original-Host: public." + MARKER,
            "X-Forwarded-Host: public.{d}." + MARKER,
            "X-Forwarded-Uri: /static/" + MARKER,
            "X-Forwarded-Proto: " + MARKER,
            "X-Forwarded-Method: " + MARKER,
            "X-Forwarded-Prefix: /static/" + MARKER,
            "X-Forwarded-Port: 1" + MARKER,
            "Forwarded: host=public.{d};proto=" + MARKER,
        ),
        (A,),
        refused=False,
    ),
    "forwarding_headers_on_bypass": Variant(
        P,
        "/x",
        (
            "Host: {public}",
            "X-Original-URL: https://{app}/" + MARKER,
            "X-Forwarded-Uri: /" + MARKER,
        ),
        (P,),
        refused=False,
    ),
    # h2c upgrade on allowed requests: a tunnel to the app that authctl never sees into
    "h2c_upgrade": Variant(
        P,
        "/x",
        (
            "Host: {public}",
            "Upgrade: h2c",
            "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
            "Connection: Upgrade, HTTP2-Settings",
        ),
        (P,),
        refused=False,
    ),
    "h2c_upgrade_uppercase_static": Variant(
        A,
        "/static/x",
        (
            "Host: {app}",
            "Upgrade: H2C",
            "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
            "Connection: HTTP2-Settings, Upgrade",
        ),
        (A,),
        refused=False,
    ),
    "h2c_upgrade_second_line": Variant(
        P,
        "/x",
        (
            "Host: {public}",
            "Upgrade: websocket",
            "Upgrade: h2c",
            "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
            "Connection: Upgrade, HTTP2-Settings",
        ),
        (P,),
        refused=False,
    ),
    "h2c_upgrade_list": Variant(
        P,
        "/x",
        (
            "Host: {public}",
            "Upgrade: h2c, websocket",
            "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
            "Connection: Upgrade, HTTP2-Settings",
        ),
        (P,),
        refused=False,
    ),
}

#: HTTP/2 requests: (SNI, header list in order, the hosts the client could mean).
H2_VARIANTS: dict[str, tuple[str, tuple[tuple[str, str], ...], tuple[str, ...]]] = {
    "h2_authority_path_query": (
        A, ((":method", "GET"), (":scheme", "https"), (":authority", "{app}/static/x?"),
            (":path", "/admin")), (A,),
    ),
    "h2_authority_query": (
        A, ((":method", "GET"), (":scheme", "https"), (":authority", "{app}?"),
            (":path", "/admin")), (A,),
    ),
    "h2_host_path_query": (
        A, ((":method", "GET"), (":scheme", "https"), (":path", "/admin"),
            ("host", "{app}/static/x?")), (A,),
    ),
    "h2_authority_public_host_app": (
        P, ((":method", "GET"), (":scheme", "https"), (":authority", "{public}"),
            (":path", "/admin"), ("host", "{app}")), (P,),
    ),
    "h2_authority_app_host_public": (
        A, ((":method", "GET"), (":scheme", "https"), (":authority", "{app}"),
            (":path", "/admin"), ("host", "{public}")), (A,),
    ),
    "h2_authority_userinfo": (
        A, ((":method", "GET"), (":scheme", "https"), (":authority", "{public}@{app}"),
            (":path", "/admin")), (A, P),
    ),
    "h2_forwarding_headers": (
        A, ((":method", "GET"), (":scheme", "https"), (":authority", "{app}"),
            (":path", "/admin"), ("x-original-url", "https://{public}/" + MARKER),
            ("x-forwarded-host", "public.{d}." + MARKER),
            ("x-forwarded-uri", "/static/" + MARKER)), (A,),
    ),
}  # fmt: skip


def _sni(rig: Rig, sub: str) -> str:
    return f"{sub}.{DOMAIN}"


def _full(hosts: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{h}.{DOMAIN}" for h in hosts)


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("sub", "path", "reaches"),
    [(P, "/x", True), (A, "/static/x", True), (A, "/?q=1", True), (A, "/admin", False)],
)
def test_controls(rig: Rig, sub: str, path: str, reaches: bool) -> None:
    """Plain requests: bypass paths reach the app (the recorders work), /admin does not; the
    proxy asks authctl through the relay."""
    rig.clear()
    head = [f"GET {path} HTTP/1.1", f"Host: {rig.name(sub)}", "Accept: text/html",
            "Connection: close"]  # fmt: skip
    status = send_h1(rig, _sni(rig, sub), head)
    assert [s.target for s in rig.backend.seen] == ([path] if reaches else []), status
    assert status == (200 if reaches else 302)
    if sub == A:
        assert rig.relay.seen, "the proxy did not ask authctl through the relay"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_http1_variant(rig: Rig, name: str) -> None:
    """An anonymous HTTP/1.1 attack reaches the app only where authctl allows it."""
    variant = VARIANTS[name]
    rig.clear()
    head = [f"{variant.method} {_h(variant.target, rig)} HTTP/1.1"]
    head += [_h(line, rig) for line in variant.headers]
    if not any(line.lower().startswith("connection:") for line in head):
        head.append("Connection: close")
    status = send_h1(rig, _sni(rig, variant.sni), head)
    check(rig, _full(variant.hosts))
    if variant.refused and rig.backend.seen:
        pytest.fail(f"{name}: answered {status}, and the app got {rig.backend.seen}")
    if name.startswith("h2c") and rig.stack.proxy in H2C_REFUSED:
        assert status == 400, status
        assert not rig.backend.seen


#: The generated configs that offer HTTP/2 (nginx's and Envoy's listen with HTTP/1.1 only):
#: the HTTP/2 tests run on these, rather than being generated and skipped for the others.
H2_PROXIES = ("caddy", "haproxy", "traefik")


@pytest.mark.parametrize("rig", H2_PROXIES, indirect=True, scope="module")
@pytest.mark.parametrize("name", list(H2_VARIANTS))
def test_http2_variant(rig: Rig, name: str) -> None:
    """The same over HTTP/2, where the proxy offers it (Host/:authority mismatches, URL syntax
    in :authority, client forwarding headers)."""
    sni, headers, hosts = H2_VARIANTS[name]
    rig.clear()
    send_h2(rig, _sni(rig, sni), [(n, _h(v, rig)) for n, v in headers])
    check(rig, _full(hosts))


@pytest.mark.parametrize("rig", H2_PROXIES, indirect=True, scope="module")
def test_http2_control(rig: Rig) -> None:
    """A plain HTTP/2 request to a bypass site reaches the app (the h2 client works)."""
    rig.clear()
    headers = [(":method", "GET"), (":scheme", "https"), (":authority", rig.name(P)),
               (":path", "/x")]  # fmt: skip
    send_h2(rig, _sni(rig, P), headers)
    assert [s.target for s in rig.backend.seen] == ["/x"]
