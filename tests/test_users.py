"""Tests for server.core.users: loading and validating users.toml, and the server's live copy."""

from __future__ import annotations

import logging
import os
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from server.core.config import PasswordHashConfig
from server.core.errors import Problem
from server.core.errors import UserStoreError
from server.core.names import USERNAME_PATTERN
from server.core.names import canonical_username
from server.core.names import check_username
from server.core.passwords import PasswordHasher
from server.core.users import User
from server.core.users import UserDatabase
from server.core.users import UsersSource
from server.core.users import key_path
from server.core.users import load_users
from server.core.users import mode_warning
from tests.conftest import ROOT
from tests.conftest import Clock

HASHER = PasswordHasher(PasswordHashConfig(memory_kib=8, iterations=1, parallelism=1))
HASH = HASHER.hash("pw")
SALT_TAG = "c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"

GOOD = f"""\
# the team
[users.alice]
displayname = "Alice Liddell"
password = "{HASH}"
email = "alice@example.com"
groups = ["admins", "dev"]
disabled = false

[users.Bob]
password = "{HASH}"
disabled = true
"""


def write(tmp_path: Path, content: str | bytes) -> Path:
    """Write ``content`` to ``users.toml`` in ``tmp_path`` and return its path."""
    path = tmp_path / "users.toml"
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def entry(body: str, name: str = "alice") -> str:
    """A one-user file whose entry holds ``body`` after a valid password line."""
    return f'[users.{name}]\npassword = "{HASH}"\n{body}\n'


def test_load_good_file(tmp_path: Path) -> None:
    """A valid file loads into User values with canonical names and defaults."""
    db = load_users(write(tmp_path, GOOD))
    assert len(db) == 2
    assert list(db) == ["alice", "bob"]
    assert db["alice"] == User(
        name="alice",
        password=HASH,
        displayname="Alice Liddell",
        email="alice@example.com",
        groups=("admins", "dev"),
        disabled=False,
    )
    assert db["bob"] == User(name="bob", password=HASH, disabled=True)
    assert db.users == (db["alice"], db["bob"])
    assert db.warnings == ()


@pytest.mark.parametrize(
    "spelling",
    ["alice", "Alice", "ALICE", "\uff21\uff2c\uff29\uff23\uff25", "\uff41\uff4c\uff49\uff43\uff45"],
    ids=["lower", "title", "upper", "fullwidth-upper", "fullwidth"],
)
def test_lookup_canonicalises(tmp_path: Path, spelling: str) -> None:
    """get() finds a user whatever the case or width of the name asked for."""
    db = load_users(write(tmp_path, GOOD))
    found = db.get(spelling)
    assert found is not None
    assert found.name == "alice"
    assert spelling in db


def test_lookup_misses(tmp_path: Path) -> None:
    """Unknown names and non-strings find nothing."""
    db = load_users(write(tmp_path, GOOD))
    assert db.get("carol") is None
    assert db.get(t_any(3)) is None
    with pytest.raises(KeyError):
        db["carol"]


def t_any(value: object) -> str:
    """Pretend ``value`` is a str, to test behaviour on wrong input types."""
    return value  # type: ignore[return-value]


def test_empty_users_table_is_valid(tmp_path: Path) -> None:
    """A file with just ``[users]`` (as init writes it) is a valid, empty database."""
    db = load_users(write(tmp_path, "# nobody yet\n[users]\n"))
    assert len(db) == 0
    assert db.users == ()


def test_duplicate_user_objects_refused() -> None:
    """A UserDatabase cannot hold one name twice."""
    user = User(name="alice", password=HASH)
    with pytest.raises(ValueError, match="twice"):
        UserDatabase([user, user])


def test_as_json_never_has_the_hash() -> None:
    """The public view lists the five fields and not the password."""
    user = User(name="alice", password=HASH, groups=("dev",))
    assert user.as_json() == {
        "username": "alice",
        "displayname": "",
        "email": "",
        "groups": ["dev"],
        "disabled": False,
    }


