"""Reload without restart (SPEC §7.4): SIGHUP, and with ``watch_config`` a change of the file,
re-reads ``authctl.toml``. An invalid file keeps the last good config (every problem logged
with file, key and line); live keys apply to the next request; restart-only keys are logged
and keep their running value; with ``--workers`` every worker reloads; under concurrent
requests every answer comes from one whole config.

The unit tests run ``server.core.reload`` and ``App.reload`` in process; the slow ones run
real ``authctl serve`` processes (one, and ``--workers 2``) and real signals.
"""

from __future__ import annotations

import dataclasses
import http.client
import logging
import os
import re
import signal
import threading
import time
import typing as t
from collections import Counter
from pathlib import Path

import pytest

from server.core.config import load_config
from server.core.passwords import PasswordHasher
from server.core.reload import LIVE
from server.core.reload import RESTART_ONLY
from server.core.reload import Reloader
from server.core.reload import Watcher
from server.core.reload import changed_keys
from server.core.reload import merge
from server.core.reload import needs_restart
from server.core.reload import read_new
from server.core.reload import stamp
from server.core.reload import unclassified
from tests.apphelpers import APP_CONFIG
from tests.apphelpers import CHEAP
from tests.apphelpers import build
from tests.apphelpers import users_toml

if t.TYPE_CHECKING:
    from tests.test_serve import Server

RULE = """
[[access_control.rules]]
domain = "reload.example.com"
policy = "{policy}"
"""


def _config(policy: str = "deny", extra: str = "") -> str:
    """APP_CONFIG (SQLite sessions) with a first rule for reload.example.com."""
    text = APP_CONFIG.replace('store = "memory"', 'store = "sqlite"')
    text = text.replace(
        '[access_control]\ndefault_policy = "deny"\n',
        '[access_control]\ndefault_policy = "deny"\n' + RULE.format(policy=policy),
    )
    return extra + text


def _line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


# ------------------------------------------------------------------ pure: what changes how


def test_every_config_key_is_classified(tmp_path: Path) -> None:
    """A new config key must be put in RESTART_ONLY or LIVE (unclassified ones wait for a
    restart, the safe side, but the author must decide)."""
    (tmp_path / "authctl.toml").write_text(_config(), encoding="utf-8")
    config = load_config(tmp_path / "authctl.toml")
    assert unclassified(config) == []
    for table, names in RESTART_ONLY.items():
        assert not set(names) & set(LIVE.get(table, ())), table
    assert needs_restart("server.threads")
    assert needs_restart("storage.path")
    assert needs_restart("server.some_future_key")
    assert not needs_restart("access_control.rules")
    assert not needs_restart("session.cookies")


def test_merge_keeps_restart_only_keys_and_names_their_line(tmp_path: Path) -> None:
    path = tmp_path / "authctl.toml"
    path.write_text(_config(), encoding="utf-8")
    old = load_config(path)
    new_text = _config("one_factor", '[server]\naddress = "127.0.0.1:9999"\nthreads = 3\n')
    new_text = new_text.replace("[server]\ntrusted_proxies", "trusted_proxies", 1)
    new_text = new_text.replace('expiration = "1h"', 'expiration = "2h"\nstore = "memory"')
    new_text = new_text.replace('store = "sqlite"\n', "", 1)
    path.write_text(new_text, encoding="utf-8")
    outcome = read_new(path, old)
    assert outcome.config is not None, outcome.problems
    applied = outcome.config
    # restart-only: the running values, derived fields too
    assert applied.server.threads == old.server.threads
    assert (applied.server.address, applied.server.port) == (old.server.address, old.server.port)
    assert applied.session.store == "sqlite"
    # live: the new values
    assert applied.session.expiration == 7200
    assert applied.access_control.rules[0].policy == "one_factor"
    kept = {p.key: p for p in outcome.restart}
    assert set(kept) == {"server.address", "server.threads", "session.store"}
    assert kept["server.threads"].line == _line_of(new_text, "threads = 3")
    assert kept["session.store"].line == _line_of(new_text, 'store = "memory"')
    assert all(p.severity == "warning" and "restart" in p.message for p in kept.values())
    assert set(outcome.live) == {"session.expiration", "access_control.rules"}


