"""Read-only views of the tuning studies, straight from Optuna's tables (no Optuna import).

``study_admin list`` must answer in well under half a second; constructing Optuna's ``RDBStorage``
alone takes about 0.3 s (it imports Alembic and checks the schema version), so these views use
SQLAlchemy Core on Optuna's stable table layout (studies, study_user_attributes, trials,
trial_user_attributes, trial_system_attributes, trial_values). Workers use the same queries to find
their studies, so both sides agree on what a study is, which are unreadable, and how its budget
slots are accounted for.
"""

from __future__ import annotations

import functools
import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import sqlalchemy

from study_contract import protocol
from study_contract.definition import (
    DEFINITION_ATTR,
    FOLLOW_UP_ATTR,
    PAUSED_ATTR,
    PAUSED_REASON_ATTR,
    StudyDefinition,
    check_stored_name,
)
from study_contract.names import DefinitionError, Stage, StudyError
from study_contract.protocol import FailureKind
from study_contract.store.trials import TrialView

if TYPE_CHECKING:
    import optuna

RECENT_TRIALS = 20  # finished trials whose durations estimate the next ones

# Every study's rows, or only study ``:study``'s when that parameter is set.
_EVERY_OR_ONE = "(:study IS NULL OR {}.study_id = :study)"
_ATTRS = sqlalchemy.text(
    "SELECT s.study_id, s.study_name, a.key, a.value_json FROM studies s LEFT JOIN study_user_attributes a "
    "ON a.study_id = s.study_id AND a.key IN (:definition, :paused, :reason, :follow_up) "
    f"WHERE {_EVERY_OR_ONE.format('s')} ORDER BY s.study_id"
)
INCOMPLETE = (
    "incomplete: it has no definition (its creation did not finish, or study_admin did not create it); "
    "`study_admin delete` removes it"
)
_COUNTS = sqlalchemy.text(
    f"SELECT t.study_id, t.state, COUNT(*) FROM trials t WHERE {_EVERY_OR_ONE.format('t')} GROUP BY t.study_id, t.state"
)
_LIVE = sqlalchemy.text(
    "SELECT study_id, state, COUNT(*) FROM trials WHERE state IN ('RUNNING', 'WAITING') GROUP BY study_id, state"
)
_FINITE_VALUE = "t.state = 'COMPLETE' AND v.objective = 0 AND v.value_type = 'FINITE'"
_BEST = sqlalchemy.text(
    "SELECT t.study_id, MAX(v.value) FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id "
    f"WHERE {_FINITE_VALUE} AND {_EVERY_OR_ONE.format('t')} GROUP BY t.study_id"
)
# The training compute of each study's best trial, as its worker recorded it.
_BEST_COST = sqlalchemy.text(
    "SELECT r.study_id, a.value_json FROM (SELECT t.study_id, t.trial_id, ROW_NUMBER() OVER "
    "(PARTITION BY t.study_id ORDER BY v.value DESC, t.trial_id) AS rank FROM trials t JOIN trial_values v "
    f"ON v.trial_id = t.trial_id WHERE {_FINITE_VALUE} AND {_EVERY_OR_ONE.format('t')}) r "
    "JOIN trial_user_attributes a ON a.trial_id = r.trial_id AND a.key = :cost WHERE r.rank = 1"
)
_FAILED = sqlalchemy.text(
    "SELECT t.study_id, t.number, a.key, a.value_json FROM trials t LEFT JOIN trial_user_attributes a "
    "ON a.trial_id = t.trial_id AND a.key IN (:retry, :reason, :handed_back) "
    f"WHERE t.state = 'FAIL' AND {_EVERY_OR_ONE.format('t')}"
)
_RETRIES = sqlalchemy.text(
    "SELECT t.study_id, s.value_json FROM trials t JOIN trial_system_attributes s ON s.trial_id = t.trial_id "
    f"WHERE s.key = :history AND {_EVERY_OR_ONE.format('t')}"
)
_LIVE_ATTRS = sqlalchemy.text(
    "SELECT t.study_id, t.trial_id, a.key, a.value_json FROM trials t JOIN trial_user_attributes a "
    f"ON a.trial_id = t.trial_id WHERE t.state = 'RUNNING' AND a.key IN (:worker, :progress) "
    f"AND {_EVERY_OR_ONE.format('t')}"
)
_DURATIONS = sqlalchemy.text(
    "SELECT study_id, datetime_start, datetime_complete FROM (SELECT study_id, datetime_start, "
    "datetime_complete, ROW_NUMBER() OVER (PARTITION BY study_id ORDER BY trial_id DESC) AS recent FROM trials "
    "WHERE state IN ('COMPLETE', 'PRUNED') AND datetime_start IS NOT NULL AND datetime_complete IS NOT NULL "
    f"AND {_EVERY_OR_ONE.format('trials')}) r WHERE recent <= :recent"
)


