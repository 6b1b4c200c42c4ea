"""Brute-force regulation: ban a user or an IP after too many failed attempts (Authelia's way).

Attacks defended (security.md §2.F): password guessing against one account (mode ``user``),
password spraying and credential stuffing from one address across many names, unknown names
included (mode ``ip``), and guessing the second factor. The algorithm is Authelia's
(internal/regulation/regulator.go): every attempt is appended to ``authentication_logs``;
after a failure that was not refused by a ban, the newest ``max_retries`` attempts within
``find_time`` are read, newest first, and failures are counted until the first success; at
``max_retries`` the user (or IP) is banned until the newest failure + ``ban_time``. Bans are
checked before any password or code work, whatever ``modes`` says, so during a ban the right
password gets exactly the answer a wrong one gets; only the admin's log tells them apart (a
warning "1FA attempt of alice from 192.0.2.1 refused: banned until 2025-01-01T12:05:00Z (user
alice)").

Sign-ins and TOTP checks do not use :meth:`Regulator.check` and :meth:`Regulator.record`
directly but :meth:`Regulator.reserve` before any password or code work and
:meth:`Reservation.settle` after it. Check, hash, record let six parallel guesses all pass a
limit of three (each checks before any is recorded), and then the right password too. A
reservation is counted as a failure until it is settled, so with ``max_retries = 3`` at most
three attempts of one user (or IP) are ever in flight or failed at once; the others are
refused like banned ones. With nothing in flight one attempt always goes ahead, so a ban that
ran out (or was cleared) gives one more try, as in Authelia, whose failure bans again.

The attempts in flight live in the storage database (``add_inflight``), next to the log and
the bans, so every worker of ``serve --workers N`` and every host on one PostgreSQL database
counts the same ones: N workers let in ``max_retries`` guesses, not N times as many.
:meth:`Regulator.reserve` looks, counts and reserves under the storage's cross-process lock
(``exclusive("regulation")``), so two workers never both take the last place. Settling needs
no lock: it logs the attempt, bans if need be, and only then frees the place, and a reserve
reads the places first and the bans and failures after, so it sees the attempt either in
flight or logged (or both: counted twice, never missed). A reservation expires after
:data:`INFLIGHT_TTL` seconds: a worker that crashed (or lost the database) while holding one
cannot hold its place for ever; an attempt taking longer than that (it never should: a hash
takes well under a second) would let one more in.

Three differences from Authelia, all on purpose (the third is the reservation above):

- TOTP failures count too (Authelia counts only first-factor attempts), as the issue asks:
  otherwise someone holding the password could guess codes without limit. They are a stream
  of their own: a TOTP failure counts TOTP attempts, and only a TOTP success ends the count;
  if a password success ended it, an attacker with the password could log in again between
  every two guesses and never be banned. First-factor and Basic attempts form the other
  stream (Basic credentials are a first factor, §3.1).
- Usernames are canonicalised here as well (GHSA-hjj4-hfjm-fmrj: ``Alice``, ``ALICE`` and
  fullwidth ``alice`` are one counter) and IPs normalised (``::ffff:192.0.2.1`` is ``192.0.2.1``),
  even though callers should pass canonical values already.

A store error is raised (:class:`server.core.storage.StorageError`): the caller denies (fail
closed). Bans are short and temporary by design (lockout DoS, ASVS 6.1.1).
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import threading
import time
import typing as t
from collections.abc import Callable
from dataclasses import dataclass

from server.core import audit
from server.core.errors import Banned
from server.core.errors import StoreUnavailable
from server.core.names import canonical_username
from server.core.storage import ATTEMPT_KINDS

if t.TYPE_CHECKING:
    from server.core.config import RegulationConfig
    from server.core.storage import Attempt
    from server.core.storage import Ban
    from server.core.storage import Storage

log = logging.getLogger("server.regulation")

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
#: Seconds an attempt's place stays reserved at most (a crashed worker's is freed then).
INFLIGHT_TTL = 120.0
#: The name of the storage lock reservations are taken under.
LOCK_NAME = "regulation"


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


def utc(when: float) -> str:
    """Unix time as ISO 8601 UTC to the second, as the log and ``authctl bans`` show it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


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


