"""Budget slots: fail-and-retry stale trials, hand running ones back, restore lost ones.

Workers never create trials except retries: ``study_admin create`` enqueued the whole budget as WAITING
trials, and a claim (``study_contract/store/claims.py``) leaves a trial that turns stale whenever its
worker dies after it. Failing a trial and
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
from optuna.trial import FrozenTrial, TrialState

from study_contract import protocol
from study_contract.store.catalog import failures
from study_contract.store.claims import db_now, running_trials
from study_contract.store.locks import study_lock
from worker.faults import crash_point

log = logging.getLogger(__name__)


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
            now, running = db_now(conn), running_trials(conn, study_id, grace_period)
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
