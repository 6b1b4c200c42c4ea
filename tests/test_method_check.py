"""The method of the original request must match ``^[A-Z]+$`` (SPEC §7.5, Authelia's
``hasInvalidMethodCharacters``): anything else is malformed input, 400 (``/api/verify`` 401,
auth-request 403), never a redirect and never an allow, on every endpoint and whichever
header (or the request line) the endpoint reads it from.

Before, the method was stripped and upper-cased, so ``get``, `` GET`` or ``GET\\r`` were
judged as GET: a rule with ``methods = ["GET"]`` then decided a request the application may
read as another method (or as a malformed one). The target here is a bypass URL, so a method
that slipped through would show as a 200.
"""

from __future__ import annotations

import logging
import typing as t

import pytest

from server.core import blocking
from server.core.forwarded import METHOD_MAX
from server.core.forwarded import valid_method
from tests.apphelpers import Harness
from tests.apphelpers import build
from tests.conftest import Clock

URL = "https://public.example.com/"  # bypass: a valid method gets 200

#: Methods that must be refused, with why.
BAD = {
    "lower": "get",
    "mixed": "Get",
    "empty": "",
    "leading-space": " GET",
    "trailing-space": "GET ",
    "inner-space": "G ET",
    "tab": "GET\t",
    "cr": "GET\r",
    "lf": "GET\n",
    "crlf": "GET\r\n",
    "nul": "GET\x00",
    "digit": "G3T",
    "hyphen": "M-SEARCH",
    "underscore": "GET_X",
    "latin1": "G\xc9T",  # É as a latin-1 header value
    "utf8-bytes": "G\xc3\x89T",  # É sent as UTF-8, as WSGI hands it over
    "fullwidth": "\uff27\uff25\uff34",  # fullwidth GET: upper() and isalpha() say yes
    "dotless-i": "\u0131",  # dotless i upper-cases to ASCII I
    "long-s": "\u017f",  # long s upper-cases to ASCII S
    "too-long": "A" * (METHOD_MAX + 1),
    "very-long": "GET" * 10_000,
}

GOOD = ["GET", "HEAD", "POST", "DELETE", "PROPFIND", "UPDATEREDIRECTREF", "A", "A" * METHOD_MAX]

#: (endpoint path, where the method comes from, the refusal status).
ENDPOINTS = [
    ("/api/authz/forward-auth", "HTTP_X_FORWARDED_METHOD", 400),
    ("/api/authz/auth-request", "HTTP_X_ORIGINAL_METHOD", 403),
    ("/api/authz/ext-authz/", "REQUEST_METHOD", 400),
    ("/api/verify", "HTTP_X_FORWARDED_METHOD", 401),
    ("/api/verify", "HTTP_X_ORIGINAL_METHOD", 401),
    ("/api/verify", "REQUEST_METHOD", 401),
]
ENDPOINT_IDS = [
    "forward-auth", "auth-request", "ext-authz", "verify-forwarded", "verify-original",
    "verify-request-line",
]  # fmt: skip


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    """One app for the module: every request here is stateless."""
    return build(tmp_path_factory.mktemp("method"), Clock(), users_interval=3600)


def environ(path: str, source: str, method: str) -> dict[str, t.Any]:
    """A raw WSGI environ (no webob: it would refuse some of these values) for ``URL`` with
    ``method`` in ``source``; every other source of a method is absent or GET."""
    env: dict[str, t.Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "HTTP_ACCEPT": "text/html",
        "HTTP_HOST": "public.example.com",
    }
    if path == "/api/authz/auth-request" or source == "HTTP_X_ORIGINAL_METHOD":
        env["HTTP_X_ORIGINAL_URL"] = URL
    else:
        env.update(
            HTTP_X_FORWARDED_PROTO="https",
            HTTP_X_FORWARDED_HOST="public.example.com",
            HTTP_X_FORWARDED_URI="/",
        )
    env[source] = method
    return env


