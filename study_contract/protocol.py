"""The trial protocol: what study_admin and the workers write on a trial, and the rules both read it by.

Every attribute name lives here (user attributes unless marked as system attributes), with the roles a
trial plays, what a retry inherits from the trial it replaces, and the one rule that says whether a
failed trial used up its budget slot.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
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
SAVED_MODEL = "saved_model"
VIDEO_FRAMES = "video_frames"
VIDEO_ERROR = "video_error"
ARTIFACT_ERROR = "artifact_error"
# The learning curve is the trial's intermediate values (each evaluation, reported to the pruner); a two-objective
# trial, which Optuna does not let report, records it as this attribute instead: [[env-step, mean return], ...].
CURVE = "curve"
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
MAX_SEED_VALUE = 2**32 - 1  # numpy's largest seed
MAX_TEXT = 2000  # a reason or a worker id longer than this is not one a worker writes


# Every attribute is read back as untrusted: each has a decoder that returns its value if it is of the type and range
# a worker writes, else None (the attribute then counts as absent). Readers see only decoded attributes.
def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= MAX_TEXT else None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63 else None


def _seed(value: Any) -> int | None:
    count = _count(value)
    return count if count is not None and count <= MAX_SEED_VALUE else None


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def recorded_number(value: Any) -> float | None:
    """A number a worker recorded (a cost, a speed), read as untrusted: None unless finite and positive."""
    number = _finite(value)
    return number if number is not None and number > 0 else None


def _params(value: Any) -> dict[str, Any] | None:
    """A configuration: names to values; each value is checked against the study's space where it is used."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return None
    return value


PROGRESS_FIELDS = {"env_steps": _count, "total": _count, "steps_per_second": recorded_number, "last_eval": _finite,
                   "eta_seconds": _finite}  # fmt: skip


def _progress(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    return {key: decode(value.get(key)) for key, decode in PROGRESS_FIELDS.items()}


def _candidate(value: Any) -> int | str | None:
    return BASELINE if value == BASELINE else _count(value)


def _trial_numbers(value: Any) -> list[int] | None:
    if not isinstance(value, list) or not all(_count(n) is not None for n in value):
        return None
    return value


def _curve_points(value: Any) -> list[list[float]] | None:
    if not isinstance(value, list) or len(value) > 100_000:
        return None
    points = [p for p in value if isinstance(p, list) and len(p) == 2 and _count(p[0]) is not None
              and _finite(p[1]) is not None]  # fmt: skip
    return points if len(points) == len(value) else None


Decoder = Callable[[Any], Any]
USER_ATTRS: dict[str, Decoder] = {
    HYPERPARAMS: _params, SEED: _seed, WORKER: _text, PROGRESS: _progress, ENV_STEPS: _count,
    WALL_SECONDS: recorded_number, EVAL_SECONDS: recorded_number, TRAIN_STEPS_PER_SECOND: recorded_number,
    SECONDS_PER_KSTEP: recorded_number, COMPUTE_PER_STEP: recorded_number, RELATIVE_COMPUTE: recorded_number,
    PRUNED_REASON: _text, FAIL_REASON: _text, RETRY: _flag, HANDED_BACK: _text, BASELINE: _flag, KNOWN_GOOD: _flag,
    PREVIOUS_WINNER: _flag, CANDIDATE: _candidate, SAVED_MODEL: _flag, VIDEO_FRAMES: _count, VIDEO_ERROR: _text,
    ARTIFACT_ERROR: _text, CURVE: _curve_points,
}  # fmt: skip
SYSTEM_ATTRS: dict[str, Decoder] = {
    FAILED_TRIAL: _count, RETRY_HISTORY: _trial_numbers, STALE_RETRIES: _count, OWNER_GRACE: recorded_number,
}  # fmt: skip


def decode_attrs(attrs: Mapping[str, Any], decoders: Mapping[str, Decoder]) -> dict[str, Any]:
    """The attributes ``decoders`` knows, each of the type and range a worker writes; the rest left out."""
    decoded = {}
    for key, decoder in decoders.items():
        if key in attrs:
            value = decoder(attrs[key])
            if value is not None:
                decoded[key] = value
    return decoded


def decode_json(key: str, value_json: Any, decoders: Mapping[str, Decoder]) -> Any:
    """One attribute as stored in Optuna's tables (JSON text), decoded; None when it is not JSON or not valid."""
    try:
        value = json.loads(value_json)
    except (TypeError, ValueError, RecursionError):
        return None
    return decoders[key](value)


def failure_kind(user_attrs: Mapping[str, Any], *, retried: bool) -> FailureKind:
    """What a FAIL trial is for the budget: ``final`` (its slot is used up), ``retried`` (a later trial
    took its slot) or ``lost`` (meant for a retry that was never queued: a worker restores it).

    ``user_attrs`` are decoded (:func:`decode_attrs`); ``retried`` says whether a later trial names it in its
    retry history. Trials failed by schema-1 workers carry no ``retry`` attribute: a failure with a reason
    that was not a hand-back was final.
    """
    if retried:
        return "retried"
    if RETRY in user_attrs:
        return "lost" if user_attrs[RETRY] else "final"
    return "final" if FAIL_REASON in user_attrs and HANDED_BACK not in user_attrs else "lost"


def is_final_failure(user_attrs: Mapping[str, Any]) -> bool:
    """Whether a FAIL trial with these (decoded) user attributes used up its slot (no retry is owed for it)."""
    return failure_kind(user_attrs, retried=False) == "final"


def inherited(user_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The user attributes a retry of a trial with these (decoded) ``user_attrs`` starts with."""
    return {key: value for key, value in user_attrs.items() if key in INHERITED}
