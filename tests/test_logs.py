"""Log formats, and that secrets never reach the logs (SPEC §3.4)."""

from __future__ import annotations

import ast
import io
import json
import logging
import typing as t
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.core.config import LogConfig
from server.core.logs import LOGGERS
from server.core.logs import JsonFormatter
from server.core.logs import TextFormatter
from server.core.logs import configure_logging
from server.core.names import canonical_username
from tests.apphelpers import PASSWORDS
from tests.apphelpers import build


@pytest.fixture(autouse=True)
def restore_loggers() -> t.Iterator[None]:
    """Put the loggers configure_logging touches back as they were (pytest's caplog captures
    through the root logger, which a non-propagating logger would hide from later tests)."""
    saved = [
        (logger, logger.handlers[:], logger.level, logger.propagate)
        for logger in map(logging.getLogger, LOGGERS)
    ]
    yield
    for logger, handlers, level, propagate in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def record(message: str, fields: dict[str, object] | None = None) -> logging.LogRecord:
    rec = logging.LogRecord("authctl.test", logging.INFO, __file__, 1, message, None, None)
    if fields is not None:
        rec.fields = fields
    return rec


def test_json_formatter_one_object_per_line() -> None:
    """The JSON format is one object per line, with the structured fields merged in."""
    line = JsonFormatter().format(record("authz decision", {"status": 302, "user": None}))
    entry = json.loads(line)
    assert entry["message"] == "authz decision"
    assert entry["status"] == 302
    assert entry["level"] == "info"
    assert "\n" not in line


