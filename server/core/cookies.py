"""Read the session cookie from a raw ``Cookie`` header.

A sibling subdomain can plant a second cookie of the same name for the parent domain, so
more than one value is tried (ids are never adopted: an unknown id just fails to load). But
only ``MAX_SESSION_IDS`` of them: each is a store look-up, and a header stuffed with 180
copies cost four times the CPU of a verify. Repeats count once.
"""

from __future__ import annotations

#: Session-cookie values tried per request.
MAX_SESSION_IDS = 3


def session_ids(cookie_header: str | None, name: str) -> list[str]:
    """The first ``MAX_SESSION_IDS`` distinct values of cookie ``name`` in
    ``cookie_header``, in order."""
    if not cookie_header or name not in cookie_header:
        return []
    found: list[str] = []
    for part in cookie_header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name and value:
            value = value.strip('"')
            if value not in found:
                found.append(value)
                if len(found) == MAX_SESSION_IDS:
                    break
    return found