def test_unknown_keys_are_kept_and_warned(tmp_path: Path) -> None:
    """Unknown keys under a user are kept in ``extra`` and reported as warnings, not errors."""
    db = load_users(
        write(tmp_path, entry('disbled = true\nphone = "123"\n[users.alice.extra]\nx = 1'))
    )
    user = db["alice"]
    assert user.extra == {"disbled": True, "phone": "123", "extra": {"x": 1}}
    assert not user.disabled
    keys = [w.key for w in db.warnings]
    assert keys == ["users.alice.disbled", "users.alice.phone", "users.alice.extra"]
    assert "did you mean 'disabled'?" in str(db.warnings[0])
    assert db.warnings[0].line == 3
    assert all(w.severity == "warning" for w in db.warnings)


def test_unknown_top_level_key_is_a_warning(tmp_path: Path) -> None:
    """An unknown top-level key is kept and warned about."""
    db = load_users(write(tmp_path, "version = 2\n[users]\n"))
    assert [w.key for w in db.warnings] == ["version"]


def test_many_unknown_keys_are_summed_up(tmp_path: Path) -> None:
    """More than 20 unknown-key warnings collapse into one summary line."""
    body = "\n".join(f"k{i} = {i}" for i in range(25))
    db = load_users(write(tmp_path, entry(body)))
    assert len(db.warnings) == 21
    assert "5 more" in db.warnings[-1].message


def test_groups_are_deduplicated(tmp_path: Path) -> None:
    """A group listed twice is kept once, in first-seen order."""
    db = load_users(write(tmp_path, entry('groups = ["dev", "admins", "dev"]')))
    assert db["alice"].groups == ("dev", "admins")


def test_example_file_loads() -> None:
    """users.toml.example loads (alice in admins and dev, bob disabled) and its hashes verify."""
    db = load_users(ROOT / "users.toml.example")
    assert db["alice"].groups == ("admins", "dev")
    assert db["bob"].disabled
    assert db.warnings == ()
    hasher = PasswordHasher()
    assert hasher.verify(db["alice"].password, "alice-example-password")
    assert hasher.verify(db["bob"].password, "bob-example-password")


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("users", "alice", "groups", 1), "users.alice.groups[1]"),
        (("users", "Al ice"), 'users."Al ice"'),
        (("users", "j.doe", "email"), 'users."j.doe".email'),
    ],
    ids=["bare", "space", "dot"],
)
def test_key_path(parts: tuple[str | int, ...], expected: str) -> None:
    """Key paths quote names that are not bare TOML keys."""
    assert key_path(*parts) == expected


# --------------------------------------------------------------------------- malformed files

FULLWIDTH_ALICE = "".join(chr(ord(c) + 0xFEE0) for c in "ALICE")  # U+FF21 …
BIG_M = f"$argon2id$v=19$m=4194304,t=1,p=1${SALT_TAG}"
BIG_T = f"$argon2id$v=19$m=8,t=1000,p=1${SALT_TAG}"
BIG_P = f"$argon2id$v=19$m=65536,t=1,p=255${SALT_TAG}"
ARGON2I = f"$argon2i$v=19$m=4194304,t=1,p=1${SALT_TAG}"
BCRYPT = "$2b$16$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"
SHA512_CRYPT = "$6$rounds=999999999$saltsalt$" + "a" * 86
PBKDF2 = "$pbkdf2-sha512$3000001$c2FsdHNhbHQ$" + "a" * 86
SCRYPT = f"$scrypt$ln=20,r=8,p=1${SALT_TAG}"
ALICE_PW = "users.alice.password"


def pw(value: str) -> str:
    """A one-user file whose password line holds ``value`` (TOML) on line 2."""
    return f"[users.alice]\npassword = {value}\n"


