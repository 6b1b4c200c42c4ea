"""The sign-in path under attack, over the real app (issue 12 items 7, 8, 9, 16).

Bans decided before hashing, one client's share of the hashing slots, regulation reserved
before the work (password and TOTP), failed-login timing padded to the configured hash's,
rehash on sign-in through the locked users-file writer, and lone surrogates at the JSON edge.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import typing as t
from datetime import UTC
from datetime import datetime
from pathlib import Path

import pyotp
import pytest

from server.core.config import PasswordHashConfig
from server.core.hashcap import HashTimer
from server.core.passwords import PasswordHasher
from server.core.userfile import UsersFile
from tests.apphelpers import PASSWORDS
from tests.apphelpers import Harness
from tests.apphelpers import build

AUTH_FAILED = {"status": "KO", "message": "Authentication failed. Check your credentials."}
#: Parameters that differ from the harness's configured ones (m=8 KiB, t=1, p=1).
OTHER = PasswordHashConfig(memory_kib=16, iterations=2, parallelism=1)
CONFIGURED_PREFIX = "$argon2id$v=19$m=8,t=1,p=1$"


@pytest.fixture
def h(tmp_path: Path, clock: t.Any) -> Harness:
    return build(tmp_path, clock)


def sign_in(h: Harness, user: str, password: str, ip: str = "192.0.2.10") -> t.Any:
    return h.api(
        "/api/firstfactor",
        {"username": user, "password": password},
        headers={"X-Forwarded-For": ip},
    )


class Counting:
    """Counts (and optionally slows or holds) the hasher's verifications."""

    def __init__(self, h: Harness, *, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self.lock = threading.Lock()
        self.hold: dict[str, threading.Event] = {}  # password -> released when set
        self.entered = threading.Semaphore(0)
        hasher = h.hasher
        verify, dummy = hasher.verify, hasher.dummy_verify

        def counted_verify(phc: str, password: str) -> bool:
            self._enter(password)
            return verify(phc, password)

        def counted_dummy(password: str) -> bool:
            self._enter(password)
            return dummy(password)

        hasher.verify = counted_verify  # type: ignore[method-assign]
        hasher.dummy_verify = counted_dummy  # type: ignore[method-assign]

    def _enter(self, password: str) -> None:
        with self.lock:
            self.calls += 1
        self.entered.release()
        if password in self.hold:
            assert self.hold[password].wait(20)
        if self.delay:
            time.sleep(self.delay)


def file_hash(h: Harness, user: str) -> str:
    found = re.search(
        rf'\[users\.{user}\][^\[]*?password = "([^"]+)"',
        h.config.users.file.read_text(encoding="utf-8"),
    )
    assert found is not None
    return found.group(1)


def use_other_parameters(h: Harness, user: str) -> str:
    """Give ``user`` a hash with parameters other than the configured ones; returns it."""
    old = file_hash(h, user)
    new = PasswordHasher(OTHER).hash(PASSWORDS[user])
    h.rewrite_users(h.config.users.file.read_text(encoding="utf-8").replace(old, new))
    return new


# --------------------------------------------------------------------------- item 16


def test_lone_surrogate_in_a_json_name_is_400(h: Harness) -> None:
    """A lone surrogate is refused at the JSON edge, never reaching the database (was 500)."""
    resp = h.request(
        "/api/firstfactor",
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "auth.example.com",
            "Origin": "https://auth.example.com",
        },
        body=b'{"username":"\\ud800","password":"x"}',
    )
    assert resp.status_int == 400
    assert resp.json == {"status": "KO", "message": "Malformed JSON body."}


# --------------------------------------------------------------------------- item 8


@pytest.mark.slow
def test_parallel_guesses_cannot_pass_the_limit(h: Harness) -> None:
    """Six parallel wrong guesses (six addresses): at most three are hashed before the ban,
    and the right password afterwards is refused."""
    counting = Counting(h, delay=0.2)
    results: list[int] = []
    start = threading.Barrier(6)

    def guess(i: int) -> None:
        start.wait()
        results.append(sign_in(h, "bob", f"wrong-{i}", ip=f"198.51.100.{i}").status_int)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [401] * 6
    assert counting.calls <= 3
    right = sign_in(h, "bob", PASSWORDS["bob"], ip="203.0.113.7")
    assert right.status_int == 401
    assert right.json == AUTH_FAILED
    assert counting.calls <= 3  # the banned right password cost no hash either


