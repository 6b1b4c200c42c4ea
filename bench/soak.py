"""Soak: verify under load while the CLI edits users; nothing wrongly allowed, nothing lost.

A script that judges correctness under load, not speed (``bench/run.py`` measures speed). It
starts a real ``authctl serve`` (SQLite sessions, optionally ``--workers 2``) on a fresh
folder, creates users with ``authctl user add``, signs them in through ``POST
/api/firstfactor``, and then, for ``--seconds``:

* ``--connections`` keep-alive clients (threads, raw sockets) send forward-auth verifies: a
  user's newest session cookie, older cookies (many of them revoked), anonymous requests to
  protected hosts, and anonymous requests to a bypass host;
* ``--editors`` edit loops run real CLI commands, one every ``--interval`` seconds each
  (``user add/disable/enable/passwd/groups/remove``) on users they own, sign the user in
  again after ``add``, ``enable`` and ``passwd``, and keep the state every user must have.

Every answer is then judged against the times the CLI commands were started and returned.
SPEC §3.3: a disabled or removed user or a password change ends the user's sessions, and the
server sees a change of the users file within one second (``RELOAD_BOUND``). So a 200 for a
cookie is **wrongly allowed** when the request was *sent* more than ``RELOAD_BOUND`` after
the CLI command that ended its session returned (a re-enabled or re-added user does not bring
an old session back), when it names another user, or when ``admins.example.com`` (group
``admins`` only) allows a user who left the group more than ``RELOAD_BOUND`` before. An
anonymous request to a protected host must never get a 200. At the end ``authctl user list
--json`` must hold every user exactly as the edit loops believe it is (else: **lost users**).

Must be 0: wrongly allowed, 5xx, lost users, failed CLI commands, stale ``Remote-Groups``,
connection errors (unless a fault such as ``--kill-worker`` was injected) and, with
``--workers``, workers missing at the end. The exit status is 1 when one of them is not 0, 2
when the soak could not be set up. Also reported: live cookies refused (**wrongly denied**,
fail-closed but wrong), judged from ``RELOAD_BOUND`` after the edit that allowed the login.
Latencies are measured by the Python clients, so p50/p99 include their own GIL waits: they
show trends between runs, ``bench/run.py`` (wrk) gives the real figures.

    .venv/bin/python bench/soak.py                          # 60 s, 50 connections
    .venv/bin/python bench/soak.py --workers 2 --kill-worker
    .venv/bin/python bench/soak.py --seconds 5 --connections 8 --json   # the CI form
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
from collections import Counter
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from run import AUTHCTL  # noqa: E402  (bench/ is a folder of scripts)
from run import PORTAL_HEADERS  # noqa: E402
from run import Service  # noqa: E402
from run import start_authctl  # noqa: E402
from run import write_site  # noqa: E402

#: SPEC §3.3: the server sees a change of the users file within one second.
RELOAD_BOUND = 1.0
#: A disabled or removed user stays so this long before the loop enables or re-adds it, so
#: the server has seen the change (and ended the sessions) before it is undone.
QUIET = RELOAD_BOUND + 0.5
GROUPS = ("admins", "dev", "ops")
VERIFY_PATH = "/api/authz/forward-auth"
APP, ADMINS, PUBLIC = "app.example.com", "admins.example.com", "public.example.com"
CHEAP_HASH = "password_hash = { memory_kib = 8, iterations = 1, parallelism = 1 }"

# Request kinds.
COOKIE_APP, COOKIE_ADMINS, ANON_APP, ANON_ADMINS, ANON_PUBLIC = range(5)
KIND_NAMES = ("cookie app", "cookie admins", "anonymous app", "anonymous admins", "bypass")
KIND_HOSTS = (APP, ADMINS, APP, ADMINS, PUBLIC)

# --------------------------------------------------------------------------- the site


ADMINS_RULES = f"""\
[[access_control.rules]]
domain = "{ADMINS}"
subject = "group:admins"
policy = "one_factor"

[[access_control.rules]]
domain = "{ADMINS}"
policy = "deny"

