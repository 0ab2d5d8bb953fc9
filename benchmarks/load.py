"""What the size of a study and of a database costs: per-trial overhead of a worker, list/show/dashboard latency and
memory, for studies of growing budgets and a database of many studies; prints numbers, asserts nothing.

python benchmarks/load.py [--sizes 100 10000 100000] [--trials 20] [--studies 1000] [--postgres]

Per study size N (a fresh PPO study of N WAITING trials, each size in a process of its own so that memory figures
compare): a worker loop in that process runs ``--trials`` trials with
training replaced by its database work (five evaluations reported, each with a pruning check, the best-so-far
check that decides whether a model is kept, and the result told), timing each trial from claim to finish and
reading this process's memory after each; then ``study_admin list`` and ``show`` run as a user runs them (wall
seconds and peak memory), and the dashboard's study list and the study's page are requested in process. Then
the same for a database of ``--studies`` studies. ``--postgres`` runs on a throwaway PostgreSQL cluster (as the
tests start one) instead of the embedded SQLite file.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))


def rss_mb() -> float:
    """This process's resident memory now."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def database_work_only(session: Any, trial: Any, params: dict[str, Any], seed: int) -> Any:
    """A trainer that does all of a trial's database work and no training."""
    from optuna.trial import TrialState

    from worker.outcomes import Outcome, TrainingResult

    definition = session.definition
    curve = []
    for index in range(1, 6):
        step = index * max(definition.timesteps // 5, 1)
        value = -100.0 + seed % 97 + index
        curve.append([step, value])
        session.guarded("reporting", lambda v=value, s=step: trial.report(v, step=s))
        session.guarded("pruning check", trial.should_prune)
    complete = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))  # the best-so-far check
    max((t.value for t in complete if t.value is not None), default=None)
    return TrainingResult(Outcome.COMPLETE, curve[-1][1], definition.timesteps, 0.0, 0.0, curve)


def timed_command(*args: str, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak memory (MB) of one command, run as a user runs it."""
    result = subprocess.run(["/usr/bin/time", "-f", "%e %M", str(BIN / args[0]), *args[1:]], env=env,
                            capture_output=True, text=True, check=True)  # fmt: skip
    seconds, kilobytes = result.stderr.strip().splitlines()[-1].split()
    return float(seconds), int(kilobytes) / 1024


def dashboard_seconds(url: str, path: str) -> float:
    from wsgiref.util import setup_testing_defaults

    from study_admin.dashboard import make_app

    app = make_app(url, None)
    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO()
    started = time.perf_counter()
    b"".join(app(environ, lambda status, headers, exc_info=None: None))
    return time.perf_counter() - started


def create(url: str, name: str, n_trials: int, env: dict[str, str]) -> None:
    subprocess.run([str(BIN / "study_admin"), "create", "--storage", url, "--name", name, "--algo", "ppo", "--env",
                    "Pendulum-v1", "--n-trials", str(n_trials), "--timesteps", "1000", "--no-confirm"], env=env,
                   check=True, capture_output=True)  # fmt: skip


def create_many(url: str, studies: int) -> None:
    """``studies`` studies of 10 trials, written in this process (a command each would take a second each)."""
    from study_admin.commands import build_definition
    from study_contract.engine.creation import create_study
    from study_contract.store.storage import open_storage

    storage = open_storage(url)
    definition = build_definition({"algo": "ppo", "env_id": "Pendulum-v1", "n_trials": 10, "timesteps": 1000,
                                   "confirm": False})  # fmt: skip
    for n in range(studies):
        create_study(storage, definition, f"s{n}")
    storage.engine.dispose()


def worker_trials(url: str, trials: int) -> tuple[list[float], list[float]]:
    """Seconds per trial (claim to finish) and memory after each, for ``trials`` trials of a worker in this process."""
    from worker.config import WorkerConfig
    from worker.db import Retrier
    from worker.loop import Worker, connect
    from worker.shutdown import ShutdownFlag

    config = WorkerConfig(storage=url, heartbeat_interval=30, grace_period=120, poll_interval=0.1)
    shutdown = ShutdownFlag()
    storage = connect(config, Retrier(max_wait=1, deadline=30, stop=shutdown.event))
    loop = Worker(config, storage, shutdown, train=database_work_only)
    seconds, memory = [], []
    for _ in range(trials):
        started = time.perf_counter()
        assert loop.run_once()
        seconds.append(time.perf_counter() - started)
        memory.append(rss_mb())
    loop.storage.engine.dispose()
    return seconds, memory


def report(label: str, url: str, name: str, trials: int, env: dict[str, str]) -> None:
    from study_contract.store.storage import open_storage

    seconds, memory = worker_trials(url, trials)
    list_s, list_mb = timed_command("study_admin", "list", "--storage", url, env=env)
    show_s, show_mb = timed_command("study_admin", "show", name, "--storage", url, env=env)
    study_id = open_storage(url).get_study_id_from_name(name)
    studies_s = dashboard_seconds(url, "/api/studies")
    page_s = dashboard_seconds(url, f"/api/studies/{study_id}")
    print(f"{label}: per trial {statistics.median(seconds):.3f} s median, {max(seconds):.3f} s max; worker memory "
          f"{memory[0]:.0f} -> {memory[-1]:.0f} MB over {trials} trials; list {list_s:.2f} s {list_mb:.0f} MB; show "
          f"{show_s:.2f} s {show_mb:.0f} MB; dashboard: studies {studies_s:.2f} s, study page {page_s:.2f} s",
          flush=True)  # fmt: skip


def measure(url: str, size: int, trials: int, studies: int, env: dict[str, str]) -> None:
    """One line of figures for one database: a study of ``size`` trials, or (``size`` 0) ``studies`` small ones."""
    started = time.perf_counter()
    if size:
        create(url, "big", size, env)
        report(f"a study of {size} trials (created in {time.perf_counter() - started:.1f} s)", url, "big", trials, env)
    else:
        create_many(url, studies)
        label = f"{studies} studies of 10 trials (created in {time.perf_counter() - started:.0f} s)"
        report(label, url, f"s{studies - 1}", trials, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000, 100_000])
    parser.add_argument("--trials", type=int, default=20, help="trials the worker runs per study size")
    parser.add_argument("--studies", type=int, default=1000, help="studies in the many-studies database")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL cluster instead of SQLite")
    parser.add_argument("--url", help=argparse.SUPPRESS)  # one measurement, in a process of its own
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import logging
    import os

    logging.basicConfig(level=logging.WARNING)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TUNER_DATA_DIR")}
    if args.url:
        measure(args.url, args.size, args.trials, args.studies, env)
        return
    cluster = None
    if args.postgres:
        from tests.pg import PostgresCluster

        cluster = PostgresCluster.create()
        cluster.start()
    try:
        with tempfile.TemporaryDirectory(prefix="load-") as work:
            for index, size in enumerate([*args.sizes, 0]):
                if cluster is not None:
                    cluster.execute(f"CREATE DATABASE load{index}")
                    url = cluster.url(f"load{index}")
                else:
                    url = f"sqlite:///{Path(work) / f'load{index}.sqlite3'}"
                subprocess.run([sys.executable, __file__, "--url", url, "--size", str(size), "--trials",
                                str(args.trials), "--studies", str(args.studies)], check=True)  # fmt: skip
    finally:
        if cluster is not None:
            cluster.stop()
            cluster.remove()


if __name__ == "__main__":
    main()
