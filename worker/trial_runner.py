"""Run one claimed trial: sample, train (a :data:`Trainer`), report, and record the outcome on the trial.

Whatever goes wrong inside a trial ends that trial (FAIL with a reason) and the worker goes on; a
trial whose study was deleted meanwhile is dropped, with the files it uploaded; one declared stale
while this worker was cut off is left to its retry. Every write goes through the trial's session
(``worker/trial_session.py``), which first checks that the row is still this worker's claim. Only a
shutdown signal during a database wait, or a database outage longer than the retry deadline, leaves
this function by an exception (the trial then turns stale and is retried).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import traceback
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from study_contract import protocol
from study_contract.algorithms import algorithm
from study_contract.definition import SEED_SPACE, StudyDefinition
from study_contract.engine.instances import queue_instances, settle
from study_contract.names import Stage
from study_contract.store.cache import PlayedTrialsStorage
from study_contract.store.catalog import TuningStudy, load_definition, study_id_of
from study_contract.store.claims import beat
from worker.db import DatabaseUnavailable, RetryAborted
from worker.faults import crash_point
from worker.heartbeat import Heartbeat
from worker.outcomes import Outcome, TrainingResult
from worker.slots import hand_back, release
from worker.study_health import pause_if_failing
from worker.trial_session import TrialGone, TrialSession

log = logging.getLogger(__name__)
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"

Trainer = Callable[[TrialSession, optuna.Trial, dict[str, Any], int], TrainingResult]
"""Trains a claimed trial with the sampled parameters and seed: :func:`worker.training.train_trial`, or a
stand-in (tests, simulated fleets)."""


def train_with_sb3(session: TrialSession, trial: optuna.Trial, params: dict[str, Any], seed: int) -> TrainingResult:
    from worker.training import train_trial  # torch and SB3: only once a trial really runs

    return train_trial(session, trial, params, seed)


def make_sampler(definition: StudyDefinition, trial_number: int) -> optuna.samplers.BaseSampler:
    # A fresh seed per trial: workers sharing one history must not draw identical configurations.
    seed = (definition.seed * 100_003 + trial_number) % SEED_SPACE
    if definition.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed, constant_liar=True, multivariate=True, n_startup_trials=tpe_startup_trials(definition.n_trials)
    )


def tpe_startup_trials(n_trials: int) -> int:
    """Random trials before TPE models the rest: Optuna's 10, or a tenth of a larger budget. Fewer (3)
    made small studies exploit too early: benchmarks/versus_zoo.py on Pendulum-v1, 12 trials x 30000
    steps, fresh-seed IQM -645 against -183."""
    return max(10, n_trials // 10)


def make_pruner(definition: StudyDefinition) -> optuna.pruners.BasePruner:
    if definition.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=definition.pruner_startup_trials,
            n_warmup_steps=int(definition.pruner_warmup * definition.timesteps),
        )
    if definition.pruner == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=definition.eval_every, reduction_factor=3)
    if definition.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=definition.eval_every, max_resource=definition.timesteps)
    if definition.pruner == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=WILCOXON_P)
    return optuna.pruners.NopPruner()


WILCOXON_P = 0.1  # Optuna's default: prune once a trial's curve is worse than the best's with p < 0.1


def failure_reason(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {os.path.basename(last[0].filename)}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {str(exc).strip()[:500]}{where}"


def run_trial(session: TrialSession, train: Trainer = train_with_sb3) -> Outcome:
    """Train the claimed trial to its end; what it came to. An instance's end may settle its configuration."""
    outcome = _run_claimed(session, train)
    if session.definition.stage == Stage.INSTANCES and outcome != Outcome.RELEASED:
        _settle_configuration(session)
    return outcome


def _settle_configuration(session: TrialSession) -> None:
    """End the instance's configuration if its instances are done, or race it out, and pause its study if its
    configurations all fail the same way; a failure here is logged, and the maintenance of its tuning study
    settles the configuration later."""
    parent = session.definition.parent or ""
    try:
        settled = session.retry("settling its configuration", lambda: settle(session.storage, parent))
        for ended in settled:
            log.info("trial %d of %s %s%s", ended.number, parent, ended.state.name.lower(),
                     "" if ended.value is None else f" (value {ended.value:.4g} over its instances)")  # fmt: skip
        if any(ended.state == TrialState.FAIL for ended in settled):
            tuning = TuningStudy(study_id_of(session.storage, parent), parent, load_definition(session.storage, parent))
            session.retry("checking failures", lambda: pause_if_failing(session.storage, tuning))
    except (RetryAborted, DatabaseUnavailable):
        raise
    except Exception as exc:  # noqa: BLE001 - its study's trouble, never the worker's
        log.warning("%s: its configuration in %s not settled: %s", session.label, parent, failure_reason(exc))