"""


def write_soak_site(folder: Path, *, store: str = "sqlite", cheap_hash: bool = True) -> Path:
    """``bench/run.py``'s site (an empty users file) plus a group-only host.

    ``admins.example.com`` admits group ``admins`` only, so a group edit decides an answer;
    with ``cheap_hash`` new hashes are cheap, so CLI edits and logins cost little CPU (the
    soak is about state, not hashing; ``bench/run.py`` measures logins at full cost).
    """
    config = write_site(folder, store, "")
    text = config.read_text(encoding="utf-8")
    wildcard = '[[access_control.rules]]\ndomain = "*.example.com"'
    users = 'file = "users.toml"\n'
    if wildcard not in text or users not in text:
        raise RuntimeError("bench/run.py's CONFIG changed: update write_soak_site")
    text = text.replace(wildcard, ADMINS_RULES + wildcard)
    if cheap_hash:
        text = text.replace(users, users + CHEAP_HASH + "\n")
    config.write_text(text, encoding="utf-8")
    return config


# --------------------------------------------------------------------------- the model


@dataclass
class Cookie:
    """A session cookie the soak got from a login, and when an edit ended its session."""

    id: int
    user: str
    value: str
    born: float
    #: From when the server must allow it: a login right after ``enable`` or ``passwd`` can
    #: succeed on a worker that has read the change while another has not yet (within the
    #: reload bound), and that one may rightly refuse the new session until the bound.
    allowed_from: float = 0.0
    #: When the CLI command that ends the session started and returned (monotonic clock).
    dead_start: float | None = None
    dead_done: float | None = None
    dead_by: str = ""


@dataclass
class GroupsChange:
    """One change of a user's groups: the CLI command's start, its return, the new groups."""

    start: float
    done: float | None
    groups: frozenset[str]


@dataclass
class UserState:
    """What the users file must say about one user, as the edit loop believes it."""

    name: str
    password: str
    groups: set[str]
    exists: bool = True
    disabled: bool = False
    #: Enable or re-add only after this time (the server must have seen the change first).
    quiet_until: float = 0.0

    @property
    def displayname(self) -> str:
        """Fixed per user (the CLI cannot change it): a lost or mixed-up entry shows."""
        return f"Soak {self.name.title()}"

    @property
    def email(self) -> str:
        """Fixed per user, like the display name."""
        return f"{self.name}@example.com"


@dataclass
class Model:
    """Everything the clients and the editors share: users, cookies, group history.

    Lists are only appended to and dict entries only replaced, so client threads read them
    without the lock (the GIL makes each step atomic); editors write under ``lock``.
    """

    users: dict[str, UserState] = field(default_factory=dict)
    cookies: list[Cookie] = field(default_factory=list)
    newest: dict[str, int] = field(default_factory=dict)
    groups: dict[str, list[GroupsChange]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_user(self, state: UserState) -> None:
        """A user as created at set-up (its groups count from the beginning of time)."""
        self.users[state.name] = state
        self.groups[state.name] = [GroupsChange(-1e9, -1e9, frozenset(state.groups))]

    def add_cookie(
        self, user: str, value: str, born: float, allowed_from: float | None = None
    ) -> Cookie:
        """Register a cookie from a login that returned at ``born``."""
        with self.lock:
            start = born if allowed_from is None else max(born, allowed_from)
            cookie = Cookie(len(self.cookies), user, value, born, start)
            self.cookies.append(cookie)
            self.newest[user] = cookie.id
            return cookie

    def kill_cookies(self, user: str, start: float, by: str) -> list[Cookie]:
        """Mark the user's live cookies as ending from ``start`` (the CLI command's start)."""
        with self.lock:
            killed = [c for c in self.cookies if c.user == user and c.dead_start is None]
            for cookie in killed:
                cookie.dead_start = start
                cookie.dead_by = by
            return killed


# --------------------------------------------------------------------------- judging

#: One answer: sent, received (monotonic), kind, cookie id (-1: none), status, Remote-User,
#: Remote-Groups (None when the header is absent).
Record = tuple[float, float, int, int, int, str | None, str | None]


def groups_states(history: list[GroupsChange], sent: float, received: float) -> set[frozenset[str]]:
    """The group sets the server may rightly answer with for a request sent/received then.

    The state that was settled ``RELOAD_BOUND`` before the request was sent, and every state
    of a change that had started by the time the answer came and returned at most
    ``RELOAD_BOUND`` before the request was sent (or has not returned yet).
    """
    horizon = sent - RELOAD_BOUND
    settled = [c for c in history if c.done is not None and c.done <= horizon]
    states = {max(settled, key=lambda c: c.done or 0.0).groups} if settled else set()
    for change in history:
        if change.start <= received and (change.done is None or change.done > horizon):
            states.add(change.groups)
    return states


def parse_groups(header: str | None) -> frozenset[str] | None:
    """``Remote-Groups`` as a set (order does not matter); None when the header is absent."""
    if header is None:
        return None
    return frozenset(g.strip() for g in header.split(",") if g.strip())


@dataclass
class Verdict:
    """The judged answers."""

    requests: int = 0
    by_kind: Counter[int] = field(default_factory=Counter)
    wrongly_allowed: int = 0
    server_errors: int = 0
    stale_groups: int = 0
    wrongly_denied: int = 0
    #: Live cookies refused within the reload bound after the edit that allowed them.
    denied_within_bound: int = 0
    #: Cookie id -> (first, last, count) of its wrong denials.
    denied: dict[int, tuple[float, float, int]] = field(default_factory=dict)
    unexpected: Counter[str] = field(default_factory=Counter)
    #: 200s for a revoked cookie sent after the CLI returned but within the reload bound.
    allowed_within_bound: int = 0
    max_revocation_lag: float = 0.0
    details: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Keep the first findings in words (all are counted)."""
        if len(self.details) < 20:
            self.details.append(text)


def history(edits: Iterable[Edit], user: str, before: float, t0: float) -> str:
    """The user's last CLI commands started before ``before``, with their times."""
    mine = [e for e in edits if e.user == user and e.start <= before][-3:]
    return "; ".join(
        f"`user {e.op}` t={e.start - t0:.3f}-{e.done - t0:.3f}s{'' if e.ok else ' FAILED'}"
        for e in mine
    )


