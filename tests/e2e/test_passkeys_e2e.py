"""Passkeys (SPEC §7.1) in real Chromium behind real nginx and Caddy, with Chrome's virtual
authenticator (CDP ``WebAuthn.addVirtualAuthenticator``: ctap2, internal transport, resident
keys, user verification) through Playwright's CDP session.

carol (no authenticator app) enrols a passkey from ``/settings`` after the identity check,
signs in with password + passkey to a ``two_factor`` site, signs out, signs in with the passkey
alone (the button, then the username field's autofill: conditional mediation), renames it and
removes it; the same authenticator cannot be added twice, an assertion made on another origin
and a removed passkey are refused. Each portal state is saved as a screenshot
(``$AUTHCTL_E2E_ARTIFACTS``) and no step may report a CSP violation.

The virtual authenticator answers at once while "automatic presence simulation" is on, even a
conditional (autofill) request; with it off, requests wait. The tests turn it off before
loading the sign-in page whenever the autofill request must not sign in by itself.

The tests of one proxy build on each other (one browser page, one authenticator), in order.
"""

from __future__ import annotations

import json
import re
import time
import typing as t
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import CONFIG
from tests.e2e.conftest import Stack
from tests.e2e.conftest import build_stack
from tests.e2e.conftest import free_port
from tests.e2e.conftest import run_cli
from tests.e2e.test_browser import TIMEOUT_MS
from tests.e2e.test_browser import artifacts  # noqa: F401 - the screenshots folder
from tests.e2e.test_browser import browser  # noqa: F401 - the shared Chromium fixture
from tests.e2e.test_browser import page_json

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

PROXIES = ("nginx", "caddy")
WEBAUTHN = """
[webauthn]
enable = true
display_name = "authctl e2e"
timeout = "60s"
passkey_login = true
passkey_uv_two_factor = true
"""
USER = "carol"
PASSWORD = "carol-password"
RP_ID = "auth.example.test"


@pytest.fixture(scope="module", params=PROXIES)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          echo_port: int) -> Iterator[Stack]:  # fmt: skip
    """authctl with [webauthn] behind this proxy, for this module only; carol enabled."""
    proxy = str(request.param)
    own = build_stack(proxy, tmp_path_factory.mktemp("passkeys") / proxy, echo_port,
                      config=CONFIG + WEBAUTHN)  # fmt: skip
    try:
        run_cli(["user", "enable", USER], own.folder)
        yield own
    finally:
        own.stop()


@dataclass
class Visit:
    """One browser page with a virtual authenticator, across the tests of one proxy."""

    stack: Stack
    page: t.Any
    cdp: t.Any
    authenticator: str
    shots: Path
    violations: list[str] = field(default_factory=list)
    shot_count: int = 0

    def presence(self, on: bool) -> None:
        """Whether the authenticator answers at once (on) or leaves requests waiting (off)."""
        self.cdp.send(
            "WebAuthn.setAutomaticPresenceSimulation",
            {"authenticatorId": self.authenticator, "enabled": on},
        )

    def credentials(self) -> list[dict[str, t.Any]]:
        """The credentials the authenticator holds."""
        found = self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.authenticator})
        return list(found["credentials"])

    def shot(self, name: str) -> None:
        """Save a screenshot of the current portal state."""
        self.shot_count += 1
        path = self.shots / f"passkeys-{self.stack.proxy}-{self.shot_count:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)

    def goto(self, url: str) -> None:
        self.page.goto(url)

    def level(self) -> int:
        """The session's authentication level, asked from the page (same origin)."""
        state = self.page.evaluate(
            "fetch('/api/state', {credentials: 'same-origin'}).then(r => r.json())"
        )
        return int(state["data"]["authentication_level"])

    def no_csp_violation(self) -> None:
        assert not self.violations, self.violations


@pytest.fixture(scope="module")
def visit(browser: t.Any, stack: Stack, artifacts: Path) -> Iterator[Visit]:  # noqa: F811
    """A browser page with Chrome's virtual authenticator, for the tests of one proxy."""
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 900, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    v = Visit(stack, page, cdp, added["authenticatorId"], artifacts)
    page.on(
        "console",
        lambda msg: (
            v.violations.append(msg.text) if "Content Security Policy" in msg.text else None
        ),
    )
    try:
        yield v
    finally:
        context.close()


