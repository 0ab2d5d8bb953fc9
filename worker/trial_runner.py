"""Run one claimed trial: sample, train, report, and record the outcome on the trial.

Whatever goes wrong inside a trial ends that trial (FAIL with a reason) and the worker goes on; a
trial whose study was deleted meanwhile is dropped, with the files it uploaded; one declared stale
while this worker was cut off is left to its retry. Every write first checks that the row is still
this worker's claim (:meth:`TrialContext.guarded`): on the embedded storage a deleted study's ids go to
the next study, and a late write would land in someone else's trial. Only a shutdown signal during a
database wait, or a database outage longer than the retry deadline, leaves this function by an
exception (the trial then turns stale and is retried).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import optuna
from optuna.trial import TrialState

from study_contract import protocol
from study_contract.algorithms import algorithm
from study_contract.definition import SEED_SPACE, StudyDefinition
from study_contract.store.cache import PlayedTrialsStorage
from study_contract.store.catalog import TuningStudy
from study_contract.store.claims import Claim, beat, lost_claim
from worker.config import WorkerConfig
from worker.db import DatabaseUnavailable, Retrier, RetryAborted
from worker.faults import crash_point
from worker.heartbeat import Heartbeat
from worker.shutdown import ShutdownFlag
from worker.slots import hand_back, release
from worker.study_health import pause_if_failing

log = logging.getLogger(__name__)
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
T = TypeVar("T")


class TrialGone(RuntimeError):
    """The trial's study was deleted, or the trial was failed by another worker, while this one ran it."""

    def __init__(self, message: str, *, deleted: bool) -> None:
        super().__init__(message)
        self.deleted = deleted


@dataclass(frozen=True, kw_only=True)
class TrialContext:
    """One claimed trial and everything the worker lends to run it."""

    storage: optuna.storages.RDBStorage
    study: TuningStudy
    claim: Claim
    config: WorkerConfig
    shutdown: ShutdownFlag
    retry: Retrier
    artifact_store: Any = None
    uploaded: list[str] = field(default_factory=list)
    """Ids of the artifacts this trial uploaded (removed again if its study is deleted meanwhile)."""

    @property
    def definition(self) -> StudyDefinition:
        assert self.study.definition is not None  # only readable studies are served
        return self.study.definition

    @property
    def trial_id(self) -> int:
        return self.claim.trial_id

    def check(self) -> None:
        """Raise :class:`TrialGone` unless the trial is still this worker's claim."""
        why = lost_claim(self.storage.engine, self.claim)
        if why == "deleted":
            raise TrialGone("its study was deleted", deleted=True)
        if why == "finished":
            raise TrialGone("it was failed as stale while this worker was cut off; its retry counts instead",
                            deleted=False)  # fmt: skip

    def guarded(self, what: str, fn: Callable[[], T]) -> T:
        """``fn`` (database work on this trial) with retries, once the trial is known to be still this
        worker's claim, and with a missing or finished trial turned into :class:`TrialGone`."""

        def call() -> T:
            self.check()
            return _gone_if_missing(fn)

        return self.retry(what, call)


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


def run_trial(ctx: TrialContext) -> str:
    """Train the claimed trial to its end; return its outcome (complete, pruned, failed, dropped, ...)."""
    label = f"trial id {ctx.trial_id} of {ctx.study.name}"
    with Heartbeat(lambda: beat(ctx.storage.engine, ctx.claim), ctx.config.heartbeat_interval, name=label):
        try:
            return _run(ctx)
        except (RetryAborted, DatabaseUnavailable):
            raise
        except TrialGone as exc:
            log.info("%s: %s; going on", label, exc)
            if exc.deleted:
                _remove_uploads(ctx)
            return "dropped"
        except Exception as exc:  # noqa: BLE001 - anything else ends this trial, never the worker
            return _fail(ctx, failure_reason(exc))


