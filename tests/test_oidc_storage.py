"""OIDC state in storage, on both engines (SPEC §7.2, §7.3): codes used once (also in
parallel) and a replay revoking what the code issued, refresh rotation with reuse revoking
the family, stable subject ids, remembered consents, and purging."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from server.core.config import StorageConfig
from server.core.storage import CodeRedemption
from server.core.storage import OidcCode
from server.core.storage import OidcGrant
from server.core.storage import OidcToken
from server.core.storage import Rotation
from server.core.storage import Storage
from tests.conftest import Clock
from tests.pgcluster import pg_cluster  # noqa: F401 - fixture
from tests.pgcluster import pg_dsn  # noqa: F401 - fixture
from tests.test_storage import config  # noqa: F401 - fixture

NOW = 1_700_000_000.0
GRANT = OidcGrant("app", "alice", "openid offline_access", NOW - 5, "pwd otp mfa", "fam1")


@pytest.fixture
def storage(config: StorageConfig, clock: Clock) -> Iterator[Storage]:  # noqa: F811
    opened = Storage(config, clock)
    yield opened
    opened.close()


def code(
    digest: bytes = b"c" * 32, expires: float = NOW + 60, grant: OidcGrant = GRANT
) -> OidcCode:
    return OidcCode(digest, grant, "https://app.example.com/cb", "chal", "n-1", NOW, expires)


def token(
    digest: bytes, kind: str = "access", grant: OidcGrant = GRANT, expires: float = NOW + 60
) -> OidcToken:
    return OidcToken(digest, kind, grant, NOW, expires)


def test_code_is_used_once_and_a_replay_revokes_its_tokens(storage: Storage) -> None:
    storage.add_oidc_code(code())
    found, stored = storage.redeem_oidc_code(b"c" * 32, NOW)
    assert found is CodeRedemption.REDEEMED
    assert stored == code()
    storage.add_oidc_tokens([token(b"a" * 32), token(b"r" * 32, "refresh")])
    other = OidcGrant("app", "bob", "openid", NOW, "pwd", "fam2")
    storage.add_oidc_tokens([token(b"b" * 32, grant=other)])
    found, _ = storage.redeem_oidc_code(b"c" * 32, NOW)
    assert found is CodeRedemption.REPLAYED
    assert storage.oidc_token(b"a" * 32).revoked  # type: ignore[union-attr]
    assert storage.oidc_token(b"r" * 32).revoked  # type: ignore[union-attr]
    assert not storage.oidc_token(b"b" * 32).revoked  # type: ignore[union-attr]


def test_unknown_and_expired_codes(storage: Storage) -> None:
    assert storage.redeem_oidc_code(b"x" * 32, NOW) == (CodeRedemption.UNKNOWN, None)
    storage.add_oidc_code(code(expires=NOW))
    assert storage.redeem_oidc_code(b"c" * 32, NOW)[0] is CodeRedemption.UNKNOWN


def test_parallel_redemptions_one_wins(storage: Storage) -> None:
    """Eight threads redeem one code: exactly one gets it, the rest see a replay."""
    storage.add_oidc_code(code())
    results: list[CodeRedemption] = []
    barrier = threading.Barrier(8)

    def redeem() -> None:
        barrier.wait()
        results.append(storage.redeem_oidc_code(b"c" * 32, NOW)[0])

    threads = [threading.Thread(target=redeem) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results.count(CodeRedemption.REDEEMED) == 1
    assert results.count(CodeRedemption.REPLAYED) == 7


def test_refresh_rotation_and_reuse(storage: Storage) -> None:
    storage.add_oidc_tokens([token(b"a1" * 16), token(b"r1" * 16, "refresh")])
    new = [token(b"a2" * 16), token(b"r2" * 16, "refresh")]
    found, old = storage.rotate_oidc_refresh(b"r1" * 16, NOW, lambda old: new)
    assert found is Rotation.ROTATED
    assert old is not None
    assert old.grant == GRANT
    assert storage.oidc_token(b"r1" * 16).used  # type: ignore[union-attr]
    assert not storage.oidc_token(b"r2" * 16).revoked  # type: ignore[union-attr]
    # the rotated one again: the whole family is revoked, the new pair included
    found, _ = storage.rotate_oidc_refresh(b"r1" * 16, NOW, lambda old: [])
    assert found is Rotation.REUSED
    for digest in (b"a1" * 16, b"a2" * 16, b"r2" * 16):
        assert storage.oidc_token(digest).revoked  # type: ignore[union-attr]
    assert storage.rotate_oidc_refresh(b"r2" * 16, NOW, lambda old: [])[0] is Rotation.REUSED
    # an access token is no refresh token; an unknown or expired one rotates nothing
    assert storage.rotate_oidc_refresh(b"a1" * 16, NOW, lambda old: [])[0] is Rotation.UNKNOWN
    assert storage.rotate_oidc_refresh(b"zz" * 16, NOW, lambda old: [])[0] is Rotation.UNKNOWN
    late = OidcGrant("app", "alice", "openid", NOW, "pwd", "fam9")
    storage.add_oidc_tokens([token(b"r9" * 16, "refresh", late, expires=NOW)])
    assert storage.rotate_oidc_refresh(b"r9" * 16, NOW, lambda old: [])[0] is Rotation.UNKNOWN


def test_parallel_rotations_one_wins(storage: Storage) -> None:
    storage.add_oidc_tokens([token(b"r1" * 16, "refresh")])
    results: list[Rotation] = []
    barrier = threading.Barrier(6)
    lock = threading.Lock()
    counter = iter(range(100))

    def issue(old: OidcToken) -> list[OidcToken]:
        with lock:
            n = next(counter)
        return [token(bytes([n]) * 32, "refresh")]

    def rotate() -> None:
        barrier.wait()
        results.append(storage.rotate_oidc_refresh(b"r1" * 16, NOW, issue)[0])

    threads = [threading.Thread(target=rotate) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results.count(Rotation.ROTATED) == 1
    assert results.count(Rotation.REUSED) == 5


def test_revocation(storage: Storage) -> None:
    storage.add_oidc_tokens([token(b"a" * 32), token(b"r" * 32, "refresh")])
    assert storage.revoke_oidc_token(b"a" * 32, family=False)
    assert not storage.oidc_token(b"r" * 32).revoked  # type: ignore[union-attr]
    assert storage.revoke_oidc_token(b"r" * 32, family=True)
    assert storage.oidc_token(b"r" * 32).revoked  # type: ignore[union-attr]
    assert not storage.revoke_oidc_token(b"z" * 32, family=True)
    bob = OidcGrant("app", "bob", "openid", NOW, "pwd", "famb")
    storage.add_oidc_tokens([token(b"b1" * 16, grant=bob), token(b"b2" * 16, "refresh", bob)])
    assert storage.revoke_oidc_user("bob") == 2
    assert storage.revoke_oidc_user("bob") == 0


def test_subject_is_stable_and_first_writer_wins(storage: Storage) -> None:
    assert storage.oidc_subject("alice", lambda: "s-1") == "s-1"
    assert storage.oidc_subject("alice", lambda: "s-2") == "s-1"
    assert storage.oidc_subject("bob", lambda: "s-3") == "s-3"


def test_consents_expire_and_are_replaced(storage: Storage) -> None:
    assert storage.oidc_consent("alice", "app", NOW) is None
    storage.save_oidc_consent("alice", "app", "openid", now=NOW, expires=NOW + 10)
    storage.save_oidc_consent("alice", "app", "openid email", now=NOW, expires=NOW + 10)
    assert storage.oidc_consent("alice", "app", NOW) == "openid email"
    assert storage.oidc_consent("alice", "other", NOW) is None
    assert storage.oidc_consent("alice", "app", NOW + 10) is None


def test_purge_and_copy_listing(storage: Storage) -> None:
    storage.add_oidc_code(code(expires=NOW - 1))
    storage.add_oidc_tokens([token(b"a" * 32, expires=NOW - 1), token(b"b" * 32)])
    storage.save_oidc_consent("alice", "app", "openid", now=NOW, expires=NOW - 1)
    assert storage.purge_oidc(NOW) == 3
    assert storage.oidc_token(b"b" * 32) is not None
    assert {"oidc_codes", "oidc_tokens", "oidc_consents", "oidc_subjects"} <= set(storage.tables())
    rows = storage.rows("oidc_tokens")
    assert rows[0][0] == b"b" * 32
