"""A campaign's stage studies: created, decided and advanced, each exactly once across the fleet.

The plan and its rules are in ``study_contract/campaign.py``; this module reads and writes the
studies: the first stage at ``campaign create``, then, when a stage's budget is done, its decision (the
winner so far and why) and the next stage, or after the last stage its fresh-seed confirmation, each
under the finished stage's lock.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import optuna

from study_contract import protocol
from study_contract.algorithms import algorithm
from study_contract.campaign import RULES, CampaignPlan
from study_contract.definition import StudyDefinition
from study_contract.engine.confirmation import StudyBusy, confirmation_name, create_confirmation
from study_contract.engine.creation import create_study, discard_unfinished, study_exists
from study_contract.engine.spaces import resolve_space
from study_contract.names import DefinitionError, Stage, StudyError
from study_contract.space import SpaceError
from study_contract.statistics import iqm
from study_contract.store.catalog import load_definition
from study_contract.store.locks import study_lock
from study_contract.store.study_view import StudyView, load_study
from study_contract.store.tables import Slot
from study_contract.store.trials import TrialView, by_value

log = logging.getLogger(__name__)


def stage_definition(
    base: StudyDefinition, plan: CampaignPlan, stage: str, winner: dict[str, Any], parent: str | None
) -> StudyDefinition:
    """The definition of ``stage``, built from the campaign's base definition and the winner so far."""
    step = plan.stage(stage)
    try:
        space = resolve_space(base.algo, base.space_preset, step.timesteps, base.n_envs, overrides=step.space,
                              stage=stage, winner=winner)  # fmt: skip
    except SpaceError as exc:
        raise StudyError(f"campaign stage {stage}: {exc}") from None
    try:
        return replace(
            base,
            n_trials=step.trials,
            timesteps=step.timesteps,
            eval_every=max(step.timesteps // plan.evaluations, 1),
            pruner=RULES[stage].pruner,
            baseline=False,
            known_good=base.known_good and stage == "coarse",  # later stages search around the winner
            max_compute=0.0 if stage == "baseline" else base.max_compute,  # SB3's defaults are the reference
            confirm=False,
            stage=stage,
            parent=parent,
            campaign=plan.to_dict(),
            space=space,
        )
    except DefinitionError as exc:
        raise StudyError(f"campaign stage {stage} ({step.timesteps} env-steps per trial): {exc}") from None


def create_campaign(storage: optuna.storages.RDBStorage, base: StudyDefinition, plan: CampaignPlan) -> str:
    """Create the first stage (the baseline: SB3's defaults, one trial per seed); its study name."""
    defaults = algorithm(base.algo).baseline(base.space, base.n_envs)
    name = plan.study_name(Stage.BASELINE)
    definition = stage_definition(base, plan, Stage.BASELINE, defaults, None)
    return create_study(storage, definition, name)


@dataclass(frozen=True)
class StageOutcome:
    """What a finished stage decided: the winner carried forward and why."""

    winner_study: str
    winner_trial: int
    winner_value: float | None
    params: dict[str, Any]
    kept_previous: bool
    reason: str


OUTCOME_ATTR = "campaign_outcome"


def stage_outcome(storage: optuna.storages.RDBStorage, study: str) -> StageOutcome | None:
    """The stage's decision once recorded (a finished stage records it when the next one is created); None
    before that, for a stage that was deleted, and for a record that is not one a worker writes (its
    configuration outside the stage's space, a field of the wrong type): the stage is then decided again."""
    try:
        attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(study))
    except KeyError:
        return None
    record = attrs.get(OUTCOME_ATTR)
    if not record:
        return None
    try:
        outcome = _outcome(record)
        return replace(outcome, params=load_definition(storage, study).check_params(outcome.params))
    except (StudyError, DefinitionError, TypeError) as exc:
        log.warning("campaign stage %s: its recorded outcome is ignored: %s", study, exc)
        return None


OUTCOME_TYPES: dict[str, Any] = {"winner_study": str, "winner_trial": int, "winner_value": (int, float, type(None)),
                                 "params": dict, "kept_previous": bool, "reason": str}  # fmt: skip


def _outcome(record: Any) -> StageOutcome:
    if not isinstance(record, dict) or set(record) != set(OUTCOME_TYPES):
        raise TypeError(f"{OUTCOME_ATTR} must have the fields {sorted(OUTCOME_TYPES)}")
    for name, kind in OUTCOME_TYPES.items():
        value = record[name]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise TypeError(f"{OUTCOME_ATTR}.{name}={value!r} has the wrong type")
    value = record["winner_value"]
    if value is not None and not math.isfinite(value):
        raise TypeError(f"{OUTCOME_ATTR}.winner_value={value!r} is not finite")
    return StageOutcome(**record)


