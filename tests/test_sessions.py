"""Session model and manager: lifetimes, fixation defence, coalesced activity writes, cookies.

Every time rule runs on an injected clock (no sleeping), and store writes are counted with a
small hand-written wrapper store rather than a mock library, so the tests say exactly how many
writes the verify path costs.
"""

from __future__ import annotations

import dataclasses
import re
import typing as t
from collections.abc import Iterator
from http.cookies import SimpleCookie

import pytest

from server.core.config import CookieConfig
from server.core.config import SessionConfig
from server.core.session_store import MemoryStore
from server.core.session_store import SessionStoreError
from server.core.sessions import ID_PATTERN
from server.core.sessions import MAX_TOUCH_INTERVAL
from server.core.sessions import PURGE_INTERVAL
from server.core.sessions import WRITE_RETRY
from server.core.sessions import Level
from server.core.sessions import Session
from server.core.sessions import SessionGoneError
from server.core.sessions import SessionManager
from server.core.sessions import is_session_id
from server.core.sessions import new_session_id
from server.core.sessions import user_stamp

DOMAIN = "example.com"
OTHER = "example.org"
HOUR = 3600
DAY = 86400
STAMP = user_stamp("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA")


class Clock:
    """A settable clock for the manager and its store."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingStore(MemoryStore):
    """A MemoryStore that counts calls, to pin how many reads and writes a flow costs."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(now=clock)
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def get(self, session_id: str) -> Session | None:
        """Count, then read."""
        self._count("get")
        return super().get(session_id)

    def put(self, session: Session, ttl: float) -> None:
        """Count, then write."""
        self._count("put")
        self.last_ttl = ttl
        super().put(session, ttl)

    def touch(self, session_id: str, last_activity: float) -> None:
        """Count, then write."""
        self._count("touch")
        super().touch(session_id, last_activity)

    def delete(self, session_id: str) -> bool:
        """Count, then delete."""
        self._count("delete")
        return super().delete(session_id)

    def purge_expired(self, now: float) -> int:
        """Count, then purge."""
        self._count("purge_expired")
        return super().purge_expired(now)


class TtlBlindStore(MemoryStore):
    """A store that keeps everything forever, as a store with a skewed clock might."""

    def put(self, session: Session, ttl: float) -> None:
        """Ignore the TTL."""
        super().put(session, 10 * 365 * DAY)


class BrokenStore(MemoryStore):
    """A store whose reads fail, as a locked or vanished database would."""

    def get(self, session_id: str) -> Session | None:
        """Always fail."""
        raise SessionStoreError("disk on fire")


def make_config(
    *,
    expiration: int = HOUR,
    inactivity: int = 300,
    remember_me: int = 30 * DAY,
    same_site: str = "lax",
) -> SessionConfig:
    """A session config with two cookie domains."""
    return SessionConfig(
        cookies=(
            CookieConfig(DOMAIN, "https://auth.example.com"),
            CookieConfig(OTHER, "https://auth.example.org"),
        ),
        expiration=expiration,
        inactivity=inactivity,
        remember_me=remember_me,
        same_site=same_site,
    )


@pytest.fixture
def clock() -> Clock:
    """A fresh clock (this file's own class, shared with the store)."""
    return Clock()


@pytest.fixture
def store(clock: Clock) -> Iterator[CountingStore]:
    """A counting memory store on ``clock``."""
    store = CountingStore(clock)
    yield store
    store.close()


@pytest.fixture
def manager(store: CountingStore, clock: Clock) -> SessionManager:
    """A manager with the default lifetimes (1 h, 5 min idle, 30 days remember-me)."""
    return SessionManager(make_config(), store, now=clock)


def login(manager: SessionManager, username: str = "alice", remember_me: bool = False) -> Session:
    """A one-factor session for ``username`` on DOMAIN."""
    return manager.create(DOMAIN, username, Level.ONE_FACTOR, remember_me, STAMP)


# --------------------------------------------------------------------------- model


