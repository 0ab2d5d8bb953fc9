"""The health file: touched by the worker loop when it polls and by training while steps advance.

``worker --check-health`` (the container's health check and the Kubernetes probe) calls a worker
healthy while the file is younger than ``WorkerConfig.health_max_age``. The heartbeat thread does not
touch it: a hung training step would otherwise look healthy.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def touch(path: str | None) -> None:
    if path:
        Path(path).touch()


def is_fresh(path: str | None, max_age: float) -> bool:
    return path is not None and os.path.exists(path) and time.time() - os.path.getmtime(path) <= max_age