def portal(stack: Stack, path: str, target: str | None = None) -> str:
    url = stack.url("auth", path)
    return f"{url}?rd={quote(target, safe='')}&rm=GET" if target else url


def mailed_code(stack: Stack, since: int) -> str:
    """The identity-check code of the first mail after byte ``since`` of the notifications file."""
    notes = stack.folder / "notifications.txt"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = notes.read_text() if notes.exists() else ""
        found = re.search(r"^    ([A-Z0-9]{8})$", text[since:], re.MULTILINE)
        if found:
            return found.group(1)
        time.sleep(0.05)
    pytest.fail(f"no one-time code in {notes}")


def confirm_identity(v: Visit) -> None:
    """The identity check the settings page opened: the mailed code, typed in."""
    page = v.page
    page.wait_for_selector("#elevation", state="visible")
    notes = v.stack.folder / "notifications.txt"
    since = len(notes.read_text()) if notes.exists() else 0
    page.click("#elevation-send")
    page.wait_for_selector("#otc", state="visible")
    page.fill("#otc", mailed_code(v.stack, since))
    page.click("#elevation-verify")


def settle(v: Visit, done: str) -> None:
    """Wait until ``done`` (a JS condition) holds, passing an identity check on the way."""
    page = v.page
    either = f"() => !document.getElementById('elevation').hidden || ({done})"
    page.wait_for_function(either)
    if page.is_visible("#elevation"):
        confirm_identity(v)
    page.wait_for_function(f"() => {done}")


def sign_out(v: Visit) -> None:
    """Sign out from the portal's own page (``/``, "Sign out")."""
    v.presence(False)  # the sign-in page must not sign in again by itself
    v.goto(portal(v.stack, "/"))
    page = v.page
    page.wait_for_selector("#sign-out:visible, #username:visible")
    if page.is_visible("#sign-out"):
        page.click("#sign-out")
    page.wait_for_selector("#username", state="visible")
    assert v.level() == 0


def sign_in_with_password(v: Visit, target: str, user: str = USER) -> None:
    """From the portal's sign-in page for ``target``, the user's password (the autofill
    request stays waiting: presence off)."""
    v.presence(False)
    v.goto(portal(v.stack, "/", target))
    page = v.page
    page.wait_for_selector("#username", state="visible")
    page.fill("#username", user)
    page.fill("#password", f"{user}-password")
    page.click("#sign-in")


def echoed_user(page: t.Any) -> str | None:
    headers = {name.lower(): value for name, value in page_json(page)["headers"]}
    return headers.get("remote-user")


def overflow(page: t.Any) -> list[int]:
    return list(page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    ))  # fmt: skip


# ---------------------------------------------------------------------------- the story