def judge(
    records: Iterable[Record], model: Model, t0: float, edits: Iterable[Edit] = ()
) -> Verdict:
    """Judge every answer against the model (after the run: every time is known by then)."""
    edits = list(edits)
    v = Verdict()
    for sent, received, kind, cookie_id, status, remote_user, remote_groups in records:
        v.requests += 1
        v.by_kind[kind] += 1
        v.latencies_ms.append((received - sent) * 1000)
        at = f"t={sent - t0:.3f}s"
        if status >= 500:
            v.server_errors += 1
            v.note(f"{at} {KIND_NAMES[kind]}: {status}")
            continue
        if cookie_id < 0:
            _judge_anonymous(v, kind, status, remote_user, at)
            continue
        cookie = model.cookies[cookie_id]
        alive = cookie.dead_start is None or sent < cookie.dead_start
        if status != 200:
            if status in (302, 401) and alive and sent < cookie.allowed_from:
                v.denied_within_bound += 1
            elif status in (302, 401) and alive:
                v.wrongly_denied += 1
                first, last, count = v.denied.get(cookie.id, (sent, sent, 0))
                v.denied[cookie.id] = (min(first, sent), max(last, sent), count + 1)
            elif status not in (302, 401, 403) or (status == 403 and kind == COOKIE_APP):
                v.unexpected[f"{KIND_NAMES[kind]} {status}"] += 1
            continue
        wrong = v.wrongly_allowed
        _judge_allowed(v, model, cookie, kind, sent, received, remote_user, remote_groups, at)
        if v.wrongly_allowed > wrong and len(v.details) < 20:
            v.details[-1] += f" [{history(edits, cookie.user, sent, t0)}]"
    for cookie_id, (first, last, count) in sorted(v.denied.items()):
        cookie = model.cookies[cookie_id]
        v.note(
            f"{cookie.user}'s live cookie #{cookie_id} (login returned t={cookie.born - t0:.3f}s) "
            f"refused {count}x from t={first - t0:.3f}s to t={last - t0:.3f}s "
            f"[{history(edits, cookie.user, first, t0)}]"
        )
    return v


def _judge_anonymous(v: Verdict, kind: int, status: int, remote_user: str | None, at: str) -> None:
    if kind == ANON_PUBLIC:
        if status != 200:
            v.unexpected[f"bypass {status}"] += 1
        elif remote_user:
            v.wrongly_allowed += 1
            v.note(f"{at} bypass answered Remote-User {remote_user!r}")
    elif status == 200:
        v.wrongly_allowed += 1
        v.note(f"{at} {KIND_NAMES[kind]} without credentials: 200 (Remote-User {remote_user!r})")
    elif status not in (302, 401):
        v.unexpected[f"{KIND_NAMES[kind]} {status}"] += 1


def _judge_allowed(
    v: Verdict,
    model: Model,
    cookie: Cookie,
    kind: int,
    sent: float,
    received: float,
    remote_user: str | None,
    remote_groups: str | None,
    at: str,
) -> None:
    if remote_user != cookie.user:
        v.wrongly_allowed += 1
        v.note(f"{at} {cookie.user}'s cookie allowed as Remote-User {remote_user!r}")
        return
    if cookie.dead_done is not None and sent > cookie.dead_done:
        lag = sent - cookie.dead_done
        if lag > RELOAD_BOUND:
            v.wrongly_allowed += 1
            v.note(
                f"{at} {KIND_NAMES[kind]}: 200 for {cookie.user}'s cookie #{cookie.id}, "
                f"sent {lag:.3f}s after `{cookie.dead_by}` returned"
            )
            return
        v.allowed_within_bound += 1
        v.max_revocation_lag = max(v.max_revocation_lag, lag)
    states = groups_states(model.groups[cookie.user], sent, received)
    if kind == COOKIE_ADMINS and not any("admins" in s for s in states):
        v.wrongly_allowed += 1
        v.note(
            f"{at} {ADMINS}: 200 for {cookie.user}, out of group admins for more than "
            f"{RELOAD_BOUND:g}s (Remote-Groups {remote_groups!r})"
        )
        return
    if parse_groups(remote_groups) not in states:
        v.stale_groups += 1
        v.note(
            f"{at} {cookie.user}: Remote-Groups {remote_groups!r}, expected one of "
            f"{sorted(','.join(sorted(s)) for s in states)}"
        )


def lost_users(model: Model, listed: list[dict[str, t.Any]]) -> list[str]:
    """How the final ``user list --json`` differs from the model: one line per user."""
    found = {entry["username"]: entry for entry in listed}
    out = []
    for name, state in sorted(model.users.items()):
        entry = found.pop(name, None)
        if not state.exists:
            if entry is not None:
                out.append(f"{name}: removed, but still listed")
            continue
        if entry is None:
            out.append(f"{name}: missing")
            continue
        want = {
            "displayname": state.displayname,
            "email": state.email,
            "groups": sorted(state.groups),
            "disabled": state.disabled,
        }
        got = {**entry, "groups": sorted(entry.get("groups", []))}
        diff = [
            f"{key} {got.get(key)!r} != {value!r}"
            for key, value in want.items()
            if got.get(key) != value
        ]
        if diff:
            out.append(f"{name}: " + "; ".join(diff))
    out.extend(f"{name}: listed, but never added" for name in sorted(found))
    return out


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of ``values``, 0 when empty."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 10) - 1]