MALFORMED: list[tuple[str, str | bytes | None, str, str, int | None]] = [
    # (id, content (None: no file; "<dir>": a folder), key ("": any), message part, line)
    ("truncated", pw('"$argon2'), "", "invalid TOML", 2),
    ("truncated-header", "[users.al", "", "invalid TOML", 1),
    ("bom", b"\xef\xbb\xbf[users]\n", "", "byte-order mark", 1),
    ("non-utf8", b'[users.alice]\ndisplayname = "\xff"\n', "", "not valid UTF-8", 2),
    ("password-int", pw("123"), ALICE_PW, "must be a string", 2),
    ("password-missing", '[users.alice]\nemail = "a@example.com"\n', ALICE_PW, "is required", 1),
    ("groups-not-list", entry('groups = "admins"'), "users.alice.groups", "expected a list", 3),
    ("group-not-string", entry('groups = ["dev", 1]'), "users.alice.groups[1]", "a string", 3),
    ("duplicate-table", GOOD + "[users.alice]\n", "", "invalid TOML", 12),
    ("duplicate-key", entry(f'password = "{HASH}"'), "", "invalid TOML", 3),
    ("missing-file", None, "", "file not found", None),
    ("directory", "<dir>", "", "is a directory", None),
    ("memory-4GiB", pw(f'"{BIG_M}"'), ALICE_PW, "'alice' asks for 4194304 KiB", 2),
    ("t-1000", pw(f'"{BIG_T}"'), ALICE_PW, "1000 iterations", 2),
    ("p-255", pw(f'"{BIG_P}"'), ALICE_PW, "parallelism 255", 2),
    ("argon2i-4GiB", pw(f'"{ARGON2I}"'), ALICE_PW, "'alice' asks for 4194304 KiB", 2),
    ("bcrypt-cost-16", pw(f'"{BCRYPT}"'), ALICE_PW, "cost 16, more than the limit of 15", 2),
    ("sha-crypt-rounds", pw(f'"{SHA512_CRYPT}"'), ALICE_PW, "more than the limit of 2,000,000", 2),
    ("pbkdf2-iterations", pw(f'"{PBKDF2}"'), ALICE_PW, "more than the limit of 3,000,000", 2),
    ("scrypt-2^23", pw(f'"{SCRYPT}"'), ALICE_PW, "2^20*8*1, more than the limit of 2^22", 2),
    ("md5-crypt", pw('"$1$saltsalt$qjXMvbEw8oaL.CzflDugX/"'), ALICE_PW, "md5-crypt", 2),
    ("plain-text", pw('"hunter2"'), ALICE_PW, "plain-text", 2),
    (
        "collision-fullwidth",
        entry("", "Alice") + entry("", f'"{FULLWIDTH_ALICE}"'),
        f'users."{FULLWIDTH_ALICE}"',
        f"'{FULLWIDTH_ALICE}' and 'Alice' are both the user 'alice'",
        None,
    ),
    ("collision-case", entry("") + entry("", "ALICE"), "users.ALICE", "'ALICE' and 'alice'", 4),
    (
        "collision-sharp-s",
        entry("", '"straße"') + entry("", "STRASSE"),
        "users.STRASSE",
        "both the user 'strasse'",
        4,
    ),
    ("group-comma", entry('groups = ["admins,dev"]'), "users.alice.groups[0]", "comma", 3),
    ("group-space", entry('groups = ["a b"]'), "users.alice.groups[0]", "white space", 3),
    ("group-empty", entry('groups = [""]'), "users.alice.groups[0]", "cannot be empty", 3),
    (
        "newline-displayname",
        entry('displayname = "Alice\\nLiddell"'),
        "users.alice.displayname",
        "control character",
        3,
    ),
    ("control-email", entry('email = "a@b.c\\u0000"'), "users.alice.email", "control char", 3),
    (
        "rlo-displayname",
        entry('displayname = "Alice\\u202eecilA"'),
        "users.alice.displayname",
        "the displayname of user 'alice' contains an invisible formatting character U+202E "
        "(RIGHT-TO-LEFT OVERRIDE)",
        3,
    ),
    (
        "zwsp-email",
        entry('email = "al\\u200bice@example.com"'),
        "users.alice.email",
        "the email of user 'alice' contains an invisible formatting character U+200B",
        3,
    ),
    ("bidi-group", entry('groups = ["adm\\u2066ins"]'), "users.alice.groups[0]", "control", 3),
    ("email-not-address", entry('email = "alice"'), "users.alice.email", "not an e-mail", 3),
    ("displayname-int", entry("displayname = 5"), "users.alice.displayname", "a string", 3),
    ("disabled-string", entry('disabled = "yes"'), "users.alice.disabled", "true or false", 3),
    ("username-space", entry("", '"bad name"'), 'users."bad name"', "is invalid", None),
    ("username-leading-dot", entry("", '"_x"'), "users._x", "is invalid", 1),
    ("username-too-long", entry("", "a" * 65), "users." + "a" * 65, "is invalid", 1),
    ("username-comma", entry("", '"a,b"'), 'users."a,b"', "is invalid", None),
    ("user-not-table", '[users]\nalice = "x"\n', "users.alice", "expected a table", 2),
    ("users-not-table", "users = 1\n", "users", "expected a table", 1),
    ("no-users-table", "title = 1\n", "users", "no [users] table", None),
]


