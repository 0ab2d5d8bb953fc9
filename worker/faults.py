"""Crash points for the kill tests: ``WORKER_CRASH_AT=claim,setup`` makes the worker SIGKILL itself there.

Killing a process from outside lands at random moments; proving that no budget slot is lost needs
kills at the exact moments between two database writes too. Each named point calls
:func:`crash_point`; with ``WORKER_CRASH_AT`` unset (always, outside the tests) it does nothing.
``WORKER_CRASH_AFTER=N`` lets the first N passes through a point go by.
"""

from __future__ import annotations

import os
import signal

_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    points = os.environ.get("WORKER_CRASH_AT")
    if not points or name not in points.split(","):
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] > int(os.environ.get("WORKER_CRASH_AFTER", "0")):
        os.kill(os.getpid(), signal.SIGKILL)
