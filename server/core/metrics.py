"""Prometheus metrics (SPEC §7.4) behind a tiny recording interface.

Code that counts calls this module's functions (``metrics.authn(...)``,
``metrics.config_reload("success")``) or the recorder :func:`active` returns, and never
sees prometheus_client. Until :func:`install` is given a :class:`Metrics`, the recorder is
a :class:`Recorder` whose methods do nothing, so metrics off cost one call to an empty
method (and prometheus_client is not even imported).

Why requests are tallied, not counted directly: every answer is counted, most of them in
waitress's I/O thread (``server.serve.inline``), where a verify takes a few microseconds.
A prometheus_client counter takes a lock per ``inc`` (with ``serve --workers`` a lock, a
``getpid`` and an mmap write: measured 1.1 µs per counter and 2.1 µs per histogram
observation, about 4.4 µs per answer). So each thread adds its answers to plain dicts
of its own (:class:`_Tally`: no lock, one writer) and :meth:`Metrics.flush` moves the
differences into the prometheus metrics: before each scrape in a single process, every
``FLUSH_INTERVAL`` seconds and at exit in a ``--workers`` worker (whose values live in
mmap'ed files the supervisor reads). Sign-ins, second factors and reloads are rare and
go to prometheus_client directly.

Label values are bounded: the method of a request is one of ``METHODS`` or ``other``
(a client chooses it; each new value would be a new series), a status code comes from
authctl's own answers, the others are booleans or fixed words.
"""

from __future__ import annotations

import threading
import typing as t
from bisect import bisect_left

if t.TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

#: Upper bounds of ``authctl_request_duration_seconds`` (seconds; ``+Inf`` is added).
REQUEST_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
#: Upper bounds of ``authctl_authn_duration_seconds``: a password check is an argon2 hash
#: (about 0.1 to 1 s), padded to the same time on failure.
AUTHN_BUCKETS: tuple[float, ...] = (
    0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
)  # fmt: skip
#: Methods counted by name; any other is counted as ``other``.
METHODS: frozenset[str] = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
    | {"PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT"}
)
#: Second factors (label ``type`` of ``authctl_authn_second_factor_total``).
SECOND_FACTORS: tuple[str, ...] = ("totp", "webauthn")
#: Outcomes of a config reload (label ``result`` of ``authctl_config_reload_total``).
RELOAD_RESULTS: tuple[str, ...] = ("success", "failure")
#: Seconds between two flushes of a ``--workers`` worker's tallies into its mmap'ed files.
FLUSH_INTERVAL = 1.0
#: The help text of ``authctl_config_reload`` (the same in every process that counts it).
RELOAD_HELP = "Config reloads by result."

#: Every metric of SPEC §7.4: name, type, label names (tests and the dashboard use these).
SPEC_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "authctl_request": ("counter", ("code", "method")),
    "authctl_request_duration_seconds": ("histogram", ("code",)),
    "authctl_authz": ("counter", ("code",)),
    "authctl_authn": ("counter", ("success", "banned")),
    "authctl_authn_second_factor": ("counter", ("success", "banned", "type")),
    "authctl_authn_passkey": ("counter", ("success",)),
    "authctl_authn_duration_seconds": ("histogram", ("success",)),
    "authctl_config_reload": ("counter", ("result",)),
    "authctl_build_info": ("gauge", ("version",)),
}

SecondFactor = t.Literal["totp", "webauthn"]
ReloadResult = t.Literal["success", "failure"]


def _flag(value: bool) -> str:
    return "true" if value else "false"


class Recorder:
    """What the server counts; this base class counts nothing (metrics off)."""

    enabled = False

    def answered(self, status: str, method: str, seconds: float, *, authz: bool) -> None:
        """An answer with this status line (``"200 OK"``) to a request with ``method``,
        produced in ``seconds``; ``authz``: an answer of an authz endpoint."""

    def authn(self, *, success: bool, banned: bool, seconds: float) -> None:
        """A first-factor (password) check that took ``seconds``."""

    def second_factor(self, kind: SecondFactor, *, success: bool, banned: bool) -> None:
        """A second-factor check of ``kind``."""

    def passkey(self, *, success: bool) -> None:
        """A passkey (WebAuthn as a first factor) sign-in."""

    def config_reload(self, result: ReloadResult) -> None:
        """A reload of ``authctl.toml`` that was applied (success) or refused (failure)."""

    def flush(self) -> None:
        """Move what the threads tallied into the prometheus metrics."""


