"""The tuning guide's four-step strategy as one campaign: baseline, coarse, schedule, fine-tune (the plan).

A campaign is a chain of ordinary studies, ``NAME:1-baseline`` ... ``NAME:4-finetune``, each carrying the
campaign's plan in its definition. When a stage's budget is done, one worker (under the stage's lock)
creates the next stage from the winner so far; the last stage's best configurations and the baseline
then go through fresh-seed confirmation. Every stage after the baseline re-runs the previous winner as
its first trial, at the stage's own fidelity and seed, so "did this stage improve?" compares like with
like; when it did not, the campaign keeps the previous winner and says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from study_contract.algorithms import AROUND, PRESET, algorithm
from study_contract.names import STUDY_NAME, DefinitionError, Stage, StudyError


@dataclass(frozen=True)
class StageRule:
    """One step of the guide (section 4, "Practical Strategy")."""

    name: str
    guide: str
    share: float
    """Default share of the campaign's env-step budget."""
    fidelity: float
    """Env-steps per trial as a fraction of the campaign's timesteps."""
    search: dict[str, str]
    """parameter -> how every algorithm's stage searches it (PRESET or AROUND); each registry entry adds its
    own (``Algorithm.campaign``); the rest stay at the winner's values."""
    pruner: str = "median"

    def searched(self, algo: str) -> dict[str, str]:
        """What the stage searches for ``algo``: the parameters of :attr:`search` it has, and its own."""
        entry = algorithm(algo)
        shared = {name: how for name, how in self.search.items() if name in entry.defaults}
        return {**shared, **entry.campaign.get(self.name, {})}


# The guide's four steps. The coarse stage runs at a quarter of the timesteps: the guide coarse-searches
# on "a shorter run", and a quarter keeps learning rates and sizes that differ by a factor of two or
# more in the same order as full runs do, while trying four times the configurations for the same
# env-steps; Hyperband then stops the worst of them after a fraction of even that.
STAGE_RULES: tuple[StageRule, ...] = (
    StageRule(Stage.BASELINE, "1. Baseline: run with default parameters (lr=3e-4)", 0.10, 1.0, {}, pruner="none"),
    StageRule(
        Stage.COARSE,
        "2. Coarse search: learning_rate and the size knobs on a shorter run",
        0.40,
        0.25,
        {"learning_rate": PRESET, "batch_size": PRESET},
        pruner="hyperband",
    ),
    StageRule(
        Stage.SCHEDULE,
        "3. Scheduling: a linear or cosine decay starting from the learning rate found",
        0.20,
        1.0,
        {"learning_rate": AROUND, "lr_schedule": PRESET},
    ),
    StageRule(
        Stage.FINETUNE,
        "4. Fine-tuning: batch_size and the algorithm's finer knobs (entropy, epochs, target updates)",
        0.30,
        1.0,
        {"batch_size": AROUND},
    ),
)
RULES = {rule.name: rule for rule in STAGE_RULES}
DEFAULT_BUDGET_TRIALS = 30  # the default budget: 30 full-length trials' worth of env-steps
MIN_TRIALS = 2


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
    smallest = sum(max(int(given.get("trials", trials_per_stage or MIN_TRIALS)), 1) * step.timesteps
                   for step, given in ((s, overrides.get(s.name, {})) for s in stages))  # fmt: skip
    if budget_steps is not None and budget_steps < smallest:
        raise StudyError(
            f"--budget-steps={budget_steps} cannot pay for the campaign's stages: they need at least {smallest} "
            f"env-steps ({'the trials given' if trials_per_stage or overrides else f'{MIN_TRIALS} trials'} per "
            "stage at its fidelity of --timesteps); raise --budget-steps or lower --timesteps"
        )
    return CampaignPlan(name=name, budget_steps=budget, stages=tuple(stages), evaluations=evaluations, confirm=confirm)