# --------------------------------------------------------------------------- the clients


def verify_request(port: int, host: str, cookie: str | None) -> bytes:
    """A proxy's forward-auth sub-request for ``https://host/``."""
    lines = [
        f"GET {VERIFY_PATH} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "X-Forwarded-Proto: https",
        f"X-Forwarded-Host: {host}",
        "X-Forwarded-Uri: /",
        "X-Forwarded-Method: GET",
        "Accept: text/html",
    ]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class ConnectionLost(Exception):
    """The server closed the connection or sent something that is not an HTTP answer."""


def read_answer(sock: socket.socket, buf: bytes) -> tuple[int, dict[str, str], bytes, bool]:
    """One HTTP/1.1 answer: status, headers (lower-case names), leftover bytes, keep-alive.

    Raises:
        ConnectionLost: end of stream before a whole answer, or no Content-Length.
    """
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionLost("closed before an answer" if not buf else "closed mid-answer")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise ConnectionLost(f"bad status line {lines[0]!r}") from None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" not in headers:
        raise ConnectionLost(f"answer {status} without Content-Length")
    length = int(headers["content-length"])
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            raise ConnectionLost("closed mid-body")
        rest += data
    keep = headers.get("connection", "").lower() != "close"
    return status, headers, rest[length:], keep


@dataclass
class Shared:
    """What the clients read and write besides the model."""

    port: int
    stop: threading.Event
    records: list[list[Record]]
    connection_errors: Counter[str] = field(default_factory=Counter)


def pick(rng: random.Random, model: Model) -> tuple[int, int, str | None]:
    """The next request: kind, cookie id (-1: none) and cookie header.

    Mix: 10 % bypass, 15 % anonymous to a protected host, 75 % a cookie (60 % of them a
    user's newest cookie, the rest any cookie ever issued, so revoked ones keep coming),
    30 % of the cookie requests to the admins-only host.
    """
    r = rng.random()
    if r < 0.10 or not model.cookies:
        return ANON_PUBLIC, -1, None
    if r < 0.25:
        return (ANON_APP if rng.random() < 0.6 else ANON_ADMINS), -1, None
    if rng.random() < 0.6 and model.newest:
        cookie = model.cookies[model.newest[rng.choice(list(model.newest))]]
    else:
        cookie = model.cookies[rng.randrange(len(model.cookies))]
    kind = COOKIE_ADMINS if rng.random() < 0.3 else COOKIE_APP
    return kind, cookie.id, cookie.value


def client(shared: Shared, model: Model, out: list[Record], seed: int) -> None:
    """One keep-alive connection sending verifies until ``stop``; reconnects when closed."""
    rng = random.Random(seed)  # noqa: S311 - a load mix, not a secret
    sock: socket.socket | None = None
    buf = b""
    while not shared.stop.is_set():
        kind, cookie_id, value = pick(rng, model)
        request = verify_request(shared.port, KIND_HOSTS[kind], value)
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", shared.port), timeout=30)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buf = b""
            sent = time.monotonic()
            sock.sendall(request)
            status, headers, buf, keep = read_answer(sock, buf)
            received = time.monotonic()
        except (OSError, ConnectionLost) as exc:
            shared.connection_errors[type(exc).__name__ + ": " + str(exc)[:60]] += 1
            if sock is not None:
                sock.close()
            sock = None
            time.sleep(0.01)
            continue
        out.append(
            (
                sent,
                received,
                kind,
                cookie_id,
                status,
                headers.get("remote-user"),
                headers.get("remote-groups"),
            )
        )
        if not keep:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()


# --------------------------------------------------------------------------- the CLI


@dataclass
class Edit:
    """One CLI command the editors ran."""

    op: str
    user: str
    start: float
    done: float
    ok: bool
    output: str


