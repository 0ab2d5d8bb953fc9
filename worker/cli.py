"""``worker``: run trials from the shared storage until stopped. See ``worker --help``."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence

from study_admin.storage import StorageError
from worker.config import WorkerConfig, config_from

EXIT_CONFIG = 2


def check_health(config: WorkerConfig) -> int:
    """0 when the health file was touched recently enough for a live worker."""
    if not config.health_file or not os.path.exists(config.health_file):
        return 1
    age = time.time() - os.path.getmtime(config.health_file)
    return 0 if age <= 3 * max(config.heartbeat_interval, config.poll_interval) else 1


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s worker[%(process)d] %(name)s: %(message)s"
    )
    try:
        config, health_only = config_from(argv)
    except ValueError as exc:
        print(f"worker: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if health_only:
        return check_health(config)

    from worker.threads import pin_threads

    pin_threads(config.threads)  # before SB3, numpy's BLAS or torch start their thread pools

    from worker.db import Retrier, RetryAborted
    from worker.loop import Worker, connect
    from worker.shutdown import ShutdownFlag

    shutdown = ShutdownFlag()
    shutdown.install()
    try:
        storage = connect(config, Retrier(config.db_retry_max_wait, stop=shutdown.event))
    except StorageError as exc:
        print(f"worker: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except RetryAborted:
        return 0
    return Worker(config, storage, shutdown).run()
