"""Budget slots: claim a WAITING trial, fail-and-retry stale ones, hand running ones back, restore lost ones.

Workers never create trials except retries: ``study_admin create`` enqueued the whole budget as WAITING
trials. A claim moves one WAITING trial to RUNNING and writes its first heartbeat in one transaction,
so a worker that dies at any moment after it leaves a trial that turns stale. Failing a trial and
queueing its retry are several Optuna calls; they run under the study's lock, and each failed trial
records beforehand whether it is to be retried (``retry``), so :func:`maintain` can tell a slot lost
between two calls (a worker killed in between) from a final failure, and restores it.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import optuna
import sqlalchemy
from optuna.storages._rdb import models  # Optuna's table objects: one-transaction claims need them
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.dialects import postgresql, sqlite

from study_contract import protocol
from study_contract.catalog import failures
from study_contract.locks import study_lock
from worker.faults import crash_point

log = logging.getLogger(__name__)
MAX_GRACE = 86_400.0  # the longest --grace-period a worker accepts: an owner's promise is read within it


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
        .returning(trials.c.trial_id, trials.c.datetime_start)
    )


@dataclass(frozen=True)
class Claim:
    """A trial this worker claimed: the row, its study, and the start time the claim wrote, which tells this
    claim apart from any later one of the same row (or, on an embedded storage that gave a deleted
    study's ids to a new one, of another study's trial)."""

    trial_id: int
    study_id: int
    started: datetime

    def _is_it(self, trials: sqlalchemy.Table) -> Any:
        return (
            (trials.c.trial_id == self.trial_id)
            & (trials.c.study_id == self.study_id)
            & (trials.c.datetime_start == self.started)
        )


def _upsert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _heartbeat_statement(dialect: str, trial_id: int) -> Any:
    now = sqlalchemy.func.current_timestamp()
    statement = _upsert(dialect)(models.TrialHeartbeatModel.__table__).values(trial_id=trial_id, heartbeat=now)
    return statement.on_conflict_do_update(index_elements=["trial_id"], set_={"heartbeat": now})


def _owner_grace_statement(dialect: str, trial_id: int, grace_period: float) -> Any:
    value = json.dumps(grace_period)
    statement = _upsert(dialect)(models.TrialSystemAttributeModel.__table__).values(
        trial_id=trial_id, key=protocol.OWNER_GRACE, value_json=value
    )
    return statement.on_conflict_do_update(index_elements=["trial_id", "key"], set_={"value_json": value})


def claim(storage: optuna.storages.RDBStorage, study_id: int, *, grace_period: float) -> Claim | None:
    """Move the oldest WAITING trial to RUNNING with a first heartbeat and the claimer's grace period (how long
    others wait for its heartbeats), in one transaction; the claim or None."""
    engine = storage.engine
    with engine.begin() as conn:
        row = conn.execute(_claim_statement(engine.dialect.name, study_id)).first()
        if row is None:
            return None
        conn.execute(_heartbeat_statement(engine.dialect.name, row.trial_id))
        conn.execute(_owner_grace_statement(engine.dialect.name, row.trial_id, grace_period))
    return Claim(row.trial_id, study_id, row.datetime_start)


def lost_claim(engine: sqlalchemy.engine.Engine, mine: Claim) -> str | None:
    """None while ``mine`` is still a RUNNING trial of this worker's claim; else why not: ``deleted`` (the row
    is gone, or now belongs to another study or claim) or ``finished`` (another worker failed it as stale)."""
    trials = models.TrialModel.__table__
    with engine.connect() as conn:
        state = conn.execute(sqlalchemy.select(trials.c.state).where(mine._is_it(trials))).scalar()
    if state is None:
        return "deleted"
    return None if state == TrialState.RUNNING else "finished"


def beat(engine: sqlalchemy.engine.Engine, mine: Claim) -> bool:
    """Record a heartbeat for ``mine``, in one statement that checks the claim is still this worker's;
    False (and nothing written) once it is not."""
    trials, beats = models.TrialModel.__table__, models.TrialHeartbeatModel.__table__
    claimed = sqlalchemy.exists().where(mine._is_it(trials) & (trials.c.state == TrialState.RUNNING))
    statement = (
        sqlalchemy.update(beats)
        .where(beats.c.trial_id == mine.trial_id, claimed)
        .values(heartbeat=sqlalchemy.func.current_timestamp())
    )
    with engine.begin() as conn:
        return conn.execute(statement).rowcount > 0


def release(storage: optuna.storages.RDBStorage, trial_id: int) -> None:
    """Return a claimed trial that never started training to WAITING (its sampled values stay)."""
    storage.set_trial_state_values(trial_id, state=TrialState.WAITING)


def enqueue_retry(storage: optuna.storages.BaseStorage, study_id: int, failed: FrozenTrial, *, stale: bool) -> None:
    """Queue ``failed``'s configuration and seed as a new WAITING trial, linked as Optuna's retry callback does."""
    system_attrs = {
        protocol.FAILED_TRIAL: failed.number,
        protocol.RETRY_HISTORY: [*failed.system_attrs.get(protocol.RETRY_HISTORY, []), failed.number],
        protocol.STALE_RETRIES: failed.system_attrs.get(protocol.STALE_RETRIES, 0) + int(stale),
    }
    template = optuna.trial.create_trial(
        state=TrialState.WAITING,
        params=failed.params,
        distributions=failed.distributions,
        user_attrs=protocol.inherited(failed.user_attrs),
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
        attrs = {protocol.HANDED_BACK: reason, protocol.FAIL_REASON: f"handed back: {reason}", protocol.RETRY: True}
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


@dataclass(frozen=True)
class Running:
    trial_id: int
    started: datetime | None
    heartbeat: datetime | None
    grace_period: float
    """The owner's grace period, as it recorded with its claim (else the maintaining worker's)."""


def _grace(value_json: str | None, default: float) -> float:
    """An owner's recorded grace period, read as untrusted: a number of seconds within (0, MAX_GRACE]."""
    try:
        value = json.loads(value_json) if value_json is not None else None
    except ValueError:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return default
    return value if 0 < value <= MAX_GRACE else default


