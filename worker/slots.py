"""Budget slots: claim a WAITING trial, hand a running one back, retry stale ones.

Workers never create trials: ``study_admin create`` enqueued the whole budget as WAITING trials, and
claiming uses the storage's atomic WAITING -> RUNNING transition (the one ``Study.ask`` uses), so two
workers never get the same trial and the budget is never overshot.
"""

from __future__ import annotations

import copy
import logging

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from study_admin.progress import TuningStudy, tuning_studies

log = logging.getLogger(__name__)

# What a retry inherits from the trial it replaces: the same configuration and seed.
INHERITED_ATTRS = ("seed", "hyperparams", "baseline")


class RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry callback, minus the dead run's results (curve, worker, timings)."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trimmed = copy.deepcopy(trial)
        trimmed.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in INHERITED_ATTRS}
        retries_left = self._max_retry is None or len(self.retry_history(trial)) < self._max_retry
        log.info(
            "trial %d of %s lost its worker; %s",
            trial.number,
            study.study_name,
            "retrying it" if retries_left else "retries exhausted",
        )
        super().__call__(study, trimmed)


def served_studies(storage: optuna.storages.RDBStorage, only: str | None) -> list[TuningStudy]:
    return [s for s in tuning_studies(storage.engine) if not only or s.name == only]


def claim(storage: optuna.storages.BaseStorage, study_id: int) -> int | None:
    """Atomically move one WAITING trial to RUNNING; its trial id, or None if none is left."""
    for waiting in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, waiting.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def has_live_trials(storage: optuna.storages.BaseStorage, study_id: int) -> bool:
    """Whether trials may still run: WAITING ones, or RUNNING ones that may turn stale."""
    return any(storage.get_n_trials(study_id, state=s) for s in (TrialState.WAITING, TrialState.RUNNING))


def hand_back(
    storage: optuna.storages.BaseStorage,
    study: optuna.Study,
    trial_id: int,
    reason: str,
    retry: RetryStaleTrial,
) -> None:
    """End a running trial unfinished and queue the same configuration for another worker."""
    storage.set_trial_user_attr(trial_id, "handed_back", reason)
    storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    retry(study, storage.get_trial(trial_id))
