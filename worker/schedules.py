"""Learning-rate schedules: SB3 callables of ``progress_remaining`` (1 at the start, 0 at the end)."""

from __future__ import annotations

import math
from collections.abc import Callable

Schedule = Callable[[float], float]


def constant_schedule(initial_value: float) -> Schedule:
    def func(progress_remaining: float) -> float:
        return initial_value

    return func


def linear_schedule(initial_value: float) -> Schedule:
    """The guide's schedule: decays linearly from ``initial_value`` to 0."""

    def func(progress_remaining: float) -> float:
        return progress_remaining * initial_value

    return func


def cosine_schedule(initial_value: float) -> Schedule:
    """Half a cosine from ``initial_value`` down to 0."""

    def func(progress_remaining: float) -> float:
        return initial_value * 0.5 * (1.0 + math.cos(math.pi * (1.0 - progress_remaining)))

    return func


SCHEDULES: dict[str, Callable[[float], Schedule]] = {
    "constant": constant_schedule,
    "linear": linear_schedule,
    "cosine": cosine_schedule,
}


def make_schedule(name: str, initial_value: float) -> Schedule:
    if name not in SCHEDULES:
        raise ValueError(f"lr_schedule={name!r} is not one of {list(SCHEDULES)}")
    return SCHEDULES[name](initial_value)
