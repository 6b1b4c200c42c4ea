"""Read the session cookie from a raw ``Cookie`` header.

A sibling subdomain can plant a second cookie of the same name for the parent domain, so
every value is tried (ids are never adopted: an unknown id just fails to load). Pure core.
"""

from __future__ import annotations


def session_ids(cookie_header: str | None, name: str) -> list[str]:
    """All values of cookie ``name`` in ``cookie_header``, in order."""
    if not cookie_header or name not in cookie_header:
        return []
    found = []
    for part in cookie_header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name and value:
            found.append(value.strip('"'))
    return found
