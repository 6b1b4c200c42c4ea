"""The consent page (/consent, SPEC §7.3) under the portal's rules: served with the strict
CSP, no inline script or style, every id consent.js looks up exists, text set only with
textContent, and only a fixed table of errors shown (nothing from the URL)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.apphelpers import Harness
from tests.conftest import Clock
from tests.oidc_helpers import build_oidc

ASSETS = Path(__file__).resolve().parent.parent / "portal_assets"
PAGE = ASSETS / "consent.html"
JS = ASSETS / "static" / "consent.js"


@pytest.fixture
def h(tmp_path: Path, clock: Clock) -> Harness:
    return build_oidc(tmp_path, clock)


def test_page_is_served_with_the_portal_csp(h: Harness) -> None:
    resp = h.request("/consent?error=invalid_client")
    assert resp.status_int == 200
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert b"/static/consent.js" in resp.body
    assert h.request("/static/consent.js").status_int == 200


def test_no_inline_script_or_style() -> None:
    text = PAGE.read_text(encoding="utf-8")
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text)
    assert not re.search(r"\son[a-z]+=", text)
    assert "style=" not in text
    assert "<style" not in text


def test_script_ids_exist_and_no_html_sinks() -> None:
    source = JS.read_text(encoding="utf-8")
    ids = set(re.findall(r'\bid="([^"]+)"', PAGE.read_text(encoding="utf-8")))
    looked_up = set(re.findall(r'\$\("([^"]+)"\)', source))
    looked_up |= set(re.findall(r'"(view-[a-z]+)"', source))
    assert looked_up
    assert looked_up <= ids
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert banned not in source
    # errors shown come from the fixed table, never from the query string
    assert 'query.get("error_description")' not in source


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_script_is_valid_javascript() -> None:
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run([node, "--check", str(JS)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
