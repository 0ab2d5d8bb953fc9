"""``study_admin campaign list|show``: the ladder of a campaign's stages and what each decided."""

from __future__ import annotations

from dataclasses import replace

import optuna

from study_admin.models import CampaignReport, CampaignWinner, StageRow
from study_contract.campaign import RULES, CampaignPlan
from study_contract.engine.confirmation import ConfirmationReport, confirmation_report
from study_contract.engine.creation import study_exists
from study_contract.engine.stages import decide, stage_outcome
from study_contract.names import Stage, StudyError
from study_contract.store.catalog import StudyState, tuning_studies
from study_contract.store.study_view import load_study


def _plans(storage: optuna.storages.RDBStorage) -> dict[str, CampaignPlan]:
    """Every campaign with a stage left, by name, oldest first (any stage carries the campaign's plan)."""
    plans: dict[str, CampaignPlan] = {}
    for study in tuning_studies(storage.engine):
        campaign = study.definition.campaign if study.definition else None
        if campaign is not None and study.definition is not None and study.definition.stage != Stage.CONFIRMATION:
            plans.setdefault(campaign["name"], CampaignPlan.from_dict(campaign))
    return plans


def campaign_names(storage: optuna.storages.RDBStorage) -> list[str]:
    return list(_plans(storage))


def _plan(storage: optuna.storages.RDBStorage, name: str) -> CampaignPlan:
    plans = _plans(storage)
    if name not in plans:
        raise StudyError(f"no campaign named {name!r}; existing campaigns: {', '.join(plans) or '(none)'}")
    return plans[name]


def campaign_report(storage: optuna.storages.RDBStorage, name: str) -> CampaignReport:
    """Each stage: its study, state, trials, env-steps spent, best value, what it fixed, its decision."""
    plan = _plan(storage, name)
    stages: list[StageRow] = []
    baseline_iqm = None
    winner = None
    existing = [study_exists(storage, plan.study_name(step.name)) for step in plan.stages]
    for index, step in enumerate(plan.stages):
        study = plan.study_name(step.name)
        row = StageRow(stage=step.name, guide=RULES[step.name].guide, study=study, budget_trials=step.trials,
                       timesteps=step.timesteps, state=StudyState.NOT_STARTED)  # fmt: skip
        if not existing[index]:
            later = any(existing[index + 1 :])
            stages.append(replace(row, state=StudyState.DELETED if later else StudyState.NOT_STARTED))
            continue
        view = load_study(storage, study)
        summary, definition = view.summary, view.definition
        outcome = stage_outcome(storage, study)
        if outcome is None and summary.state == StudyState.FINISHED and view.best is not None:
            outcome = decide(storage, view)
        searched = RULES[step.name].searched(definition.algo)
        if step.name == Stage.BASELINE and outcome is not None:
            baseline_iqm = outcome.winner_value
        full = step.timesteps == max(s.timesteps for s in plan.stages)
        gain = (
            summary.best_value - baseline_iqm
            if full and step.name != Stage.BASELINE and summary.best_value is not None and baseline_iqm is not None
            else None
        )
        stages.append(
            replace(
                row,
                state=summary.state,
                done=summary.done,
                best_value=summary.best_value,
                env_steps=view.env_steps,
                fixed={n: s.value for n, s in definition.space.items() if s.fixed and n not in searched},
                searched=sorted(n for n, s in definition.space.items() if not s.fixed),
                decision=outcome,
                improvement_over_baseline=gain,
            )
        )
        if outcome is not None:
            winner = CampaignWinner(outcome.winner_study, outcome.winner_trial, outcome.winner_value)
    last = plan.study_name(plan.stages[-1].name)
    confirmed = confirmation_report(storage, load_study(storage, last)) if study_exists(storage, last) else None
    if confirmed is not None and confirmed.confirmed:
        winner = _confirmed_winner(last, confirmed)
    return CampaignReport(campaign=name, budget_steps=plan.budget_steps, stages=stages, winner=winner,
                          confirmation=confirmed)  # fmt: skip


def _confirmed_winner(study: str, confirmed: ConfirmationReport) -> CampaignWinner | None:
    """The fresh-seed winner, with its gain over the baseline on the same test seeds and its uncertainty."""
    best, baseline = confirmed.winner, confirmed.baseline.iqm
    if best is None:
        return None
    gain = None if baseline is None or best.fresh.iqm is None else best.fresh.iqm - baseline
    return CampaignWinner(study=study, trial=best.trial, value=best.fresh.iqm, confirmed=True, ci=best.fresh.ci,
                          improvement_over_baseline=gain, p_improvement=best.p_improvement)  # fmt: skip
