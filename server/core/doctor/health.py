"""The running server's ``/api/health``, asked directly at ``server.address``."""

from __future__ import annotations

import json

from server.core.config import ServerConfig
from server.core.doctor.check import Check
from server.core.doctor.check import fail
from server.core.doctor.check import ok
from server.core.doctor.net import Answer
from server.core.endpoints import HEALTH

NAME = "server health"


def health_url(server: ServerConfig) -> str:
    """Where ``/api/health`` is: ``http://host:port/api/health`` or ``unix:/path``."""
    if server.unix_socket is not None:
        return f"unix:{server.unix_socket}"
    host = server.host
    if host in ("0.0.0.0", ""):  # noqa: S104 - asking a wildcard listener on loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{server.port}{HEALTH}"


def judge_health(where: str, answer: Answer | None, error: str = "") -> Check:
    """200: ok; 503: fail naming the parts the server reports; no answer: not running."""
    if answer is None:
        return fail(
            NAME,
            f"no answer from {where}: {error}",
            "start it (`authctl serve`, or `systemctl start authctl`) and check its log; "
            "if it runs elsewhere, fix server.address",
        )
    if answer.status == 200:
        return ok(NAME, f"{where} answers 200")
    message = _message(answer.body)
    if answer.status == 503:
        return fail(
            NAME,
            f"{where} answers 503: {message or 'unhealthy'}",
            "bring back the parts it names (see the storage and session store checks below "
            "and the server's log)",
        )
    return fail(
        NAME,
        f"{where} answers {answer.status}" + (f": {message}" if message else ""),
        "is this authctl? check server.address and what listens there",
    )


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    if isinstance(data, dict):
        return str(data.get("message") or "")
    return ""