def test_enrol_a_passkey_from_settings(visit: Visit) -> None:
    """carol (password only) opens /settings, names a passkey, passes the identity check
    (mailed code) and the authenticator makes a resident credential for the portal's RP ID;
    the list shows it with its dates, the result is announced, the focus is back on "Add"."""
    v, page = visit, visit.page
    sign_in_with_password(v, v.stack.url("app", "/"))
    page.wait_for_url(v.stack.url("app", "/"))
    v.goto(portal(v.stack, "/settings"))
    page.wait_for_selector("#webauthn-section", state="visible")
    page.wait_for_selector("#webauthn-empty", state="visible")
    assert page.text_content("#webauthn-badge") == "Off"
    v.shot("settings-no-passkey")

    v.presence(True)
    page.click("#webauthn-add")
    assert page.evaluate("document.activeElement.id") == "webauthn-description"
    page.fill("#webauthn-description", "Laptop")
    v.shot("settings-name")
    page.click("#webauthn-register")
    page.wait_for_selector("#elevation", state="visible")
    v.shot("settings-identity-check")
    confirm_identity(v)
    page.wait_for_selector("#webauthn-list li")
    expect(page.locator("#webauthn-status")).to_have_text("Your passkey “Laptop” was added.")
    assert page.evaluate("document.activeElement.id") == "webauthn-add"
    items = page.locator("#webauthn-list li")
    assert items.count() == 1
    assert page.text_content("#webauthn-list .credential-name") == "Laptop"
    meta = page.text_content("#webauthn-list .credential-meta") or ""
    assert meta.startswith("Added "), meta
    assert "Never used" in meta
    assert page.text_content("#webauthn-badge") == "1 added"

    held = v.credentials()
    assert len(held) == 1
    assert held[0]["rpId"] == RP_ID
    assert held[0]["isResidentCredential"] is True
    listed = page.evaluate("fetch('/api/secondfactor/webauthn/credentials').then(r => r.json())")[
        "data"
    ]
    assert [c["description"] for c in listed] == ["Laptop"]
    assert listed[0]["discoverable"] is True
    v.shot("settings-passkey-added")

    page.set_viewport_size({"width": 320, "height": 800})
    scroll = overflow(page)
    assert scroll[0] <= scroll[1], scroll
    v.shot("settings-320px")
    page.set_viewport_size({"width": 900, "height": 800})
    v.no_csp_violation()


def test_same_authenticator_cannot_be_added_twice(visit: Visit) -> None:
    """A second "Add" with the same authenticator: the server's excludeCredentials makes the
    browser refuse (InvalidStateError), the page says so in its alert region, nothing is added."""
    v, page = visit, visit.page
    page.click("#webauthn-add")
    page.fill("#webauthn-description", "Laptop again")
    page.click("#webauthn-register")
    # carol has a second factor now: a change to her factors needs it first ("Verify now")
    page.wait_for_selector("#need-2fa", state="visible")
    v.shot("settings-needs-second-factor")
    page.click("#need-2fa-link")
    page.wait_for_selector("#view-webauthn", state="visible")
    page.click("#webauthn-verify")
    page.wait_for_url(portal(v.stack, "/settings"))
    page.wait_for_selector("#webauthn-list li")
    page.click("#webauthn-add")
    page.fill("#webauthn-description", "Laptop again")
    page.click("#webauthn-register")
    settle(v, "document.getElementById('webauthn-error').textContent !== ''")
    expect(page.locator("#webauthn-error")).to_have_text(
        "This security key or passkey is already registered for your account."
    )
    assert page.locator("#webauthn-list li").count() == 1
    assert len(v.credentials()) == 1
    v.shot("settings-already-registered")
    page.click("#webauthn-add-cancel")
    assert page.evaluate("document.activeElement.id") == "webauthn-add"
    v.no_csp_violation()


def test_password_and_passkey_to_a_two_factor_site(visit: Visit) -> None:
    """Signed out, carol goes to the two_factor site: password, then /2fa offers her passkey
    (she has no authenticator app), focused; Enter uses it and she lands on the site."""
    v, page = visit, visit.page
    sign_out(v)
    target = v.stack.url("secure", "/vault")
    v.goto(target)
    assert page.url == portal(v.stack, "/", target)
    sign_in_with_password(v, target)
    page.wait_for_url(f"{v.stack.url('auth', '/2fa')}*")
    page.wait_for_selector("#view-webauthn", state="visible")
    assert page.evaluate("document.activeElement.id") == "webauthn-verify"
    assert page.is_hidden("#use-totp-line")  # no authenticator app to switch to
    assert page.text_content("#webauthn-target-host") == f"secure.example.test:{v.stack.proxy_port}"
    v.shot("2fa-passkey")
    page.set_viewport_size({"width": 320, "height": 800})
    scroll = overflow(page)
    assert scroll[0] <= scroll[1], scroll
    v.shot("2fa-passkey-320px")
    page.set_viewport_size({"width": 900, "height": 800})
    v.presence(True)
    page.keyboard.press("Enter")
    page.wait_for_url(target)
    assert echoed_user(page) == USER
    v.shot("secure-site")
    v.no_csp_violation()


