"""The baseline WSGI apps of the benchmark, served with exactly authctl's waitress settings.

SPEC §5 compares authctl with a bare waitress "hello" and, behind nginx, with a trivial
``auth_request`` check (``reference/proxies/bench_apps.py``). A baseline only means something
when it runs on the same server settings as authctl, so this launcher builds its server with
``server.serve.httpd.make_server`` (the very function ``authctl serve`` uses) instead of
``waitress-serve``'s defaults.

    .venv/bin/python bench/apps.py bare|authz|empty --port PORT [--threads 4]
    .venv/bin/python bench/apps.py pool --config authctl.toml --port PORT

``pool`` is authctl itself with every request served by waitress's thread pool, i.e. without
the inline authz path of ``server.serve.inline``: the benchmark shows what that path is worth.
"""

from __future__ import annotations

import argparse
import signal
import sys
import typing as t
from collections.abc import Iterable
from pathlib import Path

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIApplication
    from _typeshed.wsgi import WSGIEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BODY = b"hello"
_HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def bare(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The floor: a fixed 5-byte answer (``bench_apps.bare``)."""
    start_response("200 OK", list(_HELLO_HEADERS))
    return [BODY]


def empty(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """A fixed empty answer (``bench_apps.bare_empty``): one write instead of two."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "0")])
    return [b""]


def authz(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The trivial forward-auth check of ``bench_apps.authz``: one cookie compared, no store."""
    from http.cookies import SimpleCookie

    cookie: SimpleCookie = SimpleCookie()
    cookie.load(environ.get("HTTP_COOKIE", ""))
    if "session" in cookie and cookie["session"].value == "ok":
        start_response("200 OK", [("Remote-User", "alice"), ("Content-Length", "0")])
    else:
        start_response(
            "401 Unauthorized",
            [("Location", "https://auth.example.com/?rd=x"), ("Content-Length", "0")],
        )
    return [b""]


APPS: dict[str, WSGIApplication] = {"bare": bare, "empty": empty, "authz": authz}


def _authctl(config_path: str | None) -> WSGIApplication:
    """authctl's app for ``config_path``, to be served without ``inline``."""
    from server.core.config import load_config
    from server.web.app import make_app

    if config_path is None:
        raise SystemExit("pool needs --config")
    return make_app(load_config(Path(config_path)))


def main(argv: list[str] | None = None) -> None:
    """Serve one app on 127.0.0.1 until SIGTERM."""
    from server.serve.httpd import make_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", choices=[*sorted(APPS), "pool"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--config", help="the authctl config (for pool)")
    args = parser.parse_args(argv)
    app = _authctl(args.config) if args.app == "pool" else APPS[args.app]
    server = make_server(app, args.threads, {"host": "127.0.0.1", "port": args.port})

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"serving {args.app} on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    try:
        server.run()
    finally:
        server.close()


if __name__ == "__main__":
    main()
