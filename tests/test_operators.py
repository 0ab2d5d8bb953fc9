"""What operators see: progress lines while a trial trains, ``show`` and ``list`` with progress and ETA."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml
from optuna.trial import TrialState

from study_contract.formatting import format_duration
from study_contract.store.catalog import Eta
from study_contract.store.storage import open_storage
from tests.conftest import create_tiny_study, run_admin, start_worker

ESCAPE = re.compile(r"\x1b\[")


def test_progress_lines_appear_while_a_trial_trains(pg_url: str, tiny_space: Path, tmp_path: Path) -> None:
    create_tiny_study(pg_url, "watched", tiny_space, 1, 4096, "--no-baseline", "--n-evaluations", "2",
                      "--eval-episodes", "1")  # fmt: skip
    worker = start_worker(pg_url, "--until-idle", "--poll-interval", "0.3", "--progress-interval", "0.5",
                          log=tmp_path / "w.log")  # fmt: skip
    assert worker.wait(timeout=300) == 0
    lines = [line for line in (tmp_path / "w.log").read_text().splitlines() if "callbacks: progress " in line]
    pattern = re.compile(
        r"INFO worker\[\d+\] worker\.callbacks: progress study=watched trial=0 env_steps=(\d+)/4096 \(\d+%\) "
        r"steps_per_s=[\d.]+ last_eval=(-?[\d.]+|-) eta=\S+$"
    )
    matches = [pattern.search(line) for line in lines]
    assert lines and all(matches), lines
    steps = [int(m.group(1)) for m in matches if m]
    assert steps == sorted(steps) and steps[-1] == 4096
    assert len(lines) >= 3  # one per evaluation (2) plus the timed ones, plus the last
    progress = optuna.load_study(study_name="watched", storage=pg_url).trials[0].user_attrs["progress"]
    assert progress["env_steps"] == 4096 and progress["steps_per_second"] > 0


def _set_times(url: str, trial_id: int, start: datetime, complete: datetime | None) -> None:
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text("UPDATE trials SET datetime_start = :s, datetime_complete = :c WHERE trial_id = :t"),
            {"s": start, "c": complete, "t": trial_id},
        )
    engine.dispose()


@pytest.fixture
def busy_study(storage_url: str, tiny_space: Path) -> str:
    """10 trials: 2 complete (60 s, 120 s), 1 pruned (30 s), 1 failed, 2 running on two workers, 4 waiting."""
    create_tiny_study(storage_url, "busy", tiny_space, 10, 10_000, "--no-baseline")
    storage = open_storage(storage_url)
    study_id = storage.get_study_id_from_name("busy")
    ids = [storage.get_trial_id_from_study_id_trial_number(study_id, n) for n in range(10)]
    base = datetime(2026, 1, 1, 12, 0, 0)
    for n, (state, seconds, value) in enumerate(
        [(TrialState.COMPLETE, 60, -150.0), (TrialState.COMPLETE, 120, -120.5), (TrialState.PRUNED, 30, None)]
    ):
        storage.set_trial_state_values(ids[n], state=TrialState.RUNNING)
        storage.set_trial_user_attr(ids[n], "hyperparams", {"learning_rate": 1e-3 * (n + 1), "n_steps": 64})
        storage.set_trial_user_attr(ids[n], "seed", n)
        storage.set_trial_user_attr(ids[n], "wall_seconds", float(seconds))
        storage.set_trial_state_values(ids[n], state=state, values=None if value is None else [value])
        _set_times(storage_url, ids[n], base, base + timedelta(seconds=seconds))
    storage.set_trial_state_values(ids[3], state=TrialState.RUNNING)
    storage.set_trial_user_attr(ids[3], "fail_reason", "DivergedError: training diverged")
    storage.set_trial_user_attr(ids[3], "retry", False)
    storage.set_trial_state_values(ids[3], state=TrialState.FAIL)
    for n, (worker, steps, rate) in ((4, ("host-a:1", 4000, 100.0)), (5, ("host-b:2", 9000, 50.0))):
        storage.set_trial_state_values(ids[n], state=TrialState.RUNNING)
        storage.set_trial_user_attr(ids[n], "worker", worker)
        storage.set_trial_user_attr(ids[n], "progress", {"env_steps": steps, "steps_per_second": rate})
    return "busy"


# Hand-computed: one trial takes (60 + 120 + 30) / 3 = 70 s; the running ones need (10000 - 4000) / 100 = 60 s
# and (10000 - 9000) / 50 = 20 s; 4 waiting trials; 2 workers: (60 + 20 + 4 * 70) / 2 = 180 s.
EXPECTED_ETA = 180.0


def test_the_eta_is_computed_from_recorded_timings(storage_url: str, busy_study: str) -> None:
    listing = json.loads(run_admin("list", "--storage", storage_url, "--format", "json").stdout)
    (busy,) = listing
    assert busy["eta_seconds"] == pytest.approx(EXPECTED_ETA)
    assert (busy["workers"], busy["complete"], busy["pruned"], busy["failed"], busy["running"], busy["waiting"]) == (
        2, 2, 1, 1, 2, 4)  # fmt: skip
    assert busy["accounted"] == 10 and busy["mismatch"] is None
    assert Eta(trial_seconds=70.0, running_seconds_left=[60.0, 20.0], waiting=4, workers=2).seconds == EXPECTED_ETA
    assert Eta(trial_seconds=None, running_seconds_left=[None], waiting=3, workers=1).seconds is None
    assert Eta(trial_seconds=70.0, running_seconds_left=[], waiting=3, workers=0).seconds is None


def test_list_and_show_print_every_section_without_escape_codes(storage_url: str, busy_study: str) -> None:
    listed = run_admin("list", "--storage", storage_url)
    header, row = listed.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "ALGO", "ENV", "STATE", "DONE/BUDGET", "RUNNING", "WORKERS", "PRUNED", "FAILED",
                              "BEST", "COMPUTE", "ETA"]  # fmt: skip
    assert row.split() == ["busy", "ppo", "Pendulum-v1", "running", "4/10", "2", "2", "1", "1", "-120.50", "-",
                           format_duration(EXPECTED_ETA)]  # fmt: skip
    shown = run_admin("show", "busy", "--storage", storage_url).stdout
    for section in (
        "busy: PPO on Pendulum-v1, running",
        "progress  [############------------------] 4/10 done, ETA 3m with 2 workers",
        "trials    complete 2, pruned 1, failed 1, running 2, waiting 4 = 10 of budget 10",
        "best      trial 1: -120.50 (seed 1)",
        "learning_rate = 0.002",
        "top trials",
        "recent failures",
        "trial 3: DivergedError: training diverged",
    ):
        assert section in shown, section
    assert not ESCAPE.search(shown) and not ESCAPE.search(listed.stdout)


def test_machine_formats_round_trip_without_yaml_anchors(storage_url: str, busy_study: str) -> None:
    as_json = json.loads(run_admin("show", "busy", "--storage", storage_url, "--format", "json").stdout)
    text = run_admin("show", "busy", "--storage", storage_url, "--format", "yaml").stdout
    assert "&id" not in text and "*id" not in text
    assert yaml.safe_load(text) == json.loads(json.dumps(as_json))
    assert as_json["best"]["hyperparams"] == as_json["top_trials"][0]["hyperparams"]  # the same dict, twice
