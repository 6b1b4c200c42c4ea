"""Reload ``authctl.toml`` without a restart (SIGHUP, or a change of the file when
``[server] watch_config`` is true; SPEC §7.4).

A reload reads and validates the whole file again. A file that does not validate is not
applied: every problem is logged with its file, key and line, and the last good config keeps
serving. Of a valid file, what can change live (rules, cookie domains' redirects, regulation,
session lifetimes, notifier, password policy, branding, ...) is applied to the next request;
a changed key that needs a restart (listener, threads, stores, users file, logging,
telemetry) is logged as such and keeps its running value (:func:`merge`). Every key of
:class:`~server.core.config.Config` is classified in :data:`RESTART_ONLY` or :data:`LIVE`; a
key in neither is treated as needing a restart (the safe side), and a test fails until it is
classified.

Applying is the caller's (``apply``: ``App.reload`` in a serving process builds the new
collaborators whole and swaps one reference). :class:`Reloader` runs the reloads in a thread
of its own, one at a time, coalescing requests that pile up; :class:`Watcher` polls the
file's ``stat`` (mtime, size, inode) once a second, so an editor's rename-over counts too.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from server.core import audit
from server.core import metrics
from server.core.config import Config
from server.core.config import parse_config
from server.core.errors import ConfigError
from server.core.errors import Problem
from server.core.regex import Regex
from server.core.tomlpos import locate
from server.core.tomlread import read_toml

log = logging.getLogger("authctl.reload")

#: Keys (``table.field`` of :class:`Config`) whose new value needs a restart: the listener
#: and its threads, the stores and their connections, the users file, logging, telemetry.
RESTART_ONLY: dict[str, tuple[str, ...]] = {
    "server": ("address", "threads", "shutdown_grace", "inline_authz", "watch_config"),
    "users": ("file", "watch", "password_hash"),
    "storage": ("backend", "path", "encryption_key_file", "postgres"),
    "session": ("store", "redis_url", "redis_password_file", "redis_sentinel"),
    "log": ("level", "format", "audit_file"),
    "telemetry": ("metrics",),
}
#: Keys applied to the next request after a reload.
LIVE: dict[str, tuple[str, ...]] = {
    "server": ("trusted_proxies",),
    "session": ("cookies", "name", "same_site", "expiration", "inactivity", "remember_me"),
    "totp": ("issuer", "algorithm", "digits", "period", "skew"),
    "regulation": ("max_retries", "find_time", "ban_time", "modes"),
    "notifier": ("filesystem", "smtp"),
    "password_policy": ("min_length", "max_length", "check_common"),
    "access_control": ("default_policy", "networks", "rules"),
    "portal": (
        "title", "logo_file", "custom_css_file", "theme", "logo_type", "logo", "custom_css",
    ),
    # live as long as what reads them is built per config (``server.web.app._build``)
    "identity_providers": ("oidc",),
    "webauthn": (
        "enable", "display_name", "rp_id", "attestation", "user_verification", "timeout",
        "passkey_login", "passkey_uv_two_factor",
    ),
}  # fmt: skip
#: Fields that only restate another key (``server.address`` is also split into host, port
#: or unix socket); they follow the key they come from.
DERIVED: dict[str, dict[str, tuple[str, ...]]] = {
    "server": {"address": ("host", "port", "unix_socket")},
}
#: Seconds between two looks at the file's ``stat`` when ``watch_config`` is on.
WATCH_INTERVAL = 1.0

Stamp = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a reload found: the config to apply (None: the file is invalid, ``problems``
    says why), the restart-only keys that changed (kept at their running value, one
    warning each) and the live keys that changed."""

    config: Config | None
    problems: tuple[Problem, ...] = ()
    restart: tuple[Problem, ...] = ()
    live: tuple[str, ...] = ()


def _tables(config: Config) -> list[str]:
    return [f.name for f in dataclasses.fields(config) if f.name != "path"]


def unclassified(config: Config) -> list[str]:
    """The ``table.field`` keys of ``config`` in neither :data:`RESTART_ONLY`, :data:`LIVE`
    nor :data:`DERIVED` (they are treated as needing a restart)."""
    out = []
    for table in _tables(config):
        known = {
            *RESTART_ONLY.get(table, ()),
            *LIVE.get(table, ()),
            *(d for ds in DERIVED.get(table, {}).values() for d in ds),
        }
        out += [
            f"{table}.{f.name}"
            for f in dataclasses.fields(getattr(config, table))
            if f.name not in known
        ]
    return out


