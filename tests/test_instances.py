"""Instances: one configuration trained on several tasks and seeds, each run a slot any worker claims.

Most tests use a stand-in trainer whose return depends on the configuration's number, the task and the seed,
so that which configuration is best, and which is raced out, is known beforehand. One test trains real
agents with two worker processes, one of them killed in the middle of an instance.
"""

from __future__ import annotations

import json
import signal
import statistics
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from study_contract import protocol
from study_contract.engine.instances import Run, configuration_value, raced_out, scale_of
from study_contract.store.artifacts import MODEL
from study_contract.store.storage import open_storage
from study_contract.store.study_view import load_study
from tests.conftest import (
    assert_budget_accounted,
    create_tiny_study,
    run_admin,
    run_worker_in_process,
    snapshot,
    start_worker,
    trials_of,
)
from worker.outcomes import Outcome, TrainingResult
from worker.trial_session import TrialSession

TASKS = ("Pendulum-v1", "InvertedPendulum-v5")
INSTANCES = ("--env", TASKS[1], "--seeds-per-config", "2")  # with create_tiny_study's Pendulum-v1 first


def _returns(session: TrialSession, trial: optuna.Trial, params: dict[str, Any], seed: int) -> TrainingResult:
    """Configuration 0 (SB3's defaults) is the best on every instance; every later one is worse the later it came.
    Pendulum's returns are a thousand times InvertedPendulum's, so an unnormalised mean would be Pendulum's alone."""
    candidate = trial.user_attrs[protocol.CANDIDATE]
    candidate = candidate if isinstance(candidate, int) else 0  # a confirmation's baseline run
    value = (1000.0 if session.definition.env_id == TASKS[0] else 1.0) * (10.0 - candidate)
    return TrainingResult(Outcome.COMPLETE, value, 256, 1.0, 0.1, [[128.0, value]], relative_compute=1.0)


def _lucky_fourth_seed(session: TrialSession, trial: optuna.Trial, params: dict[str, Any], seed: int) -> TrainingResult:
    """As :func:`_returns`, with 100 more on each instance seed after the first, and 5,000 more on the fourth."""
    result = _returns(session, trial, params, seed)
    j = seed - session.definition.instance_seed_list[0] if session.definition.stage == "instances" else 0
    result.value = (result.value or 0.0) + 100.0 * j + (5000.0 if j == 3 else 0.0)
    return result


def _runs(task: str, values: dict[int, float], candidate: int = 0) -> list[Run]:
    return [Run(n, task, candidate, seed, TrialState.COMPLETE, v, False, False, 256, 1.0, 2.0, None) for n, (seed, v) in
            enumerate(values.items())]  # fmt: skip


def test_each_task_counts_the_same_once_normalised_and_one_task_keeps_raw_returns() -> None:
    pendulum = _runs("P", {0: -1000.0, 1: -200.0})
    balance = _runs("B", {0: 10.0, 1: 1000.0})
    scale = scale_of(pendulum + balance)
    assert [scale.normalised(r.task, r.value) for r in pendulum + balance] == [0.0, 1.0, 0.0, 1.0]  # type: ignore[arg-type]
    assert configuration_value(pendulum + balance, scale, tasks=2) == 0.5
    assert configuration_value(pendulum, scale_of(pendulum), tasks=1) == -600.0


def test_a_configuration_is_raced_out_only_when_half_its_instances_lose_to_the_best() -> None:
    best = _runs("P", {0: 10.0, 1: 10.0, 2: 10.0, 3: 10.0}, candidate=0)
    one_worse = _runs("P", {0: 5.0}, candidate=1)
    two_worse = _runs("P", {0: 5.0, 1: 5.0}, candidate=1)
    two_better = _runs("P", {0: 12.0, 1: 12.0}, candidate=1)
    scale = scale_of(best + two_worse + two_better)
    assert raced_out(two_worse, best, scale, total=4)
    assert not raced_out(one_worse, best, scale, total=4)  # a quarter of its instances is not evidence
    assert not raced_out(two_better, best, scale, total=4)
    assert not raced_out(two_worse, [], scale, total=4)  # nothing to compare with yet


