"""The password policy for passwords chosen in the portal (reset and change).

Why: a reset or change is where a user picks a password without an administrator watching,
so it is where weak passwords get in. The rules follow NIST SP 800-63B §5.1.1.2 and ASVS
(security.md §1.5): a minimum length (8 by default; ASVS 5 6.2.1), a maximum that is generous
(128 by default, so passphrases fit; ASVS 2.1.2) but bounded (a megabyte "password" is a
hashing DoS), lengths counted in code points after the NFKC normalisation the hasher applies
(so what is counted is what is hashed), **no composition rules** (ASVS 2.1.9; they make
passwords worse, not better), and a check against a list of common passwords (ASVS 6.2.4,
6.2.12: the top few thousand) plus the context-specific words NIST names (the user name, the
service name). Matching the list ignores case, because ``Password1`` is no stronger than
``password1`` against a guessing attack.

The list ships with the package (``server/core/data/common-passwords.txt``; see the README beside
it for where it comes from).
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable
from importlib import resources

from server.core.config import PasswordPolicyConfig
from server.core.errors import AuthError

#: Where the common-passwords list lives inside the ``server`` package.
COMMON_PASSWORDS = "data/common-passwords.txt"
#: Words that make a password guessable for this service in particular.
SERVICE_WORDS = ("authctl", "authelia")


class WeakPassword(AuthError, ValueError):
    """A password the policy refuses; the message says why and may be shown to the user."""


def _normal(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def parse_list(lines: Iterable[str]) -> frozenset[str]:
    """The entries of a password list: one per line, ``#`` comments and blank lines skipped.

    Entries are NFKC-normalised and case-folded, as :meth:`PasswordPolicy.check` compares.
    """
    out = set()
    for line in lines:
        entry = line.rstrip("\r\n")
        if not entry.strip() or entry.startswith("#"):
            continue
        out.add(_normal(entry).casefold())
    return frozenset(out)


@functools.lru_cache(maxsize=1)
def shipped_common_passwords() -> frozenset[str]:
    """The common-passwords list shipped with authctl (read once)."""
    text = resources.files("server.core").joinpath(COMMON_PASSWORDS).read_text(encoding="utf-8")
    return parse_list(text.splitlines())


class PasswordPolicy:
    """Checks new passwords against ``[password_policy]``."""

    def __init__(self, config: PasswordPolicyConfig, common: frozenset[str] | None = None) -> None:
        """``common`` replaces the shipped list (for tests); it is read only if enabled."""
        self.config = config
        if not config.check_common:
            self.common: frozenset[str] = frozenset()
        else:
            self.common = common if common is not None else shipped_common_passwords()

    def check(self, password: str, *, username: str | None = None) -> None:
        """Do nothing, or raise :class:`WeakPassword` with a message for the user.

        Raises:
            WeakPassword: too short, too long, on the common list, or the user name or the
                service's name.
        """
        normal = _normal(password)
        length = len(normal)
        if length < self.config.min_length:
            raise WeakPassword(
                f"The password must be at least {self.config.min_length} characters long."
            )
        if length > self.config.max_length:
            raise WeakPassword(
                f"The password must be at most {self.config.max_length} characters long."
            )
        folded = normal.casefold()
        if folded in self.common:
            raise WeakPassword(
                "This password is too common: it is on the list of passwords attackers try "
                "first. Choose another one; a few unrelated words make a good password."
            )
        context = set(SERVICE_WORDS)
        if username:
            context.add(_normal(username).casefold())
        if folded in context:
            raise WeakPassword("The password must not be your user name or the service's name.")

    def describe(self) -> dict[str, object]:
        """What ``GET /api/configuration/password-policy`` answers (Authelia's fields)."""
        return {
            "mode": "standard",
            "min_length": self.config.min_length,
            "max_length": self.config.max_length,
            "min_score": 0,
            "require_uppercase": False,
            "require_lowercase": False,
            "require_number": False,
            "require_special": False,
            "check_common": self.config.check_common,
        }
