"""Tests for ``authctl user …``: adding, listing, changing and removing accounts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from click.testing import Result

from authctl.cli import cli
from server.core.config import PasswordHashConfig
from server.core.passwords import PasswordHasher
from server.core.users import load_users
from tests.conftest import ROOT

CHEAP = PasswordHasher(PasswordHashConfig(memory_kib=8, iterations=1, parallelism=1))
#: A password [password_policy] accepts (the CLI applies it since issue 14 item 5).
FIRST = "first long passphrase"


def run(runner: CliRunner, config: Path, *args: str, stdin: str | None = None) -> Result:
    """Invoke ``authctl --config CONFIG ARGS`` in-process."""
    return runner.invoke(cli, ["--config", str(config), *args], input=stdin)


def users_path(config: Path) -> Path:
    """The users file the base config points at."""
    return config.parent / "users.toml"


def add(runner: CliRunner, config: Path, name: str, *extra: str, typed: str = FIRST) -> Result:
    """Add a user with --password-stdin and check that it worked."""
    result = run(
        runner, config, "user", "add", name, *extra, "--password-stdin", stdin=typed + "\n"
    )
    assert result.exit_code == 0, result.output
    return result


def listed(runner: CliRunner, config: Path) -> list[dict[str, object]]:
    """``user list --json`` parsed."""
    result = run(runner, config, "user", "list", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data, list)
    return data


def test_done_when_init_add_list(runner: CliRunner, tmp_path: Path) -> None:
    """init, user add --password-stdin, then list --json shows alice, and the hash verifies."""
    demo = tmp_path / "demo"
    assert runner.invoke(cli, ["init", str(demo)]).exit_code == 0
    config = demo / "authctl.toml"
    result = run(
        runner,
        config,
        "user",
        "add",
        "alice",
        "--group",
        "admins",
        "--group",
        "dev",
        "--email",
        "alice@example.com",
        "--password-stdin",
        stdin="correct horse battery staple\n",
    )
    assert result.exit_code == 0, result.output
    assert listed(runner, config) == [
        {
            "username": "alice",
            "displayname": "",
            "email": "alice@example.com",
            "groups": ["admins", "dev"],
            "disabled": False,
        }
    ]
    stored = load_users(demo / "users.toml")["alice"].password
    assert PasswordHasher().verify(stored, "correct horse battery staple")
    assert not PasswordHasher().verify(stored, "correct horse battery staple\n")


def test_add_uses_configured_parameters(runner: CliRunner, config_file: Path) -> None:
    """The stored hash uses users.password_hash from the config (cheap in tests)."""
    add(runner, config_file, "alice")
    stored = load_users(users_path(config_file))["alice"].password
    assert stored.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert CHEAP.verify(stored, FIRST)


def test_add_with_prompt(runner: CliRunner, config_file: Path) -> None:
    """Without --password-stdin the password is asked twice, hidden."""
    typed = "s3cret handshake"
    result = run(runner, config_file, "user", "add", "alice", stdin=f"{typed}\n{typed}\n")
    assert result.exit_code == 0, result.output
    assert typed not in result.output
    assert "Repeat for confirmation" in result.output
    assert CHEAP.verify(load_users(users_path(config_file))["alice"].password, typed)


def test_add_prompt_mismatch_asks_again(runner: CliRunner, config_file: Path) -> None:
    """Two different entries at the prompt are refused and asked again."""
    typed = "one long pass\ntwo long pass\nthree long pass\nthree long pass\n"
    result = run(runner, config_file, "user", "add", "alice", stdin=typed)
    assert result.exit_code == 0, result.output
    assert "do not match" in result.output
    stored = load_users(users_path(config_file))["alice"].password
    assert CHEAP.verify(stored, "three long pass")


def test_password_stdin_strips_only_the_newline(runner: CliRunner, config_file: Path) -> None:
    """--password-stdin keeps spaces; only the trailing newline goes."""
    add(runner, config_file, "alice", typed="  spaced out  ")
    stored = load_users(users_path(config_file))["alice"].password
    assert CHEAP.verify(stored, "  spaced out  ")
    assert not CHEAP.verify(stored, "spaced out")


@pytest.mark.parametrize("stdin", ["\n", "", "\r\n"], ids=["newline", "eof", "crlf"])
def test_empty_password_refused(runner: CliRunner, config_file: Path, stdin: str) -> None:
    """An empty password from stdin is a usage error and nothing is written."""
    result = run(runner, config_file, "user", "add", "alice", "--password-stdin", stdin=stdin)
    assert result.exit_code == 2, result.output
    assert "the password is empty" in result.output
    assert not users_path(config_file).exists()


def test_add_canonicalises(runner: CliRunner, config_file: Path) -> None:
    """A name typed in upper case or full width is stored in canonical form."""
    add(runner, config_file, "\uff22\uff2f\uff22")  # full-width BOB
    assert [u["username"] for u in listed(runner, config_file)] == ["bob"]
    assert "[users.bob]" in users_path(config_file).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bad name"], "is invalid"),
        (["-x"], "No such option"),
        (["a,b"], "is invalid"),
        (["alice", "--group", "a,b"], "comma"),
        (["alice", "--group", "domain admins"], "white space"),
        (["alice", "--displayname", "Alice\nX-Evil: 1"], "control character"),
        (["alice", "--email", "a@example.com\r"], "control character"),
        (["alice", "--displayname", "Alice\u202eecilA"], "invisible formatting character U+202E"),
        (["alice", "--email", "a\u200b@example.com"], "invisible formatting character U+200B"),
        (["alice", "--group", "adm\u2066ins"], "control character"),
    ],
    ids=[
        "space",
        "option-like",
        "comma",
        "group-comma",
        "group-space",
        "newline-name",
        "cr-email",
        "rlo-name",
        "zwsp-email",
        "bidi-group",
    ],
)
def test_add_bad_input_is_usage_error(
    runner: CliRunner, config_file: Path, args: list[str], message: str
) -> None:
    """Invalid names, groups or display text exit 2 before anything is asked or written."""
    result = run(runner, config_file, "user", "add", *args, "--password-stdin", stdin="pw\n")
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not users_path(config_file).exists()


@pytest.mark.parametrize("name", ["alice", "ALICE", "Alice"], ids=str)
def test_add_duplicate_is_data_error(runner: CliRunner, config_file: Path, name: str) -> None:
    """Adding an existing user (any spelling) exits 3 and never asks for a password."""
    add(runner, config_file, "alice")
    before = users_path(config_file).read_bytes()
    result = run(runner, config_file, "user", "add", name)
    assert result.exit_code == 3, result.output
    assert "'alice' already exists" in result.output
    assert "Password" not in result.output
    assert users_path(config_file).read_bytes() == before


def test_list_json_never_shows_hashes(runner: CliRunner, config_file: Path) -> None:
    """user list --json lists every user, sorted, with the five public fields only."""
    add(runner, config_file, "bob", "--displayname", "Bob", "--group", "dev")
    add(runner, config_file, "alice")
    result = run(runner, config_file, "user", "list", "--json")
    assert "$argon2" not in result.output
    assert [u["username"] for u in json.loads(result.stdout)] == ["alice", "bob"]
    assert json.loads(result.stdout)[1] == {
        "username": "bob",
        "displayname": "Bob",
        "email": "",
        "groups": ["dev"],
        "disabled": False,
    }


def test_list_table(runner: CliRunner, config_file: Path) -> None:
    """user list prints a table for people, with markup in names shown literally."""
    add(runner, config_file, "alice", "--displayname", "[bold]Alice[/bold]", "--group", "admins")
    result = run(runner, config_file, "user", "list")
    assert result.exit_code == 0, result.output
    assert "[bold]Alice[/bold]" in result.output
    assert "admins" in result.output
    assert "1 user" in result.output
    assert "$argon2" not in result.output


def test_list_empty_file(runner: CliRunner, config_file: Path) -> None:
    """An empty [users] table lists as an empty JSON array."""
    users_path(config_file).write_text("[users]\n", encoding="utf-8")
    users_path(config_file).chmod(0o600)
    assert listed(runner, config_file) == []


def test_list_warns_about_mode_and_unknown_keys(runner: CliRunner, config_file: Path) -> None:
    """Warnings (world-readable file, unknown keys) go to stderr, not into the JSON."""
    path = users_path(config_file)
    path.write_text(f'[users.alice]\npassword = "{CHEAP.hash("pw")}"\ndisbled = true\n', "utf-8")
    path.chmod(0o644)
    result = run(runner, config_file, "user", "list", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["username"] == "alice"
    assert "did you mean 'disabled'?" in result.stderr
    assert "chmod 600" in result.stderr


def test_broken_users_file_is_data_error(runner: CliRunner, config_file: Path) -> None:
    """A broken users file exits 3 naming file, line and column."""
    path = users_path(config_file)
    path.write_text('[users.alice]\npassword = "unterminated\n', encoding="utf-8")
    result = run(runner, config_file, "user", "list")
    assert result.exit_code == 3, result.output
    assert f"{path}:2:" in result.output


def test_missing_config_is_data_error(runner: CliRunner, tmp_path: Path) -> None:
    """Without a config file user commands exit 3 and say how to create one."""
    result = run(runner, tmp_path / "nope.toml", "user", "list")
    assert result.exit_code == 3, result.output
    assert "file not found" in result.output


def test_show(runner: CliRunner, config_file: Path) -> None:
    """user show prints one user; --json gives the fields of list plus the TOTP state."""
    add(runner, config_file, "alice", "--email", "alice@example.com", "--group", "dev")
    result = run(runner, config_file, "user", "show", "ALICE", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "username": "alice",
        "displayname": "",
        "email": "alice@example.com",
        "groups": ["dev"],
        "disabled": False,
        "totp": False,
        "webauthn": 0,
        "hash_scheme": "argon2id",
        "hash_rewrite": False,
    }
    human = run(runner, config_file, "user", "show", "alice")
    assert human.exit_code == 0, human.output
    assert "alice@example.com" in human.output
    assert "$argon2" not in human.output
    assert "argon2id" in human.output
    assert "rewritten" not in human.output


#: Hashes of "password": a legacy one as imported from Authelia, an argon2id with parameters
#: other than the configured ones (Authelia's documented example), and authctl's own.
SHOWN_HASHES = [
    (
        "$2y$10$3o9IF74Phgdz4Q6j7K7s0unovt.v.7YBLKFyV73pGTd2.tfdz/F8e",
        "bcrypt",
        True,
        "bcrypt (legacy, rewritten as argon2id at next sign-in)",
    ),
    (
        "$pbkdf2-sha256$100000$aoWHXwyz0im1Hqg93.N.tA$bO5LsjmnnPle2Xm9RE6W1PMWdJTy1TnEia1TLzynuIQ",
        "pbkdf2-sha256",
        True,
        "pbkdf2-sha256 (legacy, rewritten as argon2id at next sign-in)",
    ),
    (
        "$argon2id$v=19$m=65536,t=3,p=2$BpLnfgDsc2WD8F2q$o/vzA4myCqZZ36bUGsDY//8mKUYNZZaR0t4MFFSs+iM",
        "argon2id",
        True,
        "argon2id (other parameters, rewritten with the configured ones at next sign-in)",
    ),
    (CHEAP.hash("password"), "argon2id", False, "argon2id"),
]


@pytest.mark.parametrize(
    ("stored", "scheme", "rewrite", "shown"), SHOWN_HASHES, ids=["bcrypt", "pbkdf2", "other", "own"]
)
def test_show_names_the_hash_scheme(
    runner: CliRunner, config_file: Path, stored: str, scheme: str, rewrite: bool, shown: str
) -> None:
    """user show names the scheme and says when the next sign-in rewrites it; never the hash."""
    users_path(config_file).write_text(f'[users.bob]\npassword = "{stored}"\n', encoding="utf-8")
    result = run(runner, config_file, "user", "show", "bob", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["hash_scheme"], data["hash_rewrite"]) == (scheme, rewrite)
    assert stored not in result.stdout
    human = run(runner, config_file, "user", "show", "bob")
    assert human.exit_code == 0, human.output
    assert shown in " ".join(human.output.split())  # rich may wrap it
    assert stored not in human.output


@pytest.mark.parametrize(
    "args",
    [
        ["show", "carol"],
        ["passwd", "carol", "--password-stdin"],
        ["disable", "carol"],
        ["enable", "carol"],
        ["remove", "carol"],
        ["groups", "carol", "--add", "x"],
    ],
    ids=["show", "passwd", "disable", "enable", "remove", "groups"],
)
def test_unknown_user_is_data_error(runner: CliRunner, config_file: Path, args: list[str]) -> None:
    """Every command on an unknown user exits 3 with a clear message."""
    add(runner, config_file, "alice")
    result = run(runner, config_file, "user", *args, stdin="pw\n")
    assert result.exit_code == 3, result.output
    assert "no user 'carol'" in result.output


def test_passwd(runner: CliRunner, config_file: Path) -> None:
    """user passwd stores a new hash for the user."""
    add(runner, config_file, "alice")
    result = run(
        runner, config_file, "user", "passwd", "Alice", "--password-stdin", stdin="new long one\n"
    )
    assert result.exit_code == 0, result.output
    stored = load_users(users_path(config_file))["alice"].password
    assert CHEAP.verify(stored, "new long one")
    assert not CHEAP.verify(stored, FIRST)


def test_disable_enable(runner: CliRunner, config_file: Path) -> None:
    """user disable and enable flip the flag."""
    add(runner, config_file, "alice")
    assert run(runner, config_file, "user", "disable", "alice").exit_code == 0
    assert listed(runner, config_file)[0]["disabled"] is True
    assert run(runner, config_file, "user", "enable", "alice").exit_code == 0
    assert listed(runner, config_file)[0]["disabled"] is False


def test_remove(runner: CliRunner, config_file: Path) -> None:
    """user remove deletes the user and keeps the others."""
    add(runner, config_file, "alice")
    add(runner, config_file, "bob")
    result = run(runner, config_file, "user", "remove", "ALICE")
    assert result.exit_code == 0, result.output
    assert [u["username"] for u in listed(runner, config_file)] == ["bob"]


def test_groups(runner: CliRunner, config_file: Path) -> None:
    """user groups adds and removes groups (repeatable) and prints the result."""
    add(runner, config_file, "alice", "--group", "dev")
    result = run(
        runner, config_file, "user", "groups", "alice", "--add", "admins", "--add", "ops",
        "--remove", "dev", "--remove", "nope",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "admins, ops" in result.stdout
    assert "was not in group 'nope'" in result.stderr
    assert listed(runner, config_file)[0]["groups"] == ["admins", "ops"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "at least one --add GROUP or --remove GROUP"),
        (["--add", "a,b"], "comma"),
        (["--add", "x", "--remove", "x"], "both added and removed"),
    ],
    ids=["nothing", "bad-group", "both"],
)
def test_groups_usage_errors(
    runner: CliRunner, config_file: Path, args: list[str], message: str
) -> None:
    """user groups without a change, with a bad group or a contradiction exits 2."""
    add(runner, config_file, "alice")
    result = run(runner, config_file, "user", "groups", "alice", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def authctl_command() -> list[str]:
    """The installed ``authctl`` script beside this Python, or ``python -m authctl``."""
    script = Path(sys.executable).parent / "authctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "authctl"]


@pytest.mark.slow
def test_twenty_parallel_processes(config_file: Path, tmp_path: Path) -> None:
    """Twenty real ``authctl user add`` processes started at once all land in a valid file."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stdins = []
    for n in range(20):
        secret = tmp_path / f"password-{n}"
        secret.write_text(f"password-{n}\n", encoding="utf-8")
        stdins.append(secret.open("rb"))
    try:
        processes = [
            subprocess.Popen(
                [*authctl_command(), "--config", str(config_file), "user", "add", f"u{n}",
                 "--password-stdin"],
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=ROOT,
                env=env,
            )
            for n, stdin in enumerate(stdins)
        ]  # fmt: skip
        results = [(n, *p.communicate(timeout=50), p.returncode) for n, p in enumerate(processes)]
    finally:
        for stdin in stdins:
            stdin.close()
    failures = [r for r in results if r[3] != 0]
    assert not failures
    db = load_users(users_path(config_file))
    assert sorted(db) == sorted(f"u{n}" for n in range(20))
    assert CHEAP.verify(db["u7"].password, "password-7")
    assert users_path(config_file).stat().st_mode & 0o777 == 0o600


