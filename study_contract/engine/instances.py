"""Instances: one configuration judged on several tasks and seeds, each run a unit of work that any worker claims.

A tuning study with several tasks or seeds per configuration (``--env A --env B``, ``--seeds-per-config K``) keeps
its configurations as its own trials, so that its sampler learns one value per configuration. Their runs are the
slots of one companion study per task, ``<name>:task-1``, ``<name>:task-2``, ...: each slot is one configuration
on one seed, fixed as a confirmation's slots are, and trained, retried and accounted for like any slot.

A worker that claims a configuration samples it and queues its instances (:func:`queue_instances`), in one
transaction under the locks of the study and its companions. The configuration then stays RUNNING, judged by
its instances rather than by a heartbeat, until :func:`settle` ends it: COMPLETE with the IQM of its returns
(normalised per task when there are several), PRUNED when an instance was pruned or the configuration was raced
out, FAIL when an instance failed for good.

Normalisation follows rliable's min-max practice with references taken from the study itself: on each task,
0 is the worst return any instance reached there so far and 1 the best. References move as the study goes on,
so every settled configuration's value is computed again whenever one is settled, and the sampler always
compares configurations on the same scale. One task needs no scale: its values are raw returns.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import optuna
import sqlalchemy
from optuna.storages._rdb import models  # Optuna's table objects
from optuna.trial import TrialState

from study_contract import protocol
from study_contract.definition import StudyDefinition
from study_contract.names import Stage, StudyError
from study_contract.protocol import FailureKind
from study_contract.space import optuna_params
from study_contract.statistics import iqm
from study_contract.store.catalog import failures, load_definition
from study_contract.store.claims import Claim
from study_contract.store.slot_writes import TRIALS, USER_ATTRS, locked_writes, set_attr
from study_contract.store.tables import add_slot

VALUES = models.TrialValueModel.__table__
STUDIES = models.StudyModel.__table__
FINITE = models.TrialValueModel.TrialValueType.FINITE


INSTANCE_SUFFIX = ":task-"


def instance_study_name(parent: str, index: int) -> str:
    return f"{parent}{INSTANCE_SUFFIX}{index + 1}"


def instance_study_names(parent: str, names: Iterable[str]) -> list[str]:
    """Those of ``names`` that are instance studies of study ``parent``, whatever its definition says."""
    pattern = re.compile(re.escape(parent + INSTANCE_SUFFIX) + "[1-9][0-9]*")
    return [name for name in names if pattern.fullmatch(name)]


def instance_studies(definition: StudyDefinition, name: str) -> list[tuple[str, StudyDefinition]]:
    """The companion studies of tuning study ``name``, one per task: each runs every configuration on every seed."""
    return [
        (instance_study_name(name, index), replace(
            definition, env_id=task, more_envs=[], seeds_per_config=1, stage=Stage.INSTANCES, parent=name,
            n_trials=definition.n_trials * definition.seeds_per_config, baseline=False, known_good=False,
            confirm=False, campaign=None,  # what follows is its tuning study's (or campaign stage's) to create
        ))
        for index, task in enumerate(definition.tasks)
    ]  # fmt: skip


def _study_ids(conn: Any, names: list[str]) -> list[int]:
    found = dict(conn.execute(sqlalchemy.select(STUDIES.c.study_name, STUDIES.c.study_id)
                              .where(STUDIES.c.study_name.in_(names))).all())  # fmt: skip
    missing = [name for name in names if name not in found]
    if missing:
        raise StudyError(f"its instance studies {missing} are missing (deleted?); delete the study and create it again")
    return [found[name] for name in names]


def _instance_ids(engine: sqlalchemy.engine.Engine, definition: StudyDefinition, name: str) -> list[int]:
    with engine.connect() as conn:
        return _study_ids(conn, [instance_study_name(name, i) for i in range(len(definition.tasks))])


def queue_instances(
    storage: optuna.storages.RDBStorage, name: str, definition: StudyDefinition, claim: Claim, params: dict[str, Any]
) -> bool:
    """Queue the instances of the claimed configuration ``params`` of study ``name``: one slot per task and seed, in
    one transaction under the locks of the study and its instance studies, once (a second call queues nothing).
    False when the claim is no longer this worker's: the configuration was failed as stale and its retry will
    queue them."""
    engine = storage.engine
    ids = _instance_ids(engine, definition, name)
    with locked_writes(engine, claim.study_id, also=ids) as conn:
        row = conn.execute(sqlalchemy.select(TRIALS.c.number, TRIALS.c.state).where(claim._is_it(TRIALS))).first()
        if row is None or row.state != TrialState.RUNNING:
            return False
        attrs = dict(conn.execute(sqlalchemy.select(USER_ATTRS.c.key, USER_ATTRS.c.value_json).where(
            USER_ATTRS.c.trial_id == claim.trial_id, USER_ATTRS.c.key.in_([protocol.INSTANCES, protocol.BASELINE]))
        ).all())  # fmt: skip
        if protocol.INSTANCES in attrs:
            return True
        # SB3's defaults stay the reference on every instance: the compute cap never prunes them.
        baseline = protocol.decode_json(protocol.BASELINE, attrs.get(protocol.BASELINE), protocol.USER_ATTRS) is True
        role = {protocol.BASELINE: True} if baseline else {}
        fixed = optuna_params(definition.space, params)
        for study_id in ids:
            for seed in definition.instance_seed_list:
                add_slot(conn, study_id, fixed, {protocol.CANDIDATE: row.number, protocol.SEED: seed, **role})
        set_attr(conn, USER_ATTRS, claim.trial_id, protocol.INSTANCES, len(ids) * definition.seeds_per_config)
    return True


@dataclass(frozen=True)
class Run:
    """One instance: a configuration on one task and seed, as its latest slot stands (a retried slot is replaced)."""

    trial_id: int
    task: str
    candidate: int
    seed: int
    state: TrialState
    value: float | None
    final_failure: bool
    lost: bool
    env_steps: int
    relative_compute: float | None
    wall_seconds: float | None
    fail_reason: str | None

    @property
    def pending(self) -> bool:
        return self.state in (TrialState.WAITING, TrialState.RUNNING) or self.lost

    @property
    def key(self) -> tuple[str, int]:
        return self.task, self.seed


_ATTR_KEYS = (protocol.CANDIDATE, protocol.SEED, protocol.ENV_STEPS, protocol.RELATIVE_COMPUTE, protocol.WALL_SECONDS,
              protocol.FAIL_REASON)  # fmt: skip


def _runs(conn: Any, study_id: int, task: str) -> list[Run]:
    """The instances of one instance study, read as untrusted: a slot without a candidate or seed is not one."""
    rows = conn.execute(
        sqlalchemy.select(TRIALS.c.trial_id, TRIALS.c.number, TRIALS.c.state, VALUES.c.value)
        .select_from(TRIALS.outerjoin(VALUES, (VALUES.c.trial_id == TRIALS.c.trial_id) & (VALUES.c.objective == 0)))
        .where(TRIALS.c.study_id == study_id)
    ).all()
    attrs: dict[int, dict[str, Any]] = defaultdict(dict)
    for trial_id, key, value_json in conn.execute(
        sqlalchemy.select(USER_ATTRS.c.trial_id, USER_ATTRS.c.key, USER_ATTRS.c.value_json)
        .join(TRIALS, TRIALS.c.trial_id == USER_ATTRS.c.trial_id)
        .where(TRIALS.c.study_id == study_id, USER_ATTRS.c.key.in_(_ATTR_KEYS))
    ):
        attrs[trial_id][key] = protocol.decode_json(key, value_json, protocol.USER_ATTRS)
    kinds = failures(conn, study_id).get(study_id, {})
    runs = []
    for trial_id, number, state, value in rows:
        found = attrs[trial_id]
        candidate, seed = found.get(protocol.CANDIDATE), found.get(protocol.SEED)
        kind = kinds.get(number)
        if not isinstance(candidate, int) or seed is None or kind == FailureKind.RETRIED:
            continue
        runs.append(Run(trial_id, task, candidate, seed, TrialState(state) if not isinstance(state, TrialState)
                        else state, protocol.finite(value) if state == TrialState.COMPLETE else None,
                        kind == FailureKind.FINAL, kind == FailureKind.LOST, found.get(protocol.ENV_STEPS) or 0,
                        found.get(protocol.RELATIVE_COMPUTE), found.get(protocol.WALL_SECONDS),
                        found.get(protocol.FAIL_REASON)))  # fmt: skip
    return runs


@dataclass(frozen=True)
class Scale:
    """Per task, the worst and best return seen there: 0 and 1 of the normalised return."""

    bounds: dict[str, tuple[float, float]]

    @classmethod
    def of(cls, returns: Iterable[tuple[str, float | None]]) -> Scale:
        """The scale of ``(task, return)`` pairs (a return of None is not one)."""
        seen: dict[str, list[float]] = defaultdict(list)
        for task, value in returns:
            if value is not None:
                seen[task].append(value)
        return cls({task: (min(values), max(values)) for task, values in seen.items()})

    def normalised(self, task: str, value: float) -> float:
        low, high = self.bounds[task]
        return (value - low) / (high - low) if high > low else 1.0


def scale_of(runs: list[Run]) -> Scale:
    return Scale.of((run.task, run.value) for run in runs)


def configuration_value(runs: list[Run], scale: Scale, tasks: int) -> float:
    """The IQM over a configuration's completed instances: of raw returns on one task, else of normalised ones."""
    done = [(run.task, run.value) for run in runs if run.value is not None]
    return iqm([value if tasks == 1 else scale.normalised(task, value) for task, value in done])