def test_create_writes_one_instance_study_per_task_and_refuses_what_instances_cannot_do(
    storage_url: str, tiny_space: Path
) -> None:
    common = ["create", "--storage", storage_url, "--algo", "ppo", "--timesteps", "256", "--n-trials", "4",
              "--space", str(tiny_space), "--warm-start", "off"]  # fmt: skip
    refusals = {
        ("--env", "Pendulum-v1", "--env", "Pendulum-v1", "--no-confirm"): "name a task twice",
        ("--env", "Pendulum-v1,", "--no-confirm"): "unknown environment ''",
        ("--env", "Pendulum-v1", "--seeds-per-config", "2", "--objective", "return-and-compute"): "objective='return'",
        ("--env", "Pendulum-v1", "--seeds-per-config", "0"): r"--seeds-per-config=0 is outside the accepted range",
        ("--env", "Pendulum-v1", "--env", "Pendulum-v9", "--no-confirm"): "unknown environment 'Pendulum-v9'",
    }  # fmt: skip
    run_admin("init", "--storage", storage_url)
    before = snapshot(storage_url)
    for extra, message in refusals.items():
        refused = run_admin(*common, "--name", "bad", *extra)
        assert refused.returncode != 0 and message in refused.stderr, (extra, refused.stderr)
        assert "\n" not in refused.stderr.strip(), refused.stderr
    assert snapshot(storage_url) == before  # nothing half-written
    created = run_admin(*common, "--name", "both", "--env", "Pendulum-v1,InvertedPendulum-v5", "--env", "Hopper-v5",
                        "--seeds-per-config", "3", "--no-confirm")  # fmt: skip
    assert created.returncode == 0, created.stderr
    listed = json.loads(run_admin("list", "--storage", storage_url, "--format", "json").stdout)
    rows = {row["name"]: row for row in listed}
    assert [rows[f"both:task-{i}"]["env_id"] for i in (1, 2, 3)] == ["Pendulum-v1", "InvertedPendulum-v5", "Hopper-v5"]
    assert all(rows[f"both:task-{i}"]["n_trials"] == 4 * 3 and rows[f"both:task-{i}"]["mismatch"] is None
               for i in (1, 2, 3))  # fmt: skip
    single = run_admin(*common, "--name", "one", "--env", "Pendulum-v1", "--no-confirm")
    assert single.returncode == 0, single.stderr
    names = [row["name"] for row in json.loads(run_admin("list", "--storage", storage_url, "--format", "json").stdout)]
    assert not any(name.startswith("one:") for name in names)  # one task, one seed: a study as before


def test_a_configuration_is_valued_on_every_instance_and_losers_are_raced_out(
    storage_url: str, tiny_space: Path
) -> None:
    create_tiny_study(storage_url, "multi", tiny_space, 3, 256, *INSTANCES)
    worker = run_worker_in_process(storage_url, train=_returns)
    assert worker.outcomes.count(Outcome.QUEUED) == 3
    first, second, third = assert_budget_accounted(storage_url, "multi", 3)
    assert first.state == TrialState.COMPLETE and first.user_attrs[protocol.BASELINE] is True
    # The best on every instance: 1 on each normalised task, whatever the tasks' scales.
    assert first.value == 1.0
    assert first.user_attrs[protocol.INSTANCE_RETURNS] == {TASKS[0]: [10_000.0] * 2, TASKS[1]: [10.0] * 2}
    assert first.user_attrs[protocol.ENV_STEPS] == 4 * 256 and first.user_attrs[protocol.WALL_SECONDS] == 4 * 1.0
    for raced in (second, third):  # worse than the baseline on the first task's two seeds: the second task not run
        assert raced.state == TrialState.PRUNED and "raced out" in raced.user_attrs[protocol.PRUNED_REASON]
        assert raced.user_attrs[protocol.INSTANCE_RETURNS][TASKS[1]] == [None, None]
    pendulum = assert_budget_accounted(storage_url, "multi:task-1", 6)
    balance = assert_budget_accounted(storage_url, "multi:task-2", 6)
    assert [t.state for t in pendulum] == [TrialState.COMPLETE] * 6
    assert [t.state for t in balance] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED] * 4
    assert [t.user_attrs[protocol.SEED] for t in pendulum] == [t.user_attrs[protocol.SEED] for t in balance]
    # SB3's defaults stay the reference on every instance (the compute cap never prunes them).
    assert all(bool(t.user_attrs.get(protocol.BASELINE)) == (t.user_attrs[protocol.CANDIDATE] == 0) for t in pendulum)
    shown = run_admin("show", "--storage", storage_url, "multi")
    assert "PPO on Pendulum-v1, InvertedPendulum-v5 (2 seeds per configuration)" in shown.stdout
    assert "returns per instance" in shown.stdout and "10000.00  10000.00" in shown.stdout
    again = run_admin("reproduce", "--storage", storage_url, "multi", "--trial", "0")
    assert again.returncode == 2 and "reproduce one of them" in again.stderr, again.stderr
    zoo = yaml.safe_load(run_admin("export", "--storage", storage_url, "multi", "--format", "zoo").stdout)
    assert list(zoo) == list(TASKS) and zoo[TASKS[0]] == zoo[TASKS[1]]  # one configuration, an entry per task


