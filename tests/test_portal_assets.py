"""Static checks of the portal's HTML, CSS and JavaScript (CSP rules, labels, ids, contrast)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from dataclasses import field
from html.parser import HTMLParser
from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parent.parent / "portal_assets"
STATIC = ASSETS / "static"
JS = STATIC / "portal.js"
CSS = STATIC / "portal.css"

#: route -> (file, data-page)
ROUTES = {
    "/": ("index.html", "login"),
    "/2fa": ("2fa.html", "2fa"),
    "/settings": ("settings.html", "settings"),
    "/reset-password": ("reset-password.html", "reset-password"),
    "/reset-password/step2": ("reset-password-step2.html", "reset-password-step2"),
}
PAGES = [file for file, _ in ROUTES.values()]

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
URL_ATTRS = {"src", "href", "action", "formaction", "srcset", "poster", "data", "xlink:href"}
UNLABELLED_TYPES = {"hidden", "submit", "button", "reset", "image"}


@dataclass
class Element:
    """One start tag with its attributes and the element ids of its ancestors."""

    tag: str
    attrs: dict[str, str]
    ancestors: list[str]
    text: str = ""


@dataclass
class Page:
    """A parsed HTML file."""

    elements: list[Element] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def by_id(self, element_id: str) -> Element:
        matches = [e for e in self.elements if e.attrs.get("id") == element_id]
        assert len(matches) == 1, f"expected one element with id={element_id!r}"
        return matches[0]

    def ids(self) -> list[str]:
        return [e.attrs["id"] for e in self.elements if "id" in e.attrs]


class Collector(HTMLParser):
    """Collect elements, the text of script/style elements and nesting errors."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.stack: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs}, [e.tag for e in self.stack])
        self.page.elements.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs}, [e.tag for e in self.stack])
        self.page.elements.append(element)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1].tag != tag:
            open_tag = self.stack[-1].tag if self.stack else None
            self.page.errors.append(f"</{tag}> closes <{open_tag}> at line {self.getpos()[0]}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack:
            self.stack[-1].text += data


def parse(name: str) -> Page:
    collector = Collector()
    collector.feed((ASSETS / name).read_text(encoding="utf-8"))
    collector.close()
    if collector.stack:
        collector.page.errors.append(f"unclosed: {[e.tag for e in collector.stack]}")
    return collector.page


def labelled_ids(page: Page) -> set[str]:
    return {e.attrs["for"] for e in page.elements if e.tag == "label" and "for" in e.attrs}


def test_every_route_has_its_file() -> None:
    """Each portal route maps to an HTML file that exists and names its page in data-page."""
    for file, data_page in ROUTES.values():
        page = parse(file)
        body = [e for e in page.elements if e.tag == "body"]
        assert len(body) == 1, file
        assert body[0].attrs.get("data-page") == data_page, file


@pytest.mark.parametrize("name", PAGES)
def test_html_parses_with_balanced_tags(name: str) -> None:
    """Every HTML file parses with html.parser and every element is closed in order."""
    page = parse(name)
    assert page.errors == []
    html = [e for e in page.elements if e.tag == "html"]
    assert html
    assert html[0].attrs.get("lang") == "en"
    assert (ASSETS / name).read_text(encoding="utf-8").lower().startswith("<!doctype html>")


@pytest.mark.parametrize("name", PAGES)
def test_no_inline_script_or_style(name: str) -> None:
    """No page has inline script content, on* handlers, style attributes or style blocks."""
    page = parse(name)
    for element in page.elements:
        assert element.tag != "style", "<style> block"
        assert "style" not in element.attrs, f"style= on <{element.tag}>"
        handlers = [a for a in element.attrs if a.startswith("on")]
        assert handlers == [], f"inline handler {handlers} on <{element.tag}>"
        if element.tag == "script":
            assert element.attrs.get("src"), "script without src"
            assert element.text.strip() == "", "inline script content"
        if element.tag == "meta":
            assert element.attrs.get("http-equiv", "").lower() != "refresh"
        assert element.tag not in {"base", "iframe", "object", "embed", "frame"}


@pytest.mark.parametrize("name", PAGES)
def test_resources_are_same_origin(name: str) -> None:
    """Every src/href/action value is an absolute path or relative reference on the same origin."""
    page = parse(name)
    for element in page.elements:
        for attr in URL_ATTRS & element.attrs.keys():
            value = element.attrs[attr].strip()
            assert value, f"empty {attr} on <{element.tag}>"
            assert not value.startswith("//"), f"protocol-relative {attr}={value!r}"
            assert not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", value), f"{attr}={value!r}"
            assert "\\" not in value


@pytest.mark.parametrize("name", PAGES)
def test_static_references_exist(name: str) -> None:
    """Each page loads the shared stylesheet and script, and every /static/ file it names exists."""
    page = parse(name)
    scripts = [e.attrs.get("src") for e in page.elements if e.tag == "script"]
    sheets = [
        e.attrs.get("href")
        for e in page.elements
        if e.tag == "link" and e.attrs.get("rel") == "stylesheet"
    ]
    assert scripts == ["/static/portal.js"]
    assert sheets == ["/static/portal.css"]
    for element in page.elements:
        for attr in ("src", "href"):
            value = element.attrs.get(attr, "")
            if value.startswith("/static/"):
                assert (STATIC / value.removeprefix("/static/")).is_file(), value


@pytest.mark.parametrize("name", PAGES)
def test_every_input_has_a_label(name: str) -> None:
    """Every visible input, select and textarea has a <label for> or sits inside a <label>."""
    page = parse(name)
    labels = labelled_ids(page)
    for element in page.elements:
        if element.tag not in {"input", "select", "textarea"}:
            continue
        if element.attrs.get("type", "text") in UNLABELLED_TYPES or "hidden" in element.attrs:
            continue
        element_id = element.attrs.get("id", "")
        assert element_id in labels or "label" in element.ancestors, element.attrs


@pytest.mark.parametrize("name", PAGES)
def test_ids_are_unique_and_buttons_typed(name: str) -> None:
    """Ids are unique in a page, buttons say their type, and forms post (never GET a password)."""
    page = parse(name)
    ids = page.ids()
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    for element in page.elements:
        if element.tag == "button":
            assert element.attrs.get("type") in {"button", "submit"}, element.attrs
        if element.tag == "form":
            assert element.attrs.get("method") == "post", element.attrs


@pytest.mark.parametrize("name", PAGES)
def test_errors_are_announced(name: str) -> None:
    """Every page has an inline error region with role=alert and an aria-live politeness."""
    page = parse(name)
    alerts = [e for e in page.elements if e.attrs.get("role") == "alert"]
    assert alerts
    assert all(e.attrs.get("aria-live") in {"polite", "assertive"} for e in alerts)


REQUIRED: dict[str, dict[str, dict[str, str]]] = {
    "index.html": {
        # "webauthn" last: the browser offers saved passkeys in the field (conditional mediation)
        "username": {"autocomplete": "username webauthn"},
        "passkey-sign-in": {"type": "button"},
        "password": {"autocomplete": "current-password", "type": "password"},
        "remember-me": {"type": "checkbox"},
        "sign-in": {"type": "submit"},
        "sign-out": {"type": "button"},
        "forgot-password": {"href": "/reset-password"},
        "target-host": {},
        "display-name": {},
    },
    "2fa.html": {
        "code": {
            "autocomplete": "one-time-code",
            "inputmode": "numeric",
            "pattern": "[0-9]*",
            "maxlength": "8",
            "autofocus": "",
        },
        "verify": {"type": "submit"},
        "webauthn-verify": {"type": "button"},
        "use-totp": {"type": "button"},
        "use-webauthn": {"type": "button"},
        "webauthn-sign-out": {"type": "button"},
        "done-lead": {},
    },
    "settings.html": {
        "totp-start": {"type": "button"},
        "totp-remove": {"type": "button"},
        "totp-qr": {},
        "totp-code": {"autocomplete": "one-time-code", "inputmode": "numeric"},
        "otc": {"autocomplete": "one-time-code"},
        "old-password": {"autocomplete": "current-password", "type": "password"},
        "new-password": {"autocomplete": "new-password", "type": "password"},
        "confirm-password": {"autocomplete": "new-password", "type": "password"},
        "change-password": {"type": "submit"},
        "sign-out": {"type": "button"},
        "webauthn-add": {"type": "button"},
        "webauthn-description": {"autocomplete": "off", "type": "text", "maxlength": "64"},
        "webauthn-register": {"type": "submit"},
        "webauthn-add-cancel": {"type": "button"},
        "webauthn-list": {},
        "method-webauthn": {"type": "radio", "name": "method", "value": "webauthn"},
        "method-totp": {"type": "radio", "name": "method", "value": "totp"},
        "sessions-list": {},
        "sessions-revoke-others": {"type": "button"},
        "token-create": {"type": "button"},
        "token-name": {"autocomplete": "off", "type": "text", "maxlength": "100"},
        "token-expires": {},
        "token-domains": {"autocomplete": "off", "type": "text"},
        "token-submit": {"type": "submit"},
        "token-cancel": {"type": "button"},
        "token-value": {"aria-labelledby": "token-value-label"},
        "token-copy": {"type": "button"},
        "token-done": {"type": "button"},
    },
    "reset-password.html": {
        "username": {"autocomplete": "username"},
        "reset-start": {"type": "submit"},
    },
    "reset-password-step2.html": {
        "new-password": {"autocomplete": "new-password", "type": "password"},
        "confirm-password": {"autocomplete": "new-password", "type": "password"},
        "reset-password": {"type": "submit"},
    },
}


@pytest.mark.parametrize("name", PAGES)
def test_required_ids_and_autocomplete(name: str) -> None:
    """The ids and autocomplete values that SPEC §3.2 and the brief ask for are present."""
    page = parse(name)
    for element_id, attrs in REQUIRED[name].items():
        element = page.by_id(element_id)
        for attr, value in attrs.items():
            assert element.attrs.get(attr) == value, (element_id, attr, element.attrs)


def test_viewport_and_color_scheme_declared() -> None:
    """Each page declares a responsive viewport and that it supports light and dark schemes."""
    for name in PAGES:
        metas = {e.attrs.get("name"): e.attrs.get("content") for e in parse(name).elements}
        assert metas.get("viewport") == "width=device-width, initial-scale=1", name
        assert metas.get("color-scheme") == "light dark", name
    css = CSS.read_text(encoding="utf-8")
    assert "@media (prefers-color-scheme: dark)" in css
    assert ":focus-visible" in css


def js_source() -> str:
    return JS.read_text(encoding="utf-8")


def test_script_avoids_html_sinks_and_eval() -> None:
    """portal.js never uses HTML sinks, eval, document.write, new Function or inline styles."""
    source = js_source()
    for banned in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "javascript:",
        'setAttribute("style"',
        ".style.",
        "cssText",
    ):
        assert banned not in source, banned
    assert not re.search(r"setTimeout\(\s*[\"'`]", source), "setTimeout with a string"


