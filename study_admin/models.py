"""What study_admin reports, as typed read models; each is rendered once per format (table, Markdown, JSON).

The builders (``study_admin/studies.py``, ``study_admin/campaigns.py``, the engine's confirmation report)
read the storage into these; ``study_admin/display.py`` (tables), ``study_admin/report.py`` (Markdown)
and :meth:`to_dict` (JSON and YAML) render them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from study_contract.algorithms import NOISE_MODULE, Recipe
from study_contract.definition import StudyDefinition
from study_contract.schedules import formula
from study_contract.store.catalog import StudyState, Summary

if TYPE_CHECKING:  # Optuna-backed readers; `study_admin list` imports this module without Optuna
    from study_contract.engine.confirmation import ConfirmationReport, Pick
    from study_contract.engine.stages import StageOutcome


@dataclass(frozen=True)
class Cost:
    """What training a configuration costs: on any machine (relative to SB3's defaults, and absolute), and
    measured on the worker that ran it."""

    relative_compute: float | None = None
    compute_per_step: float | None = None
    seconds_per_kstep: float | None = None


@dataclass(frozen=True)
class TrialRecord:
    """One trial as ``show`` and the report list it."""

    number: int
    state: str
    value: float | None
    hyperparams: dict[str, Any] | None
    seed: Any
    env_steps: int | None
    train_steps_per_second: float | None
    wall_seconds: float | None
    worker: str | None
    fail_reason: str | None
    retried: bool | None
    retry_of: int | None
    progress: dict[str, Any] | None
    cost: Cost = field(default_factory=Cost)
    provenance: dict[str, Any] | None = None
    """What produced the value (``protocol.PROVENANCE``); None for trials of earlier releases."""
    warm_start: dict[str, Any] | None = None
    """The finished study's winner this trial tried (``protocol.WARM_START``)."""
    curve: list[tuple[int, float]] | None = None
    """Only for one trial shown alone (``show --trial``)."""
    instance_returns: dict[str, list[float | None]] | None = None
    """A configuration trained as instances: its return on each task and seed (None: pruned, failed or not run)."""


@dataclass(frozen=True)
class StudyDetails:
    """``study_admin show``: progress and accounting, the best and top trials, failures, the confirmation."""

    summary: Summary
    definition: StudyDefinition
    best: TrialRecord | None
    top_trials: list[TrialRecord]
    running: list[TrialRecord]
    failures: list[TrialRecord]
    mean_train_steps_per_second: float | None
    env_steps_total: int
    confirmation: ConfirmationReport | None

    def to_dict(self) -> dict[str, Any]:
        definition = {k: v for k, v in self.definition.__dict__.items() if k != "space"}
        return {
            "summary": self.summary.to_dict(),
            "definition": definition,
            "space": {n: s.to_dict() for n, s in self.definition.space.items()},
            "best": asdict(self.best) if self.best else None,
            "throughput": {
                "mean_train_steps_per_second_per_trial": self.mean_train_steps_per_second,
                "env_steps_total": self.env_steps_total,
            },
            "running": [asdict(t) for t in self.running],
            "top_trials": [asdict(t) for t in self.top_trials],
            "failures": [asdict(t) for t in self.failures],
            "confirmation": self.confirmation.to_dict() if self.confirmation else None,
        }


@dataclass(frozen=True)
class StageRow:
    """One stage of a campaign's ladder."""

    stage: str
    guide: str
    study: str
    budget_trials: int
    timesteps: int
    state: StudyState
    done: int = 0
    best_value: float | None = None
    env_steps: int = 0
    fixed: dict[str, Any] = field(default_factory=dict)
    """Parameters fixed at the winner's values from the stages before."""
    searched: list[str] = field(default_factory=list)
    decision: StageOutcome | None = None
    improvement_over_baseline: float | None = None
    """The stage's best value minus the baseline's IQM, at full fidelity (single tuning seeds: a hint)."""


@dataclass(frozen=True)
class CampaignWinner:
    study: str
    trial: int
    value: float | None
    """Its fresh-seed IQM once confirmed, else its tuning value."""
    confirmed: bool = False
    ci: tuple[float, float] | None = None
    improvement_over_baseline: float | None = None
    p_improvement: float | None = None


@dataclass(frozen=True)
class CampaignReport:
    """``campaign show``: the ladder, each stage's decision, the winner and its confirmation."""

    campaign: str
    budget_steps: int
    stages: list[StageRow]
    winner: CampaignWinner | None
    confirmation: ConfirmationReport | None

    @property
    def env_steps(self) -> int:
        return sum(s.env_steps for s in self.stages)

    @property
    def current(self) -> StageRow:
        """The latest stage that exists."""
        return next((s for s in reversed(self.stages) if s.state != StudyState.NOT_STARTED), self.stages[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "budget_steps": self.budget_steps,
            "env_steps": self.env_steps,
            "stages": [asdict(s) for s in self.stages],
            "winner": asdict(self.winner) if self.winner else None,
            "confirmation": self.confirmation.to_dict() if self.confirmation else None,
        }


@dataclass(frozen=True)
class Configuration:
    """What reproduces one trial's configuration: its recipe, the task and budget around it, where it came from."""

    study: str
    trial: int
    algo: str
    env_id: str
    n_envs: int
    timesteps: int
    policy: str
    hyperparams: dict[str, Any]
    recipe: Recipe
    mean_reward: float | None
    seed: int | None
    confirmed: bool = False
    confirmation: ConfirmationReport | None = None
    pick: Pick | None = None
    cost: Cost = field(default_factory=Cost)
    provenance: dict[str, Any] | None = None
    warm_start: dict[str, Any] | None = None
    tasks: list[str] = field(default_factory=list)
    """Every task the configuration was tuned for, ``env_id`` first (one unless its study tuned several)."""

    @property
    def learning_rate_formula(self) -> str:
        return formula(self.recipe.lr_schedule, self.recipe.learning_rate)

    @property
    def kwargs(self) -> dict[str, Any]:
        """The constructor's keyword arguments as data: classes by import path (``torch.nn.ReLU``), the learning rate
        as its initial value (the schedule is named beside it), the noise as its class and scale."""
        recipe = self.recipe
        policy_kwargs = {"net_arch": recipe.net_arch, "activation_fn": recipe.activation_path, **recipe.policy_extras}
        kwargs = {"learning_rate": recipe.learning_rate, **recipe.kwargs, "policy_kwargs": policy_kwargs}
        if recipe.noise_class is not None:
            kwargs["action_noise"] = {"class": f"{NOISE_MODULE}.{recipe.noise_class}", "sigma": recipe.noise_std}
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        data = {
            "algo": self.algo,
            "env_id": self.env_id,
            "tasks": self.tasks or [self.env_id],
            "n_envs": self.n_envs,
            "timesteps": self.timesteps,
            "policy": self.policy,
            "library": self.recipe.library,
            "sb3_class": self.recipe.class_name,
            "class": self.recipe.class_path,
            "kwargs": self.kwargs,
            "learning_rate_schedule": self.recipe.lr_schedule,
            "learning_rate_formula": self.learning_rate_formula,
            "normalize_observations": self.recipe.normalize,
            "hyperparams": self.hyperparams,
            "study": self.study,
            "trial": self.trial,
            "mean_reward": self.mean_reward,
            "seed": self.seed,
            "confirmed": self.confirmed,
            "cost": asdict(self.cost),
            "pick": asdict(self.pick) if self.pick else None,
        }
        if self.confirmation is not None:
            data["confirmation"] = {k: v for k, v in self.confirmation.to_dict().items() if k != "confirmed"}
        return data
