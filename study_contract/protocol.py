"""The trial protocol: what study_admin and the workers write on a trial, and the rules both read it by.

Every attribute name lives here (user attributes unless marked as system attributes), with the roles a
trial plays, what a retry inherits from the trial it replaces, and the one rule that says whether a
failed trial used up its budget slot.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from study_contract.names import ENV_ID, STORED_STUDY_NAME

# Written by the worker that trains the trial, as training starts.
HYPERPARAMS = "hyperparams"
"""The readable parameter values the trial trains with (``n_steps: 2048``, not Optuna's encoding)."""
SEED = "seed"
WORKER = "worker"
"""``host:pid`` of the worker training the trial; its absence means training never started."""
PROGRESS = "progress"
PROVENANCE = "provenance"
MAX_THREADS = 1024  # the most torch threads a worker runs with (--threads), as its provenance records them
"""What produces the trial's value, written when training starts: the versions of the libraries that train
and simulate, the task's spec, the training and evaluation seeds, the worker's host and threads. Trials
of releases before it have none."""
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
# Written on a configuration that trains as instances (several tasks or seeds): how many, as they are queued, and
# each instance's return when the configuration's value is settled: {task: [return, or None, per seed]}.
INSTANCES = "instances"
INSTANCE_RETURNS = "instance_returns"
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
"""A confirmation run or an instance: the tuning trial number it runs (a confirmation's may be ``baseline``)."""
TASK = "task"
"""A confirmation run of a study tuned for several tasks: the task it trains on."""
WARM_START = "warm_start"
"""The winner of a finished study this slot tries: {study, env_id, trial, value, confirmed}."""
ROLES = (BASELINE, KNOWN_GOOD, PREVIOUS_WINNER, CANDIDATE, WARM_START)

INHERITED = (SEED, HYPERPARAMS, TASK, *ROLES)
"""What a retry takes over from the trial it replaces: the same configuration, seed and role. Nothing
else: not the dead run's results, progress or artifacts."""


class FailureKind(StrEnum):
    """What a FAIL trial is for the budget (:func:`failure_kind`)."""

    FINAL = "final"
    """Its slot is used up."""
    RETRIED = "retried"
    """A later trial took its slot."""
    LOST = "lost"
    """Meant for a retry that was never queued: a worker restores it."""


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


def finite(value: Any) -> float | None:
    """A finite number as a float, else None (a bool, text, NaN, infinity, or an integer too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value) if math.isfinite(value) else None
    except OverflowError:
        return None


def recorded_number(value: Any) -> float | None:
    """A number a worker recorded (a cost, a speed), read as untrusted: None unless finite and positive."""
    number = finite(value)
    return number if number is not None and number > 0 else None


def _params(value: Any) -> dict[str, Any] | None:
    """A configuration: names to values; each value is checked against the study's space where it is used."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return None
    return value


PROGRESS_FIELDS = {"env_steps": _count, "total": _count, "steps_per_second": recorded_number, "last_eval": finite,
                   "eta_seconds": finite}  # fmt: skip


def _progress(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    return {key: decode(value.get(key)) for key, decode in PROGRESS_FIELDS.items()}


MAX_PROVENANCE_NAMES = 50
MAX_NAME = 100
VERSION_TEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]{0,99}")
"""A distribution's name or version (PEP 440 and local versions such as ``2.13.0+cpu``): safe in a comment."""


def _versions(value: Any) -> dict[str, str] | None:
    if not isinstance(value, dict) or len(value) > MAX_PROVENANCE_NAMES:
        return None
    versions = {k: v for k, v in value.items() if isinstance(k, str) and VERSION_TEXT.fullmatch(k)
                and isinstance(v, str) and VERSION_TEXT.fullmatch(v)}  # fmt: skip
    return versions if len(versions) == len(value) else None


def plain_data(value: Any, depth: int = 0) -> bool:
    """Plain JSON data (as Gymnasium's registered keyword arguments are), shallow and small."""
    if value is None or isinstance(value, (bool, str, int)) or finite(value) is not None:
        return not isinstance(value, str) or len(value) <= MAX_TEXT
    if depth >= 4:
        return False
    if isinstance(value, list):
        return len(value) <= MAX_PROVENANCE_NAMES and all(plain_data(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return len(value) <= MAX_PROVENANCE_NAMES and all(
            isinstance(k, str) and len(k) <= MAX_NAME and plain_data(v, depth + 1) for k, v in value.items()
        )
    return False


ENV_SPEC_FIELDS = {"id": _text, "max_episode_steps": _count,
                   "kwargs": lambda v: v if isinstance(v, dict) and plain_data(v) else None}  # fmt: skip
PROVENANCE_FIELDS: dict[str, Callable[[Any], Any]] = {
    "versions": _versions,
    "env": lambda v: {k: d(v.get(k)) for k, d in ENV_SPEC_FIELDS.items()} if isinstance(v, dict) else None,
    "seeds": lambda v: {k: _seed(v.get(k)) for k in ("training", "evaluation")} if isinstance(v, dict) else None,
    "host": _text,
    "threads": _count,
}


def _provenance(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    decoded = {key: decode(value.get(key)) for key, decode in PROVENANCE_FIELDS.items()}
    return {key: part for key, part in decoded.items() if part is not None}


def _origin(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    study, env_id = value.get("study"), value.get("env_id")
    origin = {"study": study if isinstance(study, str) and STORED_STUDY_NAME.fullmatch(study) else None,
              "env_id": env_id if isinstance(env_id, str) and ENV_ID.fullmatch(env_id) else None,
              "trial": _count(value.get("trial")), "value": finite(value.get("value")),
              "confirmed": _flag(value.get("confirmed"))}  # fmt: skip
    return origin if None not in origin.values() else None


def _candidate(value: Any) -> int | str | None:
    return BASELINE if value == BASELINE else _count(value)


def _instance_returns(value: Any) -> dict[str, list[float | None]] | None:
    if not isinstance(value, dict) or len(value) > MAX_PROVENANCE_NAMES:
        return None
    valid = all(isinstance(task, str) and ENV_ID.fullmatch(task) and isinstance(runs, list) and len(runs) <= 100
                and all(r is None or finite(r) is not None for r in runs) for task, runs in value.items())  # fmt: skip
    return value if valid else None


def _trial_numbers(value: Any) -> list[int] | None:
    if not isinstance(value, list) or not all(_count(n) is not None for n in value):
        return None
    return value


def _curve_points(value: Any) -> list[list[float]] | None:
    if not isinstance(value, list) or len(value) > 100_000:
        return None
    points = [p for p in value if isinstance(p, list) and len(p) == 2 and _count(p[0]) is not None
              and finite(p[1]) is not None]  # fmt: skip
    return points if len(points) == len(value) else None


Decoder = Callable[[Any], Any]
USER_ATTRS: dict[str, Decoder] = {
    HYPERPARAMS: _params, SEED: _seed, WORKER: _text, PROGRESS: _progress, PROVENANCE: _provenance, ENV_STEPS: _count,
    WALL_SECONDS: recorded_number, EVAL_SECONDS: recorded_number, TRAIN_STEPS_PER_SECOND: recorded_number,
    SECONDS_PER_KSTEP: recorded_number, COMPUTE_PER_STEP: recorded_number, RELATIVE_COMPUTE: recorded_number,
    PRUNED_REASON: _text, FAIL_REASON: _text, RETRY: _flag, HANDED_BACK: _text, BASELINE: _flag, KNOWN_GOOD: _flag,
    PREVIOUS_WINNER: _flag, CANDIDATE: _candidate, WARM_START: _origin, SAVED_MODEL: _flag, VIDEO_FRAMES: _count,
    VIDEO_ERROR: _text, ARTIFACT_ERROR: _text, CURVE: _curve_points, INSTANCES: _count,
    INSTANCE_RETURNS: _instance_returns, TASK: lambda v: v if isinstance(v, str) and ENV_ID.fullmatch(v) else None,
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
    """What a FAIL trial is for the budget.

    ``user_attrs`` are decoded (:func:`decode_attrs`); ``retried`` says whether a later trial names it in its
    retry history. Trials failed by schema-1 workers carry no ``retry`` attribute: a failure with a reason
    that was not a hand-back was final.
    """
    if retried:
        return FailureKind.RETRIED
    if RETRY in user_attrs:
        return FailureKind.LOST if user_attrs[RETRY] else FailureKind.FINAL
    if FAIL_REASON in user_attrs and HANDED_BACK not in user_attrs:
        return FailureKind.FINAL
    return FailureKind.LOST


def inherited(user_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The user attributes a retry of a trial with these (decoded) ``user_attrs`` starts with."""
    return {key: value for key, value in user_attrs.items() if key in INHERITED}
