"""The public HTTPS port in the config's URLs: what to change when the proxy listens elsewhere.

``portal_url`` and ``default_redirect_url`` are where browsers are sent, so they must name the
port the proxy accepts TLS on (``authctl init --port`` writes it). When ``proxy-snippet
--listen`` names another port, its warning says which lines of which file to change, and to
what, instead of leaving the user to find them.
"""

from __future__ import annotations

import typing as t
from urllib.parse import urlsplit

if t.TYPE_CHECKING:
    from server.core.config import Config


def with_port(url: str, port: int) -> str:
    """``url`` with its port set to ``port`` (left out when 443); the rest unchanged."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return parts._replace(netloc=host if port == 443 else f"{host}:{port}").geturl()


def port_fix(config: Config, index: int, port: int) -> str:
    """How to move ``[[session.cookies]]`` entry ``index`` to the public ``port``.

    Each URL that names another port, as ``FILE:LINE: key = "new value"`` (the line found in
    the config text; left out when it cannot be), and ``authctl init --port`` for a new setup.
    """
    from server.core.tomlpos import locate

    try:
        text = config.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""
    cookie = config.session.cookies[index]
    changes: list[str] = []
    for key, url in (
        ("portal_url", cookie.portal_url),
        ("default_redirect_url", cookie.default_redirect_url),
    ):
        if url is None or (urlsplit(url).port or 443) == port:
            continue
        line = locate(text, f"session.cookies[{index}].{key}") if text else None
        where = f"{config.path}:{line}" if line is not None else f"{config.path}"
        changes.append(f'{where}: {key} = "{with_port(url, port)}"')
    return f"change {' and '.join(changes)} (a new setup: authctl init --port {port})"
