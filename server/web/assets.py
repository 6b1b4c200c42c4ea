"""The portal's static files, read once at start-up and served from memory.

Only files found under ``portal_assets/`` at start-up can be served: a request path is a
dictionary key, never joined onto the file system, so traversal tricks have nothing to reach.
Every page, and every ``/static/`` file a page links to, must be there: a missing one stops
start-up (one line naming the files and the fix) rather than answering 404 to users later.

:func:`brand` renders the pages with ``[portal]``'s title, logo, stylesheet and theme and adds
the branding's files under ``/static/brand/`` (from the bytes the config checked at load);
with the defaults the pages are the files as shipped, byte for byte.
"""

from __future__ import annotations

import hashlib
import html
import mimetypes
import re
import typing as t
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from server.core.errors import AuthError

if t.TYPE_CHECKING:
    from server.core.config import PortalConfig

_PACKAGE_DIR = Path(__file__).resolve().parent


def find_assets_dir(package_dir: Path = _PACKAGE_DIR) -> Path:
    """The portal's folder: inside this package when installed from the wheel (pyproject maps
    the repository's ``portal_assets/`` to ``server/web/portal_assets``), else the checkout's
    top-level ``portal_assets/`` (an editable install runs from the checkout)."""
    installed = package_dir / "portal_assets"
    if installed.is_dir():
        return installed
    return package_dir.parents[1] / "portal_assets"


ASSETS_DIR = find_assets_dir()

#: Portal routes (SPEC §3.2) and the page each one serves.
PAGES = {
    "/": "index.html",
    "/2fa": "2fa.html",
    "/settings": "settings.html",
    "/reset-password": "reset-password.html",
    "/reset-password/step2": "reset-password-step2.html",
    "/consent": "consent.html",
}

#: A page's links to its own static files (stylesheet, script, icon).
_STATIC_LINK = re.compile(r"""(?:src|href)=["'](/static/[^"'?#]+)""")

_FIX = "reinstall authctl, or restore the file from the repository's portal_assets/"


#: Where the branding's files are served: same origin, so the pages' strict CSP allows them.
BRAND_PREFIX = "/static/brand/"
LOGO_ROUTES = {"image/svg+xml": "/static/brand/logo.svg", "image/png": "/static/brand/logo.png"}
CUSTOM_CSS_ROUTE = "/static/brand/custom.css"
#: The logo's own CSP: an SVG opened by itself runs no script and loads nothing, though its
#: inline styles still apply (in the pages it is an ``<img>``, which never runs scripts).
LOGO_CSP = "default-src 'none'; style-src 'unsafe-inline'"


class MissingAssetError(AuthError):
    """A portal page or a static file a page links to is not in the assets folder."""


@dataclass(frozen=True, slots=True)
class Asset:
    """One file ready to send; ``csp`` replaces the pages' CSP for it (the logo's)."""

    body: bytes
    content_type: str
    etag: str
    csp: str | None = None

    @classmethod
    def of(cls, body: bytes, content_type: str, csp: str | None = None) -> Asset:
        return cls(body, content_type, hashlib.sha256(body).hexdigest()[:16], csp)


def _content_type(name: str) -> str:
    guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if guessed.startswith("text/") or guessed in ("application/javascript", "image/svg+xml"):
        return f"{guessed}; charset=utf-8"
    return guessed


def _asset(path: Path) -> Asset:
    return Asset.of(path.read_bytes(), _content_type(path.name))


def load_assets(root: Path = ASSETS_DIR) -> dict[str, Asset]:
    """Map URL paths (``/``, ``/2fa``, ``/static/portal.css``…) to their files.

    Raises :class:`MissingAssetError` when the folder, a page, or a static file a page links
    to is missing.
    """
    if not root.is_dir():
        raise MissingAssetError(f"the portal's folder {root} is missing (fix: {_FIX})")
    assets: dict[str, Asset] = {}
    missing = [str(root / name) for name in PAGES.values() if not (root / name).is_file()]
    for route, name in PAGES.items():
        if (root / name).is_file():
            assets[route] = _asset(root / name)
    static = root / "static"
    if static.is_dir():
        for path in sorted(static.rglob("*")):
            route = "/static/" + path.relative_to(static).as_posix()
            if path.is_file() and not path.is_symlink() and not route.startswith(BRAND_PREFIX):
                assets[route] = _asset(path)
    for route, name in PAGES.items():
        if route in assets:
            text = assets[route].body.decode("utf-8", "replace")
            missing += [
                f"{link} (linked from {name})"
                for link in dict.fromkeys(_STATIC_LINK.findall(text))
                if link not in assets
            ]
    if missing:
        raise MissingAssetError(
            f"the portal's folder {root} is incomplete, missing: {', '.join(missing)} (fix: {_FIX})"
        )
    return assets