_NONE = Recorder()
_active: Recorder = _NONE


def active() -> Recorder:
    """The recorder in use (the no-op one unless :func:`install` was called)."""
    return _active


def install(recorder: Recorder | None) -> None:
    """Count with ``recorder`` from now on (None: count nothing)."""
    global _active
    _active = recorder if recorder is not None else _NONE


def authn(*, success: bool, banned: bool, seconds: float) -> None:
    """A first-factor check (:meth:`Recorder.authn`)."""
    _active.authn(success=success, banned=banned, seconds=seconds)


def second_factor(kind: SecondFactor, *, success: bool, banned: bool) -> None:
    """A second-factor check (:meth:`Recorder.second_factor`)."""
    _active.second_factor(kind, success=success, banned=banned)


def passkey(*, success: bool) -> None:
    """A passkey sign-in (:meth:`Recorder.passkey`)."""
    _active.passkey(success=success)


def config_reload(result: ReloadResult) -> None:
    """A config reload: ``"success"`` (applied) or ``"failure"`` (refused, the old one kept)."""
    _active.config_reload(result)


def version() -> str:
    """authctl's version for ``authctl_build_info``."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("authctl")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"


class BuildInfo:
    """A collector of ``authctl_build_info{version} 1``: a constant, so it never needs a
    value in the multiprocess files (the supervisor adds it to what it serves)."""

    def __init__(self, build_version: str) -> None:
        self.build_version = build_version

    def collect(self) -> t.Iterator[Metric]:
        """The one sample."""
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(
            "authctl_build_info", "authctl's version (always 1).", labels=["version"]
        )
        family.add_metric([self.build_version], 1.0)
        yield family


class _Tally:
    """One thread's answers since it started: written by that thread only, read (copied)
    by :meth:`Metrics.flush`, which remembers what it has moved already."""

    __slots__ = ("authz", "done", "durations", "requests", "sums")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}  # (status line, method)
        self.authz: dict[str, int] = {}  # status line
        self.durations: dict[str, list[int]] = {}  # status line: count per bucket
        self.sums: dict[str, float] = {}  # status line: total seconds
        #: What flush moved already, by part: (requests, authz, durations, sums).
        self.done: tuple[dict[t.Any, int], dict[str, int], dict[str, list[int]], dict[str, float]]
        self.done = ({}, {}, {}, {})


def _code(status: str) -> str:
    """The code of a status line (``"302 Found"`` -> ``"302"``)."""
    return status.partition(" ")[0]


class Metrics(Recorder):
    """The prometheus_client metrics of SPEC §7.4 in a registry of their own.

    ``multiprocess``: a ``--workers`` worker; values go to the mmap'ed files in
    ``PROMETHEUS_MULTIPROC_DIR`` (which must be set) and ``authctl_build_info`` is left to
    the supervisor. Otherwise the registry holds the values and ``authctl_build_info``.
    """

    enabled = True

    def __init__(self, *, multiprocess: bool = False, build_version: str | None = None) -> None:
        import os

        import prometheus_client
        from prometheus_client import CollectorRegistry
        from prometheus_client import Counter
        from prometheus_client import Histogram
        from prometheus_client import values

        # no "_created" series: names other than the SPEC's, and a timestamp per series
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        if multiprocess:
            if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                raise ValueError("multiprocess metrics need PROMETHEUS_MULTIPROC_DIR")
            # chosen at import time from the environment: choose again, now that it is set
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        else:
            values.ValueClass = values.MutexValue
        self.multiprocess = multiprocess
        self.registry: CollectorRegistry = CollectorRegistry()
        reg = self.registry
        self.requests = Counter(
            "authctl_request",
            "Answers by HTTP status and method.",
            ["code", "method"],
            registry=reg,
        )
        self.request_seconds = Histogram(
            "authctl_request_duration_seconds",
            "Time to produce an answer, by HTTP status.",
            ["code"],
            buckets=REQUEST_BUCKETS,
            registry=reg,
        )
        self.authz = Counter(
            "authctl_authz",
            "Answers of the authz endpoints by HTTP status.",
            ["code"],
            registry=reg,
        )
        self._authn = Counter(
            "authctl_authn", "First-factor (password) checks.", ["success", "banned"], registry=reg
        )
        self._second = Counter(
            "authctl_authn_second_factor",
            "Second-factor checks.",
            ["success", "banned", "type"],
            registry=reg,
        )
        self._passkey = Counter(
            "authctl_authn_passkey", "Passkey sign-ins.", ["success"], registry=reg
        )
        self._authn_seconds = Histogram(
            "authctl_authn_duration_seconds",
            "Time of a first-factor check (padded: a failure takes as long as a success).",
            ["success"],
            buckets=AUTHN_BUCKETS,
            registry=reg,
        )
        self._reloads = Counter("authctl_config_reload", RELOAD_HELP, ["result"], registry=reg)
        # every fixed label set exists from the start, at 0, so a dashboard shows 0, not nothing
        for success, banned in ((True, False), (False, False), (False, True)):
            self._authn.labels(_flag(success), _flag(banned))
            for kind in SECOND_FACTORS:
                self._second.labels(_flag(success), _flag(banned), kind)
        for success in (True, False):
            self._passkey.labels(_flag(success))
            self._authn_seconds.labels(_flag(success))
        for result in RELOAD_RESULTS:
            self._reloads.labels(result)
        if not multiprocess:
            reg.register(BuildInfo(build_version or version()))
        self._bounds = REQUEST_BUCKETS
        self._buckets = len(REQUEST_BUCKETS) + 1
        self._local = threading.local()
        self._tallies: list[_Tally] = []
        self._tallies_lock = threading.Lock()  # taken once per thread, at its first answer
        self._lock = threading.Lock()  # one flush at a time
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    # ------------------------------------------------------------------ per answer (hot)

    def answered(self, status: str, method: str, seconds: float, *, authz: bool) -> None:
        try:
            tally: _Tally = self._local.tally
        except AttributeError:
            tally = self._new_tally()
        if method not in METHODS:
            method = "other"
        key = (status, method)
        requests = tally.requests
        requests[key] = requests.get(key, 0) + 1
        counts = tally.durations.get(status)
        if counts is None:
            counts = tally.durations[status] = [0] * self._buckets
        counts[bisect_left(self._bounds, seconds)] += 1  # the first bound >= seconds (le)
        sums = tally.sums
        sums[status] = sums.get(status, 0.0) + seconds
        if authz:
            answers = tally.authz
            answers[status] = answers.get(status, 0) + 1

    def _new_tally(self) -> _Tally:
        tally = _Tally()
        with self._tallies_lock:
            self._tallies.append(tally)  # kept after its thread ends: its counts stay
        self._local.tally = tally
        return tally

    # ------------------------------------------------------------------ rare events

    def authn(self, *, success: bool, banned: bool, seconds: float) -> None:
        self._authn.labels(_flag(success), _flag(banned)).inc()
        self._authn_seconds.labels(_flag(success)).observe(seconds)

    def second_factor(self, kind: SecondFactor, *, success: bool, banned: bool) -> None:
        self._second.labels(_flag(success), _flag(banned), kind).inc()

    def passkey(self, *, success: bool) -> None:
        self._passkey.labels(_flag(success)).inc()

    def config_reload(self, result: ReloadResult) -> None:
        self._reloads.labels(result).inc()

    # ------------------------------------------------------------------ flushing

    def flush(self) -> None:
        """Add what every thread tallied since the last flush to the prometheus metrics."""
        with self._lock:
            with self._tallies_lock:
                tallies = list(self._tallies)
            for tally in tallies:
                self._flush_one(tally)

    def scrape(self) -> bytes:
        """Flush, then this registry in the Prometheus text format (a single process)."""
        self.flush()
        return exposition(self.registry)

    def _flush_one(self, tally: _Tally) -> None:
        done_requests, done_authz, done_durations, done_sums = tally.done
        for (status, method), count in tally.requests.copy().items():  # copy(): atomic
            delta = count - done_requests.get((status, method), 0)
            if delta:
                self.requests.labels(_code(status), method).inc(delta)
                done_requests[(status, method)] = count
        for status, count in tally.authz.copy().items():
            delta = count - done_authz.get(status, 0)
            if delta:
                self.authz.labels(_code(status)).inc(delta)
                done_authz[status] = count
        sums = tally.sums.copy()
        for status, live in tally.durations.copy().items():
            counts = list(live)
            before = done_durations.get(status) or [0] * len(counts)
            added = [now - then for now, then in zip(counts, before, strict=True)]
            # an answer being tallied may have its count and not yet its time (or the
            # reverse, read in this order): what is missing comes with the next flush, even
            # a flush that finds no new count (else the last answers' time would be lost)
            seconds = sums.get(status, 0.0) - done_sums.get(status, 0.0)
            if any(added) or seconds:
                _observe_many(self.request_seconds.labels(_code(status)), added, seconds)
                done_durations[status] = counts
                done_sums[status] = done_sums.get(status, 0.0) + seconds

    def start_flusher(self, interval: float = FLUSH_INTERVAL) -> None:
        """Flush every ``interval`` seconds in a daemon thread (a ``--workers`` worker)."""

        def run() -> None:
            while not self._stop.wait(interval):
                self.flush()

        self._flusher = threading.Thread(target=run, name="authctl-metrics-flush", daemon=True)
        self._flusher.start()

    def close(self) -> None:
        """Stop the flusher and flush a last time (a worker that exits keeps its counts)."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        self.flush()


