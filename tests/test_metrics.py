"""Prometheus metrics (SPEC §7.4): the names, types and labels of the SPEC read back with
prometheus_client's own text parser, from a real ``authctl serve`` (one process and
``--workers 2``) after real requests; the tallies the hot path writes against
prometheus_client's ``observe``; the listener's own address and its errors; the Grafana
dashboard's metric names against a real scrape."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import typing as t
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from server.core import metrics
from server.serve.httpd import counted
from server.serve.metrics_listener import MetricsListener
from server.serve.metrics_listener import MultiprocessDir
from server.serve.workers import Supervisor
from tests.apphelpers import Harness
from tests.apphelpers import build
from tests.test_serve import AUTHCTL
from tests.test_serve import SQLITE_CONFIG
from tests.test_serve import Server
from tests.test_serve import make_folder
from tests.test_workers import Workers
from tests.test_workers import children

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"

#: SPEC §7.4, copied here: metric family name -> (type, label names).
SPEC: dict[str, tuple[str, set[str]]] = {
    "authctl_request": ("counter", {"code", "method"}),
    "authctl_request_duration_seconds": ("histogram", {"code"}),
    "authctl_authz": ("counter", {"code"}),
    "authctl_authn": ("counter", {"success", "banned"}),
    "authctl_authn_second_factor": ("counter", {"success", "banned", "type"}),
    "authctl_authn_passkey": ("counter", {"success"}),
    "authctl_authn_duration_seconds": ("histogram", {"success"}),
    "authctl_config_reload": ("counter", {"result"}),
    "authctl_build_info": ("gauge", {"version"}),
}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metrics_config(port: int, enable: bool = True) -> str:
    return SQLITE_CONFIG + (
        f"\n[telemetry.metrics]\nenable = {'true' if enable else 'false'}\n"
        f'address = "127.0.0.1:{port}"\n'
    )


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return t.cast(bytes, resp.read()).decode()


def samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def total(found: Samples, name: str) -> float:
    return sum(v for (sample, _), v in found.items() if sample == name)


def check_spec(text: str) -> None:
    """Every family of the SPEC, with its type and exactly its labels; nothing else."""
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert set(families) == set(SPEC), set(families) ^ set(SPEC)
    for name, (kind, labels) in SPEC.items():
        family = families[name]
        assert family.type == kind, name
        assert family.samples, name
        for sample in family.samples:
            extra = {"le"} if sample.name.endswith("_bucket") else set()
            assert set(sample.labels) == labels | extra, (name, sample)


# ------------------------------------------------------------------ the recorder itself


@pytest.fixture
def recorder() -> Iterator[metrics.Metrics]:
    rec = metrics.Metrics(build_version="1.2.3")
    metrics.install(rec)
    yield rec
    metrics.install(None)


def test_off_counts_nothing_and_imports_no_prometheus() -> None:
    """Metrics off: the recorder is the no-op one, and the app is served unwrapped."""
    assert metrics.active().enabled is False
    metrics.authn(success=True, banned=False, seconds=0.1)
    metrics.second_factor("totp", success=True, banned=False)
    metrics.passkey(success=True)
    metrics.config_reload("success")
    metrics.active().answered("200 OK", "GET", 0.0, authz=True)
    metrics.active().flush()
    code = (
        "import sys; from server.core import metrics, signin, totp; "
        "assert 'prometheus_client' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_tallies_flush_to_what_observe_gives(recorder: metrics.Metrics) -> None:
    """The per-thread tallies, flushed, give the samples prometheus_client's own counter and
    histogram would (the same registry shape fed with inc/observe)."""
    reference = metrics.Metrics(build_version="1.2.3")
    durations = [0.00005, 0.0001, 0.0003, 0.002, 0.04, 0.7, 3.0, 12.0, 0.0001]
    for index, seconds in enumerate(durations):
        status = "200 OK" if index % 3 else "302 Found"
        recorder.answered(status, "GET", seconds, authz=index % 2 == 0)
        code = status[:3]
        reference.requests.labels(code, "GET").inc()
        reference.request_seconds.labels(code).observe(seconds)
        if index % 2 == 0:
            reference.authz.labels(code).inc()
        if index == 4:
            recorder.flush()  # a flush halfway adds only what came since
    assert samples(recorder.scrape().decode()) == samples(reference.scrape().decode())


def test_multiprocess_flush_matches_observe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In multiprocess mode the values go through the mmap'ed files and the supervisor's
    registry sums them the same way."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    try:
        rec = metrics.Metrics(multiprocess=True)
        for seconds in (0.0002, 0.003, 0.003, 2.0):
            rec.answered("200 OK", "HEAD", seconds, authz=True)
        rec.authn(success=False, banned=True, seconds=0.2)
        rec.close()
        registry = metrics.multiprocess_registry(str(tmp_path), "9")
        found = samples(metrics.exposition(registry).decode())
    finally:
        values.ValueClass = values.MutexValue
    assert value(found, "authctl_request_total", code="200", method="HEAD") == 4
    assert value(found, "authctl_authz_total", code="200") == 4
    assert value(found, "authctl_request_duration_seconds_bucket", code="200", le="0.005") == 3
    assert value(found, "authctl_request_duration_seconds_bucket", code="200", le="+Inf") == 4
    assert value(found, "authctl_request_duration_seconds_sum", code="200") == pytest.approx(2.0062)
    assert value(found, "authctl_authn_total", success="false", banned="true") == 1
    assert value(found, "authctl_build_info", version="9") == 1
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    with pytest.raises(ValueError, match="PROMETHEUS_MULTIPROC_DIR"):
        metrics.Metrics(multiprocess=True)


def test_tallies_under_concurrent_threads_and_flushes(recorder: metrics.Metrics) -> None:
    """8 threads answering while another flushes in a loop: not one answer lost or doubled."""
    stop = threading.Event()

    def flusher() -> None:
        while not stop.is_set():
            recorder.flush()

    def answers(_: int) -> None:
        for i in range(5000):
            recorder.answered("200 OK" if i % 2 else "401 Unauthorized", "GET", 0.001, authz=True)

    background = threading.Thread(target=flusher)
    background.start()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(answers, range(8)))
    stop.set()
    background.join()
    found = samples(recorder.scrape().decode())
    assert value(found, "authctl_request_total", code="200", method="GET") == 20000
    assert value(found, "authctl_authz_total", code="401") == 20000
    assert value(found, "authctl_request_duration_seconds_count", code="401") == 20000
    assert value(found, "authctl_request_duration_seconds_sum", code="200") == pytest.approx(20)


def test_label_values_are_bounded(recorder: metrics.Metrics) -> None:
    """A method a client made up is counted as ``other``: it cannot create series."""
    for method in ("BREW", "X" * 500, "get", "PROPFIND"):
        recorder.answered("405 Method Not Allowed", method, 0.0, authz=False)
    found = samples(recorder.scrape().decode())
    assert value(found, "authctl_request_total", code="405", method="other") == 3
    assert value(found, "authctl_request_total", code="405", method="PROPFIND") == 1
    assert value(found, "authctl_authz_total", code="405") == 0


def test_flusher_thread_and_close(recorder: metrics.Metrics) -> None:
    """A worker's flusher moves tallies without a scrape; close flushes the rest."""
    recorder.start_flusher(interval=0.01)
    recorder.answered("200 OK", "GET", 0.0, authz=True)
    deadline = time.monotonic() + 5
    while recorder.requests.labels("200", "GET")._value.get() != 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    recorder.close()


