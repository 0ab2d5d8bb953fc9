"""One study, read once: its definition, its summary and its decoded trials, with the facts every reader asks of them.

``show``, ``best``, ``report``, ``campaign show``, the confirmation and warm starts each read a study through
:func:`load_study` and ask it, not the tables, which trial is best (:func:`~study_contract.store.trials.by_value`)
and which budget slots are done (a FAIL trial by its :class:`~study_contract.protocol.FailureKind`, as the
summary counts it).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from study_contract import protocol
from study_contract.definition import StudyDefinition
from study_contract.names import StudyError
from study_contract.protocol import FailureKind
from study_contract.store.catalog import (
    UNREADABLE_ROW,
    Summary,
    failures,
    load_definition,
    study_id_of,
    summarise,
)
from study_contract.store.trials import TrialView, by_value, views

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class StudyView:
    """A study created by study_admin, as :func:`load_study` read it."""

    name: str
    study_id: int
    definition: StudyDefinition
    summary: Summary
    trials: list[TrialView]
    """The trials that have started (the WAITING rest of the budget is counted in ``summary``, never read)."""
    failure_kinds: dict[int, FailureKind]
    """FAIL trial number -> what it is for the budget."""

    @cached_property
    def ranked(self) -> list[TrialView]:
        """The completed trials, best first."""
        return by_value(self.trials)

    @property
    def best(self) -> TrialView | None:
        return self.ranked[0] if self.ranked else None

    def trial(self, number: int) -> TrialView | None:
        """Trial ``number`` once it has started."""
        return next((t for t in self.trials if t.number == number), None)

    def started(self, number: int) -> TrialView:
        """Trial ``number`` once it has started; else :class:`StudyError`."""
        trial = self.trial(number)
        if trial is None:
            raise StudyError(f"study {self.name!r} has no trial {number} that has started")
        return trial

    def final_failure(self, trial: TrialView) -> bool:
        """A FAIL trial whose budget slot is used up (no retry is owed for it)."""
        return trial.state == "FAIL" and self.failure_kinds.get(trial.number) == FailureKind.FINAL

    def done(self, trial: TrialView) -> bool:
        """Its budget slot has ended: complete, pruned or finally failed."""
        return trial.state in ("COMPLETE", "PRUNED") or self.final_failure(trial)

    @property
    def env_steps(self) -> int:
        """The env-steps its trials trained (a worker records them when a trial ends)."""
        return sum(t.get(protocol.ENV_STEPS, 0) for t in self.trials)


def _started_trials(storage: optuna.storages.RDBStorage, study_id: int, name: str) -> list[TrialView]:
    """The trials of study ``name`` that have started (the WAITING rest of its budget are counted, never read: a
    study may queue 100,000), decoded; :class:`StudyError` when a row cannot be read at all."""
    from study_contract.store.cache import PLAYED

    try:
        return views(storage.get_all_trials(study_id, deepcopy=False, states=PLAYED))
    except UNREADABLE_ROW as exc:
        raise StudyError(f"study {name!r} has a trial that cannot be read: {type(exc).__name__}: {exc}"[:500]) from None


def load_study(storage: optuna.storages.RDBStorage, name: str) -> StudyView:
    """Study ``name`` as it stands; :class:`StudyError` saying why when it is not a readable study_admin study."""
    study_id = study_id_of(storage, name)
    definition = load_definition(storage, name)
    summaries = summarise(storage.engine, study_id)
    if not summaries:
        raise StudyError(f"no study named {name!r}")
    with storage.engine.connect() as conn:
        kinds = failures(conn, study_id).get(study_id, {})
    return StudyView(name, study_id, definition, summaries[0], _started_trials(storage, study_id, name), kinds)


def trial_to_reproduce(
    storage: optuna.storages.RDBStorage, name: str, number: int
) -> tuple[StudyDefinition, TrialView]:
    """The definition of study ``name`` and its complete trial ``number``, which records a configuration and seed
    to train again; else :class:`StudyError` saying why not."""
    study = load_study(storage, name)
    trial = study.started(number)
    if not trial.complete:
        raise StudyError(f"trial {number} of {name!r} is {trial.state}: only a complete trial has a value to reproduce")
    if trial.hyperparams is None or trial.seed is None:
        raise StudyError(f"trial {number} of {name!r} records no readable configuration or seed: nothing to re-run")
    if study.definition.has_instances:
        raise StudyError(
            f"trial {number} of {name!r} is a configuration valued over its instances, one run each: "
            f"reproduce one of them (study_admin show {name}:task-1 lists those of the first task)"
        )
    return study.definition, trial
