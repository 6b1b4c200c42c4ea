"""Tests for server.core.userfile: locked, atomic edits that keep the rest of the file as it was."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from server.core.config import PasswordHashConfig
from server.core.errors import UserError
from server.core.errors import UserStoreError
from server.core.passwords import PasswordHasher
from server.core.userfile import UsersFile
from server.core.userfile import render_entry
from server.core.userfile import splice
from server.core.users import END_MARKER
from server.core.users import User
from server.core.users import load_users
from tests.conftest import ROOT

HASHER = PasswordHasher(PasswordHashConfig(memory_kib=8, iterations=1, parallelism=1))
HASH = HASHER.hash("pw")
HASH2 = HASHER.hash("pw2")

ORIGINAL = f"""\
# Users of the example team.
[users]

# Alice runs the place.
[users.Alice]
displayname = "Alice Liddell"   # a comment that moves with her
password = "{HASH}"
groups = [ "admins" ]
given_name = "Alice"

[users.Alice.extra]
shoe_size = 38

# Bob's entry is hand-formatted and must survive byte for byte.
[users.bob]    # the intern
password   =   "{HASH}"
groups = [
  "dev",   # his team
]
disabled = false
"""
BOB_BLOCK = ORIGINAL[ORIGINAL.index("# Bob's entry") :]


@pytest.fixture
def users(tmp_path: Path) -> UsersFile:
    """A UsersFile over a copy of ORIGINAL."""
    path = tmp_path / "users.toml"
    path.write_text(ORIGINAL, encoding="utf-8")
    path.chmod(0o600)
    return UsersFile(path)


def text_of(users: UsersFile) -> str:
    """The users file as text."""
    return users.path.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- operations


def test_add_appends_canonical_entry(users: UsersFile) -> None:
    """add() stores the canonical name at the end and leaves the rest byte-for-byte."""
    added = users.add("CAROL", password=HASH, displayname="Carol", groups=["dev", "ops", "dev"])
    assert added == User(name="carol", password=HASH, displayname="Carol", groups=("dev", "ops"))
    text = text_of(users)
    assert text.startswith(ORIGINAL)
    assert text[len(ORIGINAL) :] == (
        "\n[users.carol]\n"
        "disabled = false\n"
        f'password = "{HASH}"\n'
        'groups = ["dev", "ops"]\n'
        'displayname = "Carol"\n'
        'email = ""\n'
        f"\n{END_MARKER}\n"
    )


@pytest.mark.parametrize("name", ["alice", "ALICE", "Alice", "\uff41lice"], ids=str.lower)
def test_add_refuses_duplicate(users: UsersFile, name: str) -> None:
    """add() refuses a user that exists under any spelling, and writes nothing."""
    with pytest.raises(UserError, match="'alice' already exists"):
        users.add(name, password=HASH)
    assert text_of(users) == ORIGINAL


@pytest.mark.parametrize("name", ["", "bad name", "a,b", "-x", "x" * 65], ids=repr)
def test_bad_names_are_user_errors(users: UsersFile, name: str) -> None:
    """An invalid user name is a UserError before anything is read or written."""
    with pytest.raises(UserError, match="is invalid"):
        users.add(name, password=HASH)


def test_add_creates_missing_file(tmp_path: Path) -> None:
    """add() on a missing file creates a valid one (mode 0600) with the [users] table."""
    users = UsersFile(tmp_path / "users.toml")
    users.add("alice", password=HASH)
    assert text_of(users).startswith("[users]\n\n[users.alice]\n")
    assert list(load_users(users.path)) == ["alice"]
    assert users.path.stat().st_mode & 0o777 == 0o600


def test_add_to_empty_file(tmp_path: Path) -> None:
    """An empty file (refused by the loader) is a fresh start for add()."""
    path = tmp_path / "users.toml"
    path.write_text("", encoding="utf-8")
    UsersFile(path).add("alice", password=HASH)
    assert list(load_users(path)) == ["alice"]


def test_add_to_init_file(tmp_path: Path) -> None:
    """add() to the file init writes keeps its comment and table header."""
    from authctl._starter import STARTER_USERS

    path = tmp_path / "users.toml"
    path.write_text(STARTER_USERS, encoding="utf-8")
    UsersFile(path).add("alice", password=HASH)
    assert path.read_text(encoding="utf-8").startswith(STARTER_USERS + "\n[users.alice]\n")


def test_other_operations_need_the_file(tmp_path: Path) -> None:
    """Editing a user in a missing file says the file is missing."""
    with pytest.raises(UserStoreError, match="file not found"):
        UsersFile(tmp_path / "users.toml").set_disabled("alice", True)


def test_remove(users: UsersFile) -> None:
    """remove() drops the user's blocks and the comment attached to them, nothing else."""
    users.remove("alice")
    text = text_of(users)
    assert text == "# Users of the example team.\n[users]\n\n" + BOB_BLOCK + f"\n{END_MARKER}\n"
    assert list(load_users(users.path)) == ["bob"]


