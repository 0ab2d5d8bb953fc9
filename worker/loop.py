"""The worker loop: small steps (look after a study, claim a trial, run it), stopped by the shutdown flag.

No study can stop the worker: an unreadable definition is skipped with one warning, an error while
looking after one study is logged and the next study served. Only a shutdown, a database outage
longer than the retry deadline, or a database that refuses this worker for good (credentials, rights)
ends the loop.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable
from typing import TypeVar

import optuna
import sqlalchemy.exc

from study_contract.definition import FOLLOW_UP_ATTR
from study_contract.engine.confirmation import StudyBusy
from study_contract.engine.creation import study_created
from study_contract.engine.follow_ups import follow_up_of
from study_contract.engine.instances import settle
from study_contract.names import Stage, StudyError
from study_contract.store.artifacts import location as artifact_location
from study_contract.store.artifacts import open_store
from study_contract.store.catalog import TuningStudy, live_counts, tuning_studies
from study_contract.store.claims import claim
from study_contract.store.storage import describe_first_line, is_permanent, mask_password, open_storage, resolve_url
from worker.config import WorkerConfig
from worker.db import Retrier
from worker.faults import crash_point
from worker.health import touch
from worker.outcomes import Outcome
from worker.shutdown import ShutdownFlag
from worker.slots import maintain
from worker.trial_runner import Trainer, run_trial, train_with_sb3
from worker.trial_session import TrialSession

log = logging.getLogger(__name__)
T = TypeVar("T")
StudyKey = tuple[int, str]
FINISHED_STUDY_CARE = 10  # finished studies are looked after ten times less often than active ones


def _key(study: TuningStudy) -> StudyKey:
    return study.study_id, study.name


class DatabaseRefused(RuntimeError):
    """The database refuses this worker for good (credentials, rights); waiting will not help."""


def connect(config: WorkerConfig, retry: Retrier) -> optuna.storages.RDBStorage:
    """The storage with heartbeats on; connection failures that may pass are retried."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    url = resolve_url(config.storage, config.data_dir)
    return retry(
        "connecting",
        lambda: open_storage(url, heartbeat_interval=config.heartbeat_interval, grace_period=config.grace_period),
    )