class TestModel:
    """The Session value object and the id and stamp helpers."""

    def test_ids_have_256_bits_and_differ(self) -> None:
        """Ids are 43 URL-safe characters (256 bits) and never repeat."""
        ids = {new_session_id() for _ in range(1000)}
        assert len(ids) == 1000
        assert all(ID_PATTERN.fullmatch(i) for i in ids)

    def test_repr_hides_id_and_stamp(self, manager: SessionManager) -> None:
        """A logged session never shows its live id or the password stamp."""
        session = login(manager)
        text = repr(session)
        assert session.id not in text
        assert STAMP not in text
        assert "alice" in text

    def test_data_is_read_only_and_copied(self) -> None:
        """data cannot be changed through the session nor through the dict it was built from."""
        source = {"k": "v"}
        session = Session(
            id=new_session_id(),
            cookie_domain=DOMAIN,
            username="alice",
            level=Level.ONE_FACTOR,
            created=0.0,
            last_activity=0.0,
            auth_time=0.0,
            data=source,
        )
        source["k"] = "changed"
        assert session.data["k"] == "v"
        with pytest.raises(TypeError):
            session.data["k"] = "x"  # type: ignore[index]
        with pytest.raises(dataclasses.FrozenInstanceError):
            session.username = "mallory"  # type: ignore[misc]
        assert hash(session) == hash(dataclasses.replace(session))

    def test_plain_int_level_becomes_a_level(self) -> None:
        """A level given as an int (as stores read it) is normalised to Level."""
        session = Session(
            id=new_session_id(),
            cookie_domain=DOMAIN,
            username="alice",
            level=2,  # type: ignore[arg-type]
            created=0.0,
            last_activity=0.0,
            auth_time=0.0,
        )
        assert session.level is Level.TWO_FACTOR

    @pytest.mark.parametrize(
        ("username", "level", "data"),
        [
            (None, Level.ONE_FACTOR, {}),
            ("alice", Level.NONE, {}),
            ("alice", 3, {}),
            ("alice", Level.ONE_FACTOR, {"k": 1}),
        ],
        ids=["level-without-user", "user-without-level", "unknown-level", "non-string-data"],
    )
    def test_impossible_records_are_refused(
        self, username: str | None, level: int, data: dict[str, object]
    ) -> None:
        """A session that could not have been issued cannot be built."""
        with pytest.raises(ValueError, match=r"."):
            Session(
                id=new_session_id(),
                cookie_domain=DOMAIN,
                username=username,
                level=level,  # type: ignore[arg-type]
                created=0.0,
                last_activity=0.0,
                auth_time=0.0,
                data=data,  # type: ignore[arg-type]
            )

    def test_user_stamp_is_opaque_and_changes_with_the_hash(self) -> None:
        """The stamp is a fixed-size hex digest that differs per hash and hides the hash."""
        a = user_stamp("$argon2id$v=19$m=8,t=1,p=1$c2FsdA$AAAA")
        b = user_stamp("$argon2id$v=19$m=8,t=1,p=1$c2FsdA$AAAB")
        assert a != b
        assert a == user_stamp("$argon2id$v=19$m=8,t=1,p=1$c2FsdA$AAAA")
        assert re.fullmatch(r"[0-9a-f]{32}", a)
        assert "argon2" not in a

    def test_authenticated_flag(self, manager: SessionManager) -> None:
        """authenticated is True exactly for sessions with a user."""
        assert login(manager).authenticated
        assert not manager.create(DOMAIN, None, Level.NONE).authenticated


# --------------------------------------------------------------------------- create