@dataclass(frozen=True)
class TuningStudy:
    """A study in the storage. ``definition`` is None when it has none (``incomplete``) or it cannot be read
    (``error`` says why in both cases): workers skip such studies, ``list`` shows them."""

    study_id: int
    name: str
    definition: StudyDefinition | None
    paused: bool = False
    paused_reason: str | None = None
    error: str | None = None
    incomplete: bool = False
    followed_up: str | None = None
    """The study created to follow this one (its confirmation, the next campaign stage), once created."""


def _read_tuning_studies(conn: sqlalchemy.engine.Connection, study_id: int | None = None) -> list[TuningStudy]:
    stored: dict[int, dict[str, Any]] = {}
    params = {"definition": DEFINITION_ATTR, "paused": PAUSED_ATTR, "reason": PAUSED_REASON_ATTR,
              "follow_up": FOLLOW_UP_ATTR, "study": study_id}  # fmt: skip
    for sid, name, key, value_json in conn.execute(_ATTRS, params):
        study = stored.setdefault(sid, {"name": name})
        if key is not None:
            study[key] = value_json
    return [_tuning_study(sid, study) for sid, study in stored.items()]


@functools.lru_cache(maxsize=4096)
def _definition(text: str) -> StudyDefinition:
    """A stored definition, read once per text: a worker polls every study's definition, and checking 1,000 of them
    took a second a poll."""
    return StudyDefinition.from_json(text)


def _loads(value_json: Any) -> Any:
    try:
        return json.loads(value_json)
    except (TypeError, ValueError, RecursionError):
        return None


def _tuning_study(study_id: int, stored: dict[str, Any]) -> TuningStudy:
    """One study as its attributes describe it; whatever is wrong with them is this study's error, never the
    caller's (a definition that fails any check, for any reason, makes the study unreadable)."""
    name = stored["name"]
    definition, error = None, INCOMPLETE if DEFINITION_ATTR not in stored else None
    try:
        check_stored_name(name)
        if error is None:
            text = _loads(stored[DEFINITION_ATTR])
            definition = _definition(text) if isinstance(text, str) else StudyDefinition.from_json(text)
    except DefinitionError as exc:
        error = str(exc)
    paused = _loads(stored.get(PAUSED_ATTR))
    reason = _loads(stored.get(PAUSED_REASON_ATTR))
    follow_up = _loads(stored.get(FOLLOW_UP_ATTR))
    return TuningStudy(
        study_id=study_id,
        name=name,
        definition=definition,
        paused=paused is True,
        paused_reason=reason if isinstance(reason, str) and reason else None,
        error=error,
        incomplete=DEFINITION_ATTR not in stored,
        followed_up=follow_up if isinstance(follow_up, str) else None,
    )


def _has_schema(conn: sqlalchemy.engine.Connection) -> bool:
    return sqlalchemy.inspect(conn).has_table("studies")


