"""Strict JSON reading: a duplicated key is an error, not "the last one wins", and a string
must be real Unicode text.

``json.loads`` keeps the last of two equal keys, so a body (or a signed token payload) could
say one thing to one reader and another to the next. It also turns ``"\\ud800"`` into a
string holding a lone surrogate, which no UTF-8 encoder accepts: such a user name reached the
database and answered 500. :func:`loads` refuses both with a ``ValueError``.
"""

from __future__ import annotations

import json
import typing as t


def no_duplicate_keys(pairs: list[tuple[str, t.Any]]) -> dict[str, t.Any]:
    """``object_pairs_hook`` for ``json.loads`` that refuses duplicated keys.

    Raises:
        ValueError: a key appears twice in one object.
    """
    out: dict[str, t.Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _check_text(value: object) -> None:
    """Raise ``ValueError`` if ``value`` is, or a list directly holds, a non-UTF-8 string.

    Objects inside lists are checked by the hook when they are built.
    """
    if isinstance(value, str):
        value.encode("utf-8")  # UnicodeEncodeError (a ValueError) on a lone surrogate
    elif isinstance(value, list):
        for item in value:
            _check_text(item)


def strict_object(pairs: list[tuple[str, t.Any]]) -> dict[str, t.Any]:
    """``object_pairs_hook``: :func:`no_duplicate_keys`, and every key and string is UTF-8.

    Raises:
        ValueError: a duplicated key, or a lone surrogate in a key or string.
    """
    for key, value in pairs:
        _check_text(key)
        _check_text(value)
    return no_duplicate_keys(pairs)


def loads(text: str) -> t.Any:
    """``json.loads`` with :func:`strict_object` (top-level strings and lists checked too).

    Raises:
        ValueError: not JSON, a duplicated key, or a lone surrogate anywhere.
    """
    data = json.loads(text, object_pairs_hook=strict_object)
    _check_text(data)
    return data
