"""Claims in Optuna's tables: a WAITING trial taken in one transaction, heartbeats that check the claim, and
the RUNNING trials a maintenance pass judges.

A claim moves the oldest WAITING trial to RUNNING and writes its first heartbeat and the claimer's grace
period in the same transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so racing workers take
different rows and none waits). The start time it writes tells this claim apart from any later claim of
the same row, or of a row with the same id in another study.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import optuna
import sqlalchemy
from optuna.storages._rdb import models  # Optuna's table objects
from optuna.trial import TrialState
from sqlalchemy.dialects import postgresql, sqlite

from study_contract import protocol

MAX_GRACE = 86_400.0  # the longest --grace-period a worker accepts: an owner's promise is read within it


def _claim_statement(dialect: str, study_id: int) -> sqlalchemy.Update:
    trials = models.TrialModel.__table__
    pick = (
        sqlalchemy.select(trials.c.trial_id)
        .where(trials.c.study_id == study_id, trials.c.state == TrialState.WAITING)
        .order_by(trials.c.trial_id)
        .limit(1)
    )
    if dialect == "postgresql":
        pick = pick.with_for_update(skip_locked=True)  # racing workers take different rows, none waits
    return (
        sqlalchemy.update(trials)
        .where(trials.c.trial_id == pick.scalar_subquery(), trials.c.state == TrialState.WAITING)
        .values(state=TrialState.RUNNING, datetime_start=datetime.now())
        .returning(trials.c.trial_id, trials.c.datetime_start)
    )


@dataclass(frozen=True)
class Claim:
    """A trial this worker claimed: the row, its study, and the start time the claim wrote, which tells this
    claim apart from any later one of the same row (or, on an embedded storage that gave a deleted
    study's ids to a new one, of another study's trial)."""

    trial_id: int
    study_id: int
    started: datetime

    def _is_it(self, trials: sqlalchemy.Table) -> Any:
        return (
            (trials.c.trial_id == self.trial_id)
            & (trials.c.study_id == self.study_id)
            & (trials.c.datetime_start == self.started)
        )


def _upsert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _heartbeat_statement(dialect: str, trial_id: int) -> Any:
    now = sqlalchemy.func.current_timestamp()
    statement = _upsert(dialect)(models.TrialHeartbeatModel.__table__).values(trial_id=trial_id, heartbeat=now)
    return statement.on_conflict_do_update(index_elements=["trial_id"], set_={"heartbeat": now})


def _owner_grace_statement(dialect: str, trial_id: int, grace_period: float) -> Any:
    value = json.dumps(grace_period)
    statement = _upsert(dialect)(models.TrialSystemAttributeModel.__table__).values(
        trial_id=trial_id, key=protocol.OWNER_GRACE, value_json=value
    )
    return statement.on_conflict_do_update(index_elements=["trial_id", "key"], set_={"value_json": value})


def claim(storage: optuna.storages.RDBStorage, study_id: int, *, grace_period: float) -> Claim | None:
    """Move the oldest WAITING trial to RUNNING with a first heartbeat and the claimer's grace period (how long
    others wait for its heartbeats), in one transaction; the claim or None."""
    engine = storage.engine
    with engine.begin() as conn:
        row = conn.execute(_claim_statement(engine.dialect.name, study_id)).first()
        if row is None:
            return None
        conn.execute(_heartbeat_statement(engine.dialect.name, row.trial_id))
        conn.execute(_owner_grace_statement(engine.dialect.name, row.trial_id, grace_period))
    return Claim(row.trial_id, study_id, row.datetime_start)


class LostClaim(StrEnum):
    """Why a claim is no longer this worker's."""

    DELETED = "deleted"
    """The row is gone, or now belongs to another study or claim."""
    FINISHED = "finished"
    """Another worker failed it as stale."""


