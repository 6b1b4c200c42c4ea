"""Sessions and personal access tokens at ``/settings`` (SPEC §7.6), in real Chromium behind
real nginx.

carol signs in from three browser profiles ("devices": a laptop, a phone, and one whose
User-Agent is an HTML payload). From the laptop she sees every session with this one marked,
signs the phone out (its next request is sent to the portal), sees the hostile User-Agent as
inert text, and signs out everywhere else. Then she creates a personal access token after the
identity check, reads it once (and from the clipboard), uses it with a plain HTTP client through
nginx (``Authorization: Bearer`` -> 200 with her ``Remote-User`` at the app), revokes it in the
page, and the same request is refused (401 + ``WWW-Authenticate: Bearer``).

Each state is saved as a screenshot (``$AUTHCTL_E2E_ARTIFACTS``); no step may report a CSP
violation. The tests build on each other (one stack, the same profiles), in order.
"""

from __future__ import annotations

import http.client
import json
import time
import typing as t
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import PROXIES
from tests.e2e.conftest import Stack
from tests.e2e.conftest import Stacks
from tests.e2e.conftest import build_stack
from tests.e2e.conftest import run_cli
from tests.e2e.test_browser import TIMEOUT_MS
from tests.e2e.test_browser import artifacts  # noqa: F401 - the screenshots folder
from tests.e2e.test_browser import browser  # noqa: F401 - the shared Chromium fixture
from tests.e2e.test_browser import page_json
from tests.e2e.test_passkeys_e2e import mailed_code

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

USER = "carol"
PASSWORD = "carol-password"
PHONE_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36"
)
#: A User-Agent that would run script if the page ever put it into markup.
HOSTILE_UA = "<img src=x onerror=\"document.title='pwned'\"><b>bold</b>"
NAME = "CI deploy"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, echo_port: int) -> Iterator[Stack]:
    """authctl behind nginx for this module only (its own sessions); carol enabled."""
    own = build_stack("nginx", tmp_path_factory.mktemp("sessions-tokens") / "nginx", echo_port)
    try:
        run_cli(["user", "enable", USER], own.folder)
        yield own
    finally:
        own.stop()


@dataclass
class Device:
    """One browser profile (cookies of its own), with the CSP violations its pages reported."""

    name: str
    context: t.Any
    page: t.Any
    violations: list[str] = field(default_factory=list)


@dataclass
class Devices:
    """The three devices and where screenshots go."""

    stack: Stack
    laptop: Device
    phone: Device
    hostile: Device
    shots: Path
    token: str = ""
    revoked: bool = False
    shot_count: int = 0

    def shot(self, name: str, device: Device | None = None) -> None:
        """Save a full-page screenshot of a device's current page (the laptop's by default)."""
        self.shot_count += 1
        page = (device or self.laptop).page
        path = self.shots / f"sessions-tokens-{self.shot_count:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)

    def no_csp_violation(self) -> None:
        for device in (self.laptop, self.phone, self.hostile):
            assert not device.violations, (device.name, device.violations)


@pytest.fixture(scope="module")
def devices(browser: t.Any, stack: Stack, artifacts: Path) -> Iterator[Devices]:  # noqa: F811
    """A laptop (Chromium's own User-Agent), a phone and a hostile User-Agent."""
    made: list[Device] = []
    for name, agent in (("laptop", None), ("phone", PHONE_UA), ("hostile", HOSTILE_UA)):
        options: dict[str, t.Any] = {
            "ignore_https_errors": True,
            "viewport": {"width": 900, "height": 800},
        }
        if agent:
            options["user_agent"] = agent
        context = browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        if name == "laptop":
            context.grant_permissions(
                ["clipboard-read", "clipboard-write"], origin=stack.url("auth").rstrip("/")
            )
        device = Device(name, context, context.new_page())
        device.page.on(
            "console",
            lambda msg, d=device: (
                d.violations.append(msg.text) if "Content Security Policy" in msg.text else None
            ),
        )
        made.append(device)
    try:
        yield Devices(stack, made[0], made[1], made[2], artifacts)
    finally:
        for device in made:
            device.context.close()


# ---------------------------------------------------------------------------- helpers