def test_remove_last_user_leaves_valid_file(tmp_path: Path) -> None:
    """Removing every user leaves a loadable file with an empty [users] table."""
    users = UsersFile(tmp_path / "users.toml")
    users.add("alice", password=HASH)
    users.remove("alice")
    assert len(load_users(users.path)) == 0


@pytest.mark.parametrize(
    "operation",
    [
        lambda u: u.remove("carol"),
        lambda u: u.set_password("carol", HASH),
        lambda u: u.set_disabled("carol", True),
        lambda u: u.set_groups("carol", add=["x"]),
        lambda u: u.set_profile("carol", email="c@example.com"),
    ],
    ids=["remove", "passwd", "disable", "groups", "profile"],
)
def test_unknown_user(users: UsersFile, operation: object) -> None:
    """Every edit of an unknown user is a UserError and writes nothing."""
    assert callable(operation)
    with pytest.raises(UserError, match="no user 'carol'"):
        operation(users)
    assert text_of(users) == ORIGINAL


def test_set_password_keeps_bob_and_unknown_keys(users: UsersFile) -> None:
    """Changing alice's password renames her entry to canonical form and keeps extras and bob."""
    changed = users.set_password("ALICE", HASH2)
    assert changed.password == HASH2
    text = text_of(users)
    assert text.endswith(BOB_BLOCK + f"\n{END_MARKER}\n")
    assert "[users.alice]\n" in text
    assert "[users.Alice]" not in text
    assert "# Alice runs the place.\n[users.alice]" in text
    data = tomllib.loads(text)
    assert data["users"]["alice"] == {
        "displayname": "Alice Liddell",
        "password": HASH2,
        "groups": ["admins"],
        "given_name": "Alice",
        "extra": {"shoe_size": 38},
    }
    assert load_users(users.path)["alice"].extra == {
        "given_name": "Alice",
        "extra": {"shoe_size": 38},
    }


def test_disable_and_enable(users: UsersFile) -> None:
    """set_disabled() flips only the disabled flag."""
    assert users.set_disabled("bob", True).disabled
    assert load_users(users.path)["bob"].disabled
    assert not users.set_disabled("bob", False).disabled
    assert load_users(users.path)["bob"] == User(name="bob", password=HASH, groups=("dev",))


def test_set_groups(users: UsersFile) -> None:
    """set_groups() removes, then adds, keeping order and never duplicating."""
    assert users.set_groups("alice", add=["dev", "admins", "ops"]).groups == (
        "admins",
        "dev",
        "ops",
    )
    assert users.set_groups("alice", remove=["admins", "nope"]).groups == ("dev", "ops")
    assert users.set_groups("alice", replace=["x"], add=["y"]).groups == ("x", "y")


