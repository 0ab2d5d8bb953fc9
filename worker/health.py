"""The health file: touched by the worker loop when it polls, and by a trial while its training steps,
evaluation episodes and video frames advance.

``worker --check-health`` (the container's health check and the Kubernetes probe) calls a worker
healthy while the file is younger than ``WorkerConfig.health_max_age``. The heartbeat thread does not
touch it: a hung training step would otherwise look healthy.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def touch(path: str | None) -> None:
    if path:
        Path(path).touch()


def is_fresh(path: str | None, max_age: float) -> bool:
    return path is not None and os.path.exists(path) and time.time() - os.path.getmtime(path) <= max_age


class Pulse:
    """Touches the health file at most every ``every`` seconds; called wherever a trial's work advances."""

    def __init__(self, path: str | None, every: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.every, self.clock = path, every, clock
        self._last = -math.inf

    def __call__(self, *_: Any) -> None:
        now = self.clock()
        if now - self._last >= self.every:
            touch(self.path)
            self._last = now
