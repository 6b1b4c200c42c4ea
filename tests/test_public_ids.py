"""Public ids never start with ``-`` (``server.core.public_ids``)."""

from __future__ import annotations

import pytest

from server.core import public_ids
from server.core.public_ids import public_id
from server.core.sessions import is_handle
from server.core.sessions import new_handle


def test_a_leading_dash_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The draws ``secrets`` gives are used in order; one starting with ``-`` is skipped."""
    draws = iter(["-first", "--second", "third-", "fourth"])
    monkeypatch.setattr(public_ids.secrets, "token_urlsafe", lambda n: next(draws))
    assert public_id(16) == "third-"


def test_real_ids_have_the_old_shape_and_no_leading_dash() -> None:
    """2,000 real draws (a leading dash was 1 in 64): the same length and alphabet as before."""
    handles = [new_handle() for _ in range(2000)]
    assert all(is_handle(h) and not h.startswith("-") for h in handles)
    ids = [public_id(16) for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
