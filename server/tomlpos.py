"""Find the line of a key path (``access_control.rules[3].domain``) in TOML text.

``tomllib`` reports positions only for syntax errors; validation errors found later still
deserve a line number, so this scans the text for table headers and keys. It is a best
effort: it returns None rather than guess. Pure core: standard library only.
"""

from __future__ import annotations

import re

_SEGMENT = re.compile(r"([^.\[\]]+)(?:\[(\d+)\])?")
_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEYLINE = re.compile(r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")

Path = list[tuple[str, int | None]]


def parse_key_path(key: str) -> Path:
    """Split ``a.b[3].c`` into ``[("a", None), ("b", 3), ("c", None)]``."""
    out: Path = []
    for name, index in _SEGMENT.findall(key):
        out.append((name, int(index) if index else None))
    return out


def _split_dotted(text: str) -> list[str]:
    parts: list[str] = []
    buf = ""
    quote = ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
            else:
                buf += ch
        elif ch in "\"'":
            quote = ch
        elif ch == ".":
            parts.append(buf.strip())
            buf = ""
        else:
            buf += ch
    parts.append(buf.strip())
    return parts


def _match_length(line_path: Path, target: Path) -> int:
    if len(line_path) > len(target):
        return 0
    for (name, index), (tname, tindex) in zip(line_path, target, strict=False):
        if name != tname:
            return 0
        if index is not None and index != (tindex if tindex is not None else 0):
            return 0
    return len(line_path)


def locate(text: str, key: str) -> int | None:
    """Return the 1-based line where ``key`` is defined in ``text``, or None."""
    target = parse_key_path(key)
    if not target:
        return None
    header: Path = []
    counts: dict[str, int] = {}
    best_line: int | None = None
    best_len = 0
    in_multiline = False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if in_multiline:
            if stripped.count('"""') % 2 == 1 or stripped.count("'''") % 2 == 1:
                in_multiline = False
            continue
        if not stripped or stripped.startswith("#"):
            continue
        found = _HEADER.match(line)
        if found:
            names = _split_dotted(found.group(2))
            dotted = ".".join(names)
            if found.group(1) == "[[":
                counts[dotted] = counts.get(dotted, 0) + 1
            header = []
            for i in range(len(names)):
                prefix = ".".join(names[: i + 1])
                header.append((names[i], counts[prefix] - 1 if prefix in counts else None))
            line_path = header
        else:
            keyline = _KEYLINE.match(line)
            if not keyline:
                continue
            if stripped.count('"""') % 2 == 1 or stripped.count("'''") % 2 == 1:
                in_multiline = True
            line_path = header + [(n, None) for n in _split_dotted(keyline.group(1))]
        length = _match_length(line_path, target)
        if length > best_len:
            best_len, best_line = length, number
    return best_line
