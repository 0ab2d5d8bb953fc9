"""What training a configuration costs: recorded on every trial, shown beside the return, weighed when a winner
is recommended, and capped in the search when a study asks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from study_contract import protocol
from study_contract.algorithms import algorithm
from study_contract.engine.confirmation import CandidateResult, ConfirmationReport, top_candidates
from study_contract.statistics import BEST, CHEAPEST_TIED, summarise_scores
from study_contract.store.storage import open_storage
from study_contract.store.study_view import load_study
from study_contract.store.trials import views
from tests.conftest import create_tiny_study, run_admin, run_worker_in_process, trials_of

PENDULUM = (3, 1)  # observation and action sizes


def test_cost_follows_the_work_done_per_env_step() -> None:
    ppo, sac = algorithm("ppo"), algorithm("sac")
    assert ppo.relative_cost(ppo.defaults, *PENDULUM) == 1.0
    assert ppo.relative_cost({**ppo.defaults, "n_epochs": 20}, *PENDULUM) == pytest.approx(21 / 11)
    bursts = {**sac.defaults, "train_freq": 8, "gradient_steps": 8}  # the same updates per env-step, in bursts
    assert sac.cost(bursts, *PENDULUM) == sac.cost(sac.defaults, *PENDULUM)
    assert sac.relative_cost({**sac.defaults, "batch_size": 1024, "net_arch": "small"}, *PENDULUM) < 1.0
    assert sac.relative_cost({**sac.defaults, "batch_size": 1024}, *PENDULUM) == pytest.approx(4.0, rel=0.01)
    tqc = algorithm("tqc")
    assert tqc.relative_cost({**tqc.defaults, "n_quantiles": 50}, *PENDULUM) > 1.0


def _candidate(trial: int, scores: list[float], cost: float | None) -> CandidateResult:
    return CandidateResult(trial=trial, tuning_value=None, tuning_rank=trial, fresh=summarise_scores(scores),
                           failed_seeds=0, p_improvement=None, hyperparams={}, relative_compute=cost)  # fmt: skip


def _report(*candidates: CandidateResult) -> ConfirmationReport:
    ranked = sorted(candidates, key=lambda c: -(c.fresh.iqm or 0.0))
    return ConfirmationReport(study="s:confirm", done=10, budget=10, test_seeds=[], candidates=ranked,
                              baseline=summarise_scores([0.0, 1.0]), baseline_failed_seeds=0)  # fmt: skip


def test_the_cheapest_of_the_configurations_tied_with_the_best_is_recommended() -> None:
    best = _candidate(7, [9300.0, 9350.0, 9400.0, 9450.0, 9500.0], 6.1)
    tied = _candidate(3, [9320.0, 9340.0, 9350.0, 9360.0, 9380.0], 1.0)
    behind = _candidate(5, [100.0, 110.0, 120.0, 130.0, 140.0], 0.2)  # cheaper still, but far worse
    report = _report(best, tied, behind)
    assert [c.trial for c in report.tied_with_winner()] == [7, 3]
    cheapest = report.pick(CHEAPEST_TIED)
    assert cheapest is not None and (cheapest.trial, cheapest.best_trial) == (3, 7)
    assert cheapest.cost_ratio == pytest.approx(6.1)
    assert cheapest.statement.startswith("trial 3: IQM 9350.00 [") and "6.1x cheaper than trial 7" in cheapest.statement
    assert cheapest.statement.endswith("tied")
    plain = report.pick(BEST)
    assert plain is not None and plain.trial == 7 and "the best fresh-seed IQM" in plain.statement


def test_confirmation_adds_the_cheapest_strong_configuration() -> None:
    def tuned(number: int, value: float, cost: float) -> optuna.trial.FrozenTrial:
        trial = create_trial(value=value, user_attrs={protocol.HYPERPARAMS: {"n": number},
                                                      protocol.RELATIVE_COMPUTE: cost})  # fmt: skip
        trial.number = number
        return trial

    trials = [tuned(n, 100.0 - n, cost) for n, cost in enumerate([5.0, 4.0, 3.0, 0.5, 2.0, 0.1, 9.0, 9.0])]
    picks = top_candidates(views(trials), 2)
    assert [c.trial for c in picks] == [0, 1, 3]  # the top 2, then the cheapest of the best 4 (not trial 5's 0.1)
    assert [c.trial for c in top_candidates(views(trials[:2]), 2)] == [0, 1]  # positive control: nothing else to add


def _attrs(url: str, name: str) -> list[dict[str, Any]]:
    return [t.user_attrs for t in trials_of(url, name)]


def test_every_trial_records_its_cost_and_best_reports_it(storage_url: str, tiny_space: Path) -> None:
    create_tiny_study(storage_url, "priced", tiny_space, 2, 256, "--confirm", "--confirm-top", "1", "--test-seeds", "2")
    run_worker_in_process(storage_url)
    ppo = algorithm("ppo")
    for attrs in _attrs(storage_url, "priced"):
        expected = ppo.relative_cost(attrs[protocol.HYPERPARAMS], *PENDULUM)
        assert attrs[protocol.RELATIVE_COMPUTE] == pytest.approx(expected, abs=1e-3)
        assert attrs[protocol.SECONDS_PER_KSTEP] > 0 and attrs[protocol.COMPUTE_PER_STEP] > 0
    best = json.loads(run_admin("best", "priced", "--format", "json", "--storage", storage_url).stdout)
    assert best["pick"]["rule"] == CHEAPEST_TIED and best["confirmed"] is True
    assert best["cost"]["relative_compute"] > 0 and best["cost"]["seconds_per_kstep"] > 0
    strict = run_admin("best", "priced", "--pick", "best", "--format", "json", "--storage", storage_url)
    assert json.loads(strict.stdout)["pick"]["rule"] == BEST
    shown = run_admin("show", "priced", "--storage", storage_url).stdout
    assert "the defaults' training compute" in shown and "COMPUTE" in shown
    best_trial = load_study(open_storage(storage_url), "priced").best
    assert best_trial is not None
    row = next(line for line in run_admin("list", "--storage", storage_url).stdout.splitlines()
               if line.startswith("priced "))  # fmt: skip
    assert f"{best_trial.get(protocol.RELATIVE_COMPUTE):.2f}x" in row.split()


def test_a_compute_cap_prunes_dear_configurations_before_training(pg_url: str, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("n_steps: 64\nbatch_size: 32\nnet_arch: small\nn_epochs: {low: 1, high: 10}\n")
    created = run_admin("create", "--storage", pg_url, "--name", "capped", "--algo", "ppo", "--env",
                      "Pendulum-v1", "--n-trials", "6", "--timesteps", "256", "--n-evaluations", "1", "--eval-episodes",
                      "1", "--no-confirm", "--max-compute", "0.5", "--space", str(space))  # fmt: skip
    assert created.returncode == 0, created.stderr
    run_worker_in_process(pg_url)
    trials = trials_of(pg_url, "capped")
    over = [t for t in trials if t.user_attrs[protocol.RELATIVE_COMPUTE] > 0.5]
    under = [t for t in trials if t.user_attrs[protocol.RELATIVE_COMPUTE] <= 0.5]
    # The baseline's 10 epochs cost the defaults' compute; sampled ones from 1 to 10 (seeded) fall on both sides.
    baseline, *sampled = trials
    assert baseline.user_attrs["baseline"] and baseline in over and under
    # SB3's defaults are what the cap is relative to: the baseline trains, infeasible for the sampler all the same.
    assert baseline.state == TrialState.COMPLETE and max(baseline.constraints.values()) > 0
    assert [t for t in sampled if t in over], "a sampled configuration over the cap"
    for trial in (t for t in sampled if t in over):
        assert trial.state == TrialState.PRUNED and trial.user_attrs[protocol.ENV_STEPS] == 0
        assert "exceeds max_compute=0.5" in trial.user_attrs[protocol.PRUNED_REASON] and trial.constraints
    assert all(t.state == TrialState.COMPLETE and t.user_attrs[protocol.ENV_STEPS] > 0 for t in under)


def test_two_objectives_search_return_against_compute(tmp_path: Path, tiny_space: Path) -> None:
    """``--objective return-and-compute``: each trial tells Optuna its return and its compute, records its curve as an
    attribute (Optuna lets no such trial report one), and everything downstream reads the return. On the embedded
    storage: the storages differ in nothing it adds."""
    storage_url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    create_tiny_study(storage_url, "front", tiny_space, 3, 256, "--objective", "return-and-compute", "--eval-every",
                      "128", "--eval-episodes", "1", "--confirm", "--confirm-top", "1", "--test-seeds",
                      "1")  # fmt: skip
    run_worker_in_process(storage_url)
    study = optuna.load_study(study_name="front", storage=storage_url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["mean evaluation return", "relative compute"]
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE and not trial.intermediate_values
        assert trial.values[1] == pytest.approx(trial.user_attrs[protocol.RELATIVE_COMPUTE], abs=1e-3)
        assert [step for step, _ in trial.user_attrs[protocol.CURVE]] == [128, 256]
        assert trial.values[0] == trial.user_attrs[protocol.CURVE][-1][1]
    confirmation = optuna.load_study(study_name="front:confirm", storage=storage_url)
    assert len(confirmation.directions) == 1 and confirmation.trials[0].intermediate_values  # one objective again
    best = json.loads(run_admin("best", "front", "--format", "json", "--storage", storage_url).stdout)
    assert best["confirmed"] is True
    report = run_admin("report", "front", "--out", str(tmp_path / "report"), "--storage", storage_url)
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report" / "curves.png").exists()  # drawn from the recorded curves
