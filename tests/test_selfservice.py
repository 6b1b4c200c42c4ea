"""Self-service over HTTP, in process (server/web/selfservice.py; SPEC §3.2; security.md §2 E, I).

Every flow runs through the WSGI app with the filesystem notifier: the test reads the code or
the link from the notifications file, as a user reads their mail. One test goes end to end
through a real SMTP server (aiosmtpd on loopback) configured in ``[notifier.smtp]``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import typing as t
from dataclasses import dataclass
from pathlib import Path
from unittest.mock import ANY
from urllib.parse import unquote

import pytest
from aiosmtpd.controller import Controller

from server.core.hashcap import Busy
from server.core.notifier import Message
from server.core.notifier import NotifierError
from server.core.notifier import Outbox
from server.core.otc import SignedTokens
from server.core.ratelimit import RateLimits
from server.core.ratelimit import limits
from server.core.storage import Storage
from server.core.totp import totp_at
from server.core.userfile import UsersFile
from server.web.selfservice import SelfServiceApi
from server.web.selfservice import SelfServiceSettings
from tests.apphelpers import APP_CONFIG
from tests.apphelpers import PASSWORDS
from tests.apphelpers import Harness
from tests.apphelpers import build
from tests.test_notifier import Blocking
from tests.test_notifier import Handler
from tests.test_notifier import HungRelay
from tests.test_notifier import Received
from tests.test_notifier import free_port

NEW_PASSWORD = "a brand new passphrase"
ELEVATION = {"status": "KO", "message": ANY, "data": {"elevation": True}}


@dataclass
class SS:
    """The app, its self-service part, and what the tests observe."""

    h: Harness
    svc: SelfServiceApi
    sleeps: list[float]

    @property
    def notes(self) -> Path:
        """The notifications file ([notifier] filesystem)."""
        path = self.h.config.notifier.filesystem
        assert path is not None
        return path

    def messages(self) -> list[dict[str, str]]:
        """Every message in the notifications file, oldest first (after the outbox drained)."""
        self.svc.outbox.flush()
        if not self.notes.exists():
            return []
        out = []
        for chunk in self.notes.read_text().split("Date: ")[1:]:
            head, _, body = chunk.partition("\n\n")
            lines = dict(line.split(": ", 1) for line in head.splitlines()[1:])
            out.append({"to": lines["Recipient"], "subject": lines["Subject"], "body": body})
        return out

    def last(self) -> dict[str, str]:
        """The newest message."""
        found = self.messages()
        assert found, "no message was sent"
        return found[-1]

    def code(self) -> str:
        """The one-time code of the newest message."""
        found = re.search(r"^    ([A-Z0-9]{8})$", self.last()["body"], re.MULTILINE)
        assert found, self.last()
        return found.group(1)

    def token(self) -> str:
        """The token of the newest reset link."""
        found = re.search(r"/reset-password/step2\?token=([^&\s]+)", self.last()["body"])
        assert found, self.last()
        return unquote(found.group(1))


@pytest.fixture
def ss(tmp_path: Path, clock: t.Any) -> SS:
    """An app over the catalogue fixture, with a recorded (not slept) reset padding."""
    return make_ss(tmp_path, clock)


def make_ss(tmp_path: Path, clock: t.Any, config_text: str = APP_CONFIG) -> SS:
    """Build the app; the reset padding is recorded instead of slept."""
    h = build(tmp_path, clock, config_text)
    svc = h.app.selfservice
    assert svc is not None
    sleeps: list[float] = []
    svc.sleep = sleeps.append
    return SS(h, svc, sleeps)


def cookie_of(resp: t.Any) -> str:
    """The ``name=value`` of the response's Set-Cookie."""
    return str(resp.headers["Set-Cookie"]).split(";", 1)[0]


def elevate(ss: SS, cookie: str) -> str:
    """Ask for a code, read it from the mail, send it back; return the new cookie."""
    sent = ss.h.api("/api/user/session/elevation", {}, cookie=cookie)
    assert sent.status_int == 200, sent.text
    resp = ss.h.api("/api/user/session/elevation", {"otc": ss.code()}, method="PUT", cookie=cookie)
    assert resp.status_int == 200, resp.text
    return cookie_of(resp)


def state(ss: SS, cookie: str) -> dict[str, t.Any]:
    """``/api/state`` data."""
    return t.cast(
        dict[str, t.Any], ss.h.api("/api/state", method="GET", cookie=cookie).json["data"]
    )


def second_factor(ss: SS, cookie: str, secret: str, offset: float = 0) -> str:
    """Pass the TOTP second factor; return the new cookie."""
    code = totp_at(secret, ss.h.clock.now + offset, ss.h.config.totp)
    resp = ss.h.api("/api/secondfactor/totp", {"token": code}, cookie=cookie)
    assert resp.status_int == 200, resp.text
    return cookie_of(resp)


def login_ok(ss: SS, username: str, password: str) -> bool:
    """Whether a first factor with these credentials succeeds."""
    resp = ss.h.api("/api/firstfactor", {"username": username, "password": password})
    return bool(resp.status_int == 200)


# =========================================================================== elevation


def test_elevation_flow(ss: SS) -> None:
    """A mailed code elevates the session for 10 minutes under a NEW session id."""
    one = ss.h.login("alice")
    before = ss.h.api("/api/user/session/elevation", method="GET", cookie=one).json["data"]
    assert before["elevated"] is False
    assert before["expires"] == 0
    assert ss.h.api("/api/user/session/elevation", {}, cookie=one).json == {"status": "OK"}
    message = ss.last()
    assert message["to"] == "Alice Liddell <alice@example.com>"
    assert message["subject"] == "Your verification code"
    typed = f"  {ss.code().lower()} "
    resp = ss.h.api("/api/user/session/elevation", {"otc": typed}, method="PUT", cookie=one)
    assert resp.status_int == 200
    assert resp.json["data"] == {"elevated": True, "expires": 600}
    two = cookie_of(resp)
    assert two != one
    assert ss.h.api("/api/user/session/elevation", method="GET", cookie=one).status_int == 401
    after = ss.h.api("/api/user/session/elevation", method="GET", cookie=two).json["data"]
    assert after["elevated"] is True
    assert after["expires"] == 600
    assert state(ss, two)["authentication_level"] == 1


def test_elevation_needs_sign_in(ss: SS) -> None:
    """Without a session the elevation endpoints answer 401 with data.first_factor."""
    for method, payload in (("GET", None), ("POST", {}), ("PUT", {"otc": "ABCDEFGH"})):
        resp = ss.h.api("/api/user/session/elevation", payload, method=method)
        assert resp.status_int == 401
        assert resp.json["data"] == {"first_factor": True}


def test_code_is_single_use(ss: SS) -> None:
    """The same code cannot elevate twice."""
    one = ss.h.login("alice")
    ss.h.api("/api/user/session/elevation", {}, cookie=one)
    code = ss.code()
    two = cookie_of(
        ss.h.api("/api/user/session/elevation", {"otc": code}, method="PUT", cookie=one)
    )
    again = ss.h.api("/api/user/session/elevation", {"otc": code}, method="PUT", cookie=two)
    assert again.status_int == 401
    assert again.json["message"].startswith("The code is wrong")


def test_code_is_bound_to_its_session(ss: SS) -> None:
    """A code mailed for one session does not elevate another session of the same user."""
    first = ss.h.login("alice")
    second = ss.h.login("alice")
    ss.h.api("/api/user/session/elevation", {}, cookie=first)
    code = ss.code()
    ss.h.api("/api/user/session/elevation", {}, cookie=second)  # second has a pending code
    other = ss.h.api("/api/user/session/elevation", {"otc": code}, method="PUT", cookie=second)
    assert other.status_int == 401
    mine = ss.h.api("/api/user/session/elevation", {"otc": code}, method="PUT", cookie=first)
    assert mine.status_int == 200


