"""``authctl doctor`` against real set-ups: right ones pass, ones broken on purpose fail with
the fix (SPEC §7.4).

Right: nginx and Traefik as ``authctl proxy-snippet --out`` configures them (the shared
stacks). Broken, each on a stack of its own: nginx without ``auth_request`` on the app, so the
client's ``Remote-User`` reaches it; a ``trusted_proxies`` that leaves out the proxy; an
expired certificate. doctor runs in-process (click's runner), as a user would run it, with
``--resolve`` and ``--ca`` instead of DNS and a public CA.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from authctl.cli import cli
from tests.apphelpers import PASSWORDS
from tests.e2e.conftest import CONFIG
from tests.e2e.conftest import DOMAIN
from tests.e2e.conftest import Stack
from tests.e2e.conftest import Stacks
from tests.e2e.conftest import build_stack
from tests.e2e.conftest import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(60)]


def private(stack: Stack) -> None:
    """Modes a correct installation has (``authctl init`` writes them so)."""
    (stack.folder / "secrets" / "storage.key").chmod(0o600)
    (stack.folder / "users.toml").chmod(0o600)


def doctor(
    stack: Stack, *extra: str, user: str | None = "alice"
) -> tuple[int, dict[str, dict[str, str]]]:
    """Run ``authctl doctor --json`` on the stack; (exit code, checks by name)."""
    args = [
        "--config", str(stack.folder / "authctl.toml"), "doctor", "--json",
        "--resolve", f"*.{DOMAIN}:127.0.0.1", "--ca", str(stack.ca_file),
        "--url", stack.url("app", "/page?x=1"), "--timeout", "5", *extra,
    ]  # fmt: skip
    stdin = None
    if user is not None:
        args += ["--user", user, "--password-stdin"]
        stdin = PASSWORDS[user] + "\n"
    result = CliRunner().invoke(cli, args, input=stdin, catch_exceptions=False)
    data = json.loads(result.output)
    assert set(data) == {"checks"}
    checks = {c["name"]: c for c in data["checks"]}
    assert len(checks) == len(data["checks"]), "check names are unique"
    return result.exit_code, checks


def by_suffix(checks: dict[str, dict[str, str]], suffix: str) -> dict[str, str]:
    """The one check whose name ends with ``suffix``."""
    found = [c for name, c in checks.items() if name.endswith(suffix)]
    assert len(found) == 1, (suffix, list(checks))
    return found[0]


def not_ok(checks: dict[str, dict[str, str]]) -> dict[str, str]:
    return {n: f"{c['status']}: {c['detail']}" for n, c in checks.items() if c["status"] != "ok"}


@pytest.mark.parametrize("proxy", ["nginx", "traefik"])
def test_a_right_setup_is_all_ok(stacks: Stacks, proxy: str) -> None:
    """authctl's own proxy configs: every check ok, exit 0, the signed-in app seen echoing
    alice and not the forged name."""
    stack = stacks.get(proxy)
    private(stack)
    code, checks = doctor(stack)
    assert not_ok(checks) == {}
    assert code == 0
    signed = by_suffix(checks, ": forged Remote-User, signed in")
    assert "'alice'" in signed["detail"]
    assert "judged https://app.example.test" in by_suffix(checks, ": forwarded headers")["detail"]
    for name in ("config", "server health", "storage", "session store", "clock", "users file"):
        assert checks[name]["status"] == "ok", name


def test_untrusted_ca_is_its_own_finding(stacks: Stacks) -> None:
    """Without --ca the private CA is not trusted: one failure naming --ca, the dates and
    names still judged from the certificate."""
    stack = stacks.get("nginx")
    private(stack)
    args = ["--config", str(stack.folder / "authctl.toml"), "doctor", "--json",
            "--resolve", f"*.{DOMAIN}:127.0.0.1"]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    assert result.exit_code == 1
    trust = by_suffix(checks, ": TLS trust")
    assert trust["status"] == "fail"
    assert "--ca" in trust["fix"]
    assert by_suffix(checks, ": certificate dates")["status"] == "ok"
    assert by_suffix(checks, ": certificate names")["status"] == "ok"


# --------------------------------------------------------------------------- broken set-ups


@pytest.fixture
def own(tmp_path: Path, echo_port: int) -> Iterator[list[Stack]]:
    """Stacks a test breaks on purpose; stopped after it."""
    started: list[Stack] = []
    yield started
    for stack in started:
        stack.stop()


def restart_proxy(stack: Stack) -> None:
    stack.proxy_proc.stop()
    stack.proxy_proc.start()
    wait_until(f"{stack.proxy} again", lambda: stack.request("auth", "/api/health").status == 200,
               stack.proxy_proc)  # fmt: skip


def test_nginx_without_auth_request_passes_the_forged_user(
    tmp_path: Path, echo_port: int, own: list[Stack]
) -> None:
    """nginx that proxies the app without asking authctl and passes the client's Remote-User:
    the anonymous request reaches the app and the forged name is seen there: exit 1."""
    stack = build_stack("nginx", tmp_path / "nginx-open", echo_port)
    own.append(stack)
    private(stack)
    conf = stack.folder / "nginx" / "nginx.conf"
    text = conf.read_text()
    # every auth line, and the 401 handler's use of the variable auth_request_set declared
    lines = (
        r"^\s*(auth_request|auth_request_set|error_page 401|proxy_set_header Remote-"
        r"|if \(\$authctl_redirect\)).*\n"
    )
    broken = re.sub(lines, "", text, flags=re.MULTILINE)
    assert "auth_request /" not in broken
    conf.write_text(broken)
    restart_proxy(stack)

    code, checks = doctor(stack, user=None)
    assert code == 1
    anonymous = by_suffix(checks, ": anonymous request")
    assert anonymous["status"] == "fail"
    assert "does not ask authctl" in anonymous["detail"]
    forged = by_suffix(checks, ": forged Remote-User")
    assert forged["status"] == "fail"
    assert "received the client's Remote-User" in forged["detail"]
    assert "proxy-snippet" in forged["fix"]
    # the rest of the deployment is fine
    assert checks["server health"]["status"] == "ok"


def test_wrong_trusted_proxies(tmp_path: Path, echo_port: int, own: list[Stack]) -> None:
    """authctl trusts another address than the proxy's: its auth-request refuses (403), so
    nobody is sent to sign in; doctor names trusted_proxies."""
    config = CONFIG.replace('["127.0.0.1/32", "::1/128"]', '["10.9.9.9/32"]')
    stack = build_stack("nginx", tmp_path / "nginx-trust", echo_port, config=config)
    own.append(stack)
    private(stack)
    code, checks = doctor(stack, user=None)
    assert code == 1
    forwarded = by_suffix(checks, ": forwarded headers")
    assert forwarded["status"] == "fail"
    assert "trusted_proxies" in forwarded["fix"]
    assert by_suffix(checks, ": anonymous request")["status"] == "fail"
    # the forged header was not let through either way
    assert by_suffix(checks, ": forged Remote-User")["status"] == "ok"


def test_expired_certificate(tmp_path: Path, echo_port: int, own: list[Stack]) -> None:
    """A certificate (from the same kind of private CA) that expired last week: fail, with
    the date and "renew"."""
    from server.core import certs

    stack = build_stack("nginx", tmp_path / "nginx-expired", echo_port)
    own.append(stack)
    private(stack)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    bundle = certs.generate([f"*.{DOMAIN}", DOMAIN], days=30, key_type="ecdsa", ca=True, now=past)
    certs.write_files(stack.folder / "certs", bundle.files(), force=True)
    restart_proxy_unverified(stack)

    code, checks = doctor(stack, user=None)
    assert code == 1
    dates = by_suffix(checks, ": certificate dates")
    assert dates["status"] == "fail"
    assert "expired on" in dates["detail"]
    assert "renew" in dates["fix"]
    # the chain itself is trusted (the new CA is the one given), so trust is not the finding
    assert by_suffix(checks, ": TLS trust")["status"] == "ok"


def restart_proxy_unverified(stack: Stack) -> None:
    """Restart the proxy after a certificate change the stack's client would refuse."""
    import ssl

    stack.proxy_proc.stop()
    stack.proxy_proc.start()
    stack.context = ssl._create_unverified_context()  # noqa: S323 - the cert is expired on purpose
    wait_until(f"{stack.proxy} again", lambda: stack.request("auth", "/api/health").status == 200,
               stack.proxy_proc)  # fmt: skip