def raced_out(mine: list[Run], best: list[Run], scale: Scale, total: int) -> bool:
    """Whether a configuration is clearly worse than the best one (SMAC's intensification): at least half of its
    instances done, and its mean normalised return below the best's on the instances both have completed."""
    done = {run.key: run.value for run in mine if run.value is not None}
    if 2 * len(done) < total:
        return False
    theirs = {run.key: run.value for run in best if run.value is not None}
    shared = [key for key in done if key in theirs]
    if not shared:
        return False
    ours = sum(scale.normalised(task, done[task, seed]) for task, seed in shared)
    return ours < sum(scale.normalised(task, theirs[task, seed]) for task, seed in shared)


@dataclass(frozen=True)
class Settled:
    number: int
    state: TrialState
    value: float | None = None


def settle(storage: optuna.storages.RDBStorage, name: str, number: int | None = None) -> list[Settled]:
    """End configuration ``number`` of tuning study ``name`` (every configuration awaiting its instances when None)
    whose instances are all done, and race out one that is clearly worse than the best so far (its waiting
    instances are pruned unrun); what was ended. Idempotent, under the locks of the study and its instance studies."""
    definition = load_definition(storage, name)
    if not definition.has_instances:
        return []
    engine = storage.engine
    with engine.connect() as conn:
        parent_id = int(conn.execute(sqlalchemy.select(STUDIES.c.study_id).where(STUDIES.c.study_name == name))
                        .scalar_one())  # fmt: skip
    ids = _instance_ids(engine, definition, name)
    settled: list[Settled] = []
    with locked_writes(engine, parent_id, also=ids) as conn:
        awaiting = _configurations(conn, parent_id, TrialState.RUNNING)
        if number is not None:
            awaiting = {n: t for n, t in awaiting.items() if n == number}
        if not awaiting:
            return settled
        runs = [
            run for study_id, task in zip(ids, definition.tasks, strict=True) for run in _runs(conn, study_id, task)
        ]
        scale = scale_of(runs)
        by_candidate: dict[int, list[Run]] = defaultdict(list)
        for run in runs:
            by_candidate[run.candidate].append(run)
        best = _best_configuration(conn, parent_id)
        best_runs = by_candidate.get(best, []) if best is not None else []
        total = len(definition.tasks) * definition.seeds_per_config
        for config, trial_id in sorted(awaiting.items()):
            mine = by_candidate.get(config, [])
            reason = _stop_reason(definition, mine, best_runs, scale, total)
            if reason is not None:
                waiting = [run for run in mine if run.state == TrialState.WAITING]
                _prune_unrun(conn, waiting, reason)
                mine = [replace(run, state=TrialState.PRUNED) if run in waiting else run for run in mine]
            if any(run.pending for run in mine) or len(mine) < total:
                continue
            settled.append(_end(conn, trial_id, config, definition, mine, scale, reason))
        if len(definition.tasks) > 1:  # an instance came in since the last call: the scale may have moved
            _revalue(conn, parent_id, by_candidate, scale, len(definition.tasks))
    return settled