# --------------------------------------------------------------------------- password policy


@pytest.mark.parametrize(
    ("typed", "reason"),
    [("pw", "at least 8 characters"), ("password", "too common"), ("Password1", "too common")],
    ids=["short", "common", "common-case"],
)
def test_add_applies_password_policy(
    runner: CliRunner, config_file: Path, typed: str, reason: str
) -> None:
    """``user add`` refuses what the portal would refuse (exit 2), and writes nothing."""
    result = run(
        runner, config_file, "user", "add", "alice", "--password-stdin", stdin=typed + "\n"
    )
    assert result.exit_code == 2, result.output
    assert reason in result.output
    assert "--force" in result.output
    assert not users_path(config_file).exists()


def test_add_refuses_the_user_name_as_password(runner: CliRunner, config_file: Path) -> None:
    """The user's own name is refused, as in the portal."""
    result = run(
        runner, config_file, "user", "add", "alicealice", "--password-stdin", stdin="AliceAlice\n"
    )
    assert result.exit_code == 2, result.output
    assert "user name" in result.output


def test_passwd_applies_password_policy(runner: CliRunner, config_file: Path) -> None:
    """``user passwd`` refuses a weak password and keeps the old hash."""
    add(runner, config_file, "alice")
    before = users_path(config_file).read_bytes()
    result = run(runner, config_file, "user", "passwd", "alice", "--password-stdin", stdin="pw\n")
    assert result.exit_code == 2, result.output
    assert "at least 8 characters" in result.output
    assert users_path(config_file).read_bytes() == before


