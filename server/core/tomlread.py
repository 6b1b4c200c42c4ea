"""One problem-collecting TOML reader, for every TOML file authctl reads.

The config, the users file and ``rules test`` case files are all read the same way:
:func:`read_toml` turns a file that cannot be read or parsed into one problem naming the
file, line, column and a fix, and :class:`ProblemReader` walks the parsed data collecting
*every* problem (key path, line and column from :mod:`server.core.tomlpos`, what is wrong,
how to fix it) instead of stopping at the first, so one run lists everything to correct.
"""

from __future__ import annotations

import difflib
import re
import typing as t
from pathlib import Path

import tomli

from server.core.errors import ConfigError
from server.core.errors import FileProblemError
from server.core.errors import Problem
from server.core.tomlpos import key_at
from server.core.tomlpos import locate_position


class Missing:
    """The type of :data:`MISSING`: no default, the key is required."""


#: Pass as ``default`` to make a key required.
MISSING = Missing()
T = t.TypeVar("T")


class ProblemReader:
    """Walks parsed TOML, collecting every problem with its key path, line, column and fix.

    Subclasses add the value kinds of their file (durations and paths for the config).
    """

    def __init__(self, path: Path | None, text: str) -> None:
        self.path = path
        self.text = text
        self.problems: list[Problem] = []

    def error(self, key: str, message: str, hint: str) -> None:
        """Record a problem at ``key``; every problem says how to fix it (``hint``)."""
        line, column = locate_position(self.text, key) or (None, None)
        self.problems.append(Problem(self.path, key, message, hint, line, column))

    def check(self, error: type[FileProblemError]) -> None:
        """Raise ``error`` with every problem, in file order (those with no line last)."""
        if self.problems:
            raise error(sorted(self.problems, key=lambda p: (p.line is None, p.line or 0)))

    def table(self, data: object, key: str, known: t.Iterable[str]) -> dict[str, t.Any]:
        """Return ``data`` as a table, reporting unknown keys (with a did-you-mean)."""
        if not isinstance(data, dict):
            if key.endswith("]"):
                hint = "write each entry as { key = value, … } or under its own [[…]] header"
            else:
                hint = f"write it as [{key}] with key = value lines under it"
            self.error(key, f"expected a table, got {kind_of(data)}", hint)
            return {}
        names = list(known)
        for name in data:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(names)}"
                self.error(join(key, name), f"unknown key {name!r}", hint)
        return data

    def value(
        self,
        table: dict[str, t.Any],
        key: str,
        name: str,
        kind: type[T] | tuple[type, ...],
        default: T | Missing = MISSING,
        hint: str = "",
    ) -> T | None:
        """Return ``table[name]`` checked against ``kind``; None (and a problem) when wrong."""
        path = join(key, name)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if name not in table:
            if isinstance(default, Missing):
                self.error(path, "is required", hint or f"add {name} = …")
                return None
            return default
        raw = table[name]
        fix = hint or FIXES.get(kinds[0], "")
        if isinstance(raw, bool) and bool not in kinds:
            self.error(path, f"expected {kinds_text(kinds)}, got a boolean", fix)
            return None
        if not isinstance(raw, kinds):
            self.error(path, f"expected {kinds_text(kinds)}, got {kind_of(raw)}", fix)
            return None
        return t.cast("T", raw)

    def choice(
        self,
        table: dict[str, t.Any],
        key: str,
        name: str,
        choices: t.Sequence[str],
        default: str | Missing,
    ) -> str | None:
        """``table[name]`` if it is one of ``choices``; else a problem (with a did-you-mean)."""
        raw = self.value(table, key, name, str, default, hint=f"use one of {one_of(choices)}")
        if raw is None or raw in choices:
            return raw
        close = difflib.get_close_matches(raw, choices, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"use one of {one_of(choices)}"
        self.error(join(key, name), f"{raw!r} is not one of {', '.join(choices)}", hint)
        return None

    def option(
        self, table: dict[str, t.Any], key: str, name: str, choices: t.Sequence[str], default: str
    ) -> str:
        """Like :meth:`choice` with a default, which also stands in for a wrong value."""
        return self.choice(table, key, name, choices, default) or default

    def integer(
        self, table: dict[str, t.Any], key: str, name: str, default: int, low: int, high: int
    ) -> int:
        raw = self.value(table, key, name, int, default)
        if raw is None:
            return default
        if not low <= raw <= high:
            self.error(
                join(key, name), f"{raw} is out of range", f"use a number from {low} to {high}"
            )
            return default
        return raw

    def boolean(self, table: dict[str, t.Any], key: str, name: str, default: bool) -> bool:
        raw = self.value(table, key, name, bool, default, hint="write true or false")
        return default if raw is None else raw

    def string_list(
        self, table: dict[str, t.Any], key: str, name: str, *, allow_string: bool = True
    ) -> list[str]:
        """A list of strings (or one string, where ``allow_string``); problems per element."""
        path = join(key, name)
        if name not in table:
            return []
        raw = table[name]
        if isinstance(raw, str) and allow_string:
            return [raw]
        if not isinstance(raw, list):
            self.error(path, f"expected a list of strings, got {kind_of(raw)}", 'write ["…", "…"]')
            return []
        out = []
        for i, item in enumerate(raw):
            if not isinstance(item, str):
                self.error(f"{path}[{i}]", f"expected a string, got {kind_of(item)}", FIXES[str])
            else:
                out.append(item)
        return out

    def string(
        self, table: dict[str, t.Any], key: str, name: str, default: str, hint: str = ""
    ) -> str:
        """A string that may not be empty; the default when absent or wrong (with a problem)."""
        raw = self.value(table, key, name, str, default, hint)
        if raw is None:
            return default
        if not raw.strip():
            self.error(join(key, name), "cannot be empty", hint or "remove it to get the default")
            return default
        return raw


def one_of(choices: t.Sequence[str]) -> str:
    quoted = [repr(c) for c in choices]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def kind_of(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number with a fraction",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), f"a {type(value).__name__}")


FIXES: dict[type, str] = {
    bool: "write true or false, without quotes",
    int: "write a whole number, without quotes",
    str: 'put the text in double quotes: "…"',
    list: 'write a list: ["…", "…"]',
}

_TYPE_NAMES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "list",
    dict: "table",
}


def kinds_text(kinds: tuple[type, ...]) -> str:
    names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
    return ("an " if names[0] in "aeiou" else "a ") + names


_TOML_POSITION = re.compile(r"\s*\((?:at line (\d+), column (\d+)|at end of document)\)")

#: Fixes for ``tomllib``'s messages, by the start of the message.
_TOML_HINTS = (
    ("Cannot overwrite a value", "a key is set twice; keep one of them"),
    ("Cannot declare", "a table is declared twice; merge the two into one"),
    ("Unterminated string", "close the string with the quote it started with"),
    ("Unclosed array", "close the list with ]"),
    ("Unclosed inline table", "close the table with } (an inline table must fit on one line)"),
    ("Invalid value", 'quote strings ("…"), and write true/false in lower case'),
    ("Illegal character", "remove the control character, or escape it inside a string"),
)
#: What tomli says when a one-line string meets the end of its line or of the file.
_UNCLOSED = ("Illegal character '\\n'", "Illegal character '\\r'", 'Expected "\'"')
_UNCLOSED_HINT = (
    "close the string with the quote it started with, on the same line "
    '(text over several lines goes between triple quotes: """…""")'
)


def read_toml(
    path: Path,
    error: type[FileProblemError] = ConfigError,
    *,
    create: str = "create it with `authctl init`, or pass --config PATH",
    raw: bytes | None = None,
) -> tuple[str, dict[str, t.Any]]:
    """Read ``path`` as UTF-8 TOML; raise ``error`` naming the file, line and column.

    Shared by every loader so each explains a broken file the same way; ``create`` is the
    fix for a missing file. For a syntax error, the problem also names the key being written
    there when it can be found. ``raw``: the file's bytes, when the caller has read them
    already (it judged them, so the parse must be of the very same bytes, not a re-read).
    """

    def fail(
        message: str, hint: str = "", line: int | None = None, col: int | None = None, key: str = ""
    ) -> t.NoReturn:
        raise error([Problem(path, key, message, hint, line, col)])

    try:
        if raw is None:
            raw = path.read_bytes()
    except FileNotFoundError:
        fail("file not found", create)
    except IsADirectoryError:
        fail("is a directory, not a file", "point at the TOML file inside it")
    except PermissionError:
        fail("permission denied", "run as the file's owner or fix its permissions")
    except OSError as exc:
        fail(f"cannot be read: {exc.strerror or exc}")
    if raw.startswith(b"\xef\xbb\xbf"):
        fail("starts with a UTF-8 byte-order mark", "save the file as UTF-8 without BOM", 1, 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        fail("is not valid UTF-8", "save the file as UTF-8", line, col)
    if not text.strip():
        fail("is empty", "write the settings, or recreate the file with `authctl init`")
    try:
        data = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        found = _TOML_POSITION.search(str(exc))
        message = _TOML_POSITION.sub("", str(exc)).strip()
        if found and found.group(1):
            line, col = int(found.group(1)), int(found.group(2))
        else:
            # "at end of document": point just after the last thing written.
            end = len(text.rstrip())
            line = text.count("\n", 0, end) + 1
            col = end - (text.rfind("\n", 0, end) + 1) + 1
        hint = next((h for start, h in _TOML_HINTS if message.startswith(start)), "")
        if message.startswith(_UNCLOSED):
            message, hint = "a string is not closed", _UNCLOSED_HINT
            line, col = _unclosed_string(text) or (line, col)
        fail(
            f"invalid TOML: {message}",
            hint or "fix the syntax at that position",
            line,
            col,
            key_at(text, line) or "",
        )
    return text, data


def _unclosed_string(text: str) -> tuple[int, int] | None:
    """Line and column of the opening quote of the first one-line string its line does not
    close (tomli reports a literal string left open only at the end of the document)."""
    multi = ""  # the delimiter of the multi-line string we are in, if any
    for number, line in enumerate(text.splitlines(), 1):
        i = 0
        while i < len(line):
            if multi:
                end = line.find(multi, i)
                while end > 0 and multi == '"""' and _escaped(line, end):
                    end = line.find(multi, end + 1)
                if end < 0:
                    break
                i, multi = end + 3, ""
                continue
            ch = line[i]
            if ch == "#":
                break
            if line.startswith(('"""', "'''"), i):
                multi, i = line[i : i + 3], i + 3
                continue
            if ch in "\"'":
                j = i + 1
                while j < len(line) and line[j] != ch:
                    j += 2 if ch == '"' and line[j] == "\\" else 1
                if j >= len(line):
                    return number, i + 1
                i = j
            i += 1
    return None


def _escaped(line: str, at: int) -> bool:
    count = 0
    while at - count - 1 >= 0 and line[at - count - 1] == "\\":
        count += 1
    return count % 2 == 1