#: What :func:`brand` changes in each page; each must occur exactly once (checked).
_TITLE = re.compile(r"<title>([^<]*) · authctl</title>")
_BRAND = re.compile(
    r'(<div class="brand">\s*)(<svg class="logo"[^>]*>.*?</svg>)(\s*<span>)authctl<'
)
_HTML_TAG = '<html lang="en">'
_SCHEME = '<meta name="color-scheme" content="light dark">'
_STYLESHEET = '<link rel="stylesheet" href="/static/portal.css">'


class BrandingError(AuthError):
    """A page lacks a place :func:`brand` fills in (a damaged install)."""


def brand(assets: Mapping[str, Asset], portal: PortalConfig) -> dict[str, Asset]:
    """The files to serve: ``assets`` (as :func:`load_assets` read them) with each page
    rendered for ``portal``, plus the logo and custom stylesheet it names.

    Raises :class:`BrandingError` when a page lacks one of the places it fills in.
    """
    served = {path: a for path, a in assets.items() if not path.startswith(BRAND_PREFIX)}
    logo: tuple[str, Asset] | None = None
    css: tuple[str, Asset] | None = None
    if portal.logo_type:
        asset = Asset.of(portal.logo, portal.logo_type, LOGO_CSP)
        logo = (LOGO_ROUTES[portal.logo_type], asset)
    if portal.custom_css:
        css = (CUSTOM_CSS_ROUTE, Asset.of(portal.custom_css.encode(), "text/css; charset=utf-8"))
    for route, name in PAGES.items():
        if route in served:
            page = served[route].body.decode("utf-8")
            body = render_page(name, page, portal, logo, css).encode("utf-8")
            served[route] = Asset.of(body, served[route].content_type)
    served.update(item for item in (logo, css) if item is not None)
    return served


def render_page(
    name: str,
    page: str,
    portal: PortalConfig,
    logo: tuple[str, Asset] | None,
    css: tuple[str, Asset] | None,
) -> str:
    """One page with the title (HTML-escaped), the logo as an ``<img>`` (never inlined), the
    custom stylesheet after the portal's own, and the theme as ``data-theme`` (no script)."""
    for found, what in (
        (len(_TITLE.findall(page)), "<title>… · authctl</title>"),
        (len(_BRAND.findall(page)), '<div class="brand"> with its logo and name'),
        (page.count(_HTML_TAG), _HTML_TAG),
        (page.count(_SCHEME), _SCHEME),
        (page.count(_STYLESHEET), _STYLESHEET),
    ):
        if found != 1:
            raise BrandingError(
                f"the portal page {name} holds {what} {found} times instead of once (fix: {_FIX})"
            )
    title = html.escape(portal.title, quote=True)
    page = _TITLE.sub(lambda m: f"<title>{m.group(1)} · {title}</title>", page)
    image = (
        f'<img class="logo logo-custom" src="{logo[0]}?v={logo[1].etag}" alt="">'
        if logo is not None
        else None
    )
    page = _BRAND.sub(
        lambda m: f"{m.group(1)}{image or m.group(2)}{m.group(3)}{title}<", page, count=1
    )
    if css is not None:
        link = f'<link rel="stylesheet" href="{css[0]}?v={css[1].etag}">'
        page = page.replace(_STYLESHEET, f"{_STYLESHEET}\n  {link}")
    if portal.theme != "auto":
        page = page.replace(_HTML_TAG, f'<html lang="en" data-theme="{portal.theme}">')
        page = page.replace(_SCHEME, f'<meta name="color-scheme" content="{portal.theme}">')
    return page