@pytest.mark.slow
@pytest.mark.parametrize("command", ["add", "passwd"])
def test_force_stores_a_weak_password_loudly(config_file: Path, command: str) -> None:
    """A real ``authctl user add|passwd --force`` stores a weak password and says so on stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def real(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*authctl_command(), "--config", str(config_file), "user", *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=50,
            check=False,
        )

    if command == "passwd":
        done = real("add", "alice", "--password-stdin", stdin=FIRST + "\n")
        assert done.returncode == 0, done.stderr
    refused = real(command, "alice", "--password-stdin", stdin="pw\n")
    assert refused.returncode == 2, refused.stderr
    assert "at least 8 characters" in refused.stderr
    done = real(command, "alice", "--password-stdin", "--force", stdin="pw\n")
    assert done.returncode == 0, done.stderr
    assert "WARNING" in done.stderr
    assert "at least 8 characters" in done.stderr
    assert "--force" in done.stderr
    assert CHEAP.verify(load_users(users_path(config_file))["alice"].password, "pw")


def _passkey(config: Path, username: str, description: str, row: str) -> None:
    """Store a credential for ``username`` as the portal's registration would."""
    from server.core.config import load_config
    from server.core.storage import Storage
    from server.core.storage import WebAuthnCredential

    key = config.parent / "secrets" / "storage.key"
    if not key.exists():
        key.parent.mkdir(mode=0o700, exist_ok=True)
        key.write_text("a3" * 32 + "\n")
        key.chmod(0o600)
    storage = Storage(load_config(config).storage)
    try:
        assert storage.add_webauthn_credential(
            WebAuthnCredential(
                id=row,
                username=username,
                credential_id=row.encode(),
                public_key=b"cose",
                sign_count=3,
                aaguid="00000000-0000-0000-0000-000000000000",
                transports=("usb",),
                backup_eligible=False,
                backup_state=False,
                discoverable=True,
                description=description,
                attestation_type="none",
                created_at=1_700_000_000.0,
                last_used_at=None,
            )
        )
    finally:
        storage.close()


