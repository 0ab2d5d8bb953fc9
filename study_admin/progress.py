"""Progress of every tuning study, read straight from Optuna's tables in three queries.

``study_admin list`` must answer in well under half a second; constructing Optuna's ``RDBStorage``
alone takes about 0.3 s (it imports Alembic and checks the schema version), so this read-only view
uses SQLAlchemy Core on Optuna's stable table layout (studies, study_user_attributes, trials,
trial_values) instead, and never imports Optuna.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy

from study_admin.definition import DEFINITION_ATTR, PAUSED_ATTR, StudyDefinition

_ATTRS = sqlalchemy.text(
    "SELECT s.study_id, s.study_name, a.key, a.value_json FROM studies s "
    "JOIN study_user_attributes a ON a.study_id = s.study_id WHERE a.key IN (:definition, :paused) "
    "ORDER BY s.study_id"
)
_COUNTS = sqlalchemy.text("SELECT study_id, state, COUNT(*) FROM trials GROUP BY study_id, state")
_BEST = sqlalchemy.text(
    "SELECT t.study_id, MAX(v.value) FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id "
    "WHERE t.state = 'COMPLETE' AND v.objective = 0 AND v.value_type = 'FINITE' GROUP BY t.study_id"
)


@dataclass(frozen=True)
class TuningStudy:
    """A study created by study_admin, as a worker needs it."""

    study_id: int
    name: str
    definition: StudyDefinition
    paused: bool


def _read_tuning_studies(conn: sqlalchemy.engine.Connection) -> list[TuningStudy]:
    attrs: dict[int, dict[str, Any]] = {}
    for study_id, name, key, value_json in conn.execute(_ATTRS, {"definition": DEFINITION_ATTR, "paused": PAUSED_ATTR}):
        attrs.setdefault(study_id, {"name": name})[key] = json.loads(value_json)
    return [
        TuningStudy(
            study_id=study_id,
            name=study["name"],
            definition=StudyDefinition.from_json(study[DEFINITION_ATTR]),
            paused=bool(study.get(PAUSED_ATTR, False)),
        )
        for study_id, study in attrs.items()
        if DEFINITION_ATTR in study
    ]


def tuning_studies(engine: sqlalchemy.engine.Engine) -> list[TuningStudy]:
    """Every study created by study_admin, oldest first; empty for a fresh database."""
    with engine.connect() as conn:
        if not sqlalchemy.inspect(conn).has_table("studies"):
            return []
        return _read_tuning_studies(conn)


@dataclass(frozen=True)
class Summary:
    name: str
    algo: str
    env_id: str
    state: str
    n_trials: int
    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int
    retried: int
    best_value: float | None

    @property
    def done(self) -> int:
        return self.complete + self.pruned + self.failed

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "done": self.done}


def summarise(engine: sqlalchemy.engine.Engine) -> list[Summary]:
    """One summary per study created by study_admin, oldest first; empty for a fresh database."""
    with engine.connect() as conn:
        if not sqlalchemy.inspect(conn).has_table("studies"):
            return []
        studies = _read_tuning_studies(conn)
        counts: dict[tuple[int, str], int] = {(sid, state): n for sid, state, n in conn.execute(_COUNTS)}
        best = dict(conn.execute(_BEST).all())
    summaries = []
    for study in studies:
        definition = study.definition
        n = {
            state: counts.get((study.study_id, state), 0)
            for state in ("WAITING", "RUNNING", "COMPLETE", "PRUNED", "FAIL")
        }
        # Every budget slot is in exactly one live trial; FAILs beyond the finished slots were retried.
        finished_slots = definition.n_trials - n["WAITING"] - n["RUNNING"]
        failed = max(finished_slots - n["COMPLETE"] - n["PRUNED"], 0)
        if n["WAITING"] == 0 and n["RUNNING"] == 0:
            state = "finished"
        elif study.paused:
            state = "paused"
        else:
            state = "running" if n["RUNNING"] else "waiting"
        summaries.append(
            Summary(
                name=study.name,
                algo=definition.algo,
                env_id=definition.env_id,
                state=state,
                n_trials=definition.n_trials,
                complete=n["COMPLETE"],
                pruned=n["PRUNED"],
                failed=failed,
                running=n["RUNNING"],
                waiting=n["WAITING"],
                retried=n["FAIL"] - failed,
                best_value=best.get(study.study_id),
            )
        )
    return summaries


def format_value(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}"