def sign_in(stack: Stack, device: Device, path: str = "/") -> None:
    """From the app, through the portal's sign-in page, back to the app."""
    page = device.page
    target = stack.url("app", path)
    page.goto(target)
    assert page.url == stack.portal_redirect(target)
    page.wait_for_selector("#username", state="visible")
    page.fill("#username", USER)
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_url(target)
    assert echoed_user(page) == USER


def echoed_user(page: t.Any) -> str | None:
    headers = {name.lower(): value for name, value in page_json(page)["headers"]}
    return headers.get("remote-user")


def sent_to_portal(stack: Stack, device: Device, path: str) -> None:
    """The device's next request to the app is sent to the portal (its session is over)."""
    target = stack.url("app", path)
    device.page.goto(target)
    assert device.page.url == stack.portal_redirect(target)
    device.page.wait_for_selector("#username", state="visible")


def open_settings(d: Devices, rows: int) -> t.Any:
    """The laptop's /settings with ``rows`` sessions listed."""
    page = d.laptop.page
    page.goto(d.stack.url("auth", "/settings"))
    page.wait_for_selector("#sessions-section", state="visible")
    expect(page.locator("#sessions-list > li")).to_have_count(rows)
    return page


def api_get(page: t.Any, path: str) -> t.Any:
    """``GET path`` from the page (same origin, the page's cookie), the envelope's data."""
    answer = page.evaluate(
        "(path) => fetch(path, {credentials: 'same-origin'}).then(r => r.json())", path
    )
    assert answer["status"] == "OK", answer
    return answer["data"]


def row(page: t.Any, handle: str) -> t.Any:
    return page.locator(f"#sessions-list > li[data-session-handle='{handle}']")


def handle_of(page: t.Any, agent: str) -> str:
    """The handle of the (one) listed session whose User-Agent is ``agent``."""
    found = [s["handle"] for s in api_get(page, "/api/user/sessions") if s["user_agent"] == agent]
    assert len(found) == 1, found
    return str(found[0])


def confirm_identity(d: Devices) -> None:
    """The identity check the page opened: the mailed code, typed in."""
    page = d.laptop.page
    page.wait_for_selector("#elevation", state="visible")
    notes = d.stack.folder / "notifications.txt"
    since = len(notes.read_text()) if notes.exists() else 0
    page.click("#elevation-send")
    page.wait_for_selector("#otc", state="visible")
    page.fill("#otc", mailed_code(d.stack, since))
    page.click("#elevation-verify")


def bearer(stack: Stack, token: str, path: str = "/api/report") -> t.Any:
    """A script's request to the app through nginx: the token, no cookie, JSON wanted."""
    return stack.request(
        "app", path, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
    )


