"""Operations on tuning studies: create, summarise, export the best configuration, pause, delete.

A study's budget is a set of slots: ``create`` enqueues exactly ``n_trials`` WAITING trials and workers
only ever pop WAITING trials (never create new ones), so racing workers cannot overshoot it. A trial
handed back (SIGTERM) or found stale (heartbeat) is replaced by a WAITING retry linked to it.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from study_admin.definition import DEFINITION_ATTR, PAUSED_ATTR, StudyDefinition, StudyError
from study_admin.progress import Summary, summarise
from study_admin.space import baseline_params, optuna_name, schedule_and_wrappers, to_optuna_value, to_sb3_kwargs


def load_definition(storage: optuna.storages.BaseStorage, name: str) -> StudyDefinition:
    study_id = _study_id(storage, name)
    attrs = storage.get_study_user_attrs(study_id)
    if DEFINITION_ATTR not in attrs:
        raise StudyError(f"study {name!r} was not created by study_admin (it has no definition)")
    return StudyDefinition.from_json(attrs[DEFINITION_ATTR])


def _study_id(storage: optuna.storages.BaseStorage, name: str) -> int:
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        known = [s.study_name for s in storage.get_all_studies()]
        raise StudyError(f"no study named {name!r}; existing studies: {', '.join(known) or '(none)'}") from None


def unique_name(storage: optuna.storages.BaseStorage, definition: StudyDefinition) -> str:
    taken = {s.study_name for s in storage.get_all_studies()}
    base = f"{definition.algo}-{definition.env_id}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def _internal_params(definition: StudyDefinition, params: dict[str, Any]) -> dict[str, Any]:
    """Readable values as the Optuna parameters that ``worker/sampling.py`` suggests."""
    return {
        optuna_name(name, spec): to_optuna_value(spec, params[name])
        for name, spec in definition.space.items()
        if not spec.fixed
    }


def create_study(storage: optuna.storages.BaseStorage, definition: StudyDefinition, name: str | None = None) -> str:
    """Write the study, its budget of WAITING trials and, last, its definition; return its name.

    Workers ignore a study until its definition is written, and a failure part-way deletes what was
    written, so no worker ever sees a half-created study.
    """
    while True:
        study_name = name or unique_name(storage, definition)
        try:
            study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize")
            break
        except optuna.exceptions.DuplicatedStudyError:
            if name is not None:
                raise StudyError(f"a study named {name!r} already exists; pick another --name or delete it") from None
    try:
        slots = definition.n_trials
        if definition.baseline:
            baseline = baseline_params(definition.algo, definition.space, definition.n_envs)
            study.enqueue_trial(_internal_params(definition, baseline), user_attrs={"baseline": True})
            slots -= 1
        for _ in range(slots):
            study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING))
        study.set_user_attr(PAUSED_ATTR, False)
        study.set_user_attr(DEFINITION_ATTR, definition.to_json())
    except BaseException:
        optuna.delete_study(study_name=study_name, storage=storage)
        raise
    return study_name


def summary_of(storage: optuna.storages.RDBStorage, name: str) -> Summary:
    _study_id(storage, name)
    for summary in summarise(storage.engine):
        if summary.name == name:
            return summary
    raise StudyError(f"study {name!r} was not created by study_admin (it has no definition)")


def trial_record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "hyperparams": attrs.get("hyperparams"),
        "seed": attrs.get("seed"),
        "env_steps": attrs.get("env_steps"),
        "train_steps_per_second": attrs.get("train_steps_per_second"),
        "wall_seconds": attrs.get("wall_seconds"),
        "worker": attrs.get("worker"),
        "fail_reason": attrs.get("fail_reason"),
        "retry_of": trial.system_attrs.get("failed_trial"),
    }


def study_details(storage: optuna.storages.BaseStorage, name: str, top: int = 5) -> dict[str, Any]:
    summary = summary_of(storage, name)
    definition = load_definition(storage, name)
    trials = storage.get_all_trials(_study_id(storage, name), deepcopy=False)
    finished = [t for t in trials if t.state.is_finished()]
    complete = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
        key=lambda t: t.value,  # type: ignore[arg-type, return-value]
        reverse=True,
    )
    rates = [t.user_attrs["train_steps_per_second"] for t in finished if "train_steps_per_second" in t.user_attrs]
    env_steps = sum(t.user_attrs.get("env_steps", 0) for t in finished)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in finished if t.datetime_complete]
    elapsed = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    return {
        "summary": summary.to_dict(),
        "definition": {k: v for k, v in definition.__dict__.items() if k != "space"},
        "best": trial_record(complete[0]) if complete else None,
        "throughput": {
            "mean_train_steps_per_second_per_trial": sum(rates) / len(rates) if rates else None,
            "env_steps_total": env_steps,
            "study_env_steps_per_second": env_steps / elapsed if elapsed > 0 else None,
        },
        "top_trials": [trial_record(t) for t in complete[:top]],
        "failures": [trial_record(t) for t in finished if t.user_attrs.get("fail_reason")][:top],
    }


def best_configuration(storage: optuna.storages.BaseStorage, name: str) -> dict[str, Any]:
    """The best trial as SB3 keyword arguments, with its schedule spelled out."""
    definition = load_definition(storage, name)
    study_id = _study_id(storage, name)
    if storage.get_n_trials(study_id, state=TrialState.COMPLETE) == 0:
        raise StudyError(f"study {name!r} has no completed trial yet")
    best = storage.get_best_trial(study_id)
    params = best.user_attrs["hyperparams"]
    return {
        "study": name,
        "trial": best.number,
        "mean_reward": best.value,
        "algo": definition.algo,
        "env_id": definition.env_id,
        "n_envs": definition.n_envs,
        "seed": best.user_attrs.get("seed"),
        "policy": definition.policy,
        "kwargs": to_sb3_kwargs(definition.algo, params),
        **schedule_and_wrappers(params),
    }


def set_paused(storage: optuna.storages.BaseStorage, name: str, paused: bool) -> None:
    load_definition(storage, name)
    storage.set_study_user_attr(_study_id(storage, name), PAUSED_ATTR, paused)


def delete(storage: optuna.storages.BaseStorage, name: str) -> None:
    _study_id(storage, name)
    optuna.delete_study(study_name=name, storage=storage)