def test_script_handles_every_page_and_its_ids_exist() -> None:
    """portal.js handles every data-page, and every id it looks up exists in some page."""
    source = js_source()
    for _, data_page in ROUTES.values():
        assert re.search(rf"[\"']?{re.escape(data_page)}[\"']?\s*:\s*page", source), data_page
    known: set[str] = set()
    for name in PAGES:
        known.update(parse(name).ids())
    looked_up = set(re.findall(r"\$\(\"([^\"]+)\"\)", source))
    assert looked_up
    assert looked_up - known == set()


def test_script_calls_only_the_portal_api_with_json() -> None:
    """Requests go to same-origin /api/ paths, with JSON bodies and same-origin credentials."""
    source = js_source()
    assert source.count("fetch(") == 1, "one fetch wrapper"
    assert 'credentials: "same-origin"' in source
    assert '"Content-Type"] = "application/json"' in source
    assert "JSON.stringify" in source
    paths = set(re.findall(r"api\(\s*\"[A-Z]+\",\s*\"([^\"]+)\"", source))
    assert paths >= {
        "/api/state",
        "/api/configuration",
        "/api/firstfactor",
        "/api/secondfactor/totp",
        "/api/logout",
        "/api/user/info",
        "/api/user/session/elevation",
        "/api/secondfactor/totp/register",
        "/api/change-password",
        "/api/reset-password/identity/start",
        "/api/reset-password/identity/finish",
        "/api/reset-password",
        "/api/firstfactor/passkey",
        "/api/secondfactor/webauthn",
        "/api/secondfactor/webauthn/credentials",
        "/api/secondfactor/webauthn/credential/register",
        "/api/user/info/2fa_method",
        "/api/user/sessions",
        "/api/user/tokens",
    }
    assert all(p.startswith("/api/") for p in paths)


