"""``authctl doctor``'s checks, one by one, on facts made here; the stores on real SQLite and a
real redis-server; the CLI's options, ``--json`` shape and exit codes. The checks against real
proxies are in ``tests/e2e/test_doctor_e2e.py``."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import ssl
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from authctl.cli import cli
from server.core import certs
from server.core.config import load_config
from server.core.doctor import Check
from server.core.doctor import Status
from server.core.doctor import client as probes
from server.core.doctor import exit_code
from server.core.doctor import files
from server.core.doctor import health
from server.core.doctor import stores
from server.core.doctor import tls
from server.core.doctor.check import fail
from server.core.doctor.check import ok
from server.core.doctor.check import warn
from server.core.doctor.clock import clock_check
from server.core.doctor.net import Answer
from server.core.doctor.net import Resolver
from server.core.doctor.run import Options
from server.core.doctor.run import run
from server.core.policy import Policy
from tests.redis_services import RedisServer
from tests.redis_services import free_port

CONFIG = """\
[server]
address = "127.0.0.1:{port}"

[users]
file = "users.toml"

[storage]
path = "authctl.db"
encryption_key_file = "secrets/storage.key"

[session]
store = "{store}"
redis_url = "{redis_url}"

[[session.cookies]]
domain = "example.test"
portal_url = "https://auth.example.test:{port}"
default_redirect_url = "https://www.example.test:{port}/"

[access_control]
default_policy = "one_factor"

[[access_control.rules]]
domain = "public.example.test"
policy = "bypass"

[[access_control.rules]]
domain = "deny.example.test"
policy = "deny"
"""
USERS = "[users]\n"
PORTALS = ["https://auth.example.test"]
URL = "https://app.example.test/page?x=1"


def folder(tmp_path: Path, store: str = "sqlite", redis_url: str = "redis://127.0.0.1:1/0") -> Path:
    """A config folder; nothing listens on its address (a closed port)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "authctl.toml").write_text(
        CONFIG.format(port=free_port(), store=store, redis_url=redis_url)
    )
    (tmp_path / "users.toml").write_text(USERS)
    (tmp_path / "users.toml").chmod(0o600)
    (tmp_path / "secrets").mkdir()
    key = tmp_path / "secrets" / "storage.key"
    key.write_text(secrets.token_hex(32))
    key.chmod(0o600)
    return tmp_path / "authctl.toml"


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


# --------------------------------------------------------------------------- the check itself


def test_check_json_shape_and_exit_code() -> None:
    """SPEC §7.4: name, status, detail, fix; a fail exits 1, warnings alone exit 0."""
    assert fail("a", "b", "c").as_dict() == {
        "name": "a",
        "status": "fail",
        "detail": "b",
        "fix": "c",
    }
    assert ok("a", "b").as_dict()["fix"] == ""
    assert exit_code([ok("a", "b"), warn("c", "d", "e")]) == 0
    assert exit_code([ok("a", "b"), fail("c", "d", "e")]) == 1
    assert exit_code([]) == 0


# --------------------------------------------------------------------------- files


def test_config_errors_name_file_line_and_key(tmp_path: Path) -> None:
    path = folder(tmp_path)
    path.write_text(
        path.read_text().replace("same_site", "x").replace('store = "sqlite"', 'store = "nope"')
    )
    check, config = files.config_check(path)
    assert config is None
    assert check.status is Status.FAIL
    assert f"{path}:" in check.detail
    assert "session.store" in check.detail
    assert check.fix


def test_config_loads(tmp_path: Path) -> None:
    check, config = files.config_check(folder(tmp_path))
    assert check.status is Status.OK
    assert config is not None


