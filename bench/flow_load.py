"""What the flow benchmarks (``oidc_flow.py``, ``passkey_flow.py``) share: a throwaway
``authctl serve`` on a free port, client threads that each repeat one flow until a deadline on
their own keep-alive connection, and the one JSON line they print.

A flow is a callable that runs one whole flow on a connection, appends its request times (ms)
under its own names in ``out`` and returns 200, or the status of the request that failed (its
times are then not kept).
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

AUTHCTL = str(Path(sys.executable).with_name("authctl"))
#: What the proxy would add to every portal request.
HEADERS = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "auth.example.com"}

Flow = Callable[[http.client.HTTPConnection], int]


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile of ``values`` (nearest rank); NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _wait_for(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"authctl exited with {proc.returncode}")
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/api/health")
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("authctl did not start")


@contextmanager
def serving(folder: Path, config: Path, port: int) -> Iterator[None]:
    """``authctl serve`` on ``config`` (listening on ``port``) for the block; the folder is
    removed afterwards."""
    log = (folder / "serve.log").open("wb")
    proc = subprocess.Popen(
        [AUTHCTL, "--config", str(config), "serve"], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait_for(port, proc)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def drive(port: int, flows: list[Flow], seconds: float) -> list[int]:
    """Run each flow in a thread of its own, again and again for ``seconds``; the statuses
    of the flows that failed."""
    errors: list[int] = []
    until = time.monotonic() + seconds

    def client(flow: Flow) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < until:
            status = flow(conn)
            if status != 200:
                errors.append(status)

    threads = [threading.Thread(target=client, args=(flow,)) for flow in flows]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return errors


def report(
    clients: int, done: tuple[str, int], errors: list[int], out: dict[str, list[float]]
) -> None:
    """Print the JSON line: clients, ``done`` (name, count), errors, p99 over every request,
    and p50/p99 per request name."""
    every = [v for values in out.values() for v in values]
    result = {
        "clients": clients,
        done[0]: done[1],
        "errors": len(errors),
        "p99_ms": percentile(every, 99),
        **{f"{name}_p50_ms": percentile(values, 50) for name, values in out.items()},
        **{f"{name}_p99_ms": percentile(values, 99) for name, values in out.items()},
    }
    print(json.dumps(result))
