"""Portal branding (SPEC §7.4 ``[portal]``): the pages rendered with the title (escaped), the
logo (an ``<img>`` served same-origin with its own CSP, never inlined), the custom stylesheet
(after the portal's own) and the theme (``data-theme``, no script); the defaults change no byte.
"""

from __future__ import annotations

import re
import shutil
import typing as t
from html.parser import HTMLParser
from pathlib import Path

import pytest

from server.core.config import PortalConfig
from server.web.app import COMMON_HEADERS
from server.web.app import PAGE_CSP
from server.web.assets import BRAND_PREFIX
from server.web.assets import LOGO_CSP
from server.web.assets import PAGES
from server.web.assets import Asset
from server.web.assets import BrandingError
from server.web.assets import brand
from server.web.assets import load_assets
from tests.apphelpers import APP_CONFIG
from tests.apphelpers import Harness
from tests.apphelpers import build
from tests.conftest import ROOT
from tests.test_portal_assets import contrast

SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 4 4">'
    b'<rect width="4" height="4" fill="#c00"/>'
    b"<script>document.documentElement.setAttribute('data-pwned', '1')</script></svg>\n"
)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(17)
CSS = "body { letter-spacing: 0.01em; }\n"
HOSTILE = '<script>alert("t")</script> & Co\'s'
CSS_FILE = ROOT / "portal_assets" / "static" / "portal.css"


