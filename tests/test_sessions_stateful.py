"""A stateful model of the session lifecycle, checked by hypothesis (security.md §4).

Random sequences of logins, verifies, elevations, logouts, moved cookies, user-wide
destruction, clock jumps and replays of old ids run against ``SessionManager`` on both stores,
next to a plain-Python model of which ids must still work. After every step every id ever
issued is checked against the model, so a replayed, logged-out, elevated-away, expired or
destroyed id can never load, and a live one always does.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine
from hypothesis.stateful import initialize
from hypothesis.stateful import invariant
from hypothesis.stateful import precondition
from hypothesis.stateful import rule

from server.core.config import CookieConfig
from server.core.config import SessionConfig
from server.core.session_store import MemoryStore
from server.core.session_store import SessionStore
from server.core.session_store import SQLiteStore
from server.core.sessions import Level
from server.core.sessions import Session
from server.core.sessions import SessionGoneError
from server.core.sessions import SessionManager

DOMAIN = "example.com"
OTHER = "example.org"
USERS = ("alice", "bob", "carol")
CONFIG = SessionConfig(
    cookies=(
        CookieConfig(DOMAIN, "https://auth.example.com"),
        CookieConfig(OTHER, "https://auth.example.org"),
    ),
    expiration=100,
    inactivity=20,
    remember_me=300,
)
#: Clock jumps that straddle every limit above (inactivity 20, expiration 100, remember 300).
JUMPS = (1, 2, 5, 19, 20, 21, 50, 99, 100, 101, 299, 301)


class Clock:
    """A settable clock shared by the manager and its store."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Expected:
    """What the model knows about one live id."""

    session: Session
    last_activity: float

    def alive(self, now: float) -> bool:
        """Whether this session must still load at ``now`` (the rules, restated plainly)."""
        s = self.session
        lifetime = CONFIG.remember_me if s.remember_me else CONFIG.expiration
        if now >= s.created + lifetime:
            return False
        return s.remember_me or now <= self.last_activity + CONFIG.inactivity


