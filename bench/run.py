"""One command that measures authctl against its SPEC §5 targets and prints one table.

A script that prints numbers, not a test: timings depend on the machine, so SPEC §5 asks for a
baseline measured in the same run and for ratios against it. Every throughput row is wrk on
loopback with the servers pinned to CPU 0 and wrk to CPU 1 (``taskset``; unpinned numbers
swing by ±30 %, see ``reference/proxies.md`` §4), and the baselines are served with exactly
authctl's waitress settings (``bench/apps.py`` uses ``server.serve.httpd.make_server``).

Rows: bare waitress "hello" (the floor), verify with a session cookie (SQLite store, the
default, and the memory store; and the SQLite store through waitress's thread pool only, i.e.
without ``server.serve.inline``), Basic credentials with a warm cache, an anonymous redirect,
nginx TLS without auth, nginx ``auth_request`` to authctl and to a trivial waitress check;
then CPU time per request (``/proc/PID/stat``), RSS, 1,000 rules, 10,000 users, verify p99
under a login flood (argon2 at default parameters), and ``serve --workers 2`` against 1.
Many hosts (SPEC §7.7): verify with the Redis session store, two hosts sharing one Redis
(primary, replica and three Sentinels, as ``docs/many-hosts.md`` deploys it; one wrk per host,
the same pinning), against V; the delay until a logout on one host is refused by the other
(median and max); and a Sentinel failover (primary killed) until the same cookie works again.
Tokens (SPEC §7.7): verify with a bearer token (VT) on V's server, against V.
Passkeys (SPEC §7.7): passkey sign-ins (options + assertion, ``bench/passkey_flow.py``), 10
users at once.
Metrics (SPEC §7.7): verify as V on a server with ``[telemetry.metrics]`` on, its wrk runs
interleaved with V's, and the ratio of the two (the scrape afterwards must count them).

It installs nothing. It needs ``wrk``, ``nginx``, ``openssl``, ``taskset``, ``redis-server``
and ``redis-sentinel`` on PATH (``apt-get install -y wrk nginx redis-server redis-sentinel``)
and says so when one is missing.

    .venv/bin/python bench/run.py            # about 3 minutes
    .venv/bin/python bench/run.py --quick    # 1-second runs, a smoke test of the script
"""

from __future__ import annotations

import argparse
import base64
import datetime
import http.client
import importlib.metadata
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
AUTHCTL = str(Path(PY).with_name("authctl"))
#: The SPEC's wrk shape (reference/proxies.md §4).
WRK_THREADS = 2
WRK_CONNECTIONS = 32
SERVER_CPU = "0"
CLIENT_CPU = "1"
PASSWORD = "correct horse battery staple"
HOST = "app.example.com"

# --------------------------------------------------------------------------- parsing helpers


@dataclass
class WrkResult:
    """What one wrk run reports: throughput, latency percentiles and failures."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx_3xx: int = 0
    socket_errors: int = 0
    cpu_seconds: float | None = None

    @property
    def cpu_us_per_request(self) -> float | None:
        """Server CPU time per request in µs, when the server's CPU time was measured."""
        if self.cpu_seconds is None or not self.requests:
            return None
        return self.cpu_seconds / self.requests * 1e6


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


#: Seconds of the unrecorded run each case gets before the measured ones.
WARM_UP_SECONDS = 1.0


def parse_duration_ms(text: str) -> float:
    """wrk's latency text (``612.00us``, ``6.50ms``, ``1.02s``, ``1.5m``) in milliseconds."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(text: str) -> WrkResult:
    """Read wrk's ``--latency`` report.

    Raises:
        ValueError: the text is not a wrk report (no request count or no latency table).
    """
    done = re.search(r"^\s*([0-9]+) requests in ([0-9.]+)(us|ms|s|m)", text, re.MULTILINE)
    rps = re.search(r"^Requests/sec:\s*([0-9.]+)", text, re.MULTILINE)
    p50 = re.search(r"^\s*50%\s+(\S+)", text, re.MULTILINE)
    p99 = re.search(r"^\s*99%\s+(\S+)", text, re.MULTILINE)
    if done is None or rps is None or p50 is None or p99 is None:
        raise ValueError("not a wrk --latency report:\n" + text)
    non = re.search(r"Non-2xx or 3xx responses:\s*([0-9]+)", text)
    errors = re.search(
        r"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)", text
    )
    return WrkResult(
        requests=int(done.group(1)),
        seconds=parse_duration_ms(done.group(2) + done.group(3)) / 1000,
        rps=float(rps.group(1)),
        p50_ms=parse_duration_ms(p50.group(1)),
        p99_ms=parse_duration_ms(p99.group(1)),
        non_2xx_3xx=int(non.group(1)) if non else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def parse_proc_stat_cpu(stat: str, ticks_per_second: int) -> float:
    """utime + stime in seconds from the text of ``/proc/PID/stat``.

    The command name (field 2) is in parentheses and may hold spaces, so fields are counted
    from the last ``)``: utime and stime are fields 14 and 15.
    """
    rest = stat[stat.rindex(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / ticks_per_second


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    return parse_proc_stat_cpu(stat, os.sysconf("SC_CLK_TCK"))


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for {pid}")


def median_result(runs: list[WrkResult]) -> WrkResult:
    """The run with the median throughput (its latencies and CPU stay consistent with it)."""
    ordered = sorted(runs, key=lambda r: r.rps)
    return ordered[(len(ordered) - 1) // 2]


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Wait until something accepts on ``port``; fail when ``proc`` died first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


class Service:
    """A server process (optionally pinned to a CPU), stopped with SIGTERM."""

    def __init__(
        self, name: str, argv: list[str], port: int, log: Path, cpu: str | None = SERVER_CPU
    ) -> None:
        self.name = name
        self.port = port
        self.log = log
        prefix = ["taskset", "-c", cpu] if cpu is not None else []
        with log.open("ab") as out:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                prefix + argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        try:
            wait_for_port(port, self.proc)
        except RuntimeError as exc:
            self.stop()
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name}: {exc}\n{tail}") from None

    @property
    def pid(self) -> int:
        """The server's PID (``taskset`` execs the server, so it is the same process)."""
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop the process and return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# --------------------------------------------------------------------------- the authctl site


