"""The sign-in page names only a site the server's redirect check passes (SPEC §3.2, §3.5).

A phishing mail can link to the real portal with ``?rd=https://evil-phish.com/``; the page must
not then say "Sign in to continue to evil-phish.com". Real Chromium, real portal JS, behind
nginx (the browser fixture is the one of ``test_browser.py``).
"""

from __future__ import annotations

import time
import typing as t
from urllib.parse import quote

import pytest

from tests.e2e.conftest import Stack
from tests.e2e.conftest import Stacks
from tests.e2e.test_browser import _context
from tests.e2e.test_browser import browser  # noqa: F401 - the shared Chromium fixture

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

PROXY = "nginx"
EVIL = "evil-phish.com"
UNSAFE = [
    f"https://{EVIL}/",
    f"https://app.example.test.{EVIL}/",
    f"https://{EVIL}\\@app.example.test/",
    f"http://app.example.test.{EVIL}/",
    f"//{EVIL}/",
    f'https://"><img src=x>{EVIL}/',
]


def portal(stack: Stack, page: str, rd: str) -> str:
    """The portal page ``page`` with ``?rd=`` as a link in a mail would carry it."""
    return f"{stack.url('auth', page)}?rd={quote(rd, safe='')}"


def page_text(page: t.Any) -> str:
    """Every text node of the page, hidden ones included, and its title."""
    return f"{page.title()}\n{page.text_content('body') or ''}"


def enter_fresh_code(page: t.Any, stack: Stack, target: str) -> None:
    """Pass bob's second factor. Another test may have used this time step's code already (a
    replay is refused, SPEC §3.4); then wait for the next step and use its code."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(2):
        page.fill("#code", stack.totp_code("bob"))
        page.click("#verify")
        try:
            page.wait_for_url(target, timeout=5_000)
            return
        except PlaywrightTimeout:
            if attempt:
                raise
            time.sleep(30.5 - time.time() % 30)


@pytest.mark.parametrize("rd", UNSAFE)
def test_unsafe_rd_is_never_named(rd: str, browser: t.Any, stacks: Stacks) -> None:  # noqa: F811
    """``/?rd=<phishing site>`` shows the plain sign-in form and the site nowhere."""
    stack = stacks.get(PROXY)
    context = _context(browser, stack)
    try:
        page = context.new_page()
        page.goto(portal(stack, "/", rd))
        page.wait_for_selector("#username", state="visible")
        assert page.is_hidden("#target")
        assert page.is_visible("#login-lead")
        assert EVIL not in page_text(page)
        assert EVIL not in page.content()
        assert EVIL not in page.inner_text("body")
    finally:
        context.close()


def test_safe_rd_is_named(browser: t.Any, stacks: Stacks) -> None:  # noqa: F811
    """``/?rd=https://app.example.test:PORT/x`` says "Sign in to continue to" that host."""
    stack = stacks.get(PROXY)
    context = _context(browser, stack)
    try:
        page = context.new_page()
        host = f"app.example.test:{stack.proxy_port}"
        page.goto(portal(stack, "/", f"https://{host}/x"))
        page.wait_for_selector("#target", state="visible")
        assert page.text_content("#target-host") == host
        assert f"Sign in to continue to {host}" in page.inner_text("#target")
        assert page.is_hidden("#login-lead")
    finally:
        context.close()


def test_signed_in_and_2fa_pages_name_only_safe_sites(
    browser: t.Any,  # noqa: F811
    stacks: Stacks,
) -> None:
    """Signed in (both factors), "you asked to continue to …" and the code page follow the
    same check."""
    stack = stacks.get(PROXY)
    context = _context(browser, stack)
    try:
        page = context.new_page()
        secure = stack.url("secure", "/vault")
        page.goto(portal(stack, "/", secure))
        page.wait_for_selector("#username", state="visible")
        page.fill("#username", "bob")
        page.fill("#password", "bob-password")
        page.click("#sign-in")
        page.wait_for_selector("#code", state="visible")
        enter_fresh_code(page, stack, secure)

        page.goto(portal(stack, "/", f"https://{EVIL}/"))
        page.wait_for_selector("#view-signed-in", state="visible")
        assert page.is_hidden("#signed-in-target")
        assert EVIL not in page_text(page)

        page.goto(portal(stack, "/2fa", f"https://{EVIL}/"))
        page.wait_for_selector("#code", state="visible")
        assert page.is_hidden("#target")
        assert EVIL not in page_text(page)

        host = f"app.example.test:{stack.proxy_port}"
        page.goto(portal(stack, "/", f"https://{host}/x"))
        page.wait_for_selector("#signed-in-target", state="visible")
        assert page.text_content("#signed-in-target-host") == host

        host = f"secure.example.test:{stack.proxy_port}"
        page.goto(portal(stack, "/2fa", f"https://{host}/vault"))
        page.wait_for_selector("#target", state="visible")
        assert page.text_content("#target-host") == host
    finally:
        context.close()
