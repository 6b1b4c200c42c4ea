"""The portal's static files, read once at start-up and served from memory.

Only files found under ``portal_assets/`` at start-up can be served: a request path is a
dictionary key, never joined onto the file system, so traversal tricks have nothing to reach.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parents[2] / "portal_assets"

#: Portal routes (SPEC §3.2) and the page each one serves.
PAGES = {
    "/": "index.html",
    "/2fa": "2fa.html",
    "/settings": "settings.html",
    "/reset-password": "reset-password.html",
    "/reset-password/step2": "reset-password-step2.html",
}


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


def load_assets(root: Path = ASSETS_DIR) -> dict[str, Asset]:
    """Map URL paths (``/``, ``/2fa``, ``/static/portal.css``…) to their files."""
    assets: dict[str, Asset] = {}

    def asset(path: Path) -> Asset:
        body = path.read_bytes()
        return Asset(body, _content_type(path.name), hashlib.sha256(body).hexdigest()[:16])

    for route, name in PAGES.items():
        page = root / name
        if page.is_file():
            assets[route] = asset(page)
    static = root / "static"
    if static.is_dir():
        for path in sorted(static.rglob("*")):
            if path.is_file() and not path.is_symlink():
                assets["/static/" + path.relative_to(static).as_posix()] = asset(path)
    return assets
