"""Second factor and regulation over the app (SPEC §3.2, §3.4; security.md §2 E, F, G)."""

from __future__ import annotations

import base64
import concurrent.futures
import typing as t
from pathlib import Path

import pyotp
import pytest

from tests.apphelpers import PASSWORDS
from tests.apphelpers import Harness
from tests.apphelpers import build

AUTH_FAILED = {"status": "KO", "message": "Authentication failed. Check your credentials."}
#: A wrong TOTP code says the code is wrong (issue 14 §5), not "check your credentials".
CODE_WRONG = {
    "status": "KO",
    "message": "The code is wrong or was already used. Enter the code your app shows now.",
}


@pytest.fixture
def h(tmp_path: Path, clock: t.Any) -> Harness:
    """An app over the security catalogue fixture."""
    return build(tmp_path, clock)


def enrol(h: Harness, user: str = "alice") -> pyotp.TOTP:
    secret, _uri = h.app.portal.totp.enrol(user)
    return pyotp.TOTP(secret)


def code_at(totp: pyotp.TOTP, h: Harness, offset: int = 0) -> str:
    return totp.at(h.clock.now, counter_offset=offset)


def set_cookie_of(resp: t.Any) -> str:
    return str(resp.headers["Set-Cookie"]).split(";", 1)[0]


def test_two_factor_end_to_end(h: Harness) -> None:
    """Password, then a TOTP code, reaches a two_factor site; the code cannot be replayed."""
    totp = enrol(h)
    target = "https://secure.example.com/dashboard"
    one = h.login("alice")
    resp = h.forward_auth(target, cookie=one)
    assert resp.status_int == 302
    second = h.api(
        "/api/secondfactor/totp", {"token": code_at(totp, h), "targetURL": target}, cookie=one
    )
    assert second.status_int == 200, second.text
    assert second.json["data"] == {"redirect": target}
    two = set_cookie_of(second)
    assert two != one
    allowed = h.forward_auth(target, cookie=two)
    assert allowed.status_int == 200
    assert allowed.headers["Remote-User"] == "alice"
    assert h.forward_auth(target, cookie=one).status_int == 302  # the 1FA id is dead
    state = h.api("/api/state", method="GET", cookie=two).json["data"]
    assert state["authentication_level"] == 2
    replay = h.api("/api/secondfactor/totp", {"token": code_at(totp, h)}, cookie=two)
    assert replay.status_int == 401
    assert replay.json == CODE_WRONG


def test_firstfactor_to_two_factor_target_gets_no_redirect(h: Harness) -> None:
    """After the password, a two_factor target gets no redirect: the portal asks for a code."""
    enrol(h)
    resp = h.api(
        "/api/firstfactor",
        {
            "username": "alice",
            "password": PASSWORDS["alice"],
            "targetURL": "https://secure.example.com/",
        },
    )
    assert resp.status_int == 200
    assert "data" not in resp.json


@pytest.mark.parametrize(
    "token",
    ["１２３４５６", "١٢٣٤٥٦", 123456, " 123456", "123456\n", "12345", "1234567", None, ["123456"]],  # noqa: RUF001
    ids=["fullwidth", "arabic-indic", "int", "space", "newline", "short", "long", "null", "list"],
)
def test_malformed_codes_are_400(h: Harness, token: object) -> None:
    """Only a string of the configured number of ASCII digits is a code; the rest is 400."""
    enrol(h)
    one = h.login("alice")
    resp = h.api("/api/secondfactor/totp", {"token": token}, cookie=one)
    assert resp.status_int == 400
    assert resp.json["status"] == "KO"


@pytest.mark.parametrize("offset", [-2, 2], ids=["two-steps-old", "two-steps-ahead"])
def test_codes_outside_the_skew_fail(h: Harness, offset: int) -> None:
    """Codes two periods away are refused with skew 1."""
    totp = enrol(h)
    one = h.login("alice")
    resp = h.api("/api/secondfactor/totp", {"token": code_at(totp, h, offset)}, cookie=one)
    assert resp.status_int == 401
    assert resp.json == CODE_WRONG


def test_code_needs_a_first_factor_session(h: Harness) -> None:
    """Without a signed-in session the TOTP endpoint refuses."""
    totp = enrol(h)
    resp = h.api("/api/secondfactor/totp", {"token": code_at(totp, h)})
    assert resp.status_int == 401
    forged = h.api(
        "/api/secondfactor/totp",
        {"token": code_at(totp, h)},
        cookie="authctl_session=" + "A" * 43,
    )
    assert forged.status_int == 401


def test_user_without_totp_cannot_pass(h: Harness) -> None:
    """bob has no TOTP: any code fails."""
    one = h.login("bob")
    resp = h.api("/api/secondfactor/totp", {"token": "123456"}, cookie=one)
    assert resp.status_int == 401
    assert resp.json == CODE_WRONG


def test_parallel_submissions_of_one_code(h: Harness) -> None:
    """Of 20 parallel submissions of one valid code, exactly one succeeds."""
    totp = enrol(h)
    one = h.login("alice")
    code = code_at(totp, h)

    def submit(_: int) -> int:
        return int(h.api("/api/secondfactor/totp", {"token": code}, cookie=one).status_int)

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(submit, range(20)))
    assert statuses.count(200) == 1
    assert all(s in (200, 401) for s in statuses)


