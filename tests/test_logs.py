"""Log formats, and that secrets never reach the logs (SPEC §3.4)."""

from __future__ import annotations

import io
import json
import logging
import typing as t
from pathlib import Path

import pytest

from server.config import LogConfig
from server.logs import JsonFormatter
from server.logs import TextFormatter
from server.logs import configure_logging
from tests.apphelpers import PASSWORDS
from tests.apphelpers import build


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
