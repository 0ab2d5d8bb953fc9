"""Learning-rate schedules, each defined once as a plain function of ``progress_remaining``.

SB3 calls a schedule with ``progress_remaining`` (1 at the start of training, 0 at the end). Training
uses :func:`make_schedule`; ``study_admin`` shows :func:`formula` and exports :func:`source`, both read
from the same function, so what a user reads is what the worker trained with.
"""

from __future__ import annotations

import ast
import functools
import inspect
import math
import textwrap
from collections.abc import Callable

Schedule = Callable[[float], float]


def constant(initial_value: float, progress_remaining: float) -> float:
    return initial_value


def linear(initial_value: float, progress_remaining: float) -> float:
    """The guide's ``linear_schedule``: from ``initial_value`` down to 0."""
    return progress_remaining * initial_value


def cosine(initial_value: float, progress_remaining: float) -> float:
    """Half a cosine from ``initial_value`` down to 0."""
    return initial_value * 0.5 * (1.0 + math.cos(math.pi * (1.0 - progress_remaining)))


SCHEDULES: dict[str, Callable[[float, float], float]] = {"constant": constant, "linear": linear, "cosine": cosine}

# RL Zoo's YAML spells a linear schedule "lin_<initial>" and a constant one as the number; it has no cosine.
ZOO_PREFIXES: dict[str, str] = {"constant": "", "linear": "lin_"}


def _function(name: str) -> Callable[[float, float], float]:
    if name not in SCHEDULES:
        raise ValueError(f"lr_schedule={name!r} is not one of {list(SCHEDULES)}")
    return SCHEDULES[name]


def make_schedule(name: str, initial_value: float) -> Schedule:
    """The SB3 ``learning_rate`` callable (a partial of a module function, so models pickle by name)."""
    return functools.partial(_function(name), initial_value)


def formula(name: str, initial_value: float) -> str:
    """The schedule's return expression with the initial rate written in, e.g. ``progress_remaining * 0.001``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(_function(name))))
    returned = next(node.value for node in ast.walk(tree) if isinstance(node, ast.Return) and node.value is not None)
    return ast.unparse(returned).replace("initial_value", f"{initial_value:g}")


def source(name: str) -> str:
    """The schedule's Python source, for exports that must run without this package."""
    return textwrap.dedent(inspect.getsource(_function(name)))