def test_user_info_reports_totp(h: Harness) -> None:
    """/api/user/info says whether TOTP is enrolled."""
    cookie = h.login("alice")
    assert h.api("/api/user/info", method="GET", cookie=cookie).json["data"]["has_totp"] is False
    enrol(h)
    assert h.api("/api/user/info", method="GET", cookie=cookie).json["data"]["has_totp"] is True


# ---------------------------------------------------------------------- regulation


def test_three_failures_ban_even_the_right_password(h: Harness) -> None:
    """3 wrong passwords ban the user; the right one then gets the same answer until ban_time."""
    for _ in range(3):
        assert (
            h.api("/api/firstfactor", {"username": "bob", "password": "nope"}).json == AUTH_FAILED
        )
    banned = h.api("/api/firstfactor", {"username": "bob", "password": PASSWORDS["bob"]})
    assert banned.status_int == 401
    assert banned.json == AUTH_FAILED
    assert "Set-Cookie" not in banned.headers
    h.clock.advance(301)
    assert (
        h.api("/api/firstfactor", {"username": "bob", "password": PASSWORDS["bob"]}).status_int
        == 200
    )


def test_spellings_share_one_counter(h: Harness) -> None:
    """Bob, BOB and the fullwidth spelling count against one user (GHSA-hjj4)."""
    for name in ("Bob", "BOB", "\uff42\uff4f\uff42"):
        h.api("/api/firstfactor", {"username": name, "password": "nope"})
    resp = h.api("/api/firstfactor", {"username": "bob", "password": PASSWORDS["bob"]})
    assert resp.status_int == 401


def test_basic_auth_is_regulated(h: Harness) -> None:
    """Wrong Basic credentials count too; a banned user's right credentials then fail."""
    import base64

    def header(password: str) -> dict[str, str]:
        token = base64.b64encode(f"bob:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    for _ in range(3):
        assert h.forward_auth("https://app.example.com/", extra=header("nope")).status_int == 401
    resp = h.forward_auth("https://app.example.com/", extra=header(PASSWORDS["bob"]))
    assert resp.status_int == 401


def test_totp_failures_are_regulated(h: Harness) -> None:
    """Three wrong codes ban the user: the right code then fails too."""
    totp = enrol(h)
    one = h.login("alice")
    wrong = "000000" if code_at(totp, h) != "000000" else "111111"
    for _ in range(3):
        assert h.api("/api/secondfactor/totp", {"token": wrong}, cookie=one).json == CODE_WRONG
    resp = h.api("/api/secondfactor/totp", {"token": code_at(totp, h)}, cookie=one)
    assert resp.status_int == 401
    assert resp.json == CODE_WRONG  # a ban reads exactly like a wrong code


def test_regulation_store_failure_fails_closed(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A regulation store that fails refuses the login rather than letting it through: the
    portal says the storage is down (503), and Basic credentials get their 401."""
    from server.core.storage import StorageError

    def broken(*_args: object, **_kwargs: object) -> None:
        raise StorageError("disk on fire")

    monkeypatch.setattr(h.app.authorizer._identities.regulator, "reserve", broken)
    resp = h.api("/api/firstfactor", {"username": "bob", "password": PASSWORDS["bob"]})
    assert resp.status_int == 503
    assert resp.json["message"] == "The storage is unavailable; try again in a moment."
    assert "Set-Cookie" not in resp.headers
    basic = base64.b64encode(f"bob:{PASSWORDS['bob']}".encode()).decode()
    resp = h.forward_auth("https://app.example.com/", extra={"Authorization": f"Basic {basic}"})
    assert resp.status_int == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic")


def test_saturated_hashing_refuses_logins_at_once(h: Harness) -> None:
    """When every hashing slot is taken, a login is refused at once and not counted."""
    import time

    gate = h.app.authorizer._identities.gate
    held = [gate._slots.acquire(blocking=False) for _ in range(gate.max_concurrent)]
    assert all(held)
    try:
        started = time.monotonic()
        resp = h.api("/api/firstfactor", {"username": "bob", "password": PASSWORDS["bob"]})
        assert time.monotonic() - started < 1.0
        assert resp.status_int == 401
        assert resp.json == AUTH_FAILED
    finally:
        for _ in held:
            gate._slots.release()
    # the refused attempt did not count: three real failures are still needed for a ban
    for _ in range(2):
        h.api("/api/firstfactor", {"username": "bob", "password": "nope"})
    assert (
        h.api("/api/firstfactor", {"username": "bob", "password": PASSWORDS["bob"]}).status_int
        == 200
    )


def test_totp_storage_failure_is_the_stores_503(h: Harness) -> None:
    """A storage outage during the code check is the store's 503 (the same answer as every
    other endpoint, ``server.web.errors``), not "the code is wrong": retyping cannot help."""
    totp = enrol(h)
    one = h.login("alice")
    h.app.portal.totp.storage.close()
    resp = h.api("/api/secondfactor/totp", {"token": code_at(totp, h)}, cookie=one)
    assert resp.status_int == 503
    assert resp.json == {
        "status": "KO",
        "message": "The storage is unavailable; try again in a moment.",
    }
    assert resp.headers["Retry-After"] == "5"