def test_webauthn_list_remove_show(runner: CliRunner, config_file: Path) -> None:
    """user webauthn list/remove (SPEC §7.1), user show counts passkeys, user remove deletes
    the user's credentials; no key material is printed."""
    add(runner, config_file, "alice")
    add(runner, config_file, "bob")
    empty = run(runner, config_file, "user", "webauthn", "list", "alice", "--json")
    assert (empty.exit_code, json.loads(empty.stdout)) == (0, [])  # no storage yet
    assert "no passkeys" in run(runner, config_file, "user", "webauthn", "list", "alice").stdout
    _passkey(config_file, "alice", "Phone", "row1")
    _passkey(config_file, "alice", "YubiKey", "row2")
    _passkey(config_file, "bob", "Laptop", "row3")
    result = run(runner, config_file, "user", "webauthn", "list", "ALICE", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["id"] for r in rows] == ["row1", "row2"]
    assert rows[0] == {
        "id": "row1", "description": "Phone", "created_at": "2023-11-14T22:13:20Z",
        "last_used_at": None, "sign_count": 3, "discoverable": True, "backup_eligible": False,
        "backup_state": False, "aaguid": "00000000-0000-0000-0000-000000000000",
        "transports": ["usb"],
    }  # fmt: skip
    human = run(runner, config_file, "user", "webauthn", "list", "alice")
    assert "YubiKey" in human.stdout
    assert "never" in human.stdout
    assert "cose" not in human.stdout
    shown = json.loads(run(runner, config_file, "user", "show", "alice", "--json").stdout)
    assert shown["webauthn"] == 2
    assert "passkeys" in run(runner, config_file, "user", "show", "alice").stdout
    # usage: an ID or --all, exactly one
    assert run(runner, config_file, "user", "webauthn", "remove", "alice").exit_code == 2
    both = run(runner, config_file, "user", "webauthn", "remove", "alice", "row1", "--all")
    assert both.exit_code == 2
    # bob's credential is not alice's to remove
    other = run(runner, config_file, "user", "webauthn", "remove", "alice", "row3")
    assert other.exit_code == 3
    assert "no passkey" in other.output
    one = run(runner, config_file, "user", "webauthn", "remove", "alice", "row1")
    assert one.exit_code == 0
    assert "Removed 1 passkey of alice" in one.stdout
    every = run(runner, config_file, "user", "webauthn", "remove", "alice", "--all")
    assert every.exit_code == 0
    assert "Removed 1 passkey of alice" in every.stdout
    again = run(runner, config_file, "user", "webauthn", "remove", "alice", "--all")
    assert again.exit_code == 0
    assert "Removed 0 passkeys" in again.stdout
    gone = run(runner, config_file, "user", "remove", "bob")
    assert gone.exit_code == 0
    assert "Removed bob's 1 passkey" in gone.stdout
    listed_bob = run(runner, config_file, "user", "webauthn", "list", "bob", "--json")
    assert json.loads(listed_bob.stdout) == []