class TestCreate:
    """Creating sessions: fresh ids, validation, remember-me, purging."""

    def test_create_stores_a_fresh_session(
        self, manager: SessionManager, store: CountingStore, clock: Clock
    ) -> None:
        """A new session is stored for its whole absolute lifetime and loads back."""
        session = login(manager)
        assert session.level is Level.ONE_FACTOR
        assert session.created == session.auth_time == session.last_activity == clock.now
        assert session.user_stamp == STAMP
        assert store.last_ttl == HOUR
        assert manager.load(session.id, DOMAIN) == session

    def test_every_login_gets_a_new_id(self, manager: SessionManager) -> None:
        """Two logins of one user never share an id (fixation defence)."""
        assert login(manager).id != login(manager).id

    def test_client_chosen_id_is_never_adopted(self, manager: SessionManager) -> None:
        """A well-formed id the server never issued loads as nothing and is not reused."""
        chosen = "A" * 43
        assert is_session_id(chosen)
        assert manager.load(chosen, DOMAIN) is None
        assert login(manager).id != chosen

    def test_remember_me_gets_the_long_ttl(
        self, manager: SessionManager, store: CountingStore
    ) -> None:
        """A remember-me session is stored for remember_me seconds."""
        session = login(manager, remember_me=True)
        assert session.remember_me
        assert store.last_ttl == 30 * DAY

    def test_remember_me_disabled_is_ignored(self, store: CountingStore, clock: Clock) -> None:
        """With remember_me = 0 the checkbox is ignored: a normal session is made."""
        manager = SessionManager(make_config(remember_me=0), store, now=clock)
        assert not manager.remember_me_enabled
        session = login(manager, remember_me=True)
        assert not session.remember_me
        assert store.last_ttl == HOUR

    @pytest.mark.parametrize(
        ("domain", "username", "level"),
        [
            ("evil.com", "alice", 1),
            ("sub.example.com", "alice", 1),
            (DOMAIN, "Alice", 1),
            (DOMAIN, "\uff41\uff4c\uff49\uff43\uff45", 1),  # fullwidth "alice"
            (DOMAIN, "alice", 0),
            (DOMAIN, None, 2),
            (DOMAIN, "alice", 5),
        ],
        ids=[
            "unknown-domain",
            "subdomain-not-a-cookie-domain",
            "upper-case-name",
            "fullwidth-name",
            "user-at-level-0",
            "level-without-user",
            "unknown-level",
        ],
    )
    def test_invalid_create_is_refused(
        self, manager: SessionManager, domain: str, username: str | None, level: int
    ) -> None:
        """create refuses unconfigured domains, non-canonical names and impossible levels."""
        with pytest.raises(ValueError, match=r"."):
            manager.create(domain, username, level)

    def test_create_purges_at_most_once_a_minute(
        self, manager: SessionManager, store: CountingStore, clock: Clock
    ) -> None:
        """Logins sweep expired sessions, but not more than once per PURGE_INTERVAL."""
        old = login(manager)
        assert store.calls["purge_expired"] == 1
        clock.advance(HOUR + 1)
        login(manager)
        assert store.calls["purge_expired"] == 2
        assert len(store) == 1  # the expired one was swept
        assert store.get(old.id) is None
        clock.advance(PURGE_INTERVAL - 1)
        login(manager)
        assert store.calls["purge_expired"] == 2
        clock.advance(1)
        login(manager)
        assert store.calls["purge_expired"] == 3

    def test_purge_expired(self, manager: SessionManager, clock: Clock) -> None:
        """purge_expired removes sessions past their absolute limit and counts them."""
        login(manager)
        login(manager, remember_me=True)
        clock.advance(HOUR)
        assert manager.purge_expired() == 1


# --------------------------------------------------------------------------- load


# (remember_me, inactivity, steps, alive): each step advances the clock, then a verify runs
# (load + touch) unless it is the last step, after which the final load must match ``alive``.
LIFETIMES = [
    (False, 300, [299], True),
    (False, 300, [300], True),
    (False, 300, [301], False),
    (False, 300, [200, 200, 200], True),
    (False, 300, [200] * 17 + [199], True),  # 3599 s of steady use
    (False, 300, [200] * 18, False),  # 3600 s: the absolute limit wins over activity
    (False, 300, [HOUR + 1], False),
    (True, 300, [301], True),  # remember-me is exempt from inactivity
    (True, 300, [10 * DAY], True),
    (True, 300, [30 * DAY - 1], True),
    (True, 300, [30 * DAY], False),
    (True, 300, [15 * DAY, 15 * DAY], False),
    (False, 0, [HOUR - 1], True),  # inactivity 0 disables the idle limit
    (False, 0, [HOUR], False),
    (False, 20, [10, 10, 10, 21], False),
    (False, 20, [10, 10, 10, 20], True),
]


@pytest.mark.parametrize(
    ("remember_me", "inactivity", "steps", "alive"),
    LIFETIMES,
    ids=[f"rm={r}-idle={i}-steps={sum(s)}-{'alive' if a else 'dead'}" for r, i, s, a in LIFETIMES],
)
def test_lifetimes(
    store: CountingStore,
    clock: Clock,
    remember_me: bool,
    inactivity: int,
    steps: list[int],
    alive: bool,
) -> None:
    """Absolute expiration, inactivity and remember-me end sessions exactly when configured."""
    manager = SessionManager(make_config(inactivity=inactivity), store, now=clock)
    session = login(manager, remember_me=remember_me)
    for step in steps[:-1]:
        clock.advance(step)
        current = manager.load(session.id, DOMAIN)
        assert current is not None
        manager.touch(current)
    clock.advance(steps[-1])
    assert (manager.load(session.id, DOMAIN) is not None) is alive
    if not alive:
        assert store.get(session.id) is None  # a dead session is deleted, not just hidden


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "short",
        "A" * 42,
        "A" * 44,
        "A" * 42 + "!",
        "A" * 42 + "=",
        "A" * 42 + "\n",
        "A" * 42 + "é",
        " " + "A" * 42,
        "A" * 8192,
        "../" * 15,
    ],
    ids=[
        "none",
        "empty",
        "short",
        "42",
        "44",
        "bang",
        "padding",
        "newline",
        "non-ascii",
        "leading-space",
        "8k",
        "dots",
    ],
)
def test_malformed_ids_never_reach_the_store(
    manager: SessionManager, store: CountingStore, value: str | None
) -> None:
    """A cookie value that is not one of our ids is refused before any store access."""
    assert manager.load(value, DOMAIN) is None
    assert "get" not in store.calls


