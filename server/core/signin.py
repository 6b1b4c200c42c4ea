"""Check a password at sign-in (portal, Basic, change-password) without the classic leaks.

The order, and what each step defends (security.md §2.E and §2.F, SPEC §3.4):

1. **The client's share** (:meth:`server.core.hashcap.HashGate.client`): one address may hold only
   a few hashing slots, so a single flooding client cannot fill them all and lock every other
   user out. Over its share a client gets the generic failure at once, uncounted.
2. **Regulation's reservation** (:meth:`server.core.regulation.Regulator.reserve`) before any
   hashing: a banned user or IP never costs an argon2 hash, and parallel guesses cannot all
   pass the check before the first failure is recorded.
3. **A banned attempt** waits in a padding slot (:meth:`HashGate.pad_slot`) for as long as a
   failed verify takes, then gets the failure. Sleeping, not a dummy hash: a dummy hash
   outside the slots would be an uncapped argon2 (CPU and ``memory_kib`` each) for every
   banned request, the very flood the ban should stop; inside the slots it would take them
   from real users. A sleep costs neither, and the padding slots are capped, so a banned
   flood from many addresses still leaves most slots to real hashes.
4. **The verify**, in a hashing slot and the low-priority pool, against the user's hash or a
   dummy one for unknown and disabled users. A failure is padded in the same slot to
   :meth:`server.core.hashcap.HashTimer.floor`, the recent time of a verify with the configured
   parameters, so neither a missing user nor a stored hash with cheaper parameters (8 MiB
   instead of 64 MiB: 25 ms instead of 114 ms) shows in the time of a failure. (A stored hash
   *dearer* than the configured one still shows, until its user signs in once.)
5. **The rehash**: after a success with a hash whose parameters differ from the configured
   ones, or with a legacy hash (Authelia's bcrypt, sha-crypt, pbkdf2, scrypt, argon2i/d:
   :mod:`server.core.legacy_hashes`), the password is hashed again as argon2id (same slot)
   and stored through the users file's locked writer, which re-reads the file under the
   lock, only if the stored hash is still the one just verified (a concurrent ``authctl
   user passwd`` wins; a concurrent ``user groups`` is kept beside the new hash). This
   changes the user's stamp, so the user's other sessions end once. It is done before the
   answer, so the new session carries the stamp of the hash on disk; it waits at most
   :data:`REHASH_LOCK_SECONDS` for the lock, and a rewrite that fails is logged, never a
   failed sign-in (the old hash keeps working and is rewritten at a later sign-in).

   Legacy hashes and timing: a failed check against a legacy hash is padded to the floor
   like any failure, so a cheaper scheme (sha-crypt, pbkdf2, a low bcrypt cost) does not
   tell an existing user from an unknown one; a *dearer* one (bcrypt 14 is about a second)
   shows, as a dearer argon2id does, until the user's first sign-in rewrites it. Measured
   with the default parameters (m=64 MiB, t=3, p=4) on the shared 2-core machine, 21 wrong
   passwords each, interleaved, median: unknown user 826 ms, argon2id user 795 ms, and
   users with Authelia's default legacy costs 795 ms (sha512-crypt 50,000 rounds), 795 ms
   (bcrypt 12), 795 ms (pbkdf2-sha512 310,000) and 816 ms (scrypt ln=16): each is padded
   to the floor, so a legacy user is no further from an unknown one than an argon2id user.
"""

from __future__ import annotations

import logging
import time
import typing as t
from collections.abc import Callable

from server.core import metrics
from server.core.errors import Banned
from server.core.errors import UserError
from server.core.errors import UserStoreError
from server.core.hashcap import Busy
from server.core.hashcap import HashTimer
from server.core.names import canonical_username
from server.core.passwords import is_legacy
from server.core.passwords import scheme_of
from server.core.userfile import UsersFile

if t.TYPE_CHECKING:
    from server.core.hashcap import HashGate
    from server.core.passwords import PasswordHasher
    from server.core.regulation import Regulator
    from server.core.users import User
    from server.core.users import UsersSource

log = logging.getLogger("authctl.signin")

#: Runs one hashing job in a hashing slot (``IdentityResolver._hash``).
Runner = Callable[[Callable[[], bool]], bool]
#: How long a rehash waits for the users-file lock (a CLI edit holds it briefly).
REHASH_LOCK_SECONDS = 2.0