def _plain(value: object) -> object:
    """``value`` in a form ``==`` compares by content (a compiled rule regex compares by
    identity; its pattern text is what was written)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return tuple(_plain(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, tuple | list):
        return tuple(_plain(v) for v in value)
    if isinstance(value, Regex):
        return ("regex", value.pattern)
    return value


def changed_keys(old: Config, new: Config) -> list[str]:
    """The ``table.field`` keys whose value differs between ``old`` and ``new`` (a derived
    field counts as its source key), in the order of the dataclasses."""
    out: list[str] = []
    for table in _tables(new):
        before, after = getattr(old, table), getattr(new, table)
        if _plain(before) == _plain(after):
            continue
        derived = {d: src for src, ds in DERIVED.get(table, {}).items() for d in ds}
        for f in dataclasses.fields(after):
            if _plain(getattr(before, f.name)) != _plain(getattr(after, f.name)):
                key = f"{table}.{derived.get(f.name, f.name)}"
                if key not in out:
                    out.append(key)
    return out


def needs_restart(key: str) -> bool:
    """Whether a change of ``key`` (``table.field``) waits for a restart."""
    table, _, name = key.partition(".")
    return name not in LIVE.get(table, ())  # unclassified keys wait for a restart too


def merge(old: Config, new: Config, text: str = "") -> Outcome:
    """``new`` with every restart-only key kept at its value in ``old``; ``text`` (the new
    file) gives each kept key's line."""
    keys = changed_keys(old, new)
    kept = [k for k in keys if needs_restart(k)]
    applied = new
    for table in dict.fromkeys(k.partition(".")[0] for k in kept):
        names = [k.partition(".")[2] for k in kept if k.startswith(f"{table}.")]
        for name in list(names):
            names += DERIVED.get(table, {}).get(name, ())
        before = getattr(old, table)
        section = dataclasses.replace(
            getattr(applied, table), **{n: getattr(before, n) for n in names}
        )
        applied = dataclasses.replace(applied, **{table: section})
    restart = tuple(
        Problem(
            new.path,
            key,
            "changed, but this key needs a restart; the running value is kept",
            "restart authctl (systemctl restart authctl) to apply it",
            locate(text, key) if text else None,
            severity="warning",
        )
        for key in kept
    )
    live = tuple(k for k in keys if not needs_restart(k))
    return Outcome(applied, restart=restart, live=live)


def read_new(path: Path, current: Config) -> Outcome:
    """Read and validate the file at ``path`` for a reload of ``current`` (:func:`merge`);
    an invalid file gives an Outcome without config and with every problem."""
    try:
        text, data = read_toml(path)
        new = parse_config(text, data, path)
    except ConfigError as exc:
        return Outcome(None, problems=tuple(exc.problems))
    return merge(current, new, text)


def stamp(path: Path) -> Stamp | None:
    """The file's (mtime in ns, size, inode) following symlinks; None when it cannot be
    stat'ed (a rename in progress)."""
    try:
        st = os.stat(path)  # noqa: PTH116 - one stat, no Path object per poll
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _fields(problem: Problem) -> dict[str, object]:
    return {"file": str(problem.file), "key": problem.key, "line": problem.line}


