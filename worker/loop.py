"""The worker loop: small steps (look for work, run one trial), stopped by the shutdown flag."""

from __future__ import annotations

import logging
import warnings

import optuna
from optuna.trial import TrialState

from study_admin.storage import mask_password, open_storage, resolve_url
from worker.config import WorkerConfig
from worker.db import Retrier
from worker.heartbeat import touch
from worker.shutdown import ShutdownFlag
from worker.slots import RetryStaleTrial, TuningStudy, claim, has_live_trials, served_studies
from worker.trial_runner import run_trial

log = logging.getLogger(__name__)


def connect(config: WorkerConfig, retry: Retrier) -> optuna.storages.RDBStorage:
    """The storage with heartbeats on; connection failures that may pass are retried."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    url = resolve_url(config.storage, config.data_dir)
    retry_stale = RetryStaleTrial(max_retry=config.max_retry)
    return retry(
        "connecting",
        lambda: open_storage(
            url,
            heartbeat_interval=config.heartbeat_interval,
            grace_period=config.grace_period,
            stale_trial_callback=retry_stale,
        ),
    )


class Worker:
    def __init__(self, config: WorkerConfig, storage: optuna.storages.RDBStorage, shutdown: ShutdownFlag) -> None:
        self.config = config
        self.storage = storage
        self.shutdown = shutdown
        self.retry = Retrier(config.db_retry_max_wait)
        self.retry_stale = RetryStaleTrial(max_retry=config.max_retry)
        self.outcomes: list[str] = []

    def _studies(self) -> list[TuningStudy]:
        return self.retry("listing studies", lambda: served_studies(self.storage, self.config.study))

    def reclaim_stale(self, study: TuningStudy) -> None:
        """Fail trials whose worker died; the storage's callback queues their retries."""
        self.retry(
            "checking for stale trials",
            lambda: optuna.storages.fail_stale_trials(optuna.load_study(study_name=study.name, storage=self.storage)),
        )

    def _by_fewest_running(self, studies: list[TuningStudy]) -> list[TuningStudy]:
        """Unpaused studies, least-served first, so a new study gets workers as soon as one frees."""

        def running(study: TuningStudy) -> int:
            return self.storage.get_n_trials(study.study_id, state=TrialState.RUNNING)

        unpaused = [s for s in studies if not s.paused]
        counts = self.retry("counting running trials", lambda: [running(s) for s in unpaused])
        return [s for _, s in sorted(zip(counts, unpaused, strict=False), key=lambda pair: pair[0])]

    def run_once(self) -> bool:
        """Run at most one trial of any runnable study; whether one ran."""
        for study in self._by_fewest_running(self._studies()):
            self.reclaim_stale(study)
            trial_id = self.retry("claiming a trial", lambda s=study: claim(self.storage, s.study_id))
            if trial_id is None:
                continue
            outcome = run_trial(
                self.storage,
                study.name,
                trial_id,
                study.definition,
                self.config,
                self.shutdown,
                self.retry,
                self.retry_stale,
            )
            self.outcomes.append(outcome)
            return True
        touch(self.config.health_file)
        return False

    def is_idle(self) -> bool:
        """No served, unpaused study has a trial to run or one that may come back for a retry.

        Called after a ``run_once`` that found nothing, which already failed every stale trial.
        """
        for study in self._studies():
            if study.paused:
                continue
            if self.retry("counting trials", lambda s=study: has_live_trials(self.storage, s.study_id)):
                return False
        return True

    def run(self) -> int:
        log.info(
            "worker ready on %s (threads=%d, serving %s)",
            mask_password(self.storage.url),
            self.config.threads,
            self.config.study or "all studies",
        )
        if self.config.study and not self._studies():
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