def _stop_reason(definition: StudyDefinition, mine: list[Run], best: list[Run], scale: Scale, total: int) -> str | None:
    """Why the rest of a configuration's instances are not worth running, if they are not."""
    if any(run.final_failure for run in mine):
        return "an instance failed for good"
    if any(run.state == TrialState.PRUNED for run in mine):
        return "an instance was pruned"
    if definition.race and best and raced_out(mine, best, scale, total):
        return "raced out: its mean normalised return is below the best configuration's on the same instances"
    return None


def _configurations(conn: Any, study_id: int, state: TrialState) -> dict[int, int]:
    """The configurations in ``state`` whose instances were queued: number -> trial id."""
    query = (
        sqlalchemy.select(TRIALS.c.number, TRIALS.c.trial_id)
        .join(USER_ATTRS, USER_ATTRS.c.trial_id == TRIALS.c.trial_id)
        .where(TRIALS.c.study_id == study_id, TRIALS.c.state == state, USER_ATTRS.c.key == protocol.INSTANCES)
    )
    return dict(conn.execute(query).all())


def _best_configuration(conn: Any, study_id: int) -> int | None:
    return conn.execute(
        sqlalchemy.select(TRIALS.c.number).join(VALUES, VALUES.c.trial_id == TRIALS.c.trial_id)
        .where(TRIALS.c.study_id == study_id, TRIALS.c.state == TrialState.COMPLETE, VALUES.c.objective == 0)
        .order_by(VALUES.c.value.desc(), TRIALS.c.number).limit(1)
    ).scalar()  # fmt: skip


