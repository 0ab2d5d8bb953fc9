"""A whole study written into Optuna's tables in one transaction: the study, its budget of trials, its attributes.

Optuna's API writes one trial per transaction: 100,000 WAITING trials took about ten minutes on the
embedded storage, and a creator stopped half-way left a study without its definition. Here every row
goes in one transaction, laid out as Optuna itself lays out an enqueued trial (a WAITING trial whose
``fixed_params`` system attribute holds its parameters), so a study exists whole or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import sqlalchemy
from optuna.storages._rdb import models  # Optuna's table objects
from optuna.study import StudyDirection
from optuna.trial import TrialState

FIXED_PARAMS = "fixed_params"  # the system attribute Optuna's enqueue_trial writes
STUDIES = models.StudyModel.__table__
DIRECTIONS = models.StudyDirectionModel.__table__
STUDY_USER_ATTRS = models.StudyUserAttributeModel.__table__
STUDY_SYSTEM_ATTRS = models.StudySystemAttributeModel.__table__
METRIC_NAMES_ATTR = "study:metric_names"  # what Study.set_metric_names writes
TRIALS = models.TrialModel.__table__
TRIAL_SYSTEM_ATTRS = models.TrialSystemAttributeModel.__table__
TRIAL_USER_ATTRS = models.TrialUserAttributeModel.__table__


@dataclass(frozen=True)
class Slot:
    """One budget slot: the readable configuration it is fixed to (None: sampled), and its user attributes."""

    params: dict[str, Any] | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict)


def insert_study(
    engine: sqlalchemy.engine.Engine,
    name: str,
    slots: Sequence[Slot],
    attrs: Mapping[str, Any],
    *,
    encode: Callable[[dict[str, Any]], dict[str, Any]],
    metric_names: Sequence[str] = ("value",),
    marks: Mapping[int, Mapping[str, Any]] | None = None,
    companions: Sequence[tuple[str, Mapping[str, Any]]] = (),
) -> int:
    """Write study ``name`` with one WAITING trial per slot (its configuration as the Optuna parameters ``encode``
    gives) and the study's user ``attrs``, then each of its ``companions`` (a name and its user attributes; no slots
    yet), all in one transaction, with the user attributes ``marks`` sets on other studies (by id); its id. The first
    objective is maximised, a second one minimised; ``metric_names`` name them (the dashboard shows them).
    :class:`optuna.exceptions.DuplicatedStudyError` if a name is taken."""
    try:
        with engine.begin() as conn:
            study_id = _insert(conn, name, slots, attrs, encode, metric_names)
            for companion, companion_attrs in companions:
                _insert(conn, companion, (), companion_attrs, encode, metric_names)
            for other, marked in (marks or {}).items():
                for key, value in marked.items():
                    set_study_attr(conn, other, key, value)
    except sqlalchemy.exc.IntegrityError:
        raise optuna.exceptions.DuplicatedStudyError(f"study {name!r} or a companion already exists") from None
    return study_id


def _insert(
    conn: sqlalchemy.engine.Connection,
    name: str,
    slots: Sequence[Slot],
    attrs: Mapping[str, Any],
    encode: Callable[[dict[str, Any]], dict[str, Any]],
    metric_names: Sequence[str],
) -> int:
    study_id = conn.execute(
        sqlalchemy.insert(STUDIES).values(study_name=name).returning(STUDIES.c.study_id)
    ).scalar_one()
    directions = [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE][: len(metric_names)]
    conn.execute(sqlalchemy.insert(DIRECTIONS), [{"study_id": study_id, "objective": n, "direction": d}
                                                 for n, d in enumerate(directions)])  # fmt: skip
    conn.execute(
        sqlalchemy.insert(STUDY_SYSTEM_ATTRS).values(
            study_id=study_id, key=METRIC_NAMES_ATTR, value_json=json.dumps(list(metric_names))
        )
    )
    if slots:
        rows = [{"study_id": study_id, "number": n, "state": TrialState.WAITING} for n in range(len(slots))]
        conn.execute(sqlalchemy.insert(TRIALS), rows)
        ids: dict[int, int] = dict(
            conn.execute(
                sqlalchemy.select(TRIALS.c.number, TRIALS.c.trial_id).where(TRIALS.c.study_id == study_id)
            ).all()
        )
        system = [
            {"trial_id": ids[n], "key": FIXED_PARAMS, "value_json": json.dumps(encode(slot.params))}
            for n, slot in enumerate(slots)
            if slot.params is not None
        ]
        user = [
            {"trial_id": ids[n], "key": key, "value_json": json.dumps(value)}
            for n, slot in enumerate(slots)
            for key, value in slot.user_attrs.items()
        ]
        for table, values in ((TRIAL_SYSTEM_ATTRS, system), (TRIAL_USER_ATTRS, user)):
            if values:
                conn.execute(sqlalchemy.insert(table), values)
    conn.execute(
        sqlalchemy.insert(STUDY_USER_ATTRS),
        [{"study_id": study_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()],
    )
    return int(study_id)


def append_trial(conn: sqlalchemy.engine.Connection, study_id: int) -> int:
    """A new WAITING trial at the end of study ``study_id``, inside the caller's transaction, which holds the study's
    lock: its number is the count of the study's trials. Its id."""
    number = conn.execute(sqlalchemy.select(sqlalchemy.func.count()).where(TRIALS.c.study_id == study_id)).scalar_one()
    return int(conn.execute(
        sqlalchemy.insert(TRIALS).values(study_id=study_id, number=number, state=TrialState.WAITING)
        .returning(TRIALS.c.trial_id)
    ).scalar_one())  # fmt: skip


def add_slot(
    conn: sqlalchemy.engine.Connection, study_id: int, fixed: dict[str, Any], user_attrs: Mapping[str, Any]
) -> int:
    """One WAITING trial appended to study ``study_id``, fixed to the Optuna parameters ``fixed``, inside the caller's
    transaction (which holds the study's lock); its id."""
    trial_id = append_trial(conn, study_id)
    conn.execute(sqlalchemy.insert(TRIAL_SYSTEM_ATTRS).values(trial_id=trial_id, key=FIXED_PARAMS,
                                                              value_json=json.dumps(fixed)))  # fmt: skip
    for key, value in user_attrs.items():
        conn.execute(
            sqlalchemy.insert(TRIAL_USER_ATTRS).values(trial_id=trial_id, key=key, value_json=json.dumps(value))
        )
    return int(trial_id)


def set_study_attr(conn: sqlalchemy.engine.Connection, study_id: int, key: str, value: Any) -> None:
    """Set a study user attribute inside the caller's transaction."""
    table = STUDY_USER_ATTRS
    conn.execute(sqlalchemy.delete(table).where(table.c.study_id == study_id, table.c.key == key))
    conn.execute(sqlalchemy.insert(table).values(study_id=study_id, key=key, value_json=json.dumps(value)))
