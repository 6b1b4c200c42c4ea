"""One-time codes and signed single-use tokens (server/core/otc.py) on a real storage database."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import secrets
import sqlite3
import typing as t
from pathlib import Path

import pytest

from server.core.config import StorageConfig
from server.core.otc import ALPHABET
from server.core.otc import CODE_LENGTH
from server.core.otc import KEEP_EXPIRED
from server.core.otc import InvalidToken
from server.core.otc import OneTimeCodes
from server.core.otc import SignedTokens
from server.core.otc import derive_key
from server.core.otc import new_code
from server.core.otc import normalise_code
from server.core.storage import Storage
from server.core.storage import StorageError

SESSION = "S" * 43
OTHER_SESSION = "T" * 43


@pytest.fixture
def storage(tmp_path: Path, clock: t.Any) -> t.Iterator[Storage]:
    """A fresh storage database with its key file."""
    key = tmp_path / "storage.key"
    key.write_text(secrets.token_hex(32))
    key.chmod(0o600)
    store = Storage(StorageConfig(tmp_path / "authctl.db", key), now=clock)
    yield store
    store.close()


@pytest.fixture
def codes(storage: Storage, clock: t.Any) -> OneTimeCodes:
    """One-time codes over the storage."""
    return OneTimeCodes(storage, derive_key(b"k" * 32, "one-time codes"), now=clock)


@pytest.fixture
def tokens(storage: Storage, clock: t.Any) -> SignedTokens:
    """Signed tokens over the storage."""
    return SignedTokens(storage, derive_key(b"k" * 32, "signed tokens"), now=clock)


def rows(storage: Storage) -> list[tuple[t.Any, ...]]:
    """Every row of one_time_codes, as stored in the file."""
    with contextlib.closing(raw(storage)) as conn:
        return [tuple(r) for r in conn.execute("SELECT * FROM one_time_codes")]


def raw(storage: Storage) -> sqlite3.Connection:
    """A plain SQLite connection to the file, as someone holding it would open it."""
    return sqlite3.connect(storage.path, isolation_level=None)


def check(codes: OneTimeCodes, code_id: str, code: str, **kw: t.Any) -> bool:
    """Check a code for alice's elevation from SESSION unless told otherwise."""
    args: dict[str, t.Any] = {
        "username": "alice",
        "intent": "elevation",
        "session_id": SESSION,
        "ip": "192.0.2.1",
    }
    args.update(kw)
    return codes.check(code_id, code, **args)


# --------------------------------------------------------------------------- codes


def test_codes_use_authelias_alphabet() -> None:
    """Codes are 8 characters from the unambiguous alphabet, and differ from one another."""
    seen = {new_code() for _ in range(200)}
    assert len(seen) == 200
    assert all(len(c) == CODE_LENGTH and set(c) <= set(ALPHABET) for c in seen)
    assert not set("015IOS") & set(ALPHABET)


def test_normalise_trims_and_uppercases() -> None:
    """Typed codes are trimmed and upper-cased before the comparison."""
    assert normalise_code("  abcd2346\n") == "ABCD2346"


def test_code_works_once(codes: OneTimeCodes) -> None:
    """The right code from the right session works exactly once."""
    issued = codes.issue("alice", "elevation", session_id=SESSION, ip="192.0.2.1")
    assert issued.code not in repr(issued)
    assert check(codes, issued.id, issued.code.lower() + " ")
    assert not check(codes, issued.id, issued.code)


def test_database_holds_no_code_and_no_session_id(codes: OneTimeCodes, storage: Storage) -> None:
    """Only keyed digests are stored: neither the code nor the session id appear in the row."""
    issued = codes.issue("alice", "elevation", session_id=SESSION)
    (row,) = rows(storage)
    flat = b"".join(v if isinstance(v, bytes) else str(v).encode() for v in row)
    assert issued.code.encode() not in flat
    assert SESSION.encode() not in flat


def test_code_expires(codes: OneTimeCodes, clock: t.Any) -> None:
    """A code is dead after its lifetime (5 minutes)."""
    issued = codes.issue("alice", "elevation", session_id=SESSION)
    clock.advance(300)
    assert not check(codes, issued.id, issued.code)


def test_code_is_bound_to_session_user_and_intent(codes: OneTimeCodes) -> None:
    """Another session, user or intent cannot use the code, and does not spend it."""
    issued = codes.issue("alice", "elevation", session_id=SESSION)
    assert not check(codes, issued.id, issued.code, session_id=OTHER_SESSION)
    assert not check(codes, issued.id, issued.code, username="bob")
    assert not check(codes, issued.id, issued.code, intent="other")
    assert not check(codes, "no-such-id", issued.code)
    assert check(codes, issued.id, issued.code)


