"""The worker's trainer: build the envs and the SB3 model of one trial, train it, and finish it (final
evaluation, artifacts). :func:`train_trial` is the three steps; anything that goes wrong raises, and the
trial runner fails the trial."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Rollout videos render headless; MuJoCo reads this once, when a task first imports it (after this).
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import optuna
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from study_contract import protocol
from study_contract.algorithms import SBX, algorithm
from study_contract.algorithms.building import materialise
from study_contract.definition import EVAL_SEED_OFFSET, StudyDefinition, derive_seed
from worker.artifacts import TrialArtifacts
from worker.callbacks import (
    DrainDecision,
    DrainOnShutdown,
    StopOnNonFinite,
    TrainingClock,
    TrialEvalCallback,
    TrialProgress,
)
from worker.health import Pulse
from worker.outcomes import Outcome, TrainingResult
from worker.provenance import provenance
from worker.trial_session import TrialSession

COMPUTE_CONSTRAINT = "compute_over_max"  # Optuna constraint: relative compute minus the study's max_compute


def make_envs(definition: StudyDefinition, params: dict[str, Any], seed: int) -> tuple[VecEnv, VecEnv]:
    """Training envs and a separate, differently seeded evaluation env, wrapped as the configuration's recipe says."""
    normalize = algorithm(definition.algo).recipe(params, definition.backend).normalize
    train_env: VecEnv = make_vec_env(definition.env_id, n_envs=definition.n_envs, seed=seed)
    eval_env: VecEnv = make_vec_env(definition.env_id, n_envs=1, seed=derive_seed(seed, EVAL_SEED_OFFSET))
    if normalize:
        train_env = VecNormalize(train_env)
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
    return train_env, eval_env


def space_sizes(env: VecEnv) -> tuple[int, int]:
    """The sizes of one observation and one action, which size the networks."""
    return int(np.prod(env.observation_space.shape or (1,))), int(np.prod(env.action_space.shape or (1,)))


def build_model(definition: StudyDefinition, params: dict[str, Any], env: VecEnv, seed: int) -> BaseAlgorithm:
    recipe = algorithm(definition.algo).recipe(params, definition.backend)
    model_class, kwargs = materialise(recipe, env.action_space)
    model: BaseAlgorithm = model_class(definition.policy, env, seed=seed, device="cpu", verbose=0, **kwargs)
    return model


