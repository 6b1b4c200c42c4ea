"""High availability: two authctl hosts, PostgreSQL, Redis with Sentinel, nginx (SPEC §7.2).

The harness (``tests/e2e/ha_cluster.py``) starts everything once for the module; the tests
run in file order, the destructive ones last (the Redis primary killed, PostgreSQL stopped and
started, host A killed). During each fault, threads send requests that need the missing part
all the time and every answer is counted: none of them may be a 200 (SPEC §7.7). The figures
(requests sent, wrongly allowed, recovery times) are printed with ``-s`` for the release note::

    .venv/bin/python -m pytest tests/e2e/test_ha.py -s -p no:cacheprovider
"""

from __future__ import annotations

import re
import statistics
import threading
import time
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest

from tests.e2e.conftest import Reply
from tests.e2e.ha_cluster import HaCluster
from tests.e2e.ha_cluster import Host
from tests.e2e.ha_cluster import Load
from tests.e2e.ha_cluster import cli
from tests.e2e.ha_cluster import cookie_of
from tests.e2e.ha_cluster import start_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: A change on one host must be honoured by every host within this (SPEC §7.2).
PROPAGATION = 1.0
#: Longest wait for a Sentinel failover, or for PostgreSQL to be used again.
RECOVERY = 25.0
FIGURES: dict[str, str] = {}


def figure(name: str, text: str) -> None:
    """Print a measured figure (and keep it for the summary at the end of the module)."""
    FIGURES[name] = text
    print(f"\n[HA] {name}: {text}", flush=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, echo_port: int) -> Iterator[HaCluster]:
    """The whole set-up, once for the module."""
    started = time.monotonic()
    made = start_cluster(tmp_path_factory.mktemp("ha"), echo_port)
    figure("start-up", f"{time.monotonic() - started:.1f} s")
    try:
        yield made
    finally:
        made.close()
        print("\n[HA] summary\n" + "\n".join(f"  {k}: {v}" for k, v in FIGURES.items()))


# --------------------------------------------------------------------------- helpers


def totp(secret: str, offset_steps: int = 0) -> str:
    """The code of ``secret`` ``offset_steps`` periods from now (skew 1 accepts ±1)."""
    return str(pyotp.TOTP(secret).at(time.time() + 30 * offset_steps))


def signed_in(host: Host, user: str) -> str:
    """Sign ``user`` in on ``host``; the session cookie."""
    reply = host.sign_in(user)
    assert reply.status == 200, f"sign-in of {user} on {host.name}: {reply.status} {reply.body!r}"
    cookie = cookie_of(reply)
    assert cookie, "no session cookie"
    return cookie


def second_factor(host: Host, cookie: str, code: str) -> Reply:
    """``POST /api/secondfactor/totp``."""
    return host.api("/api/secondfactor/totp", {"token": code}, cookie=cookie)


def mailed_code(host: Host, since: int) -> str:
    """The one-time code of the first message written to ``host``'s notifications after
    byte ``since`` (the outbox writes it a moment after the request)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = re.search(r"^    ([A-Z0-9]{8})$", host.notifications()[since:], re.MULTILINE)
        if found:
            return found.group(1)
        time.sleep(0.05)
    pytest.fail(f"no one-time code was mailed by host {host.name}")


def until(probe: t.Callable[[], bool], timeout: float, step: float = 0.01) -> float | None:
    """Seconds until ``probe`` is true, or None after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if probe():
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(step)
    return None


def logout_delay(a: Host, b: Host, user: str) -> float | None:
    """Sign in on A, warm B's cache, log out on A: seconds until B refuses the cookie."""
    cookie = signed_in(a, user)
    for _ in range(3):
        assert b.verify("app", cookie) == 200
    assert a.api("/api/logout", {}, cookie=cookie).status == 200
    started = time.monotonic()
    delay = until(lambda: b.verify("app", cookie) != 200, 5.0, step=0.005)
    if delay is None:
        return None
    delay = time.monotonic() - started
    # and it stays refused, on both hosts
    for host in (a, b, b, a):
        assert host.verify("app", cookie) == 302
    return delay


# --------------------------------------------------------------------------- healthy cluster


def test_join_shares_the_secrets(cluster: HaCluster) -> None:
    """``authctl init --join A B`` gives B the storage key of A and A's users file."""
    a, b = cluster.a.folder, cluster.b.folder
    assert cluster.joined, "authctl init --join is missing (the harness copied secrets/ itself)"
    key = "secrets/storage.key"
    assert (b / key).read_bytes() == (a / key).read_bytes()
    assert f'file = "{a / "users.toml"}"' in cluster.joined_config
    # B keeps A's choice of shared storage and sessions
    assert 'backend = "postgres"' in cluster.joined_config
    assert "[session.redis_sentinel]" in cluster.joined_config


