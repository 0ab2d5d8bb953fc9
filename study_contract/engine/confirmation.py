"""Fresh-seed confirmation: a finished tuning study's best configurations and the baseline, re-trained on test seeds.

A tuning trial's value is one training run on one seed; in RL that number is too noisy to crown a
winner. The confirmation is a study of its own, ``<name>:confirm``, so that the tuning sampler never
learns from it and the dashboard shows it beside its parent: every slot is one configuration on one
test seed, at the parent's full timesteps and evaluation episodes, carried out by the same workers
(crash-safe and slot-exact like any study). The winner is the configuration with the best fresh-seed
IQM, not the best tuning value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

import optuna

from study_contract import protocol
from study_contract.algorithms import algorithm
from study_contract.definition import RETURN, StudyDefinition
from study_contract.engine.creation import create_study, discard_unfinished, study_exists
from study_contract.engine.instances import Scale
from study_contract.names import DefinitionError, Stage, StudyError
from study_contract.space import ParamSpec
from study_contract.statistics import CHEAPEST_TIED, ScoreSummary, iqm, probability_of_improvement, summarise_scores
from study_contract.store.locks import study_lock
from study_contract.store.study_view import StudyView, load_study
from study_contract.store.tables import Slot
from study_contract.store.trials import TrialView, by_value

SUFFIX = ":confirm"


def confirmation_name(parent: str) -> str:
    return parent + SUFFIX


@dataclass(frozen=True)
class Candidate:
    trial: int
    value: float
    params: dict[str, Any]


STRONG_SHARE = 0.25  # the best quarter of the completed configurations are strong


def top_candidates(trials: list[TrialView], top: int) -> list[Candidate]:
    """The ``top`` best completed configurations, each once, the baseline left out (it is confirmed anyway), then
    the cheapest strong one when none of them is it: the best ``max(2 * top, a quarter)`` by tuning value,
    cheapest by training compute (``relative_compute``, recorded by the worker)."""
    seen: set[str] = set()
    ranked: list[tuple[Candidate, float | None]] = []
    for trial in by_value(trials):
        params = trial.hyperparams
        key = json.dumps(params, sort_keys=True)
        if params is None or trial.get(protocol.BASELINE) or key in seen:
            continue
        seen.add(key)
        cost = trial.get(protocol.RELATIVE_COMPUTE)
        ranked.append((Candidate(trial.number, trial.value or 0.0, params), cost))
    picks = [candidate for candidate, _ in ranked[:top]]
    strong = [(candidate, cost) for candidate, cost in ranked[: max(2 * top, math.ceil(STRONG_SHARE * len(ranked)))]
              if cost is not None]  # fmt: skip
    if strong:
        cheapest = min(strong, key=lambda pair: pair[1] or 0.0)[0]
        if cheapest not in picks:
            picks.append(cheapest)
    return picks


def candidate_space(configurations: list[dict[str, Any]]) -> dict[str, ParamSpec]:
    """A space holding exactly these configurations: parameters they share are fixed, the others are a
    choice among their values, so the dashboard shows every run's real values."""
    space = {}
    for name in configurations[0]:
        values = tuple(dict.fromkeys(c[name] for c in configurations))
        fixed = len(values) == 1
        space[name] = ParamSpec(
            kind="choice", choices=values, limits=values, fixed=fixed, value=values[0] if fixed else None
        )
    return space


