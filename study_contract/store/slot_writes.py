"""The writes that end or requeue a budget slot, each inside the transaction that holds the study's lock.

Failing a trial and queueing its retry are one transaction with the lock (:func:`locked_writes`): a lock
holder that stalls until the server ends its session (``idle_in_transaction_session_timeout``) loses its
writes with its lock, so another worker that took the lock meanwhile and restored the slot is never
followed by a second retry of the same slot. Rows are laid out as Optuna lays them out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy
from optuna.storages._rdb import models  # Optuna's table objects
from optuna.trial import TrialState

from study_contract import protocol
from study_contract.store.locks import LOCK_NAMESPACE, file_lock
from study_contract.store.tables import FIXED_PARAMS, append_trial

TRIALS = models.TrialModel.__table__
PARAMS = models.TrialParamModel.__table__
USER_ATTRS = models.TrialUserAttributeModel.__table__
SYSTEM_ATTRS = models.TrialSystemAttributeModel.__table__


@contextmanager
def locked_writes(
    engine: sqlalchemy.engine.Engine, study_id: int, *, wait: bool = True, also: Sequence[int] = ()
) -> Iterator[Any]:
    """A connection in a transaction that holds the lock of ``study_id`` (and of the studies ``also`` names), committed
    at the end (None: a lock was busy and ``wait`` is False). On PostgreSQL the locks belong to that transaction, so
    losing the session loses the locks and every write made under them alike. Locks are taken in the order of their
    ids, so two holders of several never wait for each other."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            function = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
            for key in sorted({study_id, *also}):
                taken = conn.execute(sqlalchemy.text(f"SELECT {function}(:ns, :key)"),
                                     {"ns": LOCK_NAMESPACE, "key": key}).scalar()  # fmt: skip
                if not wait and not taken:
                    conn.rollback()
                    yield None
                    return
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        return
    with file_lock(engine, wait=wait) as taken:  # one lock for every study of the embedded database
        if not taken:
            yield None
            return
        with engine.begin() as conn:
            yield conn


def set_attr(conn: Any, table: sqlalchemy.Table, trial_id: int, key: str, value: Any) -> None:
    conn.execute(sqlalchemy.delete(table).where(table.c.trial_id == trial_id, table.c.key == key))
    conn.execute(sqlalchemy.insert(table).values(trial_id=trial_id, key=key, value_json=json.dumps(value)))


def fail_trial(conn: Any, trial_id: int, attrs: Mapping[str, Any]) -> bool:
    """Record ``attrs`` (why, and whether it is retried) and fail the trial if it is still RUNNING; whether it was."""
    failed = conn.execute(
        sqlalchemy.update(TRIALS)
        .where(TRIALS.c.trial_id == trial_id, TRIALS.c.state == TrialState.RUNNING)
        .values(state=TrialState.FAIL, datetime_complete=datetime.now())
    ).rowcount
    if failed:
        for key, value in attrs.items():
            set_attr(conn, USER_ATTRS, trial_id, key, value)
    return bool(failed)


def release_trial(conn: Any, trial_id: int) -> bool:
    """Return a RUNNING trial that never started training to WAITING; whether it was RUNNING."""
    return bool(conn.execute(sqlalchemy.update(TRIALS).where(TRIALS.c.trial_id == trial_id,
                                                              TRIALS.c.state == TrialState.RUNNING)
                             .values(state=TrialState.WAITING)).rowcount)  # fmt: skip


def queue_retry(conn: Any, study_id: int, failed_id: int, *, stale: bool) -> int:
    """A new WAITING trial with the failed trial's configuration (its parameters, or the fixed values it was queued
    with), seed and role, linked to it as Optuna's retry callback links a retry; the new trial's id."""
    number, history_json, stale_json = conn.execute(
        sqlalchemy.select(TRIALS.c.number, _attr(SYSTEM_ATTRS, failed_id, protocol.RETRY_HISTORY),
                          _attr(SYSTEM_ATTRS, failed_id, protocol.STALE_RETRIES))
        .where(TRIALS.c.trial_id == failed_id)
    ).one()  # fmt: skip
    history = protocol.decode_json(protocol.RETRY_HISTORY, history_json, protocol.SYSTEM_ATTRS) or []
    stale_retries = protocol.decode_json(protocol.STALE_RETRIES, stale_json, protocol.SYSTEM_ATTRS) or 0
    new_id = append_trial(conn, study_id)
    conn.execute(
        sqlalchemy.insert(PARAMS).from_select(
            ["trial_id", "param_name", "param_value", "distribution_json"],
            sqlalchemy.select(sqlalchemy.literal(new_id), PARAMS.c.param_name, PARAMS.c.param_value,
                              PARAMS.c.distribution_json).where(PARAMS.c.trial_id == failed_id),
        )
    )  # fmt: skip
    stored = conn.execute(
        sqlalchemy.select(USER_ATTRS.c.key, USER_ATTRS.c.value_json).where(USER_ATTRS.c.trial_id == failed_id)
    ).all()
    user = {key: protocol.decode_json(key, value, protocol.USER_ATTRS) for key, value in stored
            if key in protocol.INHERITED}  # fmt: skip
    for key, value in protocol.inherited({k: v for k, v in user.items() if v is not None}).items():
        set_attr(conn, USER_ATTRS, new_id, key, value)
    fixed = conn.execute(sqlalchemy.select(_attr(SYSTEM_ATTRS, failed_id, FIXED_PARAMS))).scalar()
    system = {
        protocol.FAILED_TRIAL: number,
        protocol.RETRY_HISTORY: [*history, number],
        protocol.STALE_RETRIES: stale_retries + int(stale),
    }
    for key, value in system.items():
        set_attr(conn, SYSTEM_ATTRS, new_id, key, value)
    if fixed is not None:  # a slot that failed before it sampled keeps the values it was queued with
        conn.execute(sqlalchemy.insert(SYSTEM_ATTRS).values(trial_id=new_id, key=FIXED_PARAMS, value_json=fixed))
    return int(new_id)


def _attr(table: sqlalchemy.Table, trial_id: int, key: str) -> Any:
    return (
        sqlalchemy.select(table.c.value_json)
        .where(table.c.trial_id == trial_id, table.c.key == key)
        .limit(1)
        .scalar_subquery()
    )
