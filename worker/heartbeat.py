"""The running trial's heartbeat, written from a thread.

Optuna's own heartbeat thread stops for good at the first database error, after which a live trial
turns stale and is retried elsewhere; this one logs the error and keeps beating, so a trial survives a
database restart shorter than the grace period.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import TracebackType

import optuna

log = logging.getLogger(__name__)


def touch(path: str | None) -> None:
    if path:
        Path(path).touch()


class Heartbeat:
    def __init__(
        self, storage: optuna.storages.RDBStorage, trial_id: int, interval: float, health_file: str | None
    ) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._interval = interval
        self._health_file = health_file
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{trial_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._storage.record_heartbeat(self._trial_id)
                touch(self._health_file)
            except Exception as exc:  # noqa: BLE001 - any failure: log, keep beating
                log.warning("heartbeat of trial id %d failed: %s", self._trial_id, str(exc).splitlines()[0])
            self._stop.wait(self._interval)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
