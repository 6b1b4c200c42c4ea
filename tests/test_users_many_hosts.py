"""The users file across hosts (issue 15 item 6, SPEC §7.2): two real ``serve`` hosts (B joined
to A by ``authctl init --join``) read the same users file while the CLI (through either host's
config) adds users and sets passwords, and the portals of both hosts change and reset
passwords, all at once. Every write goes through the one lock (``server.core.userfile``), so
no write is lost, and no host ever sees a file it refuses (its health would say so).
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import threading
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

import pytest

from server.core.passwords import PasswordHasher
from server.core.users import load_users
from tests.test_serve import AUTHCTL
from tests.test_serve import SQLITE_CONFIG
from tests.test_serve import Server
from tests.test_serve import cookie_of
from tests.test_serve import make_folder

pytestmark = pytest.mark.slow

PORTAL = {
    "Content-Type": "application/json",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "auth.example.com",
    "Origin": "https://auth.example.com",
}
#: Users the CLI adds while everything else runs, half through each host's config.
NEW_USERS = [f"user{i}" for i in range(10)]


def cli(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run the real ``authctl --config CONFIG ARGS``."""
    return subprocess.run(
        [AUTHCTL, "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )


def post(server: Server, path: str, body: dict[str, str], cookie: str = "") -> t.Any:
    headers = {**PORTAL, **({"Cookie": cookie} if cookie else {})}
    return server.request("POST", path, headers, json.dumps(body).encode())


def sign_in(server: Server, username: str, password: str) -> http.client.HTTPResponse:
    return post(server, "/api/firstfactor", {"username": username, "password": password})


def reset_token(notes: Path, username: str, deadline: float) -> str:
    """The token of the reset link mailed to ``username`` (the filesystem notifier)."""
    while time.monotonic() < deadline:
        if notes.exists():
            for chunk in notes.read_text().split("Date: ")[1:]:
                if f"Recipient: {username}@" in chunk or f"<{username}@" in chunk:
                    found = re.search(r"/reset-password/step2\?token=([^&\s]+)", chunk)
                    if found:
                        return unquote(found.group(1))
        time.sleep(0.05)
    raise AssertionError(f"no reset link for {username} in {notes}")


@pytest.fixture
def hosts(tmp_path: Path) -> t.Iterator[tuple[Server, Server]]:
    """Host A over the serve tests' users (alice, bob, carol) and host B joined to it."""
    host_a = make_folder(tmp_path / "a", SQLITE_CONFIG)
    joined = subprocess.run(
        [AUTHCTL, "init", "--join", str(host_a), str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert joined.returncode == 0, joined.stderr
    servers = Server(host_a), Server(tmp_path / "b")
    yield servers
    for server in servers:
        server.stop()


def test_two_hosts_cli_and_portals_write_the_users_file_at_once(
    hosts: tuple[Server, Server],
) -> None:
    """CLI adds and passwd through both configs, a portal password change on each host and a
    reset started on B and finished on A, concurrently: afterwards every write is in the file,
    both hosts sign everyone in with the last password, and neither ever reported the users
    file unusable while it happened."""
    host_a, host_b = hosts
    users_file = host_a.folder / "users.toml"
    enabled = cli(host_b.config, "user", "enable", "carol")  # the fixture has her disabled
    assert enabled.returncode == 0, enabled.stderr
    health_failures: list[str] = []
    stop = threading.Event()

    def watch_health() -> None:
        while not stop.is_set():
            for server in hosts:
                resp = server.request("GET", "/api/health")
                if resp.status != 200:
                    health_failures.append(f"{server.folder.name}: {resp.status}")
            time.sleep(0.02)

    def add_user(index: int) -> str:
        name = NEW_USERS[index]
        config = (host_a if index % 2 else host_b).config
        done = cli(config, "user", "add", name, "--password-stdin", stdin=f"{name} passphrase\n")
        assert done.returncode == 0, done.stderr
        return name

    def cli_passwd() -> str:
        last = ""
        for round_ in range(4):
            last = f"bob passphrase {round_}"
            config = (host_a, host_b)[round_ % 2].config
            done = cli(config, "user", "passwd", "bob", "--password-stdin", stdin=last + "\n")
            assert done.returncode == 0, done.stderr
        return last

    def portal_change() -> str:
        old = "alice-password"
        resp = sign_in(host_a, "alice", old)
        assert resp.status == 200
        cookie = cookie_of(resp)
        for round_, server in enumerate((host_b, host_a, host_b)):
            new = f"alice passphrase {round_}"
            resp = post(
                server, "/api/change-password", {"old_password": old, "new_password": new}, cookie
            )
            assert resp.status == 200, (server.folder.name, resp.status)
            cookie = cookie_of(resp) or cookie
            old = new
        return old

    def portal_reset() -> str:
        new = "carol passphrase after reset"
        started = post(host_b, "/api/reset-password/identity/start", {"username": "carol"})
        assert started.status == 200
        token = reset_token(host_b.folder / "notifications.txt", "carol", time.monotonic() + 20)
        finished = post(host_a, "/api/reset-password/identity/finish", {"token": token})
        assert finished.status == 200
        resp = post(host_a, "/api/reset-password", {"password": new}, cookie_of(finished))
        assert resp.status == 200
        return new

    watcher = threading.Thread(target=watch_health, daemon=True)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            added = [pool.submit(add_user, i) for i in range(len(NEW_USERS))]
            bob = pool.submit(cli_passwd)
            alice = pool.submit(portal_change)
            carol = pool.submit(portal_reset)
            names = [future.result() for future in added]
            final = {"alice": alice.result(), "bob": bob.result(), "carol": carol.result()}
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert health_failures == []

    db = load_users(users_file)  # the file as written: valid, nothing lost
    for name in names:
        assert name in db, name
    hasher = PasswordHasher()
    for name, password in final.items():
        assert hasher.verify(db[name].password, password), name
    assert not list(users_file.parent.glob("users.toml.tmp.*"))

    time.sleep(0.6)  # each host looks at the file every 0.25 s
    for server in hosts:
        for name, password in {**final, **{n: f"{n} passphrase" for n in names[:2]}}.items():
            assert sign_in(server, name, password).status == 200, (server.folder.name, name)