def tuning_studies(engine: sqlalchemy.engine.Engine) -> list[TuningStudy]:
    """Every study created by study_admin, oldest first, readable or not; empty for a fresh database."""
    with engine.connect() as conn:
        return _read_tuning_studies(conn) if _has_schema(conn) else []


@dataclass(frozen=True)
class Live:
    waiting: int = 0
    running: int = 0


def count_trials(engine: sqlalchemy.engine.Engine, study_id: int, *states: str) -> int:
    """How many trials of the study are in one of ``states`` (Optuna's state names), counted by the database."""
    query = sqlalchemy.text("SELECT COUNT(*) FROM trials WHERE study_id = :study AND state IN :states").bindparams(
        sqlalchemy.bindparam("states", expanding=True)
    )
    with engine.connect() as conn:
        return int(conn.execute(query, {"study": study_id, "states": list(states)}).scalar_one())


def live_counts(engine: sqlalchemy.engine.Engine) -> dict[int, Live]:
    """WAITING and RUNNING trials per study id (studies with neither are absent), in one query."""
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    with engine.connect() as conn:
        for study_id, state, n in conn.execute(_LIVE):
            counts[study_id][state.lower()] = n
    return {study_id: Live(**states) for study_id, states in counts.items()}


def failures(conn: sqlalchemy.engine.Connection, study_id: int | None = None) -> dict[int, dict[int, FailureKind]]:
    """study id -> {FAIL trial number -> its :func:`protocol.failure_kind`}, for every study or just ``study_id``."""
    params = {"retry": protocol.RETRY, "reason": protocol.FAIL_REASON, "handed_back": protocol.HANDED_BACK,
              "history": protocol.RETRY_HISTORY, "study": study_id}  # fmt: skip
    failed: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
    for sid, number, key, value_json in conn.execute(_FAILED, params):
        attrs = failed[sid].setdefault(number, {})
        value = None if key is None else protocol.decode_json(key, value_json, protocol.USER_ATTRS)
        if value is not None:
            attrs[key] = value
    retried: dict[int, set[int]] = defaultdict(set)
    for sid, value_json in conn.execute(_RETRIES, params):
        history = protocol.decode_json(protocol.RETRY_HISTORY, value_json, protocol.SYSTEM_ATTRS)
        if history:
            retried[sid].add(history[-1])
    return {
        sid: {n: protocol.failure_kind(attrs, retried=n in retried[sid]) for n, attrs in trials.items()}
        for sid, trials in failed.items()
    }


