"""Build the envs and the SB3 model of one trial, train it, and evaluate it."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
from study_contract.definition import EVAL_SEED_OFFSET, StudyDefinition, derive_seed
from worker.artifacts import TrialArtifacts
from worker.callbacks import DrainOnShutdown, StopOnNonFinite, TrainingClock, TrialEvalCallback, TrialProgress
from worker.health import Pulse
from worker.shutdown import ShutdownFlag

COMPUTE_CONSTRAINT = "compute_over_max"  # Optuna constraint: relative compute minus the study's max_compute


@dataclass(frozen=True, kw_only=True)
class TrainingOptions:
    """How the worker around a trial wants it run: shutdown, database retries, progress and health."""

    shutdown: ShutdownFlag
    drain_seconds: float
    retry: Callable[[str, Callable[[], Any]], Any]
    label: str
    progress_interval: float
    record_progress: Callable[[dict[str, Any]], None]
    health_file: str | None = None
    max_seconds: float | None = None
    artifacts: TrialArtifacts | None = None


@dataclass
class TrainingResult:
    outcome: str  # "complete", "pruned" or "handed back"
    value: float | None
    env_steps: int
    wall_seconds: float
    eval_seconds: float
    curve: list[list[float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    compute_per_step: float = 0.0
    relative_compute: float = 0.0

    @property
    def train_steps_per_second(self) -> float:
        return self.env_steps / max(self.wall_seconds - self.eval_seconds, 1e-9)

    def attrs(self) -> dict[str, Any]:
        measured = {}
        if self.env_steps:  # a configuration over max_compute never trained
            measured = {
                protocol.TRAIN_STEPS_PER_SECOND: round(self.train_steps_per_second, 2),
                protocol.SECONDS_PER_KSTEP: round(1000 / self.train_steps_per_second, 3),
            }
        return {
            protocol.ENV_STEPS: self.env_steps,
            protocol.WALL_SECONDS: round(self.wall_seconds, 3),
            protocol.EVAL_SECONDS: round(self.eval_seconds, 3),
            **measured,
            protocol.COMPUTE_PER_STEP: round(self.compute_per_step),
            protocol.RELATIVE_COMPUTE: round(self.relative_compute, 3),
            **self.extra,
        }


def make_envs(definition: StudyDefinition, normalize: bool, seed: int) -> tuple[VecEnv, VecEnv]:
    """Training envs and a separate, differently seeded evaluation env."""
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
    model_class, kwargs = algorithm(definition.algo).build(params, env.action_space, definition.backend)
    model: BaseAlgorithm = model_class(definition.policy, env, seed=seed, device="cpu", verbose=0, **kwargs)
    return model


def train_trial(
    definition: StudyDefinition, params: dict[str, Any], seed: int, trial: optuna.Trial, options: TrainingOptions
) -> TrainingResult:
    train_env, eval_env = make_envs(definition, bool(params.get("normalize", False)), seed)
    entry, sizes = algorithm(definition.algo), space_sizes(train_env)
    compute, relative = entry.cost(params, *sizes), entry.relative_cost(params, *sizes)
    pulse = Pulse(options.health_file)
    try:
        if definition.max_compute:
            excess = relative - definition.max_compute
            options.retry("constraining", lambda: trial.set_constraint(COMPUTE_CONSTRAINT, excess))
            reference = trial.user_attrs.get(protocol.BASELINE) is True  # SB3's defaults: what the cap is relative to
            if excess > 0 and not reference:  # not worth training: Optuna's constrained TPE learns it is infeasible
                reason = f"{relative:.2f}x the defaults' compute exceeds max_compute={definition.max_compute:g}"
                return TrainingResult("pruned", None, 0, 0.0, 0.0, extra={protocol.PRUNED_REASON: reason},
                                      compute_per_step=compute, relative_compute=relative)  # fmt: skip
        model = build_model(definition, params, train_env, seed)
        evaluator = TrialEvalCallback(
            eval_env,
            trial,
            n_eval_episodes=definition.eval_episodes,
            eval_freq=max(definition.eval_every // definition.n_envs, 1),
            final_step=definition.timesteps,
            retry=options.retry,
            pulse=pulse,
            reports=not definition.two_objectives,
        )
        clock = TrainingClock(evaluator, definition.timesteps)
        drain = DrainOnShutdown(options.shutdown, clock, options.drain_seconds)
        progress = TrialProgress(
            options.label,
            clock,
            interval=options.progress_interval,
            record=options.record_progress,
            pulse=pulse,
            max_seconds=options.max_seconds,
        )
        # Park the worker's long-lived objects (Optuna, SQLAlchemy, ...) outside the garbage collector's
        # scans: training allocates constantly, and rescanning them cost ~1.5 % of throughput.
        gc.collect()
        gc.freeze()
        started = time.perf_counter()
        callbacks = CallbackList([StopOnNonFinite(), evaluator, clock, drain, progress])
        model.learn(definition.timesteps, callback=callbacks)
        if drain.decision == "hand back":
            outcome = "handed back"
        elif evaluator.pruned:
            outcome = "pruned"
        else:
            outcome = "complete"
            value = evaluator.evaluate_now()  # the value of a trial: the final model's evaluation
            if evaluator.reports:
                options.retry("reporting", lambda: trial.report(value, step=model.num_timesteps))
            progress.report()
        wall_seconds = time.perf_counter() - started
        extra: dict[str, Any] = {protocol.CURVE: evaluator.curve} if not evaluator.reports else {}
        if options.artifacts is not None:
            extra |= options.artifacts.save(model, train_env, evaluator.curve, outcome, evaluator.last_value, pulse)
        return TrainingResult(
            outcome=outcome,
            value=evaluator.last_value,
            env_steps=model.num_timesteps,
            wall_seconds=wall_seconds,
            eval_seconds=evaluator.eval_seconds,
            curve=evaluator.curve,
            extra=extra,
            compute_per_step=compute,
            relative_compute=relative,
        )
    finally:
        gc.unfreeze()  # this trial's model and envs must be collectable once it ends
        train_env.close()
        eval_env.close()
        if definition.backend == SBX:
            import jax  # JAX keeps every trial's compiled functions: 850 -> 1240 MB over 14 TD3 trials without this

            jax.clear_caches()