class SessionLifecycle(RuleBasedStateMachine):
    """The session manager against a model of which ids are live."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.store = self.make_store()
        self.manager = SessionManager(CONFIG, self.store, now=self.clock)
        self.issued: list[str] = []
        self.sessions: dict[str, Session] = {}
        self.live: dict[str, Expected] = {}
        self.deleted: set[str] = set()

    def make_store(self) -> SessionStore:
        """The store under test."""
        return MemoryStore(now=self.clock)

    def teardown(self) -> None:
        """Close the store."""
        self.store.close()

    # ----------------------------------------------------------------- helpers

    def _pick(self, index: int) -> str:
        return self.issued[index % len(self.issued)]

    def _issue(self, session: Session) -> None:
        assert session.id not in self.sessions, "an id was issued twice"
        self.issued.append(session.id)
        self.sessions[session.id] = session
        self.live[session.id] = Expected(session, self.clock.now)

    def _kill(self, session_id: str, *, deleted: bool) -> None:
        self.live.pop(session_id, None)
        if deleted:
            self.deleted.add(session_id)

    def _expected_alive(self, session_id: str) -> bool:
        expected = self.live.get(session_id)
        return expected is not None and expected.alive(self.clock.now)

    # ----------------------------------------------------------------- rules

    @initialize(user=st.sampled_from(USERS), remember_me=st.booleans())
    def first_login(self, user: str, remember_me: bool) -> None:
        """Start with one session so the id-picking rules are enabled from the first step."""
        self.login(user, remember_me)

    @rule(user=st.sampled_from(USERS), remember_me=st.booleans())
    def login(self, user: str, remember_me: bool) -> None:
        """A first factor creates a new session with an id never seen before."""
        self._issue(self.manager.create(DOMAIN, user, Level.ONE_FACTOR, remember_me, "stamp"))

    @precondition(lambda self: self.issued)
    @rule(index=st.integers(min_value=0))
    def verify(self, index: int) -> None:
        """A verify with any id ever issued, live or not."""
        self._verify(self._pick(index))

    @precondition(lambda self: self.live)
    @rule(index=st.integers(min_value=0))
    def verify_live(self, index: int) -> None:
        """A verify with an id the model believes live (the common case)."""
        ids = list(self.live)
        self._verify(ids[index % len(ids)])

    def _verify(self, session_id: str) -> None:
        """Load the cookie's session and record activity, coalesced, as the verify path does."""
        expected = self._expected_alive(session_id)
        loaded = self.manager.load(session_id, DOMAIN)
        assert (loaded is not None) == expected, "load disagrees with the model"
        if loaded is None:
            self._kill(session_id, deleted=True)
            return
        model = self.live[session_id]
        assert loaded.username == model.session.username
        assert loaded.level == model.session.level
        assert loaded.last_activity == model.last_activity
        since = self.clock.now - model.last_activity
        wrote = self.manager.touch(loaded)
        if loaded.remember_me:
            assert not wrote
        else:
            assert wrote == (since >= self.manager.touch_interval)
        if wrote:
            model.last_activity = self.clock.now

    @precondition(lambda self: self.issued)
    @rule(index=st.integers(min_value=0))
    def elevate(self, index: int) -> None:
        """A second factor on a live session moves it to a new id; on a dead one it fails."""
        session_id = self._pick(index)
        old = self.sessions[session_id]
        if not self._expected_alive(session_id):
            try:
                self.manager.elevate(old, Level.TWO_FACTOR)
            except SessionGoneError:
                self._kill(session_id, deleted=True)
                return
            raise AssertionError("a dead session was elevated")
        new = self.manager.elevate(old, Level.TWO_FACTOR)
        assert new.id != old.id
        assert new.level is Level.TWO_FACTOR
        assert new.created == old.created
        self._kill(session_id, deleted=True)
        self._issue(new)

    @precondition(lambda self: self.issued)
    @rule(index=st.integers(min_value=0))
    def logout(self, index: int) -> None:
        """Logout ends the session for good."""
        session_id = self._pick(index)
        self.manager.destroy(session_id)
        self._kill(session_id, deleted=True)

    @precondition(lambda self: self.issued)
    @rule(index=st.integers(min_value=0))
    def move_cookie(self, index: int) -> None:
        """A cookie replayed on another cookie domain is refused and its session destroyed."""
        session_id = self._pick(index)
        assert self.manager.load(session_id, OTHER) is None
        self._kill(session_id, deleted=True)

    @rule(user=st.sampled_from(USERS))
    def destroy_user(self, user: str) -> None:
        """A password change, disable or removal ends every session of that user."""
        mine = [sid for sid, e in self.live.items() if e.session.username == user]
        live_count = sum(self._expected_alive(sid) for sid in mine)
        assert self.manager.destroy_user(user) >= live_count
        for session_id in mine:
            self._kill(session_id, deleted=True)

    @rule(seconds=st.sampled_from(JUMPS))
    def advance_clock(self, seconds: int) -> None:
        """Time passes."""
        self.clock.now += seconds

    @precondition(lambda self: self.deleted)
    @rule(index=st.integers(min_value=0))
    def replay_old_id(self, index: int) -> None:
        """An attacker replays an id that was logged out, elevated away or destroyed."""
        dead = sorted(self.deleted)
        session_id = dead[index % len(dead)]
        assert self.manager.load(session_id, DOMAIN) is None
        old = self.sessions[session_id]
        try:
            self.manager.elevate(old, Level.TWO_FACTOR)
        except SessionGoneError:
            pass
        else:
            raise AssertionError("a dead id was elevated")

    # ----------------------------------------------------------------- invariants

    @invariant()
    def every_id_matches_the_model(self) -> None:
        """Every id ever issued loads exactly when the model says it is live."""
        for session_id in self.issued:
            expected = self._expected_alive(session_id)
            loaded = self.manager.load(session_id, DOMAIN)
            assert (loaded is not None) == expected, "load disagrees with the model"
            if not expected:
                self._kill(session_id, deleted=True)

    @invariant()
    def deleted_ids_are_gone_from_the_store(self) -> None:
        """A logged-out, elevated-away or destroyed id is deleted, not merely hidden."""
        for session_id in self.deleted:
            assert self.store.get(session_id) is None


class SQLiteSessionLifecycle(SessionLifecycle):
    """The same model on the SQLite store, each run on a fresh file."""

    def make_store(self) -> SessionStore:
        """A SQLite store in a fresh temporary folder."""
        self.folder = Path(tempfile.mkdtemp(prefix="authctl-sessions-"))
        return SQLiteStore(self.folder / "sessions.db", now=self.clock)

    def teardown(self) -> None:
        """Close the store and remove its folder."""
        super().teardown()
        shutil.rmtree(self.folder, ignore_errors=True)


TestSessionLifecycleMemory = SessionLifecycle.TestCase
TestSessionLifecycleMemory.settings = settings(stateful_step_count=50)
TestSessionLifecycleMemory.__doc__ = "The session lifecycle model holds on the memory store."

TestSessionLifecycleSQLite = SQLiteSessionLifecycle.TestCase
TestSessionLifecycleSQLite.settings = settings(max_examples=30, stateful_step_count=40)
TestSessionLifecycleSQLite.__doc__ = "The session lifecycle model holds on the SQLite store."
