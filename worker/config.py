"""The worker's configuration: one typed object; the command line and the environment map onto it."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any


def _opt(default: Any, env: str, help: str) -> Any:
    return field(default=default, metadata={"env": env, "help": help})


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    storage: str | None = _opt(None, "DATABASE_URL", "database URL (default: the embedded SQLite file)")
    data_dir: str | None = _opt(None, "TUNER_DATA_DIR", "directory of the embedded storage")
    study: str | None = _opt(None, "WORKER_STUDY", "serve only this study (default: every runnable study)")
    max_trials: int | None = _opt(None, "WORKER_MAX_TRIALS", "exit after running this many trials")
    until_idle: bool = _opt(False, "WORKER_UNTIL_IDLE", "exit once no served study can make progress")
    threads: int = _opt(1, "WORKER_THREADS", "torch and BLAS threads per worker (one per core is right for a fleet)")
    poll_interval: float = _opt(5.0, "WORKER_POLL_INTERVAL", "seconds between looks for work when idle")
    heartbeat_interval: int = _opt(20, "WORKER_HEARTBEAT_INTERVAL", "seconds between heartbeats of a running trial")
    grace_period: int = _opt(
        120, "WORKER_GRACE_PERIOD", "seconds without heartbeat before a trial is stale and retried"
    )
    max_retry: int = _opt(3, "WORKER_MAX_RETRY", "times a stale or handed-back configuration is retried")
    drain_seconds: float = _opt(
        30.0,
        "WORKER_DRAIN_SECONDS",
        "on SIGTERM, finish the running trial only if it ends within this; else hand it back",
    )
    db_retry_max_wait: float = _opt(30.0, "WORKER_DB_RETRY_MAX_WAIT", "longest back-off between database retries")
    health_file: str | None = _opt(
        None, "WORKER_HEALTH_FILE", "file touched while the worker is alive and reaching the database"
    )

    def __post_init__(self) -> None:
        positive = ("threads", "poll_interval", "heartbeat_interval", "grace_period", "db_retry_max_wait")
        for name in positive:
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"{name}={value!r} must be > 0")
        if self.max_trials is not None and self.max_trials <= 0:
            raise ValueError(f"max_trials={self.max_trials!r} must be > 0")
        if self.max_retry < 0 or self.drain_seconds < 0:
            raise ValueError(f"max_retry={self.max_retry!r} and drain_seconds={self.drain_seconds!r} must be >= 0")
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(
                f"grace_period={self.grace_period} must exceed heartbeat_interval="
                f"{self.heartbeat_interval}, or live trials would be declared stale"
            )


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean (use true/false)")


def _value_type(name: str) -> type:
    annotation = str(WorkerConfig.__dataclass_fields__[name].type)
    for candidate in (bool, int, float):
        if candidate.__name__ in annotation:
            return candidate
    return str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="worker",
        description="Run trials of the tuning studies in the storage until stopped (SIGTERM: drain).",
    )
    for f in fields(WorkerConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} [env: {f.metadata['env']}]"
        if _value_type(f.name) is bool:
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(flag, type=str, default=None, help=f"{help_text} (default: {f.default})")
    parser.add_argument("--check-health", action="store_true", help="exit 0 if the health file is fresh")
    return parser


def config_from(argv: Sequence[str] | None, environ: dict[str, str] | None = None) -> tuple[WorkerConfig, bool]:
    """The configuration from flags, then environment variables, then defaults."""
    environ = dict(os.environ if environ is None else environ)
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    for f in fields(WorkerConfig):
        raw = getattr(args, f.name)
        source = f"--{f.name.replace('_', '-')}"
        if raw is None and environ.get(f.metadata["env"]):
            raw, source = environ[f.metadata["env"]], f.metadata["env"]
        if raw is None:
            continue
        kind = _value_type(f.name)
        try:
            values[f.name] = raw if isinstance(raw, bool) else (_parse_bool(raw) if kind is bool else kind(raw))
        except ValueError:
            raise ValueError(f"{source}={raw!r} is not a valid {kind.__name__}") from None
    return WorkerConfig(**values), bool(args.check_health)
