"""Personal access tokens (SPEC §7.6): storage on both engines, the token service and its
cache, the authz endpoints with ``Authorization: Bearer authctl_…``, and the portal API."""

from __future__ import annotations

import re
import time
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.core.config import StorageConfig
from server.core.session_store import MemoryStore
from server.core.storage import AccessToken
from server.core.storage import Storage
from server.core.storage import StorageError
from server.core.tokens import EXPIRED
from server.core.tokens import RECHECK_SECONDS
from server.core.tokens import REVOKED
from server.core.tokens import UNAVAILABLE
from server.core.tokens import UNKNOWN
from server.core.tokens import TokenError
from server.core.tokens import TokenService
from server.core.tokens import bearer_token
from server.core.tokens import clean_domains
from server.core.tokens import clean_name
from server.core.tokens import mint
from server.web.app import make_app
from tests.apphelpers import Harness
from tests.apphelpers import build
from tests.conftest import Clock
from tests.test_storage import config  # noqa: F401 - fixture (both engines)
from tests.test_storage import pg_cluster  # noqa: F401 - fixture
from tests.test_storage import pg_dsn  # noqa: F401 - fixture

MATERIAL = b"k" * 32
TOKEN_SHAPE = re.compile(r"authctl_[A-Za-z0-9_-]{43}")


class Mono:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record(token_id: str = "t1", username: str = "alice", **kw: t.Any) -> AccessToken:  # noqa: S107
    fields: dict[str, t.Any] = {
        "id": token_id,
        "username": username,
        "name": "ci",
        "digest": token_id.encode().ljust(32, b"\0"),
        "created_at": 1000.0,
        "last_used_at": None,
        "expires_at": None,
        "domains": (),
        "two_factor": False,
        "created_by": "cli",
        "revoked_at": None,
    }
    fields.update(kw)
    return AccessToken(**fields)


@pytest.fixture
def storage(config: StorageConfig, clock: Clock) -> Iterator[Storage]:  # noqa: F811
    opened = Storage(config, clock)
    yield opened
    opened.close()


# =========================================================================== storage


def test_storage_create_list_find_revoke(storage: Storage) -> None:
    """Rows go in and come back whole; revoked ones leave the list but are still found by
    digest (so the cache can say 'revoked'); revoking checks the owner when asked to."""
    mine = record("t1", domains=("app.example.com", "x.example.org"), two_factor=True)
    storage.add_token(mine)
    storage.add_token(record("t2", username="bob", created_at=2000.0, expires_at=5000.0))
    assert storage.tokens() == [
        mine,
        record("t2", username="bob", created_at=2000.0, expires_at=5000.0),
    ]
    assert storage.tokens("alice") == [mine]
    assert storage.token_by_digest(mine.digest) == mine
    assert storage.token_by_digest(b"\1" * 32) is None
    assert storage.revoke_token("t1", 3000.0, username="bob") is None  # not bob's
    assert storage.revoke_token("nope", 3000.0) is None
    assert storage.revoke_token("t1", 3000.0, username="alice") == "alice"
    assert storage.revoke_token("t1", 3001.0) is None  # once
    assert storage.tokens("alice") == []
    found = storage.token_by_digest(mine.digest)
    assert found is not None
    assert found.revoked_at == 3000.0
    assert storage.revoke_user_tokens("bob", 4000.0) == 1
    assert storage.tokens() == []
    assert storage.counts()["tokens"] == 2


def test_storage_touch_is_coalesced(storage: Storage) -> None:
    """One write per interval, whoever asks (a conditional UPDATE)."""
    storage.add_token(record("t1"))
    assert storage.touch_token("t1", 100.0, 60.0) is True
    assert storage.touch_token("t1", 130.0, 60.0) is False
    assert storage.touch_token("t1", 160.0, 60.0) is True
    assert storage.tokens()[0].last_used_at == 160.0
    assert storage.touch_token("nope", 500.0, 60.0) is False


