"""The trial protocol: what study_admin and the workers write on a trial, and the rules both read it by.

Every attribute name lives here (user attributes unless marked as system attributes), with the roles a
trial plays, what a retry inherits from the trial it replaces, and the one rule that says whether a
failed trial used up its budget slot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

# Written by the worker that trains the trial, as training starts.
HYPERPARAMS = "hyperparams"
"""The readable parameter values the trial trains with (``n_steps: 2048``, not Optuna's encoding)."""
SEED = "seed"
WORKER = "worker"
"""``host:pid`` of the worker training the trial; its absence means training never started."""
PROGRESS = "progress"
# Written when training ends.
ENV_STEPS = "env_steps"
WALL_SECONDS = "wall_seconds"
EVAL_SECONDS = "eval_seconds"
TRAIN_STEPS_PER_SECOND = "train_steps_per_second"
SECONDS_PER_KSTEP = "train_seconds_per_1k_steps"
"""What training cost on its worker: seconds per 1,000 env-steps, evaluation left out."""
COMPUTE_PER_STEP = "compute_per_step"
"""What training costs on any machine: network weights passed per env-step (``Algorithm.cost``)."""
RELATIVE_COMPUTE = "relative_compute"
"""``compute_per_step`` as a multiple of SB3's defaults' on the same task."""
# The learning curve is the trial's intermediate values (each evaluation, reported to the pruner).
# Written before a trial is failed: why, and whether its configuration is queued again.
PRUNED_REASON = "pruned_reason"
"""Why a trial was pruned before training (its configuration over the study's ``max_compute``)."""
FAIL_REASON = "fail_reason"
RETRY = "retry"
"""True: queued again under a new number; False: a final failure."""
HANDED_BACK = "handed_back"
"""The reason a worker gave a trial back (schema-1 workers marked hand-backs only this way)."""

# System attributes.
FAILED_TRIAL = "failed_trial"
"""On a retry: the number of the trial it replaces (the names of Optuna's own retry callback)."""
RETRY_HISTORY = "retry_history"
STALE_RETRIES = "stale_retries"
"""Retries this configuration got after workers that stopped sending heartbeats."""
OWNER_GRACE = "owner_grace_period"
"""Seconds without a heartbeat after which the trial's owner counts as dead: its own ``--grace-period``,
written with the claim, so that a worker configured otherwise judges it by the owner's promise."""

# Roles: the user attribute that marks a trial queued for a reason. A trial with none was sampled.
BASELINE = "baseline"
"""SB3's defaults, the study's first trial."""
KNOWN_GOOD = "known_good"
"""One of the algorithm's known-good configurations."""
PREVIOUS_WINNER = "previous_winner"
"""A campaign stage's re-run of the winner so far."""
CANDIDATE = "candidate"
"""A confirmation run: the tuning trial number it confirms, or ``baseline``."""
ROLES = (BASELINE, KNOWN_GOOD, PREVIOUS_WINNER, CANDIDATE)

INHERITED = (SEED, HYPERPARAMS, *ROLES)
"""What a retry takes over from the trial it replaces: the same configuration, seed and role. Nothing
else: not the dead run's results, progress or artifacts."""

FailureKind = Literal["final", "retried", "lost"]


def failure_kind(user_attrs: Mapping[str, Any], *, retried: bool) -> FailureKind:
    """What a FAIL trial is for the budget: ``final`` (its slot is used up), ``retried`` (a later trial
    took its slot) or ``lost`` (meant for a retry that was never queued: a worker restores it).

    ``retried`` says whether a later trial names it in its retry history. Trials failed by schema-1
    workers carry no ``retry`` attribute: a failure with a reason that was not a hand-back was final.
    """
    if retried:
        return "retried"
    if RETRY in user_attrs:
        return "lost" if user_attrs[RETRY] else "final"
    return "final" if FAIL_REASON in user_attrs and HANDED_BACK not in user_attrs else "lost"


def is_final_failure(user_attrs: Mapping[str, Any]) -> bool:
    """Whether a FAIL trial with these user attributes used up its slot (no retry is owed for it)."""
    return failure_kind(user_attrs, retried=False) == "final"


def recorded_number(value: Any) -> float | None:
    """A number a worker recorded (a cost, a speed), read as untrusted: None unless finite and positive."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def inherited(user_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The user attributes a retry of a trial with ``user_attrs`` starts with."""
    return {key: value for key, value in user_attrs.items() if key in INHERITED}