def authctl_auth_request(stack: Stack, token: str) -> http.client.HTTPResponse:
    """What authctl's nginx endpoint answers nginx's sub-request for the script's request."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.authctl_port, timeout=10)
    try:
        conn.request(
            "GET",
            "/api/authz/auth-request",
            headers={
                "X-Original-URL": stack.url("app", "/api/report"),
                "X-Original-Method": "GET",
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
            },
        )
        resp = conn.getresponse()
        resp.read()
        return resp
    finally:
        conn.close()


def overflow(page: t.Any) -> list[int]:
    return list(page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    ))  # fmt: skip


def at_320(d: Devices, name: str) -> None:
    """The page holds at 320 px wide (no sideways scrolling); a screenshot of it."""
    page = d.laptop.page
    page.set_viewport_size({"width": 320, "height": 800})
    try:
        scroll = overflow(page)
        assert scroll[0] <= scroll[1], scroll
        d.shot(name)
    finally:
        page.set_viewport_size({"width": 900, "height": 800})


# ---------------------------------------------------------------------------- sessions


def test_both_devices_are_listed_this_one_marked(devices: Devices) -> None:
    """Signed in on the laptop and the phone, /settings on the laptop lists both: this device
    first and marked, each with its browser, IP address and times in the browser's locale
    (``<time datetime>`` holding the API's RFC 3339 value)."""
    d, stack = devices, devices.stack
    sign_in(stack, d.laptop, "/laptop")
    sign_in(stack, d.phone, "/phone")
    page = open_settings(d, 2)
    listed = api_get(page, "/api/user/sessions")
    current = [s for s in listed if s["current"]]
    assert len(current) == 1

    first = page.locator("#sessions-list > li").first
    assert first.get_attribute("data-session-handle") == current[0]["handle"]
    assert first.get_attribute("data-current") == "true"
    assert first.locator(".badge").text_content() == "This device"
    assert (first.locator(".credential-name").text_content() or "").startswith("Chrome on Linux")
    assert first.locator("[data-action=revoke]").get_attribute("aria-label") == (
        "Sign out this device"
    )

    phone = row(page, handle_of(page, PHONE_UA))
    assert phone.locator(".credential-name").text_content() == "Chrome on Android"
    assert phone.locator(".badge").count() == 0
    assert phone.locator(".session-agent").text_content() == PHONE_UA
    ip_line = phone.locator(".session-ip").text_content() or ""
    assert ip_line.startswith("IP address 127.0.0.1"), ip_line
    phone_record = next(s for s in listed if s["user_agent"] == PHONE_UA)
    times = phone.locator(".session-times time")
    assert times.count() == 2
    assert times.nth(0).get_attribute("datetime") == phone_record["created_at"]
    assert times.nth(1).get_attribute("datetime") == phone_record["last_seen_at"]
    local = page.evaluate(
        "(v) => new Date(v).toLocaleString(undefined, {dateStyle: 'medium', timeStyle: 'short'})",
        phone_record["created_at"],
    )
    assert times.nth(0).text_content() == local
    assert (phone.locator(".session-times").text_content() or "").startswith("Signed in ")
    assert page.is_visible("#sessions-revoke-others")
    d.shot("sessions-two-devices")
    at_320(d, "sessions-two-devices-320px")
    d.no_csp_violation()


def test_sign_the_phone_out(devices: Devices) -> None:
    """ "Sign out" on the phone's row ends that session: the result is announced, the list
    keeps only this device, and the phone's next request to the app goes to the portal; the
    laptop still reaches the app."""
    d, stack = devices, devices.stack
    page = open_settings(d, 2)
    handle = handle_of(page, PHONE_UA)
    button = row(page, handle).locator("[data-action=revoke]")
    label = button.get_attribute("aria-label") or ""
    assert label.startswith("Sign out Chrome on Android, last seen "), label
    button.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#sessions-status")).to_have_text(
        "Signed out Chrome on Android (127.0.0.1)."
    )
    expect(page.locator("#sessions-list > li")).to_have_count(1)
    assert page.is_hidden("#sessions-actions")  # nothing else to sign out
    focused = page.evaluate("document.activeElement.getAttribute('data-action')")
    assert focused == "revoke"
    d.shot("sessions-phone-signed-out")

    sent_to_portal(stack, d.phone, "/phone/after-revoke")
    d.shot("phone-sent-to-portal", d.phone)
    d.laptop.page.goto(stack.url("app", "/laptop/still"))
    assert echoed_user(d.laptop.page) == USER
    d.no_csp_violation()


def test_a_hostile_user_agent_is_shown_as_text(devices: Devices) -> None:
    """A session whose User-Agent is markup with a script handler is listed with that text,
    character for character: no element is made from it and the handler never runs."""
    d, stack = devices, devices.stack
    sign_in(stack, d.hostile, "/hostile")
    page = open_settings(d, 2)
    hostile = row(page, handle_of(page, HOSTILE_UA))
    assert hostile.locator(".session-agent").text_content() == HOSTILE_UA
    assert hostile.locator(".credential-name").text_content() == "Unknown browser"
    assert page.locator("#sessions-list img, #sessions-list b").count() == 0
    assert page.title() != "pwned"
    assert page.evaluate("document.title") != "pwned"
    d.shot("sessions-hostile-user-agent")
    at_320(d, "sessions-hostile-user-agent-320px")
    d.no_csp_violation()


