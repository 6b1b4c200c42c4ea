"""Brute-force regulation: ban a user or an IP after too many failed attempts (Authelia's way).

Attacks defended (security.md §2.F): password guessing against one account (mode ``user``),
password spraying and credential stuffing from one address across many names, unknown names
included (mode ``ip``), and guessing the second factor. The algorithm is Authelia's
(internal/regulation/regulator.go): every attempt is appended to ``authentication_logs``;
after a failure that was not refused by a ban, the newest ``max_retries`` attempts within
``find_time`` are read, newest first, and failures are counted until the first success; at
``max_retries`` the user (or IP) is banned until the newest failure + ``ban_time``. Bans are
checked before any password or code work, whatever ``modes`` says, so during a ban the right
password gets exactly the answer a wrong one gets.

Two differences from Authelia, both on purpose:

- TOTP failures count too (Authelia counts only first-factor attempts), as the issue asks:
  otherwise someone holding the password could guess codes without limit. They are a stream
  of their own: a TOTP failure counts TOTP attempts, and only a TOTP success ends the count;
  if a password success ended it, an attacker with the password could log in again between
  every two guesses and never be banned. First-factor and Basic attempts form the other
  stream (Basic credentials are a first factor, §3.1).
- Usernames are canonicalised here as well (GHSA-hjj4-hfjm-fmrj: ``Alice``, ``ALICE`` and
  fullwidth ``alice`` are one counter) and IPs normalised (``::ffff:192.0.2.1`` is ``192.0.2.1``),
  even though callers should pass canonical values already.

A store error is raised (:class:`server.storage.StorageError`): the caller denies (fail
closed). Bans are short and temporary by design (lockout DoS, ASVS 6.1.1). Pure core:
standard library and :mod:`server` modules only.
"""

from __future__ import annotations

import ipaddress
import logging
import time
import typing as t
from collections.abc import Callable

from server.errors import Banned
from server.names import canonical_username
from server.storage import ATTEMPT_KINDS

if t.TYPE_CHECKING:
    from server.config import RegulationConfig
    from server.storage import Ban
    from server.storage import Storage

log = logging.getLogger(__name__)

#: The reason stored with a ban regulation makes (Authelia's words).
REASON = "Exceeding Maximum Retries"
#: For a failure of each kind, the kinds of attempts counted with it (see the module doc).
STREAMS: dict[str, tuple[str, ...]] = {
    "1FA": ("1FA", "BASIC"),
    "BASIC": ("1FA", "BASIC"),
    "TOTP": ("TOTP",),
}
#: Longest user name stored in the log (longer ones cannot be users; they are cut).
MAX_NAME = 256


def ip_key(ip: str | None) -> str:
    """The normal text of an IP (IPv4-mapped IPv6 as IPv4); other text stripped, as is."""
    text = (ip or "").strip()
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text[:MAX_NAME]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def user_key(username: str | None) -> str:
    """The canonical form of ``username`` as bans and the log store it."""
    return canonical_username(username or "")[:MAX_NAME]


def max_failures_per_hour(config: RegulationConfig) -> float | None:
    """The most failures per hour one account can get without more bans than allowed.

    Either just under ``max_retries`` per ``find_time``, or ``max_retries`` per ban. None when
    regulation is off (unbounded). Compare with ASVS 2.2.1 / NIST 5.2.2: at most 100.
    """
    if config.max_retries <= 0:
        return None
    slow = (config.max_retries - 1) * 3600 / config.find_time
    banned = config.max_retries * 3600 / config.ban_time
    return max(slow, banned)


class Regulator:
    """Authelia's regulation on :class:`server.storage.Storage`, on the injected clock.

    Raises (every method):
        StorageError: the store failed; deny (fail closed).
    """

    def __init__(
        self, config: RegulationConfig, storage: Storage, now: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.storage = storage
        self._now = now

    def check(self, username: str | None, ip: str | None) -> None:
        """Do nothing, or raise :class:`Banned` if the user or the IP is banned now.

        Checked whatever ``modes`` says (as Authelia), and before any password or code work,
        so a banned user's right password is refused exactly like a wrong one.

        Raises:
            Banned: no detail on purpose; answer as for wrong credentials.
        """
        targets: list[tuple[str, str]] = []
        if address := ip_key(ip):
            targets.append(("ip", address))
        if name := user_key(username):
            targets.append(("user", name))
        if self.storage.active_ban(targets, self._now()) is not None:
            raise Banned()

    def record(
        self,
        username: str | None,
        ip: str | None,
        kind: str,
        success: bool,
        *,
        banned: bool = False,
    ) -> None:
        """Log one attempt (``kind`` is ``1FA``, ``BASIC`` or ``TOTP``) and ban if need be.

        ``banned=True`` logs an attempt :meth:`check` refused; it is not counted again.
        """
        if kind not in ATTEMPT_KINDS:
            raise ValueError(f"unknown attempt kind {kind!r}")
        when = self._now()
        name, address = user_key(username), ip_key(ip)
        self.storage.append_log(when, name, address, kind, success, banned)
        if success or banned or self.config.max_retries <= 0:
            return
        for mode in self.config.modes:
            if mode == "user":
                self._regulate("user", "username", name, STREAMS[kind], when)
            else:  # "ip": the config allows no other mode
                self._regulate("ip", "ip", address, STREAMS[kind], when)

    def _regulate(
        self, ban_kind: str, by: str, value: str, kinds: tuple[str, ...], when: float
    ) -> None:
        if not value:
            return
        attempts = self.storage.recent_attempts(
            by=by,
            value=value,
            kinds=kinds,
            since=when - self.config.find_time,
            limit=self.config.max_retries,
        )
        failures = 0
        for attempt in attempts:
            if attempt.success:
                break
            failures += 1
        if failures < self.config.max_retries:
            return
        until = attempts[0].time + self.config.ban_time
        self.storage.save_ban(ban_kind, value, until, REASON)
        log.warning(
            "banned %s %s for %ds after %d failed %s attempts",
            ban_kind,
            value,
            self.config.ban_time,
            failures,
            "/".join(kinds),
        )

    def list_bans(self) -> list[Ban]:
        """The bans running now, the one ending first first."""
        return self.storage.list_bans(self._now())

    def clear(self, value: str) -> list[Ban]:
        """Lift the bans of ``value``, a user name or an IP (both when it could be either).

        Only the ban goes: the failures stay in the log, so one more failure within
        ``find_time`` bans again. Returns the bans that were running.
        """
        targets = [("user", user_key(value))]
        try:
            ipaddress.ip_address(value.strip())
        except ValueError:
            pass
        else:
            targets.append(("ip", ip_key(value)))
        return self.storage.delete_bans(targets, self._now())

    def purge(self, keep_logs: float = 30 * 86400) -> tuple[int, int]:
        """Remove log rows older than ``keep_logs`` seconds (never younger than ``find_time``)
        and ended bans; returns ``(log rows, bans)`` removed."""
        now = self._now()
        keep = max(keep_logs, self.config.find_time)
        return self.storage.purge_logs(now - keep), self.storage.purge_bans(now)
