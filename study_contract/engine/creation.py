"""Writing a study: its Optuna study, its budget of WAITING trials, and, last, its definition.

Both sides create studies: ``study_admin create`` and ``confirm``, and workers when a finished study's
next stage is due. A study's budget is a set of slots: exactly ``n_trials`` WAITING trials, some with
fixed configurations (the baseline, a confirmation's candidates) and seeds. Workers only claim WAITING
trials, never create them (retries aside), so racing workers cannot overshoot a budget.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from study_contract import protocol
from study_contract.algorithms import algorithm
from study_contract.definition import DEFINITION_ATTR, FOLLOW_UP_ATTR, METRIC_NAMES, PAUSED_ATTR, StudyDefinition
from study_contract.engine.instances import instance_studies
from study_contract.names import StudyError
from study_contract.space import optuna_params
from study_contract.store.catalog import study_names
from study_contract.store.tables import Slot, insert_study


def unique_name(storage: optuna.storages.RDBStorage, base: str, *, also_taken: Sequence[str] = ()) -> str:
    """``base``, or ``base-2``, ``base-3``, ...: the first that no study (and none of ``also_taken``) has."""
    taken = set(study_names(storage.engine)) | set(also_taken)
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def create_study(
    storage: optuna.storages.RDBStorage,
    definition: StudyDefinition,
    name: str | None = None,
    *,
    fixed: Sequence[Slot] = (),
    follows: int | None = None,
    warm: Callable[[list[dict[str, Any]]], list[Slot]] | None = None,
) -> str:
    """Write the study and return its name; ``fixed`` slots first, then the baseline and the known-good
    configurations, then what ``warm`` adds given the configurations taken so far (a warm start), then open
    ones. The study, its budget and its definition are written in one transaction: no worker ever sees a
    half-created study. A study that ``follows`` another (a confirmation,
    a campaign stage) is recorded on it in the same transaction (:data:`FOLLOW_UP_ATTR`).
    """
    slots = list(fixed)
    entry = algorithm(definition.algo)
    if definition.baseline:
        slots.append(Slot(entry.baseline(definition.space, definition.n_envs), {protocol.BASELINE: True}))
    if definition.known_good:
        points = entry.starting_points(definition.space, definition.n_envs)
        room = max(definition.n_trials - len(slots), 0)  # a small budget keeps the baseline first
        slots.extend(Slot(point, {protocol.KNOWN_GOOD: True}) for point in points[:room])
    if warm is not None:
        slots.extend(warm([s.params for s in slots if s.params is not None]))
    if len(slots) > definition.n_trials:
        raise StudyError(f"{len(slots)} fixed trials do not fit a budget of n_trials={definition.n_trials}")
    rows = [*slots, *[Slot()] * (definition.n_trials - len(slots))]
    encode = functools.partial(optuna_params, definition.space)
    attrs = {PAUSED_ATTR: False, DEFINITION_ATTR: definition.to_json()}
    while True:
        study_name = name or unique_name(storage, f"{definition.algo}-{definition.env_id}")
        companions = [
            (companion, {PAUSED_ATTR: False, DEFINITION_ATTR: d.to_json()})
            for companion, d in (instance_studies(definition, study_name) if definition.has_instances else [])
        ]
        try:
            insert_study(storage.engine, study_name, rows, attrs, encode=encode,
                         metric_names=METRIC_NAMES[definition.objective],
                         marks={follows: {FOLLOW_UP_ATTR: study_name}} if follows is not None else None,
                         companions=companions)  # fmt: skip
            return study_name
        except optuna.exceptions.DuplicatedStudyError:
            if name is not None:
                raise StudyError(f"a study named {name!r} already exists; pick another --name or delete it") from None


def discard_unfinished(storage: optuna.storages.BaseStorage, name: str) -> bool:
    """Delete study ``name`` if its creator died before writing its definition; whether it did."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return False
    if DEFINITION_ATTR in storage.get_study_user_attrs(study_id):
        return False
    optuna.delete_study(study_name=name, storage=storage)
    return True


def study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def study_created(storage: optuna.storages.BaseStorage, name: str) -> bool:
    """Whether study ``name`` exists whole: with its definition, written last by :func:`create_study`."""
    try:
        return DEFINITION_ATTR in storage.get_study_user_attrs(storage.get_study_id_from_name(name))
    except KeyError:
        return False
