"""Graceful shutdown: the first SIGTERM/SIGINT asks the worker to drain, a second exits at once."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType

log = logging.getLogger(__name__)


class ShutdownFlag:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.requested_at: float | None = None

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def request(self) -> None:
        self.requested_at = time.monotonic()
        self.event.set()

    def seconds_since_request(self) -> float:
        return 0.0 if self.requested_at is None else time.monotonic() - self.requested_at

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            log.warning("second signal (%s): exiting now; a running trial will turn stale and be retried", name)
            os._exit(128 + signum)
        log.info("%s received: taking no new trials, draining the running one", name)
        self.request()
