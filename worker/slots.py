"""Budget slots: claim a WAITING trial, fail-and-retry stale ones, hand running ones back, restore lost ones.

Workers never create trials except retries: ``study_admin create`` enqueued the whole budget as WAITING
trials. A claim moves one WAITING trial to RUNNING and writes its first heartbeat in one transaction,
so a worker that dies at any moment after it leaves a trial that turns stale. Failing a trial and
queueing its retry are several Optuna calls; they run under the study's lock, and each failed trial
records beforehand whether it is to be retried (``retry``), so :func:`maintain` can tell a slot lost
between two calls (a worker killed in between) from a final failure, and restores it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import optuna
import sqlalchemy
from optuna.storages._rdb import models  # Optuna's table objects: one-transaction claims need them
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.dialects import postgresql, sqlite

from study_contract.catalog import FAIL_REASON_ATTR, HANDED_BACK_ATTR, RETRY_ATTR, WORKER_ATTR, failures
from study_contract.locks import study_lock
from worker.faults import crash_point

log = logging.getLogger(__name__)

# What a retry inherits from the trial it replaces: the same configuration, seed and role.
INHERITED_ATTRS = ("seed", "hyperparams", "baseline", "candidate")
STALE_RETRIES = "stale_retries"  # system attribute: retries this configuration got after dead workers


def _claim_statement(dialect: str, study_id: int) -> sqlalchemy.Update:
    trials = models.TrialModel.__table__
    pick = (
        sqlalchemy.select(trials.c.trial_id)
        .where(trials.c.study_id == study_id, trials.c.state == TrialState.WAITING)
        .order_by(trials.c.trial_id)
        .limit(1)
    )
    if dialect == "postgresql":
        pick = pick.with_for_update(skip_locked=True)  # racing workers take different rows, none waits
    return (
        sqlalchemy.update(trials)
        .where(trials.c.trial_id == pick.scalar_subquery(), trials.c.state == TrialState.WAITING)
        .values(state=TrialState.RUNNING, datetime_start=datetime.now())
        .returning(trials.c.trial_id)
    )


def _heartbeat_statement(dialect: str, trial_id: int) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = sqlalchemy.func.current_timestamp()
    statement = insert(models.TrialHeartbeatModel.__table__).values(trial_id=trial_id, heartbeat=now)
    return statement.on_conflict_do_update(index_elements=["trial_id"], set_={"heartbeat": now})


def claim(storage: optuna.storages.RDBStorage, study_id: int) -> int | None:
    """Move the oldest WAITING trial to RUNNING with a first heartbeat, in one transaction; its id or None."""
    engine = storage.engine
    with engine.begin() as conn:
        trial_id = conn.execute(_claim_statement(engine.dialect.name, study_id)).scalar()
        if trial_id is not None:
            conn.execute(_heartbeat_statement(engine.dialect.name, trial_id))
    return trial_id


def release(storage: optuna.storages.RDBStorage, trial_id: int) -> None:
    """Return a claimed trial that never started training to WAITING (its sampled values stay)."""
    storage.set_trial_state_values(trial_id, state=TrialState.WAITING)


def enqueue_retry(storage: optuna.storages.BaseStorage, study_id: int, failed: FrozenTrial, *, stale: bool) -> None:
    """Queue ``failed``'s configuration and seed as a new WAITING trial, linked as Optuna's retry callback does."""
    system_attrs: dict[str, Any] = {"failed_trial": failed.number, "retry_history": [], **failed.system_attrs}
    system_attrs["retry_history"] = [*system_attrs["retry_history"], failed.number]
    system_attrs[STALE_RETRIES] = failed.system_attrs.get(STALE_RETRIES, 0) + int(stale)
    template = optuna.trial.create_trial(
        state=TrialState.WAITING,
        params=failed.params,
        distributions=failed.distributions,
        user_attrs={k: v for k, v in failed.user_attrs.items() if k in INHERITED_ATTRS},
        system_attrs=system_attrs,
    )
    storage.create_new_trial(study_id, template_trial=template)


def _fail(storage: optuna.storages.BaseStorage, trial_id: int, attrs: dict[str, Any]) -> bool:
    """Record why and whether it will be retried, then fail it; False if it finished meanwhile."""
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
    try:
        return storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def hand_back(storage: optuna.storages.RDBStorage, study_id: int, trial_id: int, reason: str) -> None:
    """End a running trial unfinished and queue the same configuration for another worker."""
    with study_lock(storage.engine, study_id):
        attrs = {HANDED_BACK_ATTR: reason, FAIL_REASON_ATTR: f"handed back: {reason}", RETRY_ATTR: True}
        if _fail(storage, trial_id, attrs):
            crash_point("hand-back")
            enqueue_retry(storage, study_id, storage.get_trial(trial_id), stale=False)


@dataclass
class Maintenance:
    """What one pass of :func:`maintain` did."""

    stale: list[int] = field(default_factory=list)
    exhausted: list[int] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    restored: list[int] = field(default_factory=list)
    skipped: bool = False


def _db_now(conn: sqlalchemy.Connection) -> datetime:
    value = conn.execute(sqlalchemy.select(sqlalchemy.func.current_timestamp())).scalar_one()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=None)


def _running(conn: sqlalchemy.Connection, study_id: int) -> list[tuple[int, datetime | None, datetime | None]]:
    trials, beats = models.TrialModel.__table__, models.TrialHeartbeatModel.__table__
    query = (
        sqlalchemy.select(trials.c.trial_id, trials.c.datetime_start, beats.c.heartbeat)
        .select_from(trials.outerjoin(beats, beats.c.trial_id == trials.c.trial_id))
        .where(trials.c.study_id == study_id, trials.c.state == TrialState.RUNNING)
    )
    return [tuple(row) for row in conn.execute(query)]


def maintain(
    storage: optuna.storages.RDBStorage, study_id: int, *, grace_period: float, max_retry: int, wait: bool = False
) -> Maintenance:
    """Under the study's lock: fail stale trials (and retry them), release claims that never started training,
    and queue the retries that a killed worker did not. Idempotent; skipped when another process holds
    the lock (``wait=False``)."""
    done = Maintenance()
    with study_lock(storage.engine, study_id, wait=wait) as taken:
        if not taken:
            done.skipped = True
            return done
        with storage.engine.connect() as conn:
            now, running = _db_now(conn), _running(conn, study_id)
            lost = [n for n, kind in failures(conn, study_id).get(study_id, {}).items() if kind == "lost"]
        cutoff = timedelta(seconds=grace_period)
        for trial_id, started, heartbeat in running:
            if heartbeat is not None and now - heartbeat > cutoff:
                _fail_stale(storage, study_id, trial_id, grace_period, max_retry, done)
            elif heartbeat is None and started is not None and datetime.now() - started > cutoff:
                release(storage, trial_id)  # claimed by a worker that died before its first heartbeat
                done.released.append(trial_id)
        for number in lost:
            failed = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, number))
            enqueue_retry(storage, study_id, failed, stale=False)
            done.restored.append(number)
    for kind in ("stale", "exhausted", "released", "requeued", "restored"):
        if getattr(done, kind):
            log.info("study id %d: %s trials %s", study_id, kind, getattr(done, kind))
    return done


def _fail_stale(
    storage: optuna.storages.RDBStorage,
    study_id: int,
    trial_id: int,
    grace_period: float,
    max_retry: int,
    done: Maintenance,
) -> None:
    trial = storage.get_trial(trial_id)
    if WORKER_ATTR not in trial.user_attrs:  # recorded as training starts: it stopped in setup
        # Queued again without spending a retry. Not put back to WAITING under the same number: a worker
        # that is alive but starved of CPU would go on with it, and two workers would run one trial.
        reason = f"its worker stopped before training (no heartbeat for {grace_period:.0f} s); queued again"
        if _fail(storage, trial_id, {FAIL_REASON_ATTR: reason, RETRY_ATTR: True}):
            enqueue_retry(storage, study_id, storage.get_trial(trial_id), stale=False)
            done.requeued.append(trial.number)
        return
    retries = trial.system_attrs.get(STALE_RETRIES, 0)
    retry = retries < max_retry
    who = trial.user_attrs[WORKER_ATTR]
    reason = f"{who} stopped sending heartbeats (none for {grace_period:.0f} s)"
    if not retry:
        reason += f"; not retried: its {retries} retries used up max_retry={max_retry}"
    if not _fail(storage, trial_id, {FAIL_REASON_ATTR: reason, RETRY_ATTR: retry}):
        return
    crash_point("reclaim")
    if retry:
        enqueue_retry(storage, study_id, storage.get_trial(trial_id), stale=True)
        done.stale.append(trial.number)
    else:
        done.exhausted.append(trial.number)
