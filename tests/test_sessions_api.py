"""``/api/user/sessions`` (SPEC §7.6) through the whole app: a user sees their own sessions
and ends them; handles and session ids never stand for each other; CSRF rules (§3.4) hold."""

from __future__ import annotations

import json
import re
import typing as t
from pathlib import Path

import pytest

from server.core.sessions import Level
from server.core.sessions import is_handle
from tests.apphelpers import APP_CONFIG
from tests.apphelpers import PASSWORDS
from tests.apphelpers import Harness
from tests.apphelpers import build

SESSIONS = "/api/user/sessions"
FIELDS = {
    "handle",
    "created_at",
    "last_seen_at",
    "ip",
    "user_agent",
    "current",
    "authentication_level",
}
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.fixture
def h(tmp_path: Path, clock: t.Any) -> Harness:
    """An app with an audit log."""
    config = APP_CONFIG.replace("[users]", '[log]\naudit_file = "audit.log"\n\n[users]', 1)
    return build(tmp_path, clock, config)


def sign_in(h: Harness, user: str = "alice", *, ua: str = "Firefox", ip: str = "") -> str:
    """Sign in with a User-Agent (and a client address through the trusted proxy)."""
    headers = {"User-Agent": ua}
    if ip:
        headers["X-Forwarded-For"] = ip
    resp = h.api(
        "/api/firstfactor", {"username": user, "password": PASSWORDS[user]}, headers=headers
    )
    assert resp.status_int == 200, resp.text
    return str(resp.headers["Set-Cookie"].split(";", 1)[0])


def listing(h: Harness, cookie: str) -> list[dict[str, t.Any]]:
    resp = h.api(SESSIONS, method="GET", cookie=cookie)
    assert resp.status_int == 200, resp.text
    assert resp.json["status"] == "OK"
    return t.cast(list[dict[str, t.Any]], resp.json["data"])


def end(h: Harness, cookie: str, handle: str = "", **kw: t.Any) -> t.Any:
    path = f"{SESSIONS}/{handle}" if handle else SESSIONS
    return h.api(path, {}, method="DELETE", cookie=cookie, **kw)


def allowed(h: Harness, cookie: str) -> bool:
    """Whether the session is honoured at the forward-auth endpoint."""
    return bool(h.forward_auth("https://app.example.com/", cookie=cookie).status_int == 200)


def handles(h: Harness, cookie: str) -> dict[bool, list[str]]:
    found: dict[bool, list[str]] = {True: [], False: []}
    for row in listing(h, cookie):
        found[row["current"]].append(row["handle"])
    return found


def audit_lines(h: Harness) -> list[dict[str, t.Any]]:
    path = h.config.log.audit_file
    assert path is not None
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_list_shows_the_users_own_sessions(h: Harness, clock: t.Any) -> None:
    """Two devices of alice, one of bob: alice sees her two, this one marked, with SPEC
    §7.6's fields; times as RFC 3339 UTC; the IP is the client's through the proxy."""
    laptop = sign_in(h, ua="Firefox/130", ip="203.0.113.7")
    clock.advance(60)
    phone = sign_in(h, ua="Safari/17", ip="198.51.100.2")
    sign_in(h, "bob")
    rows = listing(h, laptop)
    assert len(rows) == 2
    assert all(set(row) == FIELDS for row in rows)
    assert [row["user_agent"] for row in rows] == ["Safari/17", "Firefox/130"]  # newest first
    assert [row["ip"] for row in rows] == ["198.51.100.2", "203.0.113.7"]
    assert [row["current"] for row in rows] == [False, True]
    assert all(row["authentication_level"] == 1 for row in rows)
    assert all(RFC3339.fullmatch(row[k]) for row in rows for k in ("created_at", "last_seen_at"))
    assert all(is_handle(row["handle"]) for row in rows)
    assert [row["current"] for row in listing(h, phone)] == [True, False]
    body = h.api(SESSIONS, method="GET", cookie=laptop).text
    for cookie in (laptop, phone):
        assert cookie.split("=", 1)[1] not in body  # no session id is ever shown


def test_the_list_needs_a_session(h: Harness) -> None:
    """Anonymous, or with a dead cookie: 401 asking to sign in."""
    resp = h.api(SESSIONS, method="GET")
    assert resp.status_int == 401
    assert resp.json["data"] == {"first_factor": True}
    cookie = sign_in(h)
    h.api("/api/logout", {}, cookie=cookie)
    assert h.api(SESSIONS, method="GET", cookie=cookie).status_int == 401