class ReloadCounter(Recorder):
    """The ``--workers`` supervisor's recorder: config reloads only.

    Why: with ``--workers N`` every worker reloads its own app, but one SIGHUP is one reload;
    the supervisor validates the file and reports each reload once (its log and audit line),
    so it alone counts it in ``authctl_config_reload_total`` and its workers do not
    (``Reloader(count=False)``). It writes into the multiprocess directory as a process of its
    own (``counter_<its pid>.db``), which the scrape sums with the workers' files. The counter
    is made at the first reload, so a supervisor that never reloads maps no file;
    ``PROMETHEUS_MULTIPROC_DIR`` must be set by then.
    """

    enabled = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counter: t.Any = None

    def config_reload(self, result: ReloadResult) -> None:
        with self._lock:
            if self._counter is None:
                self._counter = self._make()
        self._counter.labels(result).inc()

    @staticmethod
    def _make() -> t.Any:
        import os

        import prometheus_client
        from prometheus_client import CollectorRegistry
        from prometheus_client import Counter
        from prometheus_client import values

        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            raise ValueError("multiprocess metrics need PROMETHEUS_MULTIPROC_DIR")
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        counter = Counter(
            "authctl_config_reload", RELOAD_HELP, ["result"], registry=CollectorRegistry()
        )
        for result in RELOAD_RESULTS:
            counter.labels(result)
        return counter