CONFIG = """\
[server]
address = "127.0.0.1:{port}"
trusted_proxies = ["127.0.0.1/32"]
threads = 4

[users]
file = "users.toml"

[storage]
path = "authctl.db"
encryption_key_file = "secrets/storage.key"

[session]
store = "{store}"

[[session.cookies]]
domain = "example.com"
portal_url = "https://auth.example.com"
default_redirect_url = "https://www.example.com"

[regulation]
max_retries = 0

[access_control]
default_policy = "deny"

[[access_control.rules]]
domain = "public.example.com"
policy = "bypass"

[[access_control.rules]]
domain = "*.example.com"
policy = "one_factor"
"""


def write_site(folder: Path, store: str, users_text: str) -> Path:
    """An authctl config folder (threads = 4, like the baseline) with the given store."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "authctl.toml"
    config.write_text(CONFIG.format(port=9091, store=store), encoding="utf-8")
    users = folder / "users.toml"
    users.write_text(users_text, encoding="utf-8")
    users.chmod(0o600)
    (folder / "secrets").mkdir(mode=0o700, exist_ok=True)
    key = folder / "secrets" / "storage.key"
    key.write_text(secrets.token_hex(32), encoding="ascii")
    key.chmod(0o600)
    return config


def with_metrics(config: Path, port: int) -> Path:
    """``config`` with ``[telemetry.metrics]`` on at ``127.0.0.1:port`` (the row VM)."""
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text + f'\n[telemetry.metrics]\nenable = true\naddress = "127.0.0.1:{port}"\n',
        encoding="utf-8",
    )
    return config


def scraped_authz(port: int) -> float:
    """``authctl_authz_total{code="200"}`` from the metrics listener on ``port``."""
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "authctl_authz_total" and sample.labels == {"code": "200"}
    )


def users_file_text() -> str:
    """alice with an argon2id hash at the DEFAULT parameters (what a real login pays)."""
    sys.path.insert(0, str(ROOT))
    from server.core.config import PasswordHashConfig
    from server.core.passwords import PasswordHasher

    phc = PasswordHasher(PasswordHashConfig()).hash(PASSWORD)
    return (
        f'[users.alice]\ndisplayname = "Alice"\npassword = "{phc}"\n'
        'email = "alice@example.com"\ngroups = ["admins", "dev"]\n'
    )


def start_authctl(
    name: str, config: Path, log: Path, *, workers: int = 1, cpu: str | None = SERVER_CPU
) -> Service:
    """``authctl serve`` on a free port."""
    port = free_port()
    argv = [AUTHCTL, "--config", str(config), "serve", "--address", f"127.0.0.1:{port}"]
    if workers != 1:
        argv += ["--workers", str(workers)]
    return Service(name, argv, port, log, cpu)


PORTAL_HEADERS = {
    "Content-Type": "application/json",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "auth.example.com",
    "Origin": "https://auth.example.com",
}


def login(port: int, timeout: float = 30.0, client_ip: str | None = None) -> tuple[int, str]:
    """POST /api/firstfactor as alice; the status and the ``name=value`` session cookie.

    ``client_ip`` is sent as ``X-Forwarded-For`` (the proxy's word, believed from loopback):
    authctl gives each client only a share of the hashing slots, so clients that should count
    as different people need different addresses. Only a header: no traffic goes there.
    """
    body = json.dumps({"username": "alice", "password": PASSWORD}).encode()
    headers = dict(PORTAL_HEADERS)
    if client_ip is not None:
        headers["X-Forwarded-For"] = client_ip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/api/firstfactor", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status, (resp.getheader("Set-Cookie") or "").split(";", 1)[0]
    finally:
        conn.close()


def make_token(config: Path) -> str:
    """A personal access token for alice (``authctl token create``), for the row VT."""
    argv = [AUTHCTL, "--config", str(config), "token", "create", "alice", "--name", "bench"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def verify_headers(cookie: str | None = None, basic: str | None = None) -> dict[str, str]:
    """The forward-auth request a proxy sends for ``https://app.example.com/``."""
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": HOST,
        "X-Forwarded-Uri": "/",
        "X-Forwarded-Method": "GET",
        "Accept": "text/html",
    }
    if cookie:
        headers["Cookie"] = cookie
    if basic:
        headers["Authorization"] = "Basic " + base64.b64encode(basic.encode()).decode()
    return headers


def status_of(port: int, path: str, headers: dict[str, str], *, tls: bool = False) -> int:
    """One GET; its status (checks a case answers what it should before wrk hammers it)."""
    conn: http.client.HTTPConnection
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


# --------------------------------------------------------------------------- wrk


def wrk(
    url: str,
    headers: dict[str, str],
    seconds: float,
    *,
    cpu: str | None = CLIENT_CPU,
    pid: int | None = None,
    connections: int = WRK_CONNECTIONS,
    threads: int = WRK_THREADS,
) -> WrkResult:
    """One wrk run; with ``pid``, that process's CPU time over the run is recorded."""
    argv = ["taskset", "-c", cpu] if cpu is not None else []
    argv += ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]  # "Name: value": wrk drops "Name:value" silently
    argv.append(url)
    before = cpu_seconds(pid) if pid is not None else None
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)
    result = parse_wrk(out.stdout)
    if pid is not None and before is not None:
        result.cpu_seconds = cpu_seconds(pid) - before
    return result