def test_code_expires_after_five_minutes(ss: SS) -> None:
    """A code older than 5 minutes is refused."""
    one = ss.h.login("alice", remember=True)
    ss.h.api("/api/user/session/elevation", {}, cookie=one)
    ss.h.clock.advance(301)
    resp = ss.h.api("/api/user/session/elevation", {"otc": ss.code()}, method="PUT", cookie=one)
    assert resp.status_int == 401


def test_code_dies_after_five_wrong_tries(ss: SS) -> None:
    """After five wrong codes the right one is refused too."""
    one = ss.h.login("alice")
    ss.h.api("/api/user/session/elevation", {}, cookie=one)
    code = ss.code()
    for _ in range(5):
        wrong = ss.h.api(
            "/api/user/session/elevation", {"otc": "WRONG234"}, method="PUT", cookie=one
        )
        assert wrong.status_int == 401
    right = ss.h.api("/api/user/session/elevation", {"otc": code}, method="PUT", cookie=one)
    assert right.status_int == 401


def test_put_without_a_pending_code(ss: SS) -> None:
    """Sending a code that was never asked for is refused."""
    one = ss.h.login("alice")
    resp = ss.h.api("/api/user/session/elevation", {"otc": "ABCDEFGH"}, method="PUT", cookie=one)
    assert resp.status_int == 401


@pytest.mark.parametrize(
    ("payload", "status"),
    [({"otc": 12345678}, 400), ({}, 400), ({"otc": "A" * 21}, 400), ({"otc": "ÄÖÜ"}, 401)],
    ids=["int", "missing", "too-long", "non-ascii"],
)
def test_malformed_codes(ss: SS, payload: dict[str, object], status: int) -> None:
    """Codes must be strings of at most 20 characters; others simply do not match."""
    one = ss.h.login("alice")
    ss.h.api("/api/user/session/elevation", {}, cookie=one)
    resp = ss.h.api("/api/user/session/elevation", payload, method="PUT", cookie=one)
    assert resp.status_int == status


def test_elevation_expires_after_ten_minutes(ss: SS) -> None:
    """Ten minutes after the code, the session needs a new identity check."""
    one = elevate(ss, ss.h.login("alice", remember=True))
    assert (
        ss.h.api("/api/secondfactor/totp/register", {}, method="PUT", cookie=one).status_int == 200
    )
    ss.h.clock.advance(601)
    resp = ss.h.api("/api/secondfactor/totp/register", {}, method="PUT", cookie=one)
    assert resp.status_int == 403
    assert resp.json == ELEVATION


def test_elevation_needs_an_email_address(ss: SS) -> None:
    """A user without an email address is told so; no code is issued."""
    text = ss.h.config.users.file.read_text().replace('email = "bob@example.com"\n', "")
    ss.h.rewrite_users(text)
    one = ss.h.login("bob")
    resp = ss.h.api("/api/user/session/elevation", {}, cookie=one)
    assert resp.status_int == 400
    assert "no email address" in resp.json["message"]
    assert ss.messages() == []


def test_code_requests_are_rate_limited_per_user(ss: SS) -> None:
    """A fourth code within 5 minutes is refused with 429 and Retry-After (no mail-bombing)."""
    one = ss.h.login("alice")
    for _ in range(3):
        assert ss.h.api("/api/user/session/elevation", {}, cookie=one).status_int == 200
    resp = ss.h.api("/api/user/session/elevation", {}, cookie=one)
    assert resp.status_int == 429
    assert int(resp.headers["Retry-After"]) > 0
    assert len(ss.messages()) == 3
    ss.h.clock.advance(300)
    one = ss.h.login("alice")
    assert ss.h.api("/api/user/session/elevation", {}, cookie=one).status_int == 200


def test_code_requests_are_rate_limited_per_ip(ss: SS) -> None:
    """Code requests from one IP are limited across users."""
    ss.svc.limiters["code_send_ip"] = ss.svc.rate_limits.limiter("code_send_ip", limits((2, 300)))
    ip = {"X-Forwarded-For": "203.0.113.9"}
    alice, bob = ss.h.login("alice"), ss.h.login("bob")
    assert ss.h.api("/api/user/session/elevation", {}, cookie=alice, headers=ip).status_int == 200
    assert ss.h.api("/api/user/session/elevation", {}, cookie=bob, headers=ip).status_int == 200
    assert ss.h.api("/api/user/session/elevation", {}, cookie=bob, headers=ip).status_int == 429
    other = {"X-Forwarded-For": "203.0.113.10"}
    assert ss.h.api("/api/user/session/elevation", {}, cookie=bob, headers=other).status_int == 200


def test_code_checks_are_rate_limited(ss: SS) -> None:
    """Ten code checks a minute per user; the eleventh is 429."""
    one = ss.h.login("alice")
    ss.h.api("/api/user/session/elevation", {}, cookie=one)
    for _ in range(10):
        ss.h.api("/api/user/session/elevation", {"otc": "WRONG234"}, method="PUT", cookie=one)
    resp = ss.h.api("/api/user/session/elevation", {"otc": "WRONG234"}, method="PUT", cookie=one)
    assert resp.status_int == 429


class Failing:
    """A notifier whose relay is down."""

    def send(self, message: Message) -> None:
        raise NotifierError("relay down")

    def startup_check(self) -> None:
        raise NotifierError("relay down")


def test_mail_failure_revokes_the_code(ss: SS, caplog: pytest.LogCaptureFixture) -> None:
    """The code is mailed from the outbox: the request answers at once; when the relay then
    fails, the failure is logged and the code is dead (it reached nobody)."""
    ss.svc.outbox.notifier = Failing()
    one = ss.h.login("alice")
    resp = ss.h.api("/api/user/session/elevation", {}, cookie=one)
    assert resp.status_int == 200
    assert ss.svc.outbox.flush(timeout=5)
    assert [c.consumed_ip for c in ss.svc.codes.storage.one_time_codes()] == ["revoked"]
    assert "a notification could not be sent" in caplog.text
    ss.svc.notifier = Failing()
    with pytest.raises(NotifierError):
        ss.svc.startup_check()


def test_storage_failure_is_503(ss: SS) -> None:
    """A broken storage fails closed with 503, answered by the app's one error boundary
    (the same answer as from ``/api/firstfactor``)."""
    one = ss.h.login("alice")
    ss.svc.codes.storage.close()
    resp = ss.h.api("/api/user/session/elevation", {}, cookie=one)
    assert resp.status_int == 503
    assert resp.json["message"] == "The storage is unavailable; try again in a moment."
    assert resp.headers["Retry-After"] == "5"


