"""Strict JSON reading: a duplicated key is an error, not "the last one wins".

``json.loads`` keeps the last of two equal keys, so a body (or a signed token payload) could
say one thing to one reader and another to the next. Pure core: standard library only.
"""

from __future__ import annotations

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
