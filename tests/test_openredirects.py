"""oauth2-proxy's open-redirect corpus: every payload must be refused (security.md §2.A)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest

from server.core.urls import safe_redirect

#: A copy kept in the repository (provenance and licence in ``data/openredirects.README.md``),
#: so a bare clone runs every test; a missing file fails collection.
CORPUS = Path(__file__).resolve().parent / "data" / "openredirects.txt"
#: The protected cookie domain (upstream allows ``www.whitelisteddomain.tld``; ours is broader).
DOMAINS = ["whitelisteddomain.tld"]


def _load() -> list[str]:
    text = CORPUS.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


LINES = _load()
IDS = [f"line{number:03d}" for number in range(1, len(LINES) + 1)]


def test_corpus_is_complete() -> None:
    """The corpus holds all 559 payloads, the first being the empty redirect."""
    assert len(LINES) == 559
    assert LINES[0] == ""


@pytest.mark.parametrize("line", LINES, ids=IDS)
def test_unescaped_payload_is_refused(line: str) -> None:
    """Each payload, URL-unescaped once as upstream does, is refused."""
    assert safe_redirect(unquote(line), DOMAINS) is None


@pytest.mark.parametrize("line", LINES, ids=IDS)
def test_raw_payload_is_refused(line: str) -> None:
    """Each payload, taken as written, is refused too."""
    assert safe_redirect(line, DOMAINS) is None