@pytest.mark.parametrize(
    ("named", "facts", "status", "words"),
    [
        (files.Named("storage.encryption_key_file", Path("/k"), "the storage key", "key"),
         files.FileFacts(None), Status.FAIL, "authctl init"),
        (files.Named("users.file", Path("/u"), "the users file", "hashes"),
         files.FileFacts(None), Status.FAIL, "user add"),
        (files.Named("portal.logo_file", Path("/l"), "the logo"),
         files.FileFacts(None), Status.FAIL, "create /l"),
        (files.Named("users.file", Path("/u"), "the users file"),
         files.FileFacts(None, error="Permission denied"), Status.FAIL, "Permission denied"),
        (files.Named("users.file", Path("/u"), "the users file"),
         files.FileFacts(stat.S_IFDIR | 0o755, regular=False), Status.FAIL, "not a regular"),
        (files.Named("users.file", Path("/u"), "the users file"),
         files.FileFacts(stat.S_IFREG | 0o600, readable=False), Status.FAIL, "cannot be read"),
        (files.Named("storage.encryption_key_file", Path("/k"), "the storage key", "key"),
         files.FileFacts(stat.S_IFREG | 0o644), Status.FAIL, "chmod 600 /k"),
        (files.Named("storage.encryption_key_file", Path("/k"), "the storage key", "key"),
         files.FileFacts(stat.S_IFREG | 0o640), Status.WARN, "chmod 600 /k"),
        (files.Named("users.file", Path("/u"), "the users file", "hashes"),
         files.FileFacts(stat.S_IFREG | 0o644), Status.WARN, "chmod 600 /u"),
        (files.Named("users.file", Path("/u"), "the users file", "hashes"),
         files.FileFacts(stat.S_IFREG | 0o600), Status.OK, "0600"),
        (files.Named("portal.logo_file", Path("/l"), "the logo"),
         files.FileFacts(stat.S_IFREG | 0o644), Status.OK, "present"),
    ],
)  # fmt: skip
def test_judge_file(named: files.Named, facts: files.FileFacts, status: Status, words: str) -> None:
    check = files.judge_file(named, facts)
    assert check.status is status
    assert words in check.detail + check.fix


def test_inspect_real_files(tmp_path: Path) -> None:
    assert files.inspect(tmp_path / "none").mode is None
    assert files.inspect(tmp_path).regular is False
    (tmp_path / "f").write_text("x")
    (tmp_path / "f").chmod(0o640)
    facts = files.inspect(tmp_path / "f")
    assert facts.regular
    assert facts.readable
    assert stat.S_IMODE(facts.mode or 0) == 0o640
    assert "Not a directory" in files.inspect(tmp_path / "f" / "g").error


def test_named_files_lists_every_password_file(tmp_path: Path) -> None:
    path = folder(tmp_path)
    path.write_text(
        path.read_text().replace("[session]\n", '[session]\nredis_password_file = "r.pw"\n')
        + '\n[notifier.smtp]\nhost = "smtp.example.test"\nsender = "a@example.test"\n'
        'username = "a"\npassword_file = "s.pw"\n'
    )
    keys = [n.key for n in files.named_files(load_config(path))]
    assert keys == ["storage.encryption_key_file", "users.file", "session.redis_password_file",
                    "notifier.smtp.password_file"]  # fmt: skip


def test_users_file_checks(tmp_path: Path) -> None:
    config = load_config(folder(tmp_path))
    assert files.users_check(config).status is Status.OK
    config.users.file.write_text("[users.alice]\npassword = 3\n")
    bad = files.users_check(config)
    assert bad.status is Status.FAIL
    assert ":2" in bad.detail
    config.users.file.write_text("")
    assert files.users_check(config).status is Status.WARN


def test_storage_folder(tmp_path: Path) -> None:
    config = load_config(folder(tmp_path))
    assert files.storage_folder_check(config).status is Status.OK  # type: ignore[union-attr]
    path = tmp_path / "authctl.toml"
    path.write_text(path.read_text().replace('"authctl.db"', '"gone/authctl.db"'))
    gone = files.storage_folder_check(load_config(path))
    assert gone is not None
    assert gone.status is Status.FAIL
    assert "mkdir" in gone.fix


# --------------------------------------------------------------------------- TLS


def cert(hosts: list[str], *, days: int = 90, now: dt.datetime | None = None) -> certs.Bundle:
    return certs.generate(hosts, days=days, key_type="ecdsa", now=now)


