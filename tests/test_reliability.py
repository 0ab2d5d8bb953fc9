"""Workers killed, stopped and cut off from the database; diverging training."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from study_admin.cli import main as admin
from tests.conftest import (
    PostgresCluster,
    assert_budget_accounted,
    create_tiny_study,
    run_admin,
    run_worker_in_process,
    running_by_pid,
    start_worker,
    trials_of,
    wait_for,
)
from tests.envs import NAN_PENDULUM

pytestmark = pytest.mark.slow


def create(url: str, space: Path, name: str, n_trials: int, timesteps: int, *extra: str) -> None:
    create_tiny_study(url, name, space, n_trials, timesteps, "--n-evaluations", "4", "--eval-episodes", "1",
                      "--pruner", "none", *extra)  # fmt: skip


def test_sigkilled_workers_trials_are_retried_and_the_budget_met(
    storage_url: str, tiny_space: Path, tmp_path: Path
) -> None:
    create(storage_url, tiny_space, "killed", n_trials=8, timesteps=6000)
    fast = ["--until-idle", "--poll-interval", "0.5", "--heartbeat-interval", "1", "--grace-period", "4"]
    workers = {}
    for i in range(4):
        process = start_worker(storage_url, *fast, log=tmp_path / f"w{i}.log")
        workers[process.pid] = process
    running = wait_for(lambda: len(r := running_by_pid(storage_url, "killed")) >= 2 and r, 120, what="two training")
    assert running
    victims = dict(list(running.items())[:2])
    killed_at = time.monotonic()
    for pid in victims:
        workers[pid].send_signal(signal.SIGKILL)
        workers[pid].wait()

    def retried_numbers() -> set[int]:
        return {
            t.system_attrs["failed_trial"] for t in trials_of(storage_url, "killed") if "failed_trial" in t.system_attrs
        }

    wait_for(lambda: set(victims.values()) <= retried_numbers(), 60, what="stale trials retried")
    detected_after = time.monotonic() - killed_at
    for pid, process in workers.items():
        if pid not in victims:
            assert process.wait(timeout=300) == 0
    trials = assert_budget_accounted(storage_url, "killed", 8)
    by_number = {t.number: t for t in trials}
    for number in victims.values():
        assert by_number[number].state == TrialState.FAIL
        retry = next(t for t in trials if t.system_attrs.get("failed_trial") == number)
        assert retry.state == TrialState.COMPLETE
        assert retry.params == by_number[number].params
        assert retry.user_attrs["seed"] == by_number[number].user_attrs["seed"]
    print(
        f"\nSIGKILL ({storage_url.split(':')[0]}): 2 trials retried; "
        f"stale detected {detected_after:.1f} s after the kill (grace 4 s)"
    )


def test_sigterm_hands_the_trial_back_and_exits_zero_in_time(pg_url: str, tiny_space: Path, tmp_path: Path) -> None:
    create(pg_url, tiny_space, "drained", 1, 2_000_000, "--no-baseline")
    worker = start_worker(
        pg_url, "--drain-seconds", "5", "--heartbeat-interval", "1", "--grace-period", "4", log=tmp_path / "w.log"
    )
    wait_for(lambda: running_by_pid(pg_url, "drained").get(worker.pid) is not None, 120, what="training")
    time.sleep(2)
    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    drained = time.monotonic() - signalled
    assert drained < 5  # --drain-seconds
    trials = trials_of(pg_url, "drained")
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["handed_back"] == "worker shut down"
    assert trials[1].state == TrialState.WAITING and trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].params == trials[0].params
    log = (tmp_path / "w.log").read_text()
    assert "-> hand back" in log and "drained in" in log
    print(f"\nSIGTERM: trial handed back, worker exited 0 after {drained:.2f} s")


def test_sigterm_finishes_a_short_trial_and_a_second_signal_exits_at_once(
    pg_url: str, tiny_space: Path, tmp_path: Path
) -> None:
    create(pg_url, tiny_space, "second", 1, 400_000, "--no-baseline")
    worker = start_worker(pg_url, "--drain-seconds", "3600", log=tmp_path / "w.log")
    wait_for(lambda: running_by_pid(pg_url, "second").get(worker.pid) is not None, 120, what="training")
    worker.send_signal(signal.SIGTERM)
    wait_for(lambda: "-> finish" in (tmp_path / "w.log").read_text(), 30, what="the drain decision")
    second = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 128 + signal.SIGTERM
    assert time.monotonic() - second < 3


def test_workers_survive_a_database_restart(
    postgres: PostgresCluster, pg_url: str, tiny_space: Path, tmp_path: Path
) -> None:
    create(pg_url, tiny_space, "outage", n_trials=4, timesteps=6000)
    workers = [
        start_worker(
            pg_url,
            "--until-idle",
            "--poll-interval",
            "0.5",
            "--heartbeat-interval",
            "1",
            "--grace-period",
            "60",
            log=tmp_path / f"w{i}.log",
        )
        for i in range(2)
    ]
    wait_for(lambda: len(running_by_pid(pg_url, "outage")) == 2, 120, what="both training")
    postgres.stop()
    time.sleep(8)  # longer than the first retry (1 s) and the second (2 s)
    postgres.start()
    for w in workers:
        assert w.wait(timeout=300) == 0
    logs = "".join((tmp_path / f"w{i}.log").read_text() for i in range(2))
    assert "database unavailable" in logs or "heartbeat of trial" in logs
    trials = assert_budget_accounted(pg_url, "outage", 4)
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_diverging_training_fails_with_a_reason_and_the_worker_goes_on(pg_url: str, tmp_path: Path) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text("n_steps: 64\nbatch_size: 32\nn_epochs: 1\nnet_arch: tiny\n")
    for name, env in (("diverge", NAN_PENDULUM), ("healthy", "Pendulum-v1")):
        argv = ["create", "--storage", pg_url, "--name", name, "--algo", "ppo", "--env", env, "--n-trials", "2",
                "--timesteps", "256", "--eval-every", "128", "--eval-episodes", "1", "--space", str(space),
                "--no-baseline", "--no-confirm"]  # fmt: skip
        assert admin(argv) == 0
    worker = run_worker_in_process(pg_url)
    for t in trials_of(pg_url, "diverge"):
        assert t.state == TrialState.FAIL
        assert t.user_attrs["fail_reason"].startswith("DivergedError: training diverged: non-finite rewards at step 51")
    assert [t.state for t in trials_of(pg_url, "healthy")] == [TrialState.COMPLETE] * 2
    assert sorted(worker.outcomes) == ["complete", "complete", "failed", "failed"]
    shown = json.loads(run_admin("show", "diverge", "--storage", pg_url, "--format", "json").stdout)
    assert shown["summary"]["failed"] == 2 and shown["failures"][0]["fail_reason"].startswith("DivergedError")


def test_workers_starting_together_on_an_empty_database_create_the_schema_once(pg_url: str, tmp_path: Path) -> None:
    workers = [
        start_worker(pg_url, "--until-idle", "--poll-interval", "0.5", log=tmp_path / f"w{i}.log") for i in range(4)
    ]
    for i, w in enumerate(workers):
        assert w.wait(timeout=120) == 0, (tmp_path / f"w{i}.log").read_text()[-2000:]
    listed = run_admin("list", "--storage", pg_url)
    assert listed.returncode == 0 and "no studies" in listed.stdout