def test_code_dies_after_five_wrong_tries(codes: OneTimeCodes, storage: Storage) -> None:
    """Five wrong codes kill it: the right one then fails too."""
    issued = codes.issue("alice", "elevation", session_id=SESSION)
    for _ in range(5):
        assert not check(codes, issued.id, "WRONG234")
    assert not check(codes, issued.id, issued.code)
    assert [c.attempts for c in storage.one_time_codes()] == [5]


def test_parallel_checks_one_winner(codes: OneTimeCodes) -> None:
    """Of 20 parallel submissions of the right code exactly one wins."""
    issued = codes.issue("alice", "elevation", session_id=SESSION)
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: check(codes, issued.id, issued.code), range(20)))
    assert results.count(True) == 1


def test_revoke(codes: OneTimeCodes) -> None:
    """A revoked code is dead; revoking twice reports nothing more."""
    issued = codes.issue("alice", "elevation", session_id=SESSION)
    assert codes.revoke(issued.id)
    assert not codes.revoke(issued.id)
    assert not check(codes, issued.id, issued.code)


def test_old_rows_are_purged(codes: OneTimeCodes, storage: Storage, clock: t.Any) -> None:
    """Issuing purges rows that expired more than a day ago."""
    codes.issue("alice", "elevation", session_id=SESSION)
    clock.advance(KEEP_EXPIRED + 3600)
    codes.issue("bob", "elevation", session_id=SESSION)
    assert [c.username for c in storage.one_time_codes()] == ["bob"]


def test_storage_failure_raises(codes: OneTimeCodes, storage: Storage) -> None:
    """A closed storage raises StorageError (the caller fails closed)."""
    storage.close()
    with pytest.raises(StorageError):
        codes.issue("alice", "elevation", session_id=SESSION)


# --------------------------------------------------------------------------- tokens


def test_token_consumed_once(tokens: SignedTokens) -> None:
    """A token is accepted once; the replay is refused."""
    token = tokens.issue("alice", "reset_password", stamp="s1", ip="192.0.2.1")
    claims = tokens.consume(token, "reset_password", ip="192.0.2.2")
    assert claims.username == "alice"
    assert claims.intent == "reset_password"
    assert tokens.matches_stamp(claims, "s1")
    assert not tokens.matches_stamp(claims, "s2")
    with pytest.raises(InvalidToken, match="used"):
        tokens.consume(token, "reset_password")


def test_token_expires(tokens: SignedTokens, clock: t.Any) -> None:
    """After its lifetime (5 minutes) a token is refused, even unused."""
    token = tokens.issue("alice", "reset_password", stamp="s")
    clock.advance(299)
    tokens.verify(token, "reset_password")
    clock.advance(1)
    with pytest.raises(InvalidToken, match="expired"):
        tokens.consume(token, "reset_password")


def flip(text: str, index: int) -> str:
    """``text`` with one base64url character changed at ``index``."""
    char = text[index]
    return text[:index] + ("A" if char != "A" else "B") + text[index + 1 :]


def test_tampered_tokens_are_refused(tokens: SignedTokens) -> None:
    """Flipping a byte of the signature or of the payload breaks the token."""
    token = tokens.issue("alice", "reset_password", stamp="s")
    payload, mac = token.split(".")
    for bad in (
        f"{payload}.{flip(mac, 5)}",
        f"{flip(payload, 3)}.{mac}",
        f"{flip(payload, len(payload) - 2)}.{mac}",
    ):
        with pytest.raises(InvalidToken, match="signature"):
            tokens.consume(bad, "reset_password")
    tokens.consume(token, "reset_password")  # the original still works


def test_forged_payload_is_refused(tokens: SignedTokens) -> None:
    """A payload naming another user, re-encoded with the old signature, is refused."""
    token = tokens.issue("bob", "reset_password", stamp="s")
    payload, mac = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "alice"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    with pytest.raises(InvalidToken):
        tokens.consume(f"{forged}.{mac}", "reset_password")


def test_token_from_another_key_is_refused(tokens: SignedTokens, storage: Storage) -> None:
    """A token signed with another installation's key is refused."""
    other = SignedTokens(storage, derive_key(b"x" * 32, "signed tokens"))
    token = other.issue("alice", "reset_password", stamp="s")
    with pytest.raises(InvalidToken, match="signature"):
        tokens.verify(token, "reset_password")


def test_token_for_another_intent_is_refused(tokens: SignedTokens) -> None:
    """A token issued for one purpose cannot be used for another."""
    token = tokens.issue("alice", "something_else", stamp="s")
    with pytest.raises(InvalidToken, match="another purpose"):
        tokens.consume(token, "reset_password")