def test_session_gone_between_check_and_save(ss: SS, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the session ends while the code is being sent, the answer says to sign in again."""
    one = ss.h.login("alice")
    from server.core.sessions import SessionGoneError

    def gone(*args: object) -> None:
        raise SessionGoneError("gone")

    monkeypatch.setattr(ss.svc.sessions, "update_data", gone)
    resp = ss.h.api("/api/user/session/elevation", {}, cookie=one)
    assert resp.status_int == 401
    assert resp.json["data"] == {"first_factor": True}


def test_session_gone_during_elevation(ss: SS, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session that ended (another tab's factor) before the elevation is not elevated."""
    one = ss.h.login("alice")
    ss.h.api("/api/user/session/elevation", {}, cookie=one)
    from server.core.sessions import SessionGoneError

    def gone(*args: object, **kw: object) -> None:
        raise SessionGoneError("gone")

    monkeypatch.setattr(ss.svc.sessions, "elevate", gone)
    resp = ss.h.api("/api/user/session/elevation", {"otc": ss.code()}, method="PUT", cookie=one)
    assert resp.status_int == 401
    assert resp.json["data"] == {"first_factor": True}


# =========================================================================== TOTP enrolment


def test_enrol_totp_then_sign_in_with_it(ss: SS) -> None:
    """Issue 6 done-when: a user without TOTP enrols one with the mailed code, then passes a
    two_factor site with it."""
    h = ss.h
    one = h.login("alice")
    assert h.api("/api/user/info", method="GET", cookie=one).json["data"]["has_totp"] is False
    refused = h.api("/api/secondfactor/totp/register", {}, method="PUT", cookie=one)
    assert refused.status_int == 403
    assert refused.json == ELEVATION
    elevated = elevate(ss, one)
    start = h.api("/api/secondfactor/totp/register", {}, method="PUT", cookie=elevated)
    assert start.status_int == 200
    secret = start.json["data"]["base32_secret"]
    uri = start.json["data"]["otpauth_url"]
    assert uri.startswith("otpauth://totp/authctl:alice?secret=" + secret)
    qr = h.api("/api/secondfactor/totp/register/qr.svg", method="GET", cookie=elevated)
    assert qr.status_int == 200
    assert qr.headers["Content-Type"] == "image/svg+xml"
    confirm_code = totp_at(secret, h.clock.now, h.config.totp)
    done = h.api("/api/secondfactor/totp/register", {"token": confirm_code}, cookie=elevated)
    assert done.status_int == 200, done.text
    assert h.api("/api/user/info", method="GET", cookie=elevated).json["data"]["has_totp"] is True
    assert ss.last()["subject"] == "An authenticator app was set up"
    # the confirming code cannot be replayed as a second factor
    replay = h.api("/api/secondfactor/totp", {"token": confirm_code}, cookie=elevated)
    assert replay.status_int == 401
    # sign in again, from scratch, on the two_factor site
    target = "https://secure.example.com/"
    h.api("/api/logout", {}, cookie=elevated)
    fresh = h.login("alice")
    assert h.forward_auth(target, cookie=fresh).status_int == 302
    h.clock.advance(30)
    two = second_factor(ss, fresh, secret)
    allowed = h.forward_auth(target, cookie=two)
    assert allowed.status_int == 200
    assert allowed.headers["Remote-User"] == "alice"


def test_replacing_totp_needs_second_factor(ss: SS) -> None:
    """With a TOTP enrolled, enrolment (and removal) first need the current second factor."""
    secret, _ = ss.h.app.portal.totp.enrol("alice")
    one = elevate(ss, ss.h.login("alice"))
    for method, path in (
        ("PUT", "/api/secondfactor/totp/register"),
        ("DELETE", "/api/secondfactor/totp"),
    ):
        resp = ss.h.api(path, {}, method=method, cookie=one)
        assert resp.status_int == 403
        assert resp.json["data"] == {"second_factor": True}
    two = second_factor(ss, one, secret)  # elevation survives the new id
    assert (
        ss.h.api("/api/secondfactor/totp/register", {}, method="PUT", cookie=two).status_int == 200
    )


def test_register_options(ss: SS) -> None:
    """``{algorithm, length, period}`` shape the secret; the confirming code must match them."""
    one = elevate(ss, ss.h.login("alice"))
    opts = {"algorithm": "sha256", "length": 8, "period": 60}
    start = ss.h.api("/api/secondfactor/totp/register", opts, method="PUT", cookie=one)
    data = start.json["data"]
    assert "algorithm=SHA256" in data["otpauth_url"]
    assert "digits=8" in data["otpauth_url"]
    assert "period=60" in data["otpauth_url"]
    from dataclasses import replace

    cfg = replace(ss.h.config.totp, algorithm="SHA256", digits=8, period=60)
    six = ss.h.api("/api/secondfactor/totp/register", {"token": "123456"}, cookie=one)
    assert six.status_int == 400
    assert six.json["message"] == "The code must be 8 digits."
    code = totp_at(data["base32_secret"], ss.h.clock.now, cfg)
    assert (
        ss.h.api("/api/secondfactor/totp/register", {"token": code}, cookie=one).status_int == 200
    )
    info = ss.svc.totp.info("alice")
    assert info is not None
    assert (info.algorithm, info.digits, info.period) == ("SHA256", 8, 60)


@pytest.mark.parametrize(
    "opts",
    [{"algorithm": "MD5"}, {"length": 7}, {"period": 5}, {"period": 3600}, {"length": "6"}],
    ids=["md5", "seven", "short-period", "long-period", "string-length"],
)
def test_bad_register_options(ss: SS, opts: dict[str, object]) -> None:
    """Unsupported algorithms, lengths and periods are 400."""
    one = elevate(ss, ss.h.login("alice"))
    resp = ss.h.api("/api/secondfactor/totp/register", opts, method="PUT", cookie=one)
    assert resp.status_int == 400


def test_qr_code_is_a_safe_same_origin_svg(ss: SS) -> None:
    """The QR is a script-free SVG, not cached, not embeddable cross-origin."""
    one = elevate(ss, ss.h.login("alice"))
    ss.h.api("/api/secondfactor/totp/register", {}, method="PUT", cookie=one)
    qr = ss.h.api("/api/secondfactor/totp/register/qr.svg", method="GET", cookie=one)
    body = qr.body.decode()
    assert body.startswith("<?xml")
    assert "<svg" in body
    assert "<script" not in body
    assert not re.search(r"(?:xlink:)?href\s*=", body)
    assert qr.headers["Cache-Control"] == "no-store"
    assert qr.headers["Cross-Origin-Resource-Policy"] == "same-origin"
    cross = ss.h.api(
        "/api/secondfactor/totp/register/qr.svg",
        method="GET",
        cookie=one,
        headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example.net"},
    )
    assert cross.status_int == 403


def test_qr_code_encodes_the_returned_uri(ss: SS) -> None:
    """The served SVG is the QR code of exactly the otpauth URI the PUT returned."""
    from server.web.selfservice import qr_svg

    one = elevate(ss, ss.h.login("alice"))
    start = ss.h.api("/api/secondfactor/totp/register", {}, method="PUT", cookie=one)
    uri = start.json["data"]["otpauth_url"]
    qr = ss.h.api("/api/secondfactor/totp/register/qr.svg", method="GET", cookie=one)
    assert qr.body == qr_svg(uri)
    assert qr.body != qr_svg(uri + "x")


def test_qr_without_pending_setup(ss: SS) -> None:
    """No setup in progress (or one older than 10 minutes): 404."""
    one = elevate(ss, ss.h.login("alice", remember=True))
    assert (
        ss.h.api("/api/secondfactor/totp/register/qr.svg", method="GET", cookie=one).status_int
        == 404
    )
    ss.h.api("/api/secondfactor/totp/register", {}, method="PUT", cookie=one)
    ss.h.clock.advance(599)
    assert (
        ss.h.api("/api/secondfactor/totp/register/qr.svg", method="GET", cookie=one).status_int
        == 200
    )
    ss.h.clock.advance(2)
    expired = ss.h.api("/api/secondfactor/totp/register/qr.svg", method="GET", cookie=one)
    assert expired.status_int == 403  # the elevation ended too (10 min)
    assert expired.json["data"] == {"elevation": True}


def test_confirm_rules(ss: SS) -> None:
    """Wrong codes store nothing; malformed ones are 400; without a setup it is 400."""
    one = elevate(ss, ss.h.login("alice"))
    no_setup = ss.h.api("/api/secondfactor/totp/register", {"token": "123456"}, cookie=one)
    assert no_setup.status_int == 400
    start = ss.h.api("/api/secondfactor/totp/register", {}, method="PUT", cookie=one)
    secret = start.json["data"]["base32_secret"]
    for token in (123456, None, "12345", "１２３４５６"):  # noqa: RUF001 - fullwidth on purpose
        bad = ss.h.api("/api/secondfactor/totp/register", {"token": token}, cookie=one)
        assert bad.status_int == 400, token
    old = totp_at(secret, ss.h.clock.now - 120, ss.h.config.totp)
    wrong = ss.h.api("/api/secondfactor/totp/register", {"token": old}, cookie=one)
    assert wrong.status_int == 401
    assert ss.svc.totp.has_totp("alice") is False


def test_cancel_forgets_the_pending_secret(ss: SS) -> None:
    """DELETE …/register drops the pending secret; the QR is then 404."""
    one = elevate(ss, ss.h.login("alice"))
    assert (
        ss.h.api("/api/secondfactor/totp/register", {}, method="DELETE", cookie=one).status_int
        == 200
    )
    ss.h.api("/api/secondfactor/totp/register", {}, method="PUT", cookie=one)
    assert (
        ss.h.api("/api/secondfactor/totp/register", {}, method="DELETE", cookie=one).status_int
        == 200
    )
    assert (
        ss.h.api("/api/secondfactor/totp/register/qr.svg", method="GET", cookie=one).status_int
        == 404
    )


def test_remove_own_totp(ss: SS) -> None:
    """A level-2, elevated user removes their TOTP; a notice is mailed; removing again is OK."""
    secret, _ = ss.h.app.portal.totp.enrol("alice")
    two = second_factor(ss, ss.h.login("alice"), secret)
    two = elevate(ss, two)
    resp = ss.h.api("/api/secondfactor/totp", {}, method="DELETE", cookie=two)
    assert resp.status_int == 200
    assert ss.svc.totp.has_totp("alice") is False
    assert ss.last()["subject"] == "Your authenticator app was removed"
    count = len(ss.messages())
    assert ss.h.api("/api/secondfactor/totp", {}, method="DELETE", cookie=two).status_int == 200
    assert len(ss.messages()) == count


def test_remove_needs_elevation(ss: SS) -> None:
    """Without a TOTP, removal still needs an elevated session."""
    one = ss.h.login("bob")
    resp = ss.h.api("/api/secondfactor/totp", {}, method="DELETE", cookie=one)
    assert resp.json == ELEVATION


def test_totp_post_still_works(ss: SS) -> None:
    """Merging the routes kept POST /api/secondfactor/totp next to the new DELETE."""
    routes = ss.h.app.routes.methods("/api/secondfactor/totp")
    assert routes is not None
    assert set(routes) == {"POST", "DELETE"}
    resp = ss.h.api("/api/secondfactor/totp", {}, method="PATCH")
    assert resp.status_int == 405
    assert resp.headers["Allow"] == "DELETE, POST"


# =========================================================================== password reset


def reset_start(ss: SS, username: str, **kw: t.Any) -> t.Any:
    """POST identity/start."""
    return ss.h.api("/api/reset-password/identity/start", {"username": username}, **kw)


def reset_finish(ss: SS, token: str, **kw: t.Any) -> t.Any:
    """POST identity/finish."""
    return ss.h.api("/api/reset-password/identity/finish", {"token": token}, **kw)


def test_reset_forgotten_password(ss: SS) -> None:
    """Issue 6 done-when: a mailed link resets the password; old sessions die; the new
    password signs in and the old one does not."""
    h = ss.h
    old_session = h.login("alice")
    other_session = h.login("alice", remember=True)
    assert h.forward_auth("https://app.example.com/", cookie=old_session).status_int == 200
    assert reset_start(ss, "alice").json == {"status": "OK"}
    mail = ss.last()
    assert mail["subject"] == "Reset your password"
    assert "https://auth.example.com/reset-password/step2?token=" in mail["body"]
    finish = reset_finish(ss, ss.token())
    assert finish.status_int == 200, finish.text
    grant = cookie_of(finish)
    assert state(ss, grant)["authentication_level"] == 0
    done = h.api("/api/reset-password", {"password": NEW_PASSWORD}, cookie=grant)
    assert done.status_int == 200, done.text
    assert "Max-Age=0" in done.headers["Set-Cookie"]
    for dead in (old_session, other_session):
        assert h.forward_auth("https://app.example.com/", cookie=dead).status_int == 302
    assert login_ok(ss, "alice", NEW_PASSWORD)
    assert not login_ok(ss, "alice", PASSWORDS["alice"])
    assert ss.last()["subject"] == "Your password was changed"
    again = h.api("/api/reset-password", {"password": "yet another passphrase"}, cookie=grant)
    assert again.status_int == 401


@pytest.mark.parametrize(
    ("target", "rd"),
    [
        ("https://app.example.com/x?y=1", "https%3A%2F%2Fapp.example.com%2Fx%3Fy%3D1"),
        ("https://evil-phish.com/", None),
        ("http://app.example.com/", None),
        ("https://app.example.com\\@evil.com/", None),
        (None, None),
    ],
    ids=["safe", "foreign", "http", "backslash", "none"],
)
def test_reset_link_carries_only_a_safe_target(ss: SS, target: str | None, rd: str | None) -> None:
    """Issue 14 §5: a finished reset returns to the site the user came from. The start's
    ``targetURL`` rides in the mailed link as ``rd`` only when the redirect check passes it
    (re-serialised), and the answer is the same either way."""
    payload: dict[str, object] = {"username": "alice"}
    if target is not None:
        payload["targetURL"] = target
    resp = ss.h.api("/api/reset-password/identity/start", payload)
    assert resp.json == {"status": "OK"}
    link = re.search(r"https://\S+/reset-password/step2\?\S+", ss.last()["body"])
    assert link
    query = link.group(0).split("?", 1)[1]
    params = dict(part.split("=", 1) for part in query.split("&"))
    assert set(params) == ({"token", "rd"} if rd else {"token"})
    assert params.get("rd") == rd
    assert reset_finish(ss, unquote(params["token"])).status_int == 200


def test_reset_start_ignores_a_target_of_the_wrong_type(ss: SS) -> None:
    """``targetURL`` must be a string, like everywhere else."""
    resp = ss.h.api("/api/reset-password/identity/start", {"username": "alice", "targetURL": ["x"]})
    assert resp.status_int == 400
    assert resp.json["message"] == "Field targetURL has the wrong type."


def strip(resp: t.Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers without Date and X-Request-Id, body."""
    headers = [(k, v) for k, v in resp.headerlist if k.lower() not in ("date", "x-request-id")]
    return resp.status_int, headers, resp.body


def test_reset_start_is_identical_for_every_name(ss: SS) -> None:
    """Existing, missing, disabled and malformed names get byte-identical answers, padded to
    the same minimum time, with no cookie."""
    names = ("alice", "nobody", "carol", "Ｂｏｂ", "bad name!", "x" * 300)  # noqa: RUF001
    answers = [
        strip(reset_start(ss, name, headers={"X-Forwarded-For": f"203.0.113.{i}"}))
        for i, name in enumerate(names)
    ]
    assert all(answer == answers[0] for answer in answers)
    assert not any(k.lower() == "set-cookie" for k, _ in answers[0][1])
    assert answers[0][2] == b'{"status":"OK"}'
    assert len(ss.sleeps) == 6
    assert all(0.45 <= s <= 0.6 for s in ss.sleeps), ss.sleeps
    sent = ss.messages()
    assert [m["to"] for m in sent] == ["Alice Liddell <alice@example.com>", "Bob <bob@example.com>"]


@pytest.mark.slow
def test_reset_start_timing_is_padded(ss: SS) -> None:
    """With the real sleep, an existing and a missing user both take at least 0.5 s."""
    ss.svc.sleep = time.sleep
    durations = {}
    for name in ("alice", "nobody"):
        started = time.monotonic()
        assert reset_start(ss, name).status_int == 200
        durations[name] = time.monotonic() - started
    assert all(0.5 <= d < 1.5 for d in durations.values()), durations
    assert abs(durations["alice"] - durations["nobody"]) < 0.25


def test_reset_start_failure_inside_gives_the_same_answer(ss: SS) -> None:
    """A storage failure while issuing the link still answers OK (no enumeration by error)."""
    ss.svc.tokens.storage.close()
    assert strip(reset_start(ss, "alice")) == strip(reset_start(ss, "nobody"))


def test_reset_link_uses_configured_portal_url(ss: SS) -> None:
    """The link comes from the cookie domain's portal_url, never from the Host header."""
    reset_start(ss, "alice", host="login.example.org")
    assert "https://login.example.org/reset-password/step2?token=" in ss.last()["body"]
    resp = reset_start(ss, "alice", host="evil.example.net")
    assert resp.status_int == 400
    assert "evil" not in ss.last()["body"]


def test_reset_token_replay_is_refused(ss: SS) -> None:
    """A reset link works once."""
    reset_start(ss, "alice")
    token = ss.token()
    assert reset_finish(ss, token).status_int == 200
    replay = reset_finish(ss, token)
    assert replay.status_int == 401
    assert replay.json["message"].startswith("This link has expired")


def test_reset_token_expires(ss: SS) -> None:
    """A reset link is dead after 5 minutes."""
    reset_start(ss, "alice")
    ss.h.clock.advance(300)
    assert reset_finish(ss, ss.token()).status_int == 401


def test_tampered_reset_tokens_are_refused(ss: SS) -> None:
    """Flipping one character of the payload or of the signature breaks the link."""
    reset_start(ss, "alice")
    token = ss.token()
    payload, mac = token.split(".")
    for bad in (
        f"{payload[:-3]}{'A' if payload[-3] != 'A' else 'B'}{payload[-2:]}.{mac}",
        f"{payload}.{mac[:5]}{'A' if mac[5] != 'A' else 'B'}{mac[6:]}",
        token + "x",
        "",
    ):
        assert reset_finish(ss, bad).status_int == 401, bad
    assert reset_finish(ss, token).status_int == 200


def test_revoked_reset_link_is_dead(ss: SS) -> None:
    """DELETE /api/reset-password {token} revokes an unused link."""
    reset_start(ss, "alice")
    token = ss.token()
    assert ss.h.api("/api/reset-password", {"token": token}, method="DELETE").status_int == 200
    assert reset_finish(ss, token).status_int == 401
    again = ss.h.api("/api/reset-password", {"token": token}, method="DELETE")
    assert again.status_int == 401


def test_link_dies_when_the_password_changes(ss: SS) -> None:
    """A link issued before a password change (here by the CLI's writer) is refused."""
    reset_start(ss, "alice")
    token = ss.token()
    UsersFile(ss.h.config.users.file).set_password("alice", ss.h.hasher.hash("changed by admin"))
    ss.h.users.reload()
    assert reset_finish(ss, token).status_int == 401


def test_second_link_dies_after_the_first_is_used(ss: SS) -> None:
    """Two links were mailed; after resetting with one, the other is dead."""
    reset_start(ss, "alice")
    first = ss.token()
    reset_start(ss, "alice")
    second = ss.token()
    grant = cookie_of(reset_finish(ss, first))
    assert (
        ss.h.api("/api/reset-password", {"password": NEW_PASSWORD}, cookie=grant).status_int == 200
    )
    assert reset_finish(ss, second).status_int == 401


def test_grant_checks(ss: SS) -> None:
    """Setting a password needs a live grant for a user whose password did not change since."""
    resp = ss.h.api("/api/reset-password", {"password": NEW_PASSWORD})
    assert resp.status_int == 401
    signed_in = ss.h.login("bob")
    assert (
        ss.h.api("/api/reset-password", {"password": NEW_PASSWORD}, cookie=signed_in).status_int
        == 401
    )
    reset_start(ss, "alice")
    grant = cookie_of(reset_finish(ss, ss.token()))
    UsersFile(ss.h.config.users.file).set_password("alice", ss.h.hasher.hash("changed by admin"))
    ss.h.users.reload()
    assert (
        ss.h.api("/api/reset-password", {"password": NEW_PASSWORD}, cookie=grant).status_int == 401
    )


def test_grant_expires(ss: SS) -> None:
    """The permission to set the password lasts 5 minutes."""
    ss.svc.settings = type(ss.svc.settings)(reset_grant_lifetime=60)
    reset_start(ss, "alice")
    grant = cookie_of(reset_finish(ss, ss.token()))
    ss.h.clock.advance(61)
    assert (
        ss.h.api("/api/reset-password", {"password": NEW_PASSWORD}, cookie=grant).status_int == 401
    )


def test_finish_replaces_the_browser_session(ss: SS) -> None:
    """Finishing a reset in a signed-in browser ends that session and starts an anonymous one."""
    bob = ss.h.login("bob")
    reset_start(ss, "alice")
    grant = cookie_of(reset_finish(ss, ss.token(), cookie=bob))
    assert grant != bob
    assert state(ss, bob)["authentication_level"] == 0


def test_reset_applies_the_policy(ss: SS) -> None:
    """A weak password is refused with the reason, and the same link can try again."""
    reset_start(ss, "alice")
    grant = cookie_of(reset_finish(ss, ss.token()))
    for weak, reason in (
        ("short", "at least 8"),
        ("password123", "too common"),
        ("alice", "at least"),
    ):
        resp = ss.h.api("/api/reset-password", {"password": weak}, cookie=grant)
        assert resp.status_int == 400
        assert reason in resp.json["message"]
    assert (
        ss.h.api("/api/reset-password", {"password": NEW_PASSWORD}, cookie=grant).status_int == 200
    )


def test_reset_for_a_user_disabled_meanwhile(ss: SS) -> None:
    """A user disabled after the link was mailed cannot use it."""
    reset_start(ss, "bob")
    token = ss.token()
    UsersFile(ss.h.config.users.file).set_disabled("bob", True)
    ss.h.users.reload()
    assert reset_finish(ss, token).status_int == 401


def test_reset_start_per_user_limit_is_silent(ss: SS) -> None:
    """Past 3 starts for one user the answer stays the same but no more mail is sent."""
    for i in range(5):
        resp = reset_start(ss, "alice", headers={"X-Forwarded-For": f"203.0.113.{i}"})
        assert resp.status_int == 200
    assert len(ss.messages()) == 3


def test_reset_start_per_ip_limit(ss: SS) -> None:
    """Five starts per 10 minutes from one IP; the sixth is 429."""
    for i in range(5):
        assert reset_start(ss, f"user{i}").status_int == 200
    resp = reset_start(ss, "user9")
    assert resp.status_int == 429
    assert "Retry-After" in resp.headers


def test_reset_start_limit_is_shared_through_storage(ss: SS) -> None:
    """The per-IP limit is counted in the storage database: hits another process (here a
    second Storage on the same file, as another worker or host would) made count too."""
    other = Storage(ss.h.config.storage, ss.h.clock)
    try:
        elsewhere = RateLimits(other, now=ss.h.clock).limiter(
            "reset_start_ip", ss.svc.settings.reset_start_ip
        )
        for _ in range(3):
            assert elsewhere.hit("203.0.113.77") == 0.0
    finally:
        other.close()
    ip = {"X-Forwarded-For": "203.0.113.77"}
    assert [reset_start(ss, f"user{i}", headers=ip).status_int for i in range(3)] == [
        200,
        200,
        429,
    ]


def test_rate_limit_storage_failure_is_503(ss: SS) -> None:
    """When the storage fails, a rate-limited request is refused with the outage's 503 (fail
    closed), never let through uncounted: a reset start (whose handler hides every other
    failure behind the same 200) included."""
    ss.svc.codes.storage.close()
    resp = reset_start(ss, "alice")
    assert resp.status_int == 503
    assert resp.json["message"] == "The storage is unavailable; try again in a moment."
    assert resp.headers["Retry-After"] == "5"
    assert reset_finish(ss, "garbage").status_int == 503
    assert ss.messages() == []
    assert ss.sleeps == []  # refused before the handler ran


def test_reset_finish_limits(ss: SS) -> None:
    """Finishes are limited per IP (bad tokens) and per user (valid-looking replays)."""
    for _ in range(10):
        reset_finish(ss, "garbage")
    assert reset_finish(ss, "garbage").status_int == 429
    reset_start(ss, "alice", headers={"X-Forwarded-For": "203.0.113.50"})
    token = ss.token()
    statuses = [
        reset_finish(ss, token, headers={"X-Forwarded-For": f"203.0.113.{60 + i}"}).status_int
        for i in range(6)
    ]
    assert statuses == [200, 401, 401, 401, 401, 429]


def test_reset_with_unwritable_users_file(ss: SS, monkeypatch: pytest.MonkeyPatch) -> None:
    """If users.toml cannot be written the answer is 503 and the old password still works."""
    from server.core.errors import Problem
    from server.core.errors import UserStoreError

    def fail(*args: object) -> None:
        raise UserStoreError([Problem(None, "", "read-only file system")])

    monkeypatch.setattr(ss.svc.users_file, "set_password", fail)
    reset_start(ss, "alice")
    grant = cookie_of(reset_finish(ss, ss.token()))
    resp = ss.h.api("/api/reset-password", {"password": NEW_PASSWORD}, cookie=grant)
    assert resp.status_int == 503
    assert login_ok(ss, "alice", PASSWORDS["alice"])


def test_reset_while_the_cli_edits_the_users_file(ss: SS) -> None:
    """A reset and concurrent CLI edits (a thread of UsersFile edits and a real
    `authctl user groups` process) all land: no update is lost."""
    path = ss.h.config.users.file
    stop = threading.Event()
    added: list[str] = []

    def edit_groups() -> None:
        writer = UsersFile(path)
        i = 0
        while not stop.is_set() and i < 40:
            writer.set_groups("bob", add=[f"g{i}"])
            added.append(f"g{i}")
            i += 1

    thread = threading.Thread(target=edit_groups)
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "authctl",
            "--config",
            str(ss.h.config.path),
            "user",
            "groups",
            "carol",
            "--add",
            "from-cli",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    thread.start()
    reset_start(ss, "alice")
    grant = cookie_of(reset_finish(ss, ss.token()))
    done = ss.h.api("/api/reset-password", {"password": NEW_PASSWORD}, cookie=grant)
    stop.set()
    thread.join(30)
    _out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    assert done.status_int == 200
    db = UsersFile(path).read()
    assert set(added) <= set(db["bob"].groups)
    assert "from-cli" in db["carol"].groups
    assert ss.h.hasher.verify(db["alice"].password, NEW_PASSWORD)
    ss.h.users.reload()
    assert login_ok(ss, "alice", NEW_PASSWORD)


# =========================================================================== password change


def change(ss: SS, cookie: str, old: str, new: str) -> t.Any:
    """POST /api/change-password."""
    return ss.h.api(
        "/api/change-password", {"old_password": old, "new_password": new}, cookie=cookie
    )


def test_change_password(ss: SS) -> None:
    """The current session goes on under a new id; the other sessions end; a notice is sent."""
    h = ss.h
    mine, other = h.login("alice"), h.login("alice")
    resp = change(ss, mine, PASSWORDS["alice"], NEW_PASSWORD)
    assert resp.status_int == 200, resp.text
    fresh = cookie_of(resp)
    assert fresh not in (mine, other)
    assert h.forward_auth("https://app.example.com/", cookie=fresh).status_int == 200
    for dead in (mine, other):
        assert h.forward_auth("https://app.example.com/", cookie=dead).status_int == 302
    assert state(ss, fresh)["authentication_level"] == 1
    assert login_ok(ss, "alice", NEW_PASSWORD)
    assert not login_ok(ss, "alice", PASSWORDS["alice"])
    assert ss.last()["subject"] == "Your password was changed"


def test_change_keeps_level_and_absolute_expiry(ss: SS) -> None:
    """A level-2 session stays level 2 after the change, and keeps its hard limit."""
    secret, _ = ss.h.app.portal.totp.enrol("alice")
    two = second_factor(ss, ss.h.login("alice"), secret)
    ss.h.clock.advance(60)
    fresh = cookie_of(change(ss, two, PASSWORDS["alice"], NEW_PASSWORD))
    assert state(ss, fresh)["authentication_level"] == 2
    assert ss.h.forward_auth("https://secure.example.com/", cookie=fresh).status_int == 200
    for _ in range(12):  # kept active: alive until the 1 h hard limit of the first sign-in
        ss.h.clock.advance(290)
        assert ss.h.forward_auth("https://secure.example.com/", cookie=fresh).status_int == 200
    ss.h.clock.advance(61)
    assert ss.h.forward_auth("https://secure.example.com/", cookie=fresh).status_int == 302


def test_change_password_wrong_current_is_regulated(ss: SS) -> None:
    """Wrong current passwords are 401 and count towards a ban (then even the right one fails)."""
    one = ss.h.login("alice")
    for _ in range(3):
        resp = change(ss, one, "not-it", NEW_PASSWORD)
        assert resp.status_int == 401
        assert resp.json["message"] == "The current password is wrong."
    assert change(ss, one, PASSWORDS["alice"], NEW_PASSWORD).status_int == 401


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"old_password": PASSWORDS["alice"], "new_password": PASSWORDS["alice"]}, 400, "differ"),
        ({"old_password": PASSWORDS["alice"], "new_password": "short"}, 400, "at least 8"),
        ({"old_password": PASSWORDS["alice"], "new_password": "iloveyou1"}, 400, "too common"),
        ({"old_password": PASSWORDS["alice"]}, 400, "Missing field new_password"),
        ({"old_password": "", "new_password": NEW_PASSWORD}, 401, "wrong"),
        ({"old_password": "x" * 2000, "new_password": NEW_PASSWORD}, 401, "wrong"),
        ({"old_password": 1, "new_password": NEW_PASSWORD}, 400, "wrong type"),
    ],
    ids=["same", "short", "common", "missing", "empty-old", "huge-old", "int-old"],
)
def test_change_password_refusals(
    ss: SS, payload: dict[str, object], status: int, message: str
) -> None:
    """Bad requests are refused with a reason, before any password is checked or written."""
    one = ss.h.login("alice")
    resp = ss.h.api("/api/change-password", payload, cookie=one)
    assert resp.status_int == status
    assert message in resp.json["message"]
    assert login_ok(ss, "alice", PASSWORDS["alice"])


