"""The study definition: the contract between ``study_admin`` (writes it) and ``worker`` (reads it).

It is stored as JSON in the Optuna study's user attribute ``definition``, so a worker needs nothing
but the database URL, and the dashboard shows it beside the study.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from study_admin.space import DEFAULT_SPACES, ParamSpec, SpaceError, check_constraints

ALGOS = ("ppo", "sac")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
DEFINITION_ATTR = "definition"
PAUSED_ATTR = "paused"
SCHEMA_VERSION = 1


class DefinitionError(ValueError):
    """A study definition that cannot be run; the message names the value and what is accepted."""


class StudyError(ValueError):
    """A study that does not exist, already exists, or has nothing to show."""


@dataclass(frozen=True, kw_only=True)
class StudyDefinition:
    """Everything a worker needs to run any trial of one study."""

    algo: str
    """``ppo`` or ``sac`` (Stable-Baselines3)."""
    env_id: str
    """A registered Gymnasium id, e.g. ``HalfCheetah-v5``."""
    n_trials: int
    """Trials in the whole study, across all workers (finished, pruned or failed)."""
    timesteps: int
    """Training env-steps per trial."""
    eval_every: int
    """Env-steps between two deterministic evaluations (each is reported to the pruner)."""
    eval_episodes: int = 10
    """Episodes per evaluation."""
    n_envs: int = 1
    """Parallel training environments per trial (a DummyVecEnv)."""
    sampler: str = "tpe"
    """``tpe`` (seeded, constant-liar for parallel workers) or ``random``."""
    pruner: str = "median"
    """``median``, ``hyperband`` or ``none``."""
    pruner_startup_trials: int = 5
    """Median pruner: trials that finish before any pruning happens."""
    pruner_warmup_evals: int = 1
    """Median pruner: evaluations of a trial before it may be pruned."""
    seed: int = 0
    """Seeds the sampler and, plus the trial number, each trial's training."""
    baseline: bool = True
    """Run SB3's default hyperparameters as the first trial."""
    space: dict[str, ParamSpec] = field(default_factory=dict)
    """The resolved search space (defaults plus the ``--space`` file)."""
    policy: str = "MlpPolicy"
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise DefinitionError(f"algo={self.algo!r} is not supported; choose one of {list(ALGOS)}")
        if not self.space:
            object.__setattr__(self, "space", dict(DEFAULT_SPACES[self.algo]))
        for name in ("n_trials", "timesteps", "eval_every", "eval_episodes", "n_envs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise DefinitionError(f"{name}={value!r} must be a positive integer")
        for name in ("pruner_startup_trials", "pruner_warmup_evals", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DefinitionError(f"{name}={value!r} must be a non-negative integer")
        if self.eval_every > self.timesteps:
            raise DefinitionError(
                f"eval_every={self.eval_every} exceeds timesteps={self.timesteps}; a trial would never be evaluated"
            )
        if self.sampler not in SAMPLERS:
            raise DefinitionError(f"sampler={self.sampler!r} is not one of {list(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise DefinitionError(f"pruner={self.pruner!r} is not one of {list(PRUNERS)}")
        if set(self.space) != set(DEFAULT_SPACES[self.algo]):
            raise DefinitionError(
                f"space parameters {sorted(self.space)} do not match {self.algo}'s {sorted(DEFAULT_SPACES[self.algo])}"
            )
        try:
            check_constraints(self.algo, self.space, self.n_envs, self.timesteps)
        except SpaceError as exc:
            raise DefinitionError(str(exc)) from None

    def to_json(self) -> str:
        data = asdict(self)
        data["space"] = {name: spec.to_dict() for name, spec in self.space.items()}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StudyDefinition:
        data: dict[str, Any] = json.loads(text)
        if data.get("schema_version") != SCHEMA_VERSION:
            raise DefinitionError(
                f"definition schema_version={data.get('schema_version')!r} is not "
                f"{SCHEMA_VERSION}; upgrade the worker and study_admin together"
            )
        data["space"] = {name: ParamSpec.from_dict(spec) for name, spec in data["space"].items()}
        return cls(**data)