def test_covers_matches_one_label_wildcards_and_ips() -> None:
    names = ["*.example.test", "auth.other.test", "127.0.0.1"]
    assert tls.covers(names, "app.example.test")
    assert tls.covers(names, "AUTH.other.test.")
    assert tls.covers(names, "127.0.0.1")
    assert not tls.covers(names, "example.test")
    assert not tls.covers(names, "a.b.example.test")
    assert not tls.covers(names, "127.0.0.2")


def test_names_check() -> None:
    c = cert(["auth.example.test", "127.0.0.1"]).cert
    assert tls.names_of(c) == ["auth.example.test", "127.0.0.1"]
    assert tls.names_check("n", c, "app.example.test", [])[0].status is Status.FAIL
    partial = tls.names_check("n", c, "auth.example.test", ["www.example.test"])[0]
    assert partial.status is Status.WARN
    assert "www.example.test" in partial.detail
    assert tls.names_check("n", c, "auth.example.test", [])[0].status is Status.OK


def test_expiry_check() -> None:
    now = dt.datetime.now(dt.UTC)
    c = cert(["auth.example.test"], days=30, now=now).cert
    assert tls.expiry_check("n", c, now).status is Status.OK
    assert tls.expiry_check("n", c, now + dt.timedelta(days=20)).status is Status.WARN
    expired = tls.expiry_check("n", c, now + dt.timedelta(days=31))
    assert expired.status is Status.FAIL
    assert "expired on" in expired.detail
    early = tls.expiry_check("n", c, now - dt.timedelta(days=1))
    assert early.status is Status.FAIL
    assert "clock" in early.fix


def verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, message)
    error.verify_code = code
    error.verify_message = message
    return error


def test_trust_check() -> None:
    assert tls.trust_check("n", "h", None, None).status is Status.OK
    assert "ca.pem" in tls.trust_check("n", "h", None, "ca.pem").detail
    assert (
        tls.trust_check("n", "h", verify_error(10, "certificate has expired"), None).status
        is Status.OK
    )
    untrusted = tls.trust_check("n", "h", verify_error(20, "unable to get local issuer"), None)
    assert untrusted.status is Status.FAIL
    assert "--ca FILE" in untrusted.fix
    wrong_ca = tls.trust_check("n", "h", verify_error(20, "unable"), "ca.pem")
    assert wrong_ca.status is Status.FAIL
    assert "ca.pem" in wrong_ca.fix


# --------------------------------------------------------------------------- clock and health


@pytest.mark.parametrize(
    ("offset", "status"), [(0, Status.OK), (10, Status.OK), (-45, Status.WARN), (400, Status.FAIL)]
)
def test_clock(offset: float, status: Status) -> None:
    server = 1_700_000_000.0
    date = "Tue, 14 Nov 2023 22:13:20 GMT"  # server
    check = clock_check("clock", "the server", date, server + offset)
    assert check.status is status
    if status is Status.FAIL:
        assert "TOTP" in check.detail


def test_clock_without_a_date() -> None:
    assert clock_check("c", "s", None, 0).status is Status.WARN
    assert clock_check("c", "s", "yesterday", 0).status is Status.WARN


def test_health_url(tmp_path: Path) -> None:
    from server.core.config import ServerConfig

    wildcard = ServerConfig(host="0.0.0.0", port=9)  # noqa: S104
    assert health.health_url(wildcard) == "http://127.0.0.1:9/api/health"
    assert health.health_url(ServerConfig(host="::", port=9)) == "http://[::1]:9/api/health"
    assert health.health_url(ServerConfig(unix_socket="/run/a.sock")) == "unix:/run/a.sock"


def test_judge_health() -> None:
    assert health.judge_health("w", Answer(200)).status is Status.OK
    down = health.judge_health(
        "w", Answer(503, body=b'{"status":"KO","message":"storage unavailable"}')
    )
    assert down.status is Status.FAIL
    assert "storage unavailable" in down.detail
    assert "authctl serve" in health.judge_health("w", None, "refused").fix
    other = health.judge_health("w", Answer(404, body=b"<html>"))
    assert other.status is Status.FAIL
    assert "server.address" in other.fix
    assert health.judge_health("w", Answer(500, body=b"[1]")).detail == "w answers 500"