def test_sign_in_on_a_verify_on_b(cluster: HaCluster) -> None:
    """A session made by host A is a session on host B, and through nginx (either host)."""
    a, b = cluster.a, cluster.b
    cookie = signed_in(a, "alice")
    assert b.verify("app", cookie) == 200
    assert b.verify("secure", cookie) == 302  # one factor only
    assert b.verify("app") == 302
    for _ in range(4):  # round robin: both hosts answer through nginx
        reply = cluster.through_proxy("app", cookie=cookie)
        assert reply.status == 200
        assert ("remote-user", "alice") in reply.echoed()
    anonymous = cluster.through_proxy("app")
    assert anonymous.status == 302
    assert anonymous.header("Location") == cluster.portal_redirect("app")


def test_totp_enrolled_via_a_passes_on_b(cluster: HaCluster) -> None:
    """alice sets up her authenticator app through host A (elevation by mailed code, then
    register); a sign-in on host B passes the second factor with it."""
    a, b = cluster.a, cluster.b
    cookie = signed_in(a, "alice")
    since = len(a.notifications())
    assert a.api("/api/user/session/elevation", {}, cookie=cookie).status == 200
    code = mailed_code(a, since)
    elevated = a.api("/api/user/session/elevation", {"otc": code}, cookie=cookie, method="PUT")
    assert elevated.status == 200, elevated.body
    cookie = cookie_of(elevated) or cookie
    started = a.api("/api/secondfactor/totp/register", {}, cookie=cookie, method="PUT")
    assert started.status == 200, started.body
    secret = started.json()["data"]["base32_secret"]
    confirmed = a.api("/api/secondfactor/totp/register", {"token": totp(secret)}, cookie=cookie)
    assert confirmed.status == 200, confirmed.body
    cluster.totp_secrets["alice"] = secret

    other = signed_in(b, "alice")
    passed = second_factor(b, other, totp(secret, 1))  # the next step: this one was used
    assert passed.status == 200, passed.body
    two = cookie_of(passed) or other
    assert b.verify("secure", two) == 200
    assert a.verify("secure", two) == 200
    assert cluster.through_proxy("secure", cookie=two).status == 200


def test_one_code_twenty_times_in_parallel_succeeds_once(cluster: HaCluster) -> None:
    """bob's current code, sent 20 times at once to both hosts, is accepted exactly once."""
    hosts = (cluster.a, cluster.b)
    cookies = [signed_in(hosts[n % 2], "bob") for n in range(20)]
    code = totp(cluster.totp_secrets["bob"])
    barrier = threading.Barrier(20)
    statuses: list[int] = [0] * 20

    def submit(n: int) -> None:
        barrier.wait(timeout=10)
        statuses[n] = second_factor(hosts[n % 2], cookies[n], code).status

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    figure("same TOTP code x20 over 2 hosts", f"statuses {sorted(statuses)}")
    assert statuses.count(200) == 1, statuses
    assert 0 not in statuses, "a submission did not finish"
    assert all(s in (200, 401, 403, 429) for s in statuses), statuses


def test_ban_on_a_holds_on_b(cluster: HaCluster) -> None:
    """Three wrong passwords on host A ban dave; his right password is then refused on B."""
    a, b = cluster.a, cluster.b
    for _ in range(3):
        assert a.sign_in("dave", "not dave's password").status == 401
    refused = b.sign_in("dave")
    assert refused.status == 401, refused.body
    assert not cookie_of(refused)
    assert a.sign_in("dave").status == 401
    listed = cli(b.folder, "bans", "list")
    assert "dave" in listed.stdout


def test_logout_on_a_is_honoured_on_b_within_a_second(cluster: HaCluster) -> None:
    """Ten times: a session signed in and logged out on A is refused on B within 1 s."""
    delays = [logout_delay(cluster.a, cluster.b, "erin") for _ in range(10)]
    done = [d for d in delays if d is not None]
    figure(
        "logout on A -> refused on B",
        f"median {statistics.median(done) * 1000:.0f} ms, max {max(done) * 1000:.0f} ms "
        f"over {len(done)} logouts"
        if done
        else "never",
    )
    assert None not in delays, delays
    assert max(done) < PROPAGATION, delays


# --------------------------------------------------------------------------- faults


