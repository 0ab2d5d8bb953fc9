"""One place where a study's search space is resolved: a preset for the budget, a campaign stage's narrowing
around the winner so far, a user's overrides, and the registry entry's fitting to the budget."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from study_contract.algorithms import AROUND, PRESET, Space, algorithm
from study_contract.campaign import RULES
from study_contract.space import ParamSpec, apply_overrides

AROUND_FACTOR = 2.0


def resolve_space(
    algo: str,
    preset: str,
    timesteps: int,
    n_envs: int,
    *,
    overrides: dict[Any, Any] | None = None,
    stage: str | None = None,
    winner: dict[str, Any] | None = None,
) -> Space:
    """The space a study of ``timesteps`` per trial searches: the algorithm's ``preset``, narrowed for a campaign
    ``stage`` around its ``winner`` so far, then a user's ``overrides`` (YAML data) applied, then fitted to
    the budget (:class:`SpaceError` names a bad override)."""
    entry = algorithm(algo)
    space = entry.space(preset, timesteps, n_envs)
    if stage is not None:
        space = stage_space(algo, stage, space, winner or {})
    if overrides:
        space = apply_overrides(algo, space, overrides)
    space = entry.fit(space, timesteps, n_envs)
    return space if stage is None else entry.fit_stage(space, n_envs)


def around(spec: ParamSpec, value: Any) -> ParamSpec:
    """A factor of two either way around ``value``, within the accepted values; fixed where that cannot apply.

    A discount is narrowed around ``1 - value``; a value of 0 (``ent_coef``'s default) opens the preset's range.
    """
    if spec.kind == "choice" or isinstance(value, bool) or not isinstance(value, (int, float)):
        return replace(spec, fixed=True, value=value)
    if spec.kind == "pow2" and value < 1:
        return replace(spec, fixed=True, value=value)
    if spec.kind == "discount":
        gap = 1.0 - value
        low, high = 1.0 - gap * AROUND_FACTOR, 1.0 - gap / AROUND_FACTOR
    elif value == 0:
        low, high = spec.limits[0], spec.largest if spec.largest else spec.limits[1]
    else:
        low, high = value / AROUND_FACTOR, value * AROUND_FACTOR
    low, high = max(low, spec.limits[0]), min(high, spec.limits[1])
    if spec.kind in ("int", "pow2"):
        low, high = math.ceil(low), math.floor(high)
    return replace(spec, low=low, high=high, fixed=False, value=None)


def including(spec: ParamSpec, value: Any) -> ParamSpec:
    """``spec`` widened just enough to hold ``value`` (the previous winner, re-run first in every stage)."""
    if spec.fixed or value is None:
        return spec
    if spec.kind == "choice":
        return spec if value in spec.choices else replace(spec, choices=(*spec.choices, value))
    return replace(spec, low=min(spec.low, value), high=max(spec.high, value))


def stage_space(algo: str, stage: str, preset: Space, winner: dict[str, Any]) -> Space:
    """The stage's space: the rule's parameters searched, every other one fixed at the winner's value."""
    search = RULES[stage].searched(algo)
    space = {}
    for name, spec in preset.items():
        how = search.get(name)
        if how == PRESET:
            space[name] = including(spec, winner[name])
        elif how == AROUND:
            space[name] = around(spec, winner[name])
        else:
            space[name] = replace(spec, fixed=True, value=winner[name])
    return space