def test_set_groups_refuses_bad_group(users: UsersFile) -> None:
    """A group with a comma is refused by validation and nothing is written."""
    with pytest.raises(UserStoreError, match="comma") as caught:
        users.set_groups("alice", add=["a,b"])
    assert caught.value.problems[0].key == "users.alice.groups[1]"
    assert caught.value.problems[0].line is None
    assert text_of(users) == ORIGINAL


def test_set_profile(users: UsersFile) -> None:
    """set_profile() changes the given fields only."""
    changed = users.set_profile("bob", displayname="Bob B.", email="bob@example.com")
    assert (changed.displayname, changed.email, changed.groups) == (
        "Bob B.",
        "bob@example.com",
        ("dev",),
    )
    assert users.set_profile("bob", email="b@example.com").displayname == "Bob B."


def test_set_profile_refuses_newline(users: UsersFile) -> None:
    """A display name with a newline is refused (it would end up in a header)."""
    with pytest.raises(UserStoreError, match="control character"):
        users.set_profile("bob", displayname="Bob\nX-Evil: 1")
    assert text_of(users) == ORIGINAL


def test_refuses_to_add_while_another_entry_is_broken(tmp_path: Path) -> None:
    """A broken entry elsewhere blocks edits, reported with its line in the file on disk."""
    path = tmp_path / "users.toml"
    broken = f'[users.alice]\npassword = "{HASH}"\n\n[users.bob]\npassword = "hunter2"\n'
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(UserStoreError) as caught:
        UsersFile(path).add("carol", password=HASH)
    problem = caught.value.problems[0]
    assert (problem.key, problem.line) == ("users.bob.password", 5)
    assert path.read_text(encoding="utf-8") == broken


def test_passwd_repairs_a_broken_hash(tmp_path: Path) -> None:
    """Setting a new password fixes an entry whose hash was refused (bcrypt)."""
    path = tmp_path / "users.toml"
    path.write_text('[users.bob]\npassword = "$2b$12$abc"\n', encoding="utf-8")
    UsersFile(path).set_password("bob", HASH)
    assert load_users(path)["bob"].password == HASH


def test_syntax_error_blocks_every_edit(tmp_path: Path) -> None:
    """A file that is not TOML is never overwritten."""
    path = tmp_path / "users.toml"
    path.write_text("[users.alice\n", encoding="utf-8")
    with pytest.raises(UserStoreError, match="invalid TOML"):
        UsersFile(path).add("carol", password=HASH)
    assert path.read_text(encoding="utf-8") == "[users.alice\n"


def test_colliding_names_block_edits(tmp_path: Path) -> None:
    """Two entries for one canonical name are reported, not silently merged."""
    path = tmp_path / "users.toml"
    text = f'[users.alice]\npassword = "{HASH}"\n[users.ALICE]\npassword = "{HASH}"\n'
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserStoreError, match="both the user 'alice'"):
        UsersFile(path).set_disabled("alice", True)


@pytest.mark.parametrize(
    "layout",
    [
        f'[users]\nalice = {{ password = "{HASH}" }}\nbob = {{ password = "{HASH}" }}\n',
        f'[users]\nalice.password = "{HASH}"\nbob.password = "{HASH}"\n',
        f'users.alice.password = "{HASH}"\nusers.bob.password = "{HASH}"\n',
    ],
    ids=["inline-tables", "dotted-keys", "top-level-dotted"],
)
def test_unusual_layouts_fall_back_to_full_rewrite(
    tmp_path: Path, layout: str, caplog: pytest.LogCaptureFixture
) -> None:
    """When the splice cannot express the edit, the file is rewritten in full, data intact."""
    path = tmp_path / "users.toml"
    path.write_text(layout, encoding="utf-8")
    UsersFile(path).set_disabled("alice", True)
    db = load_users(path)
    assert db["alice"].disabled
    assert db["bob"] == User(name="bob", password=HASH)
    UsersFile(path).add("carol", password=HASH)
    assert list(load_users(path)) == ["alice", "bob", "carol"]


