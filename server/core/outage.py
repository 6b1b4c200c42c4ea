"""Log a failing dependency a few times, not once per request.

A session store that is down fails every verify; logging each failure with a traceback
multiplied the log rate twelvefold exactly when an operator needs to read it. ``Outage``
logs when failures start and when they end (with how many calls failed in between);
``Throttled`` logs a repeated, non-fatal problem (a skipped activity write, a refused
record) at most once per interval, with a count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class Outage:
    """The up/down state of one dependency, logged on each change only.

    ``ok()`` is called after every successful call, so it is one attribute read while up.
    """

    def __init__(
        self,
        name: str,
        logger: logging.Logger,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._log = logger
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self.down = False
        self.failures = 0
        self.since = 0.0
        #: The last failure while down (an exception), for health reporting.
        self.error: BaseException | None = None

    def failed(self, error: BaseException) -> None:
        """One call failed: log the start of an outage, or count it."""
        with self._lock:
            self.error = error
            if self.down:
                self.failures += 1
                return
            self.down, self.failures, self.since = True, 1, self._monotonic()
        self._log.error("%s outage started: %s", self.name, error)

    def ok(self) -> None:
        """One call succeeded: log the end of an outage, if one was on."""
        if not self.down:
            return
        with self._lock:
            if not self.down:
                return
            self.down = False
            failures, seconds = self.failures, self._monotonic() - self.since
            self.error = None
        self._log.warning(
            "%s outage ended after %.1f s; %d calls failed meanwhile", self.name, seconds, failures
        )


class Throttled:
    """Logs one message at most once per ``interval`` seconds, with how many were held back."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self.interval = interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._next = 0.0
        self._held = 0
        #: How many times ``hit`` was called in all.
        self.count = 0

    def hit(self, level: int, message: str, *args: object) -> None:
        """Log ``message % args`` now, or count it if one was logged less than
        ``interval`` ago."""
        now = self._monotonic()
        with self._lock:
            self.count += 1
            if now < self._next:
                self._held += 1
                return
            held, self._held, self._next = self._held, 0, now + self.interval
        suffix = f" ({held} more since the last report)" if held else ""
        self._log.log(level, message + suffix, *args)
