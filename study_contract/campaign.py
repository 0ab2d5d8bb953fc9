"""The tuning guide's four-step strategy as one campaign: baseline, coarse, schedule, fine-tune (the plan).

A campaign is a chain of ordinary studies, ``NAME:1-baseline`` ... ``NAME:4-finetune``, each carrying the
campaign's plan in its definition. When a stage's budget is done, one worker (under the stage's lock)
creates the next stage from the winner so far; the last stage's best configurations and the baseline
then go through fresh-seed confirmation. Every stage after the baseline re-runs the previous winner as
its first trial, at the stage's own fidelity and seed, so "did this stage improve?" compares like with
like; when it did not, the campaign keeps the previous winner and says why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from study_contract.algorithms import algorithm
from study_contract.definition import STUDY_NAME, DefinitionError, StudyDefinition, StudyError
from study_contract.space import ParamSpec, SpaceError, apply_overrides, largest_pow2_at_most

# How a stage searches a parameter: the preset's range, all choices, or a factor around the previous winner.
PRESET, AROUND = "preset", "around"


@dataclass(frozen=True)
class StageRule:
    """One step of the guide (section 4, "Practical Strategy")."""

    name: str
    guide: str
    share: float
    """Default share of the campaign's env-step budget."""
    fidelity: float
    """Env-steps per trial as a fraction of the campaign's timesteps."""
    search: dict[str, dict[str, str]]
    """algorithm ("*" for any) -> parameter -> how it is searched; the rest stay at the winner's values."""
    pruner: str = "median"

    def searched(self, algo: str) -> dict[str, str]:
        return {**self.search.get("*", {}), **self.search.get(algo, {})}


# The guide's four steps. The coarse stage runs at a quarter of the timesteps: the guide coarse-searches
# on "a shorter run", and a quarter keeps learning rates and sizes that differ by a factor of two or
# more in the same order as full runs do, while trying four times the configurations for the same
# env-steps; Hyperband then stops the worst of them after a fraction of even that.
STAGE_RULES: tuple[StageRule, ...] = (
    StageRule("baseline", "1. Baseline: run with default parameters (lr=3e-4)", 0.10, 1.0, {}, pruner="none"),
    StageRule(
        "coarse",
        "2. Coarse search: learning_rate and the size knobs (n_steps) on a shorter run",
        0.40,
        0.25,
        {
            "ppo": {"learning_rate": PRESET, "n_steps": PRESET, "batch_size": PRESET},
            "sac": {"learning_rate": PRESET, "batch_size": PRESET, "train_freq": PRESET, "gradient_steps": PRESET},
        },
        pruner="hyperband",
    ),
    StageRule(
        "schedule",
        "3. Scheduling: a linear or cosine decay starting from the learning rate found",
        0.20,
        1.0,
        {"*": {"learning_rate": AROUND, "lr_schedule": PRESET}},
    ),
    StageRule(
        "finetune",
        "4. Fine-tuning: batch_size and ent_coef (PPO also n_epochs; SAC tau and gradient_steps)",
        0.30,
        1.0,
        {
            "ppo": {"batch_size": AROUND, "ent_coef": AROUND, "n_epochs": AROUND},
            "sac": {"batch_size": AROUND, "tau": AROUND, "gradient_steps": AROUND},
        },
    ),
)
RULES = {rule.name: rule for rule in STAGE_RULES}
DEFAULT_BUDGET_TRIALS = 30  # the default budget: 30 full-length trials' worth of env-steps
MIN_TRIALS = 2
AROUND_FACTOR = 2.0


@dataclass(frozen=True)
class StagePlan:
    name: str
    trials: int
    timesteps: int
    space: dict[str, Any] = field(default_factory=dict)
    """A user's overrides (YAML data, as in a ``--space`` file), applied on top of the stage's rule."""


