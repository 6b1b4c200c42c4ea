"""``authctl serve`` under a real waitress on loopback: header trust, the whole sign-in flow,
user changes from the CLI, restart with the SQLite store, limits and SIGTERM."""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.core.passwords import PasswordHasher
from tests.apphelpers import APP_CONFIG
from tests.apphelpers import CHEAP
from tests.apphelpers import PASSWORDS
from tests.apphelpers import users_toml

pytestmark = pytest.mark.slow

AUTHCTL = str(Path(sys.executable).with_name("authctl"))


class Server:
    """A running ``authctl serve`` child process."""

    def __init__(
        self,
        folder: Path,
        extra: tuple[str, ...] = (),
        preexec_fn: t.Callable[[], None] | None = None,
    ) -> None:
        self.folder = folder
        self.config = folder / "authctl.toml"
        env = {**os.environ, "AUTHCTL_CONFIG": str(self.config)}
        self.proc = subprocess.Popen(
            [AUTHCTL, "serve", "--address", "127.0.0.1:0", *extra],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
            preexec_fn=preexec_fn,
        )
        self.lines: list[str] = []
        self.port = self._wait_for_port()
        # keep reading stderr, so a chatty server never blocks on a full pipe
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()

    def _wait_for_port(self) -> int:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            found = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
            if found:
                return int(found.group(1))
        self.proc.kill()
        raise AssertionError("server did not start:\n" + "".join(self.lines))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        return resp

    def verify(self, url: str, cookie: str | None = None, **extra: str) -> http.client.HTTPResponse:
        scheme, _, rest = url.partition("://")
        host, slash, uri = rest.partition("/")
        headers = {
            "X-Forwarded-Proto": scheme,
            "X-Forwarded-Host": host,
            "X-Forwarded-Uri": slash + uri,
            "X-Forwarded-Method": "GET",
            "Accept": "text/html",
            **extra,
        }
        if cookie:
            headers["Cookie"] = cookie
        return self.request("GET", "/api/authz/forward-auth", headers)

    def login(self, username: str) -> http.client.HTTPResponse:
        body = json.dumps({"username": username, "password": PASSWORDS[username]}).encode()
        return self.request(
            "POST",
            "/api/firstfactor",
            {
                "Content-Type": "application/json",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "auth.example.com",
                "Origin": "https://auth.example.com",
            },
            body,
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.drain.join(timeout=10)
        if self.proc.stderr:
            self.proc.stderr.close()
        return self.proc.returncode


def make_folder(folder: Path, config: str) -> Path:
    """Write a config, users file and storage key into ``folder``."""
    folder.mkdir(exist_ok=True)
    (folder / "authctl.toml").write_text(config, encoding="utf-8")
    (folder / "users.toml").write_text(users_toml(PasswordHasher(CHEAP)), encoding="utf-8")
    (folder / "secrets").mkdir(exist_ok=True)
    (folder / "secrets" / "storage.key").write_text(secrets.token_hex(32))
    return folder


SQLITE_CONFIG = APP_CONFIG.replace('store = "memory"', 'store = "sqlite"')


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """authctl serve over the catalogue fixture, with the SQLite session store."""
    srv = Server(make_folder(tmp_path / "site", SQLITE_CONFIG))
    yield srv
    srv.stop()


def cookie_of(resp: http.client.HTTPResponse) -> str:
    return resp.getheader("Set-Cookie", "").split(";", 1)[0]


def test_forwarded_headers_reach_the_app(server: Server) -> None:
    """waitress passes X-Forwarded-Host/Proto through, so the redirect names the real site."""
    resp = server.verify("https://app.example.com/x?y=1")
    assert resp.status == 302
    assert resp.getheader("Location") == (
        "https://auth.example.com/?rd=https%3A%2F%2Fapp.example.com%2Fx%3Fy%3D1&rm=GET"
    )


def test_client_ip_from_forwarded_for(server: Server) -> None:
    """The networks criterion sees the client from X-Forwarded-For through a real socket."""
    assert (
        server.verify("https://other.example.com/", **{"X-Forwarded-For": "10.9.8.7"}).status == 200
    )
    assert server.verify("https://other.example.com/").status == 403


def test_untrusted_peer_refused(tmp_path: Path) -> None:
    """When loopback is not a trusted proxy, forwarded headers are refused (400)."""
    config = SQLITE_CONFIG.replace(
        'trusted_proxies = ["127.0.0.1/32", "::1/128"]', 'trusted_proxies = ["192.0.2.10/32"]'
    )
    srv = Server(make_folder(tmp_path / "untrusted", config))
    try:
        assert srv.verify("https://public.example.com/").status == 400
    finally:
        srv.stop()


def test_sign_in_flow_user_disable_and_restart(server: Server, tmp_path: Path) -> None:
    """The README's curl session: redirect, sign in, allowed, disable ends it, restart keeps it."""
    assert server.verify("https://app.example.com/").status == 302
    resp = server.login("alice")
    assert resp.status == 200
    set_cookie = resp.getheader("Set-Cookie", "")
    for attr in ("Domain=example.com", "Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert attr in set_cookie
    alice = cookie_of(resp)
    bob = cookie_of(server.login("bob"))
    allowed = server.verify("https://app.example.com/", alice)
    assert allowed.status == 200
    assert allowed.getheader("Remote-User") == "alice"
    assert allowed.getheader("Remote-Groups") == "admins,dev"
    assert allowed.getheader("Remote-Name") == "Alice Liddell"
    assert allowed.getheader("Remote-Email") == "alice@example.com"

    env = {**os.environ, "AUTHCTL_CONFIG": str(server.config)}
    subprocess.run([AUTHCTL, "user", "disable", "alice"], check=True, env=env, capture_output=True)
    deadline = time.monotonic() + 1.5
    status = 200
    while time.monotonic() < deadline and status == 200:
        status = server.verify("https://app.example.com/", alice).status
        time.sleep(0.05)
    assert status != 200

    assert server.stop() == 0
    restarted = Server(server.folder)
    try:
        resp = restarted.verify("https://app.example.com/", bob)
        assert resp.status == 200
        assert resp.getheader("Remote-User") == "bob"
    finally:
        restarted.stop()


def test_request_limits(server: Server) -> None:
    """Bodies over 64 KiB get 413 and huge header blocks 431, from waitress itself."""
    resp = server.request(
        "POST",
        "/api/firstfactor",
        {"Content-Type": "application/json", "X-Forwarded-Proto": "https"},
        b" " * (70 * 1024),
    )
    assert resp.status == 413
    resp = server.request("GET", "/api/health", {"X-Big": "a" * (70 * 1024)})
    assert resp.status == 431


def test_sigterm_stops_cleanly(server: Server) -> None:
    """SIGTERM ends the server with exit status 0."""
    assert server.request("GET", "/api/health").status == 200
    assert server.stop() == 0


def test_serve_refuses_invalid_config(tmp_path: Path) -> None:
    """serve exits 3 with the problem named when the config is invalid."""
    folder = make_folder(tmp_path / "broken", SQLITE_CONFIG + "\n[server]\nthreads = 0\n")
    result = subprocess.run(
        [AUTHCTL, "--config", str(folder / "authctl.toml"), "serve"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 3
    assert "authctl.toml" in result.stderr


def test_serve_refuses_missing_storage_key(tmp_path: Path) -> None:
    """serve exits 3 when the storage key is missing, naming the file."""
    folder = make_folder(tmp_path / "nokey", SQLITE_CONFIG)
    (folder / "secrets" / "storage.key").unlink()
    result = subprocess.run(
        [AUTHCTL, "--config", str(folder / "authctl.toml"), "serve"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 3
    assert "storage.key" in result.stderr


def test_two_factor_over_http_with_cli_enrolment(server: Server) -> None:
    """Issue 4's done-when: CLI enrolment, password, code on a two_factor site, no replay, bans."""
    import pyotp

    env = {**os.environ, "AUTHCTL_CONFIG": str(server.config)}
    enrolled = subprocess.run(
        [AUTHCTL, "user", "totp", "add", "alice", "--json"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    secret = json.loads(enrolled.stdout)["secret"]
    alice = cookie_of(server.login("alice"))
    assert server.verify("https://secure.example.com/", alice).status == 302
    code = pyotp.TOTP(secret).now()
    headers = {
        "Content-Type": "application/json",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "auth.example.com",
        "Cookie": alice,
    }
    body = json.dumps({"token": code, "targetURL": "https://secure.example.com/"}).encode()
    resp = server.request("POST", "/api/secondfactor/totp", headers, body)
    assert resp.status == 200
    two = cookie_of(resp)
    allowed = server.verify("https://secure.example.com/", two)
    assert allowed.status == 200
    assert allowed.getheader("Remote-User") == "alice"
    headers["Cookie"] = two
    assert server.request("POST", "/api/secondfactor/totp", headers, body).status == 401

    wrong = json.dumps({"username": "bob", "password": "wrong"}).encode()
    login_headers = {
        "Content-Type": "application/json",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "auth.example.com",
    }
    for _ in range(3):
        assert server.request("POST", "/api/firstfactor", login_headers, wrong).status == 401
    assert server.login("bob").status == 401
    listed = subprocess.run(
        [AUTHCTL, "bans", "list", "--json"], check=True, env=env, capture_output=True, text=True
    )
    assert any(ban["value"] == "bob" for ban in json.loads(listed.stdout))


def test_serve_refuses_an_unusable_smtp_relay(tmp_path: Path) -> None:
    """serve checks the SMTP relay at start-up and exits 3 naming it when it cannot connect."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    smtp = (
        f'\n[notifier.smtp]\nhost = "127.0.0.1"\nport = {closed_port}\n'
        'sender = "authctl <auth@example.com>"\ntimeout = "2s"\n'
    )
    folder = make_folder(tmp_path / "smtp", SQLITE_CONFIG + smtp)
    result = subprocess.run(
        [AUTHCTL, "--config", str(folder / "authctl.toml"), "serve", "--address", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 3, result.stderr
    assert "notifier" in result.stderr