# --------------------------------------------------------------------------- nginx

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/tmp/client_body;
    proxy_temp_path       {work}/tmp/proxy;
    fastcgi_temp_path     {work}/tmp/fastcgi;
    uwsgi_temp_path       {work}/tmp/uwsgi;
    scgi_temp_path        {work}/tmp/scgi;
    upstream hello   {{ server 127.0.0.1:{hello}; keepalive 32; }}
    upstream authctl {{ server 127.0.0.1:{authctl}; keepalive 32; }}
    upstream trivial {{ server 127.0.0.1:{trivial}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {host};
        ssl_certificate     {work}/cert.pem;
        ssl_certificate_key {work}/key.pem;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
{auth_locations}
        location /noauth/ {{ proxy_pass http://hello; }}
    }}
}}
"""
NGINX_AUTH = """\
        location = /internal/{name} {{
            internal;
            proxy_pass http://{name}/api/authz/auth-request;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
            proxy_set_header Connection "";   # not inherited once a location sets any header
        }}
        location /{name}/ {{
            auth_request /internal/{name};
            auth_request_set $user $upstream_http_remote_user;
            auth_request_set $redirection_url $upstream_http_location;
            error_page 401 =302 $redirection_url;
            proxy_set_header Remote-User $user;
            proxy_set_header Connection "";
            proxy_pass http://hello;
        }}
"""


def start_nginx(work: Path, hello: int, authctl: int, trivial: int) -> Service:
    """nginx with TLS and one worker, pinned with the servers (``nginx-bench.conf``)."""
    for sub in ("logs", "tmp"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={HOST}",
            "-keyout",
            str(work / "key.pem"),
            "-out",
            str(work / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            work=work,
            hello=hello,
            authctl=authctl,
            trivial=trivial,
            port=port,
            host=HOST,
            auth_locations="".join(NGINX_AUTH.format(name=n) for n in ("authctl", "trivial")),
        ),
        encoding="utf-8",
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return Service("nginx", [nginx, "-p", str(work), "-c", str(conf)], port, work / "nginx.out")


# --------------------------------------------------------------------------- the other rows


def run_script(args: list[str], timeout: float = 300) -> dict[str, t.Any]:
    """Run a helper in a fresh interpreter (clean RSS, cold caches) and read its JSON."""
    out = subprocess.run(
        [PY, *args], capture_output=True, text=True, timeout=timeout, check=True, cwd=ROOT
    )
    data: dict[str, t.Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return data


def rules_rows(number: int) -> list[tuple[str, float]]:
    """µs per ``evaluate`` over 1,000 rules, from ``bench/bench_rules.py``'s rule set."""
    sys.path.insert(0, str(BENCH))
    sys.path.insert(0, str(ROOT))
    import ipaddress

    import bench_rules

    from server.core.rules import AccessRequest

    ip = ipaddress.ip_address("10.1.2.3")
    engine = bench_rules.build(1000)
    last = AccessRequest("last.example.com", "/api/x", "a=1", "GET", ip, "alice", ("dev",))
    anonymous = AccessRequest("last.example.com", "/api/x", "", "GET", ip)
    assert engine.evaluate(last).rule == 999
    rows = [
        ("match at rule 1000, signed in", bench_rules.per_call_us(engine, last, 5, number)),
        ("match at rule 1000, anonymous", bench_rules.per_call_us(engine, anonymous, 5, number)),
    ]

    def cold() -> None:
        engine._candidates.cache_clear()
        engine.evaluate(last)

    import timeit

    cold_number = max(50, number // 10)
    cold_us = min(timeit.repeat(cold, repeat=5, number=cold_number)) / cold_number * 1e6
    rows.append(("match at rule 1000, cold host cache", cold_us))
    return rows


class LoginFlood:
    """``clients`` threads that keep signing in (argon2 at default parameters).

    Each client sends its next login as soon as the previous one succeeded; after a refusal
    (every hashing slot busy) it waits ``backoff`` seconds, as a person or a polite script
    would. With ``backoff`` 0 the clients turn into a flood of cheap refused requests.
    """

    def __init__(self, port: int, clients: int, backoff: float = 0.5) -> None:
        self.port = port
        self.backoff = backoff
        self.stop = threading.Event()
        self.ok = 0
        self.refused = 0
        self.errors = 0
        self._lock = threading.Lock()
        # each client its own address (TEST-NET-2, a header only), as 50 people would have
        self.threads = [
            threading.Thread(target=self._client, args=(f"198.51.100.{n + 1}",), daemon=True)
            for n in range(clients)
        ]

    def _client(self, client_ip: str) -> None:
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {int(CLIENT_CPU)})  # this thread only, with wrk
        while not self.stop.is_set():
            try:
                status, _ = login(self.port, timeout=30, client_ip=client_ip)
            except OSError:
                with self._lock:
                    self.errors += 1
                continue
            with self._lock:
                if status == 200:
                    self.ok += 1
                elif status == 401:
                    self.refused += 1  # the hash gate was full: a generic failure, no 5xx
                else:
                    self.errors += 1
            if status != 200 and self.backoff:
                self.stop.wait(self.backoff)

    def __enter__(self) -> LoginFlood:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=35)


# --------------------------------------------------------------------------- report


