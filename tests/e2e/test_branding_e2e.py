"""The branded portal (SPEC §7.4 ``[portal]``) in real Chromium behind nginx: a title holding
markup shown as text, an SVG logo (with a script in it) loaded as an image under the pages'
strict CSP and inert when opened by itself, a custom stylesheet applied after the portal's, a
forced dark theme, and the accessibility checks (labels, contrast, keyboard, 320 px) holding
with the branding and with the colours of every theme.
"""

from __future__ import annotations

import re
import typing as t
from collections.abc import Iterator

import pytest

from server.web.assets import LOGO_CSP
from tests.e2e.conftest import CONFIG
from tests.e2e.conftest import Stack
from tests.e2e.conftest import build_stack
from tests.e2e.test_browser import TIMEOUT_MS
from tests.e2e.test_browser import browser  # noqa: F401 - the shared Chromium fixture
from tests.test_portal_assets import contrast

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

TITLE = '<script>document.title = "pwned"</script> Acme & Co'
LOGO = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 32" width="64" height="32">'
    '<rect width="64" height="32" rx="6" fill="#0e7490"/>'
    '<script>document.documentElement.setAttribute("data-pwned", "logo")</script></svg>\n'
)
#: Marks that the custom stylesheet applied, without touching a colour the checks measure.
CUSTOM_CSS = ".brand span { text-transform: uppercase; }\n"
#: The theme colours (portal.css) the card takes.
CARD = {"light": "#ffffff", "dark": "#161f31"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, echo_port: int) -> Iterator[Stack]:
    """authctl behind nginx with every [portal] key set and the dark theme forced."""
    brand = tmp_path_factory.mktemp("brand")
    (brand / "logo.svg").write_text(LOGO, encoding="utf-8")
    (brand / "custom.css").write_text(CUSTOM_CSS, encoding="utf-8")
    portal = (
        f"\n[portal]\ntitle = '{TITLE}'\nlogo_file = \"{brand / 'logo.svg'}\"\n"
        f'custom_css_file = "{brand / "custom.css"}"\ntheme = "dark"\n'
    )
    own = build_stack("nginx", tmp_path_factory.mktemp("branding") / "nginx", echo_port,
                      config=CONFIG + portal.replace("{", "{{").replace("}", "}}"))  # fmt: skip
    try:
        yield own
    finally:
        own.stop()