def test_header_lookalike_in_multiline_string(tmp_path: Path) -> None:
    """A table-header lookalike inside a multi-line string does not confuse the splice."""
    path = tmp_path / "users.toml"
    text = (
        f'[users.alice]\npassword = "{HASH}"\nnote = """\n[users.bob]\n"""\n\n'
        f'[users.bob]\npassword = "{HASH}"\n'
    )
    path.write_text(text, encoding="utf-8")
    UsersFile(path).set_disabled("bob", True)
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    assert data["users"]["alice"]["note"] == "[users.bob]\n"
    assert data["users"]["bob"]["disabled"] is True


def test_render_entry_quotes_names() -> None:
    """Names that are not bare TOML keys are quoted in the header."""
    assert render_entry("j.doe", {"password": HASH}).startswith('[users."j.doe"]\n')


def test_splice_keeps_text_without_the_user() -> None:
    """Splicing a removal of an absent user changes nothing."""
    assert splice(ORIGINAL, None, "zed", None) == ORIGINAL


# --------------------------------------------------------------------------- the write itself


def test_mode_is_0600(users: UsersFile) -> None:
    """The file is 0600 after an edit even if it was world-readable before."""
    users.path.chmod(0o644)
    users.set_disabled("bob", True)
    assert users.path.stat().st_mode & 0o777 == 0o600


def test_lock_and_temp_files(users: UsersFile) -> None:
    """The lock file and the last good copy sit beside the users file; no temp file is left."""
    users.set_disabled("bob", True)
    names = sorted(p.name for p in users.path.parent.iterdir())
    assert names == ["users.toml", "users.toml.bak", "users.toml.lock"]
    assert users.lock_path == users.path.with_name("users.toml.lock")