def plan(
    storage: optuna.storages.RDBStorage,
    parent: str,
    *,
    top: int | None = None,
    seeds: int | None = None,
    baseline: dict[str, Any] | None = None,
) -> tuple[StudyDefinition, list[Slot]]:
    """The confirmation study of ``parent``: its definition and one fixed slot per configuration and test seed.

    ``baseline`` is SB3's defaults as the study saw them: its baseline trial's, unless given.
    """
    study = load_study(storage, parent)
    definition, trials = study.definition, study.trials
    if definition.stage == Stage.CONFIRMATION:
        raise StudyError(f"study {parent!r} is a confirmation; confirm the study it follows")
    busy = study.summary.to_run
    if busy:
        raise StudyBusy(
            f"study {parent!r} still has {busy} trial(s) to run; its confirmation starts when they are done"
        )
    top = top or definition.confirm_top
    picks = [replace(c, params=_checked(definition, parent, c.trial, c.params)) for c in top_candidates(trials, top)]
    if not picks:
        raise StudyError(f"study {parent!r} has no completed trial to confirm")
    if baseline is None:
        found = next((t for t in trials if t.get(protocol.BASELINE) and t.hyperparams is not None), None)
        baseline = (
            _checked(definition, parent, found.number, found.hyperparams)
            if found
            else algorithm(definition.algo).baseline(definition.space, definition.n_envs)
        )
    confirmation = replace(
        definition,
        n_trials=(len(picks) + 1) * (seeds or definition.test_seeds) * len(definition.tasks),
        stage=Stage.CONFIRMATION,
        parent=parent,
        seeds_per_config=1,  # every test seed is a slot of its own, on every task
        baseline=False,
        known_good=False,
        confirm=False,
        confirm_top=top,
        test_seeds=seeds or definition.test_seeds,
        pruner="none",
        objective=RETURN,  # fresh-seed returns of configurations already chosen
        max_compute=0.0,  # the chosen configurations are re-trained whatever they cost
        # Each candidate keeps the models of its runs that were its best when they finished: the winner's best run
        # has one, whichever candidate wins, and a candidate keeps about ln(seeds) + 1 of them, not one per seed.
        save_models="none" if definition.save_models == "none" else "best",
        space=candidate_space([*(c.params for c in picks), baseline]),
        campaign=None,
    )
    several = len(definition.tasks) > 1
    fixed = [
        Slot(params, {protocol.CANDIDATE: key, protocol.SEED: seed, **({protocol.TASK: task} if several else {})})
        for seed in confirmation.test_seed_list  # seed by seed: early results cover every configuration
        for task in definition.tasks
        for key, params in [*((c.trial, c.params) for c in picks), (protocol.BASELINE, baseline)]
    ]
    return confirmation, fixed


def _checked(definition: StudyDefinition, study: str, number: int, params: Any) -> dict[str, Any]:
    """A trial's configuration, checked against its study's space before it is trained again."""
    try:
        return definition.check_params(params)
    except DefinitionError as exc:
        raise StudyError(f"trial {number} of {study!r}: its configuration cannot be used: {exc}") from None


class StudyBusy(StudyError):
    """The study's budget is not done yet (trials waiting, running or owed a retry): try again later."""


def create_confirmation(
    storage: optuna.storages.RDBStorage, parent: str, *, top: int | None = None, seeds: int | None = None,
    baseline: dict[str, Any] | None = None, wait: bool = True,
) -> str | None:  # fmt: skip
    """Create ``<parent>:confirm`` exactly once, under the parent's lock; its name (None if the lock was busy)."""
    parent_id = storage.get_study_id_from_name(parent)
    with study_lock(storage.engine, parent_id, wait=wait) as taken:
        if not taken:
            return None
        name = confirmation_name(parent)
        discard_unfinished(storage, name)  # a creator killed half-way left it without a definition
        if study_exists(storage, name):
            raise StudyError(f"study {parent!r} already has its confirmation {name!r}; delete it to confirm again")
        definition, fixed = plan(storage, parent, top=top, seeds=seeds, baseline=baseline)
        return create_study(storage, definition, name, fixed=fixed, follows=parent_id)


def confirmation_due(definition: StudyDefinition) -> bool:
    """Whether a tuning study asks workers to confirm it once its budget is done."""
    return definition.stage == Stage.TUNING and definition.confirm


@dataclass(frozen=True)
class CandidateResult:
    """One confirmed configuration: its tuning trial, and its scores on the test seeds."""

    trial: int
    tuning_value: float | None
    tuning_rank: int
    fresh: ScoreSummary
    failed_seeds: int
    p_improvement: float | None
    """P(a fresh-seed score of it > one of the baseline's)."""
    hyperparams: dict[str, Any] | None
    relative_compute: float | None = None
    """Training compute per env-step as a multiple of SB3's defaults' (machine-independent)."""
    seconds_per_kstep: float | None = None
    """Measured training seconds per 1,000 env-steps, over its runs on the test seeds."""
    per_task: dict[str, float | None] | None = None
    """A study tuned for several tasks: the IQM of the raw fresh-seed returns on each (``fresh`` is normalised)."""

    def to_dict(self) -> dict[str, Any]:
        return {"trial": self.trial, "tuning_value": self.tuning_value, "tuning_rank": self.tuning_rank,
                **self.fresh.to_dict(), "failed_seeds": self.failed_seeds, "p_improvement": self.p_improvement,
                "relative_compute": self.relative_compute, "seconds_per_kstep": self.seconds_per_kstep,
                "per_task": self.per_task, "hyperparams": self.hyperparams}  # fmt: skip


