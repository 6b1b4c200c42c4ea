"""Logging set-up: plain text or one JSON object per line, always with a request id.

Session ids, passwords and cookies are never passed to the logger, so they cannot leak
through any formatter (SPEC §3.4).

Log forging (security.md §2.H): values in a record (a user name, a decoded path, an exception
message) come from clients, so both formatters write every record as exactly ONE line in which
no value can pose as another field or another record. Anything a reader could take for a line
break (CR, LF, VT, FF, FS/GS/RS, NEL, U+2028/U+2029), a terminal escape (ESC, other C0/C1
controls, DEL) or an invisible character (bidi overrides, zero-width marks: everything Python
calls not printable) is written as a backslash escape, in both formats:

- text: ``time level logger message key=value …``; a value (or message) holding a space, a
  quote, ``=``, a backslash or a character that is not printable is written double-quoted as
  a Python string literal (``user="eve\\" user=admin"``), so ``ast.literal_eval`` gives it
  back exactly; a traceback is one quoted ``exception=`` field, not extra lines;
- JSON: ``json.dumps`` escapes quotes and C0 controls; the formatter also escapes DEL, C1
  controls, U+2028/U+2029 and the other characters that are not printable, and a field named
  like a record key (``message``, ``level``…) is written as ``field.<name>`` instead of
  replacing it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from server.core.config import LogConfig

#: Plain ASCII a text-format value may hold without quotes (no space, ``"``, ``=``, ``\``).
_ASCII_BARE = re.compile(r"[!#-<>-\[\]-~]+\Z")
#: What a text message or value must not hold bare: the separators of the format.
_SEPARATORS = re.compile(r'[ "=\\]')
#: What a text message must not hold bare (its words are separated by spaces).
_MESSAGE_SEPARATORS = re.compile(r'["=\\]')
#: Characters the text format escapes inside quotes (the rest are printable and kept).
_TEXT_ESCAPE = re.compile(r'[\\"]|[^ -~]')
#: Characters of a ``json.dumps`` line that may need escaping (non-ASCII, DEL).
_JSON_ESCAPE = re.compile(r"[^ -~]")
_SHORT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_text_char(match: re.Match[str]) -> str:
    ch = match.group()
    short = _SHORT_ESCAPES.get(ch)
    if short is not None:
        return short
    if ch.isprintable():
        return ch
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def quote_text(text: str) -> str:
    """``text`` as a double-quoted Python string literal, every unprintable character escaped."""
    return '"' + _TEXT_ESCAPE.sub(_escape_text_char, text) + '"'


def text_value(value: object) -> str:
    """A text-format field value (or key): bare when that is unambiguous, else quoted."""
    text = value if isinstance(value, str) else str(value)
    if _ASCII_BARE.match(text) or (text and text.isprintable() and not _SEPARATORS.search(text)):
        return text
    return quote_text(text)


def text_message(message: str) -> str:
    """The message of a text-format line: bare words unless it could pose as a field."""
    if (
        message
        and message.isprintable()
        and message.strip(" ") == message
        and not _MESSAGE_SEPARATORS.search(message)
    ):
        return message
    return quote_text(message)


def _escape_json_char(match: re.Match[str]) -> str:
    ch = match.group()
    if ch.isprintable():
        return ch
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_line(entry: dict[str, object]) -> str:
    """``entry`` as one JSON line with no raw line separator, control or invisible character."""
    line = json.dumps(entry, default=str, ensure_ascii=False)
    if line.isprintable():
        return line
    return _JSON_ESCAPE.sub(_escape_json_char, line)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the structured ``fields`` passed in ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        base = frozenset(entry) | {"exception"}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                name = str(key)
                entry[f"field.{name}" if name in base else name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json_line(entry)


class TextFormatter(logging.Formatter):
    """``time level logger message key=value …`` for people reading a terminal, one line each."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            self.formatTime(record),
            text_value(record.levelname),
            text_value(record.name),
            text_message(record.getMessage()),
        ]
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            parts += (
                f"{text_value(k)}={text_value(v)}" for k, v in fields.items() if v is not None
            )
        if record.exc_info:
            parts.append("exception=" + quote_text(self.formatException(record.exc_info)))
        if record.stack_info:
            parts.append("stack=" + quote_text(self.formatStack(record.stack_info)))
        return " ".join(parts)


#: The loggers authctl configures: its own, its modules' (``getLogger(__name__)`` in ``server``)
#: and waitress's (which names the request path when an app fails). Left alone, the last two
#: would reach Python's last-resort handler, which writes the raw message: forgeable.
LOGGERS = ("authctl", "server", "waitress")


def configure_logging(config: LogConfig) -> None:
    """Send authctl's logs to stderr in the configured format and level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(config.level.upper())
        logger.propagate = False
