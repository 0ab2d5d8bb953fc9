"""Workers killed, stopped and cut off from the database; diverging training; a read-only dashboard."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import PostgresCluster, create_tiny_study, free_port, run_cli, start_worker, wait_for

pytestmark = pytest.mark.slow


def create(url: str, space: Path, name: str, n_trials: int, timesteps: int, *extra: str) -> None:
    create_tiny_study(url, name, space, n_trials, timesteps, "--n-evaluations", "4", "--eval-episodes", "1",
                      "--pruner", "none", *extra)  # fmt: skip


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
    trials = trials_of(url, name)
    retried = {t.system_attrs["failed_trial"] for t in trials if "failed_trial" in t.system_attrs}
    final = [t for t in trials if t.number not in retried and "handed_back" not in t.user_attrs]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len(final) == budget
    return trials


def test_sigkilled_workers_trials_are_retried_and_the_budget_met(
    storage_url: str, tiny_space: Path, tmp_path: Path
) -> None:
    create(storage_url, tiny_space, "killed", n_trials=8, timesteps=6000)
    fast = ["--until-idle", "--poll-interval", "0.5", "--heartbeat-interval", "1", "--grace-period", "4"]
    workers = {}
    for i in range(4):
        process = start_worker(storage_url, *fast, log=tmp_path / f"w{i}.log")
        workers[process.pid] = process
    running = wait_for(
        lambda: (r := running_by_pid(storage_url, "killed")) and len(r) >= 2 and r, 120, what="two workers training"
    )
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
    space = tmp_path / "absurd.yaml"
    space.write_text("learning_rate: 100.0\nn_steps: 64\nbatch_size: 32\nn_epochs: 2\nnet_arch: tiny\n")
    create(pg_url, space, "diverge", 2, 4096, "--no-baseline")
    healthy = tmp_path / "healthy.yaml"
    healthy.write_text("n_steps: 64\nbatch_size: 32\nn_epochs: 1\nnet_arch: tiny\n")
    create(pg_url, healthy, "healthy", 1, 256, "--no-baseline")
    worker = start_worker(pg_url, "--until-idle", "--poll-interval", "0.5", log=tmp_path / "w.log")
    assert worker.wait(timeout=300) == 0
    for t in trials_of(pg_url, "diverge"):
        assert t.state == TrialState.FAIL
        assert "Expected parameter" in t.user_attrs["fail_reason"] or "nan" in t.user_attrs["fail_reason"].lower()
    assert [t.state for t in trials_of(pg_url, "healthy")] == [TrialState.COMPLETE]
    shown = json.loads(run_cli("study_admin", "show", "diverge", "--storage", pg_url, "--format", "json").stdout)
    assert shown["summary"]["failed"] == 2 and shown["failures"][0]["fail_reason"]


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_the_dashboard_role_cannot_delete_a_study(postgres: PostgresCluster, pg_url: str, tiny_space: Path) -> None:
    from optuna_dashboard import wsgi
    from optuna_dashboard._storage_url import get_storage

    create(pg_url, tiny_space, "precious", n_trials=2, timesteps=256)
    granted = run_cli(
        "study_admin",
        "init",
        "--storage",
        pg_url,
        "--dashboard-role",
        "dashboard_ro",
        env={"DASHBOARD_DB_PASSWORD": "ro-pass"},
    )
    assert granted.returncode == 0, granted.stderr
    database = pg_url.rsplit("/", 1)[1]
    read_only_url = postgres.url(database, user="dashboard_ro", password="ro-pass")
    server = make_server("127.0.0.1", free_port(), wsgi(get_storage(read_only_url)), handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        studies = json.load(urllib.request.urlopen(f"{base}/api/studies"))["study_summaries"]
        assert [s["study_name"] for s in studies] == ["precious"]
        request = urllib.request.Request(f"{base}/api/studies/{studies[0]['study_id']}", method="DELETE")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(request)
    finally:
        server.shutdown()
    assert [t.number for t in trials_of(pg_url, "precious")] == [0, 1]


def test_workers_starting_together_on_an_empty_database_create_the_schema_once(pg_url: str, tmp_path: Path) -> None:
    workers = [
        start_worker(pg_url, "--until-idle", "--poll-interval", "0.5", log=tmp_path / f"w{i}.log") for i in range(4)
    ]
    for i, w in enumerate(workers):
        assert w.wait(timeout=120) == 0, (tmp_path / f"w{i}.log").read_text()[-2000:]
    listed = run_cli("study_admin", "list", "--storage", pg_url)
    assert listed.returncode == 0 and "no studies" in listed.stdout
