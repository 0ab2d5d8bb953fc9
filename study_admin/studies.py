"""What ``study_admin`` reads and changes in a study: details, the best configuration, pause, delete.

Creating studies lives in ``study_contract/engine/creation.py``, which workers use too (follow-up studies).
"""

from __future__ import annotations

import contextlib
from typing import Any, cast

import optuna
from optuna.trial import TrialState

from study_admin.models import Configuration, Cost, StudyDetails, TrialRecord
from study_contract import protocol
from study_contract.algorithms import algorithm
from study_contract.definition import (
    PAUSED_ATTR,
    PAUSED_REASON_ATTR,
    SEED_SPACE,
    DefinitionError,
    StudyDefinition,
    StudyError,
)
from study_contract.engine.confirmation import (
    ConfirmationReport,
    Pick,
    confirmation_name,
    confirmation_report,
)
from study_contract.statistics import CHEAPEST_TIED
from study_contract.store.catalog import Summary, load_definition, study_id_of, summarise


def summary_of(storage: optuna.storages.RDBStorage, name: str) -> Summary:
    study_id_of(storage, name)
    for summary in summarise(storage.engine):
        if summary.name == name:
            return summary
    raise StudyError(f"study {name!r} was not created by study_admin (it has no definition)")


def trial_record(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    attrs = trial.user_attrs
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        value=trial.value,
        hyperparams=attrs.get(protocol.HYPERPARAMS),
        seed=attrs.get(protocol.SEED),
        env_steps=attrs.get(protocol.ENV_STEPS),
        train_steps_per_second=attrs.get(protocol.TRAIN_STEPS_PER_SECOND),
        wall_seconds=attrs.get(protocol.WALL_SECONDS),
        worker=attrs.get(protocol.WORKER),
        fail_reason=attrs.get(protocol.FAIL_REASON),
        retried=attrs.get(protocol.RETRY),
        retry_of=trial.system_attrs.get(protocol.FAILED_TRIAL),
        progress=attrs.get(protocol.PROGRESS),
        cost=trial_cost(trial),
    )


def study_details(storage: optuna.storages.RDBStorage, name: str, top: int = 5) -> StudyDetails:
    summary = summary_of(storage, name)
    definition = load_definition(storage, name)
    trials = storage.get_all_trials(study_id_of(storage, name), deepcopy=False)
    finished = [t for t in trials if t.state.is_finished()]
    complete = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
        key=lambda t: cast(float, t.value),
        reverse=True,
    )
    rates = [t.user_attrs[protocol.TRAIN_STEPS_PER_SECOND] for t in finished
             if protocol.TRAIN_STEPS_PER_SECOND in t.user_attrs]  # fmt: skip
    failed = [t for t in finished if t.state == TrialState.FAIL and t.user_attrs.get(protocol.FAIL_REASON)]
    failed.sort(key=lambda t: t.number, reverse=True)
    return StudyDetails(
        summary=summary,
        definition=definition,
        best=trial_record(complete[0]) if complete else None,
        top_trials=[trial_record(t) for t in complete[:top]],
        running=[trial_record(t) for t in trials if t.state == TrialState.RUNNING],
        failures=[trial_record(t) for t in failed[:top]],
        mean_train_steps_per_second=sum(rates) / len(rates) if rates else None,
        env_steps_total=sum(t.user_attrs.get(protocol.ENV_STEPS, 0) for t in finished),
        confirmation=confirmation_report(storage, name) if definition.stage == "tuning" else None,
    )


def best_configuration(storage: optuna.storages.BaseStorage, name: str, pick: str = CHEAPEST_TIED) -> Configuration:
    """The recommended configuration, with its schedule spelled out.

    Once the study's fresh-seed confirmation is done, that is a confirmed candidate chosen by ``pick``: the
    best fresh-seed IQM, or the cheapest to train of those tied with it; with the statistics of every
    candidate and the baseline. Until then, the best tuning trial, not confirmed.
    """
    definition = load_definition(storage, name)
    study_id = study_id_of(storage, name)
    if storage.get_n_trials(study_id, state=TrialState.COMPLETE) == 0:
        raise StudyError(f"study {name!r} has no completed trial yet")
    report = confirmation_report(storage, name) if definition.stage == "tuning" else None
    chosen = report.pick(pick) if report is not None and report.confirmed else None
    if chosen is not None:
        best = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, chosen.trial))
    else:
        best = storage.get_best_trial(study_id)
    return configuration(storage, definition, name, best, report, chosen)


