"""``/api/health``: 200 OK while the session store, the storage and the users file work; 503
naming each part that does not (SPEC envelope ``{"status":"KO","message":...}``)."""

from __future__ import annotations

from pathlib import Path

from tests.apphelpers import Harness
from tests.apphelpers import build
from tests.conftest import Clock


def site(tmp_path: Path) -> Harness:
    return build(tmp_path, Clock())


def test_healthy(tmp_path: Path) -> None:
    """Everything works: 200 and the plain OK envelope, for GET and HEAD."""
    h = site(tmp_path)
    resp = h.request("/api/health")
    assert resp.status_int == 200
    assert resp.json == {"status": "OK"}
    assert h.request("/api/health", method="HEAD").status_int == 200


def test_storage_unusable(tmp_path: Path) -> None:
    """The storage database cannot be read: 503 naming the storage."""
    h = site(tmp_path)
    h.app.portal.totp.storage.close()
    resp = h.request("/api/health")
    assert resp.status_int == 503
    assert resp.json == {"status": "KO", "message": "storage unavailable: closed"}


def test_session_store_and_users_file_unusable(tmp_path: Path) -> None:
    """Two parts failing: both named, and the details (paths, hosts) are left to the log."""
    h = site(tmp_path)
    h.store.close()
    h.config.users.file.write_text("[users.x\n", encoding="utf-8")
    h.users.reload()
    resp = h.request("/api/health")
    assert resp.status_int == 503
    message = resp.json["message"]
    assert message.startswith("session store unavailable; users file unusable")
    assert str(tmp_path) not in message


def test_sign_in_with_a_closed_session_store_is_503(tmp_path: Path) -> None:
    """A session store that cannot be used: sign-in answers 503 with a clear message, not 500."""
    h = site(tmp_path)
    h.store.close()
    resp = h.api("/api/firstfactor", {"username": "alice", "password": "alice-password"})
    assert resp.status_int == 503
    assert resp.json == {
        "status": "KO",
        "message": "The session store is unavailable; try again in a moment.",
    }
    assert resp.headers["Retry-After"] == "5"