def test_counted_wsgi_wrapper(recorder: metrics.Metrics) -> None:
    """The pool's answers: status from start_response, authz paths told apart, an exception
    counted as waitress's 500."""

    def app(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("boom")
        start_response("403 Forbidden", [])
        return [b""]

    wsgi = counted(app, recorder)
    started: list[str] = []
    for path in ("/api/authz/forward-auth", "/api/authz/ext-authz/x", "/api/state"):
        wsgi({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, lambda s, h, e=None: started.append(s))
    with pytest.raises(RuntimeError):
        wsgi({"PATH_INFO": "/boom", "REQUEST_METHOD": "POST"}, lambda s, h, e=None: None)
    found = samples(recorder.scrape().decode())
    assert started == ["403 Forbidden"] * 3
    assert value(found, "authctl_request_total", code="403", method="GET") == 3
    assert value(found, "authctl_authz_total", code="403") == 2
    assert value(found, "authctl_request_total", code="500", method="POST") == 1


def test_totp_and_signin_over_the_app(
    tmp_path: Path, clock: t.Any, recorder: metrics.Metrics
) -> None:
    """Second factor: a good code, a wrong one, a banned one; first factor: a success, wrong
    passwords, then a ban (the right password refused, counted banned)."""
    h: Harness = build(tmp_path, clock)
    secret, _uri = h.app.portal.totp.enrol("alice")
    cookie = h.login("alice")
    good = pyotp.TOTP(secret).at(clock.now)
    assert h.api("/api/secondfactor/totp", {"token": good}, cookie=cookie).status_int == 200
    cookie = h.login("alice")
    for _ in range(3):
        assert h.api("/api/secondfactor/totp", {"token": "000000"}, cookie=cookie).status_int == 401
    assert h.api("/api/secondfactor/totp", {"token": "000000"}, cookie=cookie).status_int == 401
    for _ in range(3):
        wrong = {"username": "bob", "password": "wrong"}
        assert h.api("/api/firstfactor", wrong).status_int == 401
    from tests.apphelpers import PASSWORDS

    right = {"username": "bob", "password": PASSWORDS["bob"]}
    assert h.api("/api/firstfactor", right).status_int == 401
    found = samples(recorder.scrape().decode())
    second = "authctl_authn_second_factor_total"
    assert value(found, second, success="true", banned="false", type="totp") == 1
    assert value(found, second, success="false", banned="false", type="totp") == 3
    assert value(found, second, success="false", banned="true", type="totp") == 1
    assert value(found, "authctl_authn_total", success="true", banned="false") == 2
    assert value(found, "authctl_authn_total", success="false", banned="false") == 3
    assert value(found, "authctl_authn_total", success="false", banned="true") == 1
    assert value(found, "authctl_authn_duration_seconds_count", success="false") == 4
    assert value(found, "authctl_authn_passkey_total", success="true") == 0
    recorder.passkey(success=True)
    metrics.config_reload("failure")
    found = samples(recorder.scrape().decode())
    assert value(found, "authctl_authn_passkey_total", success="true") == 1
    assert value(found, "authctl_config_reload_total", result="failure") == 1


def test_supervisor_on_exit_errors_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A failing ``on_exit`` (metrics bookkeeping) never stops the supervision."""

    def broken(pid: int) -> None:
        raise OSError("disk gone")

    supervisor = Supervisor([], 1, lambda listen, ready: 0, on_exit=broken)
    with caplog.at_level(logging.ERROR):
        supervisor._exited(1234)
    assert "after worker 1234 exited" in caplog.text


# ------------------------------------------------------------------ the listener


@pytest.mark.slow
def test_listener_paths_and_methods() -> None:
    """Only GET/HEAD /metrics; the rest 404/405; IPv6 loopback works too."""
    for host in ("127.0.0.1", "::1"):
        listener = MetricsListener(host, 0, lambda: b"x 1\n")
        try:
            conn = http.client.HTTPConnection(host, listener.port, timeout=5)
            for method, path, status, body in (
                ("GET", "/metrics", 200, b"x 1\n"),
                ("HEAD", "/metrics", 200, b""),
                ("POST", "/metrics", 405, b""),
                ("GET", "/", 404, b"404 Not Found: see /metrics\n"),
            ):
                conn.request(method, path)
                resp = conn.getresponse()
                assert (resp.status, resp.read()) == (status, body), (method, path)
                conn.close()
        finally:
            listener.close()


def test_multiprocess_dir_is_private_and_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    """0700, empty, set in the environment, removed with the old value restored."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/elsewhere")
    folder = MultiprocessDir()
    assert stat.S_IMODE(Path(folder.path).stat().st_mode) == 0o700
    assert list(Path(folder.path).iterdir()) == []
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == folder.path
    folder.remove()
    assert not Path(folder.path).exists()
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == "/elsewhere"
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    folder = MultiprocessDir()
    folder.remove()
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


# ------------------------------------------------------------------ real serve


def login_cookie(server: Server) -> str:
    resp = server.login("alice")
    assert resp.status == 200
    return (resp.getheader("Set-Cookie") or "").split(";", 1)[0]


@pytest.mark.slow
def test_single_process_counts_real_requests(tmp_path: Path) -> None:
    """One ``serve``: exact counts by code and method after real requests, the SPEC's
    families and labels exactly, nothing on the main port's /metrics."""
    port = free_port()
    server = Server(make_folder(tmp_path / "site", metrics_config(port)))
    try:
        before = samples(scrape_text(port))
        assert total(before, "authctl_request_total") == 0
        assert value(before, "authctl_build_info", version=metrics.version()) == 1
        cookie = login_cookie(server)
        for _ in range(20):
            assert server.verify("https://app.example.com/", cookie).status == 200
        for _ in range(3):
            assert server.verify("https://app.example.com/").status == 302
        head = server.request("HEAD", "/api/authz/forward-auth", {"X-Forwarded-Host": "x"})
        assert server.request("GET", "/metrics").status == 404  # not on the main port
        text = scrape_text(port)
        found = samples(text)
        assert value(found, "authctl_request_total", code="200", method="GET") == 20
        assert value(found, "authctl_request_total", code="302", method="GET") == 3
        assert value(found, "authctl_request_total", code="200", method="POST") == 1
        assert value(found, "authctl_request_total", code=str(head.status), method="HEAD") == 1
        assert value(found, "authctl_request_total", code="404", method="GET") == 1
        assert value(found, "authctl_authz_total", code="200") == 20
        assert value(found, "authctl_authz_total", code="302") == 3
        assert total(found, "authctl_authz_total") == 24
        assert value(found, "authctl_request_duration_seconds_count", code="200") == 21
        assert value(found, "authctl_authn_total", success="true", banned="false") == 1
        check_spec(text)
        check_dashboard(found)
    finally:
        assert server.stop() == 0


def check_dashboard(found: Samples) -> None:
    """Every metric name the dashboard queries is a sample name of the scrape, and every
    family of the SPEC is on the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert exprs
    used = {name for expr in exprs for name in re.findall(r"\bauthctl_[a-z_]+\b", expr)}
    scraped = {name for name, _ in found}
    assert used <= scraped, used - scraped
    families = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in used}
    assert families >= set(SPEC), set(SPEC) - families


@pytest.mark.slow
def test_workers_add_up_and_keep_a_dead_workers_counts(tmp_path: Path) -> None:
    """``serve --workers 2``: the supervisor serves the sum of both workers (each wrote its
    own file in the private 0700 folder); a worker killed with SIGKILL is replaced and its
    counts stay; the folder is gone after the server stops."""
    port = free_port()
    server = Workers(make_folder(tmp_path / "site", metrics_config(port)), 2)
    try:
        workers = children(server.proc.pid)
        assert len(workers) == 2
        cookie = server.login()
        statuses: list[int] = []

        def client() -> None:
            for _ in range(100):
                statuses.append(server.verify(cookie))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [200] * 400

        def verified() -> float:
            return value(samples(scrape_text(port)), "authctl_authz_total", code="200")

        deadline = time.monotonic() + 10
        while verified() != 400:
            assert time.monotonic() < deadline, verified()
            time.sleep(0.1)
        files = {pid: metric_files(pid) for pid in workers}
        folders = {Path(f).parent for found in files.values() for f in found}
        assert len(folders) == 1, files
        folder = folders.pop()
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert all(f"counter_{pid}.db" in {Path(f).name for f in files[pid]} for pid in workers)
        per_worker = worker_totals(folder)
        assert sum(per_worker.values()) == 400, per_worker
        assert all(per_worker.values()), per_worker

        victim = next(iter(workers))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while len(children(server.proc.pid) - {victim}) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        text = scrape_text(port)
        found = samples(text)
        assert value(found, "authctl_authz_total", code="200") == 400
        assert value(found, "authctl_request_total", code="200", method="GET") == 400
        assert value(found, "authctl_request_total", code="200", method="POST") == 1
        assert value(found, "authctl_build_info", version=metrics.version()) == 1
        assert server.verify(cookie) == 200  # the replacement serves and counts
        deadline = time.monotonic() + 10
        while verified() != 401:
            assert time.monotonic() < deadline, verified()
            time.sleep(0.1)
        check_spec(scrape_text(port))
    finally:
        assert server.stop() == 0
    assert not folder.exists()
    with pytest.raises(urllib.error.URLError):
        scrape_text(port)


def metric_files(pid: int) -> set[str]:
    """The metric files a process has mapped (from /proc/PID/maps)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {line.split()[-1] for line in maps.splitlines() if "authctl-metrics-" in line}


def worker_totals(folder: Path) -> dict[str, float]:
    """authctl_authz_total per worker file (each file read alone)."""
    from prometheus_client.mmap_dict import MmapedDict

    found = {}
    for path in folder.glob("counter_*.db"):
        found[path.name] = sum(
            number
            for key, number, _ts, _pos in MmapedDict.read_all_values_from_file(str(path))
            if json.loads(key)[1] == "authctl_authz_total"
        )
    return found


@pytest.mark.slow
def test_metrics_off_opens_no_listener(tmp_path: Path) -> None:
    """enable = false: nothing listens on the metrics address."""
    port = free_port()
    server = Server(make_folder(tmp_path / "site", metrics_config(port, enable=False)))
    try:
        assert server.verify("https://app.example.com/").status == 302
        with pytest.raises(urllib.error.URLError):
            scrape_text(port)
    finally:
        assert server.stop() == 0


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_metrics_address_in_use_is_a_clear_startup_error(tmp_path: Path, workers: str) -> None:
    """A metrics address another server holds: exit 3, naming the key, the file and the fix;
    with --workers, nothing was forked and the main port is free again."""
    folder = make_folder(tmp_path / "site", "")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        (folder / "authctl.toml").write_text(metrics_config(port), encoding="utf-8")
        main = free_port()
        env = {**os.environ, "AUTHCTL_CONFIG": str(folder / "authctl.toml")}
        done = subprocess.run(
            [AUTHCTL, "serve", "--address", f"127.0.0.1:{main}", "--workers", workers],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
    assert done.returncode == 3, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the port is already in use" in done.stderr
    assert f"telemetry.metrics.address in {folder / 'authctl.toml'}" in done.stderr
    assert "serving on" not in done.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", main))  # released


def test_a_time_seen_after_its_count_is_flushed_without_a_new_answer(
    recorder: metrics.Metrics,
) -> None:
    """A flush can read an answer's count before its time (another thread is between the two
    additions); the time must reach the histogram at the next flush even if no answer came
    since (it was lost, and the sum fell short, under load)."""
    recorder.answered("200 OK", "GET", 0.5, authz=True)
    tally = recorder._local.tally
    tally.sums["200 OK"] -= 0.5  # as if the time were not added yet
    recorder.flush()
    tally.sums["200 OK"] += 0.5  # now it is, and nothing else happened
    found = samples(recorder.scrape().decode())
    assert value(found, "authctl_request_duration_seconds_count", code="200") == 1
    assert value(found, "authctl_request_duration_seconds_sum", code="200") == pytest.approx(0.5)
