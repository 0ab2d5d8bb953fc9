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
from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.trial import TrialState

from study_contract import protocol
from study_contract.algorithms import algorithm
from study_contract.definition import StudyDefinition, StudyError
from study_contract.engine.creation import FixedTrial, create_study, discard_unfinished, study_exists
from study_contract.space import ParamSpec
from study_contract.statistics import ScoreSummary, probability_of_improvement, summarise_scores
from study_contract.store.catalog import failures, load_definition
from study_contract.store.locks import study_lock

SUFFIX = ":confirm"


def confirmation_name(parent: str) -> str:
    return parent + SUFFIX


@dataclass(frozen=True)
class Candidate:
    trial: int
    value: float
    params: dict[str, Any]


def top_candidates(trials: list[optuna.trial.FrozenTrial], top: int) -> list[Candidate]:
    """The ``top`` best completed configurations, each once, the baseline left out (it is confirmed anyway)."""
    seen: set[str] = set()
    picks = []
    for trial in sorted((t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
                        key=lambda t: -float(t.value or 0.0)):  # fmt: skip
        params = trial.user_attrs.get(protocol.HYPERPARAMS)
        key = json.dumps(params, sort_keys=True)
        if params is None or trial.user_attrs.get(protocol.BASELINE) or key in seen:
            continue
        seen.add(key)
        picks.append(Candidate(trial.number, float(trial.value or 0.0), params))
        if len(picks) == top:
            break
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
    storage: optuna.storages.BaseStorage,
    parent: str,
    *,
    top: int | None = None,
    seeds: int | None = None,
    baseline: dict[str, Any] | None = None,
) -> tuple[StudyDefinition, list[FixedTrial]]:
    """The confirmation study of ``parent``: its definition and one fixed slot per configuration and test seed.

    ``baseline`` is SB3's defaults as the study saw them: its baseline trial's, unless given.
    """
    parent_id = storage.get_study_id_from_name(parent)
    definition = load_definition(storage, parent)
    if definition.stage == "confirmation":
        raise StudyError(f"study {parent!r} is a confirmation; confirm the study it follows")
    trials = storage.get_all_trials(parent_id, deepcopy=False)
    busy = trials_to_run(storage, parent_id)
    if busy:
        raise StudyBusy(
            f"study {parent!r} still has {busy} trial(s) to run; its confirmation starts when they are done"
        )
    top = top or definition.confirm_top
    picks = top_candidates(trials, top)
    if not picks:
        raise StudyError(f"study {parent!r} has no completed trial to confirm")
    if baseline is None:
        found = next(
            (t for t in trials if t.user_attrs.get(protocol.BASELINE) and protocol.HYPERPARAMS in t.user_attrs), None
        )
        baseline = (
            found.user_attrs[protocol.HYPERPARAMS]
            if found
            else algorithm(definition.algo).baseline(definition.space, definition.n_envs)
        )
    confirmation = replace(
        definition,
        n_trials=(len(picks) + 1) * (seeds or definition.test_seeds),
        stage="confirmation",
        parent=parent,
        baseline=False,
        known_good=False,
        confirm=False,
        confirm_top=top,
        test_seeds=seeds or definition.test_seeds,
        pruner="none",
        save_models="none" if definition.save_models == "none" else "all",  # the winner's models, whichever wins
        space=candidate_space([*(c.params for c in picks), baseline]),
        campaign=None,
    )
    fixed = [
        FixedTrial(params, {protocol.CANDIDATE: key, protocol.SEED: seed})
        for seed in confirmation.test_seed_list  # seed by seed: early results cover every configuration
        for key, params in [*((c.trial, c.params) for c in picks), (protocol.BASELINE, baseline)]
    ]
    return confirmation, fixed


class StudyBusy(StudyError):
    """The study's budget is not done yet (trials waiting, running or owed a retry): try again later."""


def trials_to_run(storage: optuna.storages.BaseStorage, study_id: int) -> int:
    """WAITING and RUNNING trials, and failed ones still owed a retry (lost slots a worker will restore)."""
    trials = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    if not isinstance(storage, optuna.storages.RDBStorage):
        return len(trials)
    with storage.engine.connect() as conn:
        return len(trials) + list(failures(conn, study_id).get(study_id, {}).values()).count("lost")


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
        return create_study(storage, definition, name, fixed=fixed)


def confirmation_due(definition: StudyDefinition) -> bool:
    """Whether a tuning study asks workers to confirm it once its budget is done."""
    return definition.stage == "tuning" and definition.confirm


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

    def to_dict(self) -> dict[str, Any]:
        return {"trial": self.trial, "tuning_value": self.tuning_value, "tuning_rank": self.tuning_rank,
                **self.fresh.to_dict(), "failed_seeds": self.failed_seeds, "p_improvement": self.p_improvement,
                "hyperparams": self.hyperparams}  # fmt: skip


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
            "baseline": {**self.baseline.to_dict(), "failed_seeds": self.baseline_failed_seeds},
        }


def confirmation_report(storage: optuna.storages.BaseStorage, parent: str) -> ConfirmationReport | None:
    """The confirmation of tuning study ``parent`` as it stands; None when it has none."""
    name = confirmation_name(parent)
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    definition = load_definition(storage, name)
    parent_trials = {
        t.number: t for t in storage.get_all_trials(storage.get_study_id_from_name(parent), deepcopy=False)
    }
    trials = storage.get_all_trials(study_id, deepcopy=False)
    scores: dict[Any, list[float]] = {}
    failed: dict[Any, int] = {}
    for trial in trials:
        key = trial.user_attrs.get(protocol.CANDIDATE)
        scores.setdefault(key, [])
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            scores[key].append(float(trial.value))
        elif trial.state == TrialState.FAIL and protocol.is_final_failure(trial.user_attrs):
            failed[key] = failed.get(key, 0) + 1
    baseline_scores = scores.pop(protocol.BASELINE, [])
    keys = [k for k in scores if isinstance(k, int) and not isinstance(k, bool)]
    tuning = sorted(keys, key=lambda k: -float(parent_trials[k].value or 0.0) if k in parent_trials else 0.0)
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
                hyperparams=tuned.user_attrs.get(protocol.HYPERPARAMS) if tuned else None,
            )
        )
    candidates.sort(key=lambda c: -c.fresh.iqm if c.fresh.iqm is not None else float("inf"))
    done = sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and protocol.is_final_failure(t.user_attrs))
        for t in trials
    )
    return ConfirmationReport(
        study=name,
        done=done,
        budget=definition.n_trials,
        test_seeds=definition.test_seed_list,
        candidates=candidates,
        baseline=summarise_scores(baseline_scores),
        baseline_failed_seeds=failed.get(protocol.BASELINE, 0),
    )
