"""The running trial's heartbeat, written from a thread.

Optuna's own heartbeat thread stops for good at the first database error, after which a live trial
turns stale and is retried elsewhere; this one logs the error and keeps beating, so a trial survives a
database restart shorter than the grace period. Each beat checks, in the same statement, that the
trial is still this worker's claim, and the thread stops quietly once it is not (its study was deleted,
or another worker failed it as stale). It does not touch the health file: a heartbeat proves the thread
lives, not that training moves (see ``worker/health.py``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

from study_contract.store.storage import describe_first_line

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, beat: Callable[[], bool], interval: float, *, name: str) -> None:
        """``beat`` records one heartbeat and says whether the trial is still this worker's."""
        self._beat = beat
        self._interval = interval
        self._name = name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{name}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._beat():
                    log.info("%s is no longer this worker's; heartbeat stopped", self._name)
                    return
            except Exception as exc:  # noqa: BLE001 - any failure: log, keep beating
                log.warning("heartbeat of %s failed: %s", self._name, describe_first_line(exc))
            self._stop.wait(self._interval)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
