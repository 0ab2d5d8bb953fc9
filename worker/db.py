"""Database calls that survive outages: retried with capped exponential back-off, never crashing."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import optuna
import sqlalchemy.exc

from study_admin.storage import StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors a restart, a network blip or a dropped idle connection produce; all else is a real bug.
TRANSIENT_ERRORS = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    optuna.exceptions.StorageInternalError,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, StorageError):
        return exc.transient
    return isinstance(exc, TRANSIENT_ERRORS)


class RetryAborted(RuntimeError):
    """The stop event was set while waiting to retry."""


class Retrier:
    """Calls a function until it stops raising transient database errors (or ``stop`` is set)."""

    def __init__(self, max_wait: float, stop: threading.Event | None = None) -> None:
        self.max_wait = max_wait
        self._stop = stop or threading.Event()

    def __call__(self, what: str, fn: Callable[[], T]) -> T:
        delay = 1.0
        while True:
            try:
                return fn()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
                log.warning(
                    "database unavailable during %s (%s); retrying in %.0f s",
                    what,
                    detail[0] if detail else type(exc).__name__,
                    delay,
                )
                if self._stop.wait(delay):
                    raise RetryAborted(f"stopped while retrying {what}") from exc
                delay = min(delay * 2, self.max_wait)