def lost_claim(engine: sqlalchemy.engine.Engine, mine: Claim) -> LostClaim | None:
    """None while ``mine`` is still a RUNNING trial of this worker's claim; else why not."""
    trials = models.TrialModel.__table__
    with engine.connect() as conn:
        state = conn.execute(sqlalchemy.select(trials.c.state).where(mine._is_it(trials))).scalar()
    if state is None:
        return LostClaim.DELETED
    return None if state == TrialState.RUNNING else LostClaim.FINISHED


def beat(engine: sqlalchemy.engine.Engine, mine: Claim) -> bool:
    """Record a heartbeat for ``mine``, in one statement that checks the claim is still this worker's;
    False (and nothing written) once it is not."""
    trials, beats = models.TrialModel.__table__, models.TrialHeartbeatModel.__table__
    claimed = sqlalchemy.exists().where(mine._is_it(trials) & (trials.c.state == TrialState.RUNNING))
    statement = (
        sqlalchemy.update(beats)
        .where(beats.c.trial_id == mine.trial_id, claimed)
        .values(heartbeat=sqlalchemy.func.current_timestamp())
    )
    with engine.begin() as conn:
        return conn.execute(statement).rowcount > 0


def db_now(conn: sqlalchemy.Connection) -> datetime:
    value = conn.execute(sqlalchemy.select(sqlalchemy.func.current_timestamp())).scalar_one()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=None)


@dataclass(frozen=True)
class Running:
    trial_id: int
    number: int
    started: datetime | None
    heartbeat: datetime | None
    grace_period: float
    """The owner's grace period, as it recorded with its claim (else the maintaining worker's)."""
    worker: str | None
    """Who trains it, recorded as training starts: None while it is still in setup."""
    stale_retries: int
    """Retries its configuration already got after workers that stopped sending heartbeats."""
    awaits_instances: bool = False
    """A configuration whose instances are queued: its instances' ends settle it, not a heartbeat."""


def _grace(value_json: str | None, default: float) -> float:
    """An owner's recorded grace period, read as untrusted: a number of seconds within (0, MAX_GRACE]."""
    value = protocol.decode_json(protocol.OWNER_GRACE, value_json, protocol.SYSTEM_ATTRS)
    return value if value is not None and value <= MAX_GRACE else default


def _attr(table: sqlalchemy.Table, trials: sqlalchemy.Table, key: str) -> Any:
    return (
        sqlalchemy.select(table.c.value_json)
        .where(table.c.trial_id == trials.c.trial_id, table.c.key == key)
        .limit(1)
        .scalar_subquery()
    )


def running_trials(conn: sqlalchemy.Connection, study_id: int, default_grace: float) -> list[Running]:
    trials, beats = models.TrialModel.__table__, models.TrialHeartbeatModel.__table__
    system, user = models.TrialSystemAttributeModel.__table__, models.TrialUserAttributeModel.__table__
    query = (
        sqlalchemy.select(trials.c.trial_id, trials.c.number, trials.c.datetime_start, beats.c.heartbeat,
                          _attr(system, trials, protocol.OWNER_GRACE), _attr(user, trials, protocol.WORKER),
                          _attr(system, trials, protocol.STALE_RETRIES), _attr(user, trials, protocol.INSTANCES))
        .select_from(trials.outerjoin(beats, beats.c.trial_id == trials.c.trial_id))
        .where(trials.c.study_id == study_id, trials.c.state == TrialState.RUNNING)
    )  # fmt: skip
    return [
        Running(row[0], row[1], row[2], row[3], _grace(row[4], default_grace),
                protocol.decode_json(protocol.WORKER, row[5], protocol.USER_ATTRS),
                protocol.decode_json(protocol.STALE_RETRIES, row[6], protocol.SYSTEM_ATTRS) or 0,
                protocol.decode_json(protocol.INSTANCES, row[7], protocol.USER_ATTRS) is not None)
        for row in conn.execute(query)
    ]  # fmt: skip


def trial_id_of(conn: sqlalchemy.Connection, study_id: int, number: int) -> int:
    trials = models.TrialModel.__table__
    query = sqlalchemy.select(trials.c.trial_id).where(trials.c.study_id == study_id, trials.c.number == number)
    return int(conn.execute(query).scalar_one())
