"""The high-availability harness: PostgreSQL, Redis + Sentinel, two authctl hosts, nginx.

In the spirit of Authelia's HighAvailability suite, everything is real and on loopback:

- a throwaway PostgreSQL 15 cluster of its own (``tests/pgcluster.py``: ``initdb``/``pg_ctl``
  in a temp dir as the ``postgres`` user, password authentication), stopped and started by a
  test;
- Redis (``tests/redis_services.py``): a primary and a replica with a password, and three
  Sentinels with a short ``down-after-milliseconds``, so a killed primary is replaced within
  seconds;
- two ``authctl serve`` processes, host A from ``authctl init`` and host B from ``authctl
  init --join A B``, both with ``[storage] backend = "postgres"`` and ``[session] store =
  "redis"`` through ``[session.redis_sentinel]``, reading A's users file;
- nginx from ``authctl proxy-snippet nginx --out`` with both hosts in its ``authctl``
  upstream, so ``auth_request`` sub-requests are spread over both (and go to B when A dies).

Tests talk to the hosts directly too (portal API and ``forward-auth``, as a proxy would), so
"sign in on A, verify on B" means exactly that. The authctl part of the config is the one of
``docs/many-hosts.md`` (the block after ``<!-- ha-config -->``), with the service names of the
compose example replaced by loopback ports: the documented deployment is the tested one.

Every process is stopped by its PID at the end; every wait is bounded.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from server.core.config import PasswordHashConfig
from server.core.passwords import PasswordHasher
from tests.apphelpers import PASSWORDS
from tests.e2e.conftest import AUTHCTL
from tests.e2e.conftest import DOMAIN
from tests.e2e.conftest import Proc
from tests.e2e.conftest import Reply
from tests.e2e.conftest import _SniConnection
from tests.e2e.conftest import find_tool
from tests.e2e.conftest import free_port
from tests.e2e.conftest import port_open
from tests.e2e.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "many-hosts.md"
CHEAP = PasswordHashConfig(memory_kib=8, iterations=1, parallelism=1)
#: Users of the suite: each scenario signs in as its own, so one's bans and TOTP steps do not
#: reach another's. All but carol have the same kind of entry as tests/apphelpers.py.
USERS = ("alice", "bob", "dave", "erin", "frank", "gina")
PASSWORD_OF = {**PASSWORDS, **{user: f"{user}'s long passphrase" for user in USERS[2:]}}
SUBS = ("app", "public", "secure", "deny")

# The access rules of the suite (the deployment example has its own).
RULES = """\
[regulation]
max_retries = 3
find_time = "2m"
ban_time = "5m"
modes = ["user"]

[notifier]
filesystem = "notifications.txt"

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


# --------------------------------------------------------------------------- PostgreSQL


class PgCluster:
    """PostgreSQL for the suite: a cluster of its own from ``tests/pgcluster.py`` (the suite
    stops and starts it), with the database ``authctl`` owned by the role ``authctl``."""

    def __init__(self) -> None:
        from tests.pgcluster import PgCluster as Cluster

        self.cluster = Cluster.create()
        self.port = self.cluster.port
        self.password = self.cluster.password_file.read_text(encoding="utf-8").strip()
        with self.cluster.admin() as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'authctl'").fetchone()
            if found is None:
                conn.execute("CREATE DATABASE authctl OWNER authctl")

    def start(self) -> None:
        """Start it again on the same port."""
        self.cluster.start()

    def stop(self) -> None:
        """Stop it (fast shutdown: every client connection is cut, as in a restart)."""
        self.cluster.stop("fast")

    def close(self) -> None:
        """Stop it and remove its folder."""
        self.cluster.destroy()


# --------------------------------------------------------------------------- Redis + Sentinel


