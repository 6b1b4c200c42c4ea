"""Find where a key path (``access_control.rules[3].networks[0]``) is written in TOML text.

``tomllib`` reports positions only for syntax errors, yet validation errors found later
deserve a line number too. This module scans the text once (a small, forgiving TOML reader
that keeps positions and throws the values away) and records the line and column of every
table header, key, array element and inline-table key, under the same path spelling the
config loader uses in its messages. It is a best effort: on text it cannot follow it records
less, never raises, and :func:`locate` returns None rather than guess.
"""

from __future__ import annotations

import bisect
import functools
import re

_SEGMENT = re.compile(r"([^.\[\]]+)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
#: Deeper nesting than this is not followed (the text is then garbage or an attack).
_MAX_DEPTH = 64

KeyPath = list[tuple[str, int | None]]


def parse_key_path(key: str) -> KeyPath:
    """Split ``a.b[3].c`` into ``[("a", None), ("b", 3), ("c", None)]``.

    A segment with several indexes (``subject[1][0]``) keeps only the first; use
    :func:`parent_paths` for exact prefixes.
    """
    out: KeyPath = []
    for name, indexes in _SEGMENT.findall(key):
        found = _INDEX.findall(indexes)
        out.append((name, int(found[0]) if found else None))
    return out


def parent_paths(key: str) -> list[str]:
    """``key`` and its ancestors, longest first: ``a.b[3].c``, ``a.b[3]``, ``a.b``, ``a``."""
    out = []
    rest = key
    while rest:
        out.append(rest)
        if rest.endswith("]") and "[" in rest:
            rest = rest[: rest.rindex("[")]
        else:
            dot = rest.rfind(".")
            rest = rest[:dot] if dot > 0 else ""
    return out


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class _Scanner:
    """One pass over the text recording ``(path, offset)`` for everything it can name."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.n = len(text)
        self.i = 0
        self.found: list[tuple[str, int]] = []
        # Arrays of tables seen so far: resolved path -> number of elements.
        self.aot: dict[str, int] = {}

    # ---------------------------------------------------------------- small helpers

    def peek(self, offset: int = 0) -> str:
        j = self.i + offset
        return self.s[j] if j < self.n else ""

    def record(self, path: str, at: int) -> None:
        if path:
            self.found.append((path, at))

    def skip_blank(self) -> None:
        """Skip spaces and tabs on the current line."""
        while self.i < self.n and self.s[self.i] in " \t":
            self.i += 1

    def skip_comment(self) -> None:
        if self.peek() == "#":
            end = self.s.find("\n", self.i)
            self.i = self.n if end < 0 else end

    def skip_space(self) -> None:
        """Skip white space, newlines and comments (inside arrays and between statements)."""
        while self.i < self.n:
            ch = self.s[self.i]
            if ch in " \t\r\n":
                self.i += 1
            elif ch == "#":
                self.skip_comment()
            else:
                return

    def skip_line(self) -> None:
        end = self.s.find("\n", self.i)
        self.i = self.n if end < 0 else end + 1

    # ---------------------------------------------------------------- keys

    def simple_key(self) -> str | None:
        ch = self.peek()
        if ch in ('"', "'"):
            end = self.quoted_end(ch)
            if end is None:
                return None
            name = self.s[self.i + 1 : end]
            self.i = end + 1
            return name
        found = _BARE_KEY.match(self.s, self.i)
        if not found:
            return None
        self.i = found.end()
        return found.group()

    def quoted_end(self, quote: str) -> int | None:
        """Offset of the closing quote of a one-line string starting at ``self.i``."""
        j = self.i + 1
        while j < self.n:
            ch = self.s[j]
            if ch == "\\" and quote == '"':
                j += 2
                continue
            if ch == quote:
                return j
            if ch == "\n":
                return None
            j += 1
        return None

    def dotted_key(self) -> list[str] | None:
        names = []
        while True:
            self.skip_blank()
            name = self.simple_key()
            if name is None:
                return None
            names.append(name)
            self.skip_blank()
            if self.peek() != ".":
                return names
            self.i += 1

    # ---------------------------------------------------------------- values

    def value(self, path: str, depth: int) -> bool:
        """Consume one value, recording nested paths; False when the text is not a value."""
        start = self.i
        ch = self.peek()
        if depth > _MAX_DEPTH or not ch:
            return False
        if self.s.startswith(('"""', "'''"), self.i):
            quote = self.s[self.i : self.i + 3]
            j = self.i + 3
            while True:
                end = self.s.find(quote, j)
                if end < 0:
                    self.i = self.n
                    return False
                if quote == '"""' and _escaped(self.s, end):
                    j = end + 1
                    continue
                # Up to two more quotes may belong to the string itself ("""a"""").
                while self.s.startswith(quote[0], end + 3) and end + 3 < self.n:
                    end += 1
                self.i = end + 3
                return True
        if ch in ('"', "'"):
            close = self.quoted_end(ch)
            if close is None:
                return False
            self.i = close + 1
            return True
        if ch == "[":
            return self.array(path, depth)
        if ch == "{":
            return self.inline_table(path, depth)
        while self.i < self.n and self.s[self.i] not in ",]}#\n\r\"'[{":
            self.i += 1
        return self.i > start

    def array(self, path: str, depth: int) -> bool:
        self.i += 1
        index = 0
        while True:
            self.skip_space()
            if self.peek() == "]":
                self.i += 1
                return True
            here = f"{path}[{index}]"
            self.record(here, self.i)
            if not self.value(here, depth + 1):
                return False
            index += 1
            self.skip_space()
            if self.peek() == ",":
                self.i += 1
            elif self.peek() != "]":
                return False

    def inline_table(self, path: str, depth: int) -> bool:
        self.i += 1
        while True:
            self.skip_space()
            if self.peek() == "}":
                self.i += 1
                return True
            if not self.key_value(path, depth + 1):
                return False
            self.skip_space()
            if self.peek() == ",":
                self.i += 1
            elif self.peek() != "}":
                return False

    def key_value(self, table: str, depth: int) -> bool:
        at = self.i
        names = self.dotted_key()
        if not names:
            return False
        path = table
        for name in names:
            path = _join(path, name)
            self.record(path, at)
        self.skip_blank()
        if self.peek() != "=":
            return False
        self.i += 1
        self.skip_blank()
        return self.value(path, depth)

    # ---------------------------------------------------------------- statements

    def header(self) -> str | None:
        """Parse ``[a.b]`` or ``[[a.b]]`` at ``self.i``; return the resolved table path."""
        at = self.i
        is_array = self.s.startswith("[[", self.i)
        self.i += 2 if is_array else 1
        names = self.dotted_key()
        if not names:
            return None
        self.skip_blank()
        close = "]]" if is_array else "]"
        if not self.s.startswith(close, self.i):
            return None
        self.i += len(close)
        path = ""
        for position, name in enumerate(names):
            path = _join(path, name)
            if is_array and position == len(names) - 1:
                count = self.aot.get(path, 0)
                self.aot[path] = count + 1
                self.record(path, at)
                path = f"{path}[{count}]"
            elif path in self.aot:
                path = f"{path}[{self.aot[path] - 1}]"
            self.record(path, at)
        return path

    def run(self) -> list[tuple[str, int]]:
        table = ""
        while True:
            self.skip_space()
            if self.i >= self.n:
                return self.found
            start = self.i
            if self.peek() == "[":
                resolved = self.header()
                if resolved is not None:
                    table = resolved
            else:
                self.key_value(table, 0)
            # Whatever follows on the line (a comment, or text we could not follow) is skipped.
            self.skip_blank()
            self.skip_comment()
            if self.peek() not in ("\n", ""):
                self.skip_line()
            if self.i <= start:  # pragma: no cover - every branch above consumes something
                self.i = start + 1


def _escaped(text: str, at: int) -> bool:
    """True when the character at ``at`` is preceded by an odd number of backslashes."""
    count = 0
    j = at - 1
    while j >= 0 and text[j] == "\\":
        count += 1
        j -= 1
    return count % 2 == 1


class Positions:
    """Where each key path of one TOML text is written: ``line_col(path) -> (line, col)``."""

    def __init__(self, text: str) -> None:
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self._order: list[tuple[str, int]] = _Scanner(text).run()
        self._first: dict[str, int] = {}
        for path, offset in self._order:
            self._first.setdefault(path, offset)

    def _line_col(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self._starts, offset)
        return line, offset - self._starts[line - 1] + 1

    def __contains__(self, key: str) -> bool:
        """True when ``key`` itself (not only an ancestor) is written in the text."""
        return key in self._first

    def find(self, key: str) -> tuple[int, int] | None:
        """1-based line and column of ``key``, else of its nearest written ancestor, else None."""
        for path in parent_paths(key):
            if path in self._first:
                return self._line_col(self._first[path])
        return None

    def key_at(self, line: int) -> str | None:
        """The path of the last key or table header that starts on or before ``line``."""
        best = None
        for path, offset in self._order:
            if self._line_col(offset)[0] > line:
                break
            best = path
        return best


@functools.lru_cache(maxsize=8)
def positions(text: str) -> Positions:
    """The (cached) positions of ``text``: a loader asks for many paths of one file."""
    return Positions(text)


def locate(text: str, key: str) -> int | None:
    """Return the 1-based line where ``key`` (or its nearest ancestor) is written, or None."""
    found = positions(text).find(key)
    return found[0] if found else None


def locate_position(text: str, key: str) -> tuple[int, int] | None:
    """Return the 1-based ``(line, column)`` of ``key`` (or its nearest ancestor), or None."""
    return positions(text).find(key)


def key_at(text: str, line: int) -> str | None:
    """The key path being written at ``line`` (for syntax errors), or None before any key."""
    return positions(text).key_at(line)