@dataclass
class Report:
    """Everything measured, printed as one table at the end."""

    lines: list[str] = field(default_factory=list)
    checks: list[tuple[str, float, str, bool]] = field(default_factory=list)

    def add(self, text: str = "") -> None:
        """Print a line now (progress is visible) and keep it for the summary."""
        print(text, flush=True)
        self.lines.append(text)

    def row(self, label: str, result: WrkResult, runs: int) -> None:
        """One throughput row."""
        cpu = result.cpu_us_per_request
        cpu_text = f"{cpu:8.1f}" if cpu is not None else " " * 8
        bad = ""
        if result.non_2xx_3xx or result.socket_errors:
            bad = f"  ({result.non_2xx_3xx} non-2xx/3xx, {result.socket_errors} socket errors)"
        self.add(
            f"  {label:<44} {result.rps:9,.0f} {result.p50_ms:8.2f} {result.p99_ms:8.2f}"
            f" {cpu_text}  {runs}{bad}"
        )

    def check(self, label: str, value: float, target: str, ok: bool) -> None:
        """One SPEC §5 target and whether this run met it."""
        self.checks.append((label, value, target, ok))
        self.add(f"  {label:<52} {value:8.2f}  {target:<10} {'ok' if ok else 'MISSED'}")


def machine_lines() -> list[str]:
    """Cores, CPU model, kernel, Python, package and tool versions, date."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for package in ("waitress", "webob", "argon2-cffi", "redis"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} -")
    tools = []
    for argv in (["wrk", "--version"], ["nginx", "-v"]):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            text = (out.stdout + out.stderr).strip().splitlines()[0]
            tools.append(text.split(" Copyright")[0].replace("nginx version: ", ""))
        except (OSError, IndexError):
            tools.append(f"{argv[0]} -")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"date:    {now}",
        f"machine: {os.cpu_count()} cores, {model or platform.processor()}, "
        f"Linux {platform.release()}",
        f"python:  {platform.python_version()}; {', '.join(versions)}",
        f"tools:   {'; '.join(tools)}",
    ]


MISSING_HELP = {
    "wrk": "apt-get install -y wrk",
    "nginx": "apt-get install -y nginx",
    "openssl": "apt-get install -y openssl",
    "taskset": "apt-get install -y util-linux",
    "redis-server": "apt-get install -y redis-server",
    "redis-sentinel": "apt-get install -y redis-sentinel",
}


def missing_tools() -> list[str]:
    """The tools this script needs that are not on PATH, each with how to install it."""
    out = []
    for tool, how in MISSING_HELP.items():
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            out.append(f"{tool} is not installed: {how}")
    if not Path(AUTHCTL).exists():
        out.append(f"{AUTHCTL} is missing: pip install -e . in the project's venv")
    return out


# --------------------------------------------------------------------------- many hosts

MASTER_NAME = "authctl"


class SentinelSet:
    """A Redis primary and replica with a password, and three Sentinels (quorum 2), pinned
    with the servers; a killed primary is replaced after ``down-after-milliseconds`` 1000."""

    def __init__(self, work: Path, logs: Path) -> None:
        self.password = secrets.token_urlsafe(18)
        self.work = work
        self.logs = logs
        self.data: dict[str, Service] = {}
        self.sentinels: list[Service] = []
        self.password_file = work / "redis.password"
        work.mkdir(parents=True, exist_ok=True)
        self.password_file.write_text(self.password + "\n", encoding="ascii")
        self.password_file.chmod(0o600)
        try:
            primary = self._data("primary", None)
            self._data("replica", primary.port)
            for number in range(3):
                self._sentinel(number, primary.port)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _data(self, name: str, replica_of: int | None) -> Service:
        port = free_port()
        folder = self.work / name
        folder.mkdir(exist_ok=True)
        argv = [shutil.which("redis-server") or "redis-server", "--port", str(port),
                "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder),
                "--requirepass", self.password, "--masterauth", self.password]  # fmt: skip
        if replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.data[name] = Service(f"redis-{name}", argv, port, self.logs / f"redis-{name}.log")
        return self.data[name]

    def _sentinel(self, number: int, primary: int) -> None:
        port = free_port()
        folder = self.work / f"sentinel-{number}"
        folder.mkdir(exist_ok=True)
        conf = folder / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n"
            f"sentinel auth-pass {MASTER_NAME} {self.password}\n"
            f"requirepass {self.password}\nsentinel sentinel-pass {self.password}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 3000\n",
            encoding="ascii",
        )
        argv = [shutil.which("redis-sentinel") or "redis-sentinel", str(conf)]
        self.sentinels.append(Service(f"sentinel-{number}", argv, port, folder / "log"))

    def command(self, port: int, *args: str) -> t.Any:
        """One command to a Redis or Sentinel on ``port`` (redis-py, already a dependency)."""
        import redis

        with redis.Redis(port=port, password=self.password, socket_timeout=1,
                         socket_connect_timeout=0.5, decode_responses=True) as client:  # fmt: skip
            return client.execute_command(*args)

    def primary_port(self) -> int | None:
        """The primary port the first Sentinel that answers names (None when none does)."""
        import redis

        for sentinel in self.sentinels:
            try:
                found = self.command(
                    sentinel.port, "SENTINEL", "get-master-addr-by-name", MASTER_NAME
                )
                return int(t.cast(list[str], found)[1])
            except (redis.RedisError, OSError, TypeError, IndexError):
                continue
        return None

    def _wait_ready(self) -> None:
        import redis

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                ready = all(
                    int(info["num-slaves"]) >= 1 and int(info["num-other-sentinels"]) >= 2
                    for info in (
                        t.cast(dict[str, str], self.command(s.port, "SENTINEL", "master",
                                                            MASTER_NAME))
                        for s in self.sentinels
                    )
                )  # fmt: skip
            except (redis.RedisError, OSError, KeyError, TypeError):
                ready = False
            if ready:
                return
            time.sleep(0.1)
        raise RuntimeError("the Sentinels did not find the replica and each other in 30 s")

    @property
    def nodes(self) -> str:
        """``[session.redis_sentinel] nodes`` as TOML."""
        return json.dumps([f"127.0.0.1:{s.port}" for s in self.sentinels])

    def kill_primary(self) -> tuple[float, float]:
        """SIGKILL the primary after the replica has every write; (killed at, promoted at)."""
        primary = self.data["primary"]
        self.command(primary.port, "WAIT", "1", "5000")
        killed = time.monotonic()
        primary.stop(signal.SIGKILL)
        while time.monotonic() - killed < 30:
            if self.primary_port() not in (None, primary.port):
                return killed, time.monotonic()
            time.sleep(0.02)
        raise RuntimeError("no Sentinel failover within 30 s")

    def stop(self) -> None:
        """Stop the Sentinels, then the data nodes."""
        for service in (*self.sentinels, *self.data.values()):
            service.stop()


def write_redis_host(
    folder: Path, shared: Path, users: Path, redis_set: SentinelSet, port: int
) -> Path:
    """A host of the many-hosts rows: the Redis store through the Sentinels, the shared
    storage (SQLite on this one machine; verify does not touch it) and users file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "secrets").mkdir(mode=0o700, exist_ok=True)
    shutil.copy2(shared / "secrets" / "storage.key", folder / "secrets" / "storage.key")
    text = CONFIG.format(port=port, store="redis")
    text = text.replace('file = "users.toml"', f"file = {json.dumps(str(users))}")
    text = text.replace('path = "authctl.db"', f"path = {json.dumps(str(shared / 'authctl.db'))}")
    text = text.replace(
        'store = "redis"\n',
        'store = "redis"\nredis_url = "redis://127.0.0.1:6379/0"\n'
        f"redis_password_file = {json.dumps(str(redis_set.password_file))}\n\n"
        f'[session.redis_sentinel]\nmaster_name = "{MASTER_NAME}"\nnodes = {redis_set.nodes}\n',
    )
    config = folder / "authctl.toml"
    config.write_text(text, encoding="utf-8")
    return config