def test_totp_is_reserved_before_the_check(h: Harness) -> None:
    """Codes in flight count: with three TOTP attempts of alice still running, even the right
    code is refused; once they are settled as failures she is banned."""
    secret, _uri = h.app.portal.totp.enrol("alice")
    code = pyotp.TOTP(secret).at(h.clock.now)
    cookie = h.login("alice")
    regulator = h.app.portal.totp.regulator
    assert regulator is not None
    wrong = h.api("/api/secondfactor/totp", {"token": "000000"}, cookie=cookie)
    in_flight = [regulator.reserve("alice", "10.9.0.1", "TOTP") for _ in range(2)]
    resp = h.api("/api/secondfactor/totp", {"token": code}, cookie=cookie)
    assert resp.status_int == 401
    assert resp.json == wrong.json  # refused like a wrong code (the portal's wording)
    assert resp.json["status"] == "KO"
    for attempt in in_flight:
        attempt.settle(False)
    assert h.api("/api/secondfactor/totp", {"token": code}, cookie=cookie).status_int == 401


# --------------------------------------------------------------------------- item 7


def test_banned_attempts_cost_no_hash_and_answer_like_a_wrong_password(h: Harness) -> None:
    """During a ban nothing is hashed, and the answer (status, body, no cookie, time padded to
    a verify's) is a wrong password's."""
    for _ in range(3):
        assert sign_in(h, "bob", "nope").status_int == 401
    counting = Counting(h)
    h.app.portal.identities.signin.timer = timer = HashTimer()
    for _ in range(16):
        timer.add(0.15)
    for password in ("nope", PASSWORDS["bob"]):
        started = time.monotonic()
        resp = sign_in(h, "bob", password)
        assert time.monotonic() - started >= 0.14
        assert resp.status_int == 401
        assert resp.json == AUTH_FAILED
        assert "Set-Cookie" not in resp.headers
    assert counting.calls == 0


def headers(resp: t.Any) -> list[tuple[str, str]]:
    """The response headers but the per-request id."""
    return [(k, v) for k, v in resp.headerlist if k != "X-Request-Id"]