class Cli:
    """Runs ``authctl --config CONFIG user …`` and keeps a record of every command."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.edits: list[Edit] = []
        self.lock = threading.Lock()

    def run(self, op: str, user: str, *args: str, stdin: str | None = None) -> Edit:
        """Run ``authctl user OP USER ARGS`` and record its start and return times."""
        argv = [AUTHCTL, "--config", str(self.config), "user", op, user, *args]
        start = time.monotonic()
        try:
            done_proc = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=60, check=False
            )
            ok, output = done_proc.returncode == 0, (done_proc.stdout + done_proc.stderr).strip()
        except subprocess.TimeoutExpired:
            ok, output = False, "did not return within 60 s"
        edit = Edit(op, user, start, time.monotonic(), ok, output)
        with self.lock:
            self.edits.append(edit)
        return edit

    def show(self, user: str) -> dict[str, t.Any] | None:
        """``authctl user show USER --json``; None when there is no such user (exit 3)."""
        done = subprocess.run(
            [AUTHCTL, "--config", str(self.config), "user", "show", user, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode == 3:
            return None
        if done.returncode != 0:
            raise RuntimeError(f"user show {user} failed: {done.stderr.strip()}")
        shown: dict[str, t.Any] = json.loads(done.stdout)
        return shown

    def failures(self) -> list[Edit]:
        """The commands that did not exit 0."""
        return [e for e in self.edits if not e.ok]

    def list_users(self) -> list[dict[str, t.Any]]:
        """``authctl user list --json``."""
        done = subprocess.run(
            [AUTHCTL, "--config", str(self.config), "user", "list", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        listed: list[dict[str, t.Any]] = json.loads(done.stdout)
        return listed


def add_args(state: UserState) -> list[str]:
    """``user add`` options for the user's fixed display name, e-mail and groups."""
    args = ["--displayname", state.displayname, "--email", state.email, "--password-stdin"]
    for group in sorted(state.groups):
        args += ["--group", group]
    return args


