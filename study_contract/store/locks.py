"""One lock per study across every worker and admin: PostgreSQL advisory locks, a file lock on SQLite.

Operations that read the trials of a study and then write to them in several Optuna calls (fail a
stale trial and queue its retry, hand a trial back, restore lost slots, create the study's next
stage) hold this lock, so two processes never both act on what they read. The lock lives in one
transaction (``pg_advisory_xact_lock``), which also keeps it safe behind PgBouncer's transaction
pooling, and it goes away with the process that holds it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy

LOCK_NAMESPACE = 727275  # first key of the two-key advisory lock; the second is the study id


@contextmanager
def study_lock(engine: sqlalchemy.engine.Engine, study_id: int, *, wait: bool = True) -> Iterator[bool]:
    """Hold the lock of ``study_id`` for the ``with`` block; yields whether it was taken (``wait=False``)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            function = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
            row = conn.execute(
                sqlalchemy.text(f"SELECT {function}(:ns, :key)"), {"ns": LOCK_NAMESPACE, "key": study_id}
            )
            taken = True if wait else bool(row.scalar())
            try:
                yield taken
            finally:
                conn.rollback()
        return
    with file_lock(engine, wait=wait) as taken:
        yield taken


@contextmanager
def file_lock(engine: sqlalchemy.engine.Engine, *, wait: bool) -> Iterator[bool]:
    """The embedded database's lock: a file beside it, one for all its studies."""
    # flock, not fcntl record locks: those are per process, so two threads would both get one.
    fd = os.open(Path(f"{engine.url.database}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            taken = True
        except BlockingIOError:
            taken = False
        try:
            yield taken
        finally:
            if taken:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
