"""Build the envs and the SB3 model of one trial, train it, and evaluate it."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from study_admin.definition import StudyDefinition
from study_admin.space import schedule_and_wrappers, to_sb3_kwargs
from worker.callbacks import DrainOnShutdown, StopOnNonFinite, TrialEvalCallback
from worker.schedules import make_schedule
from worker.shutdown import ShutdownFlag

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC}
EVAL_SEED_OFFSET = 1_000_003


@dataclass
class TrainingResult:
    outcome: str  # "complete", "pruned" or "handed back"
    value: float | None
    env_steps: int
    wall_seconds: float
    eval_seconds: float
    curve: list[list[float]] = field(default_factory=list)

    @property
    def train_steps_per_second(self) -> float:
        return self.env_steps / max(self.wall_seconds - self.eval_seconds, 1e-9)

    def attrs(self) -> dict[str, Any]:
        return {
            "env_steps": self.env_steps,
            "wall_seconds": round(self.wall_seconds, 3),
            "eval_seconds": round(self.eval_seconds, 3),
            "train_steps_per_second": round(self.train_steps_per_second, 2),
            "eval_curve": self.curve,
        }


def make_envs(definition: StudyDefinition, normalize: bool, seed: int) -> tuple[VecEnv, VecEnv]:
    """Training envs and a separate, differently seeded evaluation env."""
    train_env: VecEnv = make_vec_env(definition.env_id, n_envs=definition.n_envs, seed=seed)
    eval_env: VecEnv = make_vec_env(definition.env_id, n_envs=1, seed=seed + EVAL_SEED_OFFSET)
    if normalize:
        train_env = VecNormalize(train_env)
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
    return train_env, eval_env


def build_model(definition: StudyDefinition, params: dict[str, Any], env: VecEnv, seed: int) -> BaseAlgorithm:
    kwargs = to_sb3_kwargs(definition.algo, params)
    kwargs["learning_rate"] = make_schedule(params["lr_schedule"], params["learning_rate"])
    return ALGORITHMS[definition.algo](definition.policy, env, seed=seed, device="cpu", verbose=0, **kwargs)


def train_trial(
    definition: StudyDefinition,
    params: dict[str, Any],
    seed: int,
    trial: optuna.Trial,
    *,
    shutdown: ShutdownFlag,
    drain_seconds: float,
    retry: Callable[[str, Callable[[], Any]], Any],
) -> TrainingResult:
    normalize = schedule_and_wrappers(params)["normalize_observations"]
    train_env, eval_env = make_envs(definition, normalize, seed)
    try:
        model = build_model(definition, params, train_env, seed)
        evaluator = TrialEvalCallback(
            eval_env,
            trial,
            n_eval_episodes=definition.eval_episodes,
            eval_freq=max(definition.eval_every // definition.n_envs, 1),
            retry=retry,
        )
        drain = DrainOnShutdown(shutdown, evaluator, drain_seconds, definition.timesteps)
        # Park the worker's long-lived objects (Optuna, SQLAlchemy, ...) outside the garbage collector's
        # scans: training allocates constantly, and rescanning them cost ~1.5 % of throughput.
        gc.collect()
        gc.freeze()
        started = time.perf_counter()
        model.learn(definition.timesteps, callback=CallbackList([StopOnNonFinite(), evaluator, drain]))
        if drain.decision == "hand back":
            outcome = "handed back"
        elif evaluator.pruned:
            outcome = "pruned"
        else:
            outcome = "complete"
            if evaluator.last_evaluated_step != model.num_timesteps:
                evaluator.evaluate_now()  # the value of a trial is its final evaluation
        value = evaluator.curve[-1][1] if evaluator.curve else None
        return TrainingResult(
            outcome=outcome,
            value=value,
            env_steps=model.num_timesteps,
            wall_seconds=time.perf_counter() - started,
            eval_seconds=evaluator.eval_seconds,
            curve=evaluator.curve,
        )
    finally:
        gc.unfreeze()  # this trial's model and envs must be collectable once it ends
        train_env.close()
        eval_env.close()