def login(port: int, user: str, password: str) -> tuple[int, str]:
    """POST /api/firstfactor (the README's curl example); the status and the cookie."""
    import http.client

    body = json.dumps({"username": user, "password": password}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/api/firstfactor", body=body, headers=PORTAL_HEADERS)
        resp = conn.getresponse()
        resp.read()
        return resp.status, (resp.getheader("Set-Cookie") or "").split(";", 1)[0]
    except (OSError, http.client.HTTPException):
        return 0, ""  # no answer (a killed worker): the caller retries
    finally:
        conn.close()


class Editor:
    """One edit loop over the users it owns: a random valid CLI edit every ``interval``."""

    def __init__(
        self,
        names: list[str],
        model: Model,
        cli: Cli,
        port: int,
        seed: int,
    ) -> None:
        self.names = names
        self.model = model
        self.cli = cli
        self.port = port
        self.rng = random.Random(seed)  # noqa: S311 - a load mix, not a secret
        self.logins = 0
        #: Exceptions that ended an edit (the soak's own trouble: it fails the run).
        self.errors: list[str] = []
        #: Logins refused within the reload bound after the edit that allows them (retried).
        self.early_logins = 0
        self.login_failures: list[str] = []

    def sign_in(self, state: UserState, edited: float | None = None) -> None:
        """A fresh session for the user, registered when the login returned.

        ``edited``: when the CLI command that made the login possible (add, enable, passwd)
        returned. Until the reload bound has passed the server may rightly still refuse it,
        so the login is retried until then; only a refusal after the bound is a failure.
        """
        unanswered = 0
        while True:
            status, cookie = login(self.port, state.name, state.password)
            self.logins += 1
            if status == 200 and cookie:
                after = None if edited is None else edited + RELOAD_BOUND
                self.model.add_cookie(state.name, cookie, time.monotonic(), after)
                return
            if status == 0 and unanswered < 3:
                unanswered += 1
                continue
            if edited is None or time.monotonic() > edited + RELOAD_BOUND:
                self.login_failures.append(f"{state.name}: login answered {status}")
                return
            self.early_logins += 1
            time.sleep(0.1)

    def choose(self, state: UserState, now: float) -> str | None:
        """A random edit that is valid for the user now (None: nothing to do yet)."""
        if not state.exists:
            return "add" if now >= state.quiet_until else None
        if state.disabled:
            ops = ["groups", "remove"] + (["enable"] * 3 if now >= state.quiet_until else [])
        else:
            ops = ["disable", "disable", "passwd", "groups", "groups", "groups", "remove"]
        return self.rng.choice(ops)

    def step(self) -> bool:
        """One edit on a random owned user; False when none had a valid edit."""
        now = time.monotonic()
        order = self.names[:]
        self.rng.shuffle(order)
        for name in order:
            state = self.model.users[name]
            op = self.choose(state, now)
            if op is not None:
                getattr(self, "do_" + op)(state)
                return True
        return False

    def resync(self, state: UserState) -> None:
        """After a failed command, believe the users file (the failure itself is counted)."""
        shown = self.cli.show(state.name)
        state.exists = shown is not None
        if shown is not None:
            state.disabled = bool(shown["disabled"])
            state.groups = set(shown["groups"])
            self.model.groups[state.name].append(
                GroupsChange(time.monotonic(), time.monotonic(), frozenset(state.groups))
            )

    def do_add(self, state: UserState) -> None:
        state.password = secrets.token_urlsafe(12)
        state.groups = {g for g in GROUPS if self.rng.random() < 0.5}
        edit = self._groups_edit(state, "add", add_args(state), stdin=state.password + "\n")
        state.exists, state.disabled = True, False
        if edit.ok:
            self.sign_in(state, edit.done)
        else:
            self.resync(state)

    def do_disable(self, state: UserState) -> None:
        state.disabled = True
        if not self._ending_edit(state, "disable").ok:
            self.resync(state)

    def do_enable(self, state: UserState) -> None:
        state.disabled = False
        edit = self.cli.run("enable", state.name)
        if edit.ok:
            self.sign_in(state, edit.done)
        else:
            self.resync(state)

    def do_passwd(self, state: UserState) -> None:
        new = secrets.token_urlsafe(12)
        edit = self._ending_edit(state, "passwd", stdin=new + "\n", args=("--password-stdin",))
        if edit.ok:
            state.password = new
            self.sign_in(state, edit.done)
        else:
            self.resync(state)

    def do_remove(self, state: UserState) -> None:
        state.exists = False
        if not self._ending_edit(state, "remove").ok:
            self.resync(state)

    def do_groups(self, state: UserState) -> None:
        group = "admins" if self.rng.random() < 0.6 else self.rng.choice(GROUPS)
        leave = group in state.groups
        flag = "--remove" if leave else "--add"
        state.groups = state.groups - {group} if leave else state.groups | {group}
        if not self._groups_edit(state, "groups", [flag, group]).ok:
            self.resync(state)

    def _groups_edit(
        self, state: UserState, op: str, args: list[str], stdin: str | None = None
    ) -> Edit:
        """A command that sets the user's groups to ``state.groups``, kept in the history."""
        change = GroupsChange(time.monotonic(), None, frozenset(state.groups))
        history = self.model.groups[state.name]
        history.append(change)
        edit = self.cli.run(op, state.name, *args, stdin=stdin)
        change.start = edit.start
        change.done = edit.done
        return edit

    def _ending_edit(
        self, state: UserState, op: str, stdin: str | None = None, args: tuple[str, ...] = ()
    ) -> Edit:
        """A command that ends the user's sessions: its cookies die when it returns."""
        start = time.monotonic()
        killed = self.model.kill_cookies(state.name, start, f"user {op} {state.name}")
        edit = self.cli.run(op, state.name, *args, stdin=stdin)
        for cookie in killed:
            # failed: the sessions may live on, so no answer for them can be judged wrong
            cookie.dead_done = edit.done if edit.ok else None
        state.quiet_until = edit.done + QUIET
        return edit

    def loop(self, stop: threading.Event, interval: float) -> None:
        """Edit until ``stop``; a failed command is recorded, and the loop goes on."""
        while not stop.is_set():
            try:
                stepped = self.step()
            except Exception as exc:  # reported (a failure), and the loop goes on
                self.errors.append(f"{type(exc).__name__}: {exc}")
                stepped = True
            stop.wait(interval if stepped else 0.05)


# --------------------------------------------------------------------------- faults


@dataclass
class Fault:
    """Something done to the server once, ``at`` a fraction of the run.

    A fault makes connection errors expected (they are reported, not failures); every other
    must-be-0 count stays a failure. Add one: a function ``(server) -> description`` and an
    entry in ``faults_from``.
    """

    name: str
    at: float
    apply: Callable[[Service], str]
    description: str = ""


def children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def kill_worker(server: Service) -> str:
    """SIGKILL one worker of ``serve --workers N`` (the parent must start a new one)."""
    workers = children(server.pid)
    if not workers:
        return "no worker to kill"
    os.kill(workers[0], signal.SIGKILL)
    return f"SIGKILLed worker {workers[0]} of {len(workers)}"


def faults_from(args: argparse.Namespace) -> list[Fault]:
    """The faults asked for on the command line."""
    faults = []
    if args.kill_worker:
        faults.append(Fault("kill-worker", 0.5, kill_worker))
    return faults


# --------------------------------------------------------------------------- the run


@dataclass
class Result:
    """Everything the summary prints."""

    args: argparse.Namespace
    seconds: float
    verdict: Verdict
    lost: list[str]
    cli: Cli
    editors: list[Editor]
    connection_errors: Counter[str]
    faults: list[Fault]
    cookies: list[Cookie]
    server_log_errors: list[str]
    #: Workers that ``serve --workers N`` lacked at the end (a killed one must be replaced).
    missing_workers: int = 0

    @property
    def must_be_zero(self) -> dict[str, int]:
        """The counts that fail the soak."""
        counts = {
            "wrongly allowed": self.verdict.wrongly_allowed,
            "5xx": self.verdict.server_errors,
            "lost users": len(self.lost),
            "failed CLI commands": len(self.cli.failures()),
            "stale Remote-Groups": self.verdict.stale_groups,
            "soak errors": sum(len(e.errors) for e in self.editors),
        }
        if not self.faults:
            counts["connection errors"] = sum(self.connection_errors.values())
        if self.args.workers > 1:
            counts["missing workers at the end"] = self.missing_workers
        return counts

    @property
    def ok(self) -> bool:
        """True when every must-be-0 count is 0."""
        return not any(self.must_be_zero.values())


def setup_users(model: Model, cli: Cli, count: int, rng: random.Random) -> None:
    """Create ``count`` users with the CLI, four commands at a time (the file lock's job)."""
    states = [
        UserState(
            f"user{i:02d}",
            secrets.token_urlsafe(12),
            {g for g in GROUPS if rng.random() < 0.5},
        )
        for i in range(count)
    ]
    pending = list(states)
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if not pending:
                    return
                state = pending.pop()
            cli.run("add", state.name, *add_args(state), stdin=state.password + "\n")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failed := cli.failures():
        raise RuntimeError(f"user add {failed[0].user} failed: {failed[0].output}")
    for state in states:
        model.add_user(state)
    cli.edits.clear()  # set-up is not part of the soak's edits


def soak(args: argparse.Namespace, work: Path) -> Result:
    """Set up, run clients, editors and faults for ``args.seconds``, then judge."""
    rng = random.Random(args.seed)  # noqa: S311 - reproducible with --seed
    config = write_soak_site(work / "site", store=args.store, cheap_hash=not args.real_hash)
    cli = Cli(config)
    model = Model()
    setup_users(model, cli, args.users, rng)
    log = work / "serve.log"
    server = start_authctl("soak", config, log, workers=args.workers, cpu=None)
    try:
        return run_soak(args, server, model, cli, log, rng)
    finally:
        server.stop()


def run_soak(
    args: argparse.Namespace,
    server: Service,
    model: Model,
    cli: Cli,
    log: Path,
    rng: random.Random,
) -> Result:
    """The timed part, with the server running."""
    names = sorted(model.users)
    edited = names[: max(0, len(names) - args.stable)]
    editors = [
        Editor(edited[i :: args.editors], model, cli, server.port, rng.randrange(2**32))
        for i in range(args.editors)
        if edited[i :: args.editors]
    ]
    signer = Editor(names, model, cli, server.port, 0)
    for name in names:
        signer.sign_in(model.users[name])
    if len(model.newest) != len(names):
        raise RuntimeError("set-up logins failed: " + "; ".join(signer.login_failures))
    stop = threading.Event()
    shared = Shared(server.port, stop, [[] for _ in range(args.connections)])
    threads = [
        threading.Thread(
            target=client, args=(shared, model, shared.records[i], rng.randrange(2**32))
        )
        for i in range(args.connections)
    ]
    threads += [
        threading.Thread(target=editor.loop, args=(stop, args.interval)) for editor in editors
    ]
    faults = faults_from(args)
    t0 = time.monotonic()
    for thread in threads:
        thread.start()
    for fault in sorted(faults, key=lambda f: f.at):
        stop.wait(max(0.0, t0 + fault.at * args.seconds - time.monotonic()))
        fault.description = f"t={time.monotonic() - t0:.1f}s {fault.apply(server)}"
    stop.wait(max(0.0, t0 + args.seconds - time.monotonic()))
    stop.set()
    elapsed = time.monotonic() - t0
    for thread in threads:
        thread.join(timeout=90)
    if server.proc.poll() is not None:
        raise RuntimeError(f"authctl serve exited with {server.proc.returncode} during the soak")
    missing = 0
    if args.workers > 1:
        # a replaced worker may still be starting: give it the time a start takes
        deadline = time.monotonic() + 10
        while (missing := max(0, args.workers - len(children(server.pid)))) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
    records = [r for per_client in shared.records for r in per_client]
    verdict = judge(records, model, t0, cli.edits)
    lost = lost_users(model, cli.list_users())
    log_errors = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if "ERROR" in line or "Traceback" in line
    ]
    return Result(
        args,
        elapsed,
        verdict,
        lost,
        cli,
        [signer, *editors],
        shared.connection_errors,
        faults,
        model.cookies,
        log_errors,
        missing,
    )


