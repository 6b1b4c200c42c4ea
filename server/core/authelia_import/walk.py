"""Reading Authelia's parsed YAML by key path, with the report at hand.

Every getter returns ``None`` for a key that is absent, has the wrong type, or holds an
Authelia template (``{{ … }}``, expanded only by Authelia's template filter): the latter two
are reported as needing attention, so the importer never guesses a value.
"""

from __future__ import annotations

import typing as t

from server.core.authelia_import.durations import parse_authelia_duration
from server.core.authelia_import.report import Report

_MISSING = object()


def kind(value: object) -> str:
    """How a YAML value is named in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class Source:
    """Authelia's configuration as a tree, read by dotted key paths (``session.cookies[0]``)."""

    def __init__(self, data: dict[str, t.Any], report: Report) -> None:
        self.data = data
        self.report = report

    def raw(self, key: str, base: object = _MISSING) -> object:
        """The value at ``key`` (relative to ``base``, default the root), or None."""
        node: object = self.data if base is _MISSING else base
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def has(self, key: str) -> bool:
        """True when ``key`` is present (even if null)."""
        node: object = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    def _typed(self, where: str, value: object, types: tuple[type, ...], what: str) -> t.Any:
        if value is None:
            return None
        if isinstance(value, str) and "{{" in value:
            self.report.attend(
                where,
                "holds an Authelia template ({{ … }}), which only Authelia's template filter "
                "expands: not imported; write the value it stands for into authctl.toml",
            )
            return None
        if isinstance(value, bool) and bool not in types:
            value = None
        if value is None or not isinstance(value, types):
            self.report.attend(where, f"expected {what}, got {kind(value)}: not imported")
            return None
        return value

    def string(self, where: str, value: object) -> str | None:
        """``value`` if it is a string (numbers are read as their text, as Authelia does)."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        found: str | None = self._typed(where, value, (str,), "a string")
        return found

    def integer(self, where: str, value: object) -> int | None:
        found: int | None = self._typed(where, value, (int,), "a whole number")
        return found

    def boolean(self, where: str, value: object) -> bool | None:
        found: bool | None = self._typed(where, value, (bool,), "true or false")
        return found

    def mapping(self, where: str, value: object) -> dict[str, t.Any] | None:
        found: dict[str, t.Any] | None = self._typed(where, value, (dict,), "a mapping")
        return found

    def strings(self, where: str, value: object) -> list[str] | None:
        """A string or a list of strings (Authelia accepts both for list keys)."""
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            self.report.attend(where, f"expected a list of strings, got {kind(value)}")
            return None
        out = []
        for i, item in enumerate(items):
            text = self.string(f"{where}[{i}]" if isinstance(value, list) else where, item)
            if text is None:
                return None
            out.append(text)
        return out

    def duration(self, where: str, value: object) -> int | None:
        """Seconds of an Authelia duration; ``-1`` is returned as is (it means "disabled")."""
        if value is None:
            return None
        if isinstance(value, str) and "{{" in value:
            self._typed(where, value, (str,), "a duration")  # reports the template
            return None
        try:
            return parse_authelia_duration(value)
        except ValueError as exc:
            self.report.attend(where, f"{exc}: not imported")
            return None


def leaves(value: object, prefix: str = "") -> t.Iterator[str]:
    """Every key path below ``value`` that holds a scalar (or an empty list or mapping)."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from leaves(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            yield from leaves(item, f"{prefix}[{i}]")
    elif prefix:
        yield prefix
