"""The e2e harness: authctl, an echo app and a real reverse proxy, started on loopback.

Each proxy gets its own *stack*: a folder with an authctl config whose portal URL carries the
proxy's port (``https://auth.example.test:PORT``), a certificate from ``authctl cert generate
--ca``, the proxy's standalone config from ``authctl proxy-snippet PROXY --out`` (started with
the very command it prints), and ``authctl serve``. Clients reach ``*.example.test`` through
127.0.0.1 with the right SNI and verify the certificate against the generated CA, so no root
port, no /etc/hosts and no ``verify=False``. Every process runs in its own process group and is
stopped by its PID at the end of the session; every readiness wait is bounded (15 s).

A proxy that is missing or does not start is a failure, never a skip: CI installs them all
with ``scripts/install-e2e-deps.sh``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import typing as t
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.apphelpers import PASSWORDS
from tests.test_serve import make_folder

PROXIES = ("nginx", "caddy", "haproxy", "traefik", "envoy")
BINARIES = {"nginx": "nginx", "caddy": "caddy", "haproxy": "haproxy", "traefik": "traefik",
            "envoy": "envoy"}  # fmt: skip
DOMAIN = "example.test"
HOSTS = ("app", "public", "secure", "deny")
READY_TIMEOUT = 15.0
HERE = Path(__file__).resolve().parent
AUTHCTL = str(Path(sys.executable).with_name("authctl"))
INSTALL_HINT = "install the e2e tools with: bash scripts/install-e2e-deps.sh"

CONFIG = """\
[server]
address = "127.0.0.1:{authctl_port}"
trusted_proxies = ["127.0.0.1/32", "::1/128"]
threads = 4

[users]
file = "users.toml"
password_hash = {{ memory_kib = 8, iterations = 1, parallelism = 1 }}

[session]
store = "sqlite"

[[session.cookies]]
domain = "example.test"
portal_url = "https://auth.example.test:{proxy_port}"
default_redirect_url = "https://app.example.test:{proxy_port}/"

[regulation]
max_retries = 0

[access_control]
default_policy = "deny"

[[access_control.rules]]
domain = "public.example.test"
policy = "bypass"

[[access_control.rules]]
domain = "secure.example.test"
policy = "two_factor"

[[access_control.rules]]
domain = "deny.example.test"
policy = "deny"