def test_unchanged_file_changes_nothing(tmp_path: Path) -> None:
    """Rules with regexes compare by their text, so re-reading the same file changes no key."""
    path = tmp_path / "authctl.toml"
    path.write_text(_config(), encoding="utf-8")
    a, b = load_config(path), load_config(path)
    assert changed_keys(a, b) == []
    outcome = merge(a, b)
    assert outcome.restart == ()
    assert outcome.live == ()


def test_invalid_file_gives_every_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "authctl.toml"
    path.write_text(_config(), encoding="utf-8")
    old = load_config(path)
    bad = _config("sometimes")
    bad += "\n[regulation]\nmax_retires = 3\n"
    path.write_text(bad, encoding="utf-8")
    outcome = read_new(path, old)
    assert outcome.config is None
    keys = {p.key: p.line for p in outcome.problems}
    assert keys["access_control.rules[0].policy"] == _line_of(bad, 'policy = "sometimes"')
    assert keys["regulation.max_retires"] == _line_of(bad, "max_retires = 3")
    assert all(p.file == path for p in outcome.problems)
    path.write_text("[server\n", encoding="utf-8")
    assert read_new(path, old).problems[0].line == 1
    path.unlink()
    assert "not found" in read_new(path, old).problems[0].message


def test_reloader_applies_or_keeps_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "authctl.toml"
    path.write_text(_config(), encoding="utf-8")
    config = load_config(path)
    applied: list[str] = []
    reloader = Reloader(config, lambda c: applied.append(c.access_control.rules[0].policy))
    path.write_text(_config("one_factor"), encoding="utf-8")
    caplog.set_level(logging.INFO, "authctl.reload")
    assert reloader.reload()
    assert applied == ["one_factor"]
    assert reloader.config.access_control.rules[0].policy == "one_factor"
    assert "changed access_control.rules" in caplog.text

    caplog.clear()
    bad = _config("sometimes")
    path.write_text(bad, encoding="utf-8")
    assert not reloader.reload()
    assert applied == ["one_factor"]
    line = _line_of(bad, 'policy = "sometimes"')
    assert f"{path}:{line}" in caplog.text
    assert "access_control.rules[0].policy" in caplog.text
    assert "not applied" in caplog.text

    def broken(_config: object) -> None:
        raise ValueError("the storage key cannot be read")

    reloader.apply = broken
    path.write_text(_config("two_factor"), encoding="utf-8")
    assert not reloader.reload()
    assert "could not be applied" in caplog.text
    assert reloader.config.access_control.rules[0].policy == "one_factor"
    assert reloader.results == {"success": 1, "failure": 2}


def test_reloads_are_counted_in_the_metrics(tmp_path: Path) -> None:
    """authctl_config_reload_total{result} counts each result of a counting reloader only."""
    from server.core import metrics

    path = tmp_path / "authctl.toml"
    path.write_text(_config(), encoding="utf-8")
    recorder = metrics.Metrics()
    metrics.install(recorder)
    try:
        counting = Reloader(load_config(path), lambda c: None)
        silent = Reloader(load_config(path), lambda c: None, count=False)
        path.write_text(_config("one_factor"), encoding="utf-8")
        assert counting.reload()
        assert silent.reload()
        path.write_text(_config("sometimes"), encoding="utf-8")
        assert not counting.reload()
        assert not counting.reload()
        assert not silent.reload()
        text = recorder.scrape().decode()
    finally:
        metrics.install(None)
    assert 'authctl_config_reload_total{result="success"} 1.0' in text
    assert 'authctl_config_reload_total{result="failure"} 2.0' in text


def test_quiet_reloader_logs_problems_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A --workers worker: its parent reports the file's problems, so it logs them at DEBUG."""
    path = tmp_path / "authctl.toml"
    path.write_text(_config(), encoding="utf-8")
    reloader = Reloader(load_config(path), lambda c: None, report=False, name="worker 1")
    path.write_text(_config("sometimes"), encoding="utf-8")
    caplog.set_level(logging.DEBUG, "authctl.reload")
    assert not reloader.reload()
    path.write_text(_config("deny", "[server]\nthreads = 3\n").replace("\n[server]\n", "\n", 1))
    assert reloader.reload()
    assert {r.levelno for r in caplog.records} == {logging.DEBUG}
    assert "(worker 1)" in caplog.text
    assert "server.threads: changed, but this key needs a restart" in caplog.text


