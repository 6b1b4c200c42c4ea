"""``session_ids``: which session-cookie values of a Cookie header are looked up."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from server.core.cookies import MAX_SESSION_IDS
from server.core.cookies import session_ids
from server.core.session_store import MemoryStore
from server.core.sessions import Session
from server.core.sessions import new_session_id
from tests.apphelpers import build
from tests.conftest import Clock


def test_at_most_a_few_values_are_tried() -> None:
    """180 copies of the cookie give MAX_SESSION_IDS look-ups, not 180 (4x CPU per verify)."""
    header = "; ".join(f"authctl_session={new_session_id()}" for _ in range(180))
    ids = session_ids(header, "authctl_session")
    assert len(ids) == MAX_SESSION_IDS == 3
    assert ids == [part.split("=", 1)[1] for part in header.split("; ")[:3]]


def test_repeats_count_once() -> None:
    """The same value planted again does not push a second, real one out."""
    planted, real = new_session_id(), new_session_id()
    header = "; ".join([f"authctl_session={planted}"] * 5 + [f"authctl_session={real}"])
    assert session_ids(header, "authctl_session") == [planted, real]


def test_other_cookies_and_empty_values_are_ignored() -> None:
    """Only non-empty values of the named cookie, unquoted."""
    header = 'a=1; authctl_session=; authctl_session="x"; authctl_sessionx=2; b=3'
    assert session_ids(header, "authctl_session") == ["x"]
    assert session_ids(None, "authctl_session") == []
    assert session_ids("", "authctl_session") == []


class CountingReads(MemoryStore):
    """Counts ``get`` calls."""

    reads = 0

    def get(self, session_id: str) -> Session | None:
        self.reads += 1
        return super().get(session_id)


def test_a_stuffed_header_costs_three_store_reads(tmp_path: Path) -> None:
    """Through the authz path: a header with 180 session cookies reads the store 3 times."""
    store = CountingReads()
    h = build(tmp_path, Clock(), store=store)
    header = "; ".join(f"authctl_session={new_session_id()}" for _ in range(180))
    resp = h.forward_auth("https://app.example.com/", cookie=header)
    assert resp.status_int == 302
    assert store.reads == 3


@given(st.lists(st.text(alphabet='abc=; "', max_size=8), max_size=20))
def test_never_more_than_the_cap(values: list[str]) -> None:
    """Whatever the header, at most MAX_SESSION_IDS distinct values come back."""
    header = "; ".join(f"s={v}" for v in values)
    ids = session_ids(header, "s")
    assert len(ids) <= MAX_SESSION_IDS
    assert len(set(ids)) == len(ids)
