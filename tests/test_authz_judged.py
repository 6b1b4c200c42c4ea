"""What the authz decision judges: the path and query the app receives, the legacy endpoint's
target, UTF-8 group names, bounded memo tables and log lines (items 5, 6, 11, 12, 15)."""

from __future__ import annotations

import logging
import typing as t
from pathlib import Path

import pytest

from server.serve.inline import render
from server.web import authz
from tests.apphelpers import Harness
from tests.apphelpers import build
from tests.apphelpers import users_toml

QUERY_RULES = """
[[access_control.rules]]
domain = "q.example.com"
query = [[{ key = "debug", operator = "present" }]]
policy = "deny"

[[access_control.rules]]
domain = "q.example.com"
query = [[{ key = "format", value = "rss" }]]
policy = "bypass"

[[access_control.rules]]
domain = "q.example.com"
policy = "one_factor"
"""


@pytest.fixture
def h(tmp_path: Path, clock: t.Any) -> Harness:
    from tests.apphelpers import APP_CONFIG

    return build(
        tmp_path,
        clock,
        APP_CONFIG.replace('default_policy = "deny"\n', 'default_policy = "deny"\n' + QUERY_RULES),
    )


def auth_request(h: Harness, url: str, **extra: str) -> t.Any:
    headers = {"X-Original-URL": url, "X-Original-Method": "GET", **extra}
    return h.request("/api/authz/auth-request", headers=headers)


def verify(h: Harness, headers: dict[str, str], method: str = "GET") -> t.Any:
    return h.request("/api/verify", method=method, headers=headers)


# ---------------------------------------------------------------------- item 5: dot segments


@pytest.mark.parametrize(
    "path",
    [
        "/admin/../public/x",
        "/public/../admin",
        "/public/./x",
        "/public/%2e%2e/admin",
        "/public/.%2E/admin",
        "/public/..;/admin",
        "/public/..%3b/admin",
        "/public/x/..",
        "/admin/.",
    ],
)
def test_dot_segments_are_refused_on_every_endpoint(h: Harness, path: str) -> None:
    """/admin/../public/x is never judged as /public/x: 400 (auth-request 403, legacy 401)."""
    assert h.forward_auth("https://app.example.com" + path).status_int == 400
    assert auth_request(h, "https://app.example.com" + path).status_int == 403
    resp = verify(h, {"X-Original-URL": "https://app.example.com" + path})
    assert resp.status_int == 401
    assert "Location" not in resp.headers


def test_plain_bypass_path_still_passes(h: Harness) -> None:
    """The positive control: the same bypass without dot segments answers 200."""
    assert h.forward_auth("https://app.example.com/public/x").status_int == 200


# ---------------------------------------------------------------------- item 6: queries


@pytest.mark.parametrize(
    "query", ["debug=%zz", "debug=1%", "x=1;debug=1", "format=rss&format=html", "format=rss;x"]
)
def test_ambiguous_query_is_refused(h: Harness, query: str) -> None:
    """No deny-if-present evasion, no bypass meant for one value: 400 / 403, never 200."""
    assert h.forward_auth(f"https://q.example.com/?{query}").status_int == 400
    assert auth_request(h, f"https://q.example.com/?{query}").status_int == 403


def test_unambiguous_queries_are_judged(h: Harness) -> None:
    assert h.forward_auth("https://q.example.com/?debug=1").status_int == 403
    assert h.forward_auth("https://q.example.com/?format=rss").status_int == 200
    assert h.forward_auth("https://q.example.com/?format=rss&format=rss").status_int == 200
    assert h.forward_auth("https://q.example.com/?format=%72ss").status_int == 200
    assert h.forward_auth("https://q.example.com/?format=html").status_int == 302


def test_semicolon_query_passes_where_no_rule_reads_the_query(h: Harness) -> None:
    """Hosts whose rules ignore the query never refuse one."""
    assert h.forward_auth("https://public.example.com/?a=1;b=%zz").status_int == 200


# ---------------------------------------------------------------------- item 11: UTF-8 groups


def test_non_latin1_group_names_are_sent_as_utf8(h: Harness) -> None:
    """A group "日本" no longer makes every verify of its user answer 500 (pool and inline)."""
    text = users_toml(h.hasher).replace(
        'groups = ["admins", "dev"]', 'groups = ["admins", "\u00e9l\u00e8ves", "\u65e5\u672c"]'
    )
    h.rewrite_users(text)
    cookie = h.login("alice")
    resp = h.forward_auth("https://app.example.com/x", cookie=cookie)
    assert resp.status_int == 200
    raw = resp.headers["Remote-Groups"].encode("latin-1")
    assert raw.decode("utf-8") == "admins,\u00e9l\u00e8ves,\u65e5\u672c"
    environ = {
        "REMOTE_ADDR": "127.0.0.1",
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/api/authz/forward-auth",
        "HTTP_X_FORWARDED_PROTO": "https",
        "HTTP_X_FORWARDED_HOST": "app.example.com",
        "HTTP_X_FORWARDED_URI": "/x",
        "HTTP_X_FORWARDED_METHOD": "GET",
        "HTTP_COOKIE": cookie,
    }
    h.app.inline_authz = True
    reply = h.app.decide_inline(environ)
    assert reply is not None
    wire, _ = render("1.1", "", reply, "waitress", 0.0)
    assert b"\r\nRemote-Groups: admins,\xc3\xa9l\xc3\xa8ves,\xe6\x97\xa5\xe6\x9c\xac\r\n" in wire


