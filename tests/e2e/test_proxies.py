"""The forward-auth flow through each real proxy, configured by ``authctl proxy-snippet``.

What a unit test cannot show: that nginx, Caddy, HAProxy, Traefik and Envoy, run with the
config authctl generates, send the right sub-request, act on authctl's answer and keep the
client's ``Remote-*`` headers away from the app. The checks are the same for every proxy; the
stack (authctl, the echo app, the proxy) is started once per proxy and reused by its tests.
Sites: ``app`` one_factor, ``public`` bypass, ``secure`` two_factor, ``deny`` deny.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apphelpers import PASSWORDS
from tests.e2e.conftest import AUTHCTL
from tests.e2e.conftest import PROXIES
from tests.e2e.conftest import Reply
from tests.e2e.conftest import Stack
from tests.e2e.conftest import Stacks
from tests.e2e.conftest import find_tool

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

#: Client-sent identity headers that must never reach the app (both spellings).
SPOOF = [
    ("Remote-User", "admin"),
    ("Remote-Groups", "admins"),
    ("Remote-Name", "Mallory"),
    ("Remote-Email", "mallory@evil.test"),
    ("Remote_User", "admin"),
    ("remote-user", "admin"),
]


@pytest.fixture(scope="module", params=PROXIES)
def stack(request: pytest.FixtureRequest, stacks: Stacks) -> Iterator[Stack]:
    """One proxy's stack, for all the tests of this module; stopped after them."""
    proxy: str = request.param
    yield stacks.get(proxy)
    stacks.stop(proxy)


@pytest.fixture(scope="module")
def alice(stack: Stack) -> str:
    """alice's session cookie, signed in (password only) through the proxy."""
    resp = stack.sign_in("alice")
    assert resp.status == 200, resp.body
    return resp.cookie()


def identity_lines(reply: Reply) -> list[tuple[str, str]]:
    """The Remote-*/Remote_* header lines the app received."""
    return [(n, v) for n, v in reply.echoed() if n.startswith(("remote-", "remote_"))]


def test_anonymous_request_goes_to_the_portal(stack: Stack) -> None:
    """Without a session the proxy answers 302 to the portal, rd holding the full original URL."""
    target = stack.url("app", "/secret/page?x=1&y=2")
    resp = stack.request("app", "/secret/page?x=1&y=2")
    assert resp.status == 302, (resp.status, resp.body[:300])
    assert resp.header("Location") == stack.portal_redirect(target)


def basic(user: str, password: str) -> dict[str, str]:
    """A script's request headers: Basic credentials, JSON wanted, no cookie."""
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}", "Accept": "application/json"}


def test_basic_login_through_the_proxy(stack: Stack) -> None:
    """Basic credentials (SPEC §3.1): good ones reach the app as their user; a wrong password
    gets authctl's 401 with its one ``WWW-Authenticate: Basic`` challenge, never a redirect
    (nginx once answered 302 with an empty Location, HAProxy a bare 401)."""
    good = stack.request("app", "/api/report", headers=basic("alice", PASSWORDS["alice"]))
    assert good.status == 200, (good.status, good.body[:300])
    assert ("remote-user", "alice") in identity_lines(good)
    bad = stack.request("app", "/api/report", headers=basic("alice", "not-her-password"))
    assert bad.status == 401, (bad.status, bad.headers.items())
    assert bad.headers.get_all("WWW-Authenticate") == ['Basic realm="authctl"'], bad.headers.items()
    assert bad.header("Location") is None
    assert b'"headers"' not in bad.body  # the app was never reached


