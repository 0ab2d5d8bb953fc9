"""The guide's four steps as one campaign, carried out by the fleet with no admin action."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from study_contract.campaign import RULES
from study_contract.definition import StudyDefinition
from study_contract.engine.confirmation import StudyBusy
from study_contract.engine.creation import study_exists
from study_contract.engine.stages import advance, decide, stage_outcome
from study_contract.store.storage import open_storage
from study_contract.store.study_view import load_study
from tests.conftest import assert_budget_accounted, run_admin, run_worker_in_process, start_worker, trials_of

pytestmark = pytest.mark.slow
STAGES = ["1-baseline", "2-coarse", "3-schedule", "4-finetune"]
FAST = ["--until-idle", "--poll-interval", "0.3", "--heartbeat-interval", "1", "--grace-period", "3"]


def _create(url: str, name: str, *extra: str) -> None:
    created = run_admin("campaign", "create", "--storage", url, "--name", name, "--algo", "ppo", "--env",
                      "Pendulum-v1", "--timesteps", "512", "--n-evaluations", "2", "--eval-episodes", "1",
                      "--trials-per-stage", "2", "--confirm-top", "1", "--test-seeds", "2", *extra)  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == f"{name}:1-baseline"


def _definition(url: str, name: str) -> StudyDefinition:
    storage = open_storage(url)
    return StudyDefinition.from_json(storage.get_study_user_attrs(storage.get_study_id_from_name(name))["definition"])


def test_a_campaign_runs_its_four_stages_and_confirmation_unattended(storage_url: str, tmp_path: Path) -> None:
    _create(storage_url, "ladder")
    workers = [start_worker(storage_url, *FAST, log=tmp_path / f"w{i}.log") for i in range(2)]
    for worker in workers:
        assert worker.wait(timeout=900) == 0
    for stage in STAGES:
        assert_budget_accounted(storage_url, f"ladder:{stage}", 2)
    assert_budget_accounted(storage_url, "ladder:4-finetune:confirm", 4)  # (winner + baseline) x 2 test seeds

    storage = open_storage(storage_url)
    winners = {}
    for stage in STAGES:
        outcome = stage_outcome(storage, f"ladder:{stage}")
        assert outcome is not None, stage
        winners[stage] = outcome
    baseline = _definition(storage_url, "ladder:1-baseline")
    assert all(spec.fixed for spec in baseline.space.values())  # SB3's defaults on several seeds
    coarse = _definition(storage_url, "ladder:2-coarse")
    assert coarse.timesteps == 128 and coarse.pruner == "hyperband"  # a quarter of the timesteps
    assert {n for n, s in coarse.space.items() if not s.fixed} <= set(RULES["coarse"].searched("ppo"))
    schedule = _definition(storage_url, "ladder:3-schedule")
    coarse_winner = winners["2-coarse"].params
    lr = schedule.space["learning_rate"]
    assert (lr.low, lr.high) == pytest.approx((coarse_winner["learning_rate"] / 2, coarse_winner["learning_rate"] * 2))
    assert schedule.space["lr_schedule"].choices == ("constant", "linear", "cosine")
    assert schedule.space["n_steps"].fixed and schedule.space["n_steps"].value == coarse_winner["n_steps"]
    finetune = _definition(storage_url, "ladder:4-finetune")
    schedule_winner = winners["3-schedule"].params
    epochs = finetune.space["n_epochs"]
    assert (epochs.low, epochs.high) == (schedule_winner["n_epochs"] // 2, schedule_winner["n_epochs"] * 2)
    assert finetune.space["learning_rate"].fixed and finetune.space["learning_rate"].value == schedule_winner[
        "learning_rate"]  # fmt: skip
    for stage in STAGES[1:]:  # each stage re-runs the winner so far first
        first = trials_of(storage_url, f"ladder:{stage}")[0]
        assert first.user_attrs["previous_winner"] is True

    shown = json.loads(run_admin("campaign", "show", "ladder", "--storage", storage_url, "--format",
                               "json").stdout)  # fmt: skip
    assert [s["stage"] for s in shown["stages"]] == ["baseline", "coarse", "schedule", "finetune"]
    assert all(s["state"] == "finished" and s["env_steps"] > 0 for s in shown["stages"])
    assert set(shown["stages"][2]["fixed"]) >= {"n_steps", "batch_size"}
    confirmed = shown["confirmation"]
    assert confirmed["confirmed"] is True
    assert (shown["winner"]["study"], shown["winner"]["trial"]) == ("ladder:4-finetune", confirmed["winner"])
    best = next(c for c in confirmed["candidates"] if c["trial"] == confirmed["winner"])
    assert shown["winner"]["value"] == best["iqm"]
    assert shown["winner"]["improvement_over_baseline"] == pytest.approx(best["iqm"] - confirmed["baseline"]["iqm"])
    table = run_admin("campaign", "show", "ladder", "--storage", storage_url).stdout
    assert "fresh-seed IQM" in table and "confirmation  ladder:4-finetune:confirm" in table
    listed = run_admin("campaign", "list", "--storage", storage_url).stdout
    assert "ladder" in listed and "finetune" in listed


def test_a_stage_that_does_not_improve_keeps_the_previous_winner(pg_url: str) -> None:
    _create(pg_url, "flat", "--no-confirm")
    run_worker_in_process(pg_url, study="flat:1-baseline")  # runs the baseline, then creates the coarse stage
    storage = open_storage(pg_url)
    study = optuna.load_study(study_name="flat:2-coarse", storage=storage)
    rerun, other = study.get_trials(deepcopy=False)
    for trial, value in ((rerun, -100.0), (other, -200.0)):  # the previous winner's re-run stays best
        storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING)
        storage.set_trial_user_attr(trial._trial_id, "hyperparams", {"learning_rate": 1e-3 if value < -150 else 3e-4})
        storage.set_trial_state_values(trial._trial_id, state=TrialState.COMPLETE, values=[value])
    outcome = decide(storage, load_study(storage, "flat:2-coarse"))
    previous = stage_outcome(storage, "flat:1-baseline")
    assert outcome.kept_previous is True and previous is not None
    assert (outcome.winner_study, outcome.params) == (previous.winner_study, previous.params)
    assert outcome.reason == "no trial of flat:2-coarse beat the previous winner (its re-run here scored -100.00)"


def test_a_stage_owing_a_retry_does_not_advance_until_it_is_run(pg_url: str) -> None:
    _create(pg_url, "owed", "--no-confirm")
    run_worker_in_process(pg_url, study="owed:1-baseline", max_trials=1)
    storage = open_storage(pg_url)
    lost = trials_of(pg_url, "owed:1-baseline")[1]  # its worker died between failing it and queueing the retry
    storage.set_trial_state_values(lost._trial_id, state=TrialState.RUNNING)
    storage.set_trial_user_attr(lost._trial_id, "retry", True)
    storage.set_trial_state_values(lost._trial_id, state=TrialState.FAIL)
    with pytest.raises(StudyBusy, match="stage 'owed:1-baseline' still has 1 trial"):
        advance(storage, "owed:1-baseline")
    assert not study_exists(storage, "owed:2-coarse")

    run_worker_in_process(pg_url, study="owed:1-baseline")  # restores the slot, runs it, then advances
    assert_budget_accounted(pg_url, "owed:1-baseline", 2)
    assert study_exists(storage, "owed:2-coarse")


def test_a_kill_while_advancing_leaves_exactly_one_next_stage(pg_url: str, tmp_path: Path) -> None:
    _create(pg_url, "once", "--no-confirm")
    for point in ("follow-up", "followed-up"):  # killed before, then right after, creating the next stage
        victim = start_worker(pg_url, *FAST, "--study", "once:1-baseline", log=tmp_path / f"{point}.log",
                              env={"WORKER_CRASH_AT": point})  # fmt: skip
        assert victim.wait(timeout=300) == -signal.SIGKILL
    storage = open_storage(pg_url)
    half = optuna.create_study(study_name="once:3-schedule", storage=storage)  # a creator killed half-way
    half.add_trial(optuna.trial.create_trial(state=TrialState.WAITING))
    run_worker_in_process(pg_url, study="once")
    names = [s.study_name for s in optuna.get_all_study_summaries(pg_url)]
    assert sorted(names) == [f"once:{stage}" for stage in STAGES]
    assert all(len(trials_of(pg_url, f"once:{stage}")) == 2 for stage in STAGES)


def test_bad_stage_overrides_are_refused_at_create(pg_url: str, tmp_path: Path) -> None:
    wide = tmp_path / "wide.yaml"
    wide.write_text("learning_rat: 0.1\n")
    cases = [
        (["--stage", "polish:trials=3"], "unknown campaign stages ['polish']"),
        (["--stage", "coarse:fidelity=2"], "stage coarse: fidelity=2.0 must be in (0, 1]"),
        (["--stage", "coarse:speed=2"], "give STAGE:trials=N, STAGE:fidelity=F or STAGE:space=FILE"),
        (["--stage", f"finetune:space={wide}"], "campaign stage finetune: unknown ppo parameter 'learning_rat'"),
    ]
    for extra, message in cases:
        result = run_admin("campaign", "create", "--storage", pg_url, "--algo", "ppo", "--env",
                         "Pendulum-v1", "--timesteps", "512", *extra)  # fmt: skip
        assert result.returncode == 2 and message in result.stderr, (extra, result.stderr)
    assert run_admin("list", "--storage", pg_url).stdout.startswith("no studies")