def test_reloader_thread_coalesces_and_start_catches_up(tmp_path: Path) -> None:
    path = tmp_path / "authctl.toml"
    path.write_text(_config(), encoding="utf-8")
    loaded = stamp(path)
    config = load_config(path)
    path.write_text(_config("one_factor"), encoding="utf-8")  # changed before start
    done = threading.Event()
    seen: list[str] = []

    def apply(c: t.Any) -> None:
        seen.append(c.access_control.rules[0].policy)
        done.set()

    reloader = Reloader(config, apply, loaded=loaded)
    reloader.start()
    assert done.wait(5)
    assert seen == ["one_factor"]
    done.clear()
    path.write_text(_config("two_factor"), encoding="utf-8")
    for _ in range(5):
        reloader.request()
    assert done.wait(5)
    time.sleep(0.2)
    assert seen[-1] == "two_factor"
    assert len(seen) <= 3


def test_reloader_without_a_stamp_waits_for_a_request(tmp_path: Path) -> None:
    path = tmp_path / "authctl.toml"
    path.write_text(_config(), encoding="utf-8")
    seen: list[object] = []
    reloader = Reloader(load_config(path), seen.append)
    reloader.start()
    time.sleep(0.1)
    assert seen == []


def test_watcher_sees_content_size_and_rename_over(tmp_path: Path) -> None:
    path = tmp_path / "authctl.toml"
    path.write_text("a = 1\n", encoding="utf-8")
    calls: list[int] = []
    watcher = Watcher(path, lambda: calls.append(1), interval=0.05)
    assert not watcher.check()
    os.utime(path, ns=(1, 1))
    assert watcher.check()
    assert len(calls) == 1
    # same size and mtime, other inode: an editor's write-and-rename
    other = tmp_path / "new.toml"
    other.write_text("a = 2\n", encoding="utf-8")
    os.utime(other, ns=(1, 1))
    other.replace(path)
    assert watcher.check()
    assert len(calls) == 2
    path.unlink()
    assert not watcher.check()  # missing: wait for it
    path.write_text("a = 3\n", encoding="utf-8")
    watcher.start()
    deadline = time.monotonic() + 3
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    watcher.stop()
    assert len(calls) == 3


# ------------------------------------------------------------------ App.reload in process


def test_app_reload_swaps_rules_portal_and_lifetimes(tmp_path: Path, clock: t.Any) -> None:
    h = build(tmp_path, clock, _config().replace('store = "sqlite"', 'store = "memory"'))
    alice = h.login("alice")
    assert h.forward_auth("https://reload.example.com/").status_int == 403
    store, storage = h.app.portal.sessions.store, h.app.portal.totp.storage
    text = _config("one_factor").replace('store = "sqlite"', 'store = "memory"')
    text = text.replace("https://auth.example.com", "https://auth2.example.com")
    (tmp_path / "authctl.toml").write_text(text.replace('inactivity = "5m"', 'inactivity = "9m"'))
    before = h.app.live
    h.app.reload(load_config(tmp_path / "authctl.toml"))
    assert h.app.live is not before
    assert h.app.dispatch is h.app.live.dispatch
    assert h.app.routes is h.app.live.routes
    resp = h.forward_auth("https://reload.example.com/x")
    assert resp.status_int == 302
    assert resp.location.startswith("https://auth2.example.com/?rd=")
    # sessions, storage and the users file are kept: alice is still signed in
    assert h.forward_auth("https://reload.example.com/", cookie=alice).status_int == 200
    assert h.app.portal.sessions.store is store
    assert h.app.portal.totp.storage is storage
    assert h.app.config.session.inactivity == 540
    assert h.app.portal.sessions.config.inactivity == 540
    assert h.app.selfservice is not None
    assert before.selfservice is not None
    assert h.app.selfservice.outbox is before.selfservice.outbox  # same [notifier]