@dataclass(frozen=True)
class ConfirmationReport:
    """A tuning study's fresh-seed confirmation: every candidate's scores, the baseline's, the winner."""

    study: str
    done: int
    budget: int
    test_seeds: list[int]
    candidates: list[CandidateResult]
    """Best fresh-seed IQM first."""
    baseline: ScoreSummary
    baseline_failed_seeds: int
    baseline_seconds_per_kstep: float | None = None
    baseline_per_task: dict[str, float | None] | None = None

    @property
    def winner(self) -> CandidateResult | None:
        """The candidate with the best fresh-seed IQM, once it has one."""
        return self.candidates[0] if self.candidates and self.candidates[0].fresh.iqm is not None else None

    @property
    def confirmed(self) -> bool:
        """Every slot is done and a candidate has scores."""
        return self.done >= self.budget and self.winner is not None

    @property
    def rankings_agree(self) -> bool:
        return self.winner is not None and self.winner.tuning_rank == 1

    @property
    def beats_baseline(self) -> bool:
        winner, baseline = self.winner, self.baseline.iqm
        return (
            winner is not None and winner.fresh.iqm is not None and baseline is not None and winner.fresh.iqm > baseline
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "confirmed": self.confirmed,
            "study": self.study,
            "done": self.done,
            "budget": self.budget,
            "test_seeds": self.test_seeds,
            "winner": self.winner.trial if self.winner else None,
            "rankings_agree": self.rankings_agree,
            "beats_baseline": self.beats_baseline,
            "candidates": [c.to_dict() for c in self.candidates],
            "baseline": {**self.baseline.to_dict(), "failed_seeds": self.baseline_failed_seeds,
                         "seconds_per_kstep": self.baseline_seconds_per_kstep, "per_task": self.baseline_per_task},
        }  # fmt: skip

    def tied_with_winner(self) -> list[CandidateResult]:
        """The candidates statistically tied with the winner: their fresh-seed IQM inside its 95 % interval."""
        winner = self.winner
        if winner is None or winner.fresh.ci is None:
            return [winner] if winner else []
        low = winner.fresh.ci[0]
        return [c for c in self.candidates if c.fresh.iqm is not None and c.fresh.iqm >= low]

    def pick(self, rule: str) -> Pick | None:
        """The configuration to recommend: the best fresh-seed IQM (``best``), or the cheapest of those tied with
        it (``cheapest-tied``, by training compute per env-step); with what the choice gives up."""
        winner = self.winner
        if winner is None:
            return None
        tied = self.tied_with_winner()
        priced = [c for c in tied if c.relative_compute is not None]
        chosen = winner
        if rule == CHEAPEST_TIED and priced and winner.relative_compute is not None:
            chosen = min(priced, key=lambda c: (c.relative_compute, -(c.fresh.iqm or 0.0)))
        ratio = (winner.relative_compute / chosen.relative_compute
                 if winner.relative_compute and chosen.relative_compute else None)  # fmt: skip
        return Pick(rule, chosen.trial, winner.trial, [c.trial for c in tied], ratio, _statement(chosen, winner, ratio))


@dataclass(frozen=True)
class Pick:
    """Which confirmed configuration is recommended, by which rule, and at what price."""

    rule: str
    trial: int
    best_trial: int
    """The candidate with the best fresh-seed IQM."""
    tied: list[int]
    cost_ratio: float | None
    """The best's training compute over the chosen one's: how many times cheaper the choice trains."""
    statement: str


def _interval(c: CandidateResult) -> str:
    iqm = "-" if c.fresh.iqm is None else f"{c.fresh.iqm:.2f}"
    ci = f" [{c.fresh.ci[0]:.2f}, {c.fresh.ci[1]:.2f}]" if c.fresh.ci else ""
    return f"IQM {iqm}{ci}"


def _statement(chosen: CandidateResult, winner: CandidateResult, ratio: float | None) -> str:
    if chosen.trial == winner.trial:
        cost = f", {winner.relative_compute:.2f}x the defaults' compute" if winner.relative_compute else ""
        return f"trial {chosen.trial}: {_interval(chosen)}, the best fresh-seed IQM{cost}"
    return (f"trial {chosen.trial}: {_interval(chosen)}, {ratio or 0:.1f}x cheaper than trial {winner.trial} "
            f"({_interval(winner)}), tied")  # fmt: skip