def test_original_method_reaches_authctl(stack: Stack) -> None:
    """A POST is judged as a POST: its redirect carries rm=POST (nginx and HAProxy keep 302/303
    of their own, the others pass authctl's 303)."""
    target = stack.url("app", "/form")
    resp = stack.request(
        "app", "/form", method="POST", body=b"a=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert resp.status in (302, 303), resp.status
    assert resp.header("Location") == stack.portal_redirect(target, "POST")


def test_sign_in_through_the_portal(stack: Stack) -> None:
    """The portal API answers through the proxy and sets the cookie on the whole domain."""
    target = stack.url("app", "/after-login")
    resp = stack.sign_in("alice", target)
    assert resp.status == 200, resp.body
    set_cookie = resp.header("Set-Cookie") or ""
    for attribute in ("Domain=example.test", "Secure", "HttpOnly", "Path=/"):
        assert attribute in set_cookie, set_cookie
    assert resp.json()["data"]["redirect"] == target


def test_app_sees_identity_never_the_spoof(stack: Stack, alice: str) -> None:
    """Signed in, the app gets authctl's Remote-User/Groups, none of the client's copies."""
    resp = stack.request("app", "/whoami", headers=SPOOF, cookie=alice)
    assert resp.status == 200, resp.body[:300]
    lines = identity_lines(resp)
    assert ("remote-user", "alice") in lines, lines
    assert ("remote-groups", "admins,dev") in lines, lines
    assert ("remote-name", "Alice Liddell") in lines, lines
    assert ("remote-email", "alice@example.com") in lines, lines
    assert not [n for n, _ in lines if n == "remote_user"], lines
    assert len(lines) == 4, lines  # one of each, the client's removed
    assert resp.json()["path"] == "/whoami"


def test_bypass_site_drops_client_identity(stack: Stack) -> None:
    """On a bypass site an anonymous client's Remote-User: admin never reaches the app."""
    resp = stack.request("public", "/", headers=SPOOF)
    assert resp.status == 200, resp.body[:300]
    lines = identity_lines(resp)
    assert not [v for _, v in lines if v], lines  # absent, or present and empty


def test_forwarded_header_spoof_does_not_bypass(stack: Stack) -> None:
    """Client-sent X-Forwarded-*/X-Original-* naming the bypass site do not open the app."""
    resp = stack.request(
        "app",
        "/secret",
        headers={
            "X-Forwarded-Host": f"public.example.test:{stack.proxy_port}",
            "X-Forwarded-Uri": "/",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Method": "GET",
            "X-Original-URL": stack.url("public"),
            "X-Original-Method": "GET",
        },
    )
    assert resp.status == 302, (resp.status, resp.body[:300])
    assert resp.header("Location") == stack.portal_redirect(stack.url("app", "/secret"))


def test_two_factor_site_needs_the_code(stack: Stack) -> None:
    """A two_factor site sends a password-only session back to the portal; the code opens it."""
    cookie = stack.sign_in("alice").cookie()
    target = stack.url("secure", "/vault")
    resp = stack.request("secure", "/vault", cookie=cookie)
    assert resp.status == 302, resp.status
    assert resp.header("Location") == stack.portal_redirect(target)
    second = stack.api(
        "/api/secondfactor/totp", {"token": stack.totp_code(), "targetURL": target}, cookie
    )
    assert second.status == 200, second.body
    cookie = second.cookie() or cookie
    resp = stack.request("secure", "/vault", cookie=cookie)
    assert resp.status == 200, resp.body[:300]
    assert ("remote-user", "alice") in identity_lines(resp)


def test_deny_site_is_forbidden(stack: Stack, alice: str) -> None:
    """A deny site answers 403, signed in or not."""
    assert stack.request("deny", "/", cookie=alice).status == 403
    assert stack.request("deny", "/").status == 403


def test_sign_out_ends_access(stack: Stack) -> None:
    """After POST /api/logout through the proxy, the old cookie is sent to the portal again."""
    cookie = stack.sign_in("bob").cookie()
    assert stack.request("app", "/", cookie=cookie).status == 200
    resp = stack.api("/api/logout", {}, cookie)
    assert resp.status == 200, resp.body
    assert "Domain=example.test" in (resp.header("Set-Cookie") or "")
    after = stack.request("app", "/", cookie=cookie)
    assert after.status == 302, after.status


def test_authctl_down_means_refused(stack: Stack, alice: str) -> None:
    """With authctl stopped the proxy refuses even a valid session, then recovers on restart."""
    stack.authctl.stop()
    try:
        resp = stack.request("app", "/", cookie=alice)
        assert resp.status >= 400, (resp.status, resp.body[:300])
        assert b'"headers"' not in resp.body  # the app was never reached
        public = stack.request("public", "/")
        assert public.status >= 400, public.status
    finally:
        stack.restart_authctl()
    assert stack.request("app", "/", cookie=alice).status == 200


def test_printed_command_is_what_runs(stack: Stack) -> None:
    """The stack was started with the exact command proxy-snippet printed, all paths inside DIR."""
    out_dir = stack.folder / stack.proxy
    paths = [arg for arg in stack.start_command[1:] if "/" in arg]
    assert paths, stack.start_command
    for arg in paths:
        assert str(out_dir) in arg, (arg, stack.start_command)


@pytest.mark.parametrize("proxy", PROXIES)
def test_check_runs_the_proxy_config_test(proxy: str, stacks: Stacks, tmp_path: Path) -> None:
    """``proxy-snippet --check`` passes the proxy's own config test (traefik has none: said so)."""
    find_tool(proxy)
    folder = stacks.base / "check"
    if not (folder / "authctl.toml").exists():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "authctl.toml").write_text(
            '[[session.cookies]]\ndomain = "example.test"\n'
            'portal_url = "https://auth.example.test"\n'
            '[access_control]\ndefault_policy = "one_factor"\n',
            encoding="utf-8",
        )
        subprocess.run(
            [AUTHCTL, "cert", "generate", "--host", "*.example.test", "--key-type", "ecdsa",
             "--out", str(folder / "certs")],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    result = subprocess.run(
        [AUTHCTL, "--config", str(folder / "authctl.toml"), "proxy-snippet", proxy,
         "--out", str(tmp_path / proxy), "--check"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = "has no configuration test" if proxy == "traefik" else "config test passed"
    assert expected in result.stderr, result.stderr
