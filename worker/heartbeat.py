"""The running trial's heartbeat, written from a thread.

Optuna's own heartbeat thread stops for good at the first database error, after which a live trial
turns stale and is retried elsewhere; this one logs the error and keeps beating, so a trial survives a
database restart shorter than the grace period. It stops quietly once the trial is gone (its study was
deleted). It does not touch the health file: a heartbeat proves the thread lives, not that training
moves (see ``worker/health.py``).
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

import optuna

from study_contract.storage import describe_first_line

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: float) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{trial_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception as exc:  # noqa: BLE001 - any failure: log, keep beating
                if self._trial_is_gone():
                    log.info("trial id %d no longer exists; heartbeat stopped", self._trial_id)
                    return
                log.warning("heartbeat of trial id %d failed: %s", self._trial_id, describe_first_line(exc))
            self._stop.wait(self._interval)

    def _trial_is_gone(self) -> bool:
        try:
            self._storage.get_trial_number_from_id(self._trial_id)
        except KeyError:
            return True
        except Exception:  # noqa: BLE001 - the database is unreachable: the trial may well exist
            return False
        return False

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