def confirmation_report(storage: optuna.storages.RDBStorage, parent: StudyView) -> ConfirmationReport | None:
    """The confirmation of tuning study ``parent`` as it stands; None when it has none."""
    name = confirmation_name(parent.name)
    if not study_exists(storage, name):
        return None
    confirmation = load_study(storage, name)
    parent_trials = {t.number: t for t in parent.trials}
    trials = confirmation.trials
    tasks = confirmation.definition.tasks
    # With several tasks, every run's return normalised on its task, as the tuning study valued its configurations.
    scale = Scale.of((t.get(protocol.TASK, ""), t.value) for t in trials if t.complete) if len(tasks) > 1 else None
    scores: dict[Any, list[float]] = {}
    per_task: dict[Any, dict[str, list[float]]] = {}
    failed: dict[Any, int] = {}
    speeds: dict[Any, list[float]] = {}
    for trial in trials:
        key = trial.get(protocol.CANDIDATE)
        scores.setdefault(key, [])
        if trial.complete:
            task, value = trial.get(protocol.TASK, ""), trial.value or 0.0
            scores[key].append(scale.normalised(task, value) if scale else value)
            per_task.setdefault(key, {}).setdefault(task, []).append(value)
            speed = trial.get(protocol.SECONDS_PER_KSTEP)
            if speed is not None:
                speeds.setdefault(key, []).append(speed)
        elif confirmation.final_failure(trial):
            failed[key] = failed.get(key, 0) + 1
    baseline_scores = scores.pop(protocol.BASELINE, [])
    keys = [k for k in scores if isinstance(k, int)]
    tuning = sorted(keys, key=lambda k: -(parent_trials[k].value or 0.0) if k in parent_trials else 0.0)
    candidates = []
    for key in keys:
        tuned = parent_trials.get(key)
        candidates.append(
            CandidateResult(
                trial=key,
                tuning_value=tuned.value if tuned else None,
                tuning_rank=tuning.index(key) + 1,
                fresh=summarise_scores(scores[key]),
                failed_seeds=failed.get(key, 0),
                p_improvement=probability_of_improvement(scores[key], baseline_scores),
                hyperparams=tuned.hyperparams if tuned else None,
                relative_compute=tuned.get(protocol.RELATIVE_COMPUTE) if tuned else None,
                seconds_per_kstep=_mean(speeds.get(key)),
                per_task=_task_iqms(per_task.get(key), tasks) if scale else None,
            )
        )
    candidates.sort(key=lambda c: -c.fresh.iqm if c.fresh.iqm is not None else float("inf"))
    return ConfirmationReport(
        study=name,
        done=confirmation.summary.done,
        budget=confirmation.definition.n_trials,
        test_seeds=confirmation.definition.test_seed_list,
        candidates=candidates,
        baseline=summarise_scores(baseline_scores),
        baseline_failed_seeds=failed.get(protocol.BASELINE, 0),
        baseline_seconds_per_kstep=_mean(speeds.get(protocol.BASELINE)),
        baseline_per_task=_task_iqms(per_task.get(protocol.BASELINE), tasks) if scale else None,
    )


def _task_iqms(returns: dict[str, list[float]] | None, tasks: list[str]) -> dict[str, float | None]:
    """The IQM of the raw fresh-seed returns on each task (None where none completed)."""
    return {task: iqm(returns[task]) if returns and returns.get(task) else None for task in tasks}


def _mean(values: list[float] | None) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class Recommendation:
    """What a tuning study recommends: its confirmed pick once its confirmation is done, else its best trial."""

    trial: TrialView
    report: ConfirmationReport | None
    pick: Pick | None
    """Set when the recommendation is confirmed."""

    @property
    def fresh_iqm(self) -> float | None:
        """The confirmed pick's fresh-seed IQM."""
        if self.pick is None or self.report is None:
            return None
        return next((c.fresh.iqm for c in self.report.candidates if c.trial == self.pick.trial), None)


def recommendation(
    study: StudyView, report: ConfirmationReport | None, rule: str = CHEAPEST_TIED
) -> Recommendation | None:
    """What ``study`` recommends, given its confirmation ``report`` and the ``rule`` choosing among confirmed
    candidates (:meth:`ConfirmationReport.pick`); None before a trial completes."""
    if study.best is None:
        return None
    pick = report.pick(rule) if report is not None and report.confirmed else None
    if pick is None:
        return Recommendation(study.best, report, None)
    chosen = study.trial(pick.trial)
    if chosen is None:
        raise StudyError(
            f"study {study.name!r}: its confirmation recommends trial {pick.trial}, which it does not have"
        )
    return Recommendation(chosen, report, pick)
