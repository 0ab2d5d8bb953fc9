"""What ``study_admin`` reads and changes in a study: details, the best configuration, pause, delete.

Creating studies lives in ``study_contract/engine/creation.py``, which workers use too (follow-up studies).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

import optuna

from study_admin.models import Configuration, Cost, StudyDetails, TrialRecord
from study_contract import protocol
from study_contract.algorithms import algorithm
from study_contract.definition import PAUSED_ATTR, PAUSED_REASON_ATTR, StudyDefinition
from study_contract.engine.confirmation import (
    ConfirmationReport,
    Pick,
    confirmation_name,
    confirmation_report,
)
from study_contract.names import DefinitionError, Stage, StudyError
from study_contract.statistics import CHEAPEST_TIED
from study_contract.store.catalog import (
    Summary,
    count_trials,
    load_definition,
    read_trials,
    started_trial,
    study_id_of,
    summarise,
)
from study_contract.store.trials import TrialView, by_value

FINISHED = ("COMPLETE", "PRUNED", "FAIL")


def summary_of(storage: optuna.storages.RDBStorage, name: str) -> Summary:
    study_id_of(storage, name)
    for summary in summarise(storage.engine):
        if summary.name == name:
            return summary
    raise StudyError(f"study {name!r} was not created by study_admin (it has no definition)")


def trial_record(trial: TrialView) -> TrialRecord:
    return TrialRecord(
        number=trial.number,
        state=trial.state,
        value=trial.value,
        hyperparams=trial.hyperparams,
        seed=trial.seed,
        env_steps=trial.get(protocol.ENV_STEPS),
        train_steps_per_second=trial.get(protocol.TRAIN_STEPS_PER_SECOND),
        wall_seconds=trial.get(protocol.WALL_SECONDS),
        worker=trial.get(protocol.WORKER),
        fail_reason=trial.get(protocol.FAIL_REASON),
        retried=trial.get(protocol.RETRY),
        retry_of=trial.system.get(protocol.FAILED_TRIAL),
        progress=trial.get(protocol.PROGRESS),
        cost=trial_cost(trial),
        provenance=trial.get(protocol.PROVENANCE),
        warm_start=trial.get(protocol.WARM_START),
    )


def one_trial(storage: optuna.storages.RDBStorage, name: str, number: int) -> tuple[StudyDefinition, TrialRecord]:
    """``show NAME --trial N``: the trial with its learning curve and provenance."""
    definition = load_definition(storage, name)
    trial = started_trial(storage, name, number)
    return definition, replace(trial_record(trial), curve=trial.curve)


def study_details(storage: optuna.storages.RDBStorage, name: str, top: int = 5) -> StudyDetails:
    summary = summary_of(storage, name)
    definition = load_definition(storage, name)
    trials = read_trials(storage, name)
    finished = [t for t in trials if t.state in FINISHED]
    complete = by_value(trials)
    rates = [t.get(protocol.TRAIN_STEPS_PER_SECOND) for t in finished if protocol.TRAIN_STEPS_PER_SECOND in t.attrs]
    failed = [t for t in finished if t.state == "FAIL" and t.get(protocol.FAIL_REASON)]
    failed.sort(key=lambda t: t.number, reverse=True)
    return StudyDetails(
        summary=summary,
        definition=definition,
        best=trial_record(complete[0]) if complete else None,
        top_trials=[trial_record(t) for t in complete[:top]],
        running=[trial_record(t) for t in trials if t.state == "RUNNING"],
        failures=[trial_record(t) for t in failed[:top]],
        mean_train_steps_per_second=sum(rates) / len(rates) if rates else None,
        env_steps_total=sum(t.get(protocol.ENV_STEPS, 0) for t in finished),
        confirmation=confirmation_report(storage, name) if definition.stage == Stage.TUNING else None,
    )


def best_configuration(storage: optuna.storages.RDBStorage, name: str, pick: str = CHEAPEST_TIED) -> Configuration:
    """The recommended configuration, with its schedule spelled out.

    Once the study's fresh-seed confirmation is done, that is a confirmed candidate chosen by ``pick``: the
    best fresh-seed IQM, or the cheapest to train of those tied with it; with the statistics of every
    candidate and the baseline. Until then, the best tuning trial, not confirmed.
    """
    definition = load_definition(storage, name)
    trials = read_trials(storage, name)
    ranked = by_value(trials)
    if not ranked:
        raise StudyError(f"study {name!r} has no completed trial yet")
    report = confirmation_report(storage, name) if definition.stage == Stage.TUNING else None
    chosen = report.pick(pick) if report is not None and report.confirmed else None
    if chosen is None:
        return configuration(definition, name, ranked[0], report, None)
    best = next((t for t in trials if t.number == chosen.trial), None)
    if best is None:
        raise StudyError(f"study {name!r}: its confirmation recommends trial {chosen.trial}, which it does not have")
    return configuration(definition, name, best, report, chosen)


def trial_configuration(
    storage: optuna.storages.RDBStorage, name: str, number: int | None, pick: str = CHEAPEST_TIED
) -> Configuration:
    """The configuration of trial ``number`` (default: the recommended one, see :func:`best_configuration`)."""
    if number is None:
        return best_configuration(storage, name, pick)
    definition = load_definition(storage, name)
    trial = next((t for t in read_trials(storage, name) if t.number == number), None)
    if trial is None:
        try:
            storage.get_trial_id_from_study_id_trial_number(study_id_of(storage, name), number)
        except KeyError:
            raise StudyError(f"study {name!r} has no trial {number}") from None
        raise StudyError(f"trial {number} of {name!r} has not sampled its configuration yet (WAITING)")
    if trial.hyperparams is None:
        raise StudyError(f"trial {number} of {name!r} has not sampled its configuration yet ({trial.state})")
    return configuration(definition, name, trial, None, None)


def artifact_trial(storage: optuna.storages.RDBStorage, name: str, number: int | None,
                   pick: str = CHEAPEST_TIED) -> optuna.trial.FrozenTrial:  # fmt: skip
    """The trial whose files ``download`` fetches: trial ``number``, or the recommended one; when a confirmed
    pick kept no model of its own, its best run on the test seeds."""
    from study_contract.store.artifacts import MODEL, trial_artifacts

    config = trial_configuration(storage, name, number, pick)
    study_id = study_id_of(storage, name)
    trial = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, config.trial))
    if MODEL in trial_artifacts(trial, strict=False) or not config.confirmed:
        return trial
    runs = [t for t in read_trials(storage, confirmation_name(name)) if t.get(protocol.CANDIDATE) == config.trial]
    best_run = max((t for t in runs if t.complete), key=lambda t: (t.get(protocol.SAVED_MODEL, False), t.value),
                   default=None)  # fmt: skip
    return trial if best_run is None else storage.get_trial(best_run.trial_id)


def configuration(
    definition: StudyDefinition,
    name: str,
    trial: TrialView,
    report: ConfirmationReport | None,
    pick: Pick | None,
) -> Configuration:
    """What reproduces ``trial``'s configuration; its values are checked against the study's space first."""
    try:
        params = definition.check_params(trial.hyperparams)
    except DefinitionError as exc:
        raise StudyError(f"trial {trial.number} of {name!r}: its configuration cannot be used: {exc}") from None
    return Configuration(
        study=name,
        trial=trial.number,
        algo=definition.algo,
        env_id=definition.env_id,
        n_envs=definition.n_envs,
        timesteps=definition.timesteps,
        policy=definition.policy,
        hyperparams=params,
        recipe=algorithm(definition.algo).recipe(params, definition.backend),
        mean_reward=trial.value,
        seed=trial.seed,
        confirmed=pick is not None and pick.trial == trial.number,
        confirmation=report,
        pick=pick,
        cost=trial_cost(trial),
        provenance=trial.get(protocol.PROVENANCE),
        warm_start=trial.get(protocol.WARM_START),
    )


def trial_cost(trial: TrialView) -> Cost:
    """What training the trial cost, as its worker recorded it."""
    return Cost(*(trial.get(key) for key in (protocol.RELATIVE_COMPUTE, protocol.COMPUTE_PER_STEP,
                                             protocol.SECONDS_PER_KSTEP)))  # fmt: skip


def set_paused(storage: optuna.storages.RDBStorage, name: str, paused: bool) -> None:
    load_definition(storage, name)
    study_id = study_id_of(storage, name)
    storage.set_study_user_attr(study_id, PAUSED_ATTR, paused)
    if not paused:
        storage.set_study_user_attr(study_id, PAUSED_REASON_ATTR, None)


def delete(storage: optuna.storages.RDBStorage, name: str, *, force: bool = False, store: Any = None) -> int:
    """Delete the study, then the files of its artifact ``store`` that the study and its trials refer to; the
    number of artifacts left behind (refused while trials run, unless ``force``)."""
    from study_contract.store.artifacts import owned_artifact_ids

    study_id = study_id_of(storage, name)
    running = count_trials(storage.engine, study_id, "RUNNING")
    if running and not force:
        raise StudyError(
            f"study {name!r} has {running} running trial(s); pause it and wait, or delete with --force "
            "(workers then drop those trials, and the files they uploaded, and go on)"
        )
    artifact_ids = owned_artifact_ids(storage.engine, study_id)
    storage.delete_study(study_id)
    if store is None:
        return len(artifact_ids)
    for artifact_id in artifact_ids:
        with contextlib.suppress(optuna.artifacts.exceptions.ArtifactNotFound):
            store.remove(artifact_id)
    return 0