# --------------------------------------------------------------------------- output


def summary(result: Result) -> dict[str, t.Any]:
    """The machine-readable result (``--json``)."""
    v = result.verdict
    edits = result.cli.edits
    durations = [e.done - e.start for e in edits]
    return {
        "ok": result.ok,
        "seconds": round(result.seconds, 2),
        "connections": result.args.connections,
        "workers": result.args.workers,
        "users": result.args.users,
        "store": result.args.store,
        "seed": result.args.seed,
        "requests": v.requests,
        "rps": round(v.requests / result.seconds, 1) if result.seconds else 0.0,
        "p50_ms": round(percentile(v.latencies_ms, 50), 3),
        "p99_ms": round(percentile(v.latencies_ms, 99), 3),
        "requests_by_kind": {KIND_NAMES[k]: n for k, n in sorted(v.by_kind.items())},
        "wrongly_allowed": v.wrongly_allowed,
        "server_errors": v.server_errors,
        "lost_users": len(result.lost),
        "failed_cli": len(result.cli.failures()),
        "stale_groups": v.stale_groups,
        "connection_errors": sum(result.connection_errors.values()),
        "wrongly_denied": v.wrongly_denied,
        "wrongly_denied_cookies": len(v.denied),
        "denied_within_bound": v.denied_within_bound,
        "unexpected": sum(v.unexpected.values()),
        "unexpected_statuses": dict(v.unexpected),
        "edits": len(edits),
        "edits_by_op": dict(Counter(e.op for e in edits)),
        "cli_mean_s": round(statistics.fmean(durations), 3) if durations else 0.0,
        "cli_max_s": round(max(durations), 3) if durations else 0.0,
        "logins": sum(e.logins for e in result.editors),
        "login_failures": sum(len(e.login_failures) for e in result.editors),
        "logins_refused_within_bound": sum(e.early_logins for e in result.editors),
        "cookies": len(result.cookies),
        "revoked_cookies": sum(c.dead_done is not None for c in result.cookies),
        "allowed_within_bound": v.allowed_within_bound,
        "max_revocation_lag_s": round(v.max_revocation_lag, 3),
        "faults": [f"{f.name}: {f.description}" for f in result.faults],
        "must_be_zero": result.must_be_zero,
        "details": v.details
        + [f"lost: {line}" for line in result.lost]
        + [f"CLI failed: user {e.op} {e.user}: {e.output[:200]}" for e in result.cli.failures()]
        + [f"login failed: {f}" for e in result.editors for f in e.login_failures]
        + [f"editor error: {f}" for e in result.editors for f in e.errors]
        + [f"connection error x{n}: {what}" for what, n in result.connection_errors.items()],
        "server_log_errors": result.server_log_errors[:20],
    }