def make_evaluator(
    definition: StudyDefinition,
    eval_env: VecEnv,
    trial: optuna.Trial | None,
    *,
    retry: Callable[[str, Callable[[], Any]], Any],
    pulse: Pulse,
) -> TrialEvalCallback:
    """The study's evaluation schedule: every ``eval_every`` env-steps on ``eval_episodes`` episodes."""
    return TrialEvalCallback(
        eval_env,
        trial,
        n_eval_episodes=definition.eval_episodes,
        eval_freq=max(definition.eval_every // definition.n_envs, 1),
        final_step=definition.timesteps,
        retry=retry,
        pulse=pulse,
    )


@dataclass
class TrainingRun:
    """One trial's model, evaluation and callbacks while it trains."""

    model: BaseAlgorithm
    train_env: VecEnv
    evaluator: TrialEvalCallback
    drain: DrainOnShutdown
    progress: TrialProgress
    pulse: Pulse
    compute_per_step: float
    relative_compute: float
    started: float = 0.0


def train_trial(session: TrialSession, trial: optuna.Trial, params: dict[str, Any], seed: int) -> TrainingResult:
    """The worker's trainer: build the trial's model, train it to its budget (or until pruned or handed back)
    and finish it (final evaluation, artifacts)."""
    definition = session.definition
    session.record({protocol.PROVENANCE: provenance(definition, seed)})
    train_env, eval_env = make_envs(definition, params, seed)
    try:
        entry, sizes = algorithm(definition.algo), space_sizes(train_env)
        compute, relative = entry.cost(params, *sizes), entry.relative_cost(params, *sizes)
        refused = _refuse_over_cap(session, trial, compute, relative)
        if refused is not None:
            return refused
        run = build(session, trial, params, seed, (train_env, eval_env), (compute, relative))
        learn(run, definition.timesteps)
        return finish(session, trial, run, seed)
    finally:
        gc.unfreeze()  # this trial's model and envs must be collectable once it ends
        train_env.close()
        eval_env.close()
        if definition.backend == SBX:
            import jax  # JAX keeps every trial's compiled functions: 850 -> 1240 MB over 14 TD3 trials without this

            jax.clear_caches()


def _refuse_over_cap(
    session: TrialSession, trial: optuna.Trial, compute: float, relative: float
) -> TrainingResult | None:
    """A pruned result for a configuration over the study's compute cap, which is not worth training; its
    constraint tells Optuna's constrained TPE that it is infeasible."""
    cap = session.definition.max_compute
    if not cap:
        return None
    excess = relative - cap
    session.guarded("constraining", lambda: trial.set_constraint(COMPUTE_CONSTRAINT, excess))
    reference = trial.user_attrs.get(protocol.BASELINE) is True  # SB3's defaults: what the cap is relative to
    if excess <= 0 or reference:
        return None
    reason = f"{relative:.2f}x the defaults' compute exceeds max_compute={cap:g}"
    return TrainingResult(Outcome.PRUNED, None, 0, 0.0, 0.0, extra={protocol.PRUNED_REASON: reason},
                          compute_per_step=compute, relative_compute=relative)  # fmt: skip


def build(
    session: TrialSession,
    trial: optuna.Trial,
    params: dict[str, Any],
    seed: int,
    envs: tuple[VecEnv, VecEnv],
    cost: tuple[float, float],
) -> TrainingRun:
    definition, config = session.definition, session.config
    train_env, eval_env = envs
    pulse = Pulse(config.health_file)
    reported = None if definition.two_objectives else trial  # Optuna lets no two-objective trial report
    evaluator = make_evaluator(definition, eval_env, reported, retry=session.guarded, pulse=pulse)
    clock = TrainingClock(evaluator, definition.timesteps)
    progress = TrialProgress(
        f"study={session.study.name} trial={trial.number}",
        clock,
        interval=config.progress_interval,
        record=session.record_progress,
        pulse=pulse,
        max_seconds=config.max_trial_seconds,
    )
    return TrainingRun(
        model=build_model(definition, params, train_env, seed),
        train_env=train_env,
        evaluator=evaluator,
        drain=DrainOnShutdown(session.shutdown, clock, config.drain_seconds),
        progress=progress,
        pulse=pulse,
        compute_per_step=cost[0],
        relative_compute=cost[1],
    )


def learn(run: TrainingRun, timesteps: int) -> None:
    # Park the worker's long-lived objects (Optuna, SQLAlchemy, ...) outside the garbage collector's
    # scans: training allocates constantly, and rescanning them cost ~1.5 % of throughput.
    gc.collect()
    gc.freeze()
    run.started = time.perf_counter()
    clock = run.drain.clock
    callbacks = CallbackList([StopOnNonFinite(), run.evaluator, clock, run.drain, run.progress])
    run.model.learn(timesteps, callback=callbacks)


def finish(session: TrialSession, trial: optuna.Trial, run: TrainingRun, seed: int) -> TrainingResult:
    """The outcome of a run that stopped: its final evaluation when complete, its artifacts."""
    evaluator, model = run.evaluator, run.model
    if run.drain.decision == DrainDecision.HAND_BACK:
        outcome = Outcome.HANDED_BACK
    elif evaluator.pruned:
        outcome = Outcome.PRUNED
    else:
        outcome = Outcome.COMPLETE
        value = evaluator.evaluate_now()  # the value of a trial: the final model's evaluation
        if evaluator.reports:
            session.guarded("reporting", lambda: trial.report(value, step=model.num_timesteps))
        run.progress.report()
    wall_seconds = time.perf_counter() - run.started
    extra: dict[str, Any] = {protocol.CURVE: evaluator.curve} if not evaluator.reports else {}
    if session.artifact_store is not None:
        artifacts = TrialArtifacts(session, trial, seed)
        extra |= artifacts.save(model, run.train_env, evaluator.curve, outcome, evaluator.last_value, run.pulse)
    return TrainingResult(
        outcome=outcome,
        value=evaluator.last_value,
        env_steps=model.num_timesteps,
        wall_seconds=wall_seconds,
        eval_seconds=evaluator.eval_seconds,
        curve=evaluator.curve,
        extra=extra,
        compute_per_step=run.compute_per_step,
        relative_compute=run.relative_compute,
    )
