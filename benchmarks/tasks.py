"""The benchmark's task split: development tasks, where defaults may be chosen, and held-out tasks, only reported on.

A known-good configuration, a search setting or any default chosen by measuring on a task makes that
task's benchmark numbers measure the choice, not the search. Such choices are made on development
tasks or taken from published sources; held-out tasks are touched only to report. Each known-good
point in the algorithm registry names where it comes from, and a test checks that none comes from a
held-out task.
"""

from __future__ import annotations

DEVELOPMENT_TASKS = ("Pendulum-v1", "InvertedPendulum-v5", "Hopper-v5")
HELD_OUT_TASKS = ("Walker2d-v5", "HalfCheetah-v5", "Swimmer-v5")
SPLITS = {"development": DEVELOPMENT_TASKS, "held-out": HELD_OUT_TASKS}


def split_of(env_id: str) -> str:
    """``development``, ``held-out``, or ``other`` for a task in neither list."""
    return next((name for name, tasks in SPLITS.items() if env_id in tasks), "other")