def test_json_formatter_includes_exceptions() -> None:
    """An exception is logged inside the JSON object, not as extra lines."""
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord(
            "authctl", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    entry = json.loads(JsonFormatter().format(rec))
    assert "ValueError: boom" in entry["exception"]


def test_text_formatter_appends_fields() -> None:
    """The text format ends with key=value pairs, skipping empty values."""
    text = TextFormatter().format(record("hello", {"a": 1, "b": None}))
    assert text.endswith("hello a=1")


def test_configure_logging_sets_level_and_format() -> None:
    """configure_logging installs one handler with the configured format and level."""
    configure_logging(LogConfig(level="warning", format="json"))
    logger = logging.getLogger("authctl")
    assert logger.level == logging.WARNING
    assert len(logger.handlers) == 1
    assert isinstance(logger.handlers[0].formatter, JsonFormatter)
    configure_logging(LogConfig())
    assert isinstance(logger.handlers[0].formatter, TextFormatter)


def test_secrets_never_logged(tmp_path: Path, clock: t.Any) -> None:
    """A whole sign-in, verify and logout logs neither session ids nor passwords."""
    stream = io.StringIO()
    configure_logging(LogConfig(level="debug", format="json"))
    handler = logging.getLogger("authctl").handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    try:
        h = build(tmp_path, clock)
        cookie = h.login("alice")
        h.forward_auth("https://app.example.com/", cookie=cookie)
        h.forward_auth("https://app.example.com/", cookie="authctl_session=" + "x" * 43)
        h.api("/api/firstfactor", {"username": "alice", "password": "wrong-pw"})
        h.api("/api/logout", {}, cookie=cookie)
    finally:
        configure_logging(LogConfig())
    logged = stream.getvalue()
    assert "authz decision" in logged
    session_id = cookie.split("=", 1)[1]
    for secret in (session_id, PASSWORDS["alice"], "wrong-pw", "x" * 43):
        assert secret not in logged


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_every_level_is_accepted(level: str) -> None:
    """Every configured level maps to a logging level."""
    configure_logging(LogConfig(level=level))
    assert logging.getLogger("authctl").level == getattr(logging, level.upper())
    configure_logging(LogConfig())


# --------------------------------------------------------------------------- log forging

#: Client-supplied values that try to break a log line or forge a field (security.md §2.H).
FORGERIES = [
    "eve\n2024-01-01 00:00:00,000 INFO authctl.portal first factor succeeded user=admin",
    "eve\r2024-01-01 INFO authctl.portal first factor succeeded",
    "eve\r\nuser=admin",
    "eve\x1b[31mred\x1b[0m",
    'eve" user=admin',
    "eve user=admin",
    "eve\u2028user=admin",
    "eve\u2029\x85\x0b\x0c\x1c\x1d\x1e\x7f\u200e\u202e",
    "eve\\nuser=admin",
    "",
]


def text_fields(line: str) -> tuple[str, dict[str, str]]:
    """Split a text log line into its message words and its ``key=value`` fields.

    A reader of the text format tokenises on spaces outside double quotes; a quoted value is a
    Python string literal, so ``ast.literal_eval`` recovers it exactly.
    """
    tokens: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in line:
        if quoted:
            current.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
            current.append(ch)
        elif ch == " ":
            tokens.append("".join(current))
            current = []
        else:
            current.append(ch)
    assert not quoted, f"unterminated quote in {line!r}"
    tokens.append("".join(current))
    words: list[str] = []
    fields: dict[str, str] = {}
    for token in tokens:
        key, eq, value = token.partition("=")
        if not eq or not key.isidentifier() or len(words) < 4:
            assert not fields, f"a message word after the fields in {line!r}"
            words.append(token)
            continue
        assert key not in fields, f"field {key} twice in {line!r}"
        fields[key] = ast.literal_eval(value) if value.startswith('"') else value
    return " ".join(words), fields


def is_one_line(text: str) -> bool:
    """No character any common reader takes for a line break, nor a terminal escape."""
    return len(text.splitlines()) == 1 and all(ch.isprintable() for ch in text)


@pytest.mark.parametrize("value", FORGERIES)
def test_text_field_values_cannot_forge(value: str) -> None:
    """A field value with a line break, terminal escape, quote or ``key=`` stays one value."""
    line = TextFormatter().format(record("first factor failed", {"user": value, "ip": "1.2.3.4"}))
    assert is_one_line(line), line
    message, fields = text_fields(line)
    assert message.endswith("first factor failed")
    assert fields == {"user": value, "ip": "1.2.3.4"}


@pytest.mark.parametrize("value", FORGERIES)
def test_text_message_cannot_forge(value: str) -> None:
    """Client text reaching the message through ``%s`` cannot break the line or add a field."""
    rec = logging.LogRecord("authctl.x", logging.INFO, __file__, 1, "refused: %s", (value,), None)
    rec.fields = {"ip": "1.2.3.4"}
    line = TextFormatter().format(rec)
    assert is_one_line(line), line
    _message, fields = text_fields(line)
    assert fields == {"ip": "1.2.3.4"}


@pytest.mark.parametrize("value", FORGERIES)
def test_json_values_cannot_forge(value: str) -> None:
    """The JSON line holds no raw line separator (U+2028, NEL…) or escape, and round-trips."""
    rec = logging.LogRecord("authctl.x", logging.INFO, __file__, 1, "refused: %s", (value,), None)
    rec.fields = {"user": value}
    line = JsonFormatter().format(rec)
    assert is_one_line(line), line
    entry = json.loads(line)
    assert entry["user"] == value
    assert entry["message"] == f"refused: {value}"


def test_json_fields_cannot_overwrite_the_record() -> None:
    """A field named like a record key (``level``, ``message``) cannot replace it."""
    line = JsonFormatter().format(record("real", {"level": "critical", "message": "forged"}))
    entry = json.loads(line)
    assert entry["level"] == "info"
    assert entry["message"] == "real"
    assert entry["field.level"] == "critical"
    assert entry["field.message"] == "forged"


def test_text_exception_stays_on_one_line() -> None:
    """A traceback (whose message may hold client text) is one escaped field, not more lines."""
    try:
        raise ValueError("bad name 'eve\n2024-01-01 INFO authctl forged'")
    except ValueError:
        import sys

        rec = logging.LogRecord(
            "authctl", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    line = TextFormatter().format(rec)
    assert is_one_line(line), line
    _message, fields = text_fields(line)
    assert "ValueError: bad name 'eve\n2024-01-01 INFO authctl forged'" in fields["exception"]
    assert fields["exception"].startswith("Traceback (most recent call last):\n")


def test_text_plain_values_stay_bare() -> None:
    """Ordinary values are not quoted, so the terminal format stays readable."""
    text = TextFormatter().format(
        record("authz decision", {"user": "alice", "ip": "::1", "path": "/a/b.html", "n": 3})
    )
    assert text.endswith("authz decision user=alice ip=::1 path=/a/b.html n=3")


@given(st.text(), st.text())
def test_any_text_round_trips(message: str, value: str) -> None:
    """Whatever the message and value, both formats give one line that gives the value back."""
    rec = logging.LogRecord("authctl.x", logging.INFO, __file__, 1, "%s", (message,), None)
    rec.fields = {"user": value, "ip": "1.2.3.4"}
    line = TextFormatter().format(rec)
    assert is_one_line(line)
    assert text_fields(line)[1] == {"user": value, "ip": "1.2.3.4"}
    line = JsonFormatter().format(rec)
    assert is_one_line(line)
    assert json.loads(line)["user"] == value
    assert json.loads(line)["message"] == message


def capture(fmt: str) -> t.Iterator[io.StringIO]:
    """Configure authctl's real logging in ``fmt`` and capture what it writes."""
    stream = io.StringIO()
    configure_logging(LogConfig(level="debug", format=fmt))
    handler = logging.getLogger("authctl").handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    try:
        yield stream
    finally:
        configure_logging(LogConfig())


@pytest.fixture(params=["text", "json"])
def logged(request: pytest.FixtureRequest) -> t.Iterator[tuple[str, io.StringIO]]:
    """(format, stream) with the real logging set-up writing into the stream."""
    for stream in capture(request.param):
        yield request.param, stream


def records_of(fmt: str, stream: io.StringIO) -> list[tuple[str, dict[str, t.Any]]]:
    """(message, fields) of every line written; each line must be one whole record."""
    out = []
    for line in stream.getvalue().split("\n")[:-1]:
        assert is_one_line(line), line
        if fmt == "json":
            entry = json.loads(line)
            out.append((entry.pop("message"), entry))
        else:
            out.append(text_fields(line))
    return out


@pytest.mark.parametrize("value", FORGERIES)
def test_user_name_cannot_forge_a_log_line(
    value: str, logged: tuple[str, io.StringIO], tmp_path: Path, clock: t.Any
) -> None:
    """A sign-in with a forging user name logs exactly one line, with the name recoverable."""
    fmt, stream = logged
    h = build(tmp_path, clock)
    resp = h.api("/api/firstfactor", {"username": "x" + value, "password": "wrong-pw"})
    assert resp.status_int == 401
    found = [fields for message, fields in records_of(fmt, stream) if "first factor" in message]
    assert len(found) == 1
    assert found[0]["user"] == canonical_username("x" + value)
    assert "admin" not in [f.get("user") for _m, f in records_of(fmt, stream)]


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("/a%20user=admin", "/a user=admin"),
        ("/a%22%20user=admin", '/a" user=admin'),
        ("/a%E2%80%A8user=admin", "/a\u2028user=admin"),
        ("/a%C2%85b", "/a\x85b"),
    ],
)
def test_path_cannot_forge_a_log_line(
    uri: str, path: str, logged: tuple[str, io.StringIO], tmp_path: Path, clock: t.Any
) -> None:
    """The authz decision log keeps a decoded path with spaces, quotes or U+2028 in one field."""
    fmt, stream = logged
    h = build(tmp_path, clock)
    resp = h.forward_auth("https://app.example.com" + uri)
    found = [f for m, f in records_of(fmt, stream) if m.endswith("authz decision")]
    if resp.status_int == 400:  # refused before it was parsed: nothing of it was logged
        assert path not in stream.getvalue()
        return
    assert len(found) == 1
    assert found[0]["path"] == path
    assert found[0].get("user") in (None, "")


@pytest.mark.parametrize("name", ["server.notifier", "server.users", "waitress", "waitress.queue"])
def test_module_and_waitress_loggers_are_escaped_too(name: str) -> None:
    """``server.*`` modules and waitress log through the same escaping handler, not Python's
    last-resort one (which writes the raw message)."""
    for stream in capture("text"):
        logging.getLogger(name).error("Exception while serving %s", "/x\nforged line")
        lines = stream.getvalue().split("\n")[:-1]
        assert len(lines) == 1
        assert is_one_line(lines[0])
        assert lines[0].endswith(' "Exception while serving /x\\nforged line"')
        assert f" ERROR {name} " in lines[0]