class _Text(HTMLParser):
    """The text of ``<title>`` and of the brand line's ``<span>``, and every ``<img>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.where: list[str] = []
        self.title = ""
        self.brand = ""
        self.images: list[dict[str, str | None]] = []
        self.sheets: list[str | None] = []
        self.html: dict[str, str | None] = {}
        self.scheme: str | None = None
        self.in_brand = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "html":
            self.html = found
        if tag == "div" and found.get("class") == "brand":
            self.in_brand = True
        if tag == "img":
            self.images.append(found)
        elif tag == "link" and found.get("rel") == "stylesheet":
            self.sheets.append(found.get("href"))
        elif tag == "meta" and found.get("name") == "color-scheme":
            self.scheme = found.get("content")
        else:
            self.where.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "div":
            self.in_brand = False
        if self.where and self.where[-1] == tag:
            self.where.pop()

    def handle_data(self, data: str) -> None:
        if self.where and self.where[-1] == "title":
            self.title += data
        elif self.in_brand and self.where and self.where[-1] == "span":
            self.brand += data


def _parse(body: bytes) -> _Text:
    parser = _Text()
    parser.feed(body.decode("utf-8"))
    return parser


def test_defaults_leave_every_file_as_shipped() -> None:
    """With no branding the pages are the files, byte for byte, and no brand route exists."""
    raw = load_assets()
    served = brand(raw, PortalConfig())
    assert served == raw
    for route, name in PAGES.items():
        assert served[route].body == (ROOT / "portal_assets" / name).read_bytes()
    assert not [path for path in served if path.startswith(BRAND_PREFIX)]


def test_missing_pages_are_left_missing() -> None:
    """Rendering adds no page the set lacks (an app built with no assets stays empty)."""
    assert brand({}, PortalConfig(title="x")) == {}


def test_title_is_escaped_in_the_tab_and_the_heading() -> None:
    """A title holding markup is shown as text: escaped in ``<title>`` and the brand line."""
    served = brand(load_assets(), PortalConfig(title=HOSTILE))
    for route, name in PAGES.items():
        body = served[route].body
        assert b"<script>alert" not in body, name
        page = _parse(body)
        assert page.title.endswith(f" · {HOSTILE}"), (name, page.title)
        assert page.brand == HOSTILE, name
        assert b"&lt;script&gt;alert(&quot;t&quot;)&lt;/script&gt; &amp; Co&#x27;s" in body


def test_logo_is_an_image_never_inlined() -> None:
    """The logo replaces the built-in SVG with an ``<img>`` of its same-origin URL (versioned
    by content); its bytes never enter a page."""
    portal = PortalConfig(logo_file=Path("/x/logo.svg"), logo_type="image/svg+xml", logo=SVG)
    served = brand(load_assets(), portal)
    logo = served["/static/brand/logo.svg"]
    assert (logo.body, logo.content_type, logo.csp) == (SVG, "image/svg+xml", LOGO_CSP)
    for route, name in PAGES.items():
        body = served[route].body
        assert b"<script>document" not in body, name
        assert b'<svg class="logo"' not in body, name
        assert _parse(body).images[:1] == [
            {
                "class": "logo logo-custom",
                "src": f"/static/brand/logo.svg?v={logo.etag}",
                "alt": "",
            }
        ]
    assert "/static/brand/logo.png" not in served


def test_png_logo_is_served_as_png() -> None:
    portal = PortalConfig(logo_file=Path("/x/l"), logo_type="image/png", logo=PNG)
    served = brand(load_assets(), portal)
    assert served["/static/brand/logo.png"].content_type == "image/png"
    assert "/static/brand/logo.svg" not in served
    assert b'src="/static/brand/logo.png?v=' in served["/"].body


def test_custom_css_comes_after_the_portal_css() -> None:
    """The custom stylesheet is a second same-origin ``<link>``, after portal.css."""
    served = brand(load_assets(), PortalConfig(custom_css_file=Path("/x.css"), custom_css=CSS))
    sheet = served["/static/brand/custom.css"]
    assert (sheet.body, sheet.content_type, sheet.csp) == (
        CSS.encode(),
        "text/css; charset=utf-8",
        None,
    )
    for route in PAGES:
        sheets = _parse(served[route].body).sheets
        assert sheets == ["/static/portal.css", f"/static/brand/custom.css?v={sheet.etag}"]


@pytest.mark.parametrize(
    ("theme", "attribute", "scheme"),
    [("auto", None, "light dark"), ("light", "light", "light"), ("dark", "dark", "dark")],
)
def test_theme_is_an_attribute_rendered_by_the_server(
    theme: str, attribute: str | None, scheme: str
) -> None:
    """``light``/``dark`` set ``<html data-theme>`` and the page's colour scheme; ``auto``
    leaves the page to ``prefers-color-scheme``. No script is involved."""
    served = brand(load_assets(), PortalConfig(theme=theme))
    for route in PAGES:
        page = _parse(served[route].body)
        assert page.html.get("data-theme") == attribute
        assert page.html.get("lang") == "en"
        assert page.scheme == scheme


def _variables(block: str) -> dict[str, str]:
    return dict(re.findall(r"(--[a-z-]+):\s*([^;]+);", block))


def _block(css: str, selector: str) -> str:
    start = css.index(selector + " {")
    return css[start : css.index("}", start)]


def test_forced_dark_theme_has_the_dark_colours() -> None:
    """``[data-theme="dark"]`` holds exactly the colours of the ``prefers-color-scheme: dark``
    block (which a forced light theme switches off), and they keep WCAG AA contrast."""
    css = CSS_FILE.read_text(encoding="utf-8")
    media = _block(css, '@media (prefers-color-scheme: dark) {\n  :root:not([data-theme="light"])')
    forced = _block(css, ':root[data-theme="dark"]')
    assert _variables(media) == _variables(forced)
    assert len(_variables(forced)) >= 20
    assert "color-scheme: dark" in forced
    assert "color-scheme: light" in _block(css, ':root[data-theme="light"]')
    dark = _variables(forced)
    assert contrast(dark["--text"], dark["--card"]) >= 4.5
    assert contrast(dark["--muted"], dark["--card"]) >= 4.5
    assert contrast(dark["--link"], dark["--card"]) >= 4.5


def test_js_keeps_the_title_when_it_renames_the_tab() -> None:
    """The one place portal.js sets ``document.title`` takes the name from the brand line."""
    js = (ROOT / "portal_assets" / "static" / "portal.js").read_text(encoding="utf-8")
    assert "· authctl" not in js
    assert 'document.querySelector(".brand span")' in js


def test_a_page_without_its_places_refuses(tmp_path: Path) -> None:
    """A damaged page (no brand line) stops the rendering, naming the page and the fix."""
    raw = dict(load_assets())
    page = raw["/2fa"].body.replace(b'<div class="brand">', b"<div>")
    raw["/2fa"] = Asset.of(page, raw["/2fa"].content_type)
    with pytest.raises(BrandingError, match=r"2fa\.html holds .*brand.* 0 times.*fix: reinstall"):
        brand(raw, PortalConfig(title="x"))


def test_a_shipped_static_brand_folder_is_never_served(tmp_path: Path) -> None:
    """``/static/brand/`` belongs to the config: a file there in the portal folder is ignored."""
    copy = tmp_path / "portal_assets"
    shutil.copytree(ROOT / "portal_assets", copy)
    (copy / "static" / "brand").mkdir()
    (copy / "static" / "brand" / "logo.svg").write_bytes(SVG)
    loaded = load_assets(copy)
    assert "/static/brand/logo.svg" not in loaded
    assert "/static/brand/logo.svg" not in brand(loaded, PortalConfig())


# ---------------------------------------------------------------- through the app


@pytest.fixture
def branded(tmp_path: Path, clock: t.Any) -> Harness:
    (tmp_path / "brand").mkdir()
    (tmp_path / "brand" / "logo.svg").write_bytes(SVG)
    (tmp_path / "brand" / "custom.css").write_text(CSS, encoding="utf-8")
    text = APP_CONFIG + (
        '\n[portal]\ntitle = "<script>alert(\\"t\\")</script> & Co\'s"\n'
        'logo_file = "brand/logo.svg"\ncustom_css_file = "brand/custom.css"\ntheme = "dark"\n'
    )
    return build(tmp_path, clock, text)


def _headers(resp: t.Any) -> dict[str, str]:
    return dict(resp.headerlist)


def test_served_logo_has_its_type_nosniff_and_a_scriptless_csp(branded: Harness) -> None:
    """The SVG logo: its media type, nosniff, and a CSP forbidding any script or load."""
    resp = branded.request("/static/brand/logo.svg")
    headers = _headers(resp)
    assert resp.status_int == 200
    assert resp.body == SVG
    assert headers["Content-Type"] == "image/svg+xml"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == "default-src 'none'; style-src 'unsafe-inline'"
    assert [v for k, v in resp.headerlist if k == "Content-Security-Policy"] == [LOGO_CSP]
    for name, value in COMMON_HEADERS:
        assert headers[name] == value
    assert headers["Cache-Control"] == "public, max-age=300"
    again = branded.request("/static/brand/logo.svg", headers={"If-None-Match": resp.etag})
    assert again.status_int == 304
    assert _headers(again)["Content-Security-Policy"] == LOGO_CSP
    head = branded.request("/static/brand/logo.svg", method="HEAD")
    assert (head.status_int, head.body) == (200, b"")
    assert branded.request("/static/brand/logo.svg", method="POST").status_int == 405
    assert branded.request("/static/brand/logo.png").status_int == 404


def test_served_pages_keep_the_strict_csp(branded: Harness) -> None:
    """Branded pages are served under the unchanged page CSP (no ``unsafe-inline``), escape
    the title, link the logo and stylesheet by URL, and carry the theme."""
    resp = branded.request("/")
    headers = _headers(resp)
    assert headers["Content-Security-Policy"] == PAGE_CSP
    assert "unsafe-inline" not in PAGE_CSP
    assert b"<script>alert" not in resp.body
    page = _parse(resp.body)
    assert page.brand == '<script>alert("t")</script> & Co\'s'
    assert page.html.get("data-theme") == "dark"
    etag = branded.app.assets["/static/brand/logo.svg"].etag
    assert page.images[0]["src"] == f"/static/brand/logo.svg?v={etag}"
    css = branded.request("/static/brand/custom.css")
    assert css.body == CSS.encode()
    assert _headers(css)["Content-Type"] == "text/css; charset=utf-8"
    assert _headers(css)["Content-Security-Policy"] == PAGE_CSP
    assert _headers(css)["X-Content-Type-Options"] == "nosniff"


def test_rebrand_swaps_the_served_pages(branded: Harness) -> None:
    """A reload's new ``[portal]`` re-renders from the files as read; the defaults restore
    the shipped pages and drop the brand routes."""
    branded.app.rebrand(PortalConfig(title="Renamed"))
    assert _parse(branded.request("/settings").body).brand == "Renamed"
    assert branded.request("/static/brand/logo.svg").status_int == 404
    branded.app.rebrand(PortalConfig())
    assert branded.request("/").body == (ROOT / "portal_assets" / "index.html").read_bytes()