# ---------------------------------------------------------------------- item 12: /api/verify


FORWARDED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "app.example.com",
    "X-Forwarded-Uri": "/admin",
}


def test_verify_refuses_a_client_original_url_that_disagrees(h: Harness) -> None:
    """A client's X-Original-URL cannot turn the proxy's /admin into a bypass."""
    resp = verify(h, {**FORWARDED, "X-Original-URL": "https://app.example.com/public/x"})
    assert resp.status_int == 401
    assert "Location" not in resp.headers
    resp = verify(
        h,
        {
            **FORWARDED,
            "X-Forwarded-Uri": "/public/x",
            "X-Original-URL": "https://app.example.com/admin",
        },
    )
    assert resp.status_int == 401


def test_verify_forwarded_triple_decides(h: Harness) -> None:
    public = {**FORWARDED, "X-Forwarded-Uri": "/public/x"}
    assert verify(h, public).status_int == 200
    same = {**public, "X-Original-URL": "https://app.example.com/public/x"}
    assert verify(h, same).status_int == 200
    assert verify(h, {"X-Original-URL": "https://app.example.com/public/x"}).status_int == 200
    # X-Forwarded-Proto alone (a global proxy_set_header) leaves X-Original-URL in charge
    only_proto = {
        "X-Forwarded-Proto": "https",
        "X-Original-URL": "https://app.example.com/public/x",
    }
    assert verify(h, only_proto).status_int == 200


def test_verify_reads_x_original_method(h: Harness) -> None:
    """The portal redirect carries the method from X-Original-Method (rm=POST, 303)."""
    headers = {
        "X-Original-URL": "https://app.example.com/x",
        "X-Original-Method": "POST",
        "Accept": "text/html",
    }
    resp = verify(h, headers, method="GET")
    assert resp.status_int == 401  # no rd: plain 401
    resp = h.request("/api/verify?rd=https://auth.example.com", method="GET", headers=headers)
    assert resp.status_int == 303
    assert resp.headers["Location"].endswith("&rm=POST")
    resp = h.request(
        "/api/verify?rd=https://auth.example.com",
        headers={**headers, "X-Forwarded-Method": "PUT"},
    )
    assert resp.headers["Location"].endswith("&rm=PUT")


# ---------------------------------------------------------------------- item 15: bounds


def test_long_urls_are_not_memoised(h: Harness) -> None:
    """Distinct long URLs do not grow the target memo tables; short ones still hit them."""
    authorizer = h.app.authorizer
    for i in range(50):
        long_path = f"/x{i}/" + "a" * 2000
        h.forward_auth("https://app.example.com" + long_path)
        auth_request(h, "https://app.example.com" + long_path)
    assert len(authorizer._targets) == 0
    assert len(authorizer._urls) == 0
    h.forward_auth("https://app.example.com/short")
    auth_request(h, "https://app.example.com/short")
    assert len(authorizer._targets) == 1
    assert len(authorizer._urls) == 1


def test_logged_paths_are_truncated(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """A refused 8 KiB path is logged cut, with its length."""
    path = "/secret/" + "b" * 8000
    with caplog.at_level(logging.INFO, logger="authctl.authz"):
        resp = h.forward_auth("https://private.example.com" + path)
    assert resp.status_int in (302, 403)
    fields = [r.fields for r in caplog.records if hasattr(r, "fields")]
    assert fields
    logged = fields[-1]["path"]
    assert len(logged) < authz.LOG_PATH_MAX + 32
    assert logged.startswith("/secret/bbb")
    assert logged.endswith(f"({len(path)} chars)")


def test_ext_authz_without_request_uri_never_decodes_twice(h: Harness) -> None:
    """Without REQUEST_URI the sub-path comes from the decoded PATH_INFO: a '%' left in it
    (a '%25' on the wire) is re-encoded, so '/%2570ublic/x' is never judged as '/public/x'."""
    from webob import Request

    headers = {"Host": "app.example.com", "X-Forwarded-Proto": "https", "Accept": "text/html"}
    req = Request.blank("/", headers=headers)
    req.environ["REMOTE_ADDR"] = "127.0.0.1"
    req.environ["PATH_INFO"] = "/api/authz/ext-authz/%70ublic/x"
    req.environ.pop("REQUEST_URI", None)
    assert req.get_response(h.app).status_int == 400
    req.environ["PATH_INFO"] = "/api/authz/ext-authz/public/x"
    assert req.get_response(h.app).status_int == 200