def logout(port: int, cookie: str) -> int:
    """POST /api/logout with ``cookie``; the status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {**PORTAL_HEADERS, "Cookie": cookie}
        conn.request("POST", "/api/logout", body=b"{}", headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def verify_until_refused(port: int, cookie: str, timeout: float = 10.0) -> float | None:
    """Seconds until verify on ``port`` stops answering 200 for ``cookie`` (keep-alive
    requests back to back); None after ``timeout``."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = verify_headers(cookie=cookie)
    try:
        while time.monotonic() - started < timeout:
            conn.request("GET", "/api/authz/forward-auth", headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                return time.monotonic() - started
    finally:
        conn.close()
    return None


def wrk_split(
    ports: list[int], headers: dict[str, str], seconds: float, pids: list[int]
) -> WrkResult:
    """One wrk per host at the same time, the connections split evenly (one wrk thread each,
    all pinned to the client CPU); the sum of their throughput, the worse of their latencies,
    the CPU time of every host."""
    per = WRK_CONNECTIONS // len(ports)
    results: list[WrkResult | BaseException] = [RuntimeError("not run")] * len(ports)

    def one(n: int) -> None:
        try:
            results[n] = wrk(f"http://127.0.0.1:{ports[n]}/api/authz/forward-auth", headers,
                             seconds, connections=per, threads=1)  # fmt: skip
        except BaseException as exc:
            results[n] = exc

    before = sum(cpu_seconds(pid) for pid in pids)
    threads = [threading.Thread(target=one, args=(n,)) for n in range(len(ports))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    used = sum(cpu_seconds(pid) for pid in pids) - before
    done: list[WrkResult] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        done.append(result)
    return WrkResult(
        requests=sum(r.requests for r in done),
        seconds=max(r.seconds for r in done),
        rps=sum(r.rps for r in done),
        p50_ms=max(r.p50_ms for r in done),
        p99_ms=max(r.p99_ms for r in done),
        non_2xx_3xx=sum(r.non_2xx_3xx for r in done),
        socket_errors=sum(r.socket_errors for r in done),
        cpu_seconds=used,
    )


@dataclass
class ManyHosts:
    """What the many-hosts rows measured."""

    verify: WrkResult
    revocation: list[float]
    never_refused: int
    failover_s: float
    recovery_s: float | None


def many_hosts(settings: Settings, work: Path, logs: Path, users_text: str) -> ManyHosts:
    """Two hosts sharing Redis (with Sentinel): verify split over both, revocation delays
    across hosts, then a failover (the primary killed) until the cookie works again."""
    shared = work / "shared"
    write_site(shared, "sqlite", users_text)
    redis_set = SentinelSet(work / "redis", logs)
    hosts: list[Service] = []
    try:
        for name in ("a", "b"):
            config = write_redis_host(work / name, shared, shared / "users.toml", redis_set, 9091)
            hosts.append(start_authctl(f"authctl-redis-{name}", config, logs / f"redis-{name}.log"))
        a, b = hosts
        status, cookie = login(a.port)
        assert status == 200, f"login on host a answered {status}"
        headers = verify_headers(cookie=cookie)
        for host in hosts:
            got = status_of(host.port, "/api/authz/forward-auth", headers)
            assert got == 200, f"verify on {host.name}: expected 200, got {got}"
        runs = [
            wrk_split([a.port, b.port], headers, settings.seconds, [a.pid, b.pid])
            for _ in range(settings.repeats)
        ]
        verify = median_result(runs)

        delays: list[float] = []
        never = 0
        for _ in range(settings.logouts):
            status, other = login(a.port)
            assert status == 200, f"login on host a answered {status}"
            for _ in range(3):  # B has it in its cache
                assert status_of(b.port, "/api/authz/forward-auth", verify_headers(other)) == 200
            assert logout(a.port, other) == 200
            delay = verify_until_refused(b.port, other)
            if delay is None:
                never += 1
            else:
                delays.append(delay)

        killed, promoted = redis_set.kill_primary()
        recovered: float | None = None
        while time.monotonic() - killed < 30:
            if all(
                status_of(host.port, "/api/authz/forward-auth", headers) == 200 for host in hosts
            ):
                recovered = time.monotonic() - killed
                break
            time.sleep(0.05)
        return ManyHosts(verify, delays, never, promoted - killed, recovered)
    finally:
        for host in hosts:
            host.stop()
        redis_set.stop()


# --------------------------------------------------------------------------- main


@dataclass
class Settings:
    """Run lengths: the full run, or ``--quick`` (1-second runs, a smoke test)."""

    seconds: float
    repeats: int
    flood_seconds: float
    flood_clients: int
    sessions: int
    users: int
    rules_number: int
    workers_seconds: float
    logouts: int


FULL = Settings(5, 3, 8, 50, 100_000, 10_000, 20_000, 5, 50)
QUICK = Settings(1, 1, 2, 10, 2_000, 1_000, 500, 1, 10)


@contextmanager
def services() -> Iterator[list[Service]]:
    """Every service started inside the block is stopped at its end, whatever happens."""
    started: list[Service] = []
    try:
        yield started
    finally:
        for service in reversed(started):
            service.stop()


def run(settings: Settings, work: Path) -> Report:
    """Measure everything and return the report."""
    report = Report()
    for line in machine_lines():
        report.add(line)
    report.add(
        f"wrk:     -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{settings.seconds:g}s --latency; "
        f"servers pinned to CPU {SERVER_CPU}, wrk to CPU {CLIENT_CPU}; "
        "median of the repeated runs"
    )
    users_text = users_file_text()
    sqlite_config = write_site(work / "sqlite", "sqlite", users_text)
    memory_config = write_site(work / "memory", "memory", users_text)
    metrics_port = free_port()
    metrics_config = with_metrics(write_site(work / "metrics", "sqlite", users_text), metrics_port)
    logs = work / "logs"
    logs.mkdir()

    with services() as running:

        def start(service: Callable[[], Service]) -> Service:
            running.append(service())
            return running[-1]

        bare = start(
            lambda: Service(
                "bare",
                [PY, str(BENCH / "apps.py"), "bare", "--port", str(port := free_port())],
                port,
                logs / "bare.log",
            )
        )
        trivial = start(
            lambda: Service(
                "trivial",
                [PY, str(BENCH / "apps.py"), "authz", "--port", str(port := free_port())],
                port,
                logs / "trivial.log",
            )
        )
        sqlite = start(lambda: start_authctl("authctl-sqlite", sqlite_config, logs / "sqlite.log"))
        pool = start(
            lambda: Service(
                "authctl-pool",
                [
                    PY,
                    str(BENCH / "apps.py"),
                    "pool",
                    "--config",
                    str(sqlite_config),
                    "--port",
                    str(port := free_port()),
                ],
                port,
                logs / "pool.log",
            )
        )
        memory = start(lambda: start_authctl("authctl-memory", memory_config, logs / "memory.log"))
        metered = start(
            lambda: start_authctl("authctl-metrics", metrics_config, logs / "metrics.log")
        )
        idle_rss = rss_kib(sqlite.pid)
        status, sqlite_cookie = login(sqlite.port)
        assert status == 200, f"login on the SQLite server answered {status}"
        status, memory_cookie = login(memory.port)
        assert status == 200, f"login on the memory server answered {status}"
        status, metrics_cookie = login(metered.port)
        assert status == 200, f"login on the metrics-on server answered {status}"
        bearer = {**verify_headers(), "Authorization": f"Bearer {make_token(sqlite_config)}"}
        nginx = start(lambda: start_nginx(work / "nginx", bare.port, sqlite.port, trivial.port))

        def url(service: Service, path: str = "/api/authz/forward-auth") -> str:
            return f"http://127.0.0.1:{service.port}{path}"

        cookie_row = verify_headers(cookie=sqlite_cookie)
        cases: list[tuple[str, str, Service, dict[str, str], int, int]] = [
            # key, label, server, headers, expected status, repeats
            ("bare", "A  bare waitress hello, plain GET", bare, {}, 200, settings.repeats),
            (
                "bare_same",
                "A' bare waitress hello, verify's request",
                bare,
                cookie_row,
                200,
                max(1, settings.repeats - 1),
            ),
            (
                "verify",
                "V  verify, cookie, SQLite store",
                sqlite,
                cookie_row,
                200,
                settings.repeats,
            ),
            (
                "verify_token",
                "VT verify, bearer token, SQLite",
                sqlite,
                bearer,
                200,
                settings.repeats,
            ),
            (
                "verify_metrics",
                "VM verify, as V, metrics on",
                metered,
                verify_headers(cookie=metrics_cookie),
                200,
                settings.repeats,
            ),
            (
                "verify_pool",
                "V0 verify, as V, thread pool only (no inline)",
                pool,
                cookie_row,
                200,
                max(1, settings.repeats - 1),
            ),
            (
                "verify_memory",
                "V' verify, cookie, memory store",
                memory,
                verify_headers(cookie=memory_cookie),
                200,
                max(1, settings.repeats - 1),
            ),
            (
                "basic",
                "B  verify, Basic auth (warm cache)",
                sqlite,
                verify_headers(basic=f"alice:{PASSWORD}"),
                200,
                1,
            ),
            ("anon", "R  verify, anonymous -> 302", sqlite, verify_headers(), 302, 1),
        ]
        for key, _, server, headers, expected, _ in cases:
            path = "/" if key.startswith("bare") else "/api/authz/forward-auth"
            got = status_of(server.port, path, headers)
            assert got == expected, f"{key}: expected {expected}, got {got}"
        # one short unrecorded run per case first: every server has served load (its caches
        # warm, its threads started) before any measured run, so the first row in the
        # alternation is not the one paying for it
        warm_up = {
            key: wrk(
                url(server, "/" if key.startswith("bare") else "/api/authz/forward-auth"),
                headers,
                WARM_UP_SECONDS,
            )
            for key, _, server, headers, _, _ in cases
        }
        results: dict[str, list[WrkResult]] = {key: [] for key, *_ in cases}
        for repeat in range(settings.repeats):
            for key, _, server, headers, _, repeats in cases:
                if repeat < repeats:
                    path = "/" if key.startswith("bare") else "/api/authz/forward-auth"
                    target = url(server, path)
                    results[key].append(wrk(target, headers, settings.seconds, pid=server.pid))
        best = {key: median_result(runs) for key, runs in results.items()}
        counted = scraped_authz(metrics_port)
        sent = (
            sum(run.requests for run in results["verify_metrics"])
            + warm_up["verify_metrics"].requests
            + 1  # the status check
        )

        # behind nginx: the same cookie header carries both sessions
        both = {"Host": HOST, "Cookie": f"session=ok; {sqlite_cookie}"}
        for path in ("/noauth/", "/authctl/", "/trivial/"):
            got = status_of(nginx.port, path, both, tls=True)
            assert got == 200, f"nginx {path}: expected 200, got {got}"
        nginx_base = f"https://127.0.0.1:{nginx.port}"
        nginx_cases = [
            ("nginx_noauth", "C  nginx TLS -> hello, no auth", "/noauth/", 1),
            ("nginx_trivial", "F  nginx auth_request -> trivial check", "/trivial/", 2),
            ("nginx_authctl", "G  nginx auth_request -> authctl (SQLite)", "/authctl/", 2),
        ]
        nginx_results: dict[str, list[WrkResult]] = {key: [] for key, *_ in nginx_cases}
        for repeat in range(max(2, settings.repeats - 1)):
            for key, _, path, repeats in nginx_cases:
                if repeat < min(repeats, settings.repeats):
                    nginx_results[key].append(wrk(nginx_base + path, both, settings.seconds))
        best.update({key: median_result(runs) for key, runs in nginx_results.items()})

        report.add()
        report.add(f"  {'case':<44} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs':>8}  runs")
        for key, label, *_, repeats in cases:
            report.row(label, best[key], repeats)
            if key == "verify_metrics":
                report.add(
                    f"     (/metrics counted {counted:.0f} allowed verifies; wrk reported "
                    f"{sent:.0f})"
                )
        for key, label, _, repeats in nginx_cases:
            report.row(label, best[key], min(repeats, settings.repeats))

        # a login flood must not starve verify
        floods: dict[float, WrkResult] = {}
        for backoff, label in ((0.5, "L  "), (0.0, "L' ")):
            with LoginFlood(sqlite.port, settings.flood_clients, backoff) as flood:
                time.sleep(1.0)
                started = time.monotonic()
                floods[backoff] = wrk(
                    url(sqlite), cookie_row, settings.flood_seconds, pid=sqlite.pid
                )
                elapsed = time.monotonic() - started
                ok, refused, errors = flood.ok, flood.refused, flood.errors
            retry = f"retry after {backoff:g} s" if backoff else "retry at once"
            report.row(
                f"{label}verify, {settings.flood_clients} clients log in ({retry})",
                floods[backoff],
                1,
            )
            report.add(
                f"     logins: {ok / elapsed:.1f}/s succeeded, {refused / elapsed:.1f}/s "
                f"refused at once (hashing slots busy), {errors} errors"
            )
        flooded = floods[0.5]
        busy_rss = rss_kib(sqlite.pid)
        for service in reversed(running):
            service.stop()
        running.clear()

        # serve --workers: unpinned, as the SPEC asks
        scaling: dict[int, WrkResult] = {}
        for workers in (1, 2):
            server = start(
                lambda w=workers: start_authctl(  # type: ignore[misc]
                    f"workers{w}", sqlite_config, logs / f"workers{w}.log", workers=w, cpu=None
                )
            )
            assert status_of(server.port, "/api/authz/forward-auth", cookie_row) == 200
            runs = [
                wrk(url(server), cookie_row, settings.workers_seconds, cpu=None)
                for _ in range(max(1, settings.repeats - 1))
            ]
            scaling[workers] = median_result(runs)
            report.row(f"W  verify, serve --workers {workers} (unpinned)", scaling[workers], 1)
            server.stop()
            running.clear()

    hosts = many_hosts(settings, work, logs, users_text)
    report.row("V2 verify, cookie, Redis store, 2 hosts", hosts.verify, settings.repeats)
    report.add("     (one wrk per host, -t1 -c16 each; Redis primary + replica + 3 Sentinels)")
    if hosts.revocation:
        revoked = sorted(hosts.revocation)
        report.add(
            f"  {'logout on host a, refused on host b':<52}"
            f" median {statistics.median(revoked) * 1000:.0f} ms, max {revoked[-1] * 1000:.0f} ms"
            f" over {len(revoked)} logouts"
            + (f", {hosts.never_refused} never" if hosts.never_refused else "")
        )
    recovery = f"{hosts.recovery_s:.2f} s" if hosts.recovery_s is not None else "never (30 s)"
    report.add(
        f"  {'Sentinel failover (primary killed)':<52}"
        f" new primary after {hosts.failover_s:.2f} s, the cookie works on both hosts after "
        + recovery
    )

    report.add()
    report.add("  memory")
    sessions = run_script(
        [str(BENCH / "sessions_rss.py"), str(memory_config), str(settings.sessions)]
    )
    sessions_sqlite = run_script(
        [str(BENCH / "sessions_rss.py"), str(sqlite_config), str(settings.sessions)]
    )
    report.add(f"  {'authctl serve RSS at idle (SQLite store)':<52} {idle_rss / 1024:8.1f} MB")
    report.add(f"  {'authctl serve RSS after the runs above':<52} {busy_rss / 1024:8.1f} MB")
    for name, data in (("memory", sessions), ("SQLite", sessions_sqlite)):
        label = f"app RSS, {name} store, 0 -> {data['sessions']:,} sessions"
        report.add(
            f"  {label:<52}"
            f" {data['idle_kib'] / 1024:8.1f} -> {data['after_kib'] / 1024:.1f} MB"
            f"  ({data['create_s']:.1f} s to create, {data['verify_us']:.0f} µs per verify)"
        )

    report.add()
    report.add("  rules and users")
    rules = rules_rows(settings.rules_number)
    for label, micros in rules:
        report.add(f"  {'1,000 rules: ' + label:<52} {micros:8.2f} µs")
    users = run_script([str(BENCH / "users_load.py"), str(settings.users)])
    report.add(
        f"  {'load ' + format(users['users'], ',') + ' users (users.toml)':<52}"
        f" {users['seconds'] * 1000:8.1f} ms"
    )

    bare_r, verify_r = best["bare"], best["verify"]
    report.add()
    report.add("  SPEC §5 targets (bare = A, the plain GET; other comparisons in brackets)")
    for label, case, base in (
        ("verify / A', the same request", verify_r, best["bare_same"]),
        ("V0, without the inline path, / A", best["verify_pool"], bare_r),
    ):
        report.add(
            f"     [{label}: throughput {case.rps / base.rps:.2f}, p99 "
            f"{case.p99_ms / base.p99_ms:.2f}, CPU "
            f"{(case.cpu_us_per_request or 0) / (base.cpu_us_per_request or 1):.2f}]"
        )
    ratio = verify_r.rps / bare_r.rps
    report.check("verify / bare throughput", ratio, ">= 0.85", ratio >= 0.85)
    p99 = verify_r.p99_ms / bare_r.p99_ms
    report.check("verify p99 / bare p99", p99, "<= 1.25", p99 <= 1.25)
    cpu_ratio = (verify_r.cpu_us_per_request or 0) / (bare_r.cpu_us_per_request or 1)
    report.check("verify CPU per request / bare", cpu_ratio, "<= 1.2", cpu_ratio <= 1.2)
    behind = best["nginx_authctl"].rps / best["nginx_trivial"].rps
    report.check("behind nginx: authctl / trivial check", behind, ">= 0.90", behind >= 0.90)
    report.check(
        "verify p99 during the login flood (ms)", flooded.p99_ms, "< 20", flooded.p99_ms < 20
    )
    scale = scaling[2].rps / scaling[1].rps
    report.check("serve --workers 2 / --workers 1", scale, ">= 1.4", scale >= 1.4)
    worst_rule = max(micros for label, micros in rules if "cold" not in label)
    report.check("1,000 rules, one evaluate (µs)", worst_rule, "< 100", worst_rule < 100)
    if users["users"] == 10_000:
        report.check("load 10,000 users (s)", users["seconds"], "< 0.5", users["seconds"] < 0.5)
    token_ratio = best["verify_token"].rps / verify_r.rps
    report.check(
        "verify bearer token / cookie (VT / V)", token_ratio, ">= 0.85", token_ratio >= 0.85
    )
    metrics_ratio = best["verify_metrics"].rps / verify_r.rps
    report.check(
        "verify metrics on / off (VM / V)", metrics_ratio, ">= 0.95", metrics_ratio >= 0.95
    )
    redis_ratio = hosts.verify.rps / verify_r.rps
    report.check(
        "verify Redis 2 hosts / V (SQLite, 1 host)", redis_ratio, ">= 0.85", redis_ratio >= 0.85
    )
    worst = max(hosts.revocation) if hosts.revocation and not hosts.never_refused else 99.0
    report.check("revocation across hosts, max (s)", worst, "< 1", worst < 1.0)
    idle_mb = idle_rss / 1024
    report.check("idle RSS (MB)", idle_mb, "< 60", idle_mb < 60)
    flow = run_script([str(BENCH / "oidc_flow.py"), "--seconds", str(settings.seconds * 2)])
    report.add(
        f"  {'OIDC code flow, 10 clients (p99 ms: authorize, token, userinfo)':<52}"
        f" {flow['authorization_p99_ms']:.1f}, {flow['token_p99_ms']:.1f},"
        f" {flow['userinfo_p99_ms']:.1f}  ({flow['flows']} flows, {flow['errors']} errors)"
    )
    worst_flow = max(flow[f"{n}_p99_ms"] for n in ("authorization", "token", "userinfo"))
    report.check("OIDC code flow, worst request p99 (ms)", worst_flow, "< 50", worst_flow < 50)
    keys = run_script([str(BENCH / "passkey_flow.py"), "--seconds", str(settings.seconds * 2)])
    report.add(
        f"  {'passkey sign-in, 10 users (p50/p99 ms: options, assertion)':<52}"
        f" {keys['options_p50_ms']:.1f}/{keys['options_p99_ms']:.1f},"
        f" {keys['assertion_p50_ms']:.1f}/{keys['assertion_p99_ms']:.1f}"
        f"  ({keys['signins']} sign-ins, {keys['errors']} errors)"
    )
    worst_key = max(keys["options_p99_ms"], keys["assertion_p99_ms"])
    report.check("passkey sign-in, worst request p99 (ms)", worst_key, "< 50", worst_key < 50)
    return report


def main(argv: list[str] | None = None) -> int:
    """Check the tools, run everything, print the table; 0 even when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1-second runs (a smoke test)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    problems = missing_tools()
    if (os.cpu_count() or 1) < 2:
        problems.append("this benchmark pins the server and wrk to two different CPUs")
    if problems:
        print("cannot run the benchmark:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="authctl-bench-"))
    started = time.monotonic()
    try:
        run(QUICK if args.quick else FULL, work)
    finally:
        if args.keep:
            print(f"work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n(finished in {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