class RedisSet:
    """Redis for the suite: ``tests/redis_services.SentinelCluster`` (a primary with a
    password, one replica, three Sentinels with the same password, quorum 2), seen the way
    the fault tests need it."""

    def __init__(self, base: Path) -> None:
        from tests.redis_services import SentinelCluster

        self.password = secrets.token_urlsafe(18)
        self.cluster = SentinelCluster(base, password=self.password)
        self.primary_port = self.cluster.primary.port

    @property
    def nodes(self) -> list[str]:
        """The Sentinels as ``host:port`` (``[session.redis_sentinel] nodes``)."""
        return [f"{host}:{port}" for host, port in self.cluster.nodes]

    def masters_seen(self) -> set[int]:
        """The primary port each Sentinel names now (0 for one that does not answer)."""
        seen = set()
        for index in range(len(self.cluster.nodes)):
            try:
                seen.add(self.cluster._master_port(index) or 0)
            except (redis.RedisError, OSError):
                seen.add(0)
        return seen

    def sync_replica(self) -> None:
        """Wait until the replica has every write the primary took (``WAIT 1``)."""
        self.cluster.replicate()

    def kill_primary(self) -> tuple[int, float]:
        """SIGKILL the primary (no goodbye to anyone); its port, and the monotonic time by
        which it was gone (its sockets closed by the kernel)."""
        old = self.cluster.primary
        old.proc.send_signal(signal.SIGKILL)
        old.proc.wait(timeout=10)
        return old.port, time.monotonic()

    def promoted(self, old: int) -> bool:
        """True once some Sentinel names another primary than ``old``."""
        return bool(self.masters_seen() - {old, 0})

    def close(self) -> None:
        """Stop every Sentinel and data node."""
        self.cluster.stop()


# --------------------------------------------------------------------------- the config


def docs_config() -> str:
    """The authctl part of the deployment example in docs/many-hosts.md.

    It is the fenced ``toml`` block right after the ``<!-- ha-config -->`` marker; the suite
    fills in loopback ports for the compose service names.
    """
    text = DOCS.read_text(encoding="utf-8")
    found = re.search(r"<!-- ha-config -->\s*```toml\n(.*?)```", text, re.DOTALL)
    assert found, f"{DOCS} has no ```toml block after <!-- ha-config -->"
    return found.group(1)


def host_config(*, port: int, users_file: str, pg: PgCluster, rs: RedisSet, proxy_port: int) -> str:
    """One host's authctl.toml: the documented storage and session parts, the suite's rules."""
    text = docs_config()
    replacements = {
        "0.0.0.0:9091": f"127.0.0.1:{port}",
        "postgres:5432": f"127.0.0.1:{pg.port}",
        "redis-primary:6379": f"127.0.0.1:{rs.primary_port}",
        '"/shared/users.toml"': json.dumps(users_file),
        "https://auth.example.com": f"https://auth.{DOMAIN}:{proxy_port}",
        "https://www.example.com": f"https://app.{DOMAIN}:{proxy_port}/",
        '"example.com"': f'"{DOMAIN}"',
        '"10.0.0.0/8"': '"127.0.0.1/32", "::1/128"',
    }
    for n, node in enumerate(rs.nodes, start=1):
        replacements[f"sentinel-{n}:26379"] = node
    for old, new in replacements.items():
        assert old in text, f"docs/many-hosts.md's config lost {old!r}"
        text = text.replace(old, new)
    # a short database timeout (a faster suite), cheap hashes and the suite's rules
    assert 'timeout = "5s"' in text
    text = text.replace('timeout = "5s"', 'timeout = "2s"')
    text = text.replace("[users]\n", "[users]\npassword_hash = { memory_kib = 8, iterations = 1, "
                        "parallelism = 1 }\n", 1)  # fmt: skip
    return text.split("[regulation]", 1)[0].rstrip() + "\n\n" + RULES


def users_text() -> str:
    """alice, bob, carol (disabled) as in tests/apphelpers.py, and dave, erin, frank."""
    hasher = PasswordHasher(CHEAP)
    out = []
    for user in (*USERS, "carol"):
        out.append(
            f'[users.{user}]\ndisplayname = "{user.title()}"\n'
            f'password = "{hasher.hash(PASSWORD_OF[user])}"\n'
            f'email = "{user}@example.com"\ngroups = ["dev"]\n'
            + ("disabled = true\n" if user == "carol" else "")
        )
    return "\n".join(out)


