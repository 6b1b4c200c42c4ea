"""RSS of the authctl app before and after it holds many sessions (SPEC §5: idle RSS).

Run in a fresh interpreter by ``bench/run.py`` so the numbers are this app's alone. It builds
the app exactly as ``authctl serve`` does (``make_app``), creates N signed-in sessions through
``SessionManager`` (a real login per session would cost N argon2 hashes), then verifies a
sample of them through the WSGI app so that the store is really read. Prints one JSON line.

    .venv/bin/python bench/sessions_rss.py CONFIG N
"""

from __future__ import annotations

import gc
import json
import random
import sys
import time
import typing as t
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.core.config import load_config
from server.core.identity import stamp_of
from server.core.sessions import SessionManager
from server.core.users import load_users
from server.web.app import make_app
from server.web.app import make_session_store

SAMPLE = 1000


def rss_kib() -> int:
    """This process's resident set size in KiB."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main() -> None:
    """Build the app, measure, create the sessions, verify a sample, measure again."""
    config = load_config(Path(sys.argv[1]))
    count = int(sys.argv[2])
    store = make_session_store(config)
    app = make_app(config, store=store)
    manager = SessionManager(config.session, store)
    alice = load_users(config.users.file)["alice"]
    gc.collect()
    idle = rss_kib()
    started = time.perf_counter()
    ids = [
        manager.create("example.com", "alice", 1, user_stamp=stamp_of(alice.password)).id
        for _ in range(count)
    ]
    created = time.perf_counter() - started
    statuses: list[str] = []

    def start_response(status: str, headers: t.Any, exc_info: t.Any = None) -> t.Any:
        statuses.append(status)

    environ_base = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/api/authz/forward-auth",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_X_FORWARDED_PROTO": "https",
        "HTTP_X_FORWARDED_HOST": "app.example.com",
        "HTTP_X_FORWARDED_URI": "/",
        "HTTP_X_FORWARDED_METHOD": "GET",
        "HTTP_ACCEPT": "text/html",
    }
    sample = random.sample(ids, min(SAMPLE, len(ids)))
    started = time.perf_counter()
    for session_id in sample:
        environ = {**environ_base, "HTTP_COOKIE": f"{config.session.name}={session_id}"}
        app(environ, start_response)
    verify_us = (time.perf_counter() - started) / len(sample) * 1e6
    if any(status != "200 OK" for status in statuses):
        raise SystemExit(f"a created session was not accepted: {set(statuses)}")
    gc.collect()
    print(
        json.dumps(
            {
                "store": config.session.store,
                "sessions": count,
                "idle_kib": idle,
                "after_kib": rss_kib(),
                "create_s": created,
                "verify_us": verify_us,
            }
        )
    )


if __name__ == "__main__":
    main()