@dataclass(frozen=True)
class CampaignPlan:
    """Stored in every stage's definition, so any worker can create the next stage from it."""

    name: str
    budget_steps: int
    stages: tuple[StagePlan, ...]
    evaluations: int = 10
    """Evaluations per trial, at every stage's fidelity."""
    confirm: bool = True
    """Whether the last stage's best configurations and the baseline go through fresh-seed confirmation."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (lists, not tuples), so a definition reads back equal to what was written."""
        return {**asdict(self), "stages": [asdict(stage) for stage in self.stages]}

    @classmethod
    def from_dict(cls, data: Any) -> CampaignPlan:
        """The plan stored in a definition, checked as untrusted input (:class:`DefinitionError` names the flaw)."""
        try:
            stages = tuple(StagePlan(**s) for s in data["stages"])
            plan = cls(name=data["name"], budget_steps=data["budget_steps"], evaluations=data["evaluations"],
                       confirm=data["confirm"], stages=stages)  # fmt: skip
        except (TypeError, KeyError) as exc:
            raise DefinitionError(f"campaign plan cannot be read: {exc!r}") from None
        if not isinstance(plan.name, str) or not STUDY_NAME.fullmatch(plan.name):
            raise DefinitionError(f"campaign name {plan.name!r} is not a study name")
        if [s.name for s in stages] != [rule.name for rule in STAGE_RULES]:
            raise DefinitionError(f"campaign stages {[s.name for s in stages]!r} are not {list(RULES)}")
        numbers = [plan.budget_steps, plan.evaluations, *(n for s in stages for n in (s.trials, s.timesteps))]
        if any(isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10**12 for n in numbers):
            raise DefinitionError(f"campaign plan numbers {numbers!r} must be whole numbers from 1 to 10**12")
        if not isinstance(plan.confirm, bool) or any(not isinstance(s.space, dict) for s in stages):
            raise DefinitionError("campaign plan: confirm must be true or false and each stage's space a mapping")
        return plan

    def stage(self, name: str) -> StagePlan:
        return next(s for s in self.stages if s.name == name)

    def study_name(self, stage: str) -> str:
        index = [s.name for s in self.stages].index(stage) + 1
        return f"{self.name}:{index}-{stage}"

    def next_stage(self, stage: str) -> str | None:
        names = [s.name for s in self.stages]
        index = names.index(stage)
        return names[index + 1] if index + 1 < len(names) else None


def plan_campaign(
    name: str,
    timesteps: int,
    *,
    budget_steps: int | None = None,
    trials_per_stage: int | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    confirm: bool = True,
    evaluations: int = 10,
) -> CampaignPlan:
    """Split the env-step budget across the stages (``overrides``: stage -> trials/fidelity/space)."""
    overrides = overrides or {}
    unknown = set(overrides) - set(RULES)
    if unknown:
        raise StudyError(f"unknown campaign stages {sorted(unknown)}; the stages are {list(RULES)}")
    budget = budget_steps or DEFAULT_BUDGET_TRIALS * timesteps
    stages = []
    for rule in STAGE_RULES:
        given = overrides.get(rule.name, {})
        fidelity = float(given.get("fidelity", rule.fidelity))
        if not 0 < fidelity <= 1:
            raise StudyError(f"stage {rule.name}: fidelity={fidelity} must be in (0, 1]")
        steps = max(int(timesteps * fidelity), 1)
        default = trials_per_stage or max(round(rule.share * budget / steps), MIN_TRIALS)
        trials = int(given.get("trials", default))
        if trials < 1:
            raise StudyError(f"stage {rule.name}: trials={trials} must be at least 1")
        stages.append(StagePlan(rule.name, trials, steps, dict(given.get("space") or {})))
    return CampaignPlan(name=name, budget_steps=budget, stages=tuple(stages), evaluations=evaluations, confirm=confirm)


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


def stage_space(algo: str, stage: str, preset: dict[str, ParamSpec], winner: dict[str, Any]) -> dict[str, ParamSpec]:
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


def stage_definition(
    base: StudyDefinition, plan: CampaignPlan, stage: str, winner: dict[str, Any], parent: str | None
) -> StudyDefinition:
    """The definition of ``stage``, built from the campaign's base definition and the winner so far."""
    entry = algorithm(base.algo)
    step = plan.stage(stage)
    preset = entry.space(base.space_preset, step.timesteps, base.n_envs)
    space = stage_space(base.algo, stage, preset, winner)
    if step.space:
        try:
            space = apply_overrides(base.algo, space, step.space)
        except SpaceError as exc:
            raise StudyError(f"campaign stage {stage}: {exc}") from None
    space = entry.fit(space, step.timesteps, base.n_envs)
    space = _fit_constraints(base.algo, space, base.n_envs)
    try:
        return replace(
            base,
            n_trials=step.trials,
            timesteps=step.timesteps,
            eval_every=max(step.timesteps // plan.evaluations, 1),
            pruner=RULES[stage].pruner,
            baseline=False,
            known_good=base.known_good and stage == "coarse",  # later stages search around the winner
            confirm=False,
            stage=stage,
            parent=parent,
            campaign=plan.to_dict(),
            space=space,
        )
    except DefinitionError as exc:
        raise StudyError(f"campaign stage {stage} ({step.timesteps} env-steps per trial): {exc}") from None


def _fit_constraints(algo: str, space: dict[str, ParamSpec], n_envs: int) -> dict[str, ParamSpec]:
    """Narrowed PPO minibatches stay within the smallest rollout the stage offers."""
    if algo != "ppo":
        return space
    steps, batch = space["n_steps"], space["batch_size"]
    cap = largest_pow2_at_most(steps.smallest * n_envs)
    if batch.fixed and batch.value > cap:
        return {**space, "batch_size": replace(batch, value=cap)}
    if not batch.fixed and batch.high > cap:
        return {**space, "batch_size": replace(batch, low=min(batch.low, cap), high=cap)}
    return space