def _run(ctx: TrialContext) -> str:
    from worker.artifacts import TrialArtifacts  # torch and SB3: only once a trial really runs
    from worker.training import TrainingOptions, train_trial

    definition = ctx.definition
    number = ctx.guarded("loading trial", lambda: ctx.storage.get_trial_number_from_id(ctx.trial_id))
    crash_point("setup")
    if ctx.shutdown.requested:
        ctx.guarded("releasing", lambda: release(ctx.storage, ctx.trial_id))
        return "released"
    study = ctx.retry(
        "loading study",
        lambda: optuna.load_study(
            study_name=ctx.study.name,
            storage=PlayedTrialsStorage(ctx.storage),  # never reads the budget's WAITING trials
            sampler=make_sampler(definition, number),
            pruner=make_pruner(definition),
        ),
    )
    # The study caches trials it has read; read once so it knows the trial claimed on `storage`.
    ctx.retry("syncing study", lambda: study.get_trials(deepcopy=False))
    trial = optuna.Trial(study, ctx.trial_id)
    entry = algorithm(definition.algo)
    sampled = ctx.guarded("sampling", lambda: entry.sample(trial, definition.space, definition.n_envs))
    params = definition.check_params(sampled)  # a slot's fixed values come from the database
    queued = protocol.decode_attrs(trial.user_attrs, protocol.USER_ATTRS)  # what its slot was queued with
    seed = queued.get(protocol.SEED, definition.trial_seed(number))
    _record(ctx, trial, {protocol.SEED: seed, protocol.HYPERPARAMS: params, protocol.WORKER: WORKER_ID})
    log.info("trial %d of %s: %s seed=%d", number, ctx.study.name, params, seed)
    # A confirmation run competes with its candidate's other seeds for keeping a model and a video.
    confirming = definition.stage == "confirmation"
    rivals = (protocol.CANDIDATE, queued.get(protocol.CANDIDATE)) if confirming else None
    options = TrainingOptions(
        shutdown=ctx.shutdown,
        drain_seconds=ctx.config.drain_seconds,
        retry=ctx.guarded,
        label=f"study={ctx.study.name} trial={number}",
        progress_interval=ctx.config.progress_interval,
        record_progress=lambda progress: _record_progress(ctx, progress),
        health_file=ctx.config.health_file,
        max_seconds=ctx.config.max_trial_seconds,
        artifacts=None
        if ctx.artifact_store is None
        else TrialArtifacts(
            ctx.artifact_store,
            trial,
            save_models=definition.save_models,
            rivals=rivals,
            env_id=definition.env_id,
            seed=seed,
            check=ctx.check,
            uploaded=ctx.uploaded,
        ),  # fmt: skip
    )
    result = train_trial(definition, params, seed, trial, options)
    attrs = result.attrs()
    if result.outcome == "handed back":
        log.info("trial %d of %s handed back %.1f s after the signal", number, ctx.study.name,
                 ctx.shutdown.seconds_since_request())  # fmt: skip
        _record(ctx, trial, attrs)
        ctx.guarded("handing back",
                    lambda: hand_back(ctx.storage, ctx.study.study_id, ctx.trial_id, "worker shut down"))  # fmt: skip
        return "handed back"
    if result.outcome == "pruned":
        return _finish(ctx, study, trial, "pruned", attrs, state=TrialState.PRUNED)
    values = [result.value, result.relative_compute] if definition.two_objectives else result.value
    return _finish(ctx, study, trial, "complete", attrs, value=values)


def _gone_if_missing(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except KeyError:
        raise TrialGone("its study was deleted", deleted=True) from None
    except optuna.exceptions.UpdateFinishedTrialError:
        raise TrialGone("it was failed as stale while this worker was cut off; its retry counts instead",
                        deleted=False) from None  # fmt: skip


def _tell(ctx: TrialContext, study: optuna.Study, trial: optuna.Trial, value: Any, state: TrialState | None) -> None:
    try:
        study.tell(trial, value, state=state)
    except ValueError:  # Optuna refuses to tell a finished trial: another worker failed it as stale
        if ctx.storage.get_trial(ctx.trial_id).state.is_finished():
            raise optuna.exceptions.UpdateFinishedTrialError() from None
        raise


def _record(ctx: TrialContext, trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        ctx.guarded("recording", functools.partial(trial.set_user_attr, key, value))


def _record_progress(ctx: TrialContext, progress: dict[str, Any]) -> None:
    """Best effort (no retries: training must not wait); a trial that is gone stops training."""
    try:
        ctx.check()
        _gone_if_missing(lambda: ctx.storage.set_trial_user_attr(ctx.trial_id, protocol.PROGRESS, progress))
    except TrialGone:
        raise
    except Exception as exc:  # noqa: BLE001 - progress is informative; the database may be restarting
        log.debug("progress of trial id %d not recorded: %s", ctx.trial_id, exc)


def _remove_uploads(ctx: TrialContext) -> None:
    """Remove the files this trial uploaded: its study is gone, and nothing refers to them any more."""
    for artifact_id in ctx.uploaded:
        try:
            ctx.artifact_store.remove(artifact_id)
        except Exception as exc:  # noqa: BLE001 - a store that cannot remove one file must not stop the worker
            log.warning("artifact %s of a deleted study not removed: %s", artifact_id, exc)


def _fail(ctx: TrialContext, reason: str) -> str:
    log.warning("trial id %d of %s failed: %s", ctx.trial_id, ctx.study.name, reason)
    try:
        for key, value in ((protocol.FAIL_REASON, reason), (protocol.RETRY, False)):
            ctx.guarded("recording", functools.partial(ctx.storage.set_trial_user_attr, ctx.trial_id, key, value))
        ctx.guarded("failing", lambda: ctx.storage.set_trial_state_values(ctx.trial_id, state=TrialState.FAIL))
    except TrialGone as exc:
        if exc.deleted:
            _remove_uploads(ctx)
        return "dropped"
    ctx.retry("checking failures", lambda: pause_if_failing(ctx.storage, ctx.study))
    return "failed"


def _finish(
    ctx: TrialContext,
    study: optuna.Study,
    trial: optuna.Trial,
    outcome: str,
    attrs: dict[str, Any],
    *,
    state: TrialState | None = None,
    value: Any = None,
) -> str:
    _record(ctx, trial, attrs)
    crash_point("finish")
    ctx.guarded("telling", lambda: _tell(ctx, study, trial, value, state))
    log.info("trial %d of %s %s%s", trial.number, ctx.study.name, outcome, "" if value is None else f" (value {value})")
    return outcome