def test_redis_primary_killed_sentinel_failover(cluster: HaCluster) -> None:
    """Kill the Redis primary: while no primary is reachable, no request needing the session
    is allowed once the hosts' caches may no longer be trusted (1 s: SPEC §7.2's bound for a
    change to reach every host; the 200s inside it are counted and printed), and a session
    logged out just before the kill is never allowed, then or after. Sentinel promotes the
    replica, the same cookie works again on both hosts without a restart, and logout still
    reaches every host."""
    a, b, rs = cluster.a, cluster.b, cluster.rs
    cookie = signed_in(a, "alice")
    assert b.verify("app", cookie) == 200
    revoked = signed_in(a, "alice")
    for host in (a, b, b):
        assert host.verify("app", revoked) == 200  # in both hosts' caches
    assert a.api("/api/logout", {}, cookie=revoked).status == 200
    rs.sync_replica()

    loads = [
        Load(lambda: a.verify("app", cookie, timeout=10)),
        Load(lambda: b.verify("app", cookie, timeout=10)),
        Load(lambda: cluster.through_proxy("app", cookie=cookie, timeout=10).status, threads=1),
        Load(lambda: b.verify("app", revoked, timeout=10), threads=1),
        Load(lambda: a.verify("app", revoked, timeout=10), threads=1),
    ]
    for load in loads:
        load.__enter__()
    try:
        time.sleep(0.3)  # the load runs: the caches are warm
        old, killed_at = rs.kill_primary()
        last_all_old = killed_at
        while time.monotonic() - killed_at < RECOVERY:
            now = time.monotonic()
            if rs.masters_seen() == {old}:
                last_all_old = now
            elif rs.promoted(old):
                break
            time.sleep(0.02)
        promoted_at = time.monotonic()
        assert rs.promoted(old), "Sentinel did not promote the replica"
        recovered = until(
            lambda: a.verify("app", cookie) == 200 and b.verify("app", cookie) == 200,
            RECOVERY,
            step=0.05,
        )
        recovered_at = time.monotonic()
        time.sleep(0.5)  # and a moment after the recovery
    finally:
        for load in loads:
            load.__exit__(None, None, None)
    totals = [load.total() for load in loads]
    sent = sum(tally.sent for tally in totals)
    trusted_until = killed_at + PROPAGATION
    early = sum(tally.allowed_within(killed_at, trusted_until) for tally in totals[:3])
    wrong = sum(tally.allowed_within(trusted_until, last_all_old) for tally in totals[:3])
    revoked_allowed = sum(tally.ok for tally in totals[3:])
    where = [
        f"{name} +{began - killed_at:.3f}..{done - killed_at:.3f} s"
        for name, tally in zip(("A", "B", "nginx"), totals, strict=False)
        for began, done in tally.allowed
        if began >= killed_at and done <= last_all_old
    ]
    statuses: dict[int, int] = {}
    for tally in totals:
        for status, n in tally.statuses.items():
            statuses[status] = statuses.get(status, 0) + n
    errors = sum(tally.errors for tally in totals)
    figure(
        "Redis primary killed",
        f"failover {promoted_at - killed_at:.2f} s "
        f"(no primary for {last_all_old - killed_at:.2f} s), "
        f"cookie works on both hosts after {recovered_at - killed_at:.2f} s; {sent} requests "
        f"sent, {wrong} wrongly allowed while no primary after the first second, "
        f"{early} allowed from a cache within it, {revoked_allowed} for the revoked session; "
        f"statuses {statuses}, {errors} connection errors"
        + (f"; allowed while no primary: {where}" if where else ""),
    )
    assert recovered is not None, "the cookie did not work again on both hosts"
    assert last_all_old > trusted_until, "the failover was too quick to check the caches"
    assert wrong == 0, where
    assert revoked_allowed == 0
    assert cluster.through_proxy("app", cookie=cookie).status == 200
    # the new primary carries on: sign-in, and logout reaching the other host
    delay = logout_delay(a, b, "erin")
    assert delay is not None
    figure("logout on A -> refused on B, after the failover", f"{delay * 1000:.0f} ms")
    assert delay < PROPAGATION


