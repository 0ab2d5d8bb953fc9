"""Real worker processes training tiny agents from a shared study (slow: seconds per test)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import create_tiny_study, run_cli, start_worker

pytestmark = pytest.mark.slow

FAST_WORKER = ["--until-idle", "--poll-interval", "0.5", "--heartbeat-interval", "1", "--grace-period", "10"]


def create_pruning_study(url: str, space: Path, name: str, n_trials: int = 8) -> None:
    pruning = ["--eval-every", "128", "--eval-episodes", "1", "--sampler", "random", "--pruner", "median",
               "--pruner-startup-trials", "1", "--pruner-warmup", "0"]  # fmt: skip
    create_tiny_study(url, name, space, n_trials, 512, *pruning)


def test_two_workers_finish_a_postgresql_study_exactly(pg_url: str, tiny_space: Path, tmp_path: Path) -> None:
    create_pruning_study(pg_url, tiny_space, "shared", n_trials=10)
    workers = [start_worker(pg_url, *FAST_WORKER, log=tmp_path / f"w{i}.log") for i in range(2)]
    for w in workers:
        assert w.wait(timeout=300) == 0
    trials = optuna.load_study(study_name="shared", storage=pg_url).get_trials()
    assert len(trials) == 10
    states = [t.state for t in trials]
    assert all(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states), states
    assert TrialState.PRUNED in states
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    baseline = trials[0]
    assert baseline.user_attrs["baseline"] and baseline.user_attrs["hyperparams"]["learning_rate"] == 3e-4
    for t in trials:
        attrs = t.user_attrs
        assert attrs["seed"] == t.number and attrs["env_steps"] > 0 and attrs["train_steps_per_second"] > 0
        assert attrs["wall_seconds"] > attrs["eval_seconds"] > 0
        assert "eval_curve" not in attrs and t.intermediate_values  # the curve is stored once, as reported
        assert 32 <= attrs["hyperparams"]["batch_size"] <= attrs["hyperparams"]["n_steps"] <= 128
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert all(t.value == t.intermediate_values[max(t.intermediate_values)] for t in complete)

    listing = json.loads(run_cli("study_admin", "list", "--storage", pg_url, "--format", "json").stdout)
    assert listing[0]["state"] == "finished" and listing[0]["done"] == 10
    assert listing[0]["pruned"] == states.count(TrialState.PRUNED)


def test_two_local_workers_share_the_embedded_default(tmp_path: Path, tiny_space: Path) -> None:
    env = {"TUNER_DATA_DIR": str(tmp_path / "data")}
    created = run_cli(
        "study_admin",
        "create",
        "--algo",
        "ppo",
        "--env",
        "Pendulum-v1",
        "--n-trials",
        "6",
        "--timesteps",
        "256",
        "--n-evaluations",
        "2",
        "--eval-episodes",
        "1",
        "--space",
        str(tiny_space),
        "--no-confirm",
        env=env,
    )
    assert created.returncode == 0, created.stderr
    url = f"sqlite:///{tmp_path / 'data' / 'studies.sqlite3'}"
    workers = [start_worker(url, *FAST_WORKER, log=tmp_path / f"w{i}.log", env=env) for i in range(2)]
    for w in workers:
        assert w.wait(timeout=300) == 0
    listing = json.loads(run_cli("study_admin", "list", "--format", "json", env=env).stdout)
    assert (listing[0]["done"], listing[0]["n_trials"], listing[0]["waiting"]) == (6, 6, 0)
    trials = optuna.load_study(study_name=listing[0]["name"], storage=url).get_trials()
    assert len(trials) == 6 and len({t.user_attrs["worker"] for t in trials}) == 2