def _page(chromium: t.Any, width: int = 900, scheme: str = "light") -> tuple[t.Any, list[str]]:
    """A fresh page and the CSP reports Chromium writes to its console."""
    context = chromium.new_context(
        ignore_https_errors=True,
        viewport={"width": width, "height": 700},
        color_scheme=scheme,
        reduced_motion="reduce",  # no colour transition half-way when a test flips the theme
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    return page, violations


def _open(page: t.Any, stack: Stack) -> None:
    page.goto(stack.url("auth", "/"))
    page.wait_for_selector("#username", state="visible")
    page.wait_for_selector("#sign-in:enabled")


def _hex(css_colour: str) -> str:
    """``rgb(r, g, b)`` (or opaque ``rgba``) as ``#rrggbb``."""
    found = re.fullmatch(r"rgba?\((\d+), (\d+), (\d+)(?:, ([\d.]+))?\)", css_colour)
    assert found, css_colour
    assert found.group(4) in (None, "1"), f"translucent colour {css_colour}"
    return "#" + "".join(f"{int(found.group(i)):02x}" for i in (1, 2, 3))


#: Text on the card, and the colours it must stand out from (4.5:1, WCAG AA).
TEXT_ON_CARD = ["#login-title", ".brand span", "label[for=username]", "#forgot-password", ".lead"]


def _check_contrast(page: t.Any, card: str) -> None:
    """Every text checked against the card, and the primary button's text against it."""
    assert _hex(page.eval_on_selector(".card", "e => getComputedStyle(e).backgroundColor")) == card
    for selector in TEXT_ON_CARD:
        colour = _hex(page.eval_on_selector(selector, "e => getComputedStyle(e).color"))
        assert contrast(colour, card) >= 4.5, (selector, colour, card)
    button = page.eval_on_selector(
        "#sign-in", "e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor]"
    )
    assert contrast(_hex(button[0]), _hex(button[1])) >= 4.5, button
    border = _hex(page.eval_on_selector("#username", "e => getComputedStyle(e).borderTopColor"))
    assert contrast(border, card) >= 3.0, border


def test_branded_portal_shows_title_logo_css_and_dark_theme(browser: t.Any, stack: Stack) -> None:  # noqa: F811
    """The title is text (its script never runs), the logo loads as an image (its script never
    runs), the custom CSS applies, the dark theme holds in a light-scheme browser, contrast
    holds, and the strict CSP reports nothing."""
    page, violations = _page(browser, scheme="light")
    _open(page, stack)
    assert page.title() == f"Sign in · {TITLE}"
    assert page.inner_text(".brand span") == TITLE.upper()  # the custom CSS upper-cases it
    assert page.eval_on_selector(".brand span", "e => e.textContent") == TITLE
    assert page.get_attribute("html", "data-theme") == "dark"
    assert page.get_attribute("html", "data-pwned") is None
    logo = page.eval_on_selector(
        "img.logo-custom", "e => [e.complete, e.naturalWidth, e.getAttribute('src')]"
    )
    assert logo[0] is True
    assert logo[1] > 0
    assert logo[2].startswith("/static/brand/logo.svg?v=")
    assert page.locator(".brand svg").count() == 0
    _check_contrast(page, CARD["dark"])
    assert not violations, violations
    page.context.close()


@pytest.mark.parametrize(
    ("theme", "scheme", "expected"),
    [
        (None, "light", "light"),
        (None, "dark", "dark"),
        ("light", "dark", "light"),
        ("light", "light", "light"),
        ("dark", "light", "dark"),
    ],
    ids=["auto-light", "auto-dark", "light-in-dark-browser", "light", "dark-in-light-browser"],
)
def test_every_theme_keeps_contrast(
    browser: t.Any,  # noqa: F811
    stack: Stack,
    theme: str | None,
    scheme: str,
    expected: str,
) -> None:
    """The colours of each theme (``auto`` in either browser scheme, and each forced one
    against the browser's) keep WCAG AA contrast. The served page is dark; the attribute is
    set here as the server renders it for the other themes (DevTools, outside the CSP)."""
    page, violations = _page(browser, scheme=scheme)
    _open(page, stack)
    if theme is None:
        page.evaluate("document.documentElement.removeAttribute('data-theme')")
    else:
        page.evaluate(f"document.documentElement.dataset.theme = {theme!r}")
    _check_contrast(page, CARD[expected])
    assert not violations, violations
    page.context.close()


def test_keyboard_labels_and_320px(browser: t.Any, stack: Stack) -> None:  # noqa: F811
    """At 320 px nothing scrolls sideways and the logo fits (a long title wraps); every field
    has a label; Tab walks the form in order from the focused first field, each stop showing a
    focus indicator."""
    page, violations = _page(browser, width=320, scheme="dark")
    _open(page, stack)
    overflow = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert overflow[0] <= overflow[1], overflow
    box = page.locator("img.logo-custom").bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= 320
    assert box["height"] > 0
    unlabelled = page.evaluate(
        "[...document.querySelectorAll('input')].filter(i => i.type !== 'hidden'"
        " && i.labels.length === 0).map(i => i.id)"
    )
    assert unlabelled == []
    order = [page.evaluate("document.activeElement.id")]  # the page focuses the first field
    for _ in range(4):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id"))
        ring = page.evaluate(
            "(() => { const s = getComputedStyle(document.activeElement);"
            " return [s.outlineStyle, s.outlineWidth, s.boxShadow]; })()"
        )
        assert ring[0] != "none" or ring[2] != "none", (order[-1], ring)
    assert order == ["username", "password", "remember-me", "forgot-password", "sign-in"]
    assert not violations, violations
    page.context.close()


def test_logo_opened_by_itself_runs_no_script(browser: t.Any, stack: Stack) -> None:  # noqa: F811
    """Navigated to directly, the SVG logo is a document of its own: its CSP stops its script."""
    page, violations = _page(browser)
    resp = page.goto(stack.url("auth", "/static/brand/logo.svg"))
    assert resp is not None
    assert resp.status == 200
    headers = resp.headers
    assert headers["content-type"] == "image/svg+xml"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"] == LOGO_CSP
    assert page.evaluate("document.documentElement.getAttribute('data-pwned')") is None
    assert violations, "Chromium should report the blocked script"
    page.context.close()
