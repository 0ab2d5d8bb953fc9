"""SB3 callbacks of a trial: evaluate-report-prune, and drain on shutdown."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback

from worker.shutdown import ShutdownFlag

log = logging.getLogger(__name__)


class DivergedError(RuntimeError):
    """Training produced non-finite values."""


class StopOnNonFinite(BaseCallback):
    """Raise :class:`DivergedError` when observations, rewards or actions stop being finite.

    SB3's ``VecCheckNan`` does this check too, but costs 5-7 % of PPO's HalfCheetah throughput
    (benchmarks/throughput.py); one ``np.isfinite`` per array per step costs well under 1 %.
    """

    CHECKED = ("new_obs", "rewards", "actions")

    def _on_step(self) -> bool:
        for key in self.CHECKED:
            value = self.locals.get(key)
            if isinstance(value, np.ndarray) and not np.isfinite(value).all():
                raise DivergedError(f"training diverged: non-finite {key} at step {self.num_timesteps}")
        return True


class TrialEvalCallback(EvalCallback):
    """Deterministic periodic evaluation, reported to the Optuna trial, which may prune it."""

    def __init__(
        self,
        eval_env: Any,
        trial: optuna.Trial,
        *,
        n_eval_episodes: int,
        eval_freq: int,
        retry: Callable[[str, Callable[[], Any]], Any],
    ) -> None:
        super().__init__(eval_env, n_eval_episodes=n_eval_episodes, eval_freq=eval_freq, deterministic=True, verbose=0)
        self.trial = trial
        self.retry = retry
        self.pruned = False
        self.eval_seconds = 0.0
        self.curve: list[list[float]] = []

    def evaluate_now(self) -> float:
        started = time.perf_counter()
        self.n_calls, saved = self.eval_freq, self.n_calls  # make EvalCallback evaluate at once
        try:
            super()._on_step()
        finally:
            self.n_calls = saved
            self.eval_seconds += time.perf_counter() - started
        value = float(self.last_mean_reward)
        if not math.isfinite(value):
            raise DivergedError(f"evaluation mean reward is {value} at step {self.num_timesteps}")
        self.curve.append([self.num_timesteps, value])
        return value

    def _on_step(self) -> bool:
        if self.n_calls % self.eval_freq:
            return True
        value = self.evaluate_now()
        # Reporting and asking the pruner are timed with evaluation, apart from training throughput.
        started = time.perf_counter()
        try:
            self.retry("reporting", lambda: self.trial.report(value, step=self.num_timesteps))
            self.pruned = self.retry("pruning check", self.trial.should_prune)
        finally:
            self.eval_seconds += time.perf_counter() - started
        return not self.pruned

    @property
    def last_evaluated_step(self) -> int:
        return int(self.curve[-1][0]) if self.curve else -1


class DrainOnShutdown(BaseCallback):
    """On the first shutdown signal, decide once: finish the trial within ``drain_seconds``, or stop.

    The estimate is the remaining training steps at the measured training rate plus the remaining
    evaluations at their measured duration. A signal in the first seconds of training waits (at most
    ``MEASURE_SECONDS``) until the rate means something.
    """

    MEASURE_SECONDS = 2.0

    def __init__(self, flag: ShutdownFlag, evaluator: TrialEvalCallback, drain_seconds: float, total: int) -> None:
        super().__init__()
        self.flag = flag
        self.evaluator = evaluator
        self.drain_seconds = drain_seconds
        self.total = total
        self.decision: str | None = None
        self._started = time.perf_counter()
        self._first_step = 0

    def _on_training_start(self) -> None:
        self._started = time.perf_counter()
        self._first_step = self.num_timesteps

    def estimated_seconds_left(self) -> float:
        train_seconds = max(time.perf_counter() - self._started - self.evaluator.eval_seconds, 1e-9)
        rate = max(self.num_timesteps - self._first_step, 1) / train_seconds
        steps_left = max(self.total - self.num_timesteps, 0)
        n_evals = max(len(self.evaluator.curve), 1)
        evals_left = steps_left // (self.evaluator.eval_freq * self.training_env.num_envs) + 1
        return steps_left / rate + evals_left * self.evaluator.eval_seconds / n_evals

    def _on_step(self) -> bool:
        if not self.flag.requested or self.decision is not None:
            return self.decision != "hand back"
        measuring = time.perf_counter() - self._started < self.MEASURE_SECONDS
        if measuring and self.flag.seconds_since_request() < self.MEASURE_SECONDS:
            return True
        estimate = self.estimated_seconds_left()
        self.decision = "finish" if estimate <= self.drain_seconds else "hand back"
        log.info(
            "shutdown: trial needs ~%.0f s more, drain budget %.0f s -> %s",
            estimate,
            self.drain_seconds,
            self.decision,
        )
        return self.decision == "finish"
