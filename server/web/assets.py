"""The portal's static files, read once at start-up and served from memory.

Only files found under ``portal_assets/`` at start-up can be served: a request path is a
dictionary key, never joined onto the file system, so traversal tricks have nothing to reach.
Every page, and every ``/static/`` file a page links to, must be there: a missing one stops
start-up (one line naming the files and the fix) rather than answering 404 to users later.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path

from server.core.errors import AuthError

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
}

#: A page's links to its own static files (stylesheet, script, icon).
_STATIC_LINK = re.compile(r"""(?:src|href)=["'](/static/[^"'?#]+)""")

_FIX = "reinstall authctl, or restore the file from the repository's portal_assets/"


class MissingAssetError(AuthError):
    """A portal page or a static file a page links to is not in the assets folder."""


@dataclass(frozen=True, slots=True)
class Asset:
    """One file ready to send."""

    body: bytes
    content_type: str
    etag: str


def _content_type(name: str) -> str:
    guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if guessed.startswith("text/") or guessed in ("application/javascript", "image/svg+xml"):
        return f"{guessed}; charset=utf-8"
    return guessed


def _asset(path: Path) -> Asset:
    body = path.read_bytes()
    return Asset(body, _content_type(path.name), hashlib.sha256(body).hexdigest()[:16])


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
            if path.is_file() and not path.is_symlink():
                assets["/static/" + path.relative_to(static).as_posix()] = _asset(path)
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