# --------------------------------------------------------------------------- the client probes


def redirect(rd: str = URL, status: int = 302) -> Answer:
    from urllib.parse import quote

    return Answer(
        status, (("location", f"https://auth.example.test/?rd={quote(rd, safe='')}&rm=GET"),)
    )


def test_probe_markers() -> None:
    probe = probes.Probe()
    headers = dict(probe.headers("s=1"))
    assert headers["Remote-User"] == probe.forged
    assert headers["Cookie"] == "s=1"
    assert probe.echoed(Answer(200, body=json.dumps(list(headers.items())).encode()))
    assert not probe.echoed(Answer(200, body=b"hello"))


@pytest.mark.parametrize(
    ("answer", "policy", "status", "words"),
    [
        (redirect(), Policy.ONE_FACTOR, Status.OK, "sent to sign in"),
        (redirect(status=401), Policy.TWO_FACTOR, Status.OK, "sent to sign in"),
        (Answer(401), Policy.ONE_FACTOR, Status.FAIL, "error_page 401"),
        (Answer(403), Policy.ONE_FACTOR, Status.FAIL, "trusted_proxies"),
        (Answer(400), Policy.ONE_FACTOR, Status.FAIL, "trusted_proxies"),
        (Answer(500), Policy.ONE_FACTOR, Status.FAIL, "auth-request"),
        (Answer(200), Policy.ONE_FACTOR, Status.FAIL, "does not ask authctl"),
        (Answer(302, (("location", "https://evil.test/"),)), Policy.ONE_FACTOR, Status.FAIL,
         "evil.test"),
        (Answer(200), Policy.BYPASS, Status.OK, "bypass"),
        (Answer(403), Policy.DENY, Status.OK, "deny"),
        (Answer(200), Policy.DENY, Status.FAIL, "deny"),
    ],
)  # fmt: skip
def test_judge_anonymous(answer: Answer, policy: Policy, status: Status, words: str) -> None:
    check = probes.judge_anonymous(URL, answer, policy, False, PORTALS)
    assert check.status is status
    assert words in check.detail + check.fix


def test_judge_anonymous_subject_rule_needs_sign_in() -> None:
    """A deny rule with a subject sends anonymous visitors to sign in first."""
    assert (
        probes.judge_anonymous(URL, Answer(403), Policy.DENY, True, PORTALS).status is Status.FAIL
    )


def test_judge_forged() -> None:
    probe = probes.Probe()
    leaked = Answer(200, body=f'{{"headers": [["Remote-User", "{probe.forged}"]]}}'.encode())
    assert probes.judge_forged(URL, probe, leaked, PORTALS).status is Status.FAIL
    assert probes.judge_forged(URL, probe, redirect(), PORTALS).status is Status.OK
    clean = Answer(200, body=f'{{"headers": [["X-Authctl-Doctor", "{probe.echo}"]]}}'.encode())
    assert probes.judge_forged(URL, probe, clean, PORTALS).status is Status.OK
    opaque = probes.judge_forged(URL, probe, Answer(200, body=b"<html>app</html>"), PORTALS)
    assert opaque.status is Status.WARN
    assert "not checkable" in opaque.detail


def test_judge_signed_in() -> None:
    probe = probes.Probe()
    echo = f'[["X-Authctl-Doctor", "{probe.echo}"], ["Remote-User", "alice"]]'
    good = probes.judge_signed_in(URL, probe, Answer(200, body=echo.encode()), "alice", PORTALS)
    assert good.status is Status.OK
    assert "'alice'" in good.detail
    leaked = Answer(200, body=f"{echo} {probe.forged}".encode())
    assert probes.judge_signed_in(URL, probe, leaked, "alice", PORTALS).status is Status.FAIL
    assert probes.judge_signed_in(URL, probe, redirect(), None, PORTALS).status is Status.WARN
    assert probes.judge_signed_in(URL, probe, Answer(403), None, PORTALS).status is Status.WARN
    opaque = probes.judge_signed_in(URL, probe, Answer(200, body=b"app"), None, PORTALS)
    assert opaque.status is Status.WARN
    assert "echo" in opaque.detail