class Reloader:
    """Reloads ``config``'s file on request, in a thread of its own, one reload at a time.

    ``apply(config)`` puts a validated config (restart-only keys kept) in force; if it
    raises, the reload failed and the last good config stays. ``report``: log each problem
    and restart-only key at their level; a ``--workers`` worker passes False (DEBUG), because
    its parent validates the same file and reports once (a worker still logs a failure of its
    own ``apply``). ``count``: count each result in ``authctl_config_reload_total``; with
    ``--workers`` only the parent, which reports, counts (``metrics.ReloadCounter``), so one
    reload counts once (a worker's own failure to apply is logged, not counted).
    ``loaded``: the file's :func:`stamp` when ``config`` was read; :meth:`start` reloads at
    once if the file changed since.
    """

    def __init__(
        self,
        config: Config,
        apply: Callable[[Config], None],
        *,
        loaded: Stamp | None = None,
        report: bool = True,
        count: bool = True,
        name: str = "",
    ) -> None:
        self.config = config
        self.apply = apply
        self.report = report
        self.count = count
        self.name = name
        self.loaded = loaded
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        #: Results so far: ``success`` and ``failure`` counts (tests and logs).
        self.results = {"success": 0, "failure": 0}

    def request(self) -> None:
        """Ask for a reload (the hangup callback, the watcher); returns at once. Requests
        made while a reload runs give one more reload after it."""
        self._wanted.set()

    def start(self) -> None:
        """Run the reload thread; reload now if the file changed since ``loaded``."""
        if self.loaded is not None and stamp(self.config.path) != self.loaded:
            self.request()
        self._thread = threading.Thread(target=self._run, name="authctl-reload", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            try:
                self.reload()
            except Exception:  # pragma: no cover - reload logs its own failures
                log.exception("config reload failed")

    def reload(self) -> bool:
        """Read, validate and apply the file now; True when a new config is in force."""
        with self._lock:
            return self._reload()

    def _reload(self) -> bool:
        path = self.config.path
        started = time.monotonic()
        now_stamp = stamp(path)
        outcome = read_new(path, self.config)
        who = f" ({self.name})" if self.name else ""
        if outcome.config is None:
            self.loaded = now_stamp
            self._failed(outcome.problems, who)
            return False
        level = logging.WARNING if self.report else logging.DEBUG
        for problem in outcome.restart:
            log.log(level, "config reload%s: %s", who, problem, extra={"fields": _fields(problem)})
        try:
            self.apply(outcome.config)
        except Exception as exc:
            self.loaded = now_stamp
            log.error(
                "config reload%s: %s is valid but could not be applied (%s: %s); the last "
                "good config keeps serving",
                who,
                path,
                type(exc).__name__,
                exc,
                exc_info=not isinstance(exc, ValueError),
            )
            self._count("failure")
            self._audit("failure", "not_applied")
            return False
        self.config = outcome.config
        self.loaded = now_stamp
        changed = ", ".join(outcome.live) or "nothing"
        log.log(
            logging.INFO if self.report else logging.DEBUG,
            "config reloaded%s from %s in %.0f ms: changed %s",
            who,
            path,
            (time.monotonic() - started) * 1000,
            changed,
            extra={"fields": {"file": str(path), "changed": list(outcome.live)}},
        )
        self._count("success")
        self._audit("success", "reloaded")
        return True

    def _failed(self, problems: tuple[Problem, ...], who: str) -> None:
        level = logging.ERROR if self.report else logging.DEBUG
        log.log(
            level,
            "config reload%s: %s is invalid (%d problems); not applied, the last good config "
            "keeps serving",
            who,
            self.config.path,
            len(problems),
        )
        for problem in problems:
            log.log(level, "config reload%s: %s", who, problem, extra={"fields": _fields(problem)})
        self._count("failure")
        self._audit("failure", "invalid_config")

    def _audit(self, result: str, reason: str) -> None:
        """One ``config_reload`` line in the audit log, by the process that reports."""
        if self.report:
            audit.emit("config_reload", user=None, ip=None, result=result, reason=reason)

    def _count(self, result: metrics.ReloadResult) -> None:
        self.results[result] += 1
        if self.count:
            metrics.config_reload(result)


class Watcher:
    """Polls ``path``'s :func:`stamp` every ``interval`` seconds in a daemon thread and calls
    ``on_change()`` when it differs from the last one seen (a file that vanished and came
    back with other content counts too)."""

    def __init__(
        self,
        path: Path,
        on_change: Callable[[], None],
        *,
        interval: float = WATCH_INTERVAL,
        initial: Stamp | None = None,
    ) -> None:
        self.path = path
        self.on_change = on_change
        self.interval = interval
        self.last = initial if initial is not None else stamp(path)
        self._stop = threading.Event()

    def check(self) -> bool:
        """Look once; True (and ``on_change()`` called) when the file changed."""
        now = stamp(self.path)
        if now is None or now == self.last:  # missing: wait for it to come back
            return False
        self.last = now
        self.on_change()
        return True

    def start(self) -> None:
        threading.Thread(target=self._run, name="authctl-watch-config", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # pragma: no cover - on_change logs its own failures
                log.exception("watching the config file failed")
