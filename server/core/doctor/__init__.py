"""``authctl doctor``: find what breaks a real deployment, and name the fix (SPEC §7.4).

Each check is a small pure function from facts to a :class:`Check`; the facts are gathered at
the edges (``files``, ``net``, ``stores``), every network call with a short bounded timeout, and
:mod:`.run` puts them in order. The CLI (``authctl/cmd_doctor.py``) only prints.
"""

from __future__ import annotations

from server.core.doctor.check import Check
from server.core.doctor.check import Status
from server.core.doctor.check import exit_code

__all__ = ["Check", "Status", "exit_code"]