def test_storage_refuses_bad_rows(storage: Storage) -> None:
    with pytest.raises(ValueError, match="domains"):
        storage.add_token(record(domains=("a,b",)))
    with pytest.raises(ValueError, match="creator"):
        storage.add_token(record(created_by="api"))
    storage.add_token(record("t1"))
    with pytest.raises(StorageError):
        storage.add_token(record("t1"))  # the id is the key


def test_storage_copies_tokens(storage: Storage, tmp_path: Path, clock: Clock) -> None:
    """``storage migrate`` copies the table like every other."""
    from tests.test_storage import make_config

    storage.add_token(record("t1", last_used_at=5.0, expires_at=9.0, domains=("a.example.com",)))
    (tmp_path / "other").mkdir()
    other = Storage(make_config(tmp_path / "other"), clock)
    try:
        assert other.insert_rows("tokens", storage.rows("tokens")) == 1
        assert other.tokens() == storage.tokens()
    finally:
        other.close()


# =========================================================================== pure parts


def test_minted_tokens_have_256_random_bits() -> None:
    tokens = {mint() for _ in range(200)}
    assert len(tokens) == 200
    assert all(TOKEN_SHAPE.fullmatch(tok) for tok in tokens)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer authctl_abc", "authctl_abc"),
        ("bearer   authctl_abc  ", "authctl_abc"),
        ("BEARER authctl_", "authctl_"),
        ("Bearer eyJhbGciOi.authctl_x", None),  # an app's JWT that merely contains it
        ("Bearer abc", None),
        ("Basic YWxpY2U6eA==", None),
        ("Token authctl_abc", None),
        ("authctl_abc", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token_takes_only_prefixed_bearer_values(
    header: str | None, expected: str | None
) -> None:
    assert bearer_token(header) == expected


def test_clean_domains() -> None:
    cookies = ("example.com", "example.org")
    assert clean_domains([" App.Example.com", "example.org", "app.example.com"], cookies) == (
        "app.example.com",
        "example.org",
    )
    assert clean_domains(["bücher.example.com"], cookies) == ("xn--bcher-kva.example.com",)
    for bad, why in [
        ("evil.com", "outside every cookie domain"),
        ("notexample.com", "outside every cookie domain"),
        ("a..example.com", "domain"),
        ("example.com.", "dot"),
        (5, "string"),
    ]:
        with pytest.raises(TokenError, match=why):
            clean_domains([bad], cookies)
    with pytest.raises(TokenError, match="at most"):
        clean_domains([f"h{n}.example.com" for n in range(40)], cookies)


def test_clean_name() -> None:
    assert clean_name("  backup job ") == "backup job"
    for bad in ["", "   ", "x" * 101, "a\nb", None, 3]:
        with pytest.raises(TokenError):
            clean_name(bad)


# =========================================================================== the service


@pytest.fixture
def svc(tmp_path: Path, clock: Clock) -> Iterator[tuple[TokenService, Mono]]:
    from tests.test_storage import make_config

    storage = Storage(make_config(tmp_path), clock)
    mono = Mono()
    yield TokenService(storage, MATERIAL, now=clock, monotonic=mono), mono
    storage.close()


def test_service_stores_a_keyed_digest_only(svc: tuple[TokenService, Mono]) -> None:
    service, _ = svc
    assert repr(service) == "<TokenService>"  # no key in a traceback
    token, made = service.create("alice", "ci", created_by="cli")
    assert TOKEN_SHAPE.fullmatch(token)
    assert made.digest == service.digest(token) != token.encode()
    assert len(made.digest) == 32
    # another key file gives another digest: a copied database alone finds nothing
    other = TokenService(service.storage, b"z" * 32)
    assert other.check(token) == (None, UNKNOWN)
    assert service.check(token)[0] is not None


def test_service_check_answers(svc: tuple[TokenService, Mono], clock: Clock) -> None:
    service, _mono = svc
    token, made = service.create("alice", "ci", created_by="cli", expires_in=3600)
    grant, why = service.check(token)
    assert grant is not None
    assert why == ""
    assert (grant.username, grant.level, grant.token_id) == ("alice", 1, made.id)
    assert service.check("authctl_" + "A" * 43) == (None, UNKNOWN)
    assert service.check("authctl_short") == (None, UNKNOWN)
    clock.advance(3600)
    assert service.check(token) == (None, EXPIRED)
    two, _ = service.create("alice", "x", created_by="cli", two_factor=True)
    assert service.check(two)[0].level == 2  # type: ignore[union-attr]
    with pytest.raises(TokenError, match="positive"):
        service.create("alice", "x", created_by="cli", expires_in=0)


def test_cache_answers_without_storage_then_rereads_after_a_second(
    svc: tuple[TokenService, Mono],
) -> None:
    """Within RECHECK_SECONDS the cache answers (even inside ``forbidden``); at the bound
    the entry is read again, so another process's revocation is seen within 1 s."""
    from server.core.blocking import WouldBlock
    from server.core.blocking import forbidden

    service, mono = svc
    token, made = service.create("alice", "ci", created_by="cli")
    assert service.check(token)[0] is not None
    other = TokenService(service.storage, MATERIAL)  # another process on the same storage
    assert other.revoke(made.id) == "alice"
    mono.now += RECHECK_SECONDS - 0.01
    with forbidden:
        assert service.check(token)[0] is not None  # cached, no storage read
    mono.now += 0.01
    with forbidden, pytest.raises(WouldBlock):
        service.check(token)  # due for a read: the I/O thread hands over
    assert service.check(token) == (None, REVOKED)
    with forbidden:
        assert service.check(token) == (None, REVOKED)  # misses are cached too


def test_revocation_here_is_seen_at_once(svc: tuple[TokenService, Mono]) -> None:
    service, _ = svc
    token, made = service.create("alice", "ci", created_by="cli")
    assert service.check(token)[0] is not None
    assert service.revoke(made.id, "bob") is None  # not bob's
    assert service.check(token)[0] is not None
    assert service.revoke(made.id, "alice") == "alice"
    assert service.check(token) == (None, REVOKED)
    again, _ = service.create("alice", "ci2", created_by="cli")
    assert service.check(again)[0] is not None
    assert service.revoke_user("alice") == 1
    assert service.check(again) == (None, REVOKED)
    assert service.revoke_user("alice") == 0


def test_last_use_is_written_once_a_minute(svc: tuple[TokenService, Mono], clock: Clock) -> None:
    service, mono = svc
    token, _made = service.create("alice", "ci", created_by="cli")
    for _ in range(5):  # five reads a second apart: one write
        mono.now += 1
        clock.advance(1)
        service.check(token)
    first = service.tokens("alice")[0].last_used_at
    assert first == clock.now - 4
    mono.now += 61
    clock.advance(61)
    service.check(token)
    assert service.tokens("alice")[0].last_used_at == clock.now


def test_storage_down_fails_closed(svc: tuple[TokenService, Mono]) -> None:
    """A storage that cannot be read refuses the token and caches nothing."""
    service, mono = svc
    token, _ = service.create("alice", "ci", created_by="cli")
    assert service.check(token)[0] is not None
    mono.now += RECHECK_SECONDS
    service.storage.close()
    assert service.check(token) == (None, UNAVAILABLE)
    assert service.check(token) == (None, UNAVAILABLE)


def test_touch_failure_does_not_refuse(
    svc: tuple[TokenService, Mono], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only standby can read but not record the use: the token still works."""
    service, _ = svc
    token, _ = service.create("alice", "ci", created_by="cli")

    def read_only(*args: object) -> bool:
        raise StorageError("read-only")

    monkeypatch.setattr(service.storage, "touch_token", read_only)
    assert service.check(token)[0] is not None


def test_cache_tables_are_bounded(
    svc: tuple[TokenService, Mono], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of made-up tokens fills the miss table only, and a full table is emptied."""
    import server.core.tokens as tokens_module

    service, _ = svc
    monkeypatch.setattr(tokens_module, "CACHE_SIZE", 4)
    token, _ = service.create("alice", "ci", created_by="cli")
    service.check(token)
    for _ in range(10):
        service.check(mint())
    assert len(service._misses) <= 4
    assert len(service._hits) == 1
    for n in range(6):
        service.check(service.create("alice", f"n{n}", created_by="cli")[0])
    assert len(service._hits) <= 4


# =========================================================================== authz


@pytest.fixture
def h(tmp_path: Path, clock: Clock) -> Harness:
    return build(tmp_path, clock)


def make_token(h: Harness, user: str = "alice", **kw: t.Any) -> tuple[str, AccessToken]:
    tokens = h.app.authorizer.tokens
    assert tokens is not None
    return tokens.create(user, "test", created_by="cli", **kw)


def bearer(token: str, header: str = "Authorization") -> dict[str, str]:
    return {header: f"Bearer {token}"}


ENDPOINTS = ["forward-auth", "auth-request", "ext-authz", "legacy"]


def ask(
    h: Harness,
    endpoint: str,
    url: str,
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
) -> t.Any:
    """One authz request for ``url`` to ``endpoint``, as its proxy would send it."""
    scheme, _, rest = url.partition("://")
    host, slash, uri = rest.partition("/")
    sent = {"Accept": "text/html"}
    if endpoint == "forward-auth":
        path = "/api/authz/forward-auth"
        sent |= {"X-Forwarded-Proto": scheme, "X-Forwarded-Host": host}
        sent |= {"X-Forwarded-Uri": slash + uri, "X-Forwarded-Method": method}
    elif endpoint == "auth-request":
        path = "/api/authz/auth-request"
        sent |= {"X-Original-URL": url, "X-Original-Method": method}
    elif endpoint == "ext-authz":
        path = "/api/authz/ext-authz" + slash + uri
        sent |= {"X-Forwarded-Proto": scheme, "Host": host}
    else:
        path = "/api/verify?rd=https%3A%2F%2Fauth.example.com"
        sent |= {"X-Original-URL": url}
    sent |= headers or {}
    return h.request(path, method=method if endpoint == "ext-authz" else "GET", headers=sent)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("header", ["Authorization", "Proxy-Authorization"])
def test_a_token_signs_in_on_every_endpoint(h: Harness, endpoint: str, header: str) -> None:
    token, _ = make_token(h)
    resp = ask(h, endpoint, "https://app.example.com/x", bearer(token, header))
    assert resp.status_int == 200
    assert resp.headers["Remote-User"] == "alice"
    assert resp.headers["Remote-Groups"] == "admins,dev"
    assert resp.headers["Remote-Email"] == "alice@example.com"


def assert_bearer_401(resp: t.Any) -> None:
    assert resp.status_int == 401, resp.status
    assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
    assert "Location" not in resp.headers
    assert "Remote-User" not in resp.headers


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_every_refusal_is_401_bearer(h: Harness, endpoint: str, clock: Clock) -> None:
    """Unknown, malformed, expired, revoked, out of domain, disabled or removed user: 401 +
    WWW-Authenticate: Bearer, no redirect, never 200, even where the rules would bypass."""
    url = "https://app.example.com/x"
    expiring, _ = make_token(h, expires_in=60)
    revoked, revoked_rec = make_token(h)
    scoped, _ = make_token(h, domains=("other.example.com",))
    bobs, _ = make_token(h, user="bob")
    carols, _ = make_token(h, user="carol")  # disabled in the users file
    daves, _ = make_token(h, user="dave")  # not in the users file
    tokens = h.app.authorizer.tokens
    assert tokens is not None
    assert tokens.revoke(revoked_rec.id) == "alice"
    clock.advance(60)
    for bad in [
        mint(),
        "authctl_",
        "authctl_" + "!" * 43,
        expiring,
        revoked,
        scoped,
        carols,
        daves,
    ]:
        assert_bearer_401(ask(h, endpoint, url, bearer(bad)))
        assert_bearer_401(ask(h, endpoint, "https://public.example.com/", bearer(bad)))
    # a user disabled now stops at once; enabled again, it works again
    assert ask(h, endpoint, url, bearer(bobs)).status_int == 200
    text = h.config.users.file.read_text()
    h.rewrite_users(text.replace('groups = ["dev"]\n', 'groups = ["dev"]\ndisabled = true\n', 1))
    assert_bearer_401(ask(h, endpoint, url, bearer(bobs)))
    h.rewrite_users(text)
    assert ask(h, endpoint, url, bearer(bobs)).status_int == 200


def test_domains_cover_the_host_and_its_subdomains(h: Harness) -> None:
    token, _ = make_token(h, domains=("example.org", "app.example.com"))
    assert ask(h, "forward-auth", "https://app.example.com/", bearer(token)).status_int == 200
    assert ask(h, "forward-auth", "https://a.b.example.org/", bearer(token)).status_int == 200
    for host in ["secure.example.com", "xapp.example.com", "example.com"]:
        assert_bearer_401(ask(h, "forward-auth", f"https://{host}/", bearer(token)))


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_rules_decide_after_the_token(h: Harness, endpoint: str) -> None:
    """One factor: a two_factor rule answers 401 (a script gets no portal), a deny rule
    403; a --two-factor CLI token passes two_factor rules."""
    one, _ = make_token(h)
    two, _ = make_token(h, two_factor=True)
    bobs, _ = make_token(h, user="bob")
    weak = ask(h, endpoint, "https://secure.example.com/", bearer(one))
    assert weak.status_int == 401
    assert "insufficient_user_authentication" in weak.headers["WWW-Authenticate"]
    assert "Location" not in weak.headers
    assert ask(h, endpoint, "https://secure.example.com/", bearer(two)).status_int == 200
    assert ask(h, endpoint, "https://private.example.com/", bearer(bobs)).status_int == 403
    assert ask(h, endpoint, "https://private.example.com/", bearer(one)).status_int == 200


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_other_bearer_values_are_ignored_as_before(h: Harness, endpoint: str) -> None:
    """An app's own bearer token passes untouched: the answer is what it would be without
    it (a cookie still signs in, an anonymous request still goes to the portal)."""
    cookie = h.login("alice")
    app_token = {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x"}
    url = "https://app.example.com/x"
    signed_in = ask(h, endpoint, url, {**app_token, "Cookie": cookie})
    assert signed_in.status_int == 200
    assert signed_in.headers["Remote-User"] == "alice"
    plain = ask(h, endpoint, url)
    anonymous = ask(h, endpoint, url, app_token)
    assert anonymous.status_int == plain.status_int != 200
    assert anonymous.headers.get("Location") == plain.headers.get("Location")
    assert "Bearer" not in anonymous.headers.get("WWW-Authenticate", "")


def test_a_token_wins_over_a_cookie_and_basic(h: Harness) -> None:
    """A request carrying an authctl token is judged on it alone: a bad token is 401 even
    with a valid cookie, and the identity is the token's."""
    cookie = h.login("alice")
    bobs, _ = make_token(h, user="bob")
    both = ask(h, "forward-auth", "https://app.example.com/", {**bearer(bobs), "Cookie": cookie})
    assert both.headers["Remote-User"] == "bob"
    assert_bearer_401(
        ask(h, "forward-auth", "https://app.example.com/", {**bearer(mint()), "Cookie": cookie})
    )
    assert_bearer_401(
        ask(
            h,
            "legacy",
            "https://app.example.com/",
            {**bearer(mint()), "Proxy-Authorization": "Basic YWxpY2U6YWxpY2UtcGFzc3dvcmQ="},
        )
    )


def test_malformed_requests_stay_400_with_a_token(h: Harness) -> None:
    """The token never turns a refused request into a decision."""
    token, _ = make_token(h)
    assert ask(h, "forward-auth", "https://evil.test/", bearer(token)).status_int == 400
    resp = h.request(
        "/api/authz/auth-request",
        headers={"X-Original-URL": "https://app.example.com/", **bearer(token)},
        peer="192.0.2.1",
    )
    assert resp.status_int == 403


def test_revocation_is_honoured_within_a_second_across_app_instances(h: Harness) -> None:
    """Two app instances (two processes or hosts) share one storage: a token revoked on one
    is refused by the other within RECHECK_SECONDS (real time)."""
    other = make_app(h.config, now=h.clock, store=MemoryStore(), users=h.users, hasher=h.hasher)
    token, made = make_token(h)
    url = "https://app.example.com/"
    forward = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example.com"}
    forward |= {"X-Forwarded-Uri": "/", "X-Forwarded-Method": "GET", **bearer(token)}

    def on_other() -> int:
        from webob import Request

        req = Request.blank("/api/authz/forward-auth", headers=forward)
        req.environ["REMOTE_ADDR"] = "127.0.0.1"
        return int(req.get_response(other).status_int)

    assert on_other() == 200  # cached there now
    assert ask(h, "forward-auth", url, bearer(token)).status_int == 200
    revoked_at = time.monotonic()
    tokens = h.app.authorizer.tokens
    assert tokens is not None
    assert tokens.revoke(made.id) == "alice"
    assert_bearer_401(ask(h, "forward-auth", url, bearer(token)))  # here: at once
    while on_other() == 200:
        assert time.monotonic() - revoked_at < RECHECK_SECONDS + 0.05
        time.sleep(0.02)
    assert on_other() == 401


def test_the_token_never_reaches_logs_or_files(
    h: Harness, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Refused and allowed requests are logged (at debug too) without the token; the
    database and every file in the folder hold no copy of it."""
    import logging

    caplog.set_level(logging.DEBUG)
    token, made = make_token(h)
    ask(h, "forward-auth", "https://app.example.com/", bearer(token))
    ask(h, "forward-auth", "https://secure.example.com/", bearer(token))
    tokens = h.app.authorizer.tokens
    assert tokens is not None
    tokens.revoke(made.id)
    ask(h, "auth-request", "https://app.example.com/", bearer(token))
    secret = token.removeprefix("authctl_")
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert "token_refused" in logged
    assert "'reason': 'revoked'" in logged
    assert secret not in logged
    assert secret not in caplog.text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


# =========================================================================== portal API


@pytest.fixture
def ss(tmp_path: Path, clock: Clock) -> t.Any:
    from tests.test_selfservice import make_ss

    return make_ss(tmp_path, clock)


def test_api_create_needs_an_elevated_session(ss: t.Any) -> None:
    from tests.test_selfservice import elevate

    cookie = ss.h.login("alice")
    refused = ss.h.api("/api/user/tokens", {"name": "ci"}, cookie=cookie)
    assert refused.status_int == 403
    assert refused.json["data"] == {"elevation": True}
    assert ss.h.api("/api/user/tokens", method="GET", cookie=cookie).json["data"] == []
    cookie = elevate(ss, cookie)
    made = ss.h.api(
        "/api/user/tokens",
        {"name": " backup ", "expires": "30d", "domains": ["App.example.com"]},
        cookie=cookie,
    )
    assert made.status_int == 200, made.text
    data = made.json["data"]
    token = data.pop("token")
    assert TOKEN_SHAPE.fullmatch(token)
    assert data["name"] == "backup"
    assert data["domains"] == ["app.example.com"]
    assert data["two_factor"] is False
    assert data["created_by"] == "portal"
    assert data["expires_at"] is not None
    assert data["last_used_at"] is None
    listed = ss.h.api("/api/user/tokens", method="GET", cookie=cookie)
    assert listed.json["data"] == [data]
    assert token not in listed.text
    assert token[8:] not in listed.text
    used = ask(ss.h, "forward-auth", "https://app.example.com/", bearer(token))
    assert used.headers["Remote-User"] == "alice"
    assert ss.h.api("/api/user/tokens", method="GET", cookie=cookie).json["data"][0]["last_used_at"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({"name": "x", "two_factor": True}, "two_factor"),
        ({"name": "x", "expires": "soon"}, "duration"),
        ({"name": "x", "expires": 0}, "positive"),
        ({"name": "x", "expires": True}, "boolean"),
        ({"name": "x", "domains": "app.example.com"}, "list"),
        ({"name": "x", "domains": ["evil.test"]}, "cookie domain"),
    ],
)
def test_api_create_refuses_bad_input(ss: t.Any, payload: dict[str, t.Any], message: str) -> None:
    from tests.test_selfservice import elevate

    cookie = elevate(ss, ss.h.login("alice"))
    resp = ss.h.api("/api/user/tokens", payload, cookie=cookie)
    assert resp.status_int == 400
    assert message in resp.json["message"].lower()
    assert ss.h.api("/api/user/tokens", method="GET", cookie=cookie).json["data"] == []


def test_api_caps_live_tokens(ss: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import server.web.tokens_api as api
    from tests.test_selfservice import elevate

    monkeypatch.setattr(api, "MAX_PORTAL_TOKENS", 2)
    cookie = elevate(ss, ss.h.login("alice"))
    for _ in range(2):
        assert ss.h.api("/api/user/tokens", {"name": "x"}, cookie=cookie).status_int == 200
    assert ss.h.api("/api/user/tokens", {"name": "x"}, cookie=cookie).status_int == 409


def test_api_revoke_own_tokens_only(h: Harness) -> None:
    """Another user's id is a 404 like an unknown one, and stays valid."""
    alices, alice_rec = make_token(h)
    bobs, bob_rec = make_token(h, user="bob")
    cookie = h.login("alice")
    for other in [bob_rec.id, "nope", alice_rec.id + "x"]:
        resp = h.api(f"/api/user/tokens/{other}", {}, method="DELETE", cookie=cookie)
        assert resp.status_int == 404
        assert resp.json["message"] == "No such token."
    assert ask(h, "forward-auth", "https://app.example.com/", bearer(bobs)).status_int == 200
    listed = h.api("/api/user/tokens", method="GET", cookie=cookie).json["data"]
    assert [row["id"] for row in listed] == [alice_rec.id]  # never bob's
    gone = h.api(f"/api/user/tokens/{alice_rec.id}", {}, method="DELETE", cookie=cookie)
    assert gone.status_int == 200
    assert_bearer_401(ask(h, "forward-auth", "https://app.example.com/", bearer(alices)))
    assert h.api("/api/user/tokens", method="GET", cookie=cookie).json["data"] == []


def test_api_csrf_rules_hold(h: Harness) -> None:
    """SPEC §3.4: cross-origin, non-JSON or signed-out requests change nothing."""
    token, made = make_token(h)
    cookie = h.login("alice")
    path = f"/api/user/tokens/{made.id}"
    cross = h.api(path, {}, method="DELETE", cookie=cookie, headers={"Origin": "https://evil.test"})
    assert cross.status_int == 403
    site = h.api(path, {}, method="DELETE", cookie=cookie, headers={"Sec-Fetch-Site": "cross-site"})
    assert site.status_int == 403
    form = h.api(path, method="DELETE", cookie=cookie, headers={"Content-Type": "text/plain"})
    assert form.status_int == 415
    for method, payload in [("POST", {"name": "x"}), ("DELETE", {})]:
        target = "/api/user/tokens" if method == "POST" else path
        assert h.api(target, payload, method=method).status_int == 401
        plain = h.request(
            target,
            method=method,
            headers={"Cookie": cookie, "Content-Type": "application/json"},
            body=b"{}",
        )
        assert plain.status_int == 400  # not https on a cookie domain
    assert h.api("/api/user/tokens", method="GET").status_int == 401
    assert ask(h, "forward-auth", "https://app.example.com/", bearer(token)).status_int == 200


def test_api_events_are_audited(tmp_path: Path, clock: Clock) -> None:
    """token_created and token_revoked, with user and IP, never the token."""
    from tests.apphelpers import APP_CONFIG
    from tests.test_selfservice import elevate
    from tests.test_selfservice import make_ss

    audit_file = tmp_path / "audit.log"
    ss = make_ss(tmp_path, clock, f'[log]\naudit_file = "{audit_file}"\n\n' + APP_CONFIG)
    try:
        cookie = elevate(ss, ss.h.login("alice"))
        made = ss.h.api("/api/user/tokens", {"name": "x"}, cookie=cookie).json["data"]
        ss.h.api(f"/api/user/tokens/{made['id']}", {}, method="DELETE", cookie=cookie)
        text = audit_file.read_text()
        assert '"event":"token_created"' in text.replace(" ", "")
        assert '"event":"token_revoked"' in text.replace(" ", "")
        assert made["token"][8:] not in text
    finally:
        from server.core import audit

        audit.configure(None)