def test_without_racing_every_instance_runs(storage_url: str, tiny_space: Path) -> None:
    create_tiny_study(storage_url, "all", tiny_space, 3, 256, *INSTANCES, "--no-race")
    run_worker_in_process(storage_url, train=_returns)
    configurations = assert_budget_accounted(storage_url, "all", 3)
    assert [t.state for t in configurations] == [TrialState.COMPLETE] * 3
    # Normalised per task (the worst return seen there 0, the best 1), each configuration's value is the same.
    assert [t.value for t in configurations] == [1.0, 0.5, 0.0]
    for task in (1, 2):
        assert [t.state for t in assert_budget_accounted(storage_url, f"all:task-{task}", 6)] == [
            TrialState.COMPLETE
        ] * 6


def test_one_task_with_several_seeds_takes_the_iqm_of_raw_returns_and_is_confirmed(
    storage_url: str, tiny_space: Path
) -> None:
    create_tiny_study(storage_url, "seeds", tiny_space, 2, 256, "--seeds-per-config", "4", "--no-race", "--confirm",
                      "--confirm-top", "1", "--test-seeds", "2")  # fmt: skip
    run_worker_in_process(storage_url, train=_lucky_fourth_seed)
    best, other = assert_budget_accounted(storage_url, "seeds", 2)
    assert best.user_attrs[protocol.INSTANCE_RETURNS] == {TASKS[0]: [10_000.0, 10_100.0, 10_200.0, 15_300.0]}
    assert best.value == statistics.mean([10_100.0, 10_200.0])  # the IQM of four raw returns: the lucky one is out
    assert other.value is not None and best.value is not None and other.value < best.value
    confirmation = assert_budget_accounted(storage_url, "seeds:confirm", 4)  # the winner and the baseline, 2 seeds each
    assert {t.user_attrs[protocol.CANDIDATE] for t in confirmation} == {protocol.BASELINE, other.number}


def test_a_multi_task_winner_is_confirmed_on_fresh_seeds_of_every_task(storage_url: str, tiny_space: Path) -> None:
    create_tiny_study(storage_url, "both", tiny_space, 3, 256, *INSTANCES, "--no-race", "--confirm", "--confirm-top",
                      "1", "--test-seeds", "2")  # fmt: skip
    run_worker_in_process(storage_url, train=_returns)
    runs = assert_budget_accounted(storage_url, "both:confirm", 2 * 2 * 2)  # (the pick + the baseline) x seeds x tasks
    for run in runs:  # each trained on the task its slot names
        assert run.value == (1000.0 if run.user_attrs[protocol.TASK] == TASKS[0] else 1.0) * (
            10.0 - (run.user_attrs[protocol.CANDIDATE] if run.user_attrs[protocol.CANDIDATE] != "baseline" else 0)
        )
    assert sorted(run.user_attrs[protocol.TASK] for run in runs) == sorted(TASKS * 4)
    shown = run_admin("show", "--storage", storage_url, "both").stdout
    assert "fresh-seed IQM per task" in shown and "baseline (SB3 defaults)  10000.00     10.00" in shown
    best = json.loads(run_admin("best", "--storage", storage_url, "both", "--format", "json").stdout)
    assert best["confirmed"] and best["tasks"] == list(TASKS)
    report = best["confirmation"]
    assert report["baseline"]["per_task"] == {TASKS[0]: 10_000.0, TASKS[1]: 10.0} and report["baseline"]["iqm"] == 1.0


