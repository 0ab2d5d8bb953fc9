"""``worker``: run trials from the shared storage until stopped. See ``worker --help``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from worker.config import config_from
from worker.health import is_fresh

EXIT_DATABASE = 1
EXIT_CONFIG = 2


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
        return 0 if is_fresh(config.health_file, config.health_max_age) else 1

    from worker.threads import pin_threads

    pin_threads(config.threads)  # before SB3, numpy's BLAS or torch start their thread pools

    from study_contract.store.storage import StorageError
    from worker.db import DatabaseUnavailable, Retrier, RetryAborted
    from worker.loop import DatabaseRefused, Worker, connect
    from worker.shutdown import ShutdownFlag

    shutdown = ShutdownFlag()
    shutdown.install()
    retry = Retrier(max_wait=config.db_retry_max_wait, deadline=config.db_retry_deadline, stop=shutdown.event)
    try:
        worker = Worker(config, connect(config, retry), shutdown)
    except StorageError as exc:
        print(f"worker: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except DatabaseUnavailable as exc:
        print(f"worker: error: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    except RetryAborted:
        return 0
    try:
        return worker.run()
    except RetryAborted:
        logging.getLogger("worker").info("stopped while waiting for the database; exiting")
        return 0
    except (DatabaseUnavailable, DatabaseRefused) as exc:
        print(f"worker: error: {exc}", file=sys.stderr)
        return EXIT_DATABASE