def test_change_password_needs_sign_in(ss: SS) -> None:
    """Without a session: 401 with data.first_factor."""
    resp = ss.h.api("/api/change-password", {"old_password": "a", "new_password": NEW_PASSWORD})
    assert resp.status_int == 401
    assert resp.json["data"] == {"first_factor": True}


def test_change_password_busy_hashing(ss: SS, monkeypatch: pytest.MonkeyPatch) -> None:
    """When no hashing slot comes free the change is refused with 503, nothing written."""
    one = ss.h.login("alice")
    calls = {"n": 0}
    real = ss.svc.identities.gate.slot

    def slot() -> t.Any:
        calls["n"] += 1
        if calls["n"] > 1:  # the first slot checks the current password
            raise Busy()
        return real()

    monkeypatch.setattr(ss.svc.identities.gate, "slot", slot)
    resp = change(ss, one, PASSWORDS["alice"], NEW_PASSWORD)
    assert resp.status_int == 503
    monkeypatch.undo()
    assert login_ok(ss, "alice", PASSWORDS["alice"])


def test_change_password_for_a_removed_user(ss: SS, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the user vanished from the file meanwhile, the change says to sign in again."""
    from server.core.errors import UserError

    def gone(*args: object) -> None:
        raise UserError("no user")

    one = ss.h.login("alice")
    monkeypatch.setattr(ss.svc.users_file, "set_password", gone)
    resp = change(ss, one, PASSWORDS["alice"], NEW_PASSWORD)
    assert resp.status_int == 401
    assert resp.json["data"] == {"first_factor": True}


def test_notice_skipped_without_email(ss: SS) -> None:
    """A user without an email address changes the password; no notice can be sent."""
    text = ss.h.config.users.file.read_text().replace('email = "bob@example.com"\n', "")
    ss.h.rewrite_users(text)
    one = ss.h.login("bob")
    assert change(ss, one, PASSWORDS["bob"], NEW_PASSWORD).status_int == 200
    assert ss.messages() == []


def test_notice_with_unusable_address_is_skipped(ss: SS, caplog: pytest.LogCaptureFixture) -> None:
    """An address the mailer refuses (two addresses in one) does not fail the change."""
    text = ss.h.config.users.file.read_text().replace(
        'email = "bob@example.com"', 'email = "bob@example.com,eve"'
    )
    ss.h.rewrite_users(text)
    one = ss.h.login("bob")
    assert change(ss, one, PASSWORDS["bob"], NEW_PASSWORD).status_int == 200
    assert "no notice sent" in caplog.text


# =========================================================================== CSRF and config

STATE_CHANGING = [
    ("POST", "/api/user/session/elevation", {}),
    ("PUT", "/api/user/session/elevation", {"otc": "ABCDEFGH"}),
    ("PUT", "/api/secondfactor/totp/register", {}),
    ("POST", "/api/secondfactor/totp/register", {"token": "123456"}),
    ("DELETE", "/api/secondfactor/totp/register", {}),
    ("DELETE", "/api/secondfactor/totp", {}),
    ("POST", "/api/reset-password/identity/start", {"username": "alice"}),
    ("POST", "/api/reset-password/identity/finish", {"token": "x"}),
    ("POST", "/api/reset-password", {"password": NEW_PASSWORD}),
    ("DELETE", "/api/reset-password", {"token": "x"}),
    ("POST", "/api/change-password", {"old_password": "a", "new_password": NEW_PASSWORD}),
]
IDS = [f"{m} {p}" for m, p, _ in STATE_CHANGING]


@pytest.mark.parametrize(("method", "path", "payload"), STATE_CHANGING, ids=IDS)
def test_cross_origin_is_refused(ss: SS, method: str, path: str, payload: object) -> None:
    """A foreign Origin or a cross-site Sec-Fetch-Site gets 403 and changes nothing."""
    one = ss.h.login("alice")
    for headers in (
        {"Origin": "https://evil.example.net"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        resp = ss.h.api(path, payload, method=method, cookie=one, headers=headers)
        assert resp.status_int == 403, (headers, resp.text)
    assert ss.messages() == []


@pytest.mark.parametrize(("method", "path", "payload"), STATE_CHANGING, ids=IDS)
def test_non_json_is_refused(ss: SS, method: str, path: str, payload: object) -> None:
    """Form and text bodies (what a cross-site form can send) get 415."""
    one = ss.h.login("alice")
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        resp = ss.h.api(path, payload, method=method, cookie=one, headers={"Content-Type": kind})
        assert resp.status_int == 415, (kind, resp.text)


@pytest.mark.parametrize(("method", "path", "payload"), STATE_CHANGING, ids=IDS)
def test_plain_http_is_refused(ss: SS, method: str, path: str, payload: object) -> None:
    """Over plain HTTP the portal refuses every state change."""
    resp = ss.h.api(path, payload, method=method, headers={"X-Forwarded-Proto": "http"})
    assert resp.status_int == 400


def test_password_policy_endpoint(ss: SS) -> None:
    """GET /api/configuration/password-policy answers the policy without a session."""
    data = ss.h.api("/api/configuration/password-policy", method="GET").json["data"]
    assert data["mode"] == "standard"
    assert (data["min_length"], data["max_length"]) == (8, 128)


def test_configuration_enables_reset_and_change(ss: SS) -> None:
    """/api/configuration tells the portal that reset and change are available."""
    one = ss.h.login("alice")
    data = ss.h.api("/api/configuration", method="GET", cookie=one).json["data"]
    assert data["password_change_disabled"] is False
    assert data["password_reset_disabled"] is False


def test_build_reads_the_key_and_makes_the_notifier(ss: SS) -> None:
    """``SelfServiceApi.build`` wires the configured notifier; ``close`` drains the outbox."""
    from server.core.notifier import FileNotifier

    svc = SelfServiceApi.build(
        ss.h.config, ss.h.app.portal.identities, ss.h.app.portal.totp, ss.svc.codes.storage
    )
    assert isinstance(svc.notifier, FileNotifier)
    svc.startup_check()
    svc.close()


def test_app_without_selfservice_has_no_routes(ss: SS) -> None:
    """An App built without the self-service part serves only the portal's routes."""
    from server.web.app import App

    bare = App(ss.h.config, ss.h.app.authorizer, ss.h.app.portal, {})
    assert bare.routes.methods("/api/change-password") is None
    assert set(bare.routes.methods("/api/secondfactor/totp") or {}) == {"POST"}


def test_secrets_never_reach_the_log(ss: SS, caplog: pytest.LogCaptureFixture) -> None:
    """Codes, tokens, TOTP secrets and passwords stay out of the logs."""
    with caplog.at_level("DEBUG"):
        one = ss.h.login("alice")
        ss.h.api("/api/user/session/elevation", {}, cookie=one)
        code = ss.code()
        two = cookie_of(
            ss.h.api("/api/user/session/elevation", {"otc": code}, method="PUT", cookie=one)
        )
        start = ss.h.api("/api/secondfactor/totp/register", {}, method="PUT", cookie=two)
        secret = start.json["data"]["base32_secret"]
        reset_start(ss, "bob")
        token = ss.token()
        reset_finish(ss, token)
        change(ss, two, PASSWORDS["alice"], NEW_PASSWORD)
    text = caplog.text
    for value in (code, secret, token, NEW_PASSWORD, PASSWORDS["alice"], one.split("=")[1]):
        assert value not in text


def test_tokens_are_bound_to_this_installation(ss: SS, tmp_path: Path) -> None:
    """A reset token minted with another storage key is refused."""
    from server.core.otc import derive_key

    other = SignedTokens(ss.svc.codes.storage, derive_key(b"z" * 32, "signed tokens"))
    token = other.issue("alice", "reset_password", stamp="whatever")
    assert reset_finish(ss, token).status_int == 401


# =========================================================================== SMTP end to end


@pytest.mark.slow
def test_reset_and_elevation_through_real_smtp(tmp_path: Path, clock: t.Any) -> None:
    """With [notifier.smtp] pointing at a real SMTP server, the elevation code and the reset
    link arrive there, multipart, and work."""
    received = Received()
    port = free_port()
    controller = Controller(Handler(received), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        config = APP_CONFIG + (
            f'\n[notifier.smtp]\nhost = "127.0.0.1"\nport = {port}\n'
            'sender = "authctl <auth@example.com>"\nstarttls = false\n'
        )
        ss = make_ss(tmp_path, clock, config)
        ss.svc.startup_check()
        one = ss.h.login("alice")
        assert ss.h.api("/api/user/session/elevation", {}, cookie=one).status_int == 200
        assert ss.svc.outbox.flush(timeout=10)
        mail = received.mails[-1]
        assert mail.get_content_type() == "multipart/alternative"
        plain = mail.get_body(("plain",))
        assert plain is not None
        code = re.search(r"^    ([A-Z0-9]{8})\s*$", plain.get_content(), re.MULTILINE)
        assert code is not None
        put = ss.h.api(
            "/api/user/session/elevation", {"otc": code.group(1)}, method="PUT", cookie=one
        )
        assert put.status_int == 200
        reset_start(ss, "bob")
        ss.svc.outbox.flush()
        link_mail = received.mails[-1]
        assert link_mail["To"] == "Bob <bob@example.com>"
        html = link_mail.get_body(("html",))
        assert html is not None
        assert "Reset your password</a>" in html.get_content()
        body = link_mail.get_body(("plain",))
        assert body is not None
        found = re.search(r"step2\?token=(\S+)", body.get_content())
        assert found is not None
        grant = cookie_of(reset_finish(ss, unquote(found.group(1))))
        ok = ss.h.api("/api/reset-password", {"password": NEW_PASSWORD}, cookie=grant)
        assert ok.status_int == 200
        ss.svc.outbox.flush()
        assert received.mails[-1]["Subject"] == "Your password was changed"
        assert login_ok(ss, "bob", NEW_PASSWORD)
    finally:
        controller.stop()


MAIL_QUEUE_FULL = {"status": "KO", "message": "The mail queue is full. Try again shortly."}


@pytest.fixture
def hung_relay() -> t.Iterator[HungRelay]:
    """An SMTP relay on loopback that accepts and never answers, closed after the test."""
    relay = HungRelay()
    try:
        yield relay
    finally:
        relay.close()


def smtp_ss(tmp_path: Path, clock: t.Any, port: int, timeout: int = 30) -> SS:
    """The app with ``[notifier.smtp]`` pointing at a relay on loopback port ``port``."""
    config = APP_CONFIG + (
        f'\n[notifier.smtp]\nhost = "127.0.0.1"\nport = {port}\n'
        f'sender = "authctl <auth@example.com>"\nstarttls = false\ntimeout = "{timeout}s"\n'
    )
    return make_ss(tmp_path, clock, config)


def timed(call: t.Callable[[], t.Any]) -> tuple[t.Any, float]:
    """``call()`` and how long it took, in seconds."""
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


@pytest.mark.slow
def test_hung_relay_does_not_stall_the_portal(
    tmp_path: Path, clock: t.Any, hung_relay: HungRelay
) -> None:
    """With an SMTP relay that accepts and never answers, asking for a code answers at once
    (the outbox thread waits, not the request), and the portal keeps answering."""
    ss = smtp_ss(tmp_path, clock, hung_relay.port)
    try:
        alice, bob = ss.h.login("alice"), ss.h.login("bob")
        resp, took = timed(lambda: ss.h.api("/api/user/session/elevation", {}, cookie=alice))
        assert resp.status_int == 200, resp.text
        assert took < 1
        assert hung_relay.connected.wait(5)  # the outbox thread is stuck in the relay now
        for call in (
            lambda: ss.h.api("/api/user/session/elevation", {}, cookie=bob),
            lambda: ss.h.api("/api/state", method="GET", cookie=alice),
            lambda: reset_start(ss, "carol"),
            lambda: ss.h.api("/api/firstfactor", {"username": "carol", "password": "x"}),
        ):
            resp, took = timed(call)
            assert resp.status_int in (200, 401), resp.text
            assert took < 1.5  # reset start is padded to 0.5 s + jitter
    finally:
        hung_relay.close()
        assert ss.svc.outbox.flush(timeout=10)


@pytest.mark.slow
def test_full_mail_queue_is_a_clear_503(
    tmp_path: Path, clock: t.Any, hung_relay: HungRelay
) -> None:
    """When the relay is hung and the bounded queue is full, a code request gets 503 "mail
    queue full" at once (its code revoked), and a reset start gets the same 503 whether the
    user exists or not; the portal keeps answering."""
    ss = smtp_ss(tmp_path, clock, hung_relay.port)
    ss.svc.outbox = Outbox(ss.svc.notifier, capacity=1)
    try:
        alice, bob, alice2 = ss.h.login("alice"), ss.h.login("bob"), ss.h.login("alice")
        assert ss.h.api("/api/user/session/elevation", {}, cookie=alice).status_int == 200
        assert hung_relay.connected.wait(5)
        assert ss.h.api("/api/user/session/elevation", {}, cookie=bob).status_int == 200
        resp, took = timed(lambda: ss.h.api("/api/user/session/elevation", {}, cookie=alice2))
        assert (resp.status_int, resp.json) == (503, MAIL_QUEUE_FULL)
        assert resp.headers["Retry-After"] == "30"
        assert took < 1
        codes = ss.svc.codes.storage.one_time_codes()
        assert sorted((c.username, c.consumed_ip or "") for c in codes) == [
            ("alice", ""),
            ("alice", "revoked"),
            ("bob", ""),
        ]
        answers = [strip(reset_start(ss, name)) for name in ("alice", "nobody")]
        assert answers[0] == answers[1]
        assert answers[0][0] == 503
        assert ss.h.api("/api/state", method="GET", cookie=alice).status_int == 200
    finally:
        hung_relay.close()
        assert ss.svc.outbox.flush(timeout=10)


def test_notice_dropped_when_the_queue_is_full(ss: SS, caplog: pytest.LogCaptureFixture) -> None:
    """A full queue does not fail a password change (already done); the lost notice is logged."""
    relay = Blocking()
    ss.svc.outbox = Outbox(relay, capacity=1)
    try:
        ss.svc.outbox.submit(Message("x@example.com", "busy", "busy"))
        assert relay.started.wait(5)
        ss.svc.outbox.submit(Message("x@example.com", "waiting", "waiting"))
        one = ss.h.login("bob")
        assert change(ss, one, PASSWORDS["bob"], NEW_PASSWORD).status_int == 200
        assert "no notice sent: the mail queue is full" in caplog.text
    finally:
        relay.release.set()
        assert ss.svc.outbox.flush(timeout=5)


def test_mail_queue_size_comes_from_the_settings(tmp_path: Path, clock: t.Any) -> None:
    """``SelfServiceSettings.mail_queue`` bounds the outbox (100 by default)."""
    ss = make_ss(tmp_path, clock)
    assert ss.svc.outbox.capacity == 100
    svc = SelfServiceApi.build(
        ss.h.config,
        ss.h.app.portal.identities,
        ss.h.app.portal.totp,
        ss.svc.codes.storage,
        settings=SelfServiceSettings(mail_queue=3),
    )
    assert svc.outbox.capacity == 3


# =========================================================================== odd corners


def test_session_numbers_are_read_defensively() -> None:
    """Session values that are not finite numbers read as 0 (never as 'elevated forever')."""
    from server.web.selfservice import _finite

    assert _finite("12.5") == 12.5
    assert _finite(None) == 0.0
    assert _finite("junk") == 0.0
    assert _finite("inf") == 0.0
    assert _finite("nan") == 0.0


def test_corrupt_pending_setup_reads_as_none(ss: SS) -> None:
    """A pending setup with a missing field is treated as no setup."""
    one = elevate(ss, ss.h.login("alice"))
    ss.h.api("/api/secondfactor/totp/register", {}, method="PUT", cookie=one)
    req = _req(one)
    gate = ss.h.app.portal.gate
    found = gate.session(req, gate.origin(req))
    assert found is not None
    ss.svc.sessions.update_data(found[1], {"totp_digits": None})
    assert (
        ss.h.api("/api/secondfactor/totp/register/qr.svg", method="GET", cookie=one).status_int
        == 404
    )


def _req(cookie: str) -> t.Any:
    """A portal request carrying ``cookie``, as the trusted proxy forwards it."""
    from webob import Request

    req = Request.blank(
        "/api/state",
        headers={
            "Cookie": cookie,
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "auth.example.com",
        },
    )
    req.environ["REMOTE_ADDR"] = "127.0.0.1"
    return req


def test_slow_reset_start_is_not_slowed_further(ss: SS) -> None:
    """When the work already took longer than the minimum, no padding is added."""
    ticks = iter([0.0, 5.0])
    ss.svc.monotonic = lambda: next(ticks)
    assert reset_start(ss, "alice").status_int == 200
    assert ss.sleeps == []


def test_parallel_reset_posts_use_the_grant_once(ss: SS, monkeypatch: pytest.MonkeyPatch) -> None:
    """If another request consumed the grant first, this one is refused and writes nothing."""
    reset_start(ss, "alice")
    grant = cookie_of(reset_finish(ss, ss.token()))
    monkeypatch.setattr(ss.svc.sessions.store, "delete", lambda session_id: False)
    resp = ss.h.api("/api/reset-password", {"password": NEW_PASSWORD}, cookie=grant)
    assert resp.status_int == 401
    monkeypatch.undo()
    assert login_ok(ss, "alice", PASSWORDS["alice"])


def test_build_with_a_given_notifier(ss: SS) -> None:
    """``build`` keeps a notifier passed in (tests, or a custom transport)."""
    failing = Failing()
    svc = SelfServiceApi.build(
        ss.h.config,
        ss.h.app.portal.identities,
        ss.h.app.portal.totp,
        ss.svc.codes.storage,
        notifier=failing,
    )
    assert svc.notifier is failing