def test_assets_have_no_external_references() -> None:
    """CSS and JS reference nothing outside the origin: no remote URL, @import or web font."""
    css = CSS.read_text(encoding="utf-8")
    assert "@import" not in css
    assert "@font-face" not in css
    assert "url(" not in css
    for path in (CSS, JS):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), path.name
    for svg in STATIC.glob("*.svg"):
        text = svg.read_text(encoding="utf-8")
        assert "<script" not in text
        assert not re.search(r"(?:href|src)\s*=", text), svg.name


def hex_colour(value: str) -> tuple[float, float, float]:
    value = value.lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    return (int(value[0:2], 16) / 255, int(value[2:4], 16) / 255, int(value[4:6], 16) / 255)


def luminance(colour: tuple[float, float, float]) -> float:
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(fg: str, bg: str) -> float:
    a, b = luminance(hex_colour(fg)), luminance(hex_colour(bg))
    return (max(a, b) + 0.05) / (min(a, b) + 0.05)


def css_variables() -> dict[str, dict[str, str]]:
    css = CSS.read_text(encoding="utf-8")
    light_part, dark_part = css.split("@media (prefers-color-scheme: dark)", 1)
    pattern = re.compile(r"(--[a-z-]+):\s*(#[0-9a-fA-F]{3,6})\s*;")
    light = dict(pattern.findall(light_part))
    dark = {**light, **dict(pattern.findall(dark_part.split("}", 2)[0] + "}"))}
    return {"light": light, "dark": dark}