def test_unknown_jti_is_refused(tokens: SignedTokens, storage: Storage) -> None:
    """A well-signed token whose jti is not in the database (purged, restored) is refused."""
    token = tokens.issue("alice", "reset_password", stamp="s")
    with contextlib.closing(raw(storage)) as conn:
        conn.execute("DELETE FROM one_time_codes")
    with pytest.raises(InvalidToken, match="unknown"):
        tokens.consume(token, "reset_password")


def test_row_of_another_user_is_refused(tokens: SignedTokens, storage: Storage) -> None:
    """A jti row that does not match the token's user is refused (a tampered database)."""
    token = tokens.issue("alice", "reset_password", stamp="s")
    with contextlib.closing(raw(storage)) as conn:
        conn.execute("UPDATE one_time_codes SET username = 'bob'")
    with pytest.raises(InvalidToken):
        tokens.consume(token, "reset_password")


def test_revoke_token(tokens: SignedTokens) -> None:
    """A revoked token can no longer be consumed, nor revoked again."""
    token = tokens.issue("alice", "reset_password", stamp="s")
    assert tokens.revoke(token, "reset_password", ip="192.0.2.9").username == "alice"
    with pytest.raises(InvalidToken):
        tokens.consume(token, "reset_password")
    with pytest.raises(InvalidToken):
        tokens.revoke(token, "reset_password")


def test_revoke_without_ip(tokens: SignedTokens, storage: Storage) -> None:
    """Revocation records who revoked, or just that it was revoked."""
    token = tokens.issue("alice", "reset_password", stamp="s")
    tokens.revoke(token, "reset_password")
    assert [c.consumed_ip for c in storage.one_time_codes()] == ["revoked"]


@pytest.mark.parametrize(
    "token",
    [
        None,
        123,
        ["a.b"],
        "",
        "nodot",
        "a.b",
        "x" * 2000,
        "aaaaaaaaaaaaaaaaaaaa." + "=" * 43,
        "aaaaaaaaaaaaaaaaaaaa.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
        "aaaaaaaaaaaaaaaaaaaa.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ],
    ids=["none", "int", "list", "empty", "no-dot", "short", "huge", "padding", "newline", "zeros"],
)
def test_malformed_tokens_are_refused(tokens: SignedTokens, token: object) -> None:
    """Anything that is not a well-formed token is refused before any database work."""
    with pytest.raises(InvalidToken):
        tokens.verify(token, "reset_password")


def test_signature_padding_bits_are_refused(tokens: SignedTokens) -> None:
    """A signature whose unused trailing bits differ (same bytes once decoded) is refused."""
    token = tokens.issue("alice", "reset_password", stamp="s")
    payload, mac = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(mac[-1])
    twin = mac[:-1] + alphabet[last ^ 1]  # flips one of the 2 padding bits of the last char
    assert base64.urlsafe_b64decode(twin + "=") == base64.urlsafe_b64decode(mac + "=")
    with pytest.raises(InvalidToken, match="signature"):
        tokens.verify(f"{payload}.{twin}", "reset_password")


def signed(tokens: SignedTokens, payload: bytes) -> str:
    """A token with our own key around an arbitrary payload (what a key holder could make)."""
    encoded = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    mac = base64.urlsafe_b64encode(tokens._mac(encoded)).decode().rstrip("=")
    return f"{encoded}.{mac}"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json at all",
        b"[1, 2, 3, 4, 5, 6, 7, 8]",
        b'{"act": "reset_password"}',
        b'{"act":"reset_password","sub":"a","jti":"j","iat":1,"exp":"9","pst":"p"}',
        b'{"act":"a","act":"b","sub":"a","jti":"j","iat":1,"exp":9,"pst":"p"}',
    ],
    ids=["not-json", "list", "missing-claims", "wrong-type", "duplicate-key"],
)
def test_strict_claims_even_when_signed(tokens: SignedTokens, payload: bytes) -> None:
    """Signed payloads still get strict JSON and exact claim types."""
    with pytest.raises(InvalidToken, match="bad"):
        tokens.verify(signed(tokens, payload), "reset_password")


def test_keys_differ_per_purpose() -> None:
    """Each purpose gets its own key from the same material, and other material differs."""
    material = b"m" * 32
    assert derive_key(material, "a") != derive_key(material, "b")
    assert derive_key(material, "a") == derive_key(material, "a")
    assert derive_key(b"n" * 32, "a") != derive_key(material, "a")
    assert len(derive_key(material, "a")) == 32


def test_table_is_shared_with_storage_schema(storage: Storage) -> None:
    """The rows live in the storage database's one_time_codes table (no schema of our own)."""
    conn = sqlite3.connect(storage.path)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert "one_time_codes" in names