def test_judge_forwarded() -> None:
    one = Policy.ONE_FACTOR
    assert probes.judge_forwarded(URL, redirect(), one, False, PORTALS).status is Status.OK
    wrong = probes.judge_forwarded(
        URL, redirect("https://app.example.test/other"), one, False, PORTALS
    )
    assert wrong.status is Status.FAIL
    assert "X-Forwarded" in wrong.detail
    plain = probes.judge_forwarded(URL, redirect(URL.replace("https", "http")), one, False, PORTALS)
    assert plain.status is Status.FAIL
    no_rd = Answer(302, (("location", "https://auth.example.test/"),))
    assert probes.judge_forwarded(URL, no_rd, one, False, PORTALS).status is Status.WARN
    refused = probes.judge_forwarded(URL, Answer(403), one, False, PORTALS)
    assert refused.status is Status.FAIL
    assert "trusted_proxies" in refused.fix
    assert "anonymous" in probes.judge_forwarded(URL, Answer(200), one, False, PORTALS).fix
    assert (
        "bypass" in probes.judge_forwarded(URL, Answer(200), Policy.BYPASS, False, PORTALS).detail
    )


def test_same_url_and_cookie() -> None:
    assert probes.same_url("https://a.test:443/p?q", "https://A.test/p?q")
    assert not probes.same_url("https://a.test:8443/p", "https://a.test/p")
    assert not probes.same_url("https://a.test:99999/p", "https://a.test/p")
    answer = Answer(200, (("set-cookie", "other=1; Path=/"), ("set-cookie", "s=abc; Secure")))
    assert probes.session_cookie(answer, "s") == "s=abc"
    assert probes.session_cookie(answer, "none") is None
    assert probes.portal_redirect(Answer(302, (("location", "https://[::1/"),)), PORTALS) is None


def test_resolver() -> None:
    resolver = Resolver.parse(["*.example.test:127.0.0.1", "db.test:[::1]"])
    assert resolver.address("app.example.test") == "127.0.0.1"
    assert resolver.address("db.test") == "::1"
    assert resolver.address("other.test") == "other.test"
    with pytest.raises(ValueError, match="NAME:ADDRESS"):
        Resolver.parse(["nocolon"])


# --------------------------------------------------------------------------- stores (real)


def test_storage_and_sqlite_sessions(tmp_path: Path) -> None:
    """Not created by doctor; opened with the key once serve made them; a wrong key fails."""
    from server.core.session_store import SQLiteStore
    from server.core.session_store import session_db_path
    from server.core.storage import Storage

    config = load_config(folder(tmp_path))
    assert stores.storage_check(config).status is Status.WARN
    assert stores.session_store_check(config).status is Status.WARN
    assert not config.storage.path.exists()
    Storage(config.storage).close()
    key = config.storage.encryption_key_file.read_bytes().strip()
    SQLiteStore(session_db_path(config), key=key).close()
    assert stores.storage_check(config).status is Status.OK
    assert stores.session_store_check(config).status is Status.OK
    config.storage.encryption_key_file.write_text(secrets.token_hex(32))
    wrong = stores.storage_check(config)
    assert wrong.status is Status.FAIL
    assert "key" in wrong.detail
    config.storage.encryption_key_file.unlink()
    assert stores.session_store_check(config).status is Status.FAIL


def test_memory_store_is_a_warning(tmp_path: Path) -> None:
    config = load_config(folder(tmp_path, store="memory"))
    assert stores.session_store_check(config).status is Status.WARN


@pytest.mark.slow
def test_redis_store(tmp_path: Path) -> None:
    """A real redis-server answers as the primary; a closed port fails with the fix."""
    down = load_config(folder(tmp_path / "down", store="redis"))
    check = stores.session_store_check(down)
    assert check.status is Status.FAIL
    assert "start Redis" in check.fix
    server = RedisServer(tmp_path / "redis")
    try:
        up = load_config(folder(tmp_path / "up", store="redis", redis_url=server.url))
        assert stores.session_store_check(up).status is Status.OK
    finally:
        server.stop()


