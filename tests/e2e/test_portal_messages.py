"""The portal's rough edges of issue 14 §5, in real Chromium behind nginx: a wrong TOTP code says
the code is wrong, a finished password reset returns to the site the user came from, a
``two_factor`` site for a user without an authenticator app says so in its heading, and the
identity check opens where the user clicked.

The stack is this module's own (``build_stack``): the reset changes a password and the tests
enable carol, which the shared stacks of the other modules must not see.
"""

from __future__ import annotations

import re
import time
import typing as t
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.e2e.conftest import Stack
from tests.e2e.conftest import build_stack
from tests.e2e.conftest import run_cli
from tests.e2e.test_browser import _context
from tests.e2e.test_browser import browser  # noqa: F401 - the shared Chromium fixture

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

PROXY = "nginx"
CODE_WRONG = "The code is wrong or was already used. Enter the code your app shows now."
NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, echo_port: int) -> Iterator[Stack]:
    """authctl + nginx for this module only; carol (no TOTP) enabled."""
    own = build_stack(PROXY, tmp_path_factory.mktemp("messages") / PROXY, echo_port)
    try:
        run_cli(["user", "enable", "carol"], own.folder)
        yield own
    finally:
        own.stop()


def portal(stack: Stack, page: str, rd: str) -> str:
    return f"{stack.url('auth', page)}?rd={quote(rd, safe='')}"


def sign_in(page: t.Any, stack: Stack, user: str, password: str, target: str) -> None:
    """The sign-in page of a link to ``target``, the password step done."""
    page.goto(portal(stack, "/", target))
    page.wait_for_selector("#username", state="visible")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("#sign-in")


def mailed_link(stack: Stack, since: int) -> str:
    """The reset link of the first mail written after byte ``since`` of the notifications
    file (the outbox writes it from its own thread: wait up to 10 s)."""
    notes = stack.folder / "notifications.txt"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = notes.read_text() if notes.exists() else ""
        found = re.search(r"https://\S+/reset-password/step2\?\S+", text[since:])
        if found:
            return found.group(0)
        time.sleep(0.1)
    pytest.fail(f"no reset link in {notes}")


def test_wrong_totp_code_says_the_code_is_wrong(browser: t.Any, stack: Stack) -> None:  # noqa: F811
    """bob types a wrong code on the way to a two_factor site: the page says the code is
    wrong (was: "Authentication failed. Check your credentials.")."""
    context = _context(browser, stack)
    try:
        page = context.new_page()
        sign_in(page, stack, "bob", "bob-password", stack.url("secure", "/vault"))
        page.wait_for_selector("#code", state="visible")
        wrong = "000000" if stack.totp_code("bob") != "000000" else "111111"
        page.fill("#code", wrong)
        page.click("#verify")
        from playwright.sync_api import expect

        expect(page.locator("#code-error")).to_have_text(CODE_WRONG, timeout=10_000)
        assert page.text_content("#code-error") == CODE_WRONG
        assert "credentials" not in page.inner_text("body")
        assert page.get_attribute("#code", "aria-invalid") == "true"
    finally:
        context.close()


