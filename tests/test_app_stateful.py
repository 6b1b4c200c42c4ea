"""A stateful property test of the whole app (security.md §4): sign-ins, sign-outs, the clock,
users-file edits (disable, groups, password), and the user's list of sessions with ending one
or all others (SPEC §7.6) against a model of who may pass."""

from __future__ import annotations

import re
import shutil
import tempfile
import typing as t
from dataclasses import dataclass
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle
from hypothesis.stateful import RuleBasedStateMachine
from hypothesis.stateful import invariant
from hypothesis.stateful import rule

from tests.apphelpers import PASSWORDS
from tests.apphelpers import Harness
from tests.apphelpers import build
from tests.conftest import Clock

USERS = ("alice", "bob")
TARGET = "https://app.example.com/"
INACTIVITY = 300
EXPIRATION = 3600
SESSIONS = "/api/user/sessions"


@dataclass
class Cookie:
    """A cookie the model handed out, and what the model believes about it."""

    value: str
    user: str
    created: float
    last_seen: float
    stamp: int
    alive: bool = True
    handle: str = ""


@dataclass
class Token:
    """A personal access token the model made, and what it believes about it."""

    value: str
    id: str
    user: str
    expires: float | None
    revoked: bool = False


class AppMachine(RuleBasedStateMachine):
    """Drives the in-process app and checks it against a simple model."""

    cookies = Bundle("cookies")

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="authctl-stateful-"))
        self.clock = Clock()
        self.h: Harness = build(self.folder, self.clock)
        self.disabled = {u: False for u in USERS}
        self.groups = {"alice": ["admins", "dev"], "bob": ["dev"]}
        self.password_epoch = {u: 0 for u in USERS}
        self.issued: list[Cookie] = []

    def teardown(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    # ------------------------------------------------------------------ helpers

    def _edit_user(self, user: str, pattern: str, replacement: str) -> None:
        path = self.h.config.users.file
        text = path.read_text()
        block_start = text.index(f"[users.{user}]")
        block_end = text.find("\n[users.", block_start + 1)
        block_end = len(text) if block_end == -1 else block_end
        block = re.sub(pattern, replacement, text[block_start:block_end], count=1, flags=re.M)
        self.h.rewrite_users(text[:block_start] + block + text[block_end:])

    def _expected_alive(self, cookie: Cookie) -> bool:
        now = self.clock.now
        return (
            cookie.alive
            and not self.disabled[cookie.user]
            and cookie.stamp == self.password_epoch[cookie.user]
            and now - cookie.created < EXPIRATION
            and now - cookie.last_seen <= INACTIVITY
        )

    # ------------------------------------------------------------------ rules

    @rule(target=cookies, user=st.sampled_from(USERS))
    def sign_in(self, user: str) -> Cookie | None:
        if self.disabled[user]:
            return None  # (a refused login counts toward a ban, which this model leaves out)
        resp = self.h.api("/api/firstfactor", {"username": user, "password": PASSWORDS[user]})
        assert resp.status_int == 200, resp.text
        value = resp.headers["Set-Cookie"].split(";", 1)[0]
        assert all(value != c.value for c in self.issued), "a session id was reused"
        cookie = Cookie(value, user, self.clock.now, self.clock.now, self.password_epoch[user])
        rows = self._list(cookie)
        [cookie.handle] = [row["handle"] for row in rows if row["current"]]
        self.issued.append(cookie)
        return cookie

    def _list(self, cookie: Cookie) -> list[dict[str, t.Any]]:
        resp = self.h.api(SESSIONS, method="GET", cookie=cookie.value)
        assert resp.status_int == 200, resp.text
        return t.cast(list[dict[str, t.Any]], resp.json["data"])

    def _end(self, cookie: Cookie, handle: str = "") -> t.Any:
        path = f"{SESSIONS}/{handle}" if handle else SESSIONS
        return self.h.api(path, {}, method="DELETE", cookie=cookie.value)

    @rule(cookie=cookies)
    def list_sessions(self, cookie: Cookie | None) -> None:
        if cookie is None or not self._expected_alive(cookie):
            return
        rows = self._list(cookie)
        expected = {
            c.handle for c in self.issued if c.user == cookie.user and self._expected_alive(c)
        }
        assert {row["handle"] for row in rows} == expected
        assert [row["handle"] for row in rows if row["current"]] == [cookie.handle]

    @rule(cookie=cookies, victim=cookies)
    def end_session(self, cookie: Cookie | None, victim: Cookie | None) -> None:
        if cookie is None or victim is None or not self._expected_alive(cookie):
            return
        resp = self._end(cookie, victim.handle)
        if victim.user == cookie.user and self._expected_alive(victim):
            assert resp.status_int == 200, resp.text
            victim.alive = False
        else:  # another user's session, or one already ended: the same 404
            assert resp.status_int == 404, resp.text

    @rule(cookie=cookies)
    def end_other_sessions(self, cookie: Cookie | None) -> None:
        if cookie is None or not self._expected_alive(cookie):
            return
        resp = self._end(cookie)
        assert resp.status_int == 200, resp.text
        for other in self.issued:
            if other.user == cookie.user and other is not cookie:
                other.alive = False

    @rule(cookie=cookies)
    def verify(self, cookie: Cookie | None) -> None:
        if cookie is None:
            return
        expected = self._expected_alive(cookie)
        resp = self.h.forward_auth(TARGET, cookie=cookie.value)
        if expected:
            assert resp.status_int == 200, (cookie, resp.status_int)
            assert resp.headers["Remote-User"] == cookie.user
            assert resp.headers["Remote-Groups"] == ",".join(self.groups[cookie.user])
            cookie.last_seen = self.clock.now
        else:
            assert resp.status_int == 302, (cookie, resp.status_int)
            cookie.alive = False  # a refused session never comes back

    @rule(cookie=cookies)
    def sign_out(self, cookie: Cookie | None) -> None:
        if cookie is None:
            return
        self.h.api("/api/logout", {}, cookie=cookie.value)
        cookie.alive = False

    @rule(seconds=st.sampled_from([1, 60, 200, 299, 301, 1800, 3601]))
    def advance_clock(self, seconds: int) -> None:
        # the server records activity at most every 5 s, so its idle clock may be up to 5 s
        # ahead of the model's: never stop inside that margin
        def in_margin(step: int) -> bool:
            return any(
                c.alive and -1 <= INACTIVITY - (self.clock.now + step - c.last_seen) < 6
                for c in self.issued
            )

        while in_margin(seconds):
            seconds += 7
        self.clock.advance(seconds)
        for cookie in self.issued:
            if not self._expected_alive(cookie):
                cookie.alive = False

    @rule(user=st.sampled_from(USERS), disabled=st.booleans())
    def set_disabled(self, user: str, disabled: bool) -> None:
        if disabled == self.disabled[user]:
            return
        if disabled:
            self._edit_user(user, r"^(groups = .*)$", r"\1\ndisabled = true")
            for cookie in self.issued:
                if cookie.user == user:
                    cookie.alive = False
        else:
            self._edit_user(user, r"^disabled = true\n?", "")
        self.disabled[user] = disabled

    @rule(user=st.sampled_from(USERS), group=st.sampled_from(["ops", "qa"]))
    def add_group(self, user: str, group: str) -> None:
        if group in self.groups[user]:
            return
        self.groups[user].append(group)
        listed = ", ".join(f'"{g}"' for g in self.groups[user])
        self._edit_user(user, r"^groups = .*$", f"groups = [{listed}]")

    @rule(user=st.sampled_from(USERS))
    def change_password(self, user: str) -> None:
        new_hash = self.h.hasher.hash(PASSWORDS[user])  # same password, new salt: new stamp
        self._edit_user(user, r'^password = ".*"$', f'password = "{new_hash}"')
        self.password_epoch[user] += 1
        for cookie in self.issued:
            if cookie.user == user:
                cookie.alive = False

    # ------------------------------------------------------------------ tokens (SPEC §7.6)

    tokens = Bundle("tokens")

    @rule(target=tokens, user=st.sampled_from(USERS), lifetime=st.sampled_from([None, 100, 4000]))
    def make_token(self, user: str, lifetime: int | None) -> Token:
        service = self.h.app.authorizer.tokens
        assert service is not None
        value, made = service.create(user, "model", created_by="cli", expires_in=lifetime)
        expires = None if lifetime is None else self.clock.now + lifetime
        return Token(value, made.id, user, expires)

    def _token_works(self, token: Token) -> bool:
        return (
            not token.revoked
            and not self.disabled[token.user]
            and (token.expires is None or self.clock.now < token.expires)
        )

    @rule(token=tokens)
    def verify_token(self, token: Token) -> None:
        resp = self.h.forward_auth(TARGET, extra={"Authorization": f"Bearer {token.value}"})
        if self._token_works(token):
            assert resp.status_int == 200, (token, resp.status_int)
            assert resp.headers["Remote-User"] == token.user
            assert resp.headers["Remote-Groups"] == ",".join(self.groups[token.user])
        else:
            assert resp.status_int == 401, (token, resp.status_int)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
            assert "Location" not in resp.headers

    @rule(cookie=cookies, token=tokens)
    def revoke_token(self, cookie: Cookie | None, token: Token) -> None:
        if cookie is None or not self._expected_alive(cookie):
            return
        resp = self.h.api(f"/api/user/tokens/{token.id}", {}, method="DELETE", cookie=cookie.value)
        if token.user == cookie.user and not token.revoked:
            assert resp.status_int == 200, resp.text
            token.revoked = True
        else:  # another user's token, or one revoked already: the same 404
            assert resp.status_int == 404, resp.text

    @invariant()
    def dead_cookies_stay_dead(self) -> None:
        for cookie in self.issued[-3:]:
            if not cookie.alive:
                resp = self.h.forward_auth(TARGET, cookie=cookie.value)
                assert resp.status_int == 302


AppMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
test_app_state_machine = AppMachine.TestCase