def _as_datetime(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


@dataclass(frozen=True)
class Eta:
    """Inputs and result of a study's time-to-finish estimate (see :func:`estimate_seconds`)."""

    trial_seconds: float | None
    running_seconds_left: list[float | None] = field(default_factory=list)
    waiting: int = 0
    workers: int = 0

    @property
    def seconds(self) -> float | None:
        """(time left of each running trial + waiting trials x one trial's time) / workers serving it.

        A running trial's time left comes from its last progress record (env-steps left at its
        training rate), else half a trial; one trial's time is the mean of the last finished ones.
        """
        if self.workers == 0 or (self.trial_seconds is None and self.waiting):
            return None
        per_trial = self.trial_seconds or 0.0
        running = sum(per_trial / 2 if left is None else left for left in self.running_seconds_left)
        if running == 0 and self.waiting == 0:
            return 0.0
        return (running + self.waiting * per_trial) / self.workers


class StudyState(StrEnum):
    """Where a study stands, as ``list`` and ``show`` print it."""

    FINISHED = "finished"
    PAUSED = "paused"
    RUNNING = "running"
    WAITING = "waiting"
    UNREADABLE = "unreadable"
    INCOMPLETE = "incomplete"
    """Its creation was interrupted before its definition was written."""
    NOT_STARTED = "not started"
    """A campaign stage whose study is not created yet."""
    DELETED = "deleted"
    """A campaign stage whose study was deleted after the next stage began."""


@dataclass(frozen=True)
class Summary:
    name: str
    algo: str | None
    env_id: str | None
    state: StudyState
    n_trials: int
    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int
    retried: int
    lost: int
    best_value: float | None
    workers: int
    eta_seconds: float | None
    best_relative_compute: float | None = None
    """The best trial's training compute per env-step, as a multiple of SB3's defaults'."""
    paused_reason: str | None = None
    error: str | None = None
    grows: bool = False
    """An instance study: its slots are queued as its tuning study samples configurations, up to its budget."""

    @property
    def done(self) -> int:
        return self.complete + self.pruned + self.failed

    @property
    def to_run(self) -> int:
        """WAITING and RUNNING trials, and failed ones still owed a retry (lost slots a worker will restore)."""
        return self.waiting + self.running + self.lost

    @property
    def accounted(self) -> int:
        """Budget slots found: WAITING + RUNNING + COMPLETE + PRUNED + finally failed."""
        return self.waiting + self.running + self.done

    @property
    def mismatch(self) -> str | None:
        if self.error:
            return None
        if self.lost:
            return f"{self.lost} failed trial(s) neither retried nor final: a worker will queue their retries"
        if self.accounted > self.n_trials or (self.accounted < self.n_trials and not self.grows):
            return f"{self.accounted} slots accounted for, budget is {self.n_trials}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "done": self.done, "accounted": self.accounted, "mismatch": self.mismatch}


def _running_left(definition: StudyDefinition, progress: dict[str, Any] | None) -> float | None:
    if not progress or not progress.get("steps_per_second"):
        return None
    return max(definition.timesteps - (progress.get("env_steps") or 0), 0) / progress["steps_per_second"]


def summarise(engine: sqlalchemy.engine.Engine, study_id: int | None = None) -> list[Summary]:
    """One summary per study created by study_admin, oldest first, or of study ``study_id`` only; empty for a fresh
    database."""
    one = {"study": study_id}
    with engine.connect() as conn:
        if not _has_schema(conn):
            return []
        studies = _read_tuning_studies(conn, study_id)
        counts: dict[tuple[int, str], int] = {(sid, state): n for sid, state, n in conn.execute(_COUNTS, one)}
        best: dict[int, float] = {sid: value for sid, value in conn.execute(_BEST, one)}
        costs = {sid: protocol.decode_json(protocol.RELATIVE_COMPUTE, value, protocol.USER_ATTRS) for sid, value in
                 conn.execute(_BEST_COST, {"cost": protocol.RELATIVE_COMPUTE, **one})}  # fmt: skip
        failed = failures(conn, study_id)
        live: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
        for sid, trial_id, key, value_json in conn.execute(
            _LIVE_ATTRS, {"worker": protocol.WORKER, "progress": protocol.PROGRESS, **one}
        ):
            attrs = live[sid].setdefault(trial_id, {})
            value = protocol.decode_json(key, value_json, protocol.USER_ATTRS)
            if value is not None:
                attrs[key] = value
        durations: dict[int, list[float]] = defaultdict(list)
        for sid, start, complete in conn.execute(_DURATIONS, {"recent": RECENT_TRIALS, **one}):
            durations[sid].append((_as_datetime(complete) - _as_datetime(start)).total_seconds())
    return [
        replace(_summary(s, counts, best, failed.get(s.study_id, {}), live[s.study_id], durations),
                best_relative_compute=costs.get(s.study_id))
        for s in studies
    ]  # fmt: skip


def _summary(
    study: TuningStudy,
    counts: dict[tuple[int, str], int],
    best: dict[int, float],
    failed: dict[int, FailureKind],
    live: dict[int, dict[str, Any]],
    durations: dict[int, list[float]],
) -> Summary:
    n = {s: counts.get((study.study_id, s), 0) for s in ("WAITING", "RUNNING", "COMPLETE", "PRUNED")}
    kinds = Counter(failed.values())
    definition = study.definition
    workers = len({attrs[protocol.WORKER] for attrs in live.values() if protocol.WORKER in attrs})
    if definition is None:
        state, eta = (StudyState.INCOMPLETE if study.incomplete else StudyState.UNREADABLE), None
    else:
        idle = n["WAITING"] == 0 and n["RUNNING"] == 0 and not kinds[FailureKind.LOST]
        # An instance study's slots come as its tuning study samples configurations: idle is not finished before then.
        slots = sum(n.values()) + kinds[FailureKind.FINAL] + kinds[FailureKind.LOST]
        queued = definition.stage != Stage.INSTANCES or slots >= definition.n_trials
        if idle and queued:
            state = StudyState.FINISHED
        elif study.paused:
            state = StudyState.PAUSED
        else:
            state = StudyState.RUNNING if n["RUNNING"] else StudyState.WAITING
        recent = durations.get(study.study_id)
        eta = Eta(
            trial_seconds=sum(recent) / len(recent) if recent else None,
            running_seconds_left=[_running_left(definition, attrs.get(protocol.PROGRESS)) for attrs in live.values()],
            waiting=0 if state == StudyState.PAUSED else n["WAITING"] + kinds[FailureKind.LOST],
            workers=workers,
        ).seconds
    return Summary(
        name=study.name,
        algo=definition.algo if definition else None,
        env_id=definition.env_id if definition else None,
        state=state,
        n_trials=definition.n_trials if definition else 0,
        complete=n["COMPLETE"],
        pruned=n["PRUNED"],
        failed=kinds[FailureKind.FINAL],
        running=n["RUNNING"],
        waiting=n["WAITING"],
        retried=kinds[FailureKind.RETRIED],
        lost=kinds[FailureKind.LOST],
        best_value=best.get(study.study_id),
        workers=workers,
        eta_seconds=eta,
        paused_reason=study.paused_reason if study.paused else None,
        error=study.error,
        grows=definition is not None and definition.stage == Stage.INSTANCES,
    )


# What Optuna raises reading a row it cannot decode (attribute JSON, a distribution, a parameter's value).
UNREADABLE_ROW = (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError, OverflowError)


def study_names(engine: sqlalchemy.engine.Engine) -> list[str]:
    """Every study's name, oldest first, read from the names alone: Optuna's ``get_all_studies`` also decodes every
    study's attributes, so one attribute that is not JSON would hide every name."""
    with engine.connect() as conn:
        return list(conn.execute(sqlalchemy.text("SELECT study_name FROM studies ORDER BY study_id")).scalars())


def study_id_of(storage: optuna.storages.RDBStorage, name: str) -> int:
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        known = study_names(storage.engine)
        raise StudyError(f"no study named {name!r}; existing studies: {', '.join(known) or '(none)'}") from None


def load_definition(storage: optuna.storages.RDBStorage, name: str) -> StudyDefinition:
    """The stored definition of study ``name``, or :class:`StudyError` saying why there is none."""
    try:
        attrs = storage.get_study_user_attrs(study_id_of(storage, name))
    except UNREADABLE_ROW as exc:
        raise StudyError(f"study {name!r} cannot be read: its attributes are not JSON ({exc})") from None
    if DEFINITION_ATTR not in attrs:
        raise StudyError(f"study {name!r} was not created by study_admin (it has no definition)")
    try:
        return StudyDefinition.from_json(attrs[DEFINITION_ATTR])
    except DefinitionError as exc:
        raise StudyError(f"study {name!r} cannot be read: {exc}") from None


def recorded_threads(trial: TrialView) -> int:
    """The torch threads the trial trained with (1, a worker's default, when it recorded none that a worker could
    have had)."""
    threads = (trial.get(protocol.PROVENANCE) or {}).get("threads")
    return threads if isinstance(threads, int) and 1 <= threads <= protocol.MAX_THREADS else 1
