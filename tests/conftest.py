"""Fixtures: a throwaway PostgreSQL cluster started by the tests, and the embedded SQLite default.

The cluster runs as the unprivileged ``postgres`` user when the tests run as root (``initdb`` refuses
root), listens on 127.0.0.1 with password authentication, and every test gets its own database.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from tests.pg import PostgresCluster

os.environ.setdefault("MUJOCO_GL", "egl")  # as the worker sets it: rollout videos render headless

if TYPE_CHECKING:
    from worker.loop import Worker
    from worker.trial_runner import Trainer

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster.create()
    cluster.start()
    yield cluster
    cluster.stop()
    cluster.remove()


_db_names = itertools.count()


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    name = f"t{os.getpid()}_{next(_db_names)}"
    postgres.execute(f"CREATE DATABASE {name}")
    return postgres.url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same contract on both backends: the embedded default and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def tiny_space(tmp_path: Path) -> Path:
    """A PPO space small enough to train in a second on Pendulum-v1."""
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "n_steps: {low: 64, high: 128}\nbatch_size: {low: 32, high: 64}\nn_epochs: {low: 1, high: 2}\nnet_arch: tiny\n"
    )
    return path


def create_tiny_study(url: str, name: str, space: Path, n_trials: int, timesteps: int, *extra: str) -> None:
    """A PPO study on Pendulum-v1, created through study_admin's own entry point (no confirmation unless
    ``--confirm`` is among ``extra``), evaluated twice on two episodes unless ``extra`` says otherwise (the
    defaults, ten evaluations of ten episodes, would cost 80 times the 256 env-steps a tiny trial trains), and
    not warm-started from the database's other studies unless ``extra`` asks."""
    from study_admin.cli import main as admin

    settings = [] if "--confirm" in extra else ["--no-confirm"]
    if "--eval-every" not in extra and "--n-evaluations" not in extra:
        settings += ["--n-evaluations", "2"]
    if "--eval-episodes" not in extra:
        settings += ["--eval-episodes", "2"]
    if "--warm-start" not in extra:  # each test's studies stand alone unless it says otherwise
        settings += ["--warm-start", "off"]
    argv = ["create", "--storage", url, "--name", name, "--algo", "ppo", "--env", "Pendulum-v1",
            "--n-trials", str(n_trials), "--timesteps", str(timesteps), "--space", str(space), *settings,
            *extra]  # fmt: skip
    assert admin(argv) == 0


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a console script of this project (``study_admin`` or ``worker``) as a user would."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TUNER_DATA_DIR")}
    full_env.update(env or {})
    return subprocess.run(
        [str(VENV_BIN / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        env=full_env,
        input=stdin,
        timeout=timeout,
        cwd=REPO,
    )


def run_admin(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``study_admin ARGS`` run in this process as :func:`run_cli` runs it in a new one: the same environment,
    directory and input, its exit status and output, an uncaught exception failing the test as a traceback would
    fail it there. A new process costs about a second of imports; the suite runs study_admin hundreds of times.
    ``timeout`` is :func:`run_cli`'s signature only. Tests of the console script itself use :func:`run_cli`."""
    import gc
    import io
    from contextlib import chdir, redirect_stderr, redirect_stdout
    from unittest import mock

    from study_admin.cli import main

    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TUNER_DATA_DIR")}
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, {**environment, **(env or {})}, clear=True), mock.patch("sys.stdin",
            io.StringIO(stdin or "")), redirect_stdout(out), redirect_stderr(err), chdir(REPO):  # fmt: skip
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    gc.collect()  # close the connections the command left in its pools, as its process's exit would
    return subprocess.CompletedProcess(["study_admin", *args], code, out.getvalue(), err.getvalue())


def start_worker(url: str, *args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, "DATABASE_URL": url, **(env or {})}
    handle = open(log, "wb")  # noqa: SIM115 - closed when the process is reaped by the test
    return subprocess.Popen([str(VENV_BIN / "worker"), *args], stdout=handle, stderr=subprocess.STDOUT, env=full_env)


def snapshot(url: str) -> dict[str, list[tuple]]:
    """Every row of every table, to prove a failed command wrote nothing."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = sqlalchemy.inspect(conn).get_table_names()
            return {
                t: sorted(map(tuple, conn.execute(sqlalchemy.text(f"SELECT * FROM {t}"))), key=repr) for t in tables
            }
    finally:
        engine.dispose()


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.5, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def trials_of(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials()


def running_by_pid(url: str, name: str) -> dict[int, int]:
    """Worker pid -> number of the trial it is running."""
    return {
        int(t.user_attrs["worker"].rsplit(":", 1)[1]): t.number
        for t in trials_of(url, name)
        if t.state == TrialState.RUNNING and "worker" in t.user_attrs
    }


def assert_budget_accounted(url: str, name: str, budget: int) -> list[optuna.trial.FrozenTrial]:
    """Nothing left to run, and every slot ended once: retried trials aside, exactly ``budget`` trials,
    each complete, pruned or failed for good (never a failure meant for a retry that did not happen)."""
    from study_contract.store.storage import open_storage
    from study_contract.store.study_view import load_study

    summary = load_study(open_storage(url), name).summary
    assert (summary.running, summary.waiting) == (0, 0), summary
    assert not summary.lost, f"{summary.lost} failed trial(s) meant to be retried, never retried"
    assert summary.done == budget, (summary.done, budget)
    return trials_of(url, name)


def run_worker_in_process(url: str, *, train: Trainer | None = None, **overrides: Any) -> Worker:
    """A worker loop in this process (the test's registered envs and fakes apply), run until idle; ``train``
    stands in for SB3 training."""
    from worker.config import WorkerConfig
    from worker.db import Retrier
    from worker.loop import Worker, connect
    from worker.shutdown import ShutdownFlag
    from worker.trial_runner import train_with_sb3

    settings: dict[str, Any] = {
        "storage": url,
        "until_idle": True,
        "poll_interval": 0.2,
        "heartbeat_interval": 1,
        "grace_period": 10,
    }
    config = WorkerConfig(**{**settings, **overrides})
    shutdown = ShutdownFlag()
    storage = connect(config, Retrier(max_wait=1, deadline=30, stop=shutdown.event))
    worker = Worker(config, storage, shutdown, train=train or train_with_sb3)
    worker.run()
    return worker