def test_flipped_character_is_unknown(manager: SessionManager) -> None:
    """Changing one character of a live id gives an unknown session."""
    session = login(manager)
    flipped = ("B" if session.id[0] == "A" else "A") + session.id[1:]
    assert manager.load(flipped, DOMAIN) is None
    assert manager.load(session.id, DOMAIN) == session


def test_moved_cookie_is_destroyed(manager: SessionManager, store: CountingStore) -> None:
    """A session presented under another cookie domain is refused and deleted."""
    session = login(manager)
    assert manager.load(session.id, OTHER) is None
    assert store.get(session.id) is None
    assert manager.load(session.id, DOMAIN) is None


@pytest.mark.parametrize("remember_me", [False, True])
def test_absolute_limit_does_not_rely_on_the_store_ttl(clock: Clock, remember_me: bool) -> None:
    """The manager itself ends a session at its absolute limit, even if the store keeps it."""
    store = TtlBlindStore(now=clock)
    manager = SessionManager(make_config(inactivity=0), store, now=clock)
    session = login(manager, remember_me=remember_me)
    clock.advance(manager.expires_at(session) - clock.now)
    assert manager.load(session.id, DOMAIN) is None
    assert store.get(session.id) is None
    elevated_too_late = login(manager, remember_me=remember_me)
    clock.advance(manager.expires_at(elevated_too_late) - clock.now)
    with pytest.raises(SessionGoneError):
        manager.elevate(elevated_too_late, Level.TWO_FACTOR)
    assert store.get(elevated_too_late.id) is None


def test_store_error_is_raised_not_swallowed(clock: Clock) -> None:
    """A failing store makes load raise SessionStoreError (fail closed), never return a session."""
    manager = SessionManager(make_config(), BrokenStore(now=clock), now=clock)
    with pytest.raises(SessionStoreError):
        manager.load(new_session_id(), DOMAIN)


# --------------------------------------------------------------------------- touch


@pytest.mark.parametrize(
    ("inactivity", "interval"),
    [(300, MAX_TOUCH_INTERVAL), (3600, MAX_TOUCH_INTERVAL), (20, 2.0), (1, 0.1), (0, 0.0)],
)
def test_touch_interval(store: CountingStore, inactivity: int, interval: float) -> None:
    """Writes are spaced by min(5 s, inactivity / 10), or never when inactivity is off."""
    manager = SessionManager(make_config(inactivity=inactivity), store)
    assert manager.touch_interval == interval


@pytest.mark.parametrize(
    ("remember_me", "inactivity", "writes"),
    [(False, 300, 20), (False, 20, 50), (True, 300, 0), (False, 0, 0)],
    ids=["default", "short-idle", "remember-me", "idle-off"],
)
def test_touches_are_coalesced(
    store: CountingStore, clock: Clock, remember_me: bool, inactivity: int, writes: int
) -> None:
    """100 verifies one second apart cost only the coalesced number of store writes."""
    manager = SessionManager(make_config(inactivity=inactivity), store, now=clock)
    session = login(manager, remember_me=remember_me)
    wrote = 0
    for _ in range(100):
        clock.advance(1)
        current = manager.load(session.id, DOMAIN)
        assert current is not None
        wrote += manager.touch(current)
    assert wrote == writes
    assert store.calls.get("touch", 0) == writes
    assert store.calls["put"] == 1


def test_touch_keeps_a_busy_session_alive(manager: SessionManager, clock: Clock) -> None:
    """With coalescing, a session used every 4 minutes for 50 minutes stays alive."""
    session = login(manager)
    for _ in range(12):
        clock.advance(240)
        current = manager.load(session.id, DOMAIN)
        assert current is not None
        assert manager.touch(current)


def test_touch_does_not_resurrect(
    manager: SessionManager, store: CountingStore, clock: Clock
) -> None:
    """A touch racing a logout leaves the session logged out."""
    session = login(manager)
    manager.destroy(session.id)
    clock.advance(10)
    assert manager.touch(session) is True
    assert manager.load(session.id, DOMAIN) is None


class ReadOnlyStore(CountingStore):
    """A store that reads but cannot write (full disk, a lock held elsewhere, read-only
    Redis): every best-effort write fails."""

    def touch(self, session_id: str, last_activity: float) -> None:
        """Count, then fail."""
        self._count("touch")
        raise SessionStoreError("database is locked")

    def discard(self, session_id: str) -> None:
        """Count, then fail."""
        self._count("discard")
        raise SessionStoreError("database is locked")