def table(data: dict[str, t.Any]) -> str:
    """The one summary table."""
    ops = ", ".join(f"{op} {n}" for op, n in sorted(data["edits_by_op"].items()))
    kinds = ", ".join(f"{k} {n}" for k, n in data["requests_by_kind"].items())
    rows = [
        f"authctl soak: {data['seconds']:.0f} s, {data['connections']} connections, "
        f"serve --workers {data['workers']}, {data['store']} store, {data['users']} users, "
        f"seed {data['seed']}",
        "",
        f"  {'requests':<34} {data['requests']:>9}   {data['rps']:.0f} req/s",
        f"  {'':<34} {'':>9}   ({kinds})",
        f"  {'verify latency p50 / p99':<34} {data['p50_ms']:>6.2f} ms / {data['p99_ms']:.2f} ms",
        f"  {'CLI edits':<34} {data['edits']:>9}   ({ops}); "
        f"{data['cli_mean_s']:.2f} s mean, {data['cli_max_s']:.2f} s max",
        f"  {'logins / failed':<34} {data['logins']:>9}   / {data['login_failures']} "
        f"({data['logins_refused_within_bound']} refused within the 1 s bound, retried)",
        f"  {'cookies issued / revoked':<34} {data['cookies']:>9}   / {data['revoked_cookies']}",
        f"  {'allowed within the 1 s bound':<34} {data['allowed_within_bound']:>9}   "
        f"(latest {data['max_revocation_lag_s']:.3f} s after the CLI returned)",
        f"  {'wrongly denied (live cookie)':<34} {data['wrongly_denied']:>9}   "
        f"({data['wrongly_denied_cookies']} cookies; {data['denied_within_bound']} more "
        "within the 1 s bound after enable/passwd)",
        f"  {'other unexpected statuses':<34} {data['unexpected']:>9}   "
        f"{data['unexpected_statuses'] or ''}",
    ]
    for fault in data["faults"]:
        rows.append(f"  {'fault':<34} {fault}")
    if data["faults"]:
        rows.append(
            f"  {'connection errors (fault)':<34} {data['connection_errors']:>9}   (not judged)"
        )
    rows.append("")
    rows.append("  must be 0")
    for name, count in data["must_be_zero"].items():
        rows.append(f"  {name:<34} {count:>9}   {'ok' if count == 0 else 'FAIL'}")
    if data["details"]:
        rows.append("")
        rows.append("  details")
        rows.extend(f"    {line}" for line in data["details"][:30])
    if data["server_log_errors"]:
        rows.append("")
        rows.append("  server log errors")
        rows.extend(f"    {line[:160]}" for line in data["server_log_errors"])
    rows.append("")
    rows.append("  result: " + ("OK" if data["ok"] else "FAIL"))
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the soak")
    parser.add_argument("--connections", type=int, default=50, help="keep-alive clients")
    parser.add_argument("--workers", type=int, default=1, help="serve --workers N")
    parser.add_argument(
        "--store", choices=("sqlite", "memory"), default="sqlite", help="session.store"
    )
    parser.add_argument("--users", type=int, default=12, help="users created with the CLI")
    parser.add_argument(
        "--stable", type=int, default=4, help="of those, users never edited (always valid)"
    )
    parser.add_argument("--editors", type=int, default=2, help="parallel CLI edit loops")
    parser.add_argument("--interval", type=float, default=0.5, help="pause between edits (s)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--real-hash", action="store_true", help="argon2id at the default cost (slow CLI, logins)"
    )
    parser.add_argument(
        "--kill-worker", action="store_true", help="SIGKILL one worker half-way (--workers >= 2)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (server log)")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = secrets.randbelow(2**31)
    if args.kill_worker and args.workers < 2:
        parser.error("--kill-worker needs --workers 2 or more")
    if args.store == "memory" and args.workers > 1:
        parser.error("--workers needs the shared sqlite store")
    if args.users <= args.stable or args.editors < 1 or args.connections < 1:
        parser.error("need --users > --stable, --editors >= 1 and --connections >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the soak, print the table (or JSON); 1 when a must-be-0 count is not 0."""
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="authctl-soak-"))
    try:
        result = soak(args, work)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        print(f"the soak could not run: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    data = summary(result)
    print(json.dumps(data, indent=2) if args.json else table(data))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
