"""The site the sign-in page names comes from the server's redirect check (SPEC §3.2, §3.5).

``GET /api/state?rd=…`` answers ``target_host``: the host (and port) of ``rd`` when it is a
redirect the server would follow, else ``""``; the page shows nothing else (a phishing link
``/?rd=https://evil-phish.com/`` must not make the portal say "continue to evil-phish.com").
"""

from __future__ import annotations

import typing as t
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.apphelpers import Harness
from tests.apphelpers import build


@pytest.fixture
def h(tmp_path: Path, clock: t.Any) -> Harness:
    """The in-process app over the catalogue fixture (cookie domains example.com/.org)."""
    return build(tmp_path, clock)


def target_host(h: Harness, query: str, cookie: str | None = None) -> t.Any:
    """``/api/state`` with ``query`` (already encoded); returns ``target_host``."""
    resp = h.api("/api/state?" + query, method="GET", cookie=cookie)
    assert resp.status_int == 200, resp.text
    assert resp.headers["Cache-Control"] == "no-store"
    return resp.json["data"]["target_host"]


def rd(url: str) -> str:
    """The ``rd=`` parameter as the authz redirect writes it (percent-encoded)."""
    return "rd=" + quote(url, safe="")


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://app.example.com/x", "app.example.com"),
        ("https://app.example.com:8443/x?y=1#z", "app.example.com:8443"),
        ("https://example.org/", "example.org"),
        ("https://APP.Example.COM/", "app.example.com"),
        ("https://bücher.example.com/", "xn--bcher-kva.example.com"),
    ],
)
def test_safe_target_names_its_host(h: Harness, url: str, host: str) -> None:
    """A target the server would redirect to is named by its canonical host[:port]."""
    assert target_host(h, rd(url)) == host


@pytest.mark.parametrize(
    "url",
    [
        "https://evil-phish.com/",
        "https://example.com.evil-phish.com/",
        "https://evil-phish.com\\@app.example.com/",
        "https://evil-phish.com%2f@app.example.com/",
        "https://user@app.example.com/",
        "http://app.example.com/",
        "//evil-phish.com/",
        "/\\evil-phish.com",
        "javascript:alert(1)//app.example.com",
        "https://app.example.com\t.evil-phish.com/",
        'https://"><script>alert(1)</script>.example.com/',
        "",
    ],
)
def test_unsafe_target_names_nothing(h: Harness, url: str) -> None:
    """A target the redirect check refuses is never named, whatever the query holds."""
    assert target_host(h, rd(url)) == ""


def test_no_rd_and_ambiguous_rd(h: Harness) -> None:
    """No ``rd``, two of them (the page and the server could pick different ones) or an
    undecodable one: nothing."""
    assert target_host(h, "") == ""
    assert h.api("/api/state", method="GET").json["data"]["target_host"] == ""
    two = rd("https://app.example.com/") + "&" + rd("https://evil-phish.com/")
    assert target_host(h, two) == ""
    assert (
        target_host(h, rd("https://app.example.com/") + "&" + rd("https://app.example.com/")) == ""
    )
    assert target_host(h, "rd=%ff%fe") == ""
    assert target_host(h, "rd=https%3A%2F%2Fapp.example.com%2F%00") == ""


def test_signed_in_state_names_the_target_too(h: Harness) -> None:
    """The signed-in view ("you asked to continue to …") uses the same checked value."""
    cookie = h.login("alice")
    assert target_host(h, rd("https://app.example.com/x"), cookie) == "app.example.com"
    assert target_host(h, rd("https://evil-phish.com/"), cookie) == ""


def test_state_keeps_its_other_fields(h: Harness) -> None:
    """Adding ``target_host`` renames nothing (SPEC §3.2 names)."""
    data = h.api("/api/state?" + rd("https://app.example.com/"), method="GET").json["data"]
    assert set(data) == {
        "username",
        "authentication_level",
        "remember_me",
        "default_redirection_url",
        "target_host",
    }
