"""Warm starts: a new study's first slots try the winners of finished studies already in the database.

``create --warm-start auto`` (the default) looks at every finished tuning study of the same algorithm and task,
at any budget, newest first; each gives its confirmed recommendation, or its best trial when it was not
confirmed. Other tasks' studies are taken only when named: from other development tasks the warm study's
winner was no better on fresh seeds, from the same task at a third of the budget it was (docs/tuning.md).
A parameter sized by the budget (PPO's ``n_steps``) keeps its share of it: a 2048-step rollout from a study
of 300k env-steps per trial becomes a 256-step one at 30k. Then each configuration is moved inside the new
study's space and constraints as the baseline and the known-good points are, and goes after them, once; at
most :data:`MAX_POINTS`, and never more than a quarter of the budget, so the sampler keeps most of it. Each
such trial records where it came from (``protocol.WARM_START``).
``--warm-start STUDY,...`` takes those studies only, in that order, finished or not; ``off`` none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from study_contract import protocol
from study_contract.algorithms import algorithm
from study_contract.definition import StudyDefinition
from study_contract.engine.confirmation import confirmation_report, recommendation
from study_contract.formatting import describe_origin
from study_contract.names import STORED_STUDY_NAME, DefinitionError, Stage, StudyError
from study_contract.store.catalog import StudyState, TuningStudy, summarise, tuning_studies
from study_contract.store.study_view import load_study
from study_contract.store.tables import Slot

AUTO, OFF = "auto", "off"
MAX_POINTS = 3


def parse_sources(text: str) -> str:
    """``auto``, ``off`` or a comma-separated list of study names, else ValueError naming what is accepted."""
    if text in (AUTO, OFF) or all(STORED_STUDY_NAME.fullmatch(name) for name in text.split(",")):
        return text
    raise ValueError(f"{text!r} is not {AUTO}, {OFF} or a comma-separated list of study names")


def describe(point: Slot) -> str:
    """Where a warm-start slot's configuration comes from, in one line."""
    return describe_origin(point.user_attrs[protocol.WARM_START])


@dataclass(frozen=True)
class Source:
    """One finished study's recommended configuration, and what it scored."""

    study: str
    env_id: str
    trial: int
    params: dict[str, Any]
    value: float
    confirmed: bool
    steps_per_env: float
    """The source's env-steps per trial and env: budget-scaled parameters keep their share of it."""

    def origin(self) -> dict[str, Any]:
        return {"study": self.study, "env_id": self.env_id, "trial": self.trial, "value": self.value,
                "confirmed": self.confirmed}  # fmt: skip


def recommended(storage: optuna.storages.RDBStorage, study: TuningStudy) -> Source | None:
    """The study's confirmed recommendation, else its best trial; None without one whose configuration passes
    the study's own space (it comes from the database)."""
    source = load_study(storage, study.name)
    chosen = recommendation(source, confirmation_report(storage, source))
    if chosen is None:
        return None
    definition = source.definition
    confirmed = chosen.fresh_iqm is not None
    value = chosen.fresh_iqm if confirmed else chosen.trial.value
    try:
        params = definition.check_params(chosen.trial.hyperparams or {})
    except DefinitionError:
        return None
    if not params or value is None:
        return None
    steps_per_env = definition.timesteps / definition.n_envs
    return Source(study.name, definition.env_id, chosen.trial.number, params, value, confirmed, steps_per_env)


def _candidates(storage: optuna.storages.RDBStorage, definition: StudyDefinition, sources: str) -> list[TuningStudy]:
    studies = {s.name: s for s in tuning_studies(storage.engine)}
    if sources != AUTO:
        chosen = []
        for name in sources.split(","):
            study = studies.get(name)
            if study is None or study.definition is None:
                raise StudyError(f"--warm-start: no readable study named {name!r}")
            if study.definition.algo != definition.algo:
                raise StudyError(f"--warm-start: study {name!r} tuned {study.definition.algo}, not {definition.algo}")
            chosen.append(study)
        return chosen
    finished = {s.name for s in summarise(storage.engine) if s.state == StudyState.FINISHED}
    usable = [(s, s.definition) for s in studies.values() if s.name in finished and s.definition is not None]
    same = [s for s, d in usable if (d.algo, d.env_id, d.stage) == (definition.algo, definition.env_id, Stage.TUNING)]
    return sorted(same, key=lambda s: -s.study_id)  # the newest first


@dataclass(frozen=True)
class WarmStart:
    """The finished studies' recommendations a new study may try, best source first, and the studies passed over."""

    sources: list[Source]
    skipped: list[str]
    """One line per study passed over: ``name: why``."""

    def points(self, definition: StudyDefinition, taken: list[dict[str, Any]]) -> list[Slot]:
        """The warm-start slots, rescaled to the new budget and moved inside the new study's space; ``taken`` are
        the fixed configurations it already has (none is tried twice). At most :data:`MAX_POINTS` and a quarter of
        the budget."""
        entry = algorithm(definition.algo)
        room = min(MAX_POINTS, definition.n_trials // 4, definition.n_trials - len(taken))
        points: list[Slot] = []
        seen = list(taken)
        for source in self.sources[: max(room, 0)]:
            ratio = definition.timesteps / definition.n_envs / source.steps_per_env
            rescaled = entry.rescaled(source.params, definition.space, ratio)
            moved = entry.moved_inside(definition.space, rescaled, definition.n_envs)
            if moved not in seen:
                seen.append(moved)
                points.append(Slot(moved, {protocol.WARM_START: source.origin()}))
        return points


def plan(storage: optuna.storages.RDBStorage, definition: StudyDefinition, sources: str) -> WarmStart:
    """What ``--warm-start`` takes from the database. With ``auto``, a study that cannot be read (its trials, its
    confirmation) is passed over, never an error: one bad study must not stop every ``create``; a study named
    explicitly must be readable."""
    if sources == OFF:
        return WarmStart([], [])
    found: list[Source] = []
    skipped: list[str] = []
    for study in _candidates(storage, definition, sources):
        if len(found) >= MAX_POINTS:
            break
        try:
            source = recommended(storage, study)
        except StudyError as exc:
            if sources != AUTO:
                raise
            skipped.append(f"{study.name}: {exc}")
            continue
        if source is None:
            skipped.append(f"{study.name}: no complete trial with a configuration of its space")
        else:
            found.append(source)
    return WarmStart(found, skipped)
