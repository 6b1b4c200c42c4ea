"""The soak's judge (which answers count as wrongly allowed, stale or lost), and its CI form.

``bench/soak.py`` decides from recorded times whether an answer was wrong, so its rules are
tested here on hand-made records, one per rule, each of which must be counted; the CI form
runs the real thing for 5 seconds (real ``authctl serve``, real CLI edits) and wants zeros.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import typing as t
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_soak() -> ModuleType:
    """``bench/soak.py`` as a module (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_soak", ROOT / "bench" / "soak.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_soak"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    """The soak module."""
    return load_soak()


def model_with_alice(soak: ModuleType, groups: set[str] | None = None) -> t.Any:
    """A model with alice (groups ``admins, dev`` unless given) and one cookie born at t=1."""
    model = soak.Model()
    model.add_user(soak.UserState("alice", "pw", {"admins", "dev"} if groups is None else groups))
    model.add_cookie("alice", "authctl_session=a", 1.0)
    return model


def record(
    soak: ModuleType,
    sent: float,
    kind: int | None = None,
    cookie: int = 0,
    status: int = 200,
    user: str | None = "alice",
    groups: str | None = "admins,dev",
) -> tuple[t.Any, ...]:
    """One recorded answer, received 1 ms after it was sent."""
    kind = soak.COOKIE_APP if kind is None else kind
    return (sent, sent + 0.001, kind, cookie, status, user, groups)


def revoke(model: t.Any, start: float, done: float) -> None:
    """alice's cookie ends by a CLI command that ran from ``start`` to ``done``."""
    (cookie,) = model.kill_cookies("alice", start, "user disable alice")
    cookie.dead_done = done


def test_a_live_cookie_allowed_is_fine(soak: ModuleType) -> None:
    """200 with the right user and groups for a live cookie: nothing counted."""
    model = model_with_alice(soak)
    verdict = soak.judge([record(soak, 2.0)], model, 0.0)
    assert (verdict.requests, verdict.wrongly_allowed, verdict.stale_groups) == (1, 0, 0)


def test_allowed_after_the_reload_bound_is_wrong(soak: ModuleType) -> None:
    """A 200 sent more than the reload bound after the disable returned is wrongly allowed;
    one sent before it returned, or within the bound, is not."""
    model = model_with_alice(soak)
    revoke(model, start=5.0, done=5.5)
    records = [record(soak, 5.2), record(soak, 6.4), record(soak, 6.6)]
    verdict = soak.judge(records, model, 0.0)
    assert verdict.wrongly_allowed == 1
    assert verdict.allowed_within_bound == 1
    assert verdict.max_revocation_lag == pytest.approx(0.9)
    assert "sent 1.100s after `user disable alice` returned" in verdict.details[0]


def test_a_revoked_cookie_stays_revoked(soak: ModuleType) -> None:
    """Enabling the user again (no new groups change, the model keeps the cookie dead) does not
    make an old session's 200 right, however late."""
    model = model_with_alice(soak)
    revoke(model, start=5.0, done=5.5)
    assert soak.judge([record(soak, 60.0)], model, 0.0).wrongly_allowed == 1


def test_another_users_identity_is_wrong(soak: ModuleType) -> None:
    """alice's cookie answered as bob: wrongly allowed."""
    model = model_with_alice(soak)
    verdict = soak.judge([record(soak, 2.0, user="bob")], model, 0.0)
    assert verdict.wrongly_allowed == 1


@pytest.mark.parametrize("kind_name", ["ANON_APP", "ANON_ADMINS"])
def test_anonymous_allowed_on_a_protected_host_is_wrong(soak: ModuleType, kind_name: str) -> None:
    """No credentials and a 200 on a protected host: wrongly allowed; a 302 is right."""
    model = model_with_alice(soak)
    kind = getattr(soak, kind_name)
    records = [
        record(soak, 2.0, kind, cookie=-1, user="", groups=""),
        record(soak, 2.0, kind, cookie=-1, status=302, user=None, groups=None),
    ]
    verdict = soak.judge(records, model, 0.0)
    assert verdict.wrongly_allowed == 1
    assert sum(verdict.unexpected.values()) == 0


def test_bypass_must_be_anonymous(soak: ModuleType) -> None:
    """The bypass host answers 200 with empty Remote-* headers; a user there is wrong."""
    model = model_with_alice(soak)
    records = [
        record(soak, 2.0, soak.ANON_PUBLIC, cookie=-1, user="", groups=""),
        record(soak, 2.0, soak.ANON_PUBLIC, cookie=-1, user="alice", groups=""),
        record(soak, 2.0, soak.ANON_PUBLIC, cookie=-1, status=302, user=None, groups=None),
    ]
    verdict = soak.judge(records, model, 0.0)
    assert verdict.wrongly_allowed == 1
    assert dict(verdict.unexpected) == {"bypass 302": 1}


def test_server_errors_are_counted(soak: ModuleType) -> None:
    """Every 5xx counts, whatever the request."""
    model = model_with_alice(soak)
    records = [record(soak, 2.0, status=500), record(soak, 2.0, cookie=-1, status=503)]
    assert soak.judge(records, model, 0.0).server_errors == 2


def test_a_live_cookie_denied_is_reported(soak: ModuleType) -> None:
    """A live cookie sent to the portal is a wrong denial (reported, not a failure); a 302
    after the revoke started is expected."""
    model = model_with_alice(soak)
    revoke(model, start=5.0, done=5.5)
    records = [record(soak, 2.0, status=302), record(soak, 5.1, status=302)]
    verdict = soak.judge(records, model, 0.0)
    assert verdict.wrongly_denied == 1
    assert verdict.wrongly_allowed == 0


def test_a_new_session_may_be_refused_within_the_bound(soak: ModuleType) -> None:
    """A cookie from a login right after ``enable`` may be refused by a worker that has not
    read the change yet, until the reload bound; after it, a refusal is a wrong denial, named
    with the user's edits."""
    model = model_with_alice(soak)
    cookie = model.add_cookie("alice", "authctl_session=b", 3.1, allowed_from=4.0)
    records = [
        record(soak, 3.5, cookie=cookie.id, status=302),
        record(soak, 4.5, cookie=cookie.id, status=302),
        record(soak, 4.7, cookie=cookie.id, status=302),
    ]
    enable = soak.Edit("enable", "alice", 2.5, 3.0, True, "")
    verdict = soak.judge(records, model, 0.0, [enable])
    assert verdict.denied_within_bound == 1
    assert verdict.wrongly_denied == 2
    assert verdict.details == [
        "alice's live cookie #1 (login returned t=3.100s) refused 2x from t=4.500s to "
        "t=4.700s [`user enable` t=2.500-3.000s]"
    ]


def test_leaving_the_admins_group_closes_the_admins_host(soak: ModuleType) -> None:
    """After ``groups --remove admins`` returned, admins.example.com allowing the user is wrong
    once the reload bound has passed, and the old Remote-Groups is stale."""
    model = model_with_alice(soak)
    model.groups["alice"].append(soak.GroupsChange(10.0, 10.5, frozenset({"dev"})))
    admins = soak.COOKIE_ADMINS
    records = [
        record(soak, 10.2, admins),  # in flight: either answer is right
        record(soak, 11.4, admins),  # within the bound
        record(soak, 11.6, admins),  # too late: wrongly allowed
        record(soak, 11.6, groups="dev"),  # the new groups: right
        record(soak, 11.6, groups="admins,dev"),  # the old groups on the app host: stale
    ]
    verdict = soak.judge(records, model, 0.0)
    assert verdict.wrongly_allowed == 1
    assert verdict.stale_groups == 1


def test_groups_states_window(soak: ModuleType) -> None:
    """The acceptable group sets: the settled one and any change in flight or recent."""
    history = [
        soak.GroupsChange(-1e9, -1e9, frozenset({"a"})),
        soak.GroupsChange(5.0, 5.2, frozenset({"b"})),
        soak.GroupsChange(8.0, None, frozenset({"c"})),
    ]
    assert soak.groups_states(history, 4.0, 4.1) == {frozenset({"a"})}
    assert soak.groups_states(history, 6.0, 6.1) == {frozenset({"a"}), frozenset({"b"})}
    assert soak.groups_states(history, 7.0, 7.1) == {frozenset({"b"})}
    assert soak.groups_states(history, 7.9, 8.1) == {frozenset({"b"}), frozenset({"c"})}
    assert soak.parse_groups("b, a") == frozenset({"a", "b"})
    assert soak.parse_groups("") == frozenset()
    assert soak.parse_groups(None) is None


def test_lost_users(soak: ModuleType) -> None:
    """Missing, changed, resurrected and unknown users each count once; group order does not."""
    model = soak.Model()
    for name in ("alice", "bob", "carol", "dave"):
        model.add_user(soak.UserState(name, "pw", {"dev", "admins"}))
    model.users["dave"].exists = False

    def entry(name: str, **changes: object) -> dict[str, object]:
        state = model.users.get(name) or soak.UserState(name, "pw", set())
        base = {
            "username": name,
            "displayname": state.displayname,
            "email": state.email,
            "groups": ["dev", "admins"],
            "disabled": False,
        }
        return {**base, **changes}

    assert soak.lost_users(model, [entry(n) for n in ("alice", "bob", "carol")]) == []
    listed = [entry("alice"), entry("bob", disabled=True), entry("dave"), entry("eve")]
    assert soak.lost_users(model, listed) == [
        "bob: disabled True != False",
        "carol: missing",
        "dave: removed, but still listed",
        "eve: listed, but never added",
    ]


def test_read_answer_keep_alive_and_close(soak: ModuleType) -> None:
    """The raw client reads two answers from one stream, then reports the close."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(
            b"HTTP/1.1 200 OK\r\nRemote-User: alice\r\nContent-Length: 0\r\n\r\n"
            b"HTTP/1.1 302 Found\r\nLocation: x\r\nContent-Length: 3\r\n\r\nabc"
        )
        status, headers, rest, keep = soak.read_answer(ours, b"")
        assert (status, headers["remote-user"], keep) == (200, "alice", True)
        status, headers, rest, keep = soak.read_answer(ours, rest)
        assert (status, headers["location"], rest) == (302, "x", b"")
        theirs.shutdown(socket.SHUT_WR)
        with pytest.raises(soak.ConnectionLost, match="closed before an answer"):
            soak.read_answer(ours, b"")


def test_connection_close_is_honoured(soak: ModuleType) -> None:
    """``Connection: close`` ends keep-alive; an answer without Content-Length is refused."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        assert soak.read_answer(ours, b"")[3] is False
        theirs.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
        with pytest.raises(soak.ConnectionLost, match="without Content-Length"):
            soak.read_answer(ours, b"")


def test_kill_worker_needs_workers(soak: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """``--kill-worker`` with one worker is a usage error, not a soak without its fault."""
    with pytest.raises(SystemExit) as exc:
        soak.parse_args(["--kill-worker"])
    assert exc.value.code == 2
    assert "--workers 2" in capsys.readouterr().err


def test_must_be_zero_ignores_connection_errors_only_under_a_fault(soak: ModuleType) -> None:
    """Connection errors fail a plain soak; with a fault injected they are expected, but a
    killed worker must have been replaced by the end."""
    from collections import Counter

    args = soak.parse_args(["--seconds", "1"])
    cli = soak.Cli(Path("/nonexistent"))
    result = soak.Result(args, 1.0, soak.Verdict(), [], cli, [], Counter(x=2), [], [], [])
    assert result.must_be_zero["connection errors"] == 2
    assert not result.ok
    result.faults = [soak.Fault("kill-worker", 0.5, soak.kill_worker)]
    assert "connection errors" not in result.must_be_zero
    assert result.ok
    result.args = soak.parse_args(["--workers", "2", "--kill-worker"])
    result.missing_workers = 1
    assert result.must_be_zero["missing workers at the end"] == 1
    assert not result.ok


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_ci_soak_counts_nothing_wrong() -> None:
    """The short soak: 5 s, 8 connections, real CLI edits; every must-be-0 count is 0, and it
    really tested something (verifies of every kind, edits, sessions revoked)."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            "--seconds",
            "5",
            "--connections",
            "8",
            "--seed",
            "13",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=55,
        cwd=ROOT,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    data = json.loads(done.stdout)
    assert data["must_be_zero"] == {
        "wrongly allowed": 0,
        "5xx": 0,
        "lost users": 0,
        "failed CLI commands": 0,
        "stale Remote-Groups": 0,
        "soak errors": 0,
        "connection errors": 0,
    }, data["details"]
    assert (data["wrongly_allowed"], data["server_errors"], data["lost_users"]) == (0, 0, 0)
    assert done.returncode == 0
    assert data["ok"] is True
    assert data["requests"] > 500
    assert set(data["requests_by_kind"]) == {
        "cookie app",
        "cookie admins",
        "anonymous app",
        "anonymous admins",
        "bypass",
    }
    assert data["edits"] >= 2
    assert data["revoked_cookies"] >= 1
    assert data["p99_ms"] > 0
