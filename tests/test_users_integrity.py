"""The users file survives truncation: an emptied or cut file is never read as fewer users.

Issue 13 items 3 and 7, issue 14 item 5. The writer ends the file with an end-marker line,
writes ``disabled`` first in each entry, and keeps the last good copy in ``users.toml.bak``;
the readers (CLI and server) refuse a file that authctl wrote (a ``.bak`` beside it) but that
lacks the marker, and an empty file is "no users" only when it never held any. Real
``authctl`` processes edit the files here.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.core.config import PasswordHashConfig
from server.core.errors import UserStoreError
from server.core.passwords import PasswordHasher
from server.core.userfile import UsersFile
from server.core.users import END_MARKER
from server.core.users import UsersSource
from server.core.users import load_users
from tests.conftest import ROOT
from tests.conftest import Clock

AUTHCTL = Path(sys.executable).parent / "authctl"
HASH = PasswordHasher(PasswordHashConfig(memory_kib=8, iterations=1, parallelism=1)).hash("pw")
PASSWORD = "a long unusual passphrase 7"


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


def add(config: Path, name: str, *extra: str) -> None:
    done = cli(config, "user", "add", name, *extra, "--password-stdin", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr


def users_of(config: Path) -> Path:
    return config.parent / "users.toml"


@pytest.fixture
def team(config_file: Path) -> Path:
    """alice (admins) and bob (disabled), written by the real CLI; returns the config path."""
    add(config_file, "alice", "--group", "admins")
    add(config_file, "bob", "--group", "dev")
    done = cli(config_file, "user", "disable", "bob")
    assert done.returncode == 0, done.stderr
    return config_file


# --------------------------------------------------------------------------- item 3: emptied


@pytest.mark.slow
def test_add_on_emptied_file_refuses(team: Path) -> None:
    """``user add`` on a users file cut to 0 bytes refuses (exit 3), naming the file and the last
    good copy, and writes nothing; the last good copy still holds everyone."""
    path = users_of(team)
    os.truncate(path, 0)
    done = cli(team, "user", "add", "carol", "--password-stdin", stdin=PASSWORD + "\n")
    assert done.returncode == 3, done.stdout + done.stderr
    assert str(path) in done.stderr
    assert str(path) + ".bak" in done.stderr
    assert "2 users" in done.stderr
    assert path.read_bytes() == b""
    assert set(load_users(Path(str(path) + ".bak"))) == {"alice", "bob"}
    listing = cli(team, "user", "list", "--json")
    assert listing.returncode == 3
    assert "users.toml.bak" in listing.stderr


@pytest.mark.slow
def test_add_on_deleted_file_refuses(team: Path) -> None:
    """A users file that held users and is now missing is not started afresh either."""
    path = users_of(team)
    path.unlink()
    done = cli(team, "user", "add", "carol", "--password-stdin", stdin=PASSWORD + "\n")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "users.toml.bak" in done.stderr
    assert not path.exists()


def test_server_keeps_last_good_copy_of_emptied_file(
    team: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The server keeps serving its last good copy when the file is emptied, and says why."""
    path = users_of(team)
    source = UsersSource(path, now=clock)
    os.truncate(path, 0)
    clock.advance(1)
    with caplog.at_level(logging.ERROR, logger="server.users"):
        assert set(source.current()) == {"alice", "bob"}
    assert source.problem is not None
    assert any(str(path) in r.getMessage() for r in caplog.records)


def test_server_keeps_hand_written_users_when_file_is_emptied(tmp_path: Path, clock: Clock) -> None:
    """Without a .bak (a hand-managed file), an empty file still never replaces a snapshot that
    had users: an editor that truncates before writing must not end every session."""
    path = tmp_path / "users.toml"
    path.write_text(f'[users.alice]\npassword = "{HASH}"\n', encoding="utf-8")
    source = UsersSource(path, now=clock)
    os.truncate(path, 0)
    clock.advance(1)
    assert set(source.current()) == {"alice"}
    assert source.problem is not None
    assert "is empty" in str(source.problem)