[[access_control.rules]]
domain = "app.example.test"
policy = "one_factor"
"""


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_tool(name: str) -> str:
    """The proxy binary as ``proxy-snippet`` finds it; fails (never skips) when missing."""
    from authctl.snippets import find_binary

    path = find_binary(name)
    if not Path(path).is_file():
        pytest.fail(f"{name} is not installed; {INSTALL_HINT}")
    return path


class Proc:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None):
        self.name = name
        self.argv = argv
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        """Start it (again); output goes to the log file."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM the process group by its PID, SIGKILL after 5 s."""
        if self.proc is None:
            return
        pid = self.proc.pid
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        else:
            # the leader is gone; make sure no child of it is left behind
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self.proc = None

    def tail(self, lines: int = 30) -> str:
        """The end of the log, for failure messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def wait_until(what: str, probe: t.Callable[[], bool], proc: Proc | None = None) -> None:
    """Poll ``probe`` until it is true; fail after READY_TIMEOUT or when ``proc`` dies."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            pytest.fail(f"{proc.name} exited while waiting for {what}:\n{proc.tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if probe():
                return
        time.sleep(0.1)
    detail = f"\n{proc.name} log:\n{proc.tail()}" if proc else ""
    pytest.fail(f"timed out after {READY_TIMEOUT:.0f} s waiting for {what}{detail}")


def port_open(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port."""
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


class _SniConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 with SNI and certificate checks for the virtual host's name."""

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


@dataclass
class Reply:
    """A response, read whole."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        """One header's value (None when absent)."""
        return self.headers.get(name)

    def json(self) -> t.Any:
        """The body as JSON."""
        return json.loads(self.body)

    def echoed(self) -> list[tuple[str, str]]:
        """The header lines the echo app received, as (lowercase name, value)."""
        data = self.json()
        return [(name.lower(), value) for name, value in data["headers"]]

    def cookie(self) -> str:
        """``name=value`` of the Set-Cookie header."""
        return (self.header("Set-Cookie") or "").split(";", 1)[0]


@dataclass
class Stack:
    """authctl + echo app + one proxy, and a client for it."""

    proxy: str
    folder: Path
    proxy_port: int
    authctl_port: int
    ca_file: Path
    authctl: Proc
    proxy_proc: Proc
    start_command: list[str]
    totp_secrets: dict[str, str] = field(default_factory=dict)
    context: ssl.SSLContext = field(init=False)

    def __post_init__(self) -> None:
        self.context = ssl.create_default_context(cafile=str(self.ca_file))

    # ------------------------------------------------------------------ URLs

    def url(self, sub: str, path: str = "/") -> str:
        """``https://sub.example.test:PORT/path``."""
        return f"https://{sub}.{DOMAIN}:{self.proxy_port}{path}"

    def portal_redirect(self, target: str, method: str = "GET") -> str:
        """The Location authctl sends for a sign-in to ``target``."""
        return f"{self.url('auth')}?rd={quote(target, safe='')}&rm={method}"

    # ------------------------------------------------------------------ requests

    def request(
        self,
        sub: str,
        path: str = "/",
        *,
        method: str = "GET",
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        cookie: str | None = None,
    ) -> Reply:
        """One request through the proxy to ``sub.example.test``, redirects not followed."""
        conn = _SniConnection(f"{sub}.{DOMAIN}", self.proxy_port, context=self.context, timeout=10)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
            if not any(name.lower() == "accept" for name, _ in pairs):
                pairs.append(("Accept", "text/html,application/xhtml+xml"))
            if cookie:
                pairs.append(("Cookie", cookie))
            if body is not None:
                pairs.append(("Content-Length", str(len(body))))
            for name, value in pairs:
                conn.putheader(name, value)
            conn.endheaders(body)
            resp = conn.getresponse()
            return Reply(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def api(self, path: str, payload: object, cookie: str | None = None) -> Reply:
        """A portal API call (JSON, same origin) through the proxy."""
        return self.request(
            "auth",
            path,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Origin": self.url("auth").rstrip("/"),
            },
            body=json.dumps(payload).encode(),
            cookie=cookie,
        )

    def sign_in(self, user: str = "alice", target: str | None = None) -> Reply:
        """``POST /api/firstfactor`` through the proxy."""
        payload: dict[str, object] = {
            "username": user,
            "password": PASSWORDS[user],
            "keepMeLoggedIn": False,
        }
        if target:
            payload["targetURL"] = target
        return self.api("/api/firstfactor", payload)

    def totp_code(self, user: str = "alice") -> str:
        """The current TOTP code of ``user``."""
        import pyotp

        return str(pyotp.TOTP(self.totp_secrets[user]).now())

    # ------------------------------------------------------------------ authctl up/down

    def wait_ready(self) -> None:
        """authctl answers, and the proxy routes the portal to it."""
        wait_until(
            f"authctl on port {self.authctl_port}",
            lambda: port_open(self.authctl_port),
            self.authctl,
        )
        wait_until(
            f"{self.proxy} on port {self.proxy_port} (portal health through the proxy)",
            lambda: self.request("auth", "/api/health").status == 200,
            self.proxy_proc,
        )

    def restart_authctl(self) -> None:
        """Start authctl again after a test stopped it."""
        if not self.authctl.alive():
            self.authctl.start()
        self.wait_ready()

    def stop(self) -> None:
        """Stop the proxy and authctl (each by its process-group PID)."""
        self.proxy_proc.stop()
        self.authctl.stop()


def run_cli(args: list[str], folder: Path, **kwargs: t.Any) -> subprocess.CompletedProcess[str]:
    """Run the authctl CLI with the stack's config; fail the test with its output on error."""
    env = {
        **os.environ,
        "AUTHCTL_CONFIG": str(folder / "authctl.toml"),
        "COVERAGE_PROCESS_START": "",
    }
    result = subprocess.run(
        [AUTHCTL, *args], capture_output=True, text=True, env=env, timeout=60, check=False, **kwargs
    )
    if result.returncode != 0:
        pytest.fail(f"authctl {shlex.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def build_stack(
    proxy: str,
    folder: Path,
    echo_port: int,
    *,
    config: str = CONFIG,
    authctl_port: int | None = None,
    proxy_authctl_port: int | None = None,
) -> Stack:
    """Write the config, certificate and proxy config, then start authctl and the proxy.

    ``config`` is a template like :data:`CONFIG`. With ``proxy_authctl_port`` the proxy is
    configured to reach authctl there (a recording relay, say) while authctl itself listens on
    ``authctl_port``.
    """
    find_tool(BINARIES[proxy])
    proxy_port = free_port()
    authctl_port = authctl_port or free_port()
    folder.parent.mkdir(parents=True, exist_ok=True)
    make_folder(
        folder,
        config.format(authctl_port=proxy_authctl_port or authctl_port, proxy_port=proxy_port),
    )

    # TLS: the certificate proxy-snippet picks up by default (certs/ beside the config)
    run_cli(
        ["cert", "generate", "--host", f"*.{DOMAIN}", "--host", DOMAIN, "--out",
         str(folder / "certs"), "--key-type", "ecdsa", "--ca"],
        folder,
    )  # fmt: skip
    out_dir = folder / proxy
    args = ["proxy-snippet", proxy, "--out", str(out_dir), "--listen", f"127.0.0.1:{proxy_port}",
            "--upstream", f"http://127.0.0.1:{echo_port}"]  # fmt: skip
    for sub in HOSTS:
        args += ["--host", f"{sub}.{DOMAIN}"]
    rendered = run_cli(args, folder)
    start = shlex.split(rendered.stdout.strip().splitlines()[-1])
    if proxy_authctl_port is not None:
        # the proxy config names the relay; authctl itself listens on its own port
        (folder / "authctl.toml").write_text(
            config.format(authctl_port=authctl_port, proxy_port=proxy_port), encoding="utf-8"
        )

    totp_secrets = {}
    for user in ("alice", "bob"):
        added = run_cli(["user", "totp", "add", user, "--json"], folder)
        totp_secrets[user] = json.loads(added.stdout)["secret"]

    env = {
        **os.environ,
        "AUTHCTL_CONFIG": str(folder / "authctl.toml"),
        "COVERAGE_PROCESS_START": "",
    }
    authctl = Proc("authctl", [AUTHCTL, "serve"], folder / "authctl.log", env).start()
    # HOME inside the stack: a proxy that wants a data folder finds it there, not in ~
    proxy_env = {**os.environ, "HOME": str(folder / "home")}
    (folder / "home").mkdir(exist_ok=True)
    proxy_proc = Proc(proxy, start, folder / f"{proxy}.log", proxy_env).start()
    stack = Stack(
        proxy=proxy,
        folder=folder,
        proxy_port=proxy_port,
        authctl_port=authctl_port,
        ca_file=folder / "certs" / "ca.pem",
        authctl=authctl,
        proxy_proc=proxy_proc,
        start_command=start,
        totp_secrets=totp_secrets,
    )
    try:
        stack.wait_ready()
    except BaseException:
        stack.stop()
        raise
    return stack


class Stacks:
    """Started stacks by proxy name, shared by the e2e modules, stopped at session end."""

    def __init__(self, base: Path, echo_port: int) -> None:
        self.base = base
        self.echo_port = echo_port
        self.started: dict[str, Stack] = {}
        self.builds: dict[str, int] = {}

    def get(self, proxy: str) -> Stack:
        """The stack for ``proxy``, started on first use; one stopped by a module and asked
        for again by a later one is built anew in a folder of its own (its certificates and
        configs are never written over)."""
        if proxy not in self.started:
            n = self.builds.get(proxy, 0)
            self.builds[proxy] = n + 1
            folder = self.base / (proxy if n == 0 else f"{proxy}-{n}")
            self.started[proxy] = build_stack(proxy, folder, self.echo_port)
        return self.started[proxy]

    def stop(self, proxy: str) -> None:
        """Stop one stack (to keep at most a couple running on a 2-core machine)."""
        stack = self.started.pop(proxy, None)
        if stack is not None:
            stack.stop()

    def stop_all(self) -> None:
        """Stop every stack."""
        for proxy in list(self.started):
            self.stop(proxy)


@pytest.fixture(scope="session")
def echo_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The echo app, shared by every stack."""
    log = tmp_path_factory.mktemp("echo") / "echo.log"
    proc = Proc("echo", [sys.executable, str(HERE / "echo_backend.py")], log).start()
    port: list[int] = []

    def ready() -> bool:
        text = log.read_text() if log.exists() else ""
        if "listening on 127.0.0.1:" in text:
            port.append(int(text.split("listening on 127.0.0.1:", 1)[1].split()[0]))
            return True
        return False

    try:
        wait_until("the echo app", ready, proc)
        yield port[0]
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def stacks(tmp_path_factory: pytest.TempPathFactory, echo_port: int) -> Iterator[Stacks]:
    """The stack factory; every stack still running is stopped at the end of the session."""
    registry = Stacks(tmp_path_factory.mktemp("stacks"), echo_port)
    try:
        yield registry
    finally:
        registry.stop_all()
