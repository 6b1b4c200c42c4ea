"""Who is asking: turn a session id or Basic credentials into the user's CURRENT identity.

Every verify re-checks the user against the users file as it is now (exists, enabled,
password unchanged, current groups), so ``user disable``, ``user remove``, ``user passwd``
and group edits take effect on the next request (GHSA-x883-2vmg-xwf7).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import typing as t
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

from server.core.blocking import check as check_blocking
from server.core.hashcap import HashGate
from server.core.session_store import SessionStoreError
from server.core.sessions import user_stamp
from server.core.signin import PasswordCheck

if t.TYPE_CHECKING:
    from server.core.passwords import PasswordHasher
    from server.core.regulation import Regulator
    from server.core.sessions import Session
    from server.core.sessions import SessionManager
    from server.core.users import User
    from server.core.users import UsersSource


log = logging.getLogger("authctl.identity")

#: Nice value of the threads that run argon2.
HASH_NICE = 19


def _lower_priority() -> None:  # pragma: no cover - platform dependent
    """Run this (hashing) thread, and the lane threads argon2 starts from it, at the lowest
    nice value, so verifies come first but logins still get some CPU time.

    Linux keeps the nice value per thread, so the server's own threads are unaffected.
    Measured with 50 clients logging in as fast as they can while wrk verifies on the same
    core (``bench/run.py``, 2026-11-27, verify answered in the I/O thread): at nice 19
    verify p99 10-12 ms (SPEC: < 20) and 0.4 logins/s still succeed; under Linux's
    SCHED_IDLE policy p99 was 6-7 ms but not one login succeeded while wrk kept the core
    busy, so a flood of requests could lock every user out. Logins that find every hashing
    slot taken are refused at once, so the wait never holds more than
    ``gate.max_concurrent`` threads.
    """
    if hasattr(os, "setpriority") and os.uname().sysname == "Linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICE)


@dataclass(frozen=True, slots=True)
class Identity:
    """A signed-in user as the rules and the ``Remote-*`` headers see them."""

    username: str
    groups: tuple[str, ...]
    displayname: str
    email: str
    level: int


@lru_cache(maxsize=4096)
def stamp_of(password_hash: str) -> str:
    """The password stamp of a hash, cached: it is computed on every verify."""
    return user_stamp(password_hash)


def _identity(user: User, level: int) -> Identity:
    return Identity(user.name, user.groups, user.displayname, user.email, level)


@dataclass(frozen=True, slots=True)
class _Known:
    """An enabled user of one users-file snapshot, with what every verify needs precomputed."""

    user: User
    stamp: str
    identities: tuple[Identity, Identity, Identity]  # indexed by level 0, 1, 2


def _known(user: User) -> _Known:
    return _Known(user, stamp_of(user.password), tuple(_identity(user, n) for n in range(3)))  # type: ignore[arg-type]


class IdentityResolver:
    """Resolves sessions and credentials against the live users file."""

    def __init__(
        self,
        users: UsersSource,
        sessions: SessionManager,
        hasher: PasswordHasher,
        *,
        regulator: Regulator | None = None,
        gate: HashGate | None = None,
    ) -> None:
        self.users = users
        self.sessions = sessions
        self.hasher = hasher
        self.regulator = regulator
        # wait_seconds=0: a login never waits for a slot while holding a server thread
        self.gate = gate if gate is not None else HashGate(64, wait_seconds=0)
        self._pool_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        # (snapshot, canonical name -> _Known): replaced as a whole when the users file is
        # re-read, so an entry is only ever found next to the snapshot it was taken from.
        self._known: tuple[object, dict[str, _Known]] = (None, {})
        self.signin = PasswordCheck(
            users=users,
            lookup=self.lookup,
            hasher=hasher,
            gate=self.gate,
            run=self._hash,
            regulator=regulator,
        )

    def _lookup(self, username: str) -> _Known | None:
        db = self.users.current()
        snapshot = self._known
        if snapshot[0] is not db:
            snapshot = (db, {})
            self._known = snapshot
        known = snapshot[1].get(username)
        if known is not None:
            return known
        user = db.get(username)
        if user is None or user.disabled:
            return None
        known = _known(user)
        if user.name == username:  # canonical names only: at most one entry per user
            snapshot[1][username] = known
        return known

    def lookup(self, username: str) -> User | None:
        """The enabled user of that (canonical) name, or None."""
        known = self._lookup(username)
        return known.user if known is not None else None

    def current(self, username: str, stamp: str, level: int) -> Identity | None:
        """The identity if the user still exists, is enabled and has the same password.

        On the hot path (every verify): one clock check of the users file and dict lookups,
        no hashing and no object built, for users already seen in this snapshot.
        """
        known = self._lookup(username)
        if known is None or known.stamp != stamp:
            return None
        if 0 <= level <= 2:
            return known.identities[level]
        return _identity(known.user, level)

    def from_session(self, session_id: str, cookie_domain: str) -> tuple[Identity, Session] | None:
        """The identity behind a session cookie; a stale session is ended.

        "Stale" is judged on the newest users file: a session that looks stale on this
        process's snapshot gets the file re-checked first, because another worker may have
        re-enabled the user (or set the password the session was made with) since.
        """
        try:
            session = self.sessions.load(session_id, cookie_domain)
        except SessionStoreError:
            # fail closed: a store we cannot read means "not signed in", never "allowed";
            # the store logs an outage when it starts and ends, not once per request
            return None
        if session is None or session.username is None or session.level < 1:
            return None
        identity = self.current(session.username, session.user_stamp, session.level)
        if identity is None and self.users.refresh():
            # judged on a snapshot older than the file: judge again before ending it for good
            identity = self.current(session.username, session.user_stamp, session.level)
        if identity is None:
            self.sessions.discard(session.id)
            return None
        return identity, session

    def check_password(
        self, username: str, password: str, *, ip: str | None = None, kind: str = "1FA"
    ) -> tuple[Identity, str] | None:
        """Verify a password under regulation and the hash gate (:mod:`server.core.signin`).

        Unknown, disabled, wrong and banned all give None in the same time (SPEC §3.4); a ban
        is decided before any hashing, so during a ban the right password fails too
        (Authelia). A storage error fails closed.
        """
        check_blocking()  # regulation reads storage, hashing waits for a slot: pool threads only
        user = self.signin.check(username, password, ip=ip, kind=kind)
        if user is None:
            return None
        return _identity(user, 1), stamp_of(user.password)

    def _hash(self, work: Callable[..., bool], *args: str) -> bool:
        """``work(*args)`` (an argon2 verification) without starving verifies.

        Two rules keep a login flood from taking the server (SPEC §5: verify p99 under 20 ms
        while 50 clients log in). A login never WAITS for a hashing slot while holding a
        server thread: when ``gate.max_concurrent`` logins are already hashing, the next one
        is refused (``Busy``, answered like a failed login) after ``gate.wait_seconds`` —
        zero as ``make_app`` builds it — so the threads the gate leaves free stay free for
        verifies. And the hash runs on a small pool of threads at
        a lower CPU priority (``HASH_NICE``), so it only gets the time verifies leave.

        Raises:
            Busy: every hashing slot is taken.
        """
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.gate.max_concurrent,
                    thread_name_prefix="authctl-hash",
                    initializer=_lower_priority,
                )
            pool = self._pool
        with self.gate.slot():
            return pool.submit(work, *args).result()

    def touch(self, session: Session) -> None:
        """Record activity (the manager coalesces writes)."""
        self.sessions.touch(session)