def test_a_campaign_judges_each_stages_configurations_on_several_seeds(storage_url: str) -> None:
    created = run_admin("campaign", "create", "--storage", storage_url, "--name", "ladder", "--algo", "ppo", "--env",
                        "Pendulum-v1", "--timesteps", "512", "--n-evaluations", "2", "--eval-episodes", "1",
                        "--trials-per-stage", "2", "--confirm-top", "1", "--test-seeds", "2", "--seeds-per-config",
                        "2", "--no-race")  # fmt: skip
    assert created.returncode == 0, created.stderr
    run_worker_in_process(storage_url, train=_returns)
    for stage in ("1-baseline", "2-coarse", "3-schedule", "4-finetune"):
        configurations = assert_budget_accounted(storage_url, f"ladder:{stage}", 2)
        assert all(len(t.user_attrs[protocol.INSTANCE_RETURNS][TASKS[0]]) == 2 for t in configurations), stage
        assert_budget_accounted(storage_url, f"ladder:{stage}:task-1", 4)
    assert_budget_accounted(storage_url, "ladder:4-finetune:confirm", 4)  # (winner + baseline) x 2 test seeds
    shown = run_admin("campaign", "show", "--storage", storage_url, "ladder")
    assert shown.returncode == 0 and "ladder:1-baseline:task-1" not in shown.stdout, shown.stdout


def test_an_instance_that_fails_for_good_fails_its_configuration_and_spares_the_rest(
    storage_url: str, tiny_space: Path
) -> None:
    def failing(session: TrialSession, trial: optuna.Trial, params: dict[str, Any], seed: int) -> TrainingResult:
        if trial.user_attrs[protocol.CANDIDATE] == 1:
            raise RuntimeError("diverged")
        return _returns(session, trial, params, seed)

    create_tiny_study(storage_url, "fails", tiny_space, 2, 256, *INSTANCES)
    run_worker_in_process(storage_url, train=failing)
    _, failed = assert_budget_accounted(storage_url, "fails", 2)
    assert failed.state == TrialState.FAIL and failed.user_attrs[protocol.RETRY] is False
    runs = [t for t in trials_of(storage_url, "fails:task-1") + trials_of(storage_url, "fails:task-2")
            if t.user_attrs[protocol.CANDIDATE] == 1]  # fmt: skip
    assert sorted(t.state.name for t in runs) == ["FAIL", "PRUNED", "PRUNED", "PRUNED"]  # the first failure stops it
    assert failed.user_attrs[protocol.FAIL_REASON].startswith(f"its instance on {TASKS[0]} (seed 2000000000) failed "
                                                              "for good: RuntimeError: diverged")  # fmt: skip


def test_a_study_whose_configurations_all_fail_the_same_way_pauses(storage_url: str, tiny_space: Path) -> None:
    def broken(*_: Any) -> TrainingResult:
        raise RuntimeError("the task needs a package this worker lacks")

    create_tiny_study(storage_url, "broken", tiny_space, 6, 256, *INSTANCES, "--pause-after-failures", "2")
    run_worker_in_process(storage_url, train=broken)
    configurations = trials_of(storage_url, "broken")
    assert [t.state for t in configurations[:2]] == [TrialState.FAIL] * 2
    assert all(t.state == TrialState.WAITING for t in configurations[2:])  # not burnt: the study paused itself
    listed = {row["name"]: row for row in json.loads(run_admin("list", "--storage", storage_url, "--format",
                                                               "json").stdout)}  # fmt: skip
    assert listed["broken"]["state"] == "paused" and "lacks" in listed["broken"]["paused_reason"]