def _prune_unrun(conn: Any, waiting: list[Run], reason: str) -> None:
    now = datetime.now()
    for run in waiting:
        pruned = conn.execute(sqlalchemy.update(TRIALS).where(TRIALS.c.trial_id == run.trial_id,
                                                              TRIALS.c.state == TrialState.WAITING)
                              .values(state=TrialState.PRUNED, datetime_complete=now)).rowcount  # fmt: skip
        if pruned:
            set_attr(conn, USER_ATTRS, run.trial_id, protocol.PRUNED_REASON, f"not run: its configuration was {reason}")


def _returns(runs: list[Run], definition: StudyDefinition) -> dict[str, list[float | None]]:
    found = {run.key: run.value for run in runs}
    return {task: [found.get((task, seed)) for seed in definition.instance_seed_list] for task in definition.tasks}


def _end(conn: Any, trial_id: int, number: int, definition: StudyDefinition, runs: list[Run], scale: Scale,
         reason: str | None) -> Settled:  # fmt: skip
    costs = [run.relative_compute for run in runs if run.relative_compute is not None]
    attrs: dict[str, Any] = {protocol.INSTANCE_RETURNS: _returns(runs, definition),
                             protocol.ENV_STEPS: sum(run.env_steps for run in runs)}  # fmt: skip
    if costs:
        attrs[protocol.RELATIVE_COMPUTE] = round(sum(costs) / len(costs), 3)
    seconds = [run.wall_seconds for run in runs if run.wall_seconds is not None]
    if seconds:  # what the configuration cost: all of its instances
        attrs[protocol.WALL_SECONDS] = round(sum(seconds), 3)
    value = None
    failed = next((run for run in runs if run.final_failure), None)
    if failed is not None:
        state = TrialState.FAIL
        why = f"its instance on {failed.task} (seed {failed.seed}) failed for good: {failed.fail_reason or 'no reason'}"
        attrs |= {protocol.FAIL_REASON: why[: protocol.MAX_TEXT], protocol.RETRY: False}
    elif reason is not None or any(run.state == TrialState.PRUNED for run in runs):
        state = TrialState.PRUNED
        attrs[protocol.PRUNED_REASON] = reason or "an instance was pruned"
    else:
        state, value = TrialState.COMPLETE, configuration_value(runs, scale, len(definition.tasks))
    ended = conn.execute(sqlalchemy.update(TRIALS).where(TRIALS.c.trial_id == trial_id,
                                                         TRIALS.c.state == TrialState.RUNNING)
                         .values(state=state, datetime_complete=datetime.now())).rowcount  # fmt: skip
    if ended:
        for key, attr in attrs.items():
            set_attr(conn, USER_ATTRS, trial_id, key, attr)
        if value is not None:
            conn.execute(sqlalchemy.insert(VALUES).values(trial_id=trial_id, objective=0, value=value,
                                                          value_type=FINITE))  # fmt: skip
    return Settled(number, state, value)


def _revalue(conn: Any, study_id: int, by_candidate: dict[int, list[Run]], scale: Scale, tasks: int) -> None:
    """Every completed configuration's value on the current scale (references move as returns come in)."""
    complete = _configurations(conn, study_id, TrialState.COMPLETE).items()
    for number, trial_id in complete:
        runs = by_candidate.get(number, [])
        if any(run.value is not None for run in runs):
            conn.execute(sqlalchemy.update(VALUES).where(VALUES.c.trial_id == trial_id, VALUES.c.objective == 0)
                         .values(value=configuration_value(runs, scale, tasks)))  # fmt: skip
