"""Run one claimed trial: sample, train, report, and record the outcome on the trial."""

from __future__ import annotations

import logging
import os
import socket
import traceback
from typing import Any

import optuna
from optuna.trial import TrialState

from study_admin.definition import StudyDefinition
from worker.config import WorkerConfig
from worker.db import Retrier
from worker.heartbeat import Heartbeat
from worker.sampling import SAMPLE_PARAMS
from worker.shutdown import ShutdownFlag
from worker.slots import RetryStaleTrial, hand_back

log = logging.getLogger(__name__)
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


def make_sampler(definition: StudyDefinition, trial_number: int) -> optuna.samplers.BaseSampler:
    # A fresh seed per trial: workers sharing one history must not draw identical configurations.
    seed = definition.seed * 100_003 + trial_number
    if definition.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(definition: StudyDefinition) -> optuna.pruners.BasePruner:
    if definition.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=definition.pruner_startup_trials,
            n_warmup_steps=definition.pruner_warmup_evals * definition.eval_every,
        )
    if definition.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=definition.eval_every, max_resource=definition.timesteps)
    return optuna.pruners.NopPruner()


def failure_reason(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {os.path.basename(last[0].filename)}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {str(exc).strip()[:500]}{where}"


def run_trial(
    storage: optuna.storages.RDBStorage,
    study_name: str,
    trial_id: int,
    definition: StudyDefinition,
    config: WorkerConfig,
    shutdown: ShutdownFlag,
    retry: Retrier,
    retry_stale: RetryStaleTrial,
) -> str:
    """Train the claimed trial to its end; return its outcome (complete, pruned, failed, ...)."""
    from worker.training import train_trial  # torch and SB3: only once a trial really runs

    number = retry("loading trial", lambda: storage.get_trial_number_from_id(trial_id))
    study = retry(
        "loading study",
        lambda: optuna.load_study(
            study_name=study_name,
            storage=storage,
            sampler=make_sampler(definition, number),
            pruner=make_pruner(definition),
        ),
    )
    # The study caches trials it has read; read once so it knows the trial claimed on `storage`.
    retry("syncing study", lambda: study.get_trials(deepcopy=False))
    with Heartbeat(storage, trial_id, config.heartbeat_interval, config.health_file):
        trial = optuna.Trial(study, trial_id)
        params: dict[str, Any] = retry(
            "sampling", lambda: SAMPLE_PARAMS[definition.algo](trial, definition.space, definition.n_envs)
        )
        seed = int(trial.user_attrs.get("seed", definition.seed + number))
        _record(retry, trial, {"seed": seed, "hyperparams": params, "worker": WORKER_ID})
        log.info("trial %d of %s: %s seed=%d", number, study_name, params, seed)
        try:
            result = train_trial(
                definition,
                params,
                seed,
                trial,
                shutdown=shutdown,
                drain_seconds=config.drain_seconds,
                retry=retry,
            )
        except Exception as exc:  # noqa: BLE001 - any training failure ends this trial, not the worker
            reason = failure_reason(exc)
            log.warning("trial %d of %s failed: %s", number, study_name, reason)
            return _finish(retry, study, trial, "failed", {"fail_reason": reason}, state=TrialState.FAIL)
        attrs = result.attrs()
        if result.outcome == "handed back":
            waited = shutdown.seconds_since_request()
            log.info("trial %d of %s handed back %.1f s after the signal", number, study_name, waited)
            _record(retry, trial, attrs)
            retry(
                "handing back",
                lambda: hand_back(storage, study, trial_id, "worker shut down", retry_stale),
            )
            return "handed back"
        if result.outcome == "pruned":
            return _finish(retry, study, trial, "pruned", attrs, state=TrialState.PRUNED)
        return _finish(retry, study, trial, "complete", attrs, value=result.value)


def _record(retry: Retrier, trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        retry("recording", lambda k=key, v=value: trial.set_user_attr(k, v))


def _finish(
    retry: Retrier,
    study: optuna.Study,
    trial: optuna.Trial,
    outcome: str,
    attrs: dict[str, Any],
    *,
    state: TrialState | None = None,
    value: float | None = None,
) -> str:
    try:
        _record(retry, trial, attrs)
        retry("telling", lambda: study.tell(trial, value, state=state))
    except optuna.exceptions.UpdateFinishedTrialError:
        log.warning(
            "trial %d was declared stale while this worker was cut off; its retry counts instead",
            trial.number,
        )
        return "superseded"
    log.info(
        "trial %d of %s %s%s", trial.number, study.study_name, outcome, "" if value is None else f" (value {value:.2f})"
    )
    return outcome
