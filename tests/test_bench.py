"""The benchmark script's parsing helpers, and one ``--quick`` run as a smoke test.

The benchmark prints numbers and judges nothing here: timings belong to the machine (SPEC §5
asks for scripts, not timed tests). What is tested is that the script can read wrk's report
and ``/proc``, and that a whole quick run (1-second wrk runs) completes and prints every row.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent

WRK_REPORT = """\
Running 5s test @ http://127.0.0.1:8090/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.51ms  612.00us  12.08ms   80.12%
    Req/Sec     6.41k   312.55     7.01k    71.00%
  Latency Distribution
     50%    2.43ms
     75%    2.80ms
     90%    3.10ms
     99%    6.26ms
  63790 requests in 5.00s, 8.27MB read
  Non-2xx or 3xx responses: 12
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:  12757.43
Transfer/sec:      1.65MB
"""


def load_run() -> ModuleType:
    """``bench/run.py`` as a module (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark module."""
    return load_run()


@pytest.mark.parametrize(
    ("text", "ms"),
    [("612.00us", 0.612), ("6.50ms", 6.5), ("1.02s", 1020.0), ("1.5m", 90_000.0), ("7ms", 7.0)],
)
def test_durations(bench: ModuleType, text: str, ms: float) -> None:
    """wrk's latency units (us, ms, s, m) become milliseconds."""
    assert bench.parse_duration_ms(text) == pytest.approx(ms)


def test_bad_duration(bench: ModuleType) -> None:
    """Anything else is refused instead of guessed."""
    with pytest.raises(ValueError, match="not a wrk duration"):
        bench.parse_duration_ms("6.5 ms")


def test_wrk_report(bench: ModuleType) -> None:
    """Requests, throughput, p50, p99, non-2xx/3xx answers and socket errors are read."""
    result = bench.parse_wrk(WRK_REPORT)
    assert result.requests == 63790
    assert result.seconds == pytest.approx(5.0)
    assert result.rps == pytest.approx(12757.43)
    assert result.p50_ms == pytest.approx(2.43)
    assert result.p99_ms == pytest.approx(6.26)
    assert result.non_2xx_3xx == 12
    assert result.socket_errors == 3
    assert result.cpu_us_per_request is None
    result.cpu_seconds = 3.1895
    assert result.cpu_us_per_request == pytest.approx(50.0)


def test_wrk_report_without_latency_table(bench: ModuleType) -> None:
    """A report without ``--latency`` (no percentiles) is an error, not zeros."""
    without = WRK_REPORT.replace("     99%    6.26ms\n", "")
    with pytest.raises(ValueError, match="not a wrk --latency report"):
        bench.parse_wrk(without)


def test_proc_stat_cpu(bench: ModuleType) -> None:
    """utime + stime are fields 14 and 15, counted after a command name with spaces."""
    stat = "4242 (authctl serve x) S 1 4242 4242 0 -1 4194560 9 0 0 0 250 50 0 0 20 0 5 0"
    assert bench.parse_proc_stat_cpu(stat, 100) == pytest.approx(3.0)


def test_own_process_figures(bench: ModuleType) -> None:
    """CPU time and RSS of a live process can be read."""
    assert bench.cpu_seconds(os.getpid()) > 0
    assert bench.rss_kib(os.getpid()) > 1000


def test_median_keeps_one_run(bench: ModuleType) -> None:
    """The median run is a whole run, so its latencies match its throughput."""
    runs = [bench.WrkResult(100, 1.0, rps, rps / 1000, rps / 100) for rps in (3.0, 1.0, 2.0)]
    middle = bench.median_result(runs)
    assert middle.rps == 2.0
    assert middle.p99_ms == pytest.approx(0.02)


def test_redis_host_config(bench: ModuleType, tmp_path: Path) -> None:
    """A host of the many-hosts rows: the Redis store through the Sentinels with the password
    file, the shared storage and users file, the same storage key as the shared site."""
    from server.core.config import load_config

    shared = tmp_path / "shared"
    bench.write_site(shared, "sqlite", "")

    class Sentinels:
        password_file = tmp_path / "redis.password"
        nodes = '["127.0.0.1:26379", "127.0.0.1:26380", "127.0.0.1:26381"]'

    Sentinels.password_file.write_text("pw\n")
    config_path = bench.write_redis_host(
        tmp_path / "a", shared, shared / "users.toml", Sentinels, 9100
    )
    config = load_config(config_path)
    assert config.session.store == "redis"
    assert config.session.redis_sentinel is not None
    assert config.session.redis_sentinel.master_name == "authctl"
    assert config.session.redis_sentinel.nodes == (
        ("127.0.0.1", 26379),
        ("127.0.0.1", 26380),
        ("127.0.0.1", 26381),
    )
    assert config.session.redis_password_file == Sentinels.password_file
    assert config.storage.path == shared / "authctl.db"
    assert config.users.file == shared / "users.toml"
    key = "secrets/storage.key"
    assert (tmp_path / "a" / key).read_bytes() == (shared / key).read_bytes()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_run_prints_every_row() -> None:
    """``bench/run.py --quick`` runs every case (1-second runs) and prints the targets.

    Needs wrk, nginx, openssl, redis-server and redis-sentinel (``apt-get install -y wrk
    nginx redis-server redis-sentinel``): without them the script says what to install and
    this test fails.
    """
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for row in (
        "A  bare waitress hello",
        "V  verify, cookie, SQLite store",
        "V0 verify, as V, thread pool only",
        "VM verify, as V, metrics on",
        "VT verify, bearer token, SQLite",
        "verify bearer token / cookie (VT / V)",
        "/metrics counted",
        "verify metrics on / off (VM / V)",
        "[V0, without the inline path, / A: throughput",
        "[verify / A', the same request: throughput",
        "V' verify, cookie, memory store",
        "B  verify, Basic auth",
        "R  verify, anonymous",
        "C  nginx TLS",
        "F  nginx auth_request -> trivial check",
        "G  nginx auth_request -> authctl",
        "L  verify,",
        "W  verify, serve --workers 2",
        "idle RSS",
        "1,000 rules",
        "load 1,000 users",
        "verify / bare throughput",
        "V2 verify, cookie, Redis store, 2 hosts",
        "logout on host a, refused on host b",
        "Sentinel failover (primary killed)",
        "verify Redis 2 hosts / V (SQLite, 1 host)",
        "revocation across hosts, max (s)",
        "OIDC code flow, worst request p99 (ms)",
        "passkey sign-in, 10 users (p50/p99 ms: options, assertion)",
        "passkey sign-in, worst request p99 (ms)",
    ):
        assert row in done.stdout, row
    assert "non-2xx/3xx" not in done.stdout