class Worker:
    def __init__(
        self,
        config: WorkerConfig,
        storage: optuna.storages.RDBStorage,
        shutdown: ShutdownFlag,
        *,
        clock: Callable[[], float] = time.monotonic,
        train: Trainer = train_with_sb3,
    ) -> None:
        self.config = config
        self.storage = storage
        self.shutdown = shutdown
        self.clock = clock
        self.train = train
        self.retry = Retrier(max_wait=config.db_retry_max_wait, deadline=config.db_retry_deadline, stop=shutdown.event)
        self.outcomes: list[Outcome] = []
        where = artifact_location(config.artifact_dir, storage.url)
        self.artifact_store = open_store(where, writable=True) if where else None
        # What the worker remembers of a study is keyed by its id and name, and forgotten once the study is gone:
        # a deleted study's name, and on older embedded storages its id, may come back as another study.
        self._warned: dict[str, str] = {}
        self._maintained: dict[StudyKey, float] = {}
        self._followed: set[StudyKey] = set()
        """Finished studies whose follow-up exists or is not due; any other finished study still has work coming."""

    @property
    def maintenance_interval(self) -> float:
        """How often one worker looks after one study: stale trials are detected within a grace period anyway."""
        return self.config.grace_period / 4

    def _warn_once(self, study_name: str, message: str) -> None:
        if self._warned.get(study_name) != message:
            self._warned[study_name] = message
            log.warning("study %s: %s", study_name, message)

    def studies(self) -> list[TuningStudy]:
        """The readable studies this worker serves (``--study`` and the studies that follow it); each
        unreadable one is named once, with the reason."""
        served = []
        pinned = self.config.study
        listed = self.retry("listing studies", lambda: tuning_studies(self.storage.engine))
        self._forget_all_but({_key(s) for s in listed})
        for study in listed:
            if pinned and study.name != pinned and not study.name.startswith(pinned + ":"):
                continue
            if study.definition is None:
                self._warn_once(study.name, f"skipped: {study.error}")
                continue
            served.append(study)
        return served

    def _forget_all_but(self, present: set[StudyKey]) -> None:
        self._maintained = {key: at for key, at in self._maintained.items() if key in present}
        self._followed &= present

    def _guarded(self, study: TuningStudy, what: str, step: Callable[[], T]) -> T | None:
        """Run one step for one study; a failure there is that study's problem, not the worker's."""
        try:
            return step()
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if is_permanent(exc):
                raise DatabaseRefused(describe_first_line(exc)) from exc
            self._warn_once(study.name, f"{what} failed: {describe_first_line(exc)}")
        except KeyError:
            log.info("study %s was deleted while this worker %s", study.name, what)
        except Exception as exc:  # noqa: BLE001 - one study's trouble must not stop the others
            self._warn_once(study.name, f"{what} failed: {type(exc).__name__}: {describe_first_line(exc)}")
        return None

    def maintain(self, study: TuningStudy, *, force: bool = False, every: float = 1.0) -> None:
        """Fail stale trials, release unstarted claims, restore lost slots (at most once per ``every``
        maintenance intervals)."""
        now = self.clock()
        last = self._maintained.get(_key(study), -float("inf"))
        if not force and now - last < self.maintenance_interval * every:
            return
        self._maintained[_key(study)] = now
        assert study.definition is not None
        definition = study.definition
        self._guarded(
            study,
            "looking after its trials",
            lambda: self.retry(
                "looking after trials",
                lambda: maintain(
                    self.storage,
                    study.study_id,
                    grace_period=self.config.grace_period,
                    max_retry=definition.max_retry,
                ),
            ),
        )
        if definition.has_instances:  # an instance whose worker died after it ended, or that failed as stale
            settling = functools.partial(settle, self.storage, study.name)
            self._guarded(study, "settling its configurations", lambda: self.retry("settling", settling))

    def follow_up(self, study: TuningStudy) -> bool:
        """Create what follows a finished study (a campaign's next stage, a confirmation), exactly once across
        the fleet; whether this worker did."""
        definition = study.definition
        assert definition is not None
        if _key(study) in self._followed:
            return False
        follow = follow_up_of(definition, study.name)
        if follow is None or follow.name is None:
            self._followed.add(_key(study))
            return False
        expected, create = follow.name, follow.create
        if self.retry("looking for a follow-up", lambda: study_created(self.storage, expected)):
            if study.followed_up != expected:  # created by a release that did not record it
                record = functools.partial(self.storage.set_study_user_attr, study.study_id, FOLLOW_UP_ATTR, expected)
                self.retry("recording the follow-up", record)
            self._followed.add(_key(study))
            return False
        if study.followed_up == expected:
            self._followed.add(_key(study))
            self._warn_once(study.name, f"its follow-up {expected} was deleted; not created again (study_admin confirm "
                                        "creates a confirmation again)")  # fmt: skip
            return False
        crash_point("follow-up")
        try:
            created = self.retry("creating a follow-up", lambda: create(self.storage, study.name))
            crash_point("followed-up")
        except StudyBusy:  # a lost slot is being restored: the study is not finished after all
            return False
        except StudyError as exc:  # nothing to follow up with, or another worker was quicker
            self._followed.add(_key(study))
            log.info("study %s: no follow-up (%s)", study.name, exc)
            return False
        if created:
            log.info("study %s finished its budget; created %s", study.name, created)
        # Not yet created: another worker holds the lock and is creating it, so there is work to wait for.
        if created or self.retry("looking for a follow-up", lambda: study_created(self.storage, expected)):
            self._followed.add(_key(study))
        return created is not None

    def run_once(self) -> bool:
        """Run at most one trial of any runnable study, least-served study first, or create a due follow-up
        study; whether any work was done. Two queries a poll, however many studies there are; finished
        studies are only looked after now and then (a killed worker may have left a retry to restore)."""
        touch(self.config.health_file)
        studies = self.studies()
        live = self.retry("counting trials", lambda: live_counts(self.storage.engine))
        # Instances of configurations already sampled come first: the sampler learns sooner, and racing has a best.
        active = sorted((s for s in studies if s.study_id in live),
                        key=lambda s: (s.definition is None or s.definition.stage != Stage.INSTANCES,
                                       live[s.study_id].running))  # fmt: skip
        for study in active:
            self.maintain(study)  # paused or not: a dead worker's trial must not stay RUNNING
            if study.paused:
                continue
            take = functools.partial(claim, self.storage, study.study_id, grace_period=self.config.grace_period)
            claimed = self._guarded(study, "claiming a trial", functools.partial(self.retry, "claiming a trial", take))
            if claimed is None:
                continue
            crash_point("claim")
            session = TrialSession(
                storage=self.storage,
                study=study,
                claim=claimed,
                config=self.config,
                shutdown=self.shutdown,
                retry=self.retry,
                artifact_store=self.artifact_store,
            )
            self.outcomes.append(run_trial(session, self.train))
            return True
        finished = [s for s in studies if s.study_id not in live and not s.paused]
        for study in finished:
            self.maintain(study, every=FINISHED_STUDY_CARE)
        return any(self._guarded(s, "following up", functools.partial(self.follow_up, s)) for s in finished)

    def is_idle(self) -> bool:
        """No served, unpaused study has a trial to run, one that may come back for a retry, or a follow-up
        that is due, or that another worker is creating."""
        studies = [s for s in self.studies() if not s.paused]
        for study in studies:  # a dead worker's trial, or a retry it left half-queued, comes back first
            self.maintain(study, force=True)
        live = self.retry("counting trials", lambda: live_counts(self.storage.engine))
        # A study another worker finished since this worker's last poll has not been followed up here yet.
        return all(s.study_id not in live and _key(s) in self._followed for s in studies)

    def run(self) -> int:
        log.info(
            "worker ready on %s (threads=%d, serving %s, artifacts: %s)",
            mask_password(self.storage.url),
            self.config.threads,
            self.config.study or "all studies",
            artifact_location(self.config.artifact_dir, self.storage.url) or "none",
        )
        if self.config.study and not self.studies():
            log.warning("no study named %r yet; waiting for study_admin to create it", self.config.study)
        while not self.shutdown.requested:
            if self.run_once():
                if self.config.max_trials and len(self.outcomes) >= self.config.max_trials:
                    log.info("ran %d trials (--max-trials); exiting", len(self.outcomes))
                    break
                continue
            if self.config.until_idle and self.is_idle():
                log.info("no study can make progress (--until-idle); exiting")
                break
            self.shutdown.event.wait(self.config.poll_interval)
        if self.shutdown.requested:
            log.info("drained in %.1f s; exiting", self.shutdown.seconds_since_request())
        return 0