def trial_configuration(
    storage: optuna.storages.BaseStorage, name: str, number: int | None, pick: str = CHEAPEST_TIED
) -> Configuration:
    """The configuration of trial ``number`` (default: the recommended one, see :func:`best_configuration`)."""
    if number is None:
        return best_configuration(storage, name, pick)
    definition = load_definition(storage, name)
    study_id = study_id_of(storage, name)
    try:
        trial = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, number))
    except KeyError:
        raise StudyError(f"study {name!r} has no trial {number}") from None
    if protocol.HYPERPARAMS not in trial.user_attrs:
        raise StudyError(f"trial {number} of {name!r} has not sampled its configuration yet ({trial.state.name})")
    return configuration(storage, definition, name, trial, None, None)


def trial_seed(trial: optuna.trial.FrozenTrial) -> int | None:
    """The training seed a trial recorded, checked: it is pasted into exports."""
    seed = trial.user_attrs.get(protocol.SEED)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_SPACE):
        raise StudyError(f"trial {trial.number} has seed={seed!r}, not a whole number from 0 to {SEED_SPACE - 1}")
    return seed


def artifact_trial(
    storage: optuna.storages.BaseStorage, name: str, number: int | None, pick: str = CHEAPEST_TIED
) -> optuna.trial.FrozenTrial:
    """The trial whose files ``download`` fetches: trial ``number``, or the recommended one; when a confirmed
    pick kept no model of its own, its best run on the test seeds."""
    from study_contract.store.artifacts import MODEL, trial_artifacts

    config = trial_configuration(storage, name, number, pick)
    study_id = study_id_of(storage, name)
    trial = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, config.trial))
    if MODEL in trial_artifacts(trial) or not config.confirmed:
        return trial
    runs = storage.get_all_trials(study_id_of(storage, confirmation_name(name)), deepcopy=False)
    mine = [t for t in runs if t.user_attrs.get(protocol.CANDIDATE) == config.trial and t.value is not None]
    return max(mine, key=lambda t: (MODEL in trial_artifacts(t), cast(float, t.value)), default=trial)


def configuration(
    storage: optuna.storages.BaseStorage,
    definition: StudyDefinition,
    name: str,
    trial: optuna.trial.FrozenTrial,
    report: ConfirmationReport | None,
    pick: Pick | None,
) -> Configuration:
    """What reproduces ``trial``'s configuration; its values are checked against the study's space first."""
    try:
        params = definition.check_params(trial.user_attrs.get(protocol.HYPERPARAMS))
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
        seed=trial_seed(trial),
        confirmed=pick is not None and pick.trial == trial.number,
        confirmation=report,
        pick=pick,
        cost=trial_cost(trial),
    )


def trial_cost(trial: optuna.trial.FrozenTrial) -> Cost:
    """What training the trial cost, as its worker recorded it (read as untrusted: numbers or nothing)."""
    attrs = trial.user_attrs
    keys = (protocol.RELATIVE_COMPUTE, protocol.COMPUTE_PER_STEP, protocol.SECONDS_PER_KSTEP)
    return Cost(*(protocol.recorded_number(attrs.get(key)) for key in keys))


def set_paused(storage: optuna.storages.BaseStorage, name: str, paused: bool) -> None:
    load_definition(storage, name)
    study_id = study_id_of(storage, name)
    storage.set_study_user_attr(study_id, PAUSED_ATTR, paused)
    if not paused:
        storage.set_study_user_attr(study_id, PAUSED_REASON_ATTR, None)


def delete(storage: optuna.storages.BaseStorage, name: str, *, force: bool = False, store: Any = None) -> int:
    """Delete the study, then the files of its artifact ``store`` that the study and its trials refer to; the
    number of artifacts left behind (refused while trials run, unless ``force``)."""
    from study_contract.store.artifacts import artifacts_in

    study_id = study_id_of(storage, name)
    running = storage.get_n_trials(study_id, state=TrialState.RUNNING)
    if running and not force:
        raise StudyError(
            f"study {name!r} has {running} running trial(s); pause it and wait, or delete with --force "
            "(workers then drop those trials, and the files they uploaded, and go on)"
        )
    owners = [storage.get_study_system_attrs(study_id), *(t.system_attrs for t in storage.get_all_trials(study_id))]
    artifact_ids = [i for attrs in owners for i in artifacts_in(attrs, strict=False).values()]
    optuna.delete_study(study_name=name, storage=storage)
    if store is None:
        return len(artifact_ids)
    for artifact_id in artifact_ids:
        with contextlib.suppress(optuna.artifacts.exceptions.ArtifactNotFound):
            store.remove(artifact_id)
    return 0
