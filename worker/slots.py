"""Budget slots: fail-and-retry stale trials, hand running ones back, restore lost ones.

Workers never create trials except retries: ``study_admin create`` enqueued the whole budget as WAITING
trials, and a claim (``study_contract/store/claims.py``) leaves a trial that turns stale whenever its
worker dies after it. Failing a trial and queueing its retry happen in the transaction that holds the
study's lock (``study_contract/store/slot_writes.py``), so they happen together or not at all. Each
failed trial records whether it is to be retried (``retry``): a slot that an older release lost between
two writes (a worker killed in between) is told apart from a final failure, and :func:`maintain`
restores it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import optuna
from optuna.trial import TrialState

from study_contract import protocol
from study_contract.protocol import FailureKind
from study_contract.store.catalog import failures
from study_contract.store.claims import Running, db_now, running_trials, trial_id_of
from study_contract.store.slot_writes import fail_trial, locked_writes, queue_retry, release_trial
from worker.faults import crash_point

log = logging.getLogger(__name__)


def release(storage: optuna.storages.RDBStorage, trial_id: int) -> None:
    """Return a claimed trial that never started training to WAITING (its sampled values stay)."""
    storage.set_trial_state_values(trial_id, state=TrialState.WAITING)


def hand_back(storage: optuna.storages.RDBStorage, study_id: int, trial_id: int, reason: str) -> None:
    """End a running trial unfinished and queue the same configuration for another worker."""
    with locked_writes(storage.engine, study_id) as conn:
        attrs = {protocol.HANDED_BACK: reason, protocol.FAIL_REASON: f"handed back: {reason}", protocol.RETRY: True}
        if fail_trial(conn, trial_id, attrs):
            crash_point("hand-back")
            queue_retry(conn, study_id, trial_id, stale=False)


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
    """Under the study's lock, in one transaction: fail stale trials (and retry them), release claims that never
    started training, and queue the retries that a killed worker of an older release did not. A trial is stale
    after its owner's grace period, recorded with the claim; ``grace_period`` (this worker's) judges trials
    claimed without one. Idempotent; skipped when another process holds the lock (``wait=False``)."""
    done = Maintenance()
    with locked_writes(storage.engine, study_id, wait=wait) as conn:
        if conn is None:
            done.skipped = True
            return done
        now, running = db_now(conn), running_trials(conn, study_id, grace_period)
        lost = [n for n, kind in failures(conn, study_id).get(study_id, {}).items() if kind == FailureKind.LOST]
        for trial in running:
            if trial.awaits_instances:
                continue
            cutoff = timedelta(seconds=trial.grace_period)
            if trial.heartbeat is not None and now - trial.heartbeat > cutoff:
                _fail_stale(conn, study_id, trial, max_retry, done)
            elif trial.heartbeat is None and trial.started is not None and datetime.now() - trial.started > cutoff:
                if release_trial(conn, trial.trial_id):  # claimed by a worker that died before its first heartbeat
                    done.released.append(trial.trial_id)
        for number in lost:
            queue_retry(conn, study_id, trial_id_of(conn, study_id, number), stale=False)
            done.restored.append(number)
    for kind in ("stale", "exhausted", "released", "requeued", "restored"):
        if getattr(done, kind):
            log.info("study id %d: %s trials %s", study_id, kind, getattr(done, kind))
    return done


def _fail_stale(conn: Any, study_id: int, trial: Running, max_retry: int, done: Maintenance) -> None:
    if trial.worker is None:  # recorded as training starts: it stopped in setup
        # Queued again without spending a retry. Not put back to WAITING under the same number: a worker
        # that is alive but starved of CPU would go on with it, and two workers would run one trial.
        reason = f"its worker stopped before training (no heartbeat for {trial.grace_period:.0f} s); queued again"
        if fail_trial(conn, trial.trial_id, {protocol.FAIL_REASON: reason, protocol.RETRY: True}):
            queue_retry(conn, study_id, trial.trial_id, stale=False)
            done.requeued.append(trial.number)
        return
    retry = trial.stale_retries < max_retry
    reason = f"{trial.worker} stopped sending heartbeats (none for {trial.grace_period:.0f} s)"
    if not retry:
        reason += f"; not retried: its {trial.stale_retries} retries used up max_retry={max_retry}"
    if not fail_trial(conn, trial.trial_id, {protocol.FAIL_REASON: reason, protocol.RETRY: retry}):
        return
    crash_point("reclaim")
    if retry:
        queue_retry(conn, study_id, trial.trial_id, stale=True)
        done.stale.append(trial.number)
    else:
        done.exhausted.append(trial.number)