def test_finished_reset_returns_to_the_site(browser: t.Any, stack: Stack) -> None:  # noqa: F811
    """From a protected site to the sign-in page, "Forgot password?", the mailed link, a new
    password, "Sign in": the user lands on the site they first asked for."""
    target = stack.url("app", "/after-reset?x=1")
    host = f"app.example.test:{stack.proxy_port}"
    notes = stack.folder / "notifications.txt"
    since = len(notes.read_text()) if notes.exists() else 0
    context = _context(browser, stack)
    try:
        page = context.new_page()
        page.goto(target)
        page.wait_for_selector("#username", state="visible")
        page.click("#forgot-password")
        page.wait_for_selector("#reset-form", state="visible")
        assert f"rd={quote(target, safe='')}" in page.url
        page.fill("#username", "alice")
        page.click("#reset-start")
        page.wait_for_selector("#view-sent", state="visible")

        link = mailed_link(stack, since)
        assert f"&rd={quote(target, safe='')}" in link
        page.goto(link)
        page.wait_for_selector("#new-password", state="visible")
        assert "token=" not in page.url  # the secret left the address bar
        page.fill("#new-password", NEW_PASSWORD)
        page.fill("#confirm-password", NEW_PASSWORD)
        page.click("#reset-password")
        page.wait_for_selector("#view-done", state="visible")
        page.wait_for_selector("#done-target", state="visible")
        assert page.text_content("#done-target-host") == host

        page.click("#done-sign-in")
        page.wait_for_selector("#username", state="visible")
        assert page.is_visible("#target")
        assert page.text_content("#target-host") == host
        page.fill("#username", "alice")
        page.fill("#password", NEW_PASSWORD)
        page.click("#sign-in")
        page.wait_for_url(target)
        assert "after-reset" in page.text_content("body")
    finally:
        context.close()


def test_two_factor_site_without_totp_has_a_fitting_heading(
    browser: t.Any,  # noqa: F811
    stack: Stack,
) -> None:
    """carol has no authenticator app: on the way to a two_factor site the code page's
    heading says to set one up, not "Enter your one-time code"."""
    context = _context(browser, stack)
    try:
        page = context.new_page()
        sign_in(page, stack, "carol", "carol-password", stack.url("secure", "/vault"))
        page.wait_for_selector("#no-totp", state="visible")
        assert page.text_content("#code-title") == "Set up two-factor sign-in"
        assert page.title().startswith("Set up two-factor sign-in")
        assert page.is_hidden("#code-form")
        assert page.is_hidden("#code-lead")
        assert "A one-time code is needed to continue to" in page.inner_text("#target")
    finally:
        context.close()


def test_identity_check_opens_where_the_user_clicked(
    browser: t.Any,  # noqa: F811
    stack: Stack,
) -> None:
    """ "Set up authenticator app" needs an identity check: its panel opens right below that
    button, in the authenticator section, not at the top of the page."""
    context = _context(browser, stack)
    try:
        page = context.new_page()
        sign_in(page, stack, "carol", "carol-password", stack.url("app", "/"))
        page.wait_for_url(stack.url("app", "/"))
        page.goto(stack.url("auth", "/settings"))
        page.wait_for_selector("#totp-start", state="visible")
        page.click("#totp-start")
        page.wait_for_selector("#elevation", state="visible")
        placed = page.evaluate(
            "() => { const e = document.getElementById('elevation');"
            " return [e.parentElement.id, e.previousElementSibling.id]; }"
        )
        assert placed == ["totp-section", "totp-actions"]
        button = page.locator("#totp-start").bounding_box()
        panel = page.locator("#elevation").bounding_box()
        assert button is not None
        assert panel is not None
        assert 0 <= panel["y"] - (button["y"] + button["height"]) < 80
        focused = page.evaluate("document.activeElement.id")
        assert focused == "elevation-title"
    finally:
        context.close()


@pytest.mark.parametrize("page_path", ["/reset-password", "/reset-password/step2"])
def test_reset_pages_never_carry_an_unsafe_rd(
    browser: t.Any,  # noqa: F811
    stack: Stack,
    page_path: str,
) -> None:
    """A crafted reset link with ``rd=<phishing site>`` puts that site in no link or text."""
    evil = "evil-phish.com"
    context = _context(browser, stack)
    try:
        page = context.new_page()
        url = portal(stack, page_path, f"https://{evil}/")
        if page_path.endswith("step2"):
            url += "&token=abc"
        page.goto(url)
        page.wait_for_selector("form", state="visible")
        page.wait_for_load_state("networkidle")
        assert evil not in page.content()
        assert page.get_attribute("#back-to-sign-in", "href") == "/"
    finally:
        context.close()
