"""What an import did with each Authelia key: mapped, dropped (with why) or needing attention."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field


@dataclass(frozen=True, slots=True)
class Mapped:
    """An Authelia key (``key``) written as the authctl key ``to``."""

    key: str
    to: str


@dataclass(frozen=True, slots=True)
class Note:
    """An Authelia key and the reason it was dropped or needs a person to look at it."""

    key: str
    reason: str


@dataclass(slots=True)
class Report:
    """The three lists ``authctl import authelia`` prints (``--json`` gives them as is).

    No entry ever holds a secret's value: reasons name keys and files only.
    """

    mapped: list[Mapped] = field(default_factory=list)
    dropped: list[Note] = field(default_factory=list)
    attention: list[Note] = field(default_factory=list)

    def map(self, key: str, to: str) -> None:
        self.mapped.append(Mapped(key, to))

    def drop(self, key: str, reason: str) -> None:
        self.dropped.append(Note(key, reason))

    def attend(self, key: str, reason: str) -> None:
        self.attention.append(Note(key, reason))

    def keys(self) -> set[str]:
        """Every Authelia key some entry speaks for."""
        return (
            {m.key for m in self.mapped}
            | {n.key for n in self.dropped}
            | {n.key for n in self.attention}
        )

    def covers(self, path: str) -> bool:
        """True when ``path`` or one of its parents has an entry."""
        keys = self.keys()
        while True:
            if path in keys:
                return True
            cut = max(path.rfind("."), path.rfind("["))
            if cut <= 0:
                return False
            path = path[:cut]

    def as_json(self) -> dict[str, list[dict[str, str]]]:
        """``{"mapped": [{key, to}], "dropped": [{key, reason}], "attention": [{key, reason}]}``."""
        return {
            "mapped": [{"key": m.key, "to": m.to} for m in self.mapped],
            "dropped": [{"key": n.key, "reason": n.reason} for n in self.dropped],
            "attention": [{"key": n.key, "reason": n.reason} for n in self.attention],
        }
