"""tomli_w's output made easier to read: short arrays of strings on one line."""

from __future__ import annotations

import re

#: A multi-line array whose items are scalars (no nested arrays or inline tables).
_MULTILINE = re.compile(r"^(\S[^\n]*?) = \[\n((?:    [^\n\[{]*,\n)*)\]$", re.MULTILINE)
_LIMIT = 100


def tidy_toml(text: str) -> str:
    """``text`` with each short multi-line array of scalars joined onto one line."""

    def one_line(found: re.Match[str]) -> str:
        items = [line.strip()[:-1] for line in found.group(2).splitlines()]
        joined = f"{found.group(1)} = [{', '.join(items)}]"
        return joined if len(joined) <= _LIMIT else found.group(0)

    return _MULTILINE.sub(one_line, text)
