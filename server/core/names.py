"""Canonical user names and valid group names.

A user name is canonicalised once (NFKC, casefold, NFKC) so that ``Alice``, ``ALICE`` and the
fullwidth spelling of alice are one account for lookup, bans, rules, sessions and ``Remote-User``
(GHSA-hjj4-hfjm-fmrj).
"""

from __future__ import annotations

import re
import unicodedata

USERNAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
_PLAIN_GROUP = re.compile(r"[!-+\--~]+")  # printable ASCII without space and comma
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
USERNAME_RULE = (
    "1 to 64 characters from a-z, 0-9, '.', '_', '@' and '-', starting with a letter or digit"
)


def canonical_username(name: str) -> str:
    """Return the canonical form of ``name`` (NFKC, casefold, NFKC) without validating it."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def check_username(name: str) -> str:
    """Return the canonical form of ``name``.

    Raises:
        ValueError: the canonical form is not a valid user name; the message says why.
    """
    canon = canonical_username(name)
    if not USERNAME_PATTERN.fullmatch(canon):
        raise ValueError(f"user name {name!r} is invalid: use {USERNAME_RULE}")
    return canon


def check_group(name: str) -> str:
    """Return ``name`` if it is a valid group name.

    Group names travel comma-joined in ``Remote-Groups``, so commas, white space and control
    characters are refused.

    Raises:
        ValueError: with the reason.
    """
    if not name:
        raise ValueError("a group name cannot be empty")
    if name.isascii() and _PLAIN_GROUP.fullmatch(name):
        return name  # the common case, without a per-character Unicode lookup
    for ch in name:
        if ch == ",":
            raise ValueError(f"group name {name!r} contains a comma; group names are comma-joined")
        if ch.isspace() or unicodedata.category(ch)[0] in ("C", "Z"):
            raise ValueError(
                f"group name {name!r} contains white space or a control character; remove it"
            )
    return name


#: Unicode categories refused in display text: controls (Cc), invisible formatting such as
#: bidi overrides and zero-width characters (Cf, e.g. U+202E), lone surrogates (Cs) and the
#: line and paragraph separators (Zl, Zp). They could hide or reorder what an admin reads in
#: ``user list`` or what an application shows from ``Remote-Name``.
REFUSED_TEXT_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" ({name})" if name else "")


def check_display_text(value: str, what: str) -> str:
    """Return ``value`` if it has no control or invisible formatting characters (it ends up in
    HTTP headers and on an admin's terminal).

    Raises:
        ValueError: naming ``what`` (the field) and the character.
    """
    if value.isascii() and not _ASCII_CONTROL.search(value):
        return value  # the common case, without a per-character Unicode lookup
    for ch in value:
        category = unicodedata.category(ch)
        if category == "Cc":
            raise ValueError(
                f"{what} contains a control character ({_describe(ch)}, such as a newline); "
                "remove it"
            )
        if category in REFUSED_TEXT_CATEGORIES:
            raise ValueError(
                f"{what} contains an invisible formatting character {_describe(ch)}; remove it"
            )
    return value