def _running(conn: sqlalchemy.Connection, study_id: int, default_grace: float) -> list[Running]:
    trials, beats = models.TrialModel.__table__, models.TrialHeartbeatModel.__table__
    attrs = models.TrialSystemAttributeModel.__table__
    query = (
        sqlalchemy.select(trials.c.trial_id, trials.c.datetime_start, beats.c.heartbeat, attrs.c.value_json)
        .select_from(
            trials.outerjoin(beats, beats.c.trial_id == trials.c.trial_id).outerjoin(
                attrs, (attrs.c.trial_id == trials.c.trial_id) & (attrs.c.key == protocol.OWNER_GRACE)
            )
        )
        .where(trials.c.study_id == study_id, trials.c.state == TrialState.RUNNING)
    )
    return [Running(row[0], row[1], row[2], _grace(row[3], default_grace)) for row in conn.execute(query)]


def maintain(
    storage: optuna.storages.RDBStorage, study_id: int, *, grace_period: float, max_retry: int, wait: bool = False
) -> Maintenance:
    """Under the study's lock: fail stale trials (and retry them), release claims that never started training,
    and queue the retries that a killed worker did not. A trial is stale after its owner's grace period,
    recorded with the claim; ``grace_period`` (this worker's) judges trials claimed without one.
    Idempotent; skipped when another process holds the lock (``wait=False``)."""
    done = Maintenance()
    with study_lock(storage.engine, study_id, wait=wait) as taken:
        if not taken:
            done.skipped = True
            return done
        with storage.engine.connect() as conn:
            now, running = _db_now(conn), _running(conn, study_id, grace_period)
            lost = [n for n, kind in failures(conn, study_id).get(study_id, {}).items() if kind == "lost"]
        for trial in running:
            cutoff = timedelta(seconds=trial.grace_period)
            if trial.heartbeat is not None and now - trial.heartbeat > cutoff:
                _fail_stale(storage, study_id, trial.trial_id, trial.grace_period, max_retry, done)
            elif trial.heartbeat is None and trial.started is not None and datetime.now() - trial.started > cutoff:
                release(storage, trial.trial_id)  # claimed by a worker that died before its first heartbeat
                done.released.append(trial.trial_id)
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
    if protocol.WORKER not in trial.user_attrs:  # recorded as training starts: it stopped in setup
        # Queued again without spending a retry. Not put back to WAITING under the same number: a worker
        # that is alive but starved of CPU would go on with it, and two workers would run one trial.
        reason = f"its worker stopped before training (no heartbeat for {grace_period:.0f} s); queued again"
        if _fail(storage, trial_id, {protocol.FAIL_REASON: reason, protocol.RETRY: True}):
            enqueue_retry(storage, study_id, storage.get_trial(trial_id), stale=False)
            done.requeued.append(trial.number)
        return
    retries = trial.system_attrs.get(protocol.STALE_RETRIES, 0)
    retry = retries < max_retry
    who = trial.user_attrs[protocol.WORKER]
    reason = f"{who} stopped sending heartbeats (none for {grace_period:.0f} s)"
    if not retry:
        reason += f"; not retried: its {retries} retries used up max_retry={max_retry}"
    if not _fail(storage, trial_id, {protocol.FAIL_REASON: reason, protocol.RETRY: retry}):
        return
    crash_point("reclaim")
    if retry:
        enqueue_retry(storage, study_id, storage.get_trial(trial_id), stale=True)
        done.stale.append(trial.number)
    else:
        done.exhausted.append(trial.number)