TEXT_PAIRS = [
    ("--text", "--card"),
    ("--text", "--bg"),
    ("--muted", "--card"),
    ("--muted", "--secondary-bg"),
    ("--text", "--secondary-bg"),
    ("--text", "--input-bg"),
    ("--link", "--card"),
    ("--primary-text", "--primary"),
    ("--primary-text", "--primary-hover"),
    ("--error-text", "--error-bg"),
    ("--ok-text", "--ok-bg"),
]
UI_PAIRS = [("--focus", "--card"), ("--input-border", "--input-bg"), ("--input-border", "--card")]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_colour_contrast(scheme: str) -> None:
    """Text colours reach 4.5:1 and focus rings and field borders 3:1, in light and dark schemes."""
    colours = css_variables()[scheme]
    for fg, bg in TEXT_PAIRS:
        assert contrast(colours[fg], colours[bg]) >= 4.5, (scheme, fg, bg)
    for fg, bg in UI_PAIRS:
        assert contrast(colours[fg], colours[bg]) >= 3.0, (scheme, fg, bg)
    assert contrast("#ffffff", colours["--danger"]) >= 4.5, (scheme, "danger button")


def test_readme_maps_every_route() -> None:
    """portal_assets/README.md names every route and the file that serves it."""
    readme = (ASSETS / "README.md").read_text(encoding="utf-8")
    for route, (file, _) in ROUTES.items():
        assert f"`{route}`" in readme
        assert f"`{file}`" in readme


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_script_is_valid_javascript() -> None:
    """node --check accepts portal.js (a syntax error would leave every page stuck)."""
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run([node, "--check", str(JS)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_script_names_the_target_only_from_the_server() -> None:
    """The site the page names is the server's checked ``target_host``, never the raw ``rd``
    (a phishing link ``/?rd=https://evil-phish.com/``); the browser test shows it for real."""
    source = js_source()
    assert "state.target_host" in source
    assert not re.search(r"hostOf\(\s*query\.get\(", source)
    assert not re.search(r"textContent\s*=\s*[^;]*\brd\b", source)


# ---------------------------------------------------------------- passkeys (SPEC §7.1)

#: page -> (live region id, its role) that announces the passkey parts' results
PASSKEY_REGIONS = {
    "index.html": [("login-error", "alert"), ("login-status", "status")],
    "2fa.html": [("webauthn-error", "alert"), ("webauthn-status", "status")],
    "settings.html": [("webauthn-error", "alert"), ("webauthn-status", "status")],
}


@pytest.mark.parametrize("name", sorted(PASSKEY_REGIONS))
def test_passkey_results_are_announced(name: str) -> None:
    """The passkey parts announce errors (cancelled, timed out, refused) in an alert region and
    successes in a polite status region, next to the buttons that start them."""
    page = parse(name)
    for element_id, role in PASSKEY_REGIONS[name]:
        element = page.by_id(element_id)
        assert element.attrs.get("role") == role, element_id
        expected = "assertive" if role == "alert" else "polite"
        assert element.attrs.get("aria-live") == expected, element_id


def test_passkey_parts_start_hidden() -> None:
    """What needs the server's word (passkey_login, available_methods, has_webauthn) is hidden
    until portal.js has it: a server without passkeys shows none of it."""
    hidden = {
        "index.html": ["passkey-block"],
        "2fa.html": ["view-webauthn", "use-webauthn-line", "use-totp-line"],
        "settings.html": ["webauthn-section", "webauthn-add-form", "method-choice"],
    }
    for name, ids in hidden.items():
        page = parse(name)
        for element_id in ids:
            assert "hidden" in page.by_id(element_id).attrs, (name, element_id)
    # the second-factor button starts disabled, like the other submit buttons
    assert "disabled" in parse("2fa.html").by_id("webauthn-verify").attrs


def test_passkey_views_follow_the_view_convention() -> None:
    """The passkey view of /2fa is a ``main > section#view-…`` like the others (showView switches
    it), with its own heading to focus and its own sign-out."""
    page = parse("2fa.html")
    view = page.by_id("view-webauthn")
    assert view.tag == "section"
    assert view.ancestors[-1] == "main"
    assert view.attrs.get("aria-labelledby") == "webauthn-title"
    assert page.by_id("webauthn-title").attrs.get("tabindex") == "-1"


def test_settings_passkey_form_is_labelled_and_posts() -> None:
    """The name field of "Add a passkey" has a label and a hint; the method choice is a
    fieldset with a legend (keyboard users move between the radios with the arrows)."""
    page = parse("settings.html")
    assert "webauthn-description" in labelled_ids(page)
    assert page.by_id("webauthn-description").attrs.get("aria-describedby") == (
        "webauthn-description-hint"
    )
    assert page.by_id("webauthn-add-form").attrs.get("method") == "post"
    choice = page.by_id("method-choice")
    assert choice.tag == "fieldset"
    legends = [e for e in page.elements if e.tag == "legend" and "fieldset" in e.ancestors]
    assert legends


def test_script_uses_the_webauthn_json_forms() -> None:
    """portal.js uses the browser's JSON helpers where they exist (with a base64url fallback),
    conditional mediation only after asking whether it is available, and names every
    DOMException a ceremony ends with."""
    source = js_source()
    for needed in (
        "parseRequestOptionsFromJSON",
        "parseCreationOptionsFromJSON",
        "toJSON",
        "isConditionalMediationAvailable",
        'mediation: "conditional"',
        "AbortController",
        "navigator.credentials.create",
        "navigator.credentials.get",
    ):
        assert needed in source, needed
    for name in ("NotAllowedError", "AbortError", "InvalidStateError", "SecurityError"):
        assert f'"{name}"' in source, name
    # the credential id goes into a path (PUT/DELETE …/credential/<id>): always encoded
    assert 'const keyPath = "/api/secondfactor/webauthn/credential/";' in source
    assert re.search(r"keyPath \+ encodeURIComponent\(id\)", source)
    # the passkey list is built with elements and textContent, never markup
    assert "createElement" in source


def _node_helpers(body: str) -> str:
    """Run ``body`` in node with portal.js's base64url helpers defined; its stdout."""
    source = js_source()
    helpers = [
        re.search(rf"  function {name}\(.*?\n  }}\n", source, re.S) for name in BASE64_HELPERS
    ]
    assert all(helpers)
    node = shutil.which("node")
    assert node is not None
    script = "const window = globalThis;\n" + "".join(h.group(0) for h in helpers if h) + body
    result = subprocess.run(
        [node, "-e", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


BASE64_HELPERS = ("fromBase64url", "toBase64url")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_base64url_fallback_round_trips() -> None:
    """The fallback for browsers without parse…FromJSON/toJSON: base64url without padding,
    ``-`` and ``_`` for ``+`` and ``/``, every length and every byte value round-trips."""
    out = _node_helpers(
        """
const seen = [];
for (let n = 0; n < 70; n += 1) {
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i += 1) bytes[i] = (i * 37 + n * 11 + 250) % 256;
  const text = toBase64url(bytes.buffer);
  if (/[+/=]/.test(text)) throw new Error("not base64url: " + text);
  const back = new Uint8Array(fromBase64url(text));
  if (back.length !== n || back.some((b, i) => b !== bytes[i])) throw new Error("length " + n);
  const ref = Buffer.from(bytes).toString("base64url");
  if (ref !== text) throw new Error(ref + " != " + text);
}
console.log(toBase64url(new Uint8Array([251, 255, 191]).buffer));
"""
    )
    assert out.strip() == "-_-_"


# ---------------------------------------------------------- sessions and tokens (SPEC §7.6)

SESSION_TOKEN_REGIONS = [
    ("sessions-error", "alert"),
    ("sessions-status", "status"),
    ("tokens-error", "alert"),
    ("tokens-status", "status"),
]


@pytest.mark.parametrize(("element_id", "role"), SESSION_TOKEN_REGIONS)
def test_sessions_and_tokens_results_are_announced(element_id: str, role: str) -> None:
    """Each of the two sections announces failures in an alert region and results (signed
    out, created, revoked, copied) in a polite status region of its own."""
    element = parse("settings.html").by_id(element_id)
    assert element.attrs.get("role") == role
    assert element.attrs.get("aria-live") == ("assertive" if role == "alert" else "polite")
    assert element.ancestors[-1] == "section"


def test_sessions_and_tokens_sections_are_labelled_lists() -> None:
    """Both sections are headed regions with a labelled list (built by portal.js); the token
    form is labelled field by field (name and sites with hints), and posts."""
    page = parse("settings.html")
    for section, title, listing in (
        ("sessions-section", "sessions-title", "sessions-list"),
        ("tokens-section", "tokens-title", "tokens-list"),
    ):
        assert page.by_id(section).tag == "section"
        assert page.by_id(section).attrs.get("aria-labelledby") == title
        assert page.by_id(title).tag == "h2"
        assert page.by_id(listing).tag == "ul"
        assert page.by_id(listing).attrs.get("aria-label")
    assert page.by_id("sessions-title").text == "Where you are signed in"
    assert page.by_id("tokens-title").text == "Personal access tokens"
    labels = labelled_ids(page)
    assert {"token-name", "token-expires", "token-domains"} <= labels
    assert page.by_id("token-name").attrs.get("aria-describedby") == "token-name-hint"
    assert page.by_id("token-domains").attrs.get("aria-describedby") == "token-domains-hint"
    assert page.by_id("token-expires").tag == "select"
    assert page.by_id("token-form").attrs.get("method") == "post"
    # the token is shown as text in a labelled code element, never in a form field
    assert page.by_id("token-value").tag == "code"
    assert page.by_id("token-value-label").text == "Token"


def test_sessions_and_tokens_parts_start_hidden() -> None:
    """What needs the server's answer starts hidden: the new token's panel (empty), the form,
    and "Sign out everywhere else" (shown only when there is another session)."""
    page = parse("settings.html")
    for element_id in ("token-created", "token-form", "sessions-actions", "tokens-empty"):
        assert "hidden" in page.by_id(element_id).attrs, element_id
    assert page.by_id("token-value").text == ""
    assert page.by_id("token-created").attrs.get("aria-labelledby") == "token-created-title"
    assert page.by_id("token-created-title").attrs.get("tabindex") == "-1"


def test_the_new_token_says_it_is_shown_once() -> None:
    """The panel that shows a new token says plainly that it will not be shown again, and the
    script says it too when it announces the token."""
    page = parse("settings.html")
    once = page.by_id("token-once")
    strong = [e for e in page.elements if e.tag == "strong" and "p" in e.ancestors]
    assert "alert" in once.attrs.get("class", "")
    assert any("you will not see it again" in e.text for e in strong)
    assert "Copy it now: you will not see it again." in js_source()


def test_token_order_follows_the_form() -> None:
    """Keyboard order is the page order: the form's fields come name, expiry, sites, then its
    buttons (Create first), with no positive tabindex anywhere."""
    page = parse("settings.html")
    ids = page.ids()
    order = ["token-name", "token-expires", "token-domains", "token-submit", "token-cancel"]
    assert [ids.index(i) for i in order] == sorted(ids.index(i) for i in order)
    for element in page.elements:
        assert int(element.attrs.get("tabindex", "0") or "0") <= 0, element.attrs


def test_script_shows_sessions_and_tokens_as_text() -> None:
    """Session and token fields (a User-Agent is whatever a client sent, a token name whatever
    its owner typed) go through textContent/createTextNode; handles and ids go into paths
    encoded; times are <time datetime> with the browser's locale text."""
    source = js_source()
    assert 'const sessionPath = "/api/user/sessions/";' in source
    assert 'const tokenPath = "/api/user/tokens/";' in source
    assert "sessionPath + encodeURIComponent(handle)" in source
    assert "tokenPath + encodeURIComponent(id)" in source
    assert 'element("p", "credential-meta small muted session-agent", sess.user_agent)' in source
    assert 'element("time", "", text)' in source
    assert "time.dateTime = String(value)" in source
    assert "toLocaleString(undefined" in source
    # the token lives in the page's memory only until dismissed, and never in storage
    for banned in ("localStorage", "sessionStorage", "document.cookie"):
        assert banned not in source, banned


def _agent_summary_script(body: str) -> str:
    """Run ``body`` in node with portal.js's User-Agent summary (and its tables) defined."""
    source = js_source()
    parts = [
        re.search(r"    const BROWSERS = \[.*?\n    \];\n", source, re.S),
        re.search(r"    const SYSTEMS = \[.*?\n    \];\n", source, re.S),
        re.search(r"    function agentSummary\(.*?\n    }\n", source, re.S),
    ]
    assert all(parts)
    node = shutil.which("node")
    assert node is not None
    script = "".join(p.group(0) for p in parts if p) + body
    result = subprocess.run(
        [node, "-e", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


AGENTS = {
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/126.0.0.0 Safari/537.36": "Chrome on Linux",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36": "Chrome on Android",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0": (
        "Firefox on Windows"
    ),
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15": "Safari on macOS",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.5 Mobile/15E148 Safari/604.1": "Safari on iPhone",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0": "Edge on Windows",
    "curl/8.5.0": "curl",
    "": "Unknown browser",
    "<img src=x onerror=alert(1)>": "Unknown browser",
}


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_user_agent_summaries() -> None:
    """The session list names browsers for people ("Chrome on Android"); anything it does not
    know, markup included, is "Unknown browser" (the raw text is shown beside it, as text)."""
    import json

    out = _agent_summary_script(
        f"const agents = {json.dumps(list(AGENTS))};\n"
        "console.log(JSON.stringify(agents.map(agentSummary).concat([agentSummary(null)])));\n"
    )
    assert json.loads(out) == [*AGENTS.values(), "Unknown browser"]