@pytest.mark.parametrize(
    ("content", "key", "message", "line"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_users_file(
    tmp_path: Path, content: str | bytes | None, key: str, message: str, line: int | None
) -> None:
    """Each broken users file is refused with the file, the key, the line and a fix."""
    path = tmp_path / "users.toml"
    if content == "<dir>":
        path.mkdir()
    elif content is not None:
        write(tmp_path, content)
    with pytest.raises(UserStoreError) as caught:
        load_users(path)
    problems = caught.value.problems
    # File-level problems (syntax, encoding) may name the key they stopped at, or none.
    matching = [p for p in problems if (not key or p.key == key) and message in p.message]
    assert matching, str(caught.value)
    problem = matching[0]
    assert problem.file == path
    assert str(path) in str(caught.value)
    if line is not None:
        assert problem.line == line, str(caught.value)
        assert f"{path}:{line}" in str(caught.value)
    assert problem.hint


#: One hash of every scheme Authelia writes (password "password"; go-crypt's test vectors).
AUTHELIA_HASHES = {
    "argon2id": "$argon2id$v=19$m=65536,t=3,p=2$BpLnfgDsc2WD8F2q"
    "$o/vzA4myCqZZ36bUGsDY//8mKUYNZZaR0t4MFFSs+iM",
    "argon2i": "$argon2i$v=19$m=65536,t=3,p=4$ScGiEq8Low5K7B7/IwYxgA"
    "$q6Zo0u/aDtZk404ZNmBi33WXkC5g0y60QdOQQ3oziyU",
    "sha512-crypt": "$6$rounds=50000$aFr56HjK3DrB8t3S$zhPQiS85cgBlNhUKKE6n/AHMlpqrvYSnSL3fEVkK0y"
    "HFQ.oFFAd8D4OhPAy18K5U61Z2eBhxQXExGU/eknXlY1",
    "pbkdf2-sha512": "$pbkdf2-sha512$100000$bHfSOIyj0UDoCo1Q4Bz49w$v/olF/T/R6On84NuHlNCiI/sUwsd"
    "yOC7J4cO8Cz7feNtLHHEKNjayeEZj0b/Js/cgkMK6zLFw2vynLo2el028Q",
    "bcrypt": "$2y$10$3o9IF74Phgdz4Q6j7K7s0unovt.v.7YBLKFyV73pGTd2.tfdz/F8e",
    "scrypt": "$scrypt$ln=4,r=8,p=1$ySYknWRq9On6wWfpsOUQQg"
    "$C28LpWaXQ3P0/dcbN0njxJx4VL/UCQIAWlnYAJgT/mY",
}


def test_authelia_hashes_load(tmp_path: Path) -> None:
    """A users file holding every scheme Authelia writes loads; each user keeps the hash."""
    text = "".join(
        f'[users.user-{n}]\npassword = "{stored}"\n\n'
        for n, stored in enumerate(AUTHELIA_HASHES.values())
    )
    db = load_users(write(tmp_path, text))
    assert [u.password for u in db.users] == list(AUTHELIA_HASHES.values())


def test_refused_legacy_hash_names_file_line_user_and_fix(tmp_path: Path) -> None:
    """A legacy hash over its cost bound is an error naming the file, the line, the user, the
    bound and the fix."""
    text = GOOD + f'\n[users.carol]\ngroups = []\npassword = "{BCRYPT}"\n'
    path = write(tmp_path, text)
    with pytest.raises(UserStoreError) as caught:
        load_users(path)
    message = str(caught.value)
    assert f"{path}:15" in message
    assert "users.carol.password" in message
    assert "the password of user 'carol' is a bcrypt hash with cost 16" in message
    assert "authctl user passwd carol" in message


@pytest.mark.parametrize("content", ["", "  \n\n"], ids=["empty", "blank"])
def test_empty_file_that_held_users_is_refused(tmp_path: Path, content: str) -> None:
    """An empty file with a last good copy beside it (authctl wrote it) is an error naming the
    file and the copy; without one it is no users (tests/test_users_integrity.py)."""
    path = write(tmp_path, content)
    (tmp_path / "users.toml.bak").write_text(GOOD, encoding="utf-8")
    with pytest.raises(UserStoreError, match="is empty, but it held users") as caught:
        load_users(path)
    assert str(path) in str(caught.value)
    assert f"{path}.bak (2 users)" in str(caught.value)


def test_every_problem_is_reported(tmp_path: Path) -> None:
    """All problems in a file are listed at once, not just the first."""
    text = '[users.alice]\npassword = "x"\ngroups = ["a,b"]\n[users.bob]\npassword = 1\n'
    with pytest.raises(UserStoreError) as caught:
        load_users(write(tmp_path, text))
    keys = {p.key for p in caught.value.problems}
    assert keys == {"users.alice.password", "users.alice.groups[0]", "users.bob.password"}


def test_mode_warning(tmp_path: Path) -> None:
    """A users file readable by others gets a warning; mode 0600 does not."""
    path = write(tmp_path, "[users]\n")
    path.chmod(0o644)
    warning = mode_warning(path)
    assert warning is not None
    assert "0644" in warning.message
    path.chmod(0o600)
    assert mode_warning(path) is None
    assert mode_warning(tmp_path / "missing") is None


# --------------------------------------------------------------------------- properties


@given(name=st.text(max_size=80))
def test_username_validation_property(name: str) -> None:
    """check_username either refuses a name or returns a canonical, valid, stable one."""
    try:
        canon = check_username(name)
    except ValueError:
        assert not USERNAME_PATTERN.fullmatch(canonical_username(name))
        return
    assert USERNAME_PATTERN.fullmatch(canon)
    assert check_username(canon) == canon
    assert canonical_username(canon) == canon


NAME_CHARS = string.ascii_letters + string.digits + "._@-"


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.from_regex(r"[a-z0-9][a-z0-9._@-]{0,20}", fullmatch=True),
    data=st.data(),
)
def test_lookup_any_spelling_property(tmp_path: Path, name: str, data: st.DataObject) -> None:
    """A user written with any mix of case (and full-width letters) is found by any spelling."""
    spelled = "".join(
        data.draw(st.sampled_from([c, c.upper(), chr(ord(c) + 0xFEE0) if c.isalnum() else c]))
        for c in name
    )
    path = write(tmp_path, entry("", '"' + spelled + '"'))
    db = load_users(path)
    assert list(db) == [name]
    assert db.get(name.upper()) is not None


@settings(max_examples=300)
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_load_is_total(raw: bytes) -> None:
    """Any bytes either load or raise UserStoreError (never another exception)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "users.toml"
        path.write_bytes(raw)
        try:
            load_users(path)
        except UserStoreError as exc:
            problems = exc.problems
        else:
            problems = [Problem(path, "", "loaded")]
        assert problems


# --------------------------------------------------------------------------- UsersSource


def replace(path: Path, text: str) -> None:
    """Replace the file atomically (new inode), as the CLI does."""
    tmp = path.with_name("next.toml")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


@pytest.fixture
def source_file(tmp_path: Path) -> Path:
    """A users file holding alice and bob."""
    return write(tmp_path, GOOD)


def test_source_loads_at_start(source_file: Path, clock: Clock) -> None:
    """The first load happens in the constructor."""
    source = UsersSource(source_file, now=clock)
    assert set(source.current()) == {"alice", "bob"}
    assert source.problem is None


def test_source_refuses_broken_file_at_start(tmp_path: Path, clock: Clock) -> None:
    """A broken users file at startup raises, so the server does not start."""
    with pytest.raises(UserStoreError, match="invalid TOML"):
        UsersSource(write(tmp_path, "[users"), now=clock)
    with pytest.raises(UserStoreError, match="file not found"):
        UsersSource(tmp_path / "missing.toml", now=clock)


def test_source_sees_change_after_interval(source_file: Path, clock: Clock) -> None:
    """A change is picked up once the check interval (0.25 s) has passed, not before."""
    source = UsersSource(source_file, now=clock)
    replace(source_file, entry(""))
    assert set(source.current()) == {"alice", "bob"}
    clock.advance(0.25)
    assert set(source.current()) == {"alice"}
    assert source.generation == 1


def test_source_without_change_keeps_snapshot(source_file: Path, clock: Clock) -> None:
    """An unchanged file is not re-read: the same snapshot object comes back."""
    source = UsersSource(source_file, now=clock)
    first = source.current()
    clock.advance(5)
    assert source.current() is first
    assert source.generation == 0


@pytest.mark.parametrize(
    "broken",
    ["[users.alice\n", "", '[users.alice]\npassword = "hunter2"\n', "\ufeff[users]\n"],
    ids=["syntax", "empty", "plain-text", "bom"],
)
def test_source_keeps_last_good_copy(
    source_file: Path, clock: Clock, caplog: pytest.LogCaptureFixture, broken: str
) -> None:
    """A broken new file keeps the last good snapshot, logs an ERROR and reports the problem."""
    source = UsersSource(source_file, now=clock)
    good = source.current()
    replace(source_file, broken)
    clock.advance(1)
    with caplog.at_level(logging.ERROR, logger="server.users"):
        assert source.current() is good
    assert source.problem is not None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert str(source_file) in errors[0].getMessage()
    assert "last good copy (2 users)" in errors[0].getMessage()
    clock.advance(1)
    caplog.clear()
    assert source.current() is good
    assert not caplog.records, "a broken file is reported once, not every check"
    replace(source_file, entry(""))
    clock.advance(1)
    assert set(source.current()) == {"alice"}
    assert source.problem is None


def test_source_keeps_copy_when_file_disappears(source_file: Path, clock: Clock) -> None:
    """A deleted users file keeps the last good snapshot (never "no users")."""
    source = UsersSource(source_file, now=clock)
    source_file.unlink()
    clock.advance(1)
    assert set(source.current()) == {"alice", "bob"}
    assert source.problem is not None
    assert "file not found" in str(source.problem)


def test_source_keeps_copy_on_unexpected_error(source_file: Path, clock: Clock) -> None:
    """Even an unexpected exception while loading keeps the last good snapshot."""
    calls = 0

    def loader(path: Path) -> UserDatabase:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("boom")
        return load_users(path)

    source = UsersSource(source_file, now=clock, loader=loader)
    replace(source_file, entry(""))
    clock.advance(1)
    assert set(source.current()) == {"alice", "bob"}
    assert "boom" in str(source.problem)


def test_source_sees_same_size_rewrite_in_one_tick(source_file: Path, clock: Clock) -> None:
    """An in-place rewrite with the same size and mtime is still seen (content compared)."""
    source = UsersSource(source_file, now=clock)
    before = source_file.stat()
    same_size = GOOD.replace("disabled = false", "disabled = true ")
    source_file.write_text(same_size, encoding="utf-8")
    os.utime(source_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = source_file.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )
    clock.advance(1)
    assert source.current()["alice"].disabled


def test_source_reload_forces_a_read(source_file: Path, clock: Clock) -> None:
    """reload() reads the file at once, whatever the interval and signature."""
    source = UsersSource(source_file, now=clock)
    replace(source_file, entry(""))
    assert source.reload() is True
    assert set(source.current()) == {"alice"}


def test_source_without_watch_never_rereads(source_file: Path, clock: Clock) -> None:
    """With watch = false the first snapshot stays until reload()."""
    source = UsersSource(source_file, watch=False, now=clock)
    replace(source_file, entry(""))
    clock.advance(10)
    assert set(source.current()) == {"alice", "bob"}


def test_source_logs_warnings(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Unknown keys are logged at WARNING when a snapshot is taken."""
    with caplog.at_level(logging.WARNING, logger="server.users"):
        UsersSource(write(tmp_path, entry("disbled = true")), now=clock)
    assert any("disbled" in r.getMessage() for r in caplog.records)