def _run_claimed(session: TrialSession, train: Trainer) -> Outcome:
    with Heartbeat(lambda: beat(session.storage.engine, session.claim), session.config.heartbeat_interval,
                   name=session.label):  # fmt: skip
        try:
            return _run(session, train)
        except (RetryAborted, DatabaseUnavailable):
            raise
        except TrialGone as exc:
            log.info("%s: %s; going on", session.label, exc)
            if exc.deleted:
                session.remove_uploads()
            return Outcome.DROPPED
        except Exception as exc:  # noqa: BLE001 - anything else ends this trial, never the worker
            return _fail(session, failure_reason(exc))


def _run(session: TrialSession, train: Trainer) -> Outcome:
    definition, trial_id, name = session.definition, session.trial_id, session.study.name
    number = session.guarded("loading trial", lambda: session.storage.get_trial_number_from_id(trial_id))
    crash_point("setup")
    if session.shutdown.requested:
        session.guarded("releasing", lambda: release(session.storage, trial_id))
        return Outcome.RELEASED
    study = session.retry(
        "loading study",
        lambda: optuna.load_study(
            study_name=name,
            storage=PlayedTrialsStorage(session.storage),  # never reads the budget's WAITING trials
            sampler=make_sampler(definition, number),
            pruner=make_pruner(definition),
        ),
    )
    # The study caches trials it has read; read once so it knows the trial claimed on `storage`.
    session.retry("syncing study", lambda: study.get_trials(deepcopy=False))
    trial = optuna.Trial(study, trial_id)
    entry = algorithm(definition.algo)
    sampled = session.guarded("sampling", lambda: entry.sample(trial, definition.space, definition.n_envs))
    params = definition.check_params(sampled)  # a slot's fixed values come from the database
    queued = protocol.decode_attrs(trial.user_attrs, protocol.USER_ATTRS)  # what its slot was queued with
    seed = queued.get(protocol.SEED, definition.trial_seed(number))
    if len(definition.tasks) > 1 and not definition.has_instances:  # a multi-task study's confirmation run
        session.train_on(queued.get(protocol.TASK, ""))
    session.record({protocol.SEED: seed, protocol.HYPERPARAMS: params, protocol.WORKER: WORKER_ID})
    if definition.has_instances:
        queue = functools.partial(queue_instances, session.storage, name, definition, session.claim, params)
        if not session.guarded("queueing instances", queue):
            raise TrialGone("it was failed as stale before its instances were queued; its retry queues them",
                            deleted=False)  # fmt: skip
        log.info("trial %d of %s: %s queued as %d instances", number, name, params,
                 len(definition.tasks) * definition.seeds_per_config)  # fmt: skip
        return Outcome.QUEUED
    log.info("trial %d of %s: %s seed=%d", number, name, params, seed)
    result = train(session, trial, params, seed)
    attrs = result.attrs()
    if result.outcome == Outcome.HANDED_BACK:
        log.info("trial %d of %s handed back %.1f s after the signal", number, name,
                 session.shutdown.seconds_since_request())  # fmt: skip
        session.record(attrs)
        give_back = functools.partial(hand_back, session.storage, session.study.study_id, trial_id, "worker shut down")
        session.guarded("handing back", give_back)
        return Outcome.HANDED_BACK
    if result.outcome == Outcome.PRUNED:
        return _finish(session, study, trial, Outcome.PRUNED, attrs, state=TrialState.PRUNED)
    values = [result.value, result.relative_compute] if definition.two_objectives else result.value
    return _finish(session, study, trial, Outcome.COMPLETE, attrs, value=values)


def _tell(
    session: TrialSession, study: optuna.Study, trial: optuna.Trial, value: Any, state: TrialState | None
) -> None:
    try:
        study.tell(trial, value, state=state)
    except ValueError:  # Optuna refuses to tell a finished trial: another worker failed it as stale
        if session.storage.get_trial(session.trial_id).state.is_finished():
            raise optuna.exceptions.UpdateFinishedTrialError() from None
        raise


def _fail(session: TrialSession, reason: str) -> Outcome:
    log.warning("%s failed: %s", session.label, reason)
    storage, trial_id = session.storage, session.trial_id
    try:
        for key, value in ((protocol.FAIL_REASON, reason), (protocol.RETRY, False)):
            session.guarded("recording", functools.partial(storage.set_trial_user_attr, trial_id, key, value))
        session.guarded("failing", lambda: storage.set_trial_state_values(trial_id, state=TrialState.FAIL))
    except TrialGone as exc:
        if exc.deleted:
            session.remove_uploads()
        return Outcome.DROPPED
    session.retry("checking failures", lambda: pause_if_failing(storage, session.study))
    return Outcome.FAILED


def _finish(
    session: TrialSession,
    study: optuna.Study,
    trial: optuna.Trial,
    outcome: Outcome,
    attrs: dict[str, Any],
    *,
    state: TrialState | None = None,
    value: Any = None,
) -> Outcome:
    session.record(attrs)
    crash_point("finish")
    session.guarded("telling", lambda: _tell(session, study, trial, value, state))
    log.info("trial %d of %s %s%s", trial.number, session.study.name, outcome,
             "" if value is None else f" (value {value})")  # fmt: skip
    return outcome