def test_ending_another_session_by_handle(h: Harness) -> None:
    """The laptop ends the phone's session: refused at once, gone from the list; audited
    without the handle or any id."""
    laptop, phone = sign_in(h), sign_in(h, ua="Safari")
    assert allowed(h, phone)
    [phone_handle] = handles(h, laptop)[False]
    resp = end(h, laptop, phone_handle)
    assert resp.status_int == 200, resp.text
    assert resp.json == {"status": "OK"}
    assert "Set-Cookie" not in resp.headers
    assert not allowed(h, phone)
    assert allowed(h, laptop)
    assert handles(h, laptop) == {True: handles(h, laptop)[True], False: []}
    assert end(h, laptop, phone_handle).status_int == 404  # once
    lines = [line for line in audit_lines(h) if line["event"] == "session_revoked"]
    assert [(x["user"], x["result"], x["reason"]) for x in lines] == [("alice", "success", "user")]
    text = t.cast(Path, h.config.log.audit_file).read_text()
    for secret in (phone_handle, laptop.split("=")[1], phone.split("=")[1]):
        assert secret not in text


def test_ending_this_session_by_handle_signs_it_out(h: Harness) -> None:
    """A user may end the session they ask from: it ends and its cookie is expired."""
    cookie = sign_in(h)
    [mine] = handles(h, cookie)[True]
    resp = end(h, cookie, mine)
    assert resp.status_int == 200
    assert "Max-Age=0" in resp.headers["Set-Cookie"]
    assert "Domain=example.com" in resp.headers["Set-Cookie"]
    assert not allowed(h, cookie)


def test_another_users_handle_and_an_unknown_one_get_the_same_404(h: Harness) -> None:
    """Bob's handle is answered exactly like a handle nobody has; bob stays signed in."""
    alice, bob = sign_in(h), sign_in(h, "bob")
    [bob_handle] = handles(h, bob)[True]
    theirs = end(h, alice, bob_handle)
    unknown = end(h, alice, "A" * 32)
    malformed = end(h, alice, "not-a-handle")
    assert theirs.status_int == unknown.status_int == malformed.status_int == 404
    assert (
        theirs.json
        == unknown.json
        == malformed.json
        == {
            "status": "KO",
            "message": "No such session.",
        }
    )
    assert allowed(h, bob)


def test_a_session_id_is_never_a_handle(h: Harness) -> None:
    """Sending a session id (another session's or one's own) as a handle ends nothing."""
    laptop, phone = sign_in(h), sign_in(h)
    for cookie in (phone, laptop):
        resp = end(h, laptop, cookie.split("=", 1)[1])
        assert resp.status_int == 404
    assert allowed(h, laptop)
    assert allowed(h, phone)


def test_a_handle_is_never_a_cookie(h: Harness) -> None:
    """A handle sent as the session cookie is no session, at authz and at the API."""
    cookie = sign_in(h)
    [handle] = handles(h, cookie)[True]
    forged = f"{h.config.session.name}={handle}"
    assert not allowed(h, forged)
    assert h.api(SESSIONS, method="GET", cookie=forged).status_int == 401
    assert end(h, forged).status_int == 401


def test_ending_every_other_session(h: Harness) -> None:
    """DELETE /api/user/sessions ends all but the asking one, and says how many."""
    mine = sign_in(h)
    others = [sign_in(h, ua=f"device {n}") for n in range(3)]
    bob = sign_in(h, "bob")
    resp = end(h, mine)
    assert resp.status_int == 200
    assert resp.json == {"status": "OK", "data": {"revoked": 3}}
    assert not any(allowed(h, cookie) for cookie in others)
    assert allowed(h, mine)
    assert allowed(h, bob)
    assert [row["current"] for row in listing(h, mine)] == [True]
    assert end(h, mine).json == {"status": "OK", "data": {"revoked": 0}}
    assert len([x for x in audit_lines(h) if x["event"] == "session_revoked"]) == 3


def test_the_handle_stays_across_the_second_factor(h: Harness, tmp_path: Path) -> None:
    """A new id after a factor keeps the same handle (the list shows one device)."""
    from server.core.sessions import store_key

    cookie = sign_in(h)
    [before] = handles(h, cookie)[True]
    session_id = cookie.split("=", 1)[1]
    stored = h.store.get(session_id)
    assert stored is not None
    elevated = h.app.portal.sessions.elevate(stored, Level.TWO_FACTOR)
    new_cookie = f"{h.config.session.name}={elevated.id}"
    rows = listing(h, new_cookie)
    assert [(row["handle"], row["current"], row["authentication_level"]) for row in rows] == [
        (before, True, 2)
    ]
    assert store_key(elevated.id) != store_key(session_id)