def test_postgres_stopped_and_started(cluster: HaCluster) -> None:
    """PostgreSQL down: a fresh second factor fails closed on both hosts (the TOTP API
    answers an error, the two_factor site never 200); back up: it works, with no restart,
    and nothing was lost (gina's ban, frank's device)."""
    a, b, pg = cluster.a, cluster.b, cluster.pg
    secret = cluster.totp_secrets["frank"]
    for _ in range(3):
        assert a.sign_in("gina", "not gina's password").status == 401
    assert b.sign_in("gina").status == 401
    cookies = {host.name: signed_in(host, "frank") for host in (a, b)}
    pg.stop()
    stopped_at = time.monotonic()
    try:
        probe_started = time.monotonic()
        down = second_factor(a, cookies["A"], totp(secret, 1))
        probe_seconds = time.monotonic() - probe_started

        def attempt(host: Host) -> t.Callable[[], int]:
            return lambda: second_factor(host, cookies[host.name], totp(secret, 1)).status

        def site(host: Host) -> t.Callable[[], int]:
            return lambda: host.verify("secure", cookies[host.name])

        loads = [
            Load(attempt(a), threads=1, pause=0.05),
            Load(attempt(b), threads=1, pause=0.05),
            Load(site(a), threads=1),
            Load(site(b), threads=1),
            Load(lambda: cluster.through_proxy("secure", cookie=cookies["A"]).status, threads=1),
        ]
        one_factor = Load(lambda: b.verify("app", cookies["B"]), threads=1)
        for load in (*loads, one_factor):
            load.__enter__()
        time.sleep(3.0)
        for load in (*loads, one_factor):
            load.__exit__(None, None, None)
    finally:
        restart_at = time.monotonic()
        pg.start()
    totals = [load.total() for load in loads]
    sent = sum(tally.sent for tally in totals)
    wrong = sum(tally.ok for tally in totals)
    api_statuses = {**totals[0].statuses}
    for status, n in totals[1].statuses.items():
        api_statuses[status] = api_statuses.get(status, 0) + n
    upgraded: list[str] = []

    def passes() -> bool:
        reply = second_factor(b, cookies["B"], totp(secret, 1))
        if reply.status == 200:
            upgraded.append(cookie_of(reply))
        return reply.status == 200

    recovered = until(passes, RECOVERY, step=0.1)
    after = time.monotonic() - restart_at
    figure(
        "PostgreSQL stopped",
        f"down {restart_at - stopped_at:.1f} s; {sent} requests sent, {wrong} wrongly allowed; "
        f"TOTP API statuses {api_statuses} (first in {probe_seconds * 1000:.0f} ms); "
        f"one-factor site meanwhile {one_factor.total().statuses}; second factor works "
        f"again {after:.2f} s after the restart began",
    )
    assert down.status >= 400, down.body
    assert wrong == 0
    assert 200 not in api_statuses
    assert recovered is not None, "the second factor did not work again after PostgreSQL came back"
    # the session B upgraded (under a new id) opens the two_factor site on both hosts
    assert a.verify("secure", upgraded[0]) == 200
    assert b.verify("secure", upgraded[0]) == 200
    assert cluster.through_proxy("secure", cookie=upgraded[0]).status == 200
    # nothing lost: gina is still banned, on both hosts
    assert b.sign_in("gina").status == 401
    assert a.sign_in("gina").status == 401


def test_host_a_killed_b_keeps_serving(cluster: HaCluster) -> None:
    """SIGKILL host A: nginx sends everything to B, which keeps serving sessions A made."""
    a, b = cluster.a, cluster.b
    cookie = signed_in(a, "alice")
    load = Load(lambda: cluster.through_proxy("app", cookie=cookie).status, threads=2)
    with load:
        time.sleep(0.3)
        killed_at = time.monotonic()
        a.kill()
        time.sleep(1.0)
    total = load.total()
    after = [done for began, done in total.allowed if began >= killed_at]
    figure(
        "host A killed",
        f"{total.sent} requests through nginx, statuses {total.statuses}, "
        f"{total.errors} connection errors, {len(after)} answered 200 after the kill",
    )
    assert after, "nothing was served after host A died"
    for _ in range(10):
        reply = cluster.through_proxy("app", cookie=cookie)
        assert reply.status == 200
        assert ("remote-user", "alice") in reply.echoed()
    assert cluster.through_proxy("app").status == 302
    assert b.verify("app", cookie) == 200
    fresh = signed_in(b, "alice")
    assert cluster.through_proxy("app", cookie=fresh).status == 200


def test_docs_config_is_the_tested_one(cluster: HaCluster) -> None:
    """docs/many-hosts.md's config block is what the hosts run (ports and names aside)."""
    text = (cluster.b.folder / "authctl.toml").read_text(encoding="utf-8")
    assert 'backend = "postgres"' in text
    assert "[session.redis_sentinel]" in text
    assert Path(cluster.a.folder / "users.toml").exists()
