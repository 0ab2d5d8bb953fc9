"""One claimed trial as the worker holds it while it runs: every database write on the trial, its progress
records and the files it uploads go through here, each after checking that the row is still this worker's
claim. On the embedded storage a deleted study's ids go to the next study, and a late write would land
in someone else's trial; a trial failed as stale while this worker was cut off belongs to its retry.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.artifacts import upload_artifact

from study_contract import protocol
from study_contract.definition import StudyDefinition
from study_contract.names import DefinitionError
from study_contract.store.catalog import TuningStudy
from study_contract.store.claims import Claim, LostClaim, lost_claim
from worker.config import WorkerConfig
from worker.db import Retrier
from worker.shutdown import ShutdownFlag

log = logging.getLogger(__name__)
T = TypeVar("T")

_STALE = "it was failed as stale while this worker was cut off; its retry counts instead"


class TrialGone(RuntimeError):
    """The trial's study was deleted, or the trial was failed by another worker, while this one ran it."""

    def __init__(self, message: str, *, deleted: bool) -> None:
        super().__init__(message)
        self.deleted = deleted


def gone_if_missing(fn: Callable[[], T]) -> T:
    """``fn()``, with Optuna's refusals to touch a missing or finished trial turned into :class:`TrialGone`."""
    try:
        return fn()
    except KeyError:
        raise TrialGone("its study was deleted", deleted=True) from None
    except optuna.exceptions.UpdateFinishedTrialError:
        raise TrialGone(_STALE, deleted=False) from None


class TrialSession:
    """A claimed trial and what the worker lends to run it: storage, retries, shutdown flag, artifact store."""

    def __init__(
        self,
        *,
        storage: optuna.storages.RDBStorage,
        study: TuningStudy,
        claim: Claim,
        config: WorkerConfig,
        shutdown: ShutdownFlag,
        retry: Retrier,
        artifact_store: Any = None,
    ) -> None:
        self.storage = storage
        self.study = study
        self.claim = claim
        self.config = config
        self.shutdown = shutdown
        self.retry = retry
        self.artifact_store = artifact_store
        self._uploaded: list[str] = []  # removed again if the study is deleted meanwhile
        self._on_task: StudyDefinition | None = None

    @property
    def definition(self) -> StudyDefinition:
        """The study's definition; for a run on one of its several tasks (:meth:`train_on`), as if that were its only
        task."""
        assert self.study.definition is not None  # only readable studies are served
        return self._on_task or self.study.definition

    def train_on(self, task: str) -> None:
        """Train on ``task``, one of the study's tasks (a multi-task study's confirmation slot names it)."""
        assert self.study.definition is not None
        if task not in self.study.definition.tasks:
            raise DefinitionError(f"task={task!r} is not one of the study's tasks {self.study.definition.tasks}")
        self._on_task = replace(self.study.definition, env_id=task, more_envs=[])

    @property
    def trial_id(self) -> int:
        return self.claim.trial_id

    @property
    def label(self) -> str:
        return f"trial id {self.trial_id} of {self.study.name}"

    def check(self) -> None:
        """Raise :class:`TrialGone` unless the trial is still this worker's claim."""
        why = lost_claim(self.storage.engine, self.claim)
        if why == LostClaim.DELETED:
            raise TrialGone("its study was deleted", deleted=True)
        if why == LostClaim.FINISHED:
            raise TrialGone(_STALE, deleted=False)

    def guarded(self, what: str, fn: Callable[[], T]) -> T:
        """``fn`` (database work on this trial) with retries, once the trial is known to be still this
        worker's claim, and with a missing or finished trial turned into :class:`TrialGone`."""

        def call() -> T:
            self.check()
            return gone_if_missing(fn)

        return self.retry(what, call)

    def record(self, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            self.guarded("recording", functools.partial(self.storage.set_trial_user_attr, self.trial_id, key, value))

    def record_progress(self, progress: dict[str, Any]) -> None:
        """Best effort (no retries: training must not wait); a trial that is gone stops training."""
        try:
            self.check()
            gone_if_missing(lambda: self.storage.set_trial_user_attr(self.trial_id, protocol.PROGRESS, progress))
        except TrialGone:
            raise
        except Exception as exc:  # noqa: BLE001 - progress is informative; the database may be restarting
            log.debug("progress of %s not recorded: %s", self.label, exc)

    def upload(self, trial: optuna.Trial, path: Path, mimetype: str) -> None:
        """Upload one file as the trial's artifact (the store must be set)."""
        self.check()
        artifact_id = upload_artifact(artifact_store=self.artifact_store, file_path=str(path), study_or_trial=trial,
                                      mimetype=mimetype)  # fmt: skip
        self._uploaded.append(artifact_id)

    def remove_uploads(self) -> None:
        """Remove the files this trial uploaded: its study is gone, and nothing refers to them any more."""
        for artifact_id in self._uploaded:
            try:
                self.artifact_store.remove(artifact_id)
            except Exception as exc:  # noqa: BLE001 - a store that cannot remove one file must not stop the worker
                log.warning("artifact %s of a deleted study not removed: %s", artifact_id, exc)
        self._uploaded.clear()