def test_client_values_are_cleaned_bounded_and_json_escaped(h: Harness) -> None:
    """A hostile User-Agent is kept as data: control characters dropped, cut to 256
    characters, and sent back JSON-encoded (never as markup: application/json, nosniff)."""
    cookie = sign_in(h, ua="<img src=x onerror=alert(1)>\x1b[2J" + "x" * 400)
    resp = h.api(SESSIONS, method="GET", cookie=cookie)
    assert resp.content_type == "application/json"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    [row] = resp.json["data"]
    assert row["user_agent"].startswith("<img src=x onerror=alert(1)> [2J")
    assert len(row["user_agent"]) == 256
    assert "\x1b" not in resp.text


def test_old_records_show_null_and_get_a_handle_at_their_next_write(
    h: Harness, clock: t.Any
) -> None:
    """A session stored by the previous version (no handle, IP, User-Agent) is listed with
    nulls; after its next activity write it has a handle and can be ended by it."""
    import dataclasses

    cookie = sign_in(h)
    session_id = cookie.split("=", 1)[1]
    stored = h.store.get(session_id)
    assert stored is not None
    old = dataclasses.replace(stored, handle=None, ip=None, user_agent=None)
    h.store.put(old, 3600)
    [row] = listing(h, cookie)
    assert (row["handle"], row["ip"], row["user_agent"], row["current"]) == (
        None,
        None,
        None,
        True,
    )
    other = sign_in(h)
    clock.advance(10)  # past the touch interval: the next verify writes activity
    assert allowed(h, cookie)
    rows = {row["current"]: row for row in listing(h, other)}
    assert rows[False]["handle"] is not None
    assert rows[False]["ip"] is None
    assert end(h, other, rows[False]["handle"]).status_int == 200
    assert not allowed(h, cookie)


def test_a_store_outage_is_a_503(h: Harness) -> None:
    """A store that fails answers 503 (never an empty list, never a false success)."""
    from server.core.session_store import SessionStoreError

    cookie = sign_in(h)

    def broken(username: str | None) -> list[t.Any]:
        raise SessionStoreError("disk on fire")

    h.store.sessions_of = broken  # type: ignore[method-assign]
    assert h.api(SESSIONS, method="GET", cookie=cookie).status_int == 503
    assert end(h, cookie).status_int == 503
    assert end(h, cookie, "A" * 32).status_int == 503


# --------------------------------------------------------------------------- CSRF (§3.4)

CHANGES = [("DELETE", SESSIONS), ("DELETE", f"{SESSIONS}/{'A' * 32}")]


@pytest.mark.parametrize(("method", "path"), CHANGES)
def test_cross_site_requests_change_nothing(h: Harness, method: str, path: str) -> None:
    """Another site's Origin or Sec-Fetch-Site, a form body, no body or plain HTTP are
    refused before anything is looked at; every session stays."""
    mine, other = sign_in(h), sign_in(h)
    refusals = [
        h.api(path, {}, method=method, cookie=mine, headers={"Origin": "https://evil.example"}),
        h.api(path, {}, method=method, cookie=mine, headers={"Sec-Fetch-Site": "cross-site"}),
        h.api(path, {}, method=method, cookie=mine, headers={"Sec-Fetch-Site": "same-site"}),
        h.api(path, None, method=method, cookie=mine),
        h.request(
            path,
            method=method,
            headers={
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "auth.example.com",
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": mine,
            },
            body=b"a=b",
        ),
        h.request(
            path,
            method=method,
            headers={"Content-Type": "application/json", "Host": "auth.example.com"},
            body=b"{}",
        ),
    ]
    assert [r.status_int for r in refusals] == [403, 403, 403, 415, 415, 400]
    assert allowed(h, mine)
    assert allowed(h, other)
    assert len(listing(h, mine)) == 2


def test_the_list_is_same_origin_only(h: Harness) -> None:
    """A cross-site read of the list is refused too (nothing about the sessions leaks)."""
    cookie = sign_in(h)
    resp = h.api(SESSIONS, method="GET", cookie=cookie, headers={"Sec-Fetch-Site": "cross-site"})
    assert resp.status_int == 403
    assert "handle" not in resp.text


def test_get_changes_nothing_and_other_methods_are_405(h: Harness) -> None:
    """GET only reads; POST/PUT are not routes here."""
    cookie = sign_in(h)
    for _ in range(3):
        listing(h, cookie)
    assert allowed(h, cookie)
    assert h.api(SESSIONS, {}, method="POST", cookie=cookie).status_int == 405
    assert h.api(f"{SESSIONS}/{'A' * 32}", {}, method="GET", cookie=cookie).status_int == 405
    assert h.api(f"{SESSIONS}/", {}, method="DELETE", cookie=cookie).status_int == 404
    assert h.api(f"{SESSIONS}/a/b", {}, method="DELETE", cookie=cookie).status_int == 404