class _HashChanged(UserError):
    """The stored hash changed since it was verified; the rehash must not overwrite it."""


class PasswordCheck:
    """The sign-in check of :meth:`server.core.identity.IdentityResolver.check_password`."""

    def __init__(
        self,
        *,
        users: UsersSource,
        lookup: Callable[[str], User | None],
        hasher: PasswordHasher,
        gate: HashGate,
        run: Runner,
        regulator: Regulator | None = None,
        timer: HashTimer | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.users = users
        self.lookup = lookup
        self.hasher = hasher
        self.gate = gate
        self.run = run
        self.regulator = regulator
        self.clock = clock
        self.sleep = sleep
        self.timer = timer if timer is not None else HashTimer()
        if timer is None:
            self.calibrate()

    def calibrate(self) -> None:
        """Time one dummy verify now, so the first banned attempt is padded too."""
        started = self.clock()
        self.hasher.dummy_verify("")
        self.timer.add(self.clock() - started)

    def check(self, username: str, password: str, *, ip: str | None, kind: str) -> User | None:
        """The user (with the hash now stored) when the password is right, else None.

        Never raises for a refusal: wrong, unknown, disabled, banned, over the client's share
        and no free slot are all None.

        Raises:
            StorageError: regulation's storage failed, so nobody is signed in; an outage,
                answered as such by the caller (503 at the portal API's boundary), not a
                wrong password the user would retype.
        """
        name = canonical_username(username)
        try:
            with self.gate.client(ip):
                return self._regulated(name, password, ip, kind)
        except Busy:
            log.warning(
                "password hashing is saturated for this client; refusing a login",
                extra={"fields": {"user": name, "ip": ip}},
            )
            return None

    def _regulated(self, name: str, password: str, ip: str | None, kind: str) -> User | None:
        if self.regulator is None:
            return self._verify(name, password)
        started = time.perf_counter()
        try:
            reservation = self.regulator.reserve(name, ip, kind)
        except Banned:
            with self.gate.pad_slot():
                self.sleep(self.timer.floor())
            metrics.authn(success=False, banned=True, seconds=time.perf_counter() - started)
            return None
        with reservation:
            user = self._verify(name, password)  # Busy: released uncounted
            reservation.settle(user is not None)  # a storage failure: no sign-in (raised)
        metrics.authn(success=user is not None, banned=False, seconds=time.perf_counter() - started)
        return user

    def _verify(self, name: str, password: str) -> User | None:
        """Verify in a hashing slot; a failure is padded, a success may be rehashed."""
        user = self.lookup(name)
        new_hash: list[str] = []

        def work() -> bool:
            started = self.clock()
            if user is None:
                ok = self.hasher.dummy_verify(password)
                configured = True
            else:
                ok = self.hasher.verify(user.password, password)
                configured = not self.hasher.needs_rehash(user.password)
            if configured:
                self.timer.add(self.clock() - started)
            if not ok:
                self.timer.pad(started, clock=self.clock, sleep=self.sleep)
            elif not configured:
                new_hash.append(self.hasher.hash(password))
            return ok

        if not self.run(work) or user is None:
            return None
        if new_hash:
            return self._store_rehash(user, new_hash[0])
        return user

    def _store_rehash(self, user: User, phc: str) -> User:
        """Store ``phc`` for ``user`` if the file still holds the hash just verified."""
        old = user.password

        def swap(entry: dict[str, t.Any] | None) -> dict[str, t.Any] | None:
            if entry is None or entry.get("password") != old:
                raise _HashChanged("the password changed meanwhile")
            return {**entry, "password": phc}

        fields = {"user": user.name}
        try:
            db = UsersFile(self.users.path, lock_timeout=REHASH_LOCK_SECONDS).edit(user.name, swap)
        except _HashChanged:
            log.info("password not rehashed: it changed meanwhile", extra={"fields": fields})
            return user
        except (UserError, UserStoreError, OSError):
            log.warning(
                "password not rehashed: the users file could not be written",
                exc_info=True,
                extra={"fields": fields},
            )
            return user
        self.users.reload()
        stored = db.get(user.name)
        was = scheme_of(old) or "unknown"
        log.info(
            "password rehashed as argon2id with the configured parameters (was %s)",
            was if is_legacy(old) else f"{was} with other parameters",
            extra={"fields": fields},
        )
        return stored if stored is not None and stored.password == phc else user
