"""The worker's configuration: one typed object; the command line and the environment map onto it."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from study_contract.options import HelpFormatter, OneLineParser, add_options, collect, options_of
from study_contract.protocol import MAX_THREADS


def _opt(default: Any, env: str, **meta: Any) -> Any:
    return field(default=default, metadata={"env": env, **meta})


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    storage: str | None = _opt(
        None,
        "DATABASE_URL",
        default_help="the embedded SQLite file",
        help="Database URL, e.g. postgresql+psycopg2://user:pass@host:5432/db.",
    )
    data_dir: str | None = _opt(
        None,
        "TUNER_DATA_DIR",
        default_help="~/.local/share/locomotion-tuner",
        help="Directory of the embedded storage.",
    )
    study: str | None = _opt(None, "WORKER_STUDY", default_help="every runnable study", help="Serve only this study.")
    max_trials: int | None = _opt(
        None, "WORKER_MAX_TRIALS", bounds=(1, 10**9), help="Exit after running this many trials."
    )
    until_idle: bool = _opt(False, "WORKER_UNTIL_IDLE", help="Exit once no served study can make progress.")
    threads: int = _opt(
        1,
        "WORKER_THREADS",
        bounds=(1, MAX_THREADS),
        help="Torch and BLAS threads per worker (one per core is right for a fleet).",
    )
    poll_interval: float = _opt(
        5.0, "WORKER_POLL_INTERVAL", bounds=(0.01, 86400), help="Seconds between looks for work when idle."
    )
    heartbeat_interval: int = _opt(
        20, "WORKER_HEARTBEAT_INTERVAL", bounds=(1, 86400), help="Seconds between heartbeats of a running trial."
    )
    grace_period: int = _opt(
        120,
        "WORKER_GRACE_PERIOD",
        bounds=(2, 86400),
        help="Seconds without heartbeat before a trial is stale and retried.",
    )
    drain_seconds: float = _opt(
        30.0,
        "WORKER_DRAIN_SECONDS",
        bounds=(0, 86400),
        help="On SIGTERM, finish the running trial only if it ends within this; else hand it back.",
    )
    progress_interval: float = _opt(
        60.0,
        "WORKER_PROGRESS_INTERVAL",
        bounds=(0.1, 86400),
        help="Seconds between progress lines of a running trial (one is also logged at each evaluation).",
    )
    max_trial_seconds: float | None = _opt(
        None,
        "WORKER_MAX_TRIAL_SECONDS",
        bounds=(1, 10**8),
        default_help="off",
        help="Fail a trial that trains longer than this.",
    )
    db_retry_max_wait: float = _opt(
        30.0, "WORKER_DB_RETRY_MAX_WAIT", bounds=(0.01, 3600), help="Longest back-off between database retries."
    )
    db_retry_deadline: float = _opt(
        600.0,
        "WORKER_DB_RETRY_DEADLINE",
        bounds=(1, 86400),
        help="Seconds a database call keeps retrying an outage before the worker gives up and exits 1.",
    )
    artifact_dir: str | None = _opt(
        None,
        "TUNER_ARTIFACT_DIR",
        default_help="beside the embedded database; none",
        help="Artifact store shared with the dashboard: a directory, or s3://BUCKET (models, curves, videos).",
    )
    health_file: str | None = _opt(
        None, "WORKER_HEALTH_FILE", help="File touched while the worker polls or its trial makes training progress."
    )

    def __post_init__(self) -> None:
        for option in options_of(type(self)):
            option.check(getattr(self, option.name))
        if self.health_file is not None and not os.access(os.path.dirname(self.health_file) or ".", os.W_OK):
            raise ValueError(
                f"health_file={self.health_file!r}: its directory does not exist or is not writable by this user"
            )
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(
                f"grace_period={self.grace_period} must exceed heartbeat_interval="
                f"{self.heartbeat_interval}, or live trials would be declared stale"
            )

    @property
    def health_max_age(self) -> float:
        """Seconds after which an untouched health file means the worker is stuck."""
        return 3 * max(self.heartbeat_interval, self.poll_interval)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="worker",
        description="Run trials of the tuning studies in the storage until stopped (SIGTERM: drain).",
        formatter_class=HelpFormatter,
    )
    add_options(parser, options_of(WorkerConfig))
    parser.add_argument("--check-health", action="store_true", help="exit 0 if the health file is fresh")
    return parser


def config_from(argv: Sequence[str] | None, environ: Mapping[str, str] | None = None) -> tuple[WorkerConfig, bool]:
    """The configuration from flags, then environment variables, then defaults."""
    args = build_parser().parse_args(argv)
    values = collect(args, options_of(WorkerConfig), os.environ if environ is None else environ)
    return WorkerConfig(**values), bool(args.check_health)