#: A counter a reservation holds: ``(by, value, stream)``, e.g. ``("username", "alice", "1FA")``.
CounterKey = tuple[str, str, str]


@dataclass(slots=True)
class Reservation:
    """One attempt let through by :meth:`Regulator.reserve`; settle or release it exactly once.

    Use it as a context manager: leaving the ``with`` without :meth:`settle` releases it
    uncounted (no password or code was judged, e.g. no hashing slot was free).
    """

    regulator: Regulator
    username: str
    ip: str
    kind: str
    keys: tuple[CounterKey, ...]
    #: The id of its places in storage ("" when it holds none).
    token: str = ""
    done: bool = False

    def settle(self, success: bool) -> None:
        """Log the attempt's outcome (and ban if need be), then free its place.

        Raises:
            StorageError: the log could not be written; the place is freed anyway and the
                caller denies.
        """
        self.regulator._settle(self, success)

    def release(self) -> None:
        """Free the place without logging anything (idempotent)."""
        self.regulator._release(self)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Regulator:
    """Authelia's regulation on :class:`server.core.storage.Storage`, on the injected clock.

    Raises (every method):
        StorageError: the store failed; deny (fail closed).
    """

    def __init__(
        self, config: RegulationConfig, storage: Storage, now: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.storage = storage
        self._now = now
        # one reserve at a time in this process (the storage lock orders the processes)
        self._lock = threading.Lock()

    def reserve(self, username: str | None, ip: str | None, kind: str) -> Reservation:
        """Let one attempt go ahead, counting it as a failure until it is settled.

        Refused (:class:`Banned`, and logged as a banned attempt) when the user or IP is
        banned, or when attempts in flight (in every process) plus failures since the last
        success already reach ``max_retries`` on one of the counters ``modes`` names (see the
        module doc).

        Raises:
            Banned: answer as for wrong credentials, without any password or code work.
            StorageError: the store failed; deny.
        """
        if kind not in ATTEMPT_KINDS:
            raise ValueError(f"unknown attempt kind {kind!r}")
        name, address = user_key(username), ip_key(ip)
        keys = self._counters(name, address, kind)
        if not keys:  # nothing to count: only a ban can refuse
            self._refuse_if(self._banned(name, address), name, address, kind, self._now())
            return Reservation(self, name, address, kind, keys)
        token = secrets.token_hex(16)
        with self._lock, self.storage.exclusive(LOCK_NAME):
            now = self._now()
            self._refuse_if(self._refusal(name, address, keys, now), name, address, kind, now)
            self.storage.add_inflight(token, keys, now + INFLIGHT_TTL)
        return Reservation(self, name, address, kind, keys, token)

    def _refuse_if(
        self, refusal: str | None, name: str, address: str, kind: str, now: float
    ) -> None:
        """Log a refused attempt (the admin's log says why) and raise Banned; or nothing."""
        if refusal is None:
            return
        self.storage.append_log(now, name, address, kind, False, True)
        # the client's answer is a wrong password's
        log.warning(
            "%s attempt of %s from %s refused: %s",
            kind,
            name or "(no name)",
            address or "(no address)",
            refusal,
            extra={"fields": {"user": name, "ip": address, "kind": kind}},
        )
        raise Banned(refusal)

    def _banned(self, name: str, address: str) -> str | None:
        ban = self._ban(name, address)
        if ban is None:
            return None
        return f"banned until {utc(ban.expires)} ({ban.kind} {ban.value})"

    def _refusal(
        self, name: str, address: str, keys: tuple[CounterKey, ...], now: float
    ) -> str | None:
        """Why an attempt must not go ahead (for the log), or None: a running ban, or the
        attempts in flight plus the failures since the last success reaching the limit.

        The places are read before the bans and the log (see the module doc on settling)."""
        in_flight = self.storage.inflight_counts(keys, now)
        banned = self._banned(name, address)
        if banned is not None:
            return banned
        for key in keys:
            pending = in_flight.get(key, 0)
            if not pending:
                continue
            failures = self._failures(key, now)
            if pending + failures >= self.config.max_retries:
                by, value, _ = key
                return (
                    f"{pending} attempts in flight and {failures} failures reach "
                    f"max_retries = {self.config.max_retries} ({by} {value})"
                )
        return None

    def _counters(self, name: str, address: str, kind: str) -> tuple[CounterKey, ...]:
        if self.config.max_retries <= 0:
            return ()
        stream = STREAMS[kind][0]
        keys: list[CounterKey] = []
        for mode in self.config.modes:
            by, value = ("username", name) if mode == "user" else ("ip", address)
            if value:
                keys.append((by, value, stream))
        return tuple(keys)

    def _failures(self, key: CounterKey, now: float) -> int:
        """Failures logged on ``key`` within ``find_time``, newest first, up to a success."""
        by, value, stream = key
        return self._count(self._attempts(by, value, STREAMS[stream], now))

    def _attempts(self, by: str, value: str, kinds: tuple[str, ...], now: float) -> list[Attempt]:
        return self.storage.recent_attempts(
            by=by,
            value=value,
            kinds=kinds,
            since=now - self.config.find_time,
            limit=self.config.max_retries,
        )

    @staticmethod
    def _count(attempts: list[Attempt]) -> int:
        failures = 0
        for attempt in attempts:
            if attempt.success:
                break
            failures += 1
        return failures

    def _settle(self, reservation: Reservation, success: bool) -> None:
        # log (and ban) first, free the place after: a reserve in between counts the attempt
        # twice, never zero times
        if reservation.done:
            raise RuntimeError("this attempt was settled or released already")
        try:
            self.record(reservation.username, reservation.ip, reservation.kind, success)
        finally:
            self._free(reservation)

    def _release(self, reservation: Reservation) -> None:
        if not reservation.done:
            self._free(reservation)

    def _free(self, reservation: Reservation) -> None:
        """Free the place; if the store fails it stays taken until it expires (safe side)."""
        reservation.done = True
        if not reservation.token:
            return
        try:
            self.storage.remove_inflight(reservation.token)
        except StoreUnavailable as exc:
            log.warning(
                "an attempt's place in flight could not be freed (it expires in %ds): %s",
                INFLIGHT_TTL,
                exc,
            )

    def check(self, username: str | None, ip: str | None) -> None:
        """Do nothing, or raise :class:`Banned` if the user or the IP is banned now.

        Checked whatever ``modes`` says (as Authelia), and before any password or code work,
        so a banned user's right password is refused exactly like a wrong one.

        Raises:
            Banned: no detail on purpose; answer as for wrong credentials.
        """
        ban = self._ban(user_key(username), ip_key(ip))
        if ban is not None:
            raise Banned(f"banned until {utc(ban.expires)} ({ban.kind} {ban.value})")

    def _ban(self, name: str, address: str) -> Ban | None:
        """The running ban of the user (canonical) or the IP (normal), the longest one."""
        targets: list[tuple[str, str]] = []
        if address:
            targets.append(("ip", address))
        if name:
            targets.append(("user", name))
        return self.storage.active_ban(targets, self._now())

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
        attempts = self._attempts(by, value, kinds, when)
        failures = self._count(attempts)
        if failures < self.config.max_retries:
            return
        until = attempts[0].time + self.config.ban_time
        self.storage.save_ban(ban_kind, value, until, REASON)
        who = {"user": value, "ip": None} if ban_kind == "user" else {"user": None, "ip": value}
        audit.emit("ban", **who, result="success", reason="too_many_failures")
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