def test_a_configuration_left_unsettled_by_a_dead_worker_is_settled_by_the_next(
    storage_url: str, tiny_space: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.loop
    import worker.trial_runner

    create_tiny_study(storage_url, "left", tiny_space, 1, 256, *INSTANCES, "--no-baseline", "--no-known-good")
    with monkeypatch.context() as patched:  # as if each instance's worker died between telling it and settling
        patched.setattr(worker.trial_runner, "_settle_configuration", lambda session: None)
        patched.setattr(worker.loop, "settle", lambda storage, name: [])
        run_worker_in_process(storage_url, train=_returns, max_trials=5)
    assert trials_of(storage_url, "left")[0].state == TrialState.RUNNING
    run_worker_in_process(storage_url, train=_returns)
    (configuration,) = assert_budget_accounted(storage_url, "left", 1)
    assert configuration.state == TrialState.COMPLETE and configuration.value == 1.0
    assert configuration.user_attrs[protocol.INSTANCE_RETURNS] == {TASKS[0]: [10_000.0] * 2, TASKS[1]: [10.0] * 2}


def test_pausing_or_deleting_a_study_takes_its_instance_studies_along(storage_url: str, tiny_space: Path) -> None:
    create_tiny_study(storage_url, "family", tiny_space, 2, 256, *INSTANCES)
    assert run_admin("pause", "--storage", storage_url, "family").returncode == 0
    listed = json.loads(run_admin("list", "--storage", storage_url, "--format", "json").stdout)
    assert {row["name"]: row["state"] for row in listed} == {"family": "paused", "family:task-1": "paused",
                                                             "family:task-2": "paused"}  # fmt: skip
    assert run_admin("delete", "--storage", storage_url, "family", "--yes").returncode == 0
    assert json.loads(run_admin("list", "--storage", storage_url, "--format", "json").stdout) == []


@pytest.mark.slow
def test_two_workers_train_one_configurations_instances_at_once_and_survive_a_kill_mid_instance(
    pg_url: str, tiny_space: Path, tmp_path: Path
) -> None:
    create_tiny_study(pg_url, "fleet", tiny_space, 3, 512, *INSTANCES, "--eval-every", "256", "--eval-episodes", "1",
                      "--pruner", "none")  # fmt: skip
    fast = ["--poll-interval", "0.2", "--heartbeat-interval", "1", "--grace-period", "3"]
    artifacts = {"TUNER_ARTIFACT_DIR": str(tmp_path / "artifacts")}
    victim = start_worker(
        pg_url, *fast, log=tmp_path / "victim.log", env={"WORKER_CRASH_AT": "evaluation", **artifacts}
    )
    survivor = start_worker(pg_url, *fast, "--until-idle", log=tmp_path / "survivor.log", env=artifacts)
    assert victim.wait(timeout=180) == -signal.SIGKILL  # in the middle of an instance, at its first evaluation
    assert survivor.wait(timeout=300) == 0, (tmp_path / "survivor.log").read_text()[-3000:]
    configurations = assert_budget_accounted(pg_url, "fleet", 3)
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in configurations)
    storage = open_storage(pg_url)
    runs = [t for task in (1, 2) for t in load_study(storage, f"fleet:task-{task}").trials]
    for task in (1, 2):
        assert_budget_accounted(pg_url, f"fleet:task-{task}", 6)  # every slot once: the killed one's retry counted
    assert any(t.state == TrialState.FAIL.name and t.get(protocol.RETRY) is True for t in runs)  # the victim's, retried
    ran = [t for t in runs if t.get(protocol.WORKER) and t.started and t.completed]
    at_once = [(a, b) for a in ran for b in ran if a.get(protocol.CANDIDATE) == b.get(protocol.CANDIDATE)
               and a.get(protocol.WORKER) != b.get(protocol.WORKER)
               and a.started < b.completed and b.started < a.completed]  # type: ignore[operator]  # fmt: skip
    assert at_once, "no two instances of one configuration trained at once on two workers"
    # The recommended configuration's files: those of its best instance on the first task that kept a model.
    out = tmp_path / "download"
    downloaded = run_admin("download", "fleet", "--storage", pg_url, "--artifact-dir", str(tmp_path / "artifacts"),
                           "--out", str(out))  # fmt: skip
    assert downloaded.returncode == 0 and MODEL in {p.name for p in out.iterdir()}, downloaded.stderr