def test_failed_activity_write_never_fails_the_request(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """touch is best effort: a store that cannot write gives False, not an error; the
    failure is logged once, and no write is tried again for WRITE_RETRY seconds."""
    store = ReadOnlyStore(clock)
    manager = SessionManager(make_config(), store, now=clock)
    session = login(manager)
    clock.advance(MAX_TOUCH_INTERVAL)
    with caplog.at_level("WARNING", logger="authctl.sessions"):
        for _ in range(20):  # every verify is due a write, four per WRITE_RETRY
            clock.advance(WRITE_RETRY / 4)
            current = manager.load(session.id, DOMAIN)
            assert current is not None
            assert manager.touch(current) is False
    assert store.calls["touch"] == 5  # one try per WRITE_RETRY, not one per verify
    assert len([r for r in caplog.records if "write skipped" in r.getMessage()]) == 1


def test_dead_session_that_cannot_be_deleted_is_still_refused(clock: Clock) -> None:
    """load refuses a dead session (here: idle too long) even when deleting it fails, and
    without an error."""
    store = ReadOnlyStore(clock)
    manager = SessionManager(make_config(), store, now=clock)
    session = login(manager)
    clock.advance(301)
    assert manager.load(session.id, DOMAIN) is None
    assert store.calls["discard"] == 1


# --------------------------------------------------------------------------- elevate


class TestElevate:
    """Each factor regenerates the id; the old one is dead for good."""

    def test_elevate_regenerates_the_id(self, manager: SessionManager, clock: Clock) -> None:
        """Elevation returns a new id at the new level; the old id no longer loads."""
        session = login(manager)
        clock.advance(30)
        elevated = manager.elevate(session, Level.TWO_FACTOR)
        assert elevated.id != session.id
        assert elevated.level is Level.TWO_FACTOR
        assert elevated.auth_time == elevated.last_activity == clock.now
        assert elevated.created == session.created
        assert elevated.user_stamp == session.user_stamp
        assert manager.load(session.id, DOMAIN) is None
        assert manager.load(elevated.id, DOMAIN) == elevated

    def test_elevate_keeps_the_absolute_limit(self, store: CountingStore, clock: Clock) -> None:
        """The elevated session ends when the original login would have."""
        manager = SessionManager(make_config(inactivity=0), store, now=clock)
        session = login(manager)
        clock.advance(HOUR - 100)
        elevated = manager.elevate(session, Level.TWO_FACTOR)
        assert store.last_ttl == 100
        clock.advance(100)
        assert manager.load(elevated.id, DOMAIN) is None

    def test_same_level_reauthentication_also_regenerates(self, manager: SessionManager) -> None:
        """Re-proving a factor at the same level (elevation code) still changes the id."""
        session = manager.elevate(login(manager), Level.TWO_FACTOR)
        again = manager.elevate(session, Level.TWO_FACTOR, user_stamp="new-stamp")
        assert again.id != session.id
        assert again.user_stamp == "new-stamp"
        assert manager.load(session.id, DOMAIN) is None

    def test_old_copy_cannot_be_elevated_twice(
        self, manager: SessionManager, store: CountingStore
    ) -> None:
        """A second elevation of the same (now dead) session fails and creates nothing."""
        session = login(manager)
        manager.elevate(session, Level.TWO_FACTOR)
        puts = store.calls["put"]
        with pytest.raises(SessionGoneError):
            manager.elevate(session, Level.TWO_FACTOR)
        assert store.calls["put"] == puts

    def test_logged_out_session_cannot_be_elevated(
        self, manager: SessionManager, store: CountingStore
    ) -> None:
        """A logout that wins the race against a TOTP submission is final."""
        session = login(manager)
        manager.destroy(session.id)
        with pytest.raises(SessionGoneError):
            manager.elevate(session, Level.TWO_FACTOR)
        assert len(store) == 0

    def test_expired_session_cannot_be_elevated(
        self, manager: SessionManager, store: CountingStore, clock: Clock
    ) -> None:
        """An idle-expired session still in the store is deleted, not elevated."""
        session = login(manager)
        clock.advance(301)
        with pytest.raises(SessionGoneError):
            manager.elevate(session, Level.TWO_FACTOR)
        assert store.get(session.id) is None
        assert len(store) == 0

    @pytest.mark.parametrize(
        ("start", "level"),
        [(Level.TWO_FACTOR, Level.ONE_FACTOR), (Level.NONE, Level.ONE_FACTOR)],
        ids=["downgrade", "anonymous"],
    )
    def test_invalid_elevation_is_refused(
        self, manager: SessionManager, start: Level, level: Level
    ) -> None:
        """Elevation never lowers a level and never applies to an anonymous session."""
        username = None if start is Level.NONE else "alice"
        session = manager.create(DOMAIN, username, start)
        with pytest.raises(ValueError, match="elevate"):
            manager.elevate(session, level)
        assert manager.load(session.id, DOMAIN) == session


# --------------------------------------------------------------------------- data, destroy


class TestDataAndDestroy:
    """Session data updates, logout and ending a user's sessions."""

    def test_update_data_sets_and_removes_keys(self, manager: SessionManager) -> None:
        """update_data keeps the id and stores the changed mapping."""
        session = login(manager)
        updated = manager.update_data(session, {"totp_secret": "JBSWY3DP", "x": "1"})
        updated = manager.update_data(updated, {"x": None, "missing": None})
        assert updated.id == session.id
        assert dict(updated.data) == {"totp_secret": "JBSWY3DP"}
        loaded = manager.load(session.id, DOMAIN)
        assert loaded is not None
        assert dict(loaded.data) == {"totp_secret": "JBSWY3DP"}

    def test_update_data_on_a_gone_session_fails(
        self, manager: SessionManager, clock: Clock
    ) -> None:
        """Updating a logged-out or expired session raises instead of resurrecting it."""
        session = login(manager)
        manager.destroy(session.id)
        with pytest.raises(SessionGoneError):
            manager.update_data(session, {"k": "v"})
        expired = login(manager)
        clock.advance(301)
        with pytest.raises(SessionGoneError):
            manager.update_data(expired, {"k": "v"})

    def test_destroy_logs_out(self, manager: SessionManager) -> None:
        """After destroy the id never loads again."""
        session = login(manager)
        manager.destroy(session.id)
        assert manager.load(session.id, DOMAIN) is None

    @pytest.mark.parametrize("value", ["", "junk", "A" * 8192])
    def test_destroy_ignores_malformed_ids(
        self, manager: SessionManager, store: CountingStore, value: str
    ) -> None:
        """Logout with a junk cookie is harmless and does not reach the store."""
        manager.destroy(value)
        assert "delete" not in store.calls

    def test_destroy_user_ends_all_their_sessions(self, manager: SessionManager) -> None:
        """destroy_user ends every session of that user (any spelling) and no one else's."""
        alice = [login(manager), login(manager, remember_me=True)]
        alice.append(manager.elevate(login(manager), Level.TWO_FACTOR))
        bob = login(manager, "bob")
        assert manager.destroy_user("ALICE") == 3
        assert all(manager.load(s.id, DOMAIN) is None for s in alice)
        assert manager.load(bob.id, DOMAIN) == bob


# --------------------------------------------------------------------------- cookies


def parse_set_cookie(value: str) -> tuple[str, str, dict[str, str]]:
    """Name, value and lower-cased attributes of a Set-Cookie value."""
    first, *rest = value.split("; ")
    name, _, cookie_value = first.partition("=")
    attributes = {}
    for item in rest:
        key, _, val = item.partition("=")
        attributes[key.lower()] = val
    return name, cookie_value, attributes


class TestCookies:
    """The Set-Cookie values for login and logout."""

    @pytest.mark.parametrize(
        ("same_site", "expected"), [("lax", "Lax"), ("strict", "Strict"), ("none", "None")]
    )
    def test_session_cookie_attributes(
        self, store: CountingStore, clock: Clock, same_site: str, expected: str
    ) -> None:
        """The cookie is Secure, HttpOnly, Path=/, on the cookie domain, with no Max-Age."""
        manager = SessionManager(make_config(same_site=same_site), store, now=clock)
        session = login(manager)
        header = manager.cookie_header_value(session)
        name, value, attributes = parse_set_cookie(header)
        assert (name, value) == ("authctl_session", session.id)
        assert attributes == {
            "domain": DOMAIN,
            "path": "/",
            "secure": "",
            "httponly": "",
            "samesite": expected,
        }
        morsel = SimpleCookie(header)["authctl_session"]
        assert morsel.value == session.id
        assert morsel["secure"]
        assert morsel["httponly"]

    def test_remember_me_cookie_has_remaining_max_age(
        self, manager: SessionManager, clock: Clock
    ) -> None:
        """A remember-me cookie persists for the remaining absolute lifetime."""
        session = login(manager, remember_me=True)
        clock.advance(DAY + 0.5)
        _, _, attributes = parse_set_cookie(manager.cookie_header_value(session, DOMAIN))
        assert attributes["max-age"] == str(29 * DAY - 1)

    def test_cookie_for_another_domain_is_refused(self, manager: SessionManager) -> None:
        """A session cookie is never set for a domain the session was not issued for."""
        with pytest.raises(ValueError, match="domain"):
            manager.cookie_header_value(login(manager), OTHER)

    def test_logout_cookie_expires_with_same_domain_and_path(self, manager: SessionManager) -> None:
        """The logout cookie has the same name, Domain and Path, Max-Age=0 and a past Expires."""
        name, value, attributes = parse_set_cookie(manager.expired_cookie_header_value(DOMAIN))
        assert (name, value) == ("authctl_session", "")
        assert attributes["domain"] == DOMAIN
        assert attributes["path"] == "/"
        assert attributes["max-age"] == "0"
        assert "1970" in attributes["expires"]
        assert {"secure", "httponly", "samesite"} <= attributes.keys()


# --------------------------------------------------------------------------- SPEC §7.6


def test_a_handle_is_random_and_never_an_id(manager: SessionManager) -> None:
    """Each session gets its own handle: 192 random bits, of a shape no id has, unrelated to
    the id (a handle is never a cookie, an id never a handle)."""
    from server.core.sessions import HANDLE_PATTERN
    from server.core.sessions import is_handle

    sessions = [login(manager) for _ in range(50)]
    handles = {s.handle for s in sessions}
    assert len(handles) == 50
    for session in sessions:
        assert session.handle is not None
        assert HANDLE_PATTERN.fullmatch(session.handle)
        assert is_handle(session.handle)
        assert not is_session_id(session.handle)
        assert not is_handle(session.id)
        assert session.handle not in session.id
        assert session.handle not in repr(session) or session.id not in repr(session)


def test_the_handle_survives_every_new_id(manager: SessionManager) -> None:
    """Second factor and data changes regenerate or keep the id; the handle, IP and
    User-Agent stay (the list shows one device, not a new one per factor)."""
    session = manager.create(DOMAIN, "alice", 1, ip="203.0.113.7", user_agent="Firefox")
    elevated = manager.elevate(session, Level.TWO_FACTOR)
    updated = manager.update_data(elevated, {"k": "v"})
    assert elevated.id != session.id
    assert {s.handle for s in (session, elevated, updated)} == {session.handle}
    assert {(s.ip, s.user_agent) for s in (session, elevated, updated)} == {
        ("203.0.113.7", "Firefox")
    }


def test_an_old_session_gets_a_handle_at_its_next_write(
    manager: SessionManager, store: CountingStore
) -> None:
    """A session stored before handles existed gets one when the manager writes it."""
    session = dataclasses.replace(login(manager), handle=None)
    store.put(session, 60)
    updated = manager.update_data(session, {"k": "v"})
    assert updated.handle is not None
    stored = store.get(session.id)
    assert stored is not None
    assert stored.handle == updated.handle


@pytest.mark.parametrize(
    ("sent", "limit", "kept"),
    [
        (None, 10, None),
        ("", 10, None),
        ("  ", 10, None),
        ("Firefox", 10, "Firefox"),
        ("a" * 300, 256, "a" * 256),
        ("evil\x1b[31mred\x07\r\nX-Injected: 1", 256, "evil [31mred X-Injected: 1"),
        ("a\u2028b\x85c\x7fd", 256, "a b c d"),
        ("<script>alert(1)</script>", 256, "<script>alert(1)</script>"),
    ],
)
def test_client_text_is_cleaned_and_cut(sent: str | None, limit: int, kept: str | None) -> None:
    """Control characters (terminal escapes, line breaks) become spaces and the value is cut;
    markup stays data (outputs escape it)."""
    from server.core.sessions import client_text

    assert client_text(sent, limit) == kept


def test_create_keeps_the_client_cleaned(manager: SessionManager) -> None:
    """The IP and User-Agent given to create are cleaned and bounded."""
    from server.core.sessions import MAX_IP
    from server.core.sessions import MAX_USER_AGENT

    session = manager.create(DOMAIN, "alice", 1, ip="1" * 200, user_agent="\x1b" + "u" * 999)
    assert session.ip == "1" * MAX_IP
    assert session.user_agent == "u" * MAX_USER_AGENT


def test_list_sessions_shows_live_signed_in_sessions_newest_first(
    manager: SessionManager, store: CountingStore, clock: Clock
) -> None:
    """Only the user's live signed-in sessions, the most recently active first; sessions past
    their inactivity limit are left out although still stored."""
    from server.core.sessions import store_key

    idle = login(manager)
    clock.advance(200)
    older = login(manager)
    clock.advance(10)
    newer = login(manager)
    login(manager, "bob")
    manager.create(DOMAIN, None, 0)
    clock.advance(120)  # idle: 330 s without activity > 300
    listed = manager.list_sessions("ALICE")
    assert [item.key for item in listed] == [store_key(newer.id), store_key(older.id)]
    assert store.get(idle.id) is not None
    assert {item.session.username for item in manager.list_sessions(None)} == {"alice", "bob"}


def test_describe_shows_the_api_fields(manager: SessionManager, clock: Clock) -> None:
    """describe gives SPEC §7.6's fields, times RFC 3339 UTC, this session marked."""
    from server.core.sessions import describe
    from server.core.sessions import store_key

    session = manager.create(DOMAIN, "alice", 1, ip="203.0.113.7", user_agent="Firefox")
    [listed] = manager.list_sessions("alice")
    assert describe(listed, store_key(session.id)) == {
        "handle": session.handle,
        "created_at": "2023-11-14T22:13:20Z",
        "last_seen_at": "2023-11-14T22:13:20Z",
        "ip": "203.0.113.7",
        "user_agent": "Firefox",
        "current": True,
        "authentication_level": 1,
    }
    assert describe(listed)["current"] is False


def test_revoke_ends_only_the_users_own_session(manager: SessionManager) -> None:
    """A handle ends that one session of its user; another user's handle, an unknown one,
    and a session id are all False and end nothing."""
    mine, other = login(manager), login(manager)
    bob = login(manager, "bob")
    assert mine.handle is not None
    assert bob.handle is not None
    assert manager.revoke("alice", bob.handle) is False
    assert manager.revoke("alice", "A" * 32) is False
    assert manager.revoke("alice", mine.id) is False
    assert manager.revoke("alice", other.id) is False
    assert manager.revoke("alice", "") is False
    assert all(manager.load(s.id, DOMAIN) is not None for s in (mine, other, bob))
    assert manager.revoke("Alice", mine.handle) is True
    assert manager.load(mine.id, DOMAIN) is None
    assert manager.load(other.id, DOMAIN) is not None
    assert manager.revoke("alice", mine.handle) is False


class RotatingStore(MemoryStore):
    """A store where the listed session gets a new id (a factor in another tab) between
    the listing and the deletion, once."""

    manager: SessionManager
    victim: Session

    def delete_listed(self, key: bytes, username: str) -> bool:
        """Rotate the victim first, once; then delete what was listed."""
        victim = getattr(self, "victim", None)
        if victim is not None:
            del self.victim
            self.victim_after = self.manager.elevate(victim, Level.TWO_FACTOR)
        return super().delete_listed(key, username)


def test_revoke_follows_a_session_whose_id_changed_meanwhile(clock: Clock) -> None:
    """The revoked session elevates in another tab between the listing and the deletion: it
    is ended under its new id too."""
    store = RotatingStore(now=clock)
    manager = SessionManager(make_config(), store, now=clock)
    store.manager = manager
    victim = login(manager)
    store.victim = victim
    assert victim.handle is not None
    assert manager.revoke("alice", victim.handle) is True
    assert manager.load(store.victim_after.id, DOMAIN) is None
    assert manager.list_sessions("alice") == []


def test_revoke_others_keeps_only_the_asking_session(manager: SessionManager) -> None:
    """Every other session of the user ends; the asking one and other users' stay."""
    mine = login(manager)
    others = [login(manager) for _ in range(3)]
    bob = login(manager, "bob")
    assert manager.revoke_others("alice", mine) == 3
    assert all(manager.load(s.id, DOMAIN) is None for s in others)
    assert manager.load(mine.id, DOMAIN) is not None
    assert manager.load(bob.id, DOMAIN) is not None
    assert manager.revoke_others("alice", mine) == 0


class StubbornStore(MemoryStore):
    """A store whose listed sessions never go away (a writer that keeps putting them back)."""

    def delete_listed(self, key: bytes, username: str) -> bool:
        """Delete nothing."""
        return False


def test_revocation_rounds_are_bounded(clock: Clock) -> None:
    """A session that keeps reappearing does not hold the request forever: a few rounds,
    then the answer (False / 0), never a loop."""
    from server.core.sessions import REVOKE_ROUNDS

    store = StubbornStore(now=clock)
    manager = SessionManager(make_config(), store, now=clock)
    mine, other = login(manager), login(manager)
    assert other.handle is not None
    calls: list[str | None] = []
    listing = store.sessions_of

    def counted(username: str | None) -> t.Any:
        calls.append(username)
        return listing(username)

    store.sessions_of = counted  # type: ignore[method-assign]
    assert manager.revoke("alice", other.handle) is False
    assert manager.revoke_others("alice", mine) == 0
    assert len(calls) == 2 * REVOKE_ROUNDS
