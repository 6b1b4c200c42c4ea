"""Clock sanity: TOTP codes and session lifetimes assume this host and the server agree."""

from __future__ import annotations

import email.utils

from server.core.doctor.check import Check
from server.core.doctor.check import fail
from server.core.doctor.check import ok
from server.core.doctor.check import warn

#: Beyond this a warning: TOTP's skew window is one 30 s step either side.
WARN_SECONDS = 30.0
#: Beyond this TOTP codes are refused and cookies may expire at once.
FAIL_SECONDS = 300.0
#: ``Date`` has whole seconds, and the answer took a moment to arrive.
RESOLUTION = 1.0


def clock_check(name: str, source: str, date_header: str | None, local_now: float) -> Check:
    """Compare ``local_now`` (epoch seconds) with the ``Date`` header ``source`` answered."""
    if not date_header:
        return warn(name, f"{source} sent no Date header: the clock cannot be compared",
                    "compare the clocks by hand (timedatectl)")  # fmt: skip
    try:
        when = email.utils.parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        return warn(name, f"{source} sent an unreadable Date header {date_header!r}",
                    "compare the clocks by hand (timedatectl)")  # fmt: skip
    skew = local_now - when.timestamp()
    size = max(0.0, abs(skew) - RESOLUTION)
    direction = "ahead of" if skew > 0 else "behind"
    detail = f"this host's clock is {abs(skew):.0f} s {direction} {source}"
    fix = (
        "run NTP on both hosts (systemd-timesyncd or chrony; `timedatectl set-ntp true`): "
        "TOTP codes are accepted only within one period of the server's time"
    )
    if size > FAIL_SECONDS:
        return fail(name, detail + ": TOTP codes and session lifetimes break", fix)
    if size > WARN_SECONDS:
        return warn(name, detail, fix)
    return ok(name, detail if size > 0 else f"this host's clock agrees with {source}")