def test_sign_out_everywhere_else(devices: Devices) -> None:
    """With the phone back and the hostile profile signed in, "Sign out everywhere else" ends
    both: announced, one row left (this device), both are sent to the portal at their next
    request, the laptop keeps its session."""
    d, stack = devices, devices.stack
    sign_in(stack, d.phone, "/phone/again")
    page = open_settings(d, 3)
    d.shot("sessions-three-devices")
    page.click("#sessions-revoke-others")
    expect(page.locator("#sessions-status")).to_have_text(
        "Signed out 2 other sessions. Only this device is signed in now."
    )
    expect(page.locator("#sessions-list > li")).to_have_count(1)
    assert page.locator("#sessions-list > li").first.get_attribute("data-current") == "true"
    d.shot("sessions-signed-out-everywhere-else")

    sent_to_portal(stack, d.phone, "/phone/after-all")
    sent_to_portal(stack, d.hostile, "/hostile/after-all")
    d.laptop.page.goto(stack.url("app", "/laptop/kept"))
    assert echoed_user(d.laptop.page) == USER
    d.no_csp_violation()


# ---------------------------------------------------------------------------- tokens


def test_create_a_token_after_the_identity_check(devices: Devices) -> None:
    """ "Create a token" opens a labelled form (keyboard order: name, expiry, sites, Create);
    Create asks for the identity check (mailed code), then shows the token once with "you will
    not see it again" and a Copy button that puts it on the clipboard; the list shows the new
    token's name, dates and sites, never its value, and once dismissed the value is gone."""
    d = devices
    page = open_settings(d, 1)
    expect(page.locator("#tokens-empty")).to_be_visible()
    page.click("#token-create")
    order = [page.evaluate("document.activeElement.id")]
    for _ in range(3):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id"))
    assert order == ["token-name", "token-expires", "token-domains", "token-submit"]
    assert page.evaluate("document.activeElement.form.id") == "token-form"
    page.fill("#token-name", NAME)
    page.select_option("#token-expires", "30d")
    page.fill("#token-domains", "elsewhere.invalid")  # outside the cookie domain: refused
    d.shot("token-form")
    page.click("#token-submit")
    page.wait_for_selector("#elevation", state="visible")
    # the identity check opens right below the form that asked for it
    assert page.evaluate("document.getElementById('token-form').nextElementSibling.id") == (
        "elevation"
    )
    d.shot("token-identity-check")
    confirm_identity(d)
    # then the request is retried: the server's refusal is announced, the field marked
    expect(page.locator("#tokens-error")).to_contain_text("'elsewhere.invalid' is outside")
    assert page.get_attribute("#token-domains", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "token-domains"
    d.shot("token-refused-domain")
    page.fill("#token-domains", "app.example.test")
    assert page.get_attribute("#token-domains", "aria-invalid") is None
    page.keyboard.press("Enter")  # submits the form; the session is elevated now

    page.wait_for_selector("#token-created", state="visible")
    token = page.text_content("#token-value") or ""
    assert token.startswith("authctl_"), token
    assert len(token) >= len("authctl_") + 43  # 256 bits, base64url
    expect(page.locator("#token-once")).to_contain_text("you will not see it again")
    expect(page.locator("#tokens-status")).to_have_text(
        f"Token “{NAME}” created. Copy it now: you will not see it again."
    )
    assert page.evaluate("document.activeElement.id") == "token-copy"
    assert page.is_hidden("#token-create")  # until "I have copied it"
    page.keyboard.press("Enter")
    expect(page.locator("#token-copy")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == token
    d.token = token

    items = page.locator("#tokens-list > li")
    expect(items).to_have_count(1)
    item = items.first
    assert item.locator(".credential-name").text_content() == NAME
    times = item.locator(".token-times").text_content() or ""
    assert times.startswith("Created "), times
    assert times.endswith(" · Never used"), times
    scope = item.locator(".token-scope").text_content() or ""
    assert scope.startswith("Expires "), scope
    assert scope.endswith(" · Only for app.example.test"), scope
    listed = api_get(page, "/api/user/tokens")
    assert [x["name"] for x in listed] == [NAME]
    assert token not in str(listed)
    assert item.get_attribute("data-token-id") == listed[0]["id"]
    expires = item.locator(".token-scope time")
    assert expires.get_attribute("datetime") == listed[0]["expires_at"]
    d.shot("token-shown-once")
    at_320(d, "token-shown-once-320px")

    page.click("#token-done")
    assert page.is_hidden("#token-created")
    assert token not in page.content()
    assert page.evaluate("document.activeElement.id") == "token-create"
    page.reload()
    page.wait_for_selector("#tokens-list > li")
    assert token not in page.content()
    d.no_csp_violation()


def test_the_token_works_through_nginx_until_revoked_in_the_page(devices: Devices) -> None:
    """A plain HTTP client with ``Authorization: Bearer <token>`` reaches the app through nginx
    as carol; the page then shows the token as used; "Revoke" asks first (focus on "Keep it"),
    revokes and announces it."""
    d, stack = devices, devices.stack
    assert d.token, "the previous test makes the token"
    reply = bearer(stack, d.token)
    assert reply.status == 200, (reply.status, reply.body[:200])
    echoed = dict(reply.echoed())
    assert echoed.get("remote-user") == USER, echoed

    page = open_settings(d, 1)
    deadline = time.monotonic() + 5
    while not api_get(page, "/api/user/tokens")[0]["last_used_at"]:
        assert time.monotonic() < deadline, "last_used_at never set"
        time.sleep(0.2)
    page.reload()
    item = page.locator("#tokens-list > li").first
    expect(item.locator(".token-times")).to_contain_text("Last used ")
    d.shot("token-used")

    item.locator("[data-action=revoke]").click()
    assert page.evaluate("document.activeElement.textContent") == "Keep it"
    d.shot("token-revoke-confirm")
    item.locator(".token-revoke .btn-danger").click()
    expect(page.locator("#tokens-status")).to_have_text(f"“{NAME}” was revoked.")
    expect(page.locator("#tokens-list > li")).to_have_count(0)
    assert page.is_visible("#tokens-empty")
    assert page.evaluate("document.activeElement.id") == "token-create"
    assert api_get(page, "/api/user/tokens") == []
    d.shot("token-revoked")

    d.revoked = True
    d.no_csp_violation()


def test_a_revoked_token_gets_401_bearer_through_nginx(devices: Devices) -> None:
    """The script's request with the token revoked in the page: 401 + ``WWW-Authenticate:
    Bearer``, no redirect (SPEC §7.6: a script wants a status, not a portal), from authctl and
    from nginx in front of it."""
    d, stack = devices, devices.stack
    assert d.revoked, "the previous test revokes the token"
    # authctl itself refuses the revoked token as SPEC §7.6 says (no redirect) ...
    direct = authctl_auth_request(stack, d.token)
    assert direct.status == 401, direct.status
    assert (direct.getheader("WWW-Authenticate") or "").startswith("Bearer")
    assert direct.getheader("Location") is None
    # ... and so must the proxy in front of it
    refused = bearer(stack, d.token)
    assert refused.status == 401, (refused.status, refused.headers.items())
    assert (refused.header("WWW-Authenticate") or "").startswith("Bearer"), dict(refused.headers)
    assert refused.header("Location") is None
    assert refused.header("WWW-Authenticate") == direct.getheader("WWW-Authenticate")


@pytest.mark.parametrize("proxy", PROXIES)
def test_a_bearer_refusal_reaches_the_script_through_every_proxy(
    proxy: str, stacks: Stacks
) -> None:
    """Through each proxy (its ``proxy-snippet`` config): a valid token reaches the app with
    its user's ``Remote-User``; an unknown ``authctl_`` token gets authctl's 401 with its
    ``WWW-Authenticate: Bearer`` challenge, not a redirect and not a bare 401."""
    stack = stacks.get(proxy)
    made = run_cli(["token", "create", "alice", "--name", f"probe-{proxy}", "--json"], stack.folder)
    token = json.loads(made.stdout)["token"]
    reply = bearer(stack, token)
    assert reply.status == 200, (proxy, reply.status)
    assert dict(reply.echoed()).get("remote-user") == "alice"
    refused = bearer(stack, "authctl_" + "A" * 43)
    assert refused.status == 401, (proxy, refused.status, refused.headers.items())
    assert refused.headers.get_all("WWW-Authenticate") == [
        'Bearer realm="authctl", error="invalid_token"'
    ], (proxy, refused.headers.items())
    assert refused.header("Location") is None