def call(h: Harness, env: dict[str, t.Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """The pool's answer to ``env``."""
    got: list[t.Any] = []
    body = h.app(env, lambda status, headers: got.extend([status, headers]))
    return int(got[0].split()[0]), got[1], b"".join(body)


#: Every (endpoint, bad method) pair, but an empty header on /api/verify: that one falls
#: back to the next source (test_verify_reads_the_first_present_method).
REFUSALS = [
    pytest.param(path, source, status, method, id=f"{name}-{endpoint}")
    for (path, source, status), endpoint in zip(ENDPOINTS, ENDPOINT_IDS, strict=True)
    for name, method in BAD.items()
    if method or not (path == "/api/verify" and source != "REQUEST_METHOD")
]


@pytest.mark.parametrize(("path", "source", "status", "method"), REFUSALS)
def test_bad_method_is_refused(
    h: Harness, path: str, source: str, status: int, method: str
) -> None:
    """Every endpoint refuses a method outside ^[A-Z]+$ with its bad-request status."""
    code, headers, _ = call(h, environ(path, source, method))
    assert code == status
    assert not any(name in ("Location", "Remote-User") for name, _ in headers)


@pytest.mark.parametrize(("path", "source", "status"), ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("method", GOOD)
def test_upper_case_method_is_judged(
    h: Harness, path: str, source: str, status: int, method: str
) -> None:
    """Upper-case ASCII letters only, up to METHOD_MAX: the rules decide (here a bypass)."""
    code, headers, _ = call(h, environ(path, source, method))
    assert code == 200, status
    assert ("Remote-User", "") in headers


@pytest.mark.parametrize(
    ("forwarded", "original", "request_line", "status"),
    [
        ("", "GET", "get", 200),  # an empty header is no header: X-Original-Method decides
        ("", "", "GET", 200),
        ("", "", "get", 401),
        ("", "get", "GET", 401),  # the first present header decides, never a later one
        ("get", "GET", "GET", 401),
        ("GET", "get", "get", 200),
    ],
)
def test_verify_reads_the_first_present_method(
    h: Harness, forwarded: str, original: str, request_line: str, status: int
) -> None:
    """/api/verify: X-Forwarded-Method, else X-Original-Method, else the request line; the
    one it reads must be valid, and a valid later one never rescues an invalid first."""
    env = environ("/api/verify", "REQUEST_METHOD", request_line)
    env["HTTP_X_FORWARDED_METHOD"] = forwarded
    env["HTTP_X_ORIGINAL_METHOD"] = original
    assert call(h, env)[0] == status


def test_bad_method_refused_for_a_signed_in_user(h: Harness) -> None:
    """A valid session does not make a malformed method acceptable."""
    cookie = h.login("alice")
    for path, source, status in ENDPOINTS:
        env = environ(path, source, "get")
        env["HTTP_COOKIE"] = cookie
        env["HTTP_HOST"] = "app.example.com"
        if "HTTP_X_FORWARDED_HOST" in env:
            env["HTTP_X_FORWARDED_HOST"] = "app.example.com"
        if "HTTP_X_ORIGINAL_URL" in env:
            env["HTTP_X_ORIGINAL_URL"] = "https://app.example.com/"
        assert call(h, env)[0] == status, (path, source)
        env[source] = "GET"
        assert call(h, env)[0] == 200, (path, source)


def test_refusal_is_logged_without_the_raw_value(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """The log names the header and shows a short, escaped excerpt, never 30 KB of method."""
    with caplog.at_level(logging.INFO, logger="authctl.authz"):
        call(h, environ("/api/authz/forward-auth", "HTTP_X_FORWARDED_METHOD", "GET" * 10_000))
        call(h, environ("/api/authz/auth-request", "HTTP_X_ORIGINAL_METHOD", "GET\r\nX: y"))
    reasons = [str(r.__dict__["fields"]["reason"]) for r in caplog.records]
    assert reasons[0].startswith("invalid X-Forwarded-Method 'GETGETGET")
    assert len(reasons[0]) < 120
    assert reasons[1].startswith("invalid X-Original-Method 'GET\\r\\nX: y'")
    assert all(r.__dict__["fields"]["decision"] == "bad_request" for r in caplog.records)


@pytest.mark.parametrize(("path", "source", "status"), ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("method", [*BAD.values(), "GET", "PROPFIND"])
def test_inline_gives_the_pool_answer(
    h: Harness, path: str, source: str, status: int, method: str
) -> None:
    """The inline fast path never answers differently: it refuses the same methods (by
    leaving them to the pool) and answers the valid ones as the pool does."""
    decisions = logging.getLogger("authctl.authz")
    before = decisions.level
    decisions.setLevel(logging.WARNING)  # nothing logged: any answer may be inline
    try:
        with blocking.forbidden:
            reply = h.app.decide_inline(environ(path, source, method))
        want = call(h, environ(path, source, method))
    finally:
        decisions.setLevel(before)
    if reply is None:
        assert not valid_method(method) or want[0] != 200
        return
    assert (int(reply[0].split()[0]), reply[1], reply[2]) == want
    assert valid_method(method) or (path == "/api/verify" and method == "")  # falls back


@pytest.mark.parametrize("method", [*BAD.values(), "G\u0130T", "get\u200b"])
def test_valid_method_is_exactly_the_pattern(method: str) -> None:
    """The predicate itself: 1 to METHOD_MAX characters, each in A-Z (0x41-0x5A)."""
    assert not valid_method(method)


@pytest.mark.parametrize("method", GOOD)
def test_valid_method_accepts_upper_case(method: str) -> None:
    assert valid_method(method)


def test_valid_method_refuses_non_strings() -> None:
    for value in (None, b"GET", 1, ["GET"]):
        assert not valid_method(value)


@pytest.mark.parametrize("value", [b"GET", 7, None])
def test_request_line_method_of_another_type_is_refused(h: Harness, value: object) -> None:
    """A WSGI server that hands over something other than a str is refused, not judged."""
    env = environ("/api/authz/ext-authz/", "REQUEST_METHOD", "GET")
    env["REQUEST_METHOD"] = value
    assert call(h, env)[0] == 400
