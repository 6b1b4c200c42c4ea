"""Tests for ``server.core.webauthn``: the ceremonies with REAL signatures (EC P-256 keys made
here, authenticator data and attestation objects built byte by byte by
``tests/soft_authenticator.py``), every negative case of issue 16 refused, on both storage
engines, and a property test of the challenge state machine."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from server.core.config import CookieConfig
from server.core.config import RegulationConfig
from server.core.config import WebAuthnConfig
from server.core.regulation import Regulator
from server.core.storage import Storage
from server.core.webauthn import CHALLENGE_BYTES
from server.core.webauthn import Ceremony
from server.core.webauthn import DescriptionTaken
from server.core.webauthn import Malformed
from server.core.webauthn import Refused
from server.core.webauthn import RelyingParty
from server.core.webauthn import WebAuthnService
from server.core.webauthn import check_description
from server.core.webauthn import from_b64url
from server.core.webauthn import relying_party
from tests.conftest import Clock
from tests.pgcluster import PgCluster
from tests.pgcluster import pg_cluster  # noqa: F401 - fixture
from tests.pgcluster import pg_dsn  # noqa: F401 - fixture
from tests.soft_authenticator import SoftAuthenticator
from tests.soft_authenticator import edit_client_data
from tests.soft_authenticator import flip_byte
from tests.soft_authenticator import unb64url
from tests.test_storage import BACKENDS
from tests.test_storage import make_config

RP = RelyingParty("auth.example.com", "https://auth.example.com")
KEY = b"k" * 32
SESSION = "s" * 43
OTHER_SESSION = "t" * 43


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[Storage]:
    """An open storage on the fake clock, on each engine."""
    if request.param == "postgres":
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        dsn: str = request.getfixturevalue("pg_dsn")
        config = make_config(tmp_path, postgres=cluster.postgres_config(dsn, timeout=3))
    else:
        config = make_config(tmp_path)
    opened = Storage(config, clock)
    yield opened
    opened.close()


def service(
    storage: Storage, clock: Clock, regulation: bool = True, **changes: object
) -> WebAuthnService:
    config = dataclasses.replace(WebAuthnConfig(), **changes)  # type: ignore[arg-type]
    regulator = (
        Regulator(RegulationConfig(max_retries=3), storage, now=clock) if regulation else None
    )
    return WebAuthnService(config, storage, KEY, regulator=regulator, now=clock)


def enrol(
    svc: WebAuthnService, user: str = "alice", auth: SoftAuthenticator | None = None
) -> SoftAuthenticator:
    """``user`` registers ``auth`` (a new one by default) as "key"; the authenticator."""
    auth = auth or SoftAuthenticator(RP.origin)
    challenge = svc.registration_options(user, user.title(), RP, bound_to=SESSION)
    description = f"key {len(svc.storage.webauthn_credentials(user))}"
    response = auth.create(challenge.options)
    svc.register(user, challenge.id, response, RP, description=description, bound_to=SESSION)
    return auth


def second_factor(
    svc: WebAuthnService, auth: SoftAuthenticator, user: str = "alice", **get: object
) -> tuple[str, dict[str, object]]:
    challenge = svc.authentication_options(user, RP, bound_to=SESSION)
    return challenge.id, auth.get(challenge.options, **get)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- registration


def test_registration_options_follow_the_config(storage: Storage, clock: Clock) -> None:
    """Attestation as configured, residentKey preferred, the user's credentials excluded,
    a stable random user handle, a fresh challenge of >= 16 bytes, the timeout in ms."""
    svc = service(storage, clock, attestation="direct", user_verification="required")
    auth = enrol(svc)
    first = svc.registration_options("alice", "Alice", RP, bound_to=SESSION)
    second = svc.registration_options("alice", "Alice", RP, bound_to=SESSION)
    opts = first.options
    assert opts["attestation"] == "direct"
    assert opts["authenticatorSelection"]["residentKey"] == "preferred"
    assert opts["authenticatorSelection"]["userVerification"] == "required"
    assert opts["rp"] == {"id": "auth.example.com", "name": "authctl"}
    assert opts["timeout"] == 60000
    assert opts["extensions"] == {"credProps": True}
    assert [unb64url(c["id"]) for c in opts["excludeCredentials"]] == list(auth.credentials)
    assert opts["user"]["id"] == second.options["user"]["id"]
    assert len(unb64url(opts["user"]["id"])) == 32
    assert b"alice" not in unb64url(opts["user"]["id"])
    bob = svc.registration_options("bob", "Bob", RP, bound_to=SESSION).options
    assert bob["user"]["id"] != opts["user"]["id"]
    assert bob["excludeCredentials"] == []
    assert len(unb64url(opts["challenge"])) == CHALLENGE_BYTES >= 16
    assert opts["challenge"] != second.options["challenge"]
    assert first.id != second.id
    with pytest.raises(ValueError, match="registered already"):
        auth.create(opts)  # the browser refuses a credential the RP excluded


def test_registration_stores_the_credential(storage: Storage, clock: Clock) -> None:
    svc = service(storage, clock)
    auth = SoftAuthenticator(RP.origin, backup=True)
    challenge = svc.registration_options("alice", "Alice", RP, bound_to=SESSION)
    record = svc.register(
        "alice", challenge.id, auth.create(challenge.options), RP, description="Phone",
        bound_to=SESSION,
    )  # fmt: skip
    (stored,) = storage.webauthn_credentials("alice")
    assert stored == record
    assert stored.credential_id == next(iter(auth.credentials))
    assert (stored.sign_count, stored.description, stored.attestation_type) == (1, "Phone", "none")
    assert stored.transports == ("internal", "hybrid")
    assert stored.discoverable
    assert stored.backup_eligible
    assert stored.backup_state
    assert stored.aaguid == "00000000-0000-0000-0000-000000000000"
    assert stored.created_at == clock()
    assert stored.last_used_at is None


def test_registration_refusals(storage: Storage, clock: Clock) -> None:
    """Wrong origin, wrong RP ID, replayed challenge, foreign session, expired challenge,
    a taken description, missing UV when required: each refused."""
    svc = service(storage, clock, user_verification="required")

    def attempt(**create: object) -> tuple[str, dict[str, object]]:
        challenge = svc.registration_options("alice", "Alice", RP, bound_to=SESSION)
        auth = SoftAuthenticator(RP.origin)
        return challenge.id, auth.create(challenge.options, **create)  # type: ignore[arg-type]

    for kwargs, match in [
        ({"origin": "https://evil.example.net"}, "origin"),
        ({"rp_id": "evil.example.net"}, "RP ID"),
        ({"uv": False}, "verif"),
    ]:
        row, resp = attempt(**kwargs)
        with pytest.raises(Refused, match=match):
            svc.register("alice", row, resp, RP, description="x", bound_to=SESSION)
    row, resp = attempt()
    with pytest.raises(Refused, match="another session"):
        svc.register("alice", row, resp, RP, description="x", bound_to=OTHER_SESSION)
    with pytest.raises(Refused, match="another session"):
        svc.register("bob", row, resp, RP, description="x", bound_to=SESSION)
    svc.register("alice", row, resp, RP, description="x", bound_to=SESSION)
    with pytest.raises(Refused, match="used"):
        svc.register("alice", row, resp, RP, description="y", bound_to=SESSION)
    row, resp = attempt()
    clock.advance(61)
    with pytest.raises(Refused, match="expired"):
        svc.register("alice", row, resp, RP, description="y", bound_to=SESSION)
    row, resp = attempt()
    with pytest.raises(DescriptionTaken):
        svc.register("alice", row, resp, RP, description="x", bound_to=SESSION)
    row, resp = attempt()
    assert svc.cancel(row)
    assert not svc.cancel(row)
    assert not svc.cancel(None)
    with pytest.raises(Refused):
        svc.register("alice", row, resp, RP, description="z", bound_to=SESSION)
    assert [c.description for c in storage.webauthn_credentials("alice")] == ["x"]


@pytest.mark.parametrize(
    "response",
    [
        None,
        "text",
        {},
        {"id": "x", "rawId": "x", "type": "public-key", "response": {}},
        {
            "id": "AA",
            "rawId": "AA",
            "type": "public-key",
            "response": {"clientDataJSON": "e30", "attestationObject": "AA"},
        },
        {
            "id": "AA",
            "rawId": "AA",
            "type": "public-key",
            "response": {"clientDataJSON": "!!", "attestationObject": "AA"},
        },
    ],
)
def test_malformed_registration_consumes_nothing(
    storage: Storage, clock: Clock, response: object
) -> None:
    svc = service(storage, clock)
    challenge = svc.registration_options("alice", "Alice", RP, bound_to=SESSION)
    with pytest.raises(Malformed):
        svc.register("alice", challenge.id, response, RP, description="x", bound_to=SESSION)
    resp = SoftAuthenticator(RP.origin).create(challenge.options)
    svc.register("alice", challenge.id, resp, RP, description="x", bound_to=SESSION)


# --------------------------------------------------------------------------- assertions


def test_second_factor_succeeds_and_counts(storage: Storage, clock: Clock) -> None:
    svc = service(storage, clock)
    auth = enrol(svc)
    clock.advance(5)
    row, resp = second_factor(svc, auth)
    assertion = svc.authenticate("alice", row, resp, RP, bound_to=SESSION, ip="192.0.2.1")
    assert assertion.user_verified
    assert assertion.credential.username == "alice"
    (stored,) = storage.webauthn_credentials("alice")
    assert stored.sign_count == 2
    assert stored.last_used_at == clock()
    options = svc.authentication_options("alice", RP, bound_to=SESSION).options
    assert [unb64url(c["id"]) for c in options["allowCredentials"]] == list(auth.credentials)
    assert options["userVerification"] == "preferred"
    assert options["rpId"] == RP.rp_id
    assert storage.recent_attempts(by="username", value="alice", kinds=("TOTP",), since=0, limit=5)


def test_passkey_sign_in_finds_the_owner(storage: Storage, clock: Clock) -> None:
    """Empty allowCredentials; the credential names the user; UV reported; a disabled (or
    removed) owner is refused like a wrong assertion."""
    svc = service(storage, clock)
    auth = enrol(svc)
    challenge = svc.authentication_options(None, RP, bound_to="nonce")
    assert challenge.options["allowCredentials"] == []
    resp = auth.get(challenge.options)
    got = svc.authenticate(
        None, challenge.id, resp, RP, bound_to="nonce", user_ok={"alice"}.__contains__
    )
    assert got.credential.username == "alice"
    assert got.user_verified
    challenge = svc.authentication_options(None, RP, bound_to="nonce")
    resp = auth.get(challenge.options, uv=False)
    got = svc.authenticate(None, challenge.id, resp, RP, bound_to="nonce")
    assert not got.user_verified
    challenge = svc.authentication_options(None, RP, bound_to="nonce")
    resp = auth.get(challenge.options)
    with pytest.raises(Refused, match="cannot sign in"):
        svc.authenticate(None, challenge.id, resp, RP, bound_to="nonce", user_ok=lambda _n: False)


def _case_table() -> list[tuple[str, Callable[..., object], str]]:
    """(name, how to spoil a second-factor attempt, words of the logged reason)."""
    return [
        ("reused challenge", lambda ctx: ctx.replay(), "used"),
        ("expired challenge", lambda ctx: ctx.expire(), "expired"),
        ("wrong origin", lambda ctx: ctx.get(origin="https://evil.example.com"), "origin"),
        ("wrong RP ID hash", lambda ctx: ctx.get(rp_id="example.com"), "RP ID"),
        (
            "tampered clientDataJSON",
            lambda ctx: ctx.spoil(lambda r: edit_client_data(r, crossOrigin=True)),
            "signature",
        ),
        (
            "tampered authenticatorData",
            lambda ctx: ctx.spoil(lambda r: flip_byte(r, "authenticatorData", -1)),
            "signature",
        ),
        (
            "tampered signature",
            lambda ctx: ctx.spoil(lambda r: flip_byte(r, "signature", -3)),
            "signature",
        ),
        ("unknown credential", lambda ctx: ctx.unknown(), "unknown credential"),
        ("another user's credential", lambda ctx: ctx.foreign(), "another user"),
        ("sign-count regression", lambda ctx: ctx.get(sign_count=1), "possible clone"),
        ("sign count unchanged", lambda ctx: ctx.get(sign_count=2), "possible clone"),
        ("UV missing when required", lambda ctx: ctx.get(uv=False), "verif"),
        ("challenge of another session", lambda ctx: ctx.other_session(), "another session"),
        ("challenge for a passkey", lambda ctx: ctx.passkey_challenge(), "another session"),
        ("signed another challenge", lambda ctx: ctx.swapped(), "another challenge"),
        ("no challenge issued", lambda ctx: ctx.no_challenge(), "no challenge"),
    ]


class Attempt:
    """One second-factor attempt of alice, spoiled one way by a case of the table."""

    def __init__(self, svc: WebAuthnService, auth: SoftAuthenticator, clock: Clock) -> None:
        self.svc, self.auth, self.clock = svc, auth, clock
        self.bound_to = SESSION
        self.row, self.response = second_factor(svc, auth)

    def get(self, **kwargs: object) -> None:
        self.row, self.response = second_factor(self.svc, self.auth, **kwargs)

    def spoil(self, change: Callable[[dict[str, object]], dict[str, object]]) -> None:
        self.response = change(self.response)

    def replay(self) -> None:
        self.svc.authenticate("alice", self.row, self.response, RP, bound_to=SESSION)

    def expire(self) -> None:
        self.clock.advance(61)

    def unknown(self) -> None:
        stranger = SoftAuthenticator(RP.origin)
        stranger.create(self.svc.registration_options("alice", "A", RP, bound_to="x").options)
        options = self.svc.authentication_options("alice", RP, bound_to=SESSION)
        self.row, self.response = options.id, stranger.get(options.options)

    def foreign(self) -> None:
        bob = enrol(self.svc, "bob")
        options = self.svc.authentication_options("alice", RP, bound_to=SESSION)
        self.row, self.response = options.id, bob.get(options.options)

    def other_session(self) -> None:
        self.bound_to = OTHER_SESSION

    def passkey_challenge(self) -> None:
        options = self.svc.authentication_options(None, RP, bound_to=SESSION)
        self.row, self.response = options.id, self.auth.get(options.options)

    def swapped(self) -> None:
        other = self.svc.authentication_options("alice", RP, bound_to=SESSION)
        self.response = self.auth.get(other.options)

    def no_challenge(self) -> None:
        self.row = ""


@pytest.mark.parametrize(
    ("name", "spoil", "words"), _case_table(), ids=[c[0] for c in _case_table()]
)
def test_every_bad_assertion_is_refused(
    storage: Storage,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    name: str,
    spoil: Callable[[Attempt], object],
    words: str,
) -> None:
    """Issue 16's negative cases, each against a real signature: refused, the credential's
    count unchanged, the failure counted for regulation (when the attempt reached it)."""
    svc = service(storage, clock, user_verification="required")
    auth = enrol(svc)
    second_factor_ok = Attempt(svc, auth, clock)
    svc.authenticate("alice", second_factor_ok.row, second_factor_ok.response, RP, bound_to=SESSION)
    attempt = Attempt(svc, auth, clock)
    spoil(attempt)
    before = storage.webauthn_credentials("alice")[0].sign_count
    with caplog.at_level(logging.WARNING), pytest.raises(Refused) as info:
        svc.authenticate("alice", attempt.row, attempt.response, RP, bound_to=attempt.bound_to)
    assert words in info.value.reason, info.value.reason
    assert storage.webauthn_credentials("alice")[0].sign_count == before
    if "clone" in words:
        assert "possible cloned authenticator" in caplog.text


def test_a_banned_user_gets_a_wrong_assertions_answer(storage: Storage, clock: Clock) -> None:
    """Three failed assertions ban alice (the TOTP stream, like wrong codes); then her valid
    assertion is refused with the same exception type as a wrong one, and nothing is used."""
    svc = service(storage, clock)
    auth = enrol(svc)
    for _ in range(3):
        row, resp = second_factor(svc, auth)
        with pytest.raises(Refused) as wrong:
            svc.authenticate("alice", row, flip_byte(resp, "signature", -2), RP, bound_to=SESSION)
    assert storage.active_ban([("user", "alice")], clock()) is not None
    count = storage.webauthn_credentials("alice")[0].sign_count
    row, resp = second_factor(svc, auth)
    with pytest.raises(Refused) as banned:
        svc.authenticate("alice", row, resp, RP, bound_to=SESSION)
    assert type(banned.value) is type(wrong.value)
    assert str(banned.value).startswith("banned")
    assert storage.webauthn_credentials("alice")[0].sign_count == count
    clock.advance(301)
    row, resp = second_factor(svc, auth)
    svc.authenticate("alice", row, resp, RP, bound_to=SESSION)


def test_passkey_failures_count_by_ip(storage: Storage, clock: Clock) -> None:
    """A passkey sign-in with an unknown credential is a failed 1FA attempt of the IP."""
    svc = WebAuthnService(
        WebAuthnConfig(),
        storage,
        KEY,
        regulator=Regulator(RegulationConfig(max_retries=2, modes=("ip",)), storage, now=clock),
        now=clock,
    )
    stranger = SoftAuthenticator(RP.origin)
    stranger.create(svc.registration_options("x", "x", RP, bound_to="x").options)
    for _ in range(2):
        challenge = svc.authentication_options(None, RP, bound_to="n")
        with pytest.raises(Refused, match="unknown"):
            svc.authenticate(
                None,
                challenge.id,
                stranger.get(challenge.options),
                RP,
                bound_to="n",
                ip="192.0.2.9",
            )
    assert storage.active_ban([("ip", "192.0.2.9")], clock()) is not None


def test_counterless_passkeys_keep_working(storage: Storage, clock: Clock) -> None:
    """A synced passkey reports 0 every time: both counts zero is not a regression."""
    svc = service(storage, clock)
    auth = enrol(svc, auth=SoftAuthenticator(RP.origin, counter=False, backup=True))
    for _ in range(3):
        row, resp = second_factor(svc, auth)
        svc.authenticate("alice", row, resp, RP, bound_to=SESSION)
    assert storage.webauthn_credentials("alice")[0].sign_count == 0


def test_without_a_regulator(storage: Storage, clock: Clock) -> None:
    svc = service(storage, clock, regulation=False)
    auth = enrol(svc)
    row, resp = second_factor(svc, auth)
    with pytest.raises(Refused):
        svc.authenticate("alice", row, flip_byte(resp, "signature", -2), RP, bound_to=SESSION)
    row, resp = second_factor(svc, auth)
    assert svc.authenticate("alice", row, resp, RP, bound_to=SESSION).user_verified


def test_a_storage_failure_releases_the_reservation(storage: Storage, clock: Clock) -> None:
    """An error that is no verdict (the storage failing mid-check) frees the attempt's
    place uncounted and propagates (the web tier answers 503: fail closed)."""
    svc = service(storage, clock)
    auth = enrol(svc)
    row, resp = second_factor(svc, auth)

    def broken(*_a: object, **_k: object) -> bool:
        raise RuntimeError("disk on fire")

    original = storage.use_webauthn_credential
    storage.use_webauthn_credential = broken  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError):
            svc.authenticate("alice", row, resp, RP, bound_to=SESSION)
    finally:
        storage.use_webauthn_credential = original  # type: ignore[method-assign]
    key = ("username", "alice", "TOTP")
    assert storage.inflight_counts((key,), clock()).get(key, 0) == 0


# --------------------------------------------------------------------------- helpers


def test_relying_party_of_a_cookie_domain() -> None:
    cookie = CookieConfig("example.com", "https://auth.example.com:8443/portal")
    assert relying_party(WebAuthnConfig(), cookie) == RelyingParty(
        "auth.example.com", "https://auth.example.com:8443"
    )
    assert relying_party(WebAuthnConfig(rp_id="example.com"), cookie).rp_id == "example.com"


@pytest.mark.parametrize("bad", [3, "", " ", "x" * 65, "a\nb", "\x00"])
def test_descriptions_are_checked(bad: object) -> None:
    with pytest.raises(Malformed):
        check_description(bad)
    assert check_description("  YubiKey 5 ") == "YubiKey 5"


@pytest.mark.parametrize("bad", ["a=", "é", "!!!", 3, "abcde"])
def test_from_b64url_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match="not base64url"):
        from_b64url(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- state machine


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["issue", "use", "wait", "other_session", "cancel"]),
            st.integers(0, 3),
        ),
        max_size=25,
    )
)
def test_challenge_state_machine(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int]]
) -> None:
    """Against a model: a challenge is accepted exactly once, only from its own session,
    only before ``timeout`` and only if not cancelled; any use (good or bad) spends it."""
    clock = Clock()
    store = Storage(make_config(tmp_path_factory.mktemp("sm")), clock)
    try:
        svc = WebAuthnService(WebAuthnConfig(timeout=30), store, KEY, now=clock)
        issued: list[tuple[str, bytes, float]] = []  # (row id, challenge, expires)
        spent: set[str] = set()
        for action, pick in steps:
            if action == "issue":
                challenge = svc.authentication_options("alice", RP, bound_to=SESSION)
                raw = unb64url(challenge.options["challenge"])
                issued.append((challenge.id, raw, clock() + 30))
                continue
            if action == "wait":
                clock.advance(7 * (pick + 1))
                continue
            if not issued:
                continue
            row, raw, expires = issued[pick % len(issued)]
            if action == "cancel":
                assert svc.cancel(row) == (row not in spent and clock() < expires)
                spent.add(row)
                continue
            bound = OTHER_SESSION if action == "other_session" else SESSION
            should = row not in spent and clock() < expires and bound == SESSION
            try:
                svc.consume(Ceremony.SECOND_FACTOR, row, "alice", bound, raw)
                accepted = True
            except Refused:
                accepted = False
            assert accepted == should, (action, row in spent, clock() < expires)
            if accepted:
                spent.add(row)
    finally:
        store.close()