def test_redacted() -> None:
    assert stores._redacted("redis://:pw@h:1/0") == "redis://***@h:1/0"
    assert stores._redacted("redis://h:1/0") == "redis://h:1/0"


# --------------------------------------------------------------------------- run and the CLI


@pytest.mark.slow
def test_run_with_nothing_running(tmp_path: Path) -> None:
    """No server, no proxy: health and the portal fail with their fixes; bad --url values fail."""
    path = folder(tmp_path)
    checks = by_name(
        run(path, Options(urls=("http://app.example.test/", "https://outside.test/"),
                          resolver=Resolver.parse(["*.example.test:127.0.0.1"]), timeout=1))
    )  # fmt: skip
    assert checks["server health"].status is Status.FAIL
    portal = next(c for n, c in checks.items() if n.startswith("portal "))
    assert portal.status is Status.FAIL
    assert "--resolve" in portal.fix
    assert "https:// URLs only" in checks["http://app.example.test/: anonymous request"].detail
    assert "outside every" in checks["https://outside.test/: anonymous request"].detail
    assert "clock" not in checks


def test_cli_json_shape_and_exit(tmp_path: Path) -> None:
    path = folder(tmp_path)
    result = CliRunner().invoke(cli, ["--config", str(path), "doctor", "--json", "--timeout", "1"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert list(data) == ["checks"]
    for check in data["checks"]:
        assert list(check) == ["name", "status", "detail", "fix"]
        assert check["status"] in ("ok", "warn", "fail")
    table = CliRunner().invoke(cli, ["--config", str(path), "doctor", "--timeout", "1"])
    assert table.exit_code == 1
    assert "server health" in table.output
    assert "failed" in table.output


def test_cli_broken_config_is_a_failed_check(tmp_path: Path) -> None:
    path = tmp_path / "authctl.toml"
    path.write_text("[server\n")
    result = CliRunner().invoke(cli, ["--config", str(path), "doctor", "--json"])
    assert result.exit_code == 1
    (check,) = json.loads(result.output)["checks"]
    assert check["name"] == "config"
    assert check["status"] == "fail"
    assert ":1" in check["detail"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--resolve", "x"], "NAME:ADDRESS"),
        (["--cookie", "x", "--url", URL], "NAME=VALUE"),
        (["--cookie", "s=1"], "need --url"),
        (["--cookie", "s=1", "--user", "a", "--url", URL], "not both"),
        (["--password-stdin"], "needs --user"),
    ],
)
def test_cli_usage_errors(tmp_path: Path, args: list[str], words: str) -> None:
    result = CliRunner().invoke(cli, ["--config", str(folder(tmp_path)), "doctor", *args])
    assert result.exit_code == 2
    assert words in result.output


@pytest.mark.slow
def test_health_over_a_unix_socket(tmp_path: Path) -> None:
    """``server.address = "unix:…"``: /api/health is asked over that socket (a real one)."""
    import threading
    from http.server import BaseHTTPRequestHandler
    from socketserver import UnixStreamServer

    from server.core.doctor.net import Client

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.send_header("Content-Length", "40")
            self.end_headers()
            self.wfile.write(b'{"status":"KO","message":"store down"} ')

        def log_message(self, format: str, *args: object) -> None:
            pass

        def address_string(self) -> str:
            return "unix"

    sock = str(tmp_path / "h.sock")
    server = UnixStreamServer(sock, Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        answer = Client(timeout=2).unix_request(sock, "/api/health")
        check = health.judge_health(f"unix:{sock}", answer)
        assert check.status is Status.FAIL
        assert "store down" in check.detail
        with pytest.raises(FileNotFoundError):
            Client(timeout=2).unix_request(str(tmp_path / "none.sock"), "/api/health")
    finally:
        server.shutdown()
        server.server_close()