def test_app_reload_with_a_new_notifier_flushes_the_old_outbox(
    tmp_path: Path, clock: t.Any
) -> None:
    h = build(tmp_path, clock)
    before = h.app.live
    text = APP_CONFIG + f'\n[notifier]\nfilesystem = "{tmp_path / "mail.txt"}"\n'
    (tmp_path / "authctl.toml").write_text(text, encoding="utf-8")
    h.app.reload(load_config(tmp_path / "authctl.toml"))
    assert h.app.selfservice is not None
    assert before.selfservice is not None
    assert h.app.selfservice.outbox is not before.selfservice.outbox
    assert h.app.config.notifier.filesystem == tmp_path / "mail.txt"


def test_app_reload_failure_changes_nothing(tmp_path: Path, clock: t.Any) -> None:
    h = build(tmp_path, clock)
    before, assets = h.app.live, h.app.assets
    config = load_config(tmp_path / "authctl.toml")
    (tmp_path / "secrets" / "storage.key").unlink()  # the self-service keys cannot be derived
    with pytest.raises(ValueError, match="storage key file"):
        h.app.reload(dataclasses.replace(config))
    assert h.app.live is before
    assert h.app.assets is assets
    bare = type(h.app)(h.config, h.app.authorizer, h.app.portal, {})
    with pytest.raises(RuntimeError):
        bare.reload(h.config)


# ------------------------------------------------------------------ real processes


def _server(folder: Path, *extra: str) -> Server:
    from tests.test_serve import Server

    return Server(folder, extra)


def _folder(tmp_path: Path, text: str) -> Path:
    from tests.test_serve import make_folder

    return make_folder(tmp_path / "site", text)


def _hup(srv: Server) -> None:
    srv.proc.send_signal(signal.SIGHUP)


def _wait_for(what: t.Callable[[], bool], timeout: float = 10.0) -> float:
    """Seconds until ``what()`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not what():
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.02)
    return time.monotonic() - start


def _log(srv: Server) -> str:
    return "".join(srv.lines)


def _statuses(srv: Server, url: str, count: int) -> Counter[int]:
    """``count`` verifies, each on a new connection (the kernel spreads them over workers)."""
    return Counter(srv.verify(url).status for _ in range(count))


WORKERS = [pytest.param((), id="single"), pytest.param(("--workers", "2"), id="workers2")]


@pytest.mark.slow
@pytest.mark.parametrize("extra", WORKERS)
def test_sighup_applies_a_new_rule_on_every_worker(tmp_path: Path, extra: tuple[str, ...]) -> None:
    folder = _folder(tmp_path, _config("deny"))
    srv = _server(folder, *extra)
    try:
        url = "https://reload.example.com/"
        assert _statuses(srv, url, 10) == {403: 10}
        srv.config.write_text(_config("one_factor"), encoding="utf-8")
        _hup(srv)
        _wait_for(lambda: srv.verify(url).status == 302)
        time.sleep(0.3)  # the other worker's reload (each reloads on its own)
        assert _statuses(srv, url, 40) == {302: 40}
        assert srv.proc.poll() is None
        assert "config reloaded" in _log(srv)
    finally:
        assert srv.stop() == 0


@pytest.mark.slow
@pytest.mark.parametrize("extra", WORKERS)
def test_invalid_file_keeps_the_old_rule_and_names_file_key_line(
    tmp_path: Path, extra: tuple[str, ...]
) -> None:
    folder = _folder(tmp_path, _config("one_factor"))
    srv = _server(folder, *extra)
    try:
        url = "https://reload.example.com/"
        assert srv.verify(url).status == 302
        bad = _config("bypass").replace('policy = "bypass"', 'policy = "bypas"', 1)
        srv.config.write_text(bad, encoding="utf-8")
        _hup(srv)
        _wait_for(lambda: "not applied" in _log(srv))
        time.sleep(0.5)  # workers have read it too
        assert _statuses(srv, url, 20) == {302: 20}
        line = _line_of(bad, 'policy = "bypas"')
        problem = [x for x in srv.lines if "access_control.rules[0].policy" in x]
        assert len(problem) == 1, _log(srv)  # logged once, by the parent with --workers
        assert f"{srv.config}:{line}" in problem[0]
        # a good file after the bad one applies
        srv.config.write_text(_config("deny"), encoding="utf-8")
        _hup(srv)
        _wait_for(lambda: srv.verify(url).status == 403)
    finally:
        assert srv.stop() == 0


@pytest.mark.slow
def test_restart_only_key_is_logged_and_keeps_its_value(tmp_path: Path) -> None:
    """users.file needs a restart: pointing it at a file without alice changes nothing (alice
    still signs in), it is logged with its line, and the rule changed with it applies."""
    folder = _folder(tmp_path, _config("deny"))
    others = "[users.bob]" + users_toml(PasswordHasher(CHEAP)).split("[users.bob]")[1]
    (folder / "others.toml").write_text(others, encoding="utf-8")  # no alice
    srv = _server(folder)
    try:
        text = _config("one_factor").replace('file = "users.toml"', 'file = "others.toml"')
        srv.config.write_text(text, encoding="utf-8")
        _hup(srv)
        url = "https://reload.example.com/"
        _wait_for(lambda: srv.verify(url).status == 302)
        kept = [x for x in srv.lines if "users.file" in x and "needs a restart" in x]
        assert len(kept) == 1
        assert f"{srv.config}:{_line_of(text, 'others.toml')}" in kept[0]
        assert srv.login("alice").status == 200
    finally:
        assert srv.stop() == 0


@pytest.mark.slow
@pytest.mark.parametrize("extra", WORKERS)
def test_watch_config_picks_up_a_change_without_a_signal(
    tmp_path: Path, extra: tuple[str, ...]
) -> None:
    watch = "[server]\nwatch_config = true\n"
    folder = _folder(tmp_path, _config("deny", watch).replace("\n[server]\n", "\n", 1))
    srv = _server(folder, *extra)
    try:
        url = "https://reload.example.com/"
        assert srv.verify(url).status == 403
        time.sleep(0.2)
        srv.config.write_text(
            _config("one_factor", watch).replace("\n[server]\n", "\n", 1), encoding="utf-8"
        )
        took = _wait_for(lambda: srv.verify(url).status == 302, timeout=5)
        assert took < 2.5, took
        time.sleep(0.3)
        assert _statuses(srv, url, 20) == {302: 20}
    finally:
        assert srv.stop() == 0


#: Two configs whose answers cannot mix unseen. A: one.example.com needs one factor and the
#: portal is portal-a; two.example.com is denied. B: the other way round, portal-b. An
#: anonymous verify of one.example.com redirects to portal-a under A and is refused under B,
#: so a redirect to portal-b (B's portal with A's rules) is a half-applied config; likewise
#: a redirect of two.example.com to portal-a.
PROBE = """
[[access_control.rules]]
domain = "one.example.com"
policy = "{one}"

