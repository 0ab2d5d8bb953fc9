"""Search spaces to Optuna suggestions: one pure ``trial -> params`` function per algorithm.

Sizes are sampled as exponents of two and discounts as ``1 - gamma`` on a log scale, where the search
is well conditioned; the readable values are what these functions return and what the worker stores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from study_admin.space import ParamSpec, largest_pow2_at_most, optuna_name, smallest_pow2_at_least, to_optuna_value


def suggest(trial: optuna.Trial, name: str, spec: ParamSpec, *, low: Any = None, high: Any = None) -> Any:
    """One readable value for ``name``; ``low``/``high`` tighten the range (constraints)."""
    if spec.fixed:
        return spec.value
    lo = spec.low if low is None else low
    hi = spec.high if high is None else high
    internal = optuna_name(name, spec)
    if spec.kind == "float":
        return trial.suggest_float(internal, lo, hi, log=spec.log)
    if spec.kind == "int":
        return trial.suggest_int(internal, int(lo), int(hi), log=spec.log)
    if spec.kind == "pow2":
        return 2 ** trial.suggest_int(internal, to_optuna_value(spec, lo), to_optuna_value(spec, hi))
    if spec.kind == "discount":
        return 1.0 - trial.suggest_float(internal, to_optuna_value(spec, hi), to_optuna_value(spec, lo), log=True)
    return trial.suggest_categorical(internal, list(spec.choices))


def sample_ppo_params(trial: optuna.Trial, space: dict[str, ParamSpec], n_envs: int) -> dict[str, Any]:
    """PPO parameters with ``batch_size <= n_steps * n_envs`` guaranteed by the ranges offered."""
    params: dict[str, Any] = {}
    n_steps, batch = space["n_steps"], space["batch_size"]
    rollout_max = (n_steps.value if n_steps.fixed else n_steps.high) * n_envs
    batch_high = None if batch.fixed else min(batch.high, largest_pow2_at_most(rollout_max))
    params["batch_size"] = suggest(trial, "batch_size", batch, high=batch_high)
    steps_low = None
    if not n_steps.fixed:
        steps_low = max(n_steps.low, smallest_pow2_at_least(params["batch_size"] / n_envs))
    params["n_steps"] = suggest(trial, "n_steps", n_steps, low=steps_low)
    for name, spec in space.items():
        if name not in params:
            params[name] = suggest(trial, name, spec)
    return params


def sample_sac_params(trial: optuna.Trial, space: dict[str, ParamSpec], n_envs: int) -> dict[str, Any]:
    return {name: suggest(trial, name, spec) for name, spec in space.items()}


SAMPLE_PARAMS: dict[str, Callable[[optuna.Trial, dict[str, ParamSpec], int], dict[str, Any]]] = {
    "ppo": sample_ppo_params,
    "sac": sample_sac_params,
}