def test_remove_forgets_the_preferred_second_factor(runner: CliRunner, config_file: Path) -> None:
    """user remove deletes the user's ``user_preferences`` row (SPEC §7.1), no one else's."""
    from server.core.config import load_config
    from server.core.storage import Storage

    add(runner, config_file, "alice")
    add(runner, config_file, "bob")
    assert run(runner, config_file, "user", "remove", "bob").exit_code == 0  # no storage yet
    add(runner, config_file, "bob")
    _passkey(config_file, "alice", "Phone", "row1")  # creates the storage
    storage = Storage(load_config(config_file).storage)
    try:
        storage.set_second_factor_method("alice", "webauthn")
        storage.set_second_factor_method("bob", "totp")
    finally:
        storage.close()
    assert run(runner, config_file, "user", "remove", "ALICE").exit_code == 0
    storage = Storage(load_config(config_file).storage)
    try:
        assert storage.second_factor_method("alice") is None
        assert storage.second_factor_method("bob") == "totp"
    finally:
        storage.close()


def test_remove_revokes_the_users_tokens(runner: CliRunner, config_file: Path) -> None:
    """user remove revokes the user's personal access tokens (SPEC §7.6): bob added again
    later under the same name must not find his old ones working; alice keeps hers."""
    add(runner, config_file, "alice")
    add(runner, config_file, "bob")
    key = config_file.parent / "secrets" / "storage.key"
    key.parent.mkdir(mode=0o700, exist_ok=True)
    key.write_text("a3" * 32 + "\n")
    key.chmod(0o600)
    made = {}
    for name in ("alice", "bob"):
        result = run(runner, config_file, "token", "create", name, "--name", "ci", "--json")
        assert result.exit_code == 0, result.output
        made[name] = json.loads(result.stdout)
    result = run(runner, config_file, "user", "remove", "bob")
    assert result.exit_code == 0, result.output
    assert "Revoked bob's 1 token" in result.output
    listed = run(runner, config_file, "token", "list", "--json")
    assert listed.exit_code == 0, listed.output
    live = {row["user"]: row for row in json.loads(listed.stdout) if not row.get("revoked_at")}
    assert set(live) == {"alice"}