def test_a_ban_is_logged_as_a_ban_and_answered_as_a_wrong_password(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """The admin's log says "refused: banned until <time>" (user, IP, kind); the client gets
    byte for byte the answer of a wrong password (before: logged like a wrong password)."""
    wrong = sign_in(h, "bob", "nope")
    for _ in range(2):
        assert sign_in(h, "bob", "nope").status_int == 401
    (ban,) = h.app.portal.identities.signin.regulator.list_bans()
    until = datetime.fromtimestamp(ban.expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        refused = sign_in(h, "bob", PASSWORDS["bob"])
    assert (refused.status, headers(refused), refused.body) == (
        wrong.status,
        headers(wrong),
        wrong.body,
    )
    lines = [r.getMessage() for r in caplog.records if "banned until" in r.getMessage()]
    assert lines == [f"1FA attempt of bob from 192.0.2.10 refused: banned until {until} (user bob)"]
    (record,) = [r for r in caplog.records if "banned until" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert PASSWORDS["bob"] not in caplog.text


@pytest.mark.slow
def test_one_flooding_client_leaves_slots_to_other_users(h: Harness) -> None:
    """Eight parallel logins from one address hold only its share of the slots; another
    user signs in meanwhile (before: the flood held every slot and she got Busy)."""
    gate = h.app.portal.identities.gate
    counting = Counting(h)
    release = counting.hold["flood"] = threading.Event()
    answers: list[int] = []

    def flood() -> None:
        answers.append(sign_in(h, "nobody", "flood", ip="198.51.100.66").status_int)

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 10
        # every flood request either holds a slot (blocked in verify) or was refused
        while counting.calls + len(answers) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert counting.calls == gate.per_client < gate.max_concurrent
        assert answers == [401] * (8 - gate.per_client)
        assert sign_in(h, "alice", PASSWORDS["alice"], ip="203.0.113.9").status_int == 200
    finally:
        release.set()
        for thread in threads:
            thread.join()


# --------------------------------------------------------------------------- item 9


def test_sign_in_rehashes_to_the_configured_parameters(h: Harness) -> None:
    """A hash with other parameters is replaced by one with the configured parameters at the
    next sign-in; the new session works and the other users' entries are untouched."""
    old = use_other_parameters(h, "bob")
    before = h.config.users.file.read_text(encoding="utf-8")
    resp = sign_in(h, "bob", PASSWORDS["bob"])
    assert resp.status_int == 200
    new = file_hash(h, "bob")
    assert new != old
    assert new.startswith(CONFIGURED_PREFIX)
    assert h.hasher.verify(new, PASSWORDS["bob"])
    after = h.config.users.file.read_text(encoding="utf-8")
    for other in ("[users.alice]", "[users.carol]"):  # other users' blocks, byte for byte
        block = before[before.index(other) :].split("\n\n", 1)[0]
        assert block in after
    cookie = str(resp.headers["Set-Cookie"]).split(";", 1)[0]
    assert h.forward_auth("https://app.example.com/", cookie=cookie).status_int == 200
    # a hash with the configured parameters is left alone
    sign_in(h, "bob", PASSWORDS["bob"])
    assert file_hash(h, "bob") == new


@pytest.mark.slow
@pytest.mark.parametrize("edit", ["passwd", "groups"])
def test_rehash_never_loses_a_concurrent_edit(h: Harness, edit: str) -> None:
    """An edit made (under the writer's lock) between the verify and the rehash's write wins:
    a new password is kept as is, a group change is kept beside the rehash."""
    use_other_parameters(h, "bob")
    hasher = h.hasher
    real_hash = hasher.hash
    hashed, go = threading.Event(), threading.Event()

    def slow_hash(password: str) -> str:
        phc = real_hash(password)
        hashed.set()
        assert go.wait(20)
        return phc

    hasher.hash = slow_hash  # type: ignore[method-assign]
    answer: list[int] = []
    thread = threading.Thread(
        target=lambda: answer.append(sign_in(h, "bob", PASSWORDS["bob"]).status_int)
    )
    thread.start()
    assert hashed.wait(20)
    cli = UsersFile(h.config.users.file)
    if edit == "passwd":
        theirs = PasswordHasher(OTHER).hash("a-new-password")
        cli.set_password("bob", theirs)
    else:
        cli.set_groups("bob", add=["ops"])
    go.set()
    thread.join()
    assert answer == [200]
    db = cli.read()
    if edit == "passwd":
        assert db["bob"].password == theirs
    else:
        assert db["bob"].groups == ("dev", "ops")
        assert db["bob"].password.startswith(CONFIGURED_PREFIX)


def test_failed_logins_are_padded_to_the_configured_hash_time(h: Harness) -> None:
    """A wrong password for a user whose hash is cheaper, and for an unknown user, takes the
    time a verify with the configured parameters takes; a success is not padded."""
    use_other_parameters(h, "bob")
    h.app.portal.identities.signin.timer = timer = HashTimer()
    for _ in range(16):
        timer.add(0.15)
    for user in ("bob", "nobody", "alice"):
        started = time.monotonic()
        assert sign_in(h, user, "wrong").status_int == 401
        assert time.monotonic() - started >= 0.14, user
    started = time.monotonic()
    assert sign_in(h, "alice", PASSWORDS["alice"]).status_int == 200
    assert time.monotonic() - started < 0.14


@pytest.mark.parametrize(
    "text", ['"\\ud800"', '["ok", "\\udfff"]', '{"a": {"\\ud800": 1}}', '{"a": [["\\udc00"]]}']
)
def test_strict_json_refuses_lone_surrogates_anywhere(text: str) -> None:
    from server.core import jsonstrict

    with pytest.raises(ValueError):  # noqa: PT011 - UnicodeEncodeError is the ValueError
        jsonstrict.loads(text)


def test_strict_json_keeps_real_text() -> None:
    from server.core import jsonstrict

    assert jsonstrict.loads('{"n": "\\ud83d\\ude00 \\u00e9"}') == {"n": "\U0001f600 \u00e9"}
    with pytest.raises(ValueError, match="duplicate"):
        jsonstrict.loads('{"a": 1, "a": 2}')
