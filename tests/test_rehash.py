"""Authelia's users keep their hashes: the first sign-in rewrites a legacy hash as argon2id.

Over the real app (portal API, real users file, the locked writer) and, for the concurrent edit,
the real ``authctl user groups`` in another process (SPEC §7.5).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import re
import subprocess
import sys
import threading
import time
import typing as t
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
from argon2.low_level import Type
from argon2.low_level import hash_secret
from argon2.low_level import hash_secret_raw
from passlib.hash import pbkdf2_sha512
from passlib.hash import sha256_crypt
from passlib.hash import sha512_crypt

import server.core.signin
from server.core.hashcap import HashTimer
from server.core.passwords import is_legacy
from server.core.passwords import scheme_of
from server.core.userfile import UsersFile
from tests.apphelpers import PASSWORDS
from tests.apphelpers import Harness
from tests.apphelpers import build
from tests.conftest import ROOT

AUTHCTL = Path(sys.executable).parent / "authctl"
CONFIGURED_PREFIX = "$argon2id$v=19$m=8,t=1,p=1$"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _scrypt(password: str) -> str:
    salt = os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=16, r=8, p=1, dklen=32)
    return f"$scrypt$ln=4,r=8,p=1${_b64(salt)}${_b64(key)}"


def _argon2id_without_t(password: str) -> str:
    salt = os.urandom(16)
    key = hash_secret_raw(password.encode(), salt, 1, 8, 1, 32, Type.ID)  # t=1: go-crypt's default
    return f"$argon2id$v=19$m=8,p=1${_b64(salt)}${_b64(key)}"


#: Legacy hashes of a password, made by the reference tools, one per scheme.
MAKERS: dict[str, Callable[[str], str]] = {
    "bcrypt": lambda pw: bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode(),
    "sha512-crypt": lambda pw: sha512_crypt.using(rounds=1000).hash(pw),
    "sha256-crypt": lambda pw: sha256_crypt.using(rounds=1000).hash(pw),
    "pbkdf2-sha512": lambda pw: pbkdf2_sha512.using(rounds=1000).hash(pw),
    "scrypt": _scrypt,
    "argon2i": lambda pw: hash_secret(pw.encode(), os.urandom(16), 1, 8, 1, 32, Type.I).decode(),
    "argon2id": _argon2id_without_t,
}


@pytest.fixture
def h(tmp_path: Path, clock: t.Any) -> Harness:
    return build(tmp_path, clock)


def file_hash(h: Harness, user: str) -> str:
    found = re.search(
        rf'\[users\.{user}\][^\[]*?password = "([^"]+)"',
        h.config.users.file.read_text(encoding="utf-8"),
    )
    assert found is not None
    return found.group(1)


def give_legacy_hash(h: Harness, user: str, scheme: str) -> str:
    """Store a legacy hash of ``user``'s password (as an import from Authelia would)."""
    old = file_hash(h, user)
    new = MAKERS[scheme](PASSWORDS[user])
    assert is_legacy(new)
    assert scheme_of(new) == scheme
    h.rewrite_users(h.config.users.file.read_text(encoding="utf-8").replace(old, new))
    return new


def sign_in(h: Harness, user: str, password: str) -> t.Any:
    return h.api("/api/firstfactor", {"username": user, "password": password})