def decide(storage: optuna.storages.RDBStorage, stage: StudyView) -> StageOutcome:
    """The winner after ``stage``: its best trial, unless that was only the previous winner's re-run."""
    study, definition = stage.name, stage.definition
    complete = [t for t in stage.trials if t.complete and t.hyperparams is not None]
    if not complete:
        raise StudyError(f"stage {study!r} finished without a completed trial; the campaign cannot go on")
    if definition.stage == Stage.BASELINE:
        values = [t.value or 0.0 for t in complete]
        return StageOutcome(study, complete[0].number, iqm(values), _checked(definition, study, complete[0]), False,
                            f"SB3's defaults on {len(values)} seeds: IQM {iqm(values):.2f}, "
                            f"from {min(values):.2f} to {max(values):.2f}")  # fmt: skip
    best = by_value(complete)[0]
    rerun = next((t for t in complete if t.get(protocol.PREVIOUS_WINNER)), None)
    previous = stage_outcome(storage, definition.parent) if definition.parent else None
    if definition.parent and previous is None:
        log.warning("campaign stage %s: its previous stage %s was deleted; deciding without its outcome",
                    study, definition.parent)  # fmt: skip
    if rerun is not None and previous is not None and best.number == rerun.number:
        return replace(
            previous,
            kept_previous=True,
            reason=f"no trial of {study} beat the previous winner (its re-run here scored {rerun.value:.2f})",
        )
    margin = ""
    if rerun is not None and rerun.value is not None and best.value is not None:
        margin = f", {best.value - rerun.value:+.2f} over the previous winner's re-run"
    return StageOutcome(study, best.number, best.value, _checked(definition, study, best), False,
                        f"trial {best.number} scored {best.value:.2f}{margin}")  # fmt: skip


def _checked(definition: StudyDefinition, study: str, trial: TrialView) -> dict[str, Any]:
    """The configuration a stage hands on, checked against the stage's space."""
    try:
        return definition.check_params(trial.hyperparams)
    except DefinitionError as exc:
        raise StudyError(f"trial {trial.number} of {study!r}: its configuration cannot be used: {exc}") from None


def follow_up_name(definition: StudyDefinition, study: str) -> str | None:
    """What follows a finished campaign stage: the next stage, or the last stage's confirmation, or nothing."""
    assert definition.campaign is not None
    plan = CampaignPlan.from_dict(definition.campaign)
    following = plan.next_stage(definition.stage)
    if following is not None:
        return plan.study_name(following)
    return confirmation_name(study) if plan.confirm else None


def advance(storage: optuna.storages.RDBStorage, study: str, *, wait: bool = True) -> str | None:
    """Go on from finished stage ``study``: record its outcome and create the next stage, or, after the last
    stage, its fresh-seed confirmation; each exactly once (under the stage's lock). The created study's
    name; None when the lock is busy or the next stage already exists; :class:`StudyError` when the
    confirmation already exists or cannot be planned.
    """
    definition = load_definition(storage, study)
    if definition.campaign is None:
        raise StudyError(f"study {study!r} is not a campaign stage")
    plan = CampaignPlan.from_dict(definition.campaign)
    following = plan.next_stage(definition.stage)
    study_id = storage.get_study_id_from_name(study)
    with study_lock(storage.engine, study_id, wait=wait) as taken:
        if not taken:
            return None
        outcome = stage_outcome(storage, study)
        if outcome is None:
            stage = load_study(storage, study)
            if stage.summary.to_run:
                raise StudyBusy(f"stage {study!r} still has {stage.summary.to_run} trial(s) to run; the next stage "
                                "waits for them")  # fmt: skip
            outcome = decide(storage, stage)
            storage.set_study_user_attr(study_id, OUTCOME_ATTR, asdict(outcome))
        if following is None:
            baseline = stage_outcome(storage, plan.study_name(Stage.BASELINE))
            confirm = plan.confirm
        else:
            return _create_stage(storage, plan, definition, following, outcome, study)
    if not confirm:
        return None
    return create_confirmation(storage, study, top=definition.confirm_top, seeds=definition.test_seeds,
                               baseline=baseline.params if baseline else None, wait=wait)  # fmt: skip


def _create_stage(
    storage: optuna.storages.RDBStorage,
    plan: CampaignPlan,
    definition: StudyDefinition,
    following: str,
    outcome: StageOutcome,
    study: str,
) -> str | None:
    name = plan.study_name(following)
    discard_unfinished(storage, name)  # a creator killed half-way left it without a definition
    if study_exists(storage, name):
        return None
    nxt = stage_definition(definition, plan, following, outcome.params, study)
    first = Slot(outcome.params, {protocol.PREVIOUS_WINNER: True})
    return create_study(storage, nxt, name, fixed=[first], follows=storage.get_study_id_from_name(study))