def test_passkey_alone_with_the_button(visit: Visit) -> None:
    """Signed out, carol uses "Sign in with a passkey" on the way to the two_factor site: a
    passkey with user verification counts as two factors, so she lands on the site."""
    v, page = visit, visit.page
    sign_out(v)
    target = v.stack.url("secure", "/vault?via=button")
    v.goto(portal(v.stack, "/", target))  # presence is off: the autofill request waits
    page.wait_for_selector("#passkey-sign-in", state="visible")
    assert page.get_attribute("#username", "autocomplete") == "username webauthn"
    v.shot("sign-in-with-passkey-button")
    v.presence(True)
    page.click("#passkey-sign-in")
    page.wait_for_url(target)
    assert echoed_user(page) == USER
    v.no_csp_violation()


def test_passkey_alone_from_the_username_autofill(visit: Visit) -> None:
    """Conditional mediation: the sign-in page asks for a passkey for the username field's
    autofill; the virtual authenticator picks carol's at once, and she is signed in."""
    v, page = visit, visit.page
    sign_out(v)
    target = v.stack.url("secure", "/vault?via=autofill")
    v.presence(True)
    v.goto(portal(v.stack, "/", target))
    page.wait_for_url(target)
    assert echoed_user(page) == USER
    v.no_csp_violation()


def test_rename_the_passkey(visit: Visit) -> None:
    """Rename opens a labelled field below the item, focused; Save renames it, the list shows
    the new name and when it was last used, the result is announced."""
    v, page = visit, visit.page
    v.goto(portal(v.stack, "/settings"))
    page.wait_for_selector("#webauthn-list li")
    meta = page.text_content("#webauthn-list .credential-meta") or ""
    assert "Last used " in meta, meta
    page.click("#webauthn-list [data-action=rename]")
    focused = page.evaluate("document.activeElement.labels[0].textContent")
    assert focused == "New name for Laptop"
    page.fill("#webauthn-list .credential-rename input", "Work laptop")
    v.shot("settings-rename")
    page.click("#webauthn-list .credential-rename button[type=submit]")
    settle(v, "document.getElementById('webauthn-status').textContent !== ''")
    expect(page.locator("#webauthn-status")).to_have_text("“Laptop” is now called “Work laptop”.")
    assert page.text_content("#webauthn-list .credential-name") == "Work laptop"
    assert page.evaluate("document.activeElement.getAttribute('data-action')") == "rename"
    v.shot("settings-renamed")
    v.no_csp_violation()


def test_an_assertion_made_on_another_origin_is_refused(visit: Visit) -> None:
    """The same RP ID on another origin (``https://auth.example.test:<other port>``): the
    browser signs, the server refuses the assertion (its origin is not the portal's), and the
    same steps on the portal's origin pass, so the refusal is the origin's."""
    v, page, stack = visit, visit.page, visit.stack
    sign_out(v)
    other = f"https://{RP_ID}:{free_port()}/"
    page.context.route(
        f"{other}**",
        lambda route: route.fulfill(
            status=200, content_type="text/html", body="<!doctype html><title>other</title>"
        ),
    )
    get_options = "fetch('/api/firstfactor/passkey').then(r => r.json())"
    assertion = """async (data) => {
        const options = PublicKeyCredential.parseRequestOptionsFromJSON(data.data.publicKey);
        const credential = await navigator.credentials.get({publicKey: options});
        return credential.toJSON();
    }"""

    def post(response: object) -> tuple[int, t.Any]:
        cookies = "; ".join(
            f"{c['name']}={c['value']}"
            for c in page.context.cookies(stack.url("auth", "/api/firstfactor/passkey"))
        )
        reply = stack.api(
            "/api/firstfactor/passkey",
            {"response": response, "keepMeLoggedIn": False},
            cookie=cookies,
        )
        return reply.status, reply.json()

    # from a portal page that makes no WebAuthn request of its own (one request at a time)
    v.goto(portal(stack, "/reset-password"))
    v.presence(True)
    options = page.evaluate(get_options)
    page.goto(other)
    made_elsewhere = page.evaluate(assertion, options)
    client_data = json.loads(_b64url(made_elsewhere["response"]["clientDataJSON"]))
    assert client_data["origin"] == other.rstrip("/")
    status, body = post(made_elsewhere)
    assert status in (400, 401, 403), (status, body)
    assert body["status"] == "KO"

    v.goto(portal(stack, "/reset-password"))
    options = page.evaluate(get_options)
    made_here = page.evaluate(assertion, options)
    status, body = post(made_here)
    assert status == 200, (status, body)
    assert body["status"] == "OK"
    v.no_csp_violation()