def test_replace_failure_keeps_old_file(users: UsersFile, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing rename leaves the old file intact, removes the temp file and says so."""

    def fail(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(UserStoreError, match="cannot be written: Input/output error"):
        users.add("carol", password=HASH)
    monkeypatch.undo()
    assert text_of(users) == ORIGINAL
    assert not list(users.path.parent.glob("*.tmp.*"))


def test_writer_stopped_before_rename(users: UsersFile, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer interrupted between the temp write and the rename leaves the old file intact."""

    def interrupted(src: object, dst: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        users.add("carol", password=HASH)
    monkeypatch.undo()
    assert text_of(users) == ORIGINAL
    users.add("carol", password=HASH)  # the lock was released
    assert "carol" in load_users(users.path)


def test_ebusy_explains_bind_mount(users: UsersFile, monkeypatch: pytest.MonkeyPatch) -> None:
    """EBUSY from the rename (a single-file bind mount) tells the admin to mount the folder."""

    def busy(src: object, dst: object) -> None:
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(os, "replace", busy)
    with pytest.raises(UserStoreError, match="mount the folder") as caught:
        users.add("carol", password=HASH)
    assert "bind mount" in str(caught.value)
    monkeypatch.undo()
    assert text_of(users) == ORIGINAL


def test_edit_through_symlink_keeps_link(tmp_path: Path) -> None:
    """Editing through a symbolic link replaces the target and keeps the link."""
    real = tmp_path / "data" / "users.toml"
    real.parent.mkdir()
    real.write_text("[users]\n", encoding="utf-8")
    link = tmp_path / "users.toml"
    link.symlink_to(real)
    UsersFile(link).add("alice", password=HASH)
    assert link.is_symlink()
    assert "alice" in load_users(link)
    assert (real.parent / "users.toml.lock").exists()


def test_lock_timeout(users: UsersFile) -> None:
    """While another writer holds the lock, an edit waits and then gives up with a message."""
    users.lock_path.touch()
    with users.lock_path.open("rb") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        slow = UsersFile(users.path, lock_timeout=0.2)
        with pytest.raises(UserStoreError, match="still locked by another writer"):
            slow.add("carol", password=HASH)
    assert text_of(users) == ORIGINAL


def test_threads_never_lose_an_update(tmp_path: Path) -> None:
    """Twenty threads adding users at once all land in the file."""
    path = tmp_path / "users.toml"
    errors: list[BaseException] = []

    def add(n: int) -> None:
        try:
            UsersFile(path).add(f"u{n}", password=HASH)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(load_users(path)) == sorted(f"u{n}" for n in range(20))


def test_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    """A reader polling during 200 writes never sees a broken or empty file (atomic replace)."""
    path = tmp_path / "users.toml"
    users = UsersFile(path)
    users.add("alice", password=HASH)
    stop = threading.Event()
    seen: list[int] = []
    failures: list[str] = []

    def poll() -> None:
        while not stop.is_set():
            try:
                seen.append(len(load_users(path)))
            except UserStoreError as exc:  # pragma: no cover - reported below
                failures.append(str(exc))

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for n in range(200):
            users.set_disabled("alice", n % 2 == 0)
    finally:
        stop.set()
        reader.join()
    assert not failures
    assert seen
    assert set(seen) == {1}
    assert not load_users(path)["alice"].disabled


SLOW_WRITER = """
import os, sys, time
from pathlib import Path
from server.core.userfile import UsersFile

real_fsync = os.fsync
def slow_fsync(fd):
    Path(sys.argv[2]).touch()
    time.sleep(60)
os.fsync = slow_fsync
UsersFile(Path(sys.argv[1])).add("carol", password=sys.argv[3])
"""


@pytest.mark.slow
def test_writer_killed_mid_write(users: UsersFile, tmp_path: Path) -> None:
    """kill -9 during the temp file's fsync leaves the old file intact and the lock free."""
    marker = tmp_path / "in-fsync"
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(users.path), str(marker), HASH],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 20
        while not marker.exists():
            assert process.poll() is None, "the writer ended early"
            assert time.monotonic() < deadline, "the writer never reached fsync"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert text_of(users) == ORIGINAL
    users.add("dave", password=HASH)
    assert "carol" not in load_users(users.path)
    assert "dave" in load_users(users.path)


# --------------------------------------------------------------------------- properties

NAMES = st.from_regex(r"[a-z0-9][a-z0-9._@-]{0,12}", fullmatch=True)
TEXT = st.text(
    st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp")),
    max_size=20,
)
GROUPS = st.lists(
    st.text(
        st.characters(blacklist_categories=("C", "Z"), blacklist_characters=","),
        min_size=1,
        max_size=8,
    ),
    max_size=4,
    unique=True,
)
USERS = st.dictionaries(
    NAMES,
    st.fixed_dictionaries(
        {
            "displayname": TEXT,
            "email": st.just("") | st.emails(),
            "groups": GROUPS,
            "disabled": st.booleans(),
        }
    ),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(people=USERS, victim=st.integers(min_value=0, max_value=5))
def test_save_load_round_trip(people: dict[str, dict[str, object]], victim: int) -> None:
    """Users added through the writer load back equal; editing one leaves the others equal."""
    with tempfile.TemporaryDirectory() as folder:
        users = UsersFile(Path(folder) / "users.toml")
        expected: dict[str, User] = {}
        for name, fields in people.items():
            groups = fields["groups"]
            assert isinstance(groups, list)
            user = users.add(
                name,
                password=HASH,
                displayname=str(fields["displayname"]),
                email=str(fields["email"]),
                groups=groups,
                disabled=bool(fields["disabled"]),
            )
            expected[user.name] = user
        db = load_users(users.path) if people else None
        if db is None:
            return
        assert dict(db.items()) == expected
        name = sorted(expected)[victim % len(expected)]
        users.set_disabled(name, not expected[name].disabled)
        after = load_users(users.path)
        assert after[name].disabled != expected[name].disabled
        assert {k: v for k, v in after.items() if k != name} == {
            k: v for k, v in expected.items() if k != name
        }