def cli(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run the real ``authctl --config CONFIG ARGS``."""
    return subprocess.run(
        [str(AUTHCTL), "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=50,
        check=False,
    )


@pytest.mark.parametrize("scheme", list(MAKERS))
def test_first_sign_in_rewrites_a_legacy_hash_as_argon2id(
    h: Harness, scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A user with a legacy hash signs in with the password they had; the file then holds an
    argon2id hash with the configured parameters, the session works, other users' entries
    are untouched byte for byte, and the next sign-in uses the new hash."""
    old = give_legacy_hash(h, "bob", scheme)
    before = h.config.users.file.read_text(encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="authctl.signin"):
        resp = sign_in(h, "bob", PASSWORDS["bob"])
    assert resp.status_int == 200, resp.text
    new = file_hash(h, "bob")
    assert new != old
    assert new.startswith(CONFIGURED_PREFIX)
    assert scheme_of(new) == "argon2id"
    assert not is_legacy(new)
    assert h.hasher.verify(new, PASSWORDS["bob"])
    after = h.config.users.file.read_text(encoding="utf-8")
    for other in ("[users.alice]", "[users.carol]"):
        block = before[before.index(other) :].split("\n\n", 1)[0]
        assert block in after
    assert f"rehashed as argon2id with the configured parameters (was {scheme})" in caplog.text
    cookie = str(resp.headers["Set-Cookie"]).split(";", 1)[0]
    assert h.forward_auth("https://app.example.com/", cookie=cookie).status_int == 200
    assert sign_in(h, "bob", PASSWORDS["bob"]).status_int == 200
    assert file_hash(h, "bob") == new


@pytest.mark.parametrize("scheme", ["bcrypt", "sha512-crypt"])
def test_a_wrong_password_leaves_the_legacy_hash(h: Harness, scheme: str) -> None:
    """Only a successful check rewrites: a wrong password is refused and changes nothing."""
    old = give_legacy_hash(h, "bob", scheme)
    assert sign_in(h, "bob", PASSWORDS["bob"] + "x").status_int == 401
    assert file_hash(h, "bob") == old


def _held_rehash(h: Harness) -> tuple[threading.Event, threading.Event]:
    """Make the sign-in pause after hashing the new argon2id, before it is written."""
    real_hash = h.hasher.hash
    hashed, go = threading.Event(), threading.Event()

    def slow_hash(password: str) -> str:
        phc = real_hash(password)
        hashed.set()
        assert go.wait(30)
        return phc

    h.hasher.hash = slow_hash  # type: ignore[method-assign]
    return hashed, go


@pytest.mark.slow
@pytest.mark.parametrize("edit", ["groups", "passwd"])
def test_a_concurrent_cli_edit_during_the_rehash_is_not_lost(h: Harness, edit: str) -> None:
    """``authctl user groups`` (or ``user passwd``), run by another process between the
    password check and the rewrite, is kept: the rewrite re-reads the file under the lock,
    keeps the new groups beside the new hash, and never overwrites a new password."""
    give_legacy_hash(h, "bob", "bcrypt")
    hashed, go = _held_rehash(h)
    answer: list[int] = []
    thread = threading.Thread(
        target=lambda: answer.append(sign_in(h, "bob", PASSWORDS["bob"]).status_int)
    )
    thread.start()
    try:
        assert hashed.wait(30)
        config = h.config.users.file.parent / "authctl.toml"
        if edit == "groups":
            done = cli(config, "user", "groups", "bob", "--add", "ops")
        else:
            done = cli(
                config, "user", "passwd", "bob", "--password-stdin", "--force", stdin="newer-pw\n"
            )
        assert done.returncode == 0, done.stderr
    finally:
        go.set()
        thread.join()
    assert answer == [200]
    db = UsersFile(h.config.users.file).read()
    if edit == "groups":
        assert db["bob"].groups == ("dev", "ops")
        assert db["bob"].password.startswith(CONFIGURED_PREFIX)
    else:
        assert h.hasher.verify(db["bob"].password, "newer-pw")
        assert not h.hasher.verify(db["bob"].password, PASSWORDS["bob"])


def test_a_failed_rewrite_is_logged_and_the_sign_in_succeeds(
    h: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another writer holds the users file's lock past the rehash's wait: the sign-in still
    succeeds (within the bounded wait), the failure is logged, the legacy hash stays, and the
    next sign-in after the lock is free rewrites it."""
    old = give_legacy_hash(h, "bob", "sha512-crypt")
    monkeypatch.setattr(server.core.signin, "REHASH_LOCK_SECONDS", 0.3)
    fd = os.open(UsersFile(h.config.users.file).lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as `authctl user …` in another process would
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="authctl.signin"):
            resp = sign_in(h, "bob", PASSWORDS["bob"])
        took = time.monotonic() - started
    finally:
        os.close(fd)
    assert resp.status_int == 200, resp.text
    assert took < 10
    assert "password not rehashed" in caplog.text
    assert file_hash(h, "bob") == old
    cookie = str(resp.headers["Set-Cookie"]).split(";", 1)[0]
    assert h.forward_auth("https://app.example.com/", cookie=cookie).status_int == 200
    assert sign_in(h, "bob", PASSWORDS["bob"]).status_int == 200
    assert file_hash(h, "bob").startswith(CONFIGURED_PREFIX)


def test_a_broken_file_on_disk_does_not_fail_the_sign_in(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """The file was broken by hand after the server read it: the server signs the user in
    from its last good copy, and the rewrite, which cannot read the file, is only logged."""
    give_legacy_hash(h, "bob", "bcrypt")
    broken = h.config.users.file.read_text(encoding="utf-8") + "\n[users.dave\n"
    h.config.users.file.write_text(broken, encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="authctl.signin"):
        assert sign_in(h, "bob", PASSWORDS["bob"]).status_int == 200
    assert "password not rehashed" in caplog.text
    assert h.config.users.file.read_text(encoding="utf-8") == broken


def test_failed_sign_ins_of_a_cheap_legacy_hash_look_like_unknown_users(h: Harness) -> None:
    """A wrong password for a user whose legacy hash is far cheaper than the configured
    argon2id (sha256-crypt, 1,000 rounds: well under a millisecond) takes the padded time of
    a configured verify, as an unknown user's does."""
    give_legacy_hash(h, "bob", "sha256-crypt")
    h.app.portal.identities.signin.timer = timer = HashTimer()
    for _ in range(16):
        timer.add(0.15)
    for user in ("bob", "nobody"):
        started = time.monotonic()
        assert sign_in(h, user, "wrong").status_int == 401
        assert time.monotonic() - started >= 0.14, user
