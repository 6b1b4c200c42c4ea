"""A real browser through the real sign-in page, behind nginx and Traefik.

The proxies' curl-level checks cannot show that the portal's JavaScript, its strict CSP, the
cross-host redirects (app -> portal -> 2fa -> app, on a non-default port) and the ``Domain``
cookie work together in a browser. Playwright drives Debian's ``/usr/bin/chromium`` (no
browser download), resolving ``*.example.test`` to 127.0.0.1. Screenshots are saved as
artefacts (``$AUTHCTL_E2E_ARTIFACTS``, else a pytest temp folder); the folder is printed.
"""

from __future__ import annotations

import os
import typing as t
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.e2e.conftest import Stack
from tests.e2e.conftest import Stacks

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP *.example.test 127.0.0.1",
]
BROWSER_PROXIES = ("nginx", "traefik")
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[t.Any]:
    """Debian's Chromium under Playwright, headless, its HOME in a temp folder (it writes an
    NSS database there); a missing one fails the suite."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing; install it with: bash scripts/install-e2e-deps.sh")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing; install it with: bash scripts/install-e2e-deps.sh")
    with sync_playwright() as pw:
        home = tmp_path_factory.mktemp("chromium-home")
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            env={**os.environ, "HOME": str(home)},
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $AUTHCTL_E2E_ARTIFACTS, else a pytest temp folder."""
    chosen = os.environ.get("AUTHCTL_E2E_ARTIFACTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {folder}")
    return folder


def _context(browser: t.Any, stack: Stack) -> t.Any:
    """A fresh browser profile. Certificate errors are ignored because Chromium cannot be
    handed a CA file; the curl-level suite verifies the chain against the generated CA."""
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 900, "height": 700})
    context.set_default_timeout(TIMEOUT_MS)
    return context


def _sign_in(page: t.Any, stack: Stack, target: str, shots: Path | None = None) -> None:
    """From ``target``, through the portal's sign-in page as bob, back to ``target``."""
    page.goto(target)
    assert page.url == f"{stack.url('auth')}?rd={quote(target, safe='')}&rm=GET"
    page.wait_for_selector("#username", state="visible")
    page.fill("#username", "bob")
    page.fill("#password", "bob-password")
    if shots is not None:
        page.screenshot(path=str(shots))
    page.click("#sign-in")


@pytest.mark.parametrize("proxy", BROWSER_PROXIES)
def test_sign_in_with_password(proxy: str, browser: t.Any, stacks: Stacks, artifacts: Path) -> None:
    """Chromium is sent to the portal, signs in with bob's password and lands on the app,
    which sees bob's identity; the session cookie covers the whole domain."""
    stack = stacks.get(proxy)
    context = _context(browser, stack)
    page = context.new_page()
    try:
        target = stack.url("app", "/browser/page?x=1&y=2")
        _sign_in(page, stack, target, artifacts / f"{proxy}-1-sign-in.png")
        page.wait_for_url(target)
        echoed = {name.lower(): value for name, value in page_json(page)["headers"]}
        assert echoed.get("remote-user") == "bob", echoed
        assert echoed.get("remote-groups") == "dev", echoed
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["authctl_session"]["domain"] in (".example.test", "example.test")
        page.screenshot(path=str(artifacts / f"{proxy}-2-app.png"))
    finally:
        context.close()


@pytest.mark.parametrize("proxy", BROWSER_PROXIES)
def test_two_factor_with_the_code(
    proxy: str, browser: t.Any, stacks: Stacks, artifacts: Path
) -> None:
    """For the two_factor site the portal asks bob for the TOTP code after the password, and
    the code takes him to the site with his identity."""
    stack = stacks.get(proxy)
    context = _context(browser, stack)
    page = context.new_page()
    try:
        target = stack.url("secure", "/vault")
        _sign_in(page, stack, target)
        page.wait_for_url(f"{stack.url('auth', '/2fa')}*")
        page.wait_for_selector("#code", state="visible")
        page.fill("#code", stack.totp_code("bob"))
        page.screenshot(path=str(artifacts / f"{proxy}-3-code.png"))
        page.click("#verify")
        page.wait_for_url(target)
        echoed = {name.lower(): value for name, value in page_json(page)["headers"]}
        assert echoed.get("remote-user") == "bob", echoed
        page.screenshot(path=str(artifacts / f"{proxy}-4-secure.png"))
    finally:
        context.close()


def page_json(page: t.Any) -> t.Any:
    """The echo app's JSON, as the browser shows it."""
    import json

    return json.loads(page.text_content("body") or "{}")
