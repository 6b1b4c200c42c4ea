"""Who is asking: turn a session id or Basic credentials into the user's CURRENT identity.

Every verify re-checks the user against the users file as it is now (exists, enabled,
password unchanged, current groups), so ``user disable``, ``user remove``, ``user passwd``
and group edits take effect on the next request (GHSA-x883-2vmg-xwf7). Pure core.
"""

from __future__ import annotations

import logging
import typing as t
from dataclasses import dataclass
from functools import lru_cache

from server.errors import Banned
from server.hashcap import Busy
from server.hashcap import HashGate
from server.names import canonical_username
from server.session_store import SessionStoreError
from server.sessions import user_stamp
from server.storage import StorageError

if t.TYPE_CHECKING:
    from server.passwords import PasswordHasher
    from server.regulation import Regulator
    from server.sessions import Session
    from server.sessions import SessionManager
    from server.users import User
    from server.users import UsersSource


log = logging.getLogger("authctl.identity")


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
        self.gate = gate if gate is not None else HashGate(64)

    def lookup(self, username: str) -> User | None:
        """The enabled user of that (canonical) name, or None."""
        user = self.users.current().get(username)
        if user is None or user.disabled:
            return None
        return user

    def current(self, username: str, stamp: str, level: int) -> Identity | None:
        """The identity if the user still exists, is enabled and has the same password."""
        user = self.lookup(username)
        if user is None or stamp_of(user.password) != stamp:
            return None
        return _identity(user, level)

    def from_session(self, session_id: str, cookie_domain: str) -> tuple[Identity, Session] | None:
        """The identity behind a session cookie; a stale session is destroyed."""
        try:
            session = self.sessions.load(session_id, cookie_domain)
        except SessionStoreError:
            # fail closed: a store we cannot read means "not signed in", never "allowed"
            log.exception("session store failed; treating the request as anonymous")
            return None
        if session is None or session.username is None or session.level < 1:
            return None
        identity = self.current(session.username, session.user_stamp, session.level)
        if identity is None:
            self.sessions.destroy(session.id)
            return None
        return identity, session

    def check_password(
        self, username: str, password: str, *, ip: str | None = None, kind: str = "1FA"
    ) -> tuple[Identity, str] | None:
        """Verify a password under regulation and the hash gate.

        Unknown, disabled, wrong and banned all cost one argon2 verification and give None,
        so neither the answer nor its timing tells them apart (SPEC §3.4). A ban is checked
        before the password, so during a ban the right password fails too (Authelia). A
        storage error fails closed. When no hashing slot comes free in time the attempt is
        refused without being counted: no password was tried.
        """
        name = canonical_username(username)
        banned = False
        if self.regulator is not None:
            try:
                self.regulator.check(name, ip)
            except Banned:
                banned = True
            except StorageError:
                log.exception("regulation store failed; refusing the login")
                return None
        user = None if banned else self.lookup(name)
        try:
            with self.gate.slot():
                if user is None:
                    ok = self.hasher.dummy_verify(password)
                else:
                    ok = self.hasher.verify(user.password, password)
        except Busy:
            log.warning(
                "password hashing is saturated; refusing a login", extra={"fields": {"user": name}}
            )
            return None
        if self.regulator is not None:
            try:
                self.regulator.record(name, ip, kind, ok, banned=banned)
            except StorageError:
                log.exception("regulation store failed; refusing the login")
                return None
        if not ok or user is None:
            return None
        return _identity(user, 1), stamp_of(user.password)

    def touch(self, session: Session) -> None:
        """Record activity (the manager coalesces writes)."""
        self.sessions.touch(session)