# --------------------------------------------------------------------------- issue 14 item 5


def test_empty_file_that_never_held_users_is_no_users(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """An empty file without a last good copy is no users, with a warning suggesting
    ``authctl user add``; the server starts with it."""
    path = tmp_path / "users.toml"
    path.write_bytes(b"")
    db = load_users(path)
    assert len(db) == 0
    assert any("authctl user add" in str(w) for w in db.warnings)
    with caplog.at_level(logging.WARNING, logger="server.users"):
        source = UsersSource(path, now=clock)
    assert len(source.current()) == 0
    assert any("authctl user add" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_cli_lists_empty_file_with_a_hint(config_file: Path) -> None:
    """``user list`` on an empty, never-used file lists nobody and suggests ``user add``."""
    users_of(config_file).write_bytes(b"")
    done = cli(config_file, "user", "list", "--json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert "authctl user add" in done.stderr


@pytest.mark.slow
def test_missing_file_suggests_user_add(config_file: Path) -> None:
    """A missing users file suggests ``authctl user add NAME``, not ``init`` (which refuses
    because the config exists)."""
    done = cli(config_file, "user", "list")
    assert done.returncode == 3
    assert "authctl user add" in done.stderr
    assert "authctl init" not in done.stderr
    with pytest.raises(UserStoreError, match="authctl user add") as caught:
        load_users(users_of(config_file))
    assert "authctl init" not in str(caught.value)


# --------------------------------------------------------------------------- item 7: cut


@pytest.mark.slow
def test_file_cut_at_last_line_is_refused(team: Path, clock: Clock) -> None:
    """A file written by the CLI and cut at its last line is refused by the CLI and the server
    (the last good copy stays in use), so a disabled user is never re-enabled by a cut."""
    path = users_of(team)
    source = UsersSource(path, now=clock)
    assert source.current()["bob"].disabled
    text = path.read_text(encoding="utf-8")
    assert text.rstrip("\n").splitlines()[-1] == END_MARKER
    cut = text[: text.rstrip("\n").rindex("\n") + 1]
    path.write_text(cut, encoding="utf-8")
    with pytest.raises(UserStoreError, match="cut short") as caught:
        load_users(path)
    assert "users.toml.bak" in str(caught.value)
    clock.advance(1)
    assert source.current()["bob"].disabled
    assert source.problem is not None
    done = cli(team, "user", "list", "--json")
    assert done.returncode == 3
    assert "cut short" in done.stderr
    done = cli(team, "user", "enable", "alice")
    assert done.returncode == 3
    assert path.read_text(encoding="utf-8") == cut


def test_every_cut_of_a_written_file_is_refused_or_complete(tmp_path: Path) -> None:
    """Whatever byte a CLI-written file is cut at, it is refused, or it loads everything."""
    users = UsersFile(tmp_path / "users.toml")
    users.add("alice", password=HASH, groups=["admins"], displayname="Alice")
    users.add("bob", password=HASH, groups=["dev"], email="bob@example.com")
    users.set_disabled("bob", True)
    full = users.path.read_bytes()
    expected = dict(load_users(users.path).items())
    for size in range(len(full)):
        users.path.write_bytes(full[:size])
        try:
            db = load_users(users.path)
        except UserStoreError:
            continue
        assert dict(db.items()) == expected, f"cut at byte {size} loaded {dict(db.items())}"


def test_no_cut_enables_a_disabled_user_even_without_backup(tmp_path: Path) -> None:
    """``disabled`` is written first in each entry: with no last good copy to compare against
    (the file copied elsewhere), no cut of the file loads bob as enabled."""
    users = UsersFile(tmp_path / "users.toml")
    users.add("alice", password=HASH)
    users.add("bob", password=HASH, groups=["dev"], displayname="Bob", email="bob@example.com")
    users.set_disabled("bob", True)
    full = users.path.read_bytes()
    Path(str(users.path) + ".bak").unlink(missing_ok=True)
    for size in range(len(full)):
        users.path.write_bytes(full[:size])
        try:
            db = load_users(users.path)
        except UserStoreError:
            continue
        assert "bob" not in db or db["bob"].disabled, f"cut at byte {size} enabled bob"


def test_writer_puts_disabled_first_and_marker_last(tmp_path: Path) -> None:
    """Each entry the CLI writes starts with ``disabled``; the file ends with the marker once."""
    path = tmp_path / "users.toml"
    path.write_text(
        f'[users.bob]\npassword = "{HASH}"\ngroups = ["dev"]\n\n{END_MARKER}\n\n'
        f'[users.carol]\npassword = "{HASH}"\n',
        encoding="utf-8",
    )
    users = UsersFile(path)
    users.set_disabled("bob", True)
    users.add("alice", password=HASH)
    text = path.read_text(encoding="utf-8")
    assert "[users.bob]\ndisabled = true\npassword = " in text
    assert "[users.alice]\ndisabled = false\npassword = " in text
    assert text.endswith("\n" + END_MARKER + "\n")
    assert text.count(END_MARKER) == 1
    assert set(load_users(path)) == {"alice", "bob", "carol"}


def test_hand_edited_file_without_marker_loads(tmp_path: Path) -> None:
    """A hand-written file (no marker, no .bak) loads as before."""
    path = tmp_path / "users.toml"
    path.write_text(f'[users.alice]\npassword = "{HASH}"\ndisabled = true\n', encoding="utf-8")
    assert load_users(path)["alice"].disabled


def test_hand_edit_after_cli_keeps_working_with_marker(tmp_path: Path) -> None:
    """After the CLI wrote the file, a hand edit that keeps the marker line loads (users may be
    added after it too); one that drops it is refused with the fix in the message."""
    users = UsersFile(tmp_path / "users.toml")
    users.add("alice", password=HASH)
    text = users.path.read_text(encoding="utf-8")
    appended = text + f'\n[users.dave]\npassword = "{HASH}"\n'
    users.path.write_text(appended, encoding="utf-8")
    assert set(load_users(users.path)) == {"alice", "dave"}
    users.path.write_text(appended.replace(END_MARKER + "\n", ""), encoding="utf-8")
    with pytest.raises(UserStoreError) as caught:
        load_users(users.path)
    assert END_MARKER in str(caught.value)
    assert "users.toml.bak" in str(caught.value)


def test_deliberately_emptied_file_with_marker_loads(tmp_path: Path) -> None:
    """Removing every user (by the CLI, or by hand keeping the marker) is a valid empty file."""
    users = UsersFile(tmp_path / "users.toml")
    users.add("alice", password=HASH)
    users.remove("alice")
    assert len(load_users(users.path)) == 0
    users.path.write_text(f"[users]\n{END_MARKER}\n", encoding="utf-8")
    assert len(load_users(users.path)) == 0
    users.add("bob", password=HASH)
    assert set(load_users(users.path)) == {"bob"}


def test_backup_is_private_and_current(tmp_path: Path) -> None:
    """The last good copy is the file as last written, mode 0600, even under umask 000."""
    old = os.umask(0)
    try:
        users = UsersFile(tmp_path / "users.toml")
        users.add("alice", password=HASH)
        users.set_disabled("alice", True)
    finally:
        os.umask(old)
    backup = Path(str(users.path) + ".bak")
    assert backup.read_bytes() == users.path.read_bytes()
    assert backup.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob("*.tmp.*"))


def test_cut_mid_toml_mentions_the_backup(tmp_path: Path) -> None:
    """A cut that breaks the TOML reports the syntax error and the last good copy."""
    users = UsersFile(tmp_path / "users.toml")
    users.add("alice", password=HASH)
    text = users.path.read_text(encoding="utf-8")
    users.path.write_text(text[: text.index("$argon2id") + 5], encoding="utf-8")
    with pytest.raises(UserStoreError, match="invalid TOML") as caught:
        load_users(users.path)
    assert "users.toml.bak" in str(caught.value)
