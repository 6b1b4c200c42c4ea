"""The four access policies, as one ordered type instead of strings compared in many places.

``bypass < one_factor < two_factor < deny``: a later policy asks more of the visitor, so
"at least two factors" is ``policy >= Policy.TWO_FACTOR`` and the strictest of two is ``max``.
The values are the spellings of the config and of SPEC §4's JSON, and a policy *is* that
string (``StrEnum``): ``Policy.DENY == "deny"``, JSON and f-strings print ``deny``, and its
``repr`` is ``'deny'`` so messages that quote a policy read as before. Only the order differs
from a string's: comparing with ``<`` ranks policies, and comparing one with a string that
is not a policy is a TypeError rather than alphabetical order.
"""

from __future__ import annotations

import enum


class Policy(enum.StrEnum):
    """An access policy (SPEC §2.1), ordered from the most lenient to the strictest."""

    BYPASS = "bypass"
    ONE_FACTOR = "one_factor"
    TWO_FACTOR = "two_factor"
    DENY = "deny"

    @property
    def rank(self) -> int:
        """0 for bypass up to 3 for deny: the position in the order."""
        return _RANK[self]

    @property
    def factors(self) -> int | None:
        """How many factors a signed-in user needs (0, 1 or 2); None for deny (no one)."""
        return None if self is Policy.DENY else self.rank

    @property
    def consequence(self) -> str:
        """What the server does for a request this policy applies to, in words."""
        return _CONSEQUENCE[self]

    def __repr__(self) -> str:
        return repr(self.value)

    def _other(self, other: object) -> Policy:
        if isinstance(other, Policy):
            return other
        if isinstance(other, str) and other in _BY_VALUE:
            return _BY_VALUE[other]
        raise TypeError(f"cannot order a policy against {other!r}")

    def __lt__(self, other: object) -> bool:
        return self.rank < self._other(other).rank

    def __le__(self, other: object) -> bool:
        return self.rank <= self._other(other).rank

    def __gt__(self, other: object) -> bool:
        return self.rank > self._other(other).rank

    def __ge__(self, other: object) -> bool:
        return self.rank >= self._other(other).rank


#: The spellings, in order (config choices, ``rules test``'s ``expect``).
POLICIES: tuple[str, ...] = tuple(p.value for p in Policy)
_RANK: dict[Policy, int] = {p: i for i, p in enumerate(Policy)}
_BY_VALUE: dict[str, Policy] = {p.value: p for p in Policy}
_CONSEQUENCE: dict[Policy, str] = {
    Policy.BYPASS: "the request passes without login",
    Policy.ONE_FACTOR: "a password login is needed",
    Policy.TWO_FACTOR: "a password and a one-time code are needed",
    Policy.DENY: "the server answers 403 Forbidden",
}


def as_policy(value: str | Policy) -> Policy:
    """``value`` as a Policy.

    Raises:
        ValueError: it is not one of :data:`POLICIES`.
    """
    try:
        return _BY_VALUE[value]
    except KeyError:
        raise ValueError(f"{value!r} is not one of {', '.join(POLICIES)}") from None
