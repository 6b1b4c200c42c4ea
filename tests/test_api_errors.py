"""One error vocabulary for the portal API (server/web/errors.py; issue 14 §2): the same core
failure answers the same status, message and Retry-After from every endpoint."""

from __future__ import annotations

import logging
import re
import typing as t
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote

import pytest

from server.core.errors import StoreUnavailable
from server.core.hashcap import Busy
from server.core.notifier import NotifierError
from server.core.notifier import OutboxFull
from server.core.session_store import SessionStoreError
from server.core.storage import StorageError
from server.web import errors
from server.web.errors import RateLimited
from server.web.routes import Route
from server.web.routes import RouteTable
from tests.apphelpers import PASSWORDS
from tests.apphelpers import Harness
from tests.apphelpers import build

STORAGE_DOWN = {"status": "KO", "message": "The storage is unavailable; try again in a moment."}


@pytest.fixture
def h(tmp_path: Path, clock: t.Any) -> Harness:
    return build(tmp_path, clock)


def _mail(h: Harness, pattern: str) -> str:
    """The last match of ``pattern`` in the mail sent so far (the filesystem notifier)."""
    svc = h.app.selfservice
    assert svc is not None
    svc.outbox.flush()
    notes = h.config.notifier.filesystem
    assert notes is not None
    return str(re.findall(pattern, notes.read_text(), re.MULTILINE)[-1])


def _elevated(h: Harness, user: str) -> str:
    """A signed-in, elevated session of ``user`` (the code read from the mail)."""
    cookie = h.login(user)
    assert h.api("/api/user/session/elevation", {}, cookie=cookie).status_int == 200
    code = _mail(h, r"^    ([A-Z0-9]{8})$")
    resp = h.api("/api/user/session/elevation", {"otc": code}, method="PUT", cookie=cookie)
    assert resp.status_int == 200, resp.text
    return str(resp.headers["Set-Cookie"]).split(";", 1)[0]


#: Every endpoint that reads or writes the storage database once signed in (or with a
#: link's token), with the body it sends: with the storage down, each must give the one 503.
STORAGE_ROUTES = [
    ("GET", "/api/user/info", None),
    ("POST", "/api/secondfactor/totp", {"token": "123456"}),
    ("POST", "/api/user/session/elevation", {}),
    ("PUT", "/api/secondfactor/totp/register", {}),
    ("DELETE", "/api/secondfactor/totp", {}),
    ("POST", "/api/reset-password/identity/finish", {"token": "TOKEN"}),
    ("DELETE", "/api/reset-password", {"token": "TOKEN"}),
    # the password step's regulation reads and writes the storage too (it answered 401, "check
    # your credentials", before: a user told to retype a right password)
    ("POST", "/api/firstfactor", {"username": "bob", "password": PASSWORDS["bob"]}),
    (
        "POST",
        "/api/change-password",
        {"old_password": PASSWORDS["alice"], "new_password": "a-new-long-passphrase-7"},
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "payload"), STORAGE_ROUTES, ids=[f"{m} {p}" for m, p, _ in STORAGE_ROUTES]
)
def test_a_storage_outage_is_the_same_503_everywhere(
    h: Harness, method: str, path: str, payload: object
) -> None:
    """Before: /api/user/info said ``has_totp: false`` and a TOTP code was "wrong" (401)
    while the elevation endpoint answered 503; a retry cannot help a user told to retype."""
    h.app.portal.totp.enrol("alice")
    cookie = _elevated(h, "alice")
    h.api("/api/reset-password/identity/start", {"username": "alice"})
    token = unquote(_mail(h, r"/reset-password/step2\?token=([^&\s]+)"))
    if payload == {"token": "TOKEN"}:
        payload = {"token": token}
    h.app.portal.totp.storage.close()
    resp = h.api(path, payload, method=method, cookie=cookie)
    assert (resp.status_int, resp.json) == (503, STORAGE_DOWN), resp.text
    assert resp.headers["Retry-After"] == "5"


FAILURES: list[BaseException] = [
    StorageError("disk I/O error at /var/lib/authctl/authctl.db"),
    SessionStoreError("redis://10.0.0.5:6379 refused"),
    OutboxFull("the mail queue is full"),
    NotifierError("smtp.example.com:587 said 554"),
    Busy(),
    RateLimited(12.2),
]


def _routes() -> list[Route]:
    import tempfile

    from tests.conftest import Clock

    with tempfile.TemporaryDirectory() as tmp:
        return list(build(Path(tmp), Clock()).app.routes)


ROUTES = _routes()


@pytest.mark.parametrize("failure", FAILURES, ids=lambda e: type(e).__name__)
def test_each_core_failure_has_one_answer_on_every_route(
    h: Harness, failure: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever route meets it, a core failure is answered by the one table: same status,
    same message, same Retry-After, and never the details (hosts, paths)."""
    expected = errors.translate(failure)
    assert expected is not None

    def raises(call: t.Any) -> t.Any:
        raise failure

    h.app.live = replace(
        h.app.live, routes=RouteTable(replace(r, handler=raises, guards=()) for r in ROUTES)
    )
    seen = set()
    for route in ROUTES:
        resp = h.api(route.path, {}, method=route.method)
        body = None if route.method == "HEAD" else resp.json
        retry = resp.headers.get("Retry-After")
        seen.add((resp.status_int, repr(body), retry))
        assert resp.status_int == expected.status, route
        if body is not None:
            assert body == {"status": "KO", "message": expected.message}
            assert "example" not in resp.text
            assert "/var/" not in resp.text
    assert len(seen) == 2  # the HEAD of /api/health has no body; the rest are identical


def test_the_table_has_no_shadowed_row() -> None:
    """First match wins: a row after its own base class could never be used."""
    kinds = [row.kind for row in errors.TABLE]
    for i, earlier in enumerate(kinds):
        for later in kinds[i + 1 :]:
            assert not issubclass(later, earlier), (later, earlier)


def test_the_table_covers_the_core_store_errors() -> None:
    """Both stores' errors are StoreUnavailable: one row answers them both."""
    for exc in (StorageError("x"), SessionStoreError("x")):
        assert isinstance(exc, StoreUnavailable)
        found = errors.translate(exc)
        assert found is not None
        assert found.status == 503
        assert found.message == f"The {exc.part} is unavailable; try again in a moment."


def test_an_unexpected_exception_is_a_logged_500(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug is not translated: 500 "Internal error.", the traceback in the log only."""

    def buggy(call: t.Any) -> t.Any:
        raise KeyError("secret-detail")

    h.app.live = replace(h.app.live, routes=RouteTable([Route("GET", "/api/state", buggy)]))
    with caplog.at_level(logging.ERROR):
        resp = h.api("/api/state", method="GET")
    assert resp.status_int == 500
    assert resp.json == {"status": "KO", "message": "Internal error."}
    assert "secret-detail" not in resp.text
    assert "secret-detail" in caplog.text
    assert resp.headers["Cache-Control"] == "no-store"


def test_a_rate_limit_says_when_to_come_back() -> None:
    """429 with Retry-After rounded up to whole seconds, at least 1."""
    resp = RateLimited(12.2).response()
    assert resp.status_int == 429
    assert resp.headers["Retry-After"] == "13"
    assert RateLimited(0.01).response().headers["Retry-After"] == "1"