def cli(
    folder: Path, *args: str, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the authctl CLI against ``folder``'s config."""
    env = {
        **os.environ,
        "AUTHCTL_CONFIG": str(folder / "authctl.toml"),
        "COVERAGE_PROCESS_START": "",
    }
    done = subprocess.run(
        [AUTHCTL, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        pytest.fail(f"authctl {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


# --------------------------------------------------------------------------- hosts


@dataclass
class Host:
    """One ``authctl serve`` process and direct requests to it (as a proxy would send)."""

    name: str
    folder: Path
    port: int
    proxy_port: int
    proc: Proc

    def _conn(self, timeout: float) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def call(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None = None,
        timeout: float = 10,
    ) -> Reply:
        """One request on a new connection."""
        conn = self._conn(timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return Reply(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def portal_headers(self, client_ip: str = "127.0.0.1") -> dict[str, str]:
        """What the proxy adds to a portal request of a browser at ``client_ip``."""
        origin = f"https://auth.{DOMAIN}:{self.proxy_port}"
        return {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": f"auth.{DOMAIN}:{self.proxy_port}",
            "X-Forwarded-For": client_ip,
            "Origin": origin,
        }

    def api(
        self, path: str, payload: object = None, *, cookie: str | None = None,
        method: str = "POST", timeout: float = 10,
    ) -> Reply:  # fmt: skip
        """A portal API call, JSON, same origin."""
        headers = self.portal_headers()
        if cookie:
            headers["Cookie"] = cookie
        body = None if payload is None else json.dumps(payload).encode()
        return self.call(method, path, headers, body, timeout)

    def sign_in(self, user: str, password: str | None = None) -> Reply:
        """``POST /api/firstfactor``."""
        return self.api(
            "/api/firstfactor",
            {"username": user, "password": password or PASSWORD_OF[user], "keepMeLoggedIn": False},
        )

    def verify_headers(self, sub: str = "app", cookie: str | None = None) -> dict[str, str]:
        """A forward-auth request for ``https://sub.example.test:PORT/``."""
        headers = {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": f"{sub}.{DOMAIN}:{self.proxy_port}",
            "X-Forwarded-Uri": "/",
            "X-Forwarded-Method": "GET",
            "X-Forwarded-For": "127.0.0.1",
            "Accept": "text/html",
        }
        if cookie:
            headers["Cookie"] = cookie
        return headers

    def verify(self, sub: str = "app", cookie: str | None = None, timeout: float = 10) -> int:
        """The status of ``GET /api/authz/forward-auth`` for ``sub`` with ``cookie``."""
        return self.call(
            "GET", "/api/authz/forward-auth", self.verify_headers(sub, cookie), timeout=timeout
        ).status

    def kill(self) -> None:
        """SIGKILL the whole process group: a host that dies without a word."""
        proc = self.proc.proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        self.proc.proc = None

    def notifications(self) -> str:
        """The host's notifications file ([notifier] filesystem)."""
        path = self.folder / "notifications.txt"
        return path.read_text(encoding="utf-8") if path.exists() else ""


def cookie_of(reply: Reply) -> str:
    """``name=value`` of a Set-Cookie header (empty when none)."""
    return reply.cookie()


# --------------------------------------------------------------------------- the cluster


@dataclass
class HaCluster:
    """Everything started by :func:`start_cluster`, stopped by :meth:`close`."""

    base: Path
    pg: PgCluster
    rs: RedisSet
    hosts: dict[str, Host]
    nginx: Proc
    proxy_port: int
    ca_file: Path
    joined: bool
    joined_config: str
    totp_secrets: dict[str, str] = field(default_factory=dict)

    @property
    def a(self) -> Host:
        return self.hosts["A"]

    @property
    def b(self) -> Host:
        return self.hosts["B"]

    def through_proxy(
        self, sub: str, path: str = "/", cookie: str | None = None, timeout: float = 10
    ) -> Reply:
        """One GET through nginx (TLS, SNI ``sub.example.test``), redirects not followed."""
        import ssl

        context = ssl.create_default_context(cafile=str(self.ca_file))
        conn = _SniConnection(f"{sub}.{DOMAIN}", self.proxy_port, context=context, timeout=timeout)
        try:
            conn.putrequest("GET", path, skip_accept_encoding=True)
            conn.putheader("Accept", "text/html")
            if cookie:
                conn.putheader("Cookie", cookie)
            conn.endheaders()
            resp = conn.getresponse()
            return Reply(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def portal_redirect(self, sub: str = "app") -> str:
        """Where nginx sends an anonymous visitor of ``sub``."""
        target = f"https://{sub}.{DOMAIN}:{self.proxy_port}/"
        return f"https://auth.{DOMAIN}:{self.proxy_port}/?rd={quote(target, safe='')}&rm=GET"

    def close(self) -> None:
        """Stop nginx, the hosts, Redis and PostgreSQL."""
        self.nginx.stop()
        for host in self.hosts.values():
            host.proc.stop()
        self.rs.close()
        self.pg.close()


def _wait_host(host: Host) -> None:
    wait_until(f"authctl host {host.name} on port {host.port}", lambda: port_open(host.port),
               host.proc)  # fmt: skip
    wait_until(
        f"host {host.name} health",
        lambda: host.call("GET", "/api/health", host.portal_headers()).status == 200,
        host.proc,
    )


def _join(a: Path, b: Path) -> bool:
    """``authctl init --join A B``; False (and a copy of A's secrets) when --join is missing."""
    done = cli(a, "init", "--join", str(a), str(b), check=False)
    if done.returncode == 0:
        return True
    if "no such option" not in done.stderr.lower():
        pytest.fail(f"authctl init --join exited {done.returncode}:\n{done.stderr}")
    # --join has not landed: make B by hand, as the docs' manual steps would
    b.mkdir(parents=True)
    shutil.copytree(a / "secrets", b / "secrets")
    return False


def start_cluster(base: Path, echo_port: int) -> HaCluster:
    """Start PostgreSQL, Redis + Sentinels, hosts A and B, and nginx in front of both."""
    find_tool("nginx")
    pg = PgCluster()
    rs: RedisSet | None = None
    started: list[Proc] = []
    try:
        rs = RedisSet(base / "redis")
        proxy_port = free_port()
        ports = {"A": free_port(), "B": free_port()}
        a_dir, b_dir = base / "A", base / "B"
        cli(a_dir, "init", str(a_dir), "--port", str(proxy_port))
        users_file = a_dir / "users.toml"
        users_file.write_text(users_text(), encoding="utf-8")
        (a_dir / "authctl.toml").write_text(
            host_config(port=ports["A"], users_file=str(users_file), pg=pg, rs=rs,
                        proxy_port=proxy_port),
            encoding="utf-8",
        )  # fmt: skip
        _write_service_secrets(a_dir, pg, rs)
        joined = _join(a_dir, b_dir)
        joined_config = (b_dir / "authctl.toml").read_text(encoding="utf-8") if joined else ""
        (b_dir / "authctl.toml").write_text(
            host_config(port=ports["B"], users_file=str(users_file), pg=pg, rs=rs,
                        proxy_port=proxy_port),
            encoding="utf-8",
        )  # fmt: skip
        _write_service_secrets(b_dir, pg, rs)
        # TOTP devices enrolled by the CLI (written to PostgreSQL)
        totp_secrets = {}
        for user in ("bob", "frank"):
            added = cli(a_dir, "user", "totp", "add", user, "--json")
            totp_secrets[user] = json.loads(added.stdout)["secret"]

        # TLS for nginx: a CA and a wildcard certificate, as tests/e2e/conftest.py makes them
        shutil.rmtree(a_dir / "certs", ignore_errors=True)
        cli(a_dir, "cert", "generate", "--host", f"*.{DOMAIN}", "--host", DOMAIN, "--out",
            str(a_dir / "certs"), "--key-type", "ecdsa", "--ca")  # fmt: skip
        hosts = {}
        for name, folder in (("A", a_dir), ("B", b_dir)):
            env = {**os.environ, "AUTHCTL_CONFIG": str(folder / "authctl.toml"),
                   "COVERAGE_PROCESS_START": ""}  # fmt: skip
            proc = Proc(f"authctl-{name}", [AUTHCTL, "serve"], folder / "authctl.log", env)
            started.append(proc.start())
            hosts[name] = Host(name, folder, ports[name], proxy_port, proc)
        for host in hosts.values():
            _wait_host(host)

        nginx = _start_nginx(a_dir, proxy_port, echo_port, ports)
        started.append(nginx)
        cluster = HaCluster(
            base=base, pg=pg, rs=rs, hosts=hosts, nginx=nginx, proxy_port=proxy_port,
            ca_file=a_dir / "certs" / "ca.pem", joined=joined, joined_config=joined_config,
            totp_secrets=totp_secrets,
        )  # fmt: skip
        wait_until(
            "nginx in front of both hosts",
            lambda: cluster.through_proxy("public").status == 200,
            nginx,
        )
        return cluster
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        if rs is not None:
            rs.close()
        pg.close()
        raise


def _write_service_secrets(folder: Path, pg: PgCluster, rs: RedisSet) -> None:
    """The PostgreSQL and Redis passwords, as files under secrets/ (never in the config)."""
    for name, value in (("postgres.password", pg.password), ("redis.password", rs.password)):
        path = folder / "secrets" / name
        path.write_text(value + "\n", encoding="utf-8")
        path.chmod(0o600)


def _start_nginx(a_dir: Path, proxy_port: int, echo_port: int, ports: dict[str, int]) -> Proc:
    """nginx from ``proxy-snippet nginx --out``, its ``authctl`` upstream naming both hosts."""
    out_dir = a_dir / "nginx"
    args = ["proxy-snippet", "nginx", "--out", str(out_dir), "--listen",
            f"127.0.0.1:{proxy_port}", "--upstream", f"http://127.0.0.1:{echo_port}"]  # fmt: skip
    for sub in SUBS:
        args += ["--host", f"{sub}.{DOMAIN}"]
    rendered = cli(a_dir, *args)
    start = rendered.stdout.strip().splitlines()[-1].split()
    patched = 0
    for conf in out_dir.rglob("*.conf"):
        text = conf.read_text(encoding="utf-8")
        one = f"server 127.0.0.1:{ports['A']};"
        if one in text:
            # both hosts; a refused connection (a dead host) moves on to the other at once
            both = f"{one}\n    server 127.0.0.1:{ports['B']};"
            conf.write_text(text.replace(one, both), encoding="utf-8")
            patched += 1
    assert patched, f"no upstream naming 127.0.0.1:{ports['A']} in {out_dir}"
    (a_dir / "home").mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(a_dir / "home")}
    return Proc("nginx", start, a_dir / "nginx.log", env).start()


# --------------------------------------------------------------------------- load during faults


@dataclass
class Tally:
    """What a load thread saw: requests sent, and the 200s among them with their times."""

    sent: int = 0
    ok: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    #: (started, finished) monotonic times of each 200 answer
    allowed: list[tuple[float, float]] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.sent += other.sent
        self.ok += other.ok
        self.errors += other.errors
        for status, n in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n
        self.allowed.extend(other.allowed)

    def allowed_within(self, start: float, end: float) -> int:
        """200 answers to requests sent and answered inside [start, end]."""
        return sum(1 for began, done in self.allowed if began >= start and done <= end)


class Load:
    """Threads sending one kind of request in a loop until stopped, each on its own keep-alive
    connection (reopened after an error), recording every answer's status and time."""

    def __init__(self, request: Callable[[], int], threads: int = 2, pause: float = 0.0) -> None:
        self.request = request
        self.pause = pause
        self.stop_event = threading.Event()
        self.tallies = [Tally() for _ in range(threads)]
        self.threads = [
            threading.Thread(target=self._run, args=(tally,), daemon=True) for tally in self.tallies
        ]

    def _run(self, tally: Tally) -> None:
        while not self.stop_event.is_set():
            began = time.monotonic()
            try:
                status = self.request()
            except (OSError, http.client.HTTPException):
                tally.sent += 1
                tally.errors += 1
                self.stop_event.wait(0.02)
                continue
            done = time.monotonic()
            tally.sent += 1
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
            if status == 200:
                tally.ok += 1
                tally.allowed.append((began, done))
            if self.pause:
                self.stop_event.wait(self.pause)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=15)

    def total(self) -> Tally:
        """Every thread's tally together."""
        out = Tally()
        for tally in self.tallies:
            out.add(tally)
        return out
