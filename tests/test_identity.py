"""Sessions judged stale against the newest users file, not a process's older snapshot.

Found by ``bench/soak.py`` with ``serve --workers 2``: right after ``user enable``, a sign-in on
the worker that had re-read the file made a session that the other worker, still on its older
snapshot (user disabled), destroyed on its first verify — for good, in the shared store.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

from server.core.users import UsersSource
from server.web.app import make_app
from tests.apphelpers import Harness
from tests.apphelpers import build


def _second_worker(first: Harness, *, interval: float) -> Harness:
    """Another process's app over the same folder and session store, with its own snapshot."""
    users = UsersSource(first.config.users.file, interval=interval)
    app = make_app(
        first.config, now=first.clock, store=first.store, users=users, hasher=first.hasher
    )
    return Harness(app, first.config, users, first.store, first.clock, first.hasher)


def _enable_carol(harness: Harness) -> None:
    text = harness.config.users.file.read_text(encoding="utf-8")
    harness.rewrite_users(text.replace("disabled = true\n", ""))


def test_a_session_made_after_enable_survives_a_worker_on_the_older_snapshot(
    tmp_path: Path, clock: t.Any
) -> None:
    first = build(tmp_path, clock)
    # the second worker read the file while carol was disabled and is not due to look again
    second = _second_worker(first, interval=3600)
    assert second.users.current()["carol"].disabled
    _enable_carol(first)
    cookie = first.login("carol")

    answer = second.forward_auth("https://app.example.com/", cookie=cookie)
    assert answer.status_int == 200, answer.status
    assert answer.headers["Remote-User"] == "carol"
    # and the session is still there for everyone
    assert first.forward_auth("https://app.example.com/", cookie=cookie).status_int == 200


def test_a_session_of_a_disabled_user_is_still_ended(tmp_path: Path, clock: t.Any) -> None:
    """The re-check only rescues sessions the newest file allows."""
    first = build(tmp_path, clock)
    cookie = first.login("alice")
    text = first.config.users.file.read_text(encoding="utf-8")
    first.rewrite_users(text.replace('groups = ["admins", "dev"]\n', "disabled = true\n", 1))
    # a worker that read the file after the disable, so re-checking it changes nothing
    second = _second_worker(first, interval=3600)

    assert second.forward_auth("https://app.example.com/", cookie=cookie).status_int == 302
    # ended in the shared store, so re-enabling alice does not bring it back
    first.rewrite_users(text)
    assert first.forward_auth("https://app.example.com/", cookie=cookie).status_int == 302