[[access_control.rules]]
domain = "two.example.com"
policy = "{two}"
"""


def _probe_config(which: str) -> str:
    one, two = ("one_factor", "deny") if which == "a" else ("deny", "one_factor")
    text = APP_CONFIG.replace('store = "memory"', 'store = "sqlite"')
    text = text.replace("https://auth.example.com", f"https://portal-{which}.example.com")
    return text.replace(
        '[access_control]\ndefault_policy = "deny"\n',
        '[access_control]\ndefault_policy = "deny"\n' + PROBE.format(one=one, two=two),
    )


def _answer(resp: http.client.HTTPResponse) -> str:
    location = resp.getheader("Location") or ""
    portal = re.match(r"https://(portal-[ab])\.example\.com/", location)
    return f"{resp.status} {portal.group(1) if portal else location}"


ALLOWED = {
    "one.example.com": {"a": "302 portal-a", "b": "403 "},
    "two.example.com": {"a": "403 ", "b": "302 portal-b"},
}


@pytest.mark.slow
@pytest.mark.parametrize("extra", WORKERS)
def test_reloads_under_load_never_mix_two_configs(tmp_path: Path, extra: tuple[str, ...]) -> None:
    folder = _folder(tmp_path, _probe_config("a"))
    srv = _server(folder, *extra)
    stop = threading.Event()
    seen: Counter[tuple[str, str]] = Counter()
    wrong: list[str] = []
    lock = threading.Lock()

    def fire(host: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        headers = {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": host,
            "X-Forwarded-Uri": "/",
            "X-Forwarded-Method": "GET",
            "Accept": "text/html",
        }
        while not stop.is_set():
            try:
                conn.request("GET", "/api/authz/forward-auth", headers=headers)
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    wrong.append(f"{host}: {exc!r}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
                continue
            answer = _answer(resp)
            which = next((k for k, v in ALLOWED[host].items() if v == answer), None)
            with lock:
                if which is None:
                    wrong.append(f"{host}: {answer}")
                else:
                    seen[(host, which)] += 1
        conn.close()

    threads = [
        threading.Thread(target=fire, args=(host,), daemon=True)
        for host in ("one.example.com", "two.example.com") * 2
    ]
    try:
        for thread in threads:
            thread.start()
        for n in range(20):
            which = "b" if n % 2 == 0 else "a"
            srv.config.write_text(_probe_config(which), encoding="utf-8")
            _hup(srv)
            expected = ALLOWED["one.example.com"][which]
            _wait_for(lambda e=expected: _answer(srv.verify("https://one.example.com/")) == e)
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        code = srv.stop()
    assert wrong == []
    assert code == 0
    # both configs answered on both hosts, many times
    assert all(seen[(h, w)] > 20 for h in ALLOWED for w in "ab"), seen
    assert _log(srv).count("config reloaded") >= 20


@pytest.mark.slow
@pytest.mark.parametrize("extra", WORKERS)
def test_one_reload_counts_once_in_the_metrics(tmp_path: Path, extra: tuple[str, ...]) -> None:
    """``authctl_config_reload_total`` after one SIGHUP is +1, also with ``--workers 2``
    (every worker reloads; only the process that reports the reload counts it)."""
    from tests.test_metrics import free_port
    from tests.test_metrics import samples
    from tests.test_metrics import scrape_text
    from tests.test_metrics import value

    port = free_port()
    telemetry = f'\n[telemetry.metrics]\nenable = true\naddress = "127.0.0.1:{port}"\n'
    folder = _folder(tmp_path, _config("deny") + telemetry)
    srv = _server(folder, *extra)

    def reloads(result: str) -> float:
        return value(samples(scrape_text(port)), "authctl_config_reload_total", result=result)

    try:
        url = "https://reload.example.com/"
        assert (reloads("success"), reloads("failure")) == (0, 0)
        srv.config.write_text(_config("one_factor") + telemetry, encoding="utf-8")
        _hup(srv)
        _wait_for(lambda: reloads("success") >= 1)
        _wait_for(lambda: _statuses(srv, url, 20) == {302: 20})  # every worker reloaded
        time.sleep(0.5)
        assert (reloads("success"), reloads("failure")) == (1, 0)
        bad = _config("bypass").replace('policy = "bypass"', 'policy = "bypas"', 1)
        srv.config.write_text(bad + telemetry, encoding="utf-8")
        _hup(srv)
        _wait_for(lambda: reloads("failure") >= 1)
        time.sleep(0.5)  # the workers have read it too
        assert (reloads("success"), reloads("failure")) == (1, 1)
    finally:
        assert srv.stop() == 0


def test_the_supervisors_reload_counter_writes_a_file_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``metrics.ReloadCounter`` (the ``--workers`` parent's) writes ``counter_<pid>.db`` in
    the multiprocess directory, made at the first reload, which the supervisor's scrape reads
    (the real sum with the workers' files: ``test_one_reload_counts_once_in_the_metrics``)."""
    import os

    from prometheus_client import values

    from server.core import metrics
    from tests.test_metrics import samples
    from tests.test_metrics import value

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with pytest.raises(ValueError, match="PROMETHEUS_MULTIPROC_DIR"):
        metrics.ReloadCounter().config_reload("success")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    try:
        parent = metrics.ReloadCounter()
        assert not list(tmp_path.iterdir())  # nothing mapped before a reload
        parent.config_reload("success")
        parent.config_reload("success")
        parent.config_reload("failure")
        assert [p.name for p in tmp_path.iterdir()] == [f"counter_{os.getpid()}.db"]
        found = samples(metrics.exposition(metrics.multiprocess_registry(str(tmp_path))).decode())
    finally:
        values.ValueClass = values.MutexValue
        # its file stays mapped for the process's life (a supervisor's): close it here
        parent._counter.labels("success")._value._file.close()
    assert value(found, "authctl_config_reload_total", result="success") == 2
    assert value(found, "authctl_config_reload_total", result="failure") == 1
