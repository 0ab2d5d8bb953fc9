"""Database calls that survive outages: transient errors retried with capped back-off up to a deadline.

Permanent errors (credentials, rights, a missing database) are raised at once; a shutdown signal ends
any wait (:class:`RetryAborted`); an outage longer than the deadline raises
:class:`DatabaseUnavailable`, and the worker exits so that its supervisor restarts it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from study_contract.store.storage import describe_first_line, is_transient

log = logging.getLogger(__name__)
T = TypeVar("T")


class RetryAborted(RuntimeError):
    """The stop event was set while waiting to retry."""


class DatabaseUnavailable(RuntimeError):
    """A transient database error lasted longer than the retry deadline."""


class Retrier:
    """Calls a function until it stops raising transient database errors, ``stop`` is set, or time runs out."""

    def __init__(
        self,
        *,
        max_wait: float,
        deadline: float,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_wait = max_wait
        self.deadline = deadline
        self._stop = stop or threading.Event()
        self._clock = clock

    def __call__(self, what: str, fn: Callable[[], T]) -> T:
        delay = 1.0
        started = self._clock()
        while True:
            try:
                return fn()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                detail = describe_first_line(exc)
                waited = self._clock() - started
                if waited + delay > self.deadline:
                    raise DatabaseUnavailable(
                        f"database unavailable for {waited:.0f} s during {what} ({detail}); giving up"
                    ) from exc
                log.warning("database unavailable during %s (%s); retrying in %.0f s", what, detail, delay)
                if self._stop.wait(delay):
                    raise RetryAborted(f"stopped while retrying {what}") from exc
                delay = min(delay * 2, self.max_wait)