def test_remove_the_passkey_then_it_is_refused(visit: Visit) -> None:
    """Remove asks first (focus on "Keep it"), removes after the identity check, the list is
    empty; signed out, the authenticator still offers the removed passkey and the server
    refuses it: the sign-in page announces it and nobody is signed in."""
    v, page = visit, visit.page
    v.presence(True)  # signed in by the autofill request
    v.goto(portal(v.stack, "/", v.stack.url("app", "/")))
    page.wait_for_url(v.stack.url("app", "/"))
    v.goto(portal(v.stack, "/settings"))
    page.wait_for_selector("#webauthn-list li")
    page.click("#webauthn-list [data-action=remove]")
    assert page.evaluate("document.activeElement.textContent") == "Keep it"
    v.shot("settings-remove-confirm")
    page.click("#webauthn-list .credential-remove .btn-danger")
    settle(v, "document.getElementById('webauthn-status').textContent !== ''")
    expect(page.locator("#webauthn-status")).to_have_text("“Work laptop” was removed.")
    assert page.locator("#webauthn-list li").count() == 0
    assert page.is_visible("#webauthn-empty")
    assert page.evaluate("document.activeElement.id") == "webauthn-add"
    v.shot("settings-removed")
    assert len(v.credentials()) == 1  # the authenticator still has it

    sign_out(v)
    v.presence(True)
    page.click("#passkey-sign-in")
    page.wait_for_function("() => document.getElementById('login-error').textContent !== ''")
    v.shot("sign-in-removed-passkey-refused")
    assert page.is_visible("#username")
    assert v.level() == 0
    v.no_csp_violation()


def test_two_factor_page_switches_between_code_and_passkey(visit: Visit) -> None:
    """bob has an authenticator app and adds a passkey; on the way to the two_factor site /2fa
    offers the passkey first, "Use a one-time code instead" shows the code form (focused) and
    "Use a security key or passkey instead" comes back; the passkey takes him to the site."""
    v, page, stack = visit, visit.page, visit.stack
    sign_out(v)
    secure = stack.url("secure", "/vault?user=bob")
    sign_in_with_password(v, secure, "bob")
    page.wait_for_selector("#code", state="visible")  # no passkey yet: the code form
    assert page.is_hidden("#use-webauthn-line")
    page.fill("#code", stack.totp_code("bob"))
    page.click("#verify")
    page.wait_for_url(secure)
    v.goto(portal(stack, "/settings"))
    v.presence(True)
    page.click("#webauthn-add")
    page.fill("#webauthn-description", "Phone")
    page.click("#webauthn-register")
    confirm_identity(v)
    expect(page.locator("#webauthn-status")).to_have_text("Your passkey “Phone” was added.")
    page.wait_for_selector("#method-choice", state="visible")  # TOTP and a passkey: choose

    sign_out(v)
    sign_in_with_password(v, secure, "bob")
    page.wait_for_selector("#view-webauthn", state="visible")
    page.wait_for_selector("#use-totp-line", state="visible")
    page.click("#use-totp")
    page.wait_for_selector("#view-code", state="visible")
    assert page.evaluate("document.activeElement.id") == "code"
    v.shot("2fa-code-with-switch")
    page.click("#use-webauthn")
    page.wait_for_selector("#view-webauthn", state="visible")
    assert page.evaluate("document.activeElement.id") == "webauthn-verify"
    v.presence(True)
    page.keyboard.press("Enter")
    page.wait_for_url(secure)
    assert echoed_user(page) == "bob"
    v.no_csp_violation()


def _b64url(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
