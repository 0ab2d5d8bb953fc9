"""SB3 callbacks of a trial: evaluate-report-prune, drain on shutdown, progress and health, divergence."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import numpy as np
import optuna
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback

from study_contract.formatting import format_duration
from worker.faults import crash_point
from worker.health import Pulse
from worker.shutdown import ShutdownFlag

log = logging.getLogger(__name__)


class DivergedError(RuntimeError):
    """Training produced non-finite values."""


class TrialTimeout(RuntimeError):
    """The trial trained longer than ``--max-trial-seconds``."""


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
    """Deterministic periodic evaluation, reported to the Optuna trial, which may prune it (unless ``trial`` is
    None: Optuna lets no two-objective trial report or be pruned, and a reproduction reports to no one; the
    curve is kept all the same).

    An evaluation due at or after ``final_step`` is left to the caller: SB3 still updates the policy
    after the last callback of a rollout, and a trial's value must be that of the model it leaves.
    """

    def __init__(
        self,
        eval_env: Any,
        trial: optuna.Trial | None,
        *,
        n_eval_episodes: int,
        eval_freq: int,
        final_step: int,
        retry: Callable[[str, Callable[[], Any]], Any],
        pulse: Pulse,
    ) -> None:
        super().__init__(eval_env, n_eval_episodes=n_eval_episodes, eval_freq=eval_freq, deterministic=True, verbose=0)
        self.final_step = final_step
        self.pulse = pulse
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

    def _log_success_callback(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        """Called by SB3 at every evaluation step: a long evaluation is progress too."""
        super()._log_success_callback(locals_, globals_)
        self.pulse()

    def _on_step(self) -> bool:
        if self.n_calls % self.eval_freq or self.num_timesteps >= self.final_step:
            return True
        value = self.evaluate_now()
        trial = self.trial
        if trial is None:
            return True
        # Reporting and asking the pruner are timed with evaluation, apart from training throughput.
        started = time.perf_counter()
        try:
            self.retry("reporting", lambda: trial.report(value, step=self.num_timesteps))
            self.pruned = self.retry("pruning check", trial.should_prune)
        finally:
            self.eval_seconds += time.perf_counter() - started
        crash_point("evaluation")
        return not self.pruned

    @property
    def reports(self) -> bool:
        return self.trial is not None

    @property
    def last_value(self) -> float | None:
        return self.curve[-1][1] if self.curve else None


class TrainingClock(BaseCallback):
    """Training time apart from evaluation: the rate, and the time a trial still needs at that rate."""

    def __init__(
        self, evaluator: TrialEvalCallback, total: int, *, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        super().__init__()
        self.evaluator = evaluator
        self.total = total
        self.clock = clock
        self.started = clock()
        self.first_step = 0

    def _on_training_start(self) -> None:
        self.started = self.clock()
        self.first_step = self.num_timesteps

    def _on_step(self) -> bool:
        return True

    @property
    def seconds(self) -> float:
        return self.clock() - self.started

    @property
    def steps_per_second(self) -> float:
        train_seconds = max(self.seconds - self.evaluator.eval_seconds, 1e-9)
        return max(self.num_timesteps - self.first_step, 1) / train_seconds

    def seconds_left(self) -> float:
        """Remaining training steps at the measured rate plus the remaining evaluations at their measured length."""
        steps_left = max(self.total - self.num_timesteps, 0)
        n_evals = max(len(self.evaluator.curve), 1)
        evals_left = steps_left // (self.evaluator.eval_freq * self.training_env.num_envs) + 1
        return steps_left / self.steps_per_second + evals_left * self.evaluator.eval_seconds / n_evals


class DrainDecision(StrEnum):
    FINISH = "finish"
    HAND_BACK = "hand back"


class DrainOnShutdown(BaseCallback):
    """On the first shutdown signal, decide once: finish the trial within ``drain_seconds``, or stop.

    A signal in the first seconds of training waits (at most ``MEASURE_SECONDS``) until the rate
    means something.
    """

    MEASURE_SECONDS = 2.0

    def __init__(self, flag: ShutdownFlag, clock: TrainingClock, drain_seconds: float) -> None:
        super().__init__()
        self.flag = flag
        self.clock = clock
        self.drain_seconds = drain_seconds
        self.decision: DrainDecision | None = None

    def _on_step(self) -> bool:
        if not self.flag.requested or self.decision is not None:
            return self.decision != DrainDecision.HAND_BACK
        measuring = self.clock.seconds < self.MEASURE_SECONDS
        if measuring and self.flag.seconds_since_request() < self.MEASURE_SECONDS:
            return True
        estimate = self.clock.seconds_left()
        self.decision = DrainDecision.FINISH if estimate <= self.drain_seconds else DrainDecision.HAND_BACK
        log.info(
            "shutdown: trial needs ~%.0f s more, drain budget %.0f s -> %s",
            estimate,
            self.drain_seconds,
            self.decision,
        )
        return self.decision == DrainDecision.FINISH


class TrialProgress(BaseCallback):
    """Progress lines, progress records for ``study_admin``, the health file, and the trial's time limit.

    A line is logged at each evaluation and otherwise every ``interval`` seconds; the same numbers go
    to ``record`` (the trial's ``progress`` attribute). The health file is touched (``pulse``) while
    steps advance, so a hung training step makes the worker unhealthy.
    """

    def __init__(
        self,
        label: str,
        clock: TrainingClock,
        *,
        interval: float,
        record: Callable[[dict[str, Any]], None],
        pulse: Pulse,
        max_seconds: float | None,
    ) -> None:
        super().__init__()
        self.label = label
        self.clock = clock
        self.interval = interval
        self.record = record
        self.pulse = pulse
        self.max_seconds = max_seconds
        self._last_line = time.monotonic()
        self._evals_seen = 0

    def _on_step(self) -> bool:
        now = time.monotonic()
        self.pulse()
        if self.max_seconds is not None and self.clock.seconds > self.max_seconds:
            raise TrialTimeout(
                f"trial ran {self.clock.seconds:.0f} s, longer than --max-trial-seconds={self.max_seconds:g}"
            )
        evals = len(self.clock.evaluator.curve)
        if evals != self._evals_seen or now - self._last_line >= self.interval:
            self._evals_seen = evals
            self._last_line = now
            self.report()
        return True

    def report(self) -> dict[str, Any]:
        last = self.clock.evaluator.last_value
        progress: dict[str, Any] = {
            "env_steps": int(self.num_timesteps),
            "total": self.clock.total,
            "steps_per_second": round(self.clock.steps_per_second, 2),
            "last_eval": last,
            "eta_seconds": round(self.clock.seconds_left(), 1),
        }
        log.info(
            "progress %s env_steps=%d/%d (%.0f%%) steps_per_s=%.1f last_eval=%s eta=%s",
            self.label,
            progress["env_steps"],
            progress["total"],
            100 * progress["env_steps"] / max(progress["total"], 1),
            progress["steps_per_second"],
            "-" if last is None else f"{last:.2f}",
            format_duration(progress["eta_seconds"]),
        )
        self.record(progress)
        return progress
