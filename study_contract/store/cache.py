"""Optuna's trial cache, without the budget's WAITING trials: what a worker's sampler and pruner read costs what the
study has played, not what it has queued.

``create`` queues a study's whole budget as WAITING trials. Optuna's ``_CachedStorage`` reads every unfinished trial
again on every read (each pruning check, each sample): in a study of 100,000 trials, one 64-step trial took
124 s and 930 MB. Nothing a worker reads needs a WAITING trial (TPE reads finished and running trials, the
pruners and the best-so-far check finished ones), so this cache never reads them. Optuna's cache also skips
every trial at or below the highest finished id it has seen; here that watermark only passes trials it has
read (by number, which follows the id within a study), so a trial still WAITING below it is read once it runs.
"""

from __future__ import annotations

import optuna
from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
from optuna.trial import TrialState

PLAYED = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class PlayedTrialsStorage(_CachedStorage):
    """``_CachedStorage`` over an ``RDBStorage`` that reads no WAITING trial (Optuna falls short here: it has no
    way to leave them out)."""

    def __init__(self, backend: optuna.storages.RDBStorage) -> None:
        super().__init__(backend)
        self._known_through: dict[int, int] = {}
        """study id -> the highest trial number up to which every trial has been read."""

    def _read_trials_from_remote_storage(self, study_id: int) -> None:
        with self._lock:
            study = self._studies.setdefault(study_id, _StudyInfo())
            trials = self._backend._get_trials(
                study_id,
                states=PLAYED,
                included_trial_ids=study.unfinished_trial_ids,
                trial_id_greater_than=study.last_finished_trial_id,
            )
            self._add_trials_to_cache(study_id, trials)
            for trial in trials:
                if trial.state.is_finished():
                    study.unfinished_trial_ids.discard(trial._trial_id)
                else:
                    study.unfinished_trial_ids.add(trial._trial_id)
            # Every trial up to the first number never read is either finished (and cached for good) or followed
            # as unfinished: only those may fall below the watermark that later reads start from.
            number = self._known_through.get(study_id, -1)
            while number + 1 in study.trials:
                number += 1
            if number >= 0:
                self._known_through[study_id] = number
                study.last_finished_trial_id = max(study.last_finished_trial_id, study.trials[number]._trial_id)