def _observe_many(child: t.Any, added: list[int], seconds: float) -> None:
    """Add ``added[i]`` observations to bucket ``i`` of a histogram child, ``seconds`` in
    all: what as many ``observe()`` calls would do, in one write per bucket.

    prometheus_client has no public call for it; its ``Histogram`` keeps one value per
    bucket (not cumulative) in ``_buckets`` and the total in ``_sum``, the same in a single
    process and in multiprocess mode (``tests/test_metrics.py`` checks the result against
    ``observe()``).
    """
    child._sum.inc(seconds)
    for bucket, count in zip(child._buckets, added, strict=True):
        if count:
            bucket.inc(count)


def exposition(registry: CollectorRegistry) -> bytes:
    """``registry`` in the Prometheus text format."""
    from prometheus_client import generate_latest

    return generate_latest(registry)


def multiprocess_registry(path: str, build_version: str | None = None) -> CollectorRegistry:
    """The supervisor's registry: every worker's values from the files in ``path`` (a dead
    worker's counters included) and ``authctl_build_info``."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    registry.register(BuildInfo(build_version or version()))
    return registry


def mark_process_dead(pid: int, path: str) -> None:
    """A worker exited: drop its live-only values (its counters stay in the sums)."""
    from prometheus_client.multiprocess import mark_process_dead as dead

    dead(pid, path)  # type: ignore[no-untyped-call]
