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
    recommendation,
)
from study_contract.engine.instances import instance_study_name, instance_study_names
from study_contract.names import DefinitionError, Stage, StudyError
from study_contract.statistics import CHEAPEST_TIED
from study_contract.store.catalog import count_trials, load_definition, study_id_of, study_names
from study_contract.store.study_view import StudyView, load_study
from study_contract.store.trials import TrialView

FINISHED = ("COMPLETE", "PRUNED", "FAIL")


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
        instance_returns=trial.get(protocol.INSTANCE_RETURNS),
    )


def one_trial(study: StudyView, number: int) -> TrialRecord:
    """``show NAME --trial N``: the trial with its learning curve and provenance."""
    trial = study.started(number)
    return replace(trial_record(trial), curve=trial.curve)


def confirmation_of(storage: optuna.storages.RDBStorage, study: StudyView) -> ConfirmationReport | None:
    """The fresh-seed confirmation of a tuning study, as it stands; None for other studies and before it starts."""
    return confirmation_report(storage, study) if study.definition.stage == Stage.TUNING else None


def study_details(storage: optuna.storages.RDBStorage, study: StudyView, top: int = 5) -> StudyDetails:
    finished = [t for t in study.trials if t.state in FINISHED]
    rates = [t.get(protocol.TRAIN_STEPS_PER_SECOND) for t in finished if protocol.TRAIN_STEPS_PER_SECOND in t.attrs]
    failed = [t for t in finished if t.state == "FAIL" and t.get(protocol.FAIL_REASON)]
    failed.sort(key=lambda t: t.number, reverse=True)
    return StudyDetails(
        summary=study.summary,
        definition=study.definition,
        best=trial_record(study.best) if study.best else None,
        top_trials=[trial_record(t) for t in study.ranked[:top]],
        running=[trial_record(t) for t in study.trials if t.state == "RUNNING"],
        failures=[trial_record(t) for t in failed[:top]],
        mean_train_steps_per_second=sum(rates) / len(rates) if rates else None,
        env_steps_total=study.env_steps,
        confirmation=confirmation_of(storage, study),
    )


def recommended_configuration(
    study: StudyView, report: ConfirmationReport | None, pick: str = CHEAPEST_TIED
) -> Configuration:
    """The recommended configuration, with its schedule spelled out.

    Once the study's fresh-seed confirmation ``report`` is done, that is a confirmed candidate chosen by ``pick``:
    the best fresh-seed IQM, or the cheapest to train of those tied with it; with the statistics of every
    candidate and the baseline. Until then, the best tuning trial, not confirmed.
    """
    chosen = recommendation(study, report, pick)
    if chosen is None:
        raise StudyError(f"study {study.name!r} has no completed trial yet")
    return configuration(study.definition, study.name, chosen.trial, chosen.report, chosen.pick)


def best_configuration(
    storage: optuna.storages.RDBStorage, study: StudyView, pick: str = CHEAPEST_TIED
) -> Configuration:
    """The recommended configuration of ``study`` as its confirmation stands (:func:`recommended_configuration`)."""
    return recommended_configuration(study, confirmation_of(storage, study), pick)


def trial_configuration(
    storage: optuna.storages.RDBStorage, study: StudyView, number: int | None, pick: str = CHEAPEST_TIED
) -> Configuration:
    """The configuration of trial ``number`` (default: the recommended one, see :func:`recommended_configuration`)."""
    if number is None:
        return best_configuration(storage, study, pick)
    trial = study.trial(number)
    if trial is None:
        try:
            storage.get_trial_id_from_study_id_trial_number(study.study_id, number)
        except KeyError:
            raise StudyError(f"study {study.name!r} has no trial {number}") from None
        raise StudyError(f"trial {number} of {study.name!r} has not sampled its configuration yet (WAITING)")
    if trial.hyperparams is None:
        raise StudyError(f"trial {number} of {study.name!r} has not sampled its configuration yet ({trial.state})")
    return configuration(study.definition, study.name, trial, None, None)


def artifact_trial(storage: optuna.storages.RDBStorage, name: str, number: int | None,
                   pick: str = CHEAPEST_TIED) -> optuna.trial.FrozenTrial:  # fmt: skip
    """The trial whose files ``download`` fetches: trial ``number``, or the recommended one; when a confirmed
    pick kept no model of its own, its best run on the test seeds."""
    from study_contract.store.artifacts import MODEL, trial_artifacts

    study = load_study(storage, name)
    config = trial_configuration(storage, study, number, pick)
    trial = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study.study_id, config.trial))
    if MODEL in trial_artifacts(trial, strict=False):
        return trial
    # A confirmed pick's runs on the test seeds, else a configuration's instances: on the first task, the one study
    # whose returns compare, one that kept its model and the best of those.
    if config.confirmed:
        runs = load_study(storage, confirmation_name(name)).trials
    elif study.definition.has_instances:
        runs = load_study(storage, instance_study_name(name, 0)).trials
    else:
        return trial
    first = study.definition.env_id
    mine = [t for t in runs if t.get(protocol.CANDIDATE) == config.trial and t.get(protocol.TASK, first) == first]
    best_run = max((t for t in mine if t.complete), key=lambda t: (t.get(protocol.SAVED_MODEL, False), t.value),
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
        tasks=definition.tasks,
    )


def trial_cost(trial: TrialView) -> Cost:
    """What training the trial cost, as its worker recorded it."""
    return Cost(*(trial.get(key) for key in (protocol.RELATIVE_COMPUTE, protocol.COMPUTE_PER_STEP,
                                             protocol.SECONDS_PER_KSTEP)))  # fmt: skip


def existing_instance_studies(storage: optuna.storages.RDBStorage, name: str) -> list[str]:
    """The instance studies of study ``name`` (``name:task-1``, ...) that exist, whatever its definition says."""
    return instance_study_names(name, study_names(storage.engine))


def set_paused(storage: optuna.storages.RDBStorage, name: str, paused: bool) -> None:
    """Pause or resume study ``name`` and its instance studies: a paused study's instances wait too."""
    load_definition(storage, name)
    for each in [name, *existing_instance_studies(storage, name)]:
        study_id = study_id_of(storage, each)
        storage.set_study_user_attr(study_id, PAUSED_ATTR, paused)
        if not paused:
            storage.set_study_user_attr(study_id, PAUSED_REASON_ATTR, None)


def delete(storage: optuna.storages.RDBStorage, name: str, *, force: bool = False, store: Any = None) -> int:
    """Delete the study and its instance studies, then the files of its artifact ``store`` that they and their trials
    refer to; the number of artifacts left behind (refused while trials run, unless ``force``)."""
    from study_contract.store.artifacts import owned_artifact_ids

    family = [*existing_instance_studies(storage, name), name]  # its instances first: a study never lacks them
    ids = [study_id_of(storage, each) for each in family]
    running = sum(count_trials(storage.engine, study_id, "RUNNING") for study_id in ids)
    if running and not force:
        raise StudyError(
            f"study {name!r} has {running} running trial(s); pause it and wait, or delete with --force "
            "(workers then drop those trials, and the files they uploaded, and go on)"
        )
    artifact_ids = [artifact for study_id in ids for artifact in owned_artifact_ids(storage.engine, study_id)]
    for study_id in ids:
        storage.delete_study(study_id)
    if store is None:
        return len(artifact_ids)
    for artifact_id in artifact_ids:
        with contextlib.suppress(optuna.artifacts.exceptions.ArtifactNotFound):
            store.remove(artifact_id)
    return 0
