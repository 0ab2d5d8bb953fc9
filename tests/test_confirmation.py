"""Fresh-seed confirmation, carried out by the fleet, and the statistics it reports."""

from __future__ import annotations

import json
import signal
import threading
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from study_contract.definition import define
from study_contract.engine.confirmation import create_confirmation
from study_contract.names import StudyError
from study_contract.statistics import bootstrap_ci, iqm, probability_of_improvement
from study_contract.store.artifacts import artifacts_in
from study_contract.store.storage import open_storage
from tests.conftest import (
    assert_budget_accounted,
    create_tiny_study,
    run_admin,
    run_worker_in_process,
    running_by_pid,
    start_worker,
    trials_of,
    wait_for,
)

FAST = ["--until-idle", "--poll-interval", "0.3", "--heartbeat-interval", "1", "--grace-period", "3"]


def test_statistics_match_hand_computed_values() -> None:
    assert iqm([1.0, 2.0, 3.0, 4.0]) == 2.5  # the middle half: 2 and 3
    assert iqm([1.0, 2.0, 3.0, 4.0, 100.0]) == 3.0  # a quarter of 5 rounds down: one cut from each end
    assert probability_of_improvement([3.0, 5.0], [4.0]) == 0.5
    assert probability_of_improvement([4.0], [4.0]) == 0.5  # ties count one half
    assert probability_of_improvement([5.0, 6.0], [1.0, 2.0]) == 1.0
    scores = [512.0, 800.0, 930.0, 1116.0, 3320.0]
    low, high = bootstrap_ci(scores) or (0.0, 0.0)
    assert low < iqm(scores) < high and (low, high) == bootstrap_ci(scores)  # seeded: the same interval each time
    assert low >= 512.0 and high <= 3320.0
    assert bootstrap_ci([7.0]) is None and bootstrap_ci([7.0, 7.0]) == (7.0, 7.0)


def test_workers_confirm_a_finished_study_by_themselves(pg_url: str, tiny_space: Path, tmp_path: Path) -> None:
    create_tiny_study(pg_url, "tuned", tiny_space, 4, 512, "--confirm", "--confirm-top", "2", "--test-seeds", "3",
                      "--eval-episodes", "1", "--pruner", "none")  # fmt: skip
    workers = [start_worker(pg_url, *FAST, log=tmp_path / f"w{i}.log") for i in range(2)]
    for worker in workers:
        assert worker.wait(timeout=600) == 0
    logs = "".join((tmp_path / f"w{i}.log").read_text() for i in range(2))
    assert logs.count("finished its budget; created tuned:confirm") == 1  # exactly one worker

    tuning = trials_of(pg_url, "tuned")
    ranked = sorted(tuning[1:], key=lambda t: -float(t.value or 0.0))
    candidates = [t.number for t in ranked[:2]]
    cheapest = min(ranked[:4], key=lambda t: t.user_attrs["relative_compute"]).number  # the cheapest strong one
    candidates += [] if cheapest in candidates else [cheapest]
    budget = (len(candidates) + 1) * 3  # (the candidates + baseline) x 3 seeds
    confirmation = assert_budget_accounted(pg_url, "tuned:confirm", budget)
    definition = define(algo="ppo", n_trials=1, timesteps=512, test_seeds=3)
    seeds = definition.test_seed_list
    assert not set(seeds) & {t.user_attrs["seed"] for t in tuning}
    pairs = Counter(
        (t.user_attrs["candidate"], t.user_attrs["seed"]) for t in confirmation if t.state == TrialState.COMPLETE
    )
    assert pairs == Counter({(c, s): 1 for c in [*candidates, "baseline"] for s in seeds})
    by_candidate: dict[object, list[float]] = {}
    for t in confirmation:
        by_candidate.setdefault(t.user_attrs["candidate"], []).append(float(t.value or 0.0))
        assert t.user_attrs["hyperparams"] == next(
            (p.user_attrs["hyperparams"] for p in tuning if p.number == t.user_attrs["candidate"]),
            tuning[0].user_attrs["hyperparams"],  # the baseline trial's
        )

    best = json.loads(run_admin("best", "tuned", "--pick", "best", "--storage", pg_url, "--format",
                              "json").stdout)  # fmt: skip
    assert best["confirmed"] is True
    winner = max(candidates, key=lambda c: iqm(by_candidate[c]))
    assert best["trial"] == best["confirmation"]["winner"] == winner
    recommended = json.loads(run_admin("best", "tuned", "--storage", pg_url, "--format", "json").stdout)
    assert recommended["trial"] in recommended["pick"]["tied"] and winner in recommended["pick"]["tied"]
    reported = {c["trial"]: c for c in best["confirmation"]["candidates"]}
    assert reported[winner]["iqm"] == pytest.approx(iqm(by_candidate[winner]))
    assert reported[winner]["ci"] == pytest.approx(list(bootstrap_ci(by_candidate[winner]) or []))
    assert reported[winner]["p_improvement"] == probability_of_improvement(
        by_candidate[winner], by_candidate["baseline"]
    )
    assert sorted(best["confirmation"]["baseline"]["scores"]) == sorted(by_candidate["baseline"])
    assert best["confirmation"]["test_seeds"] == seeds

    shown = run_admin("show", "tuned", "--storage", pg_url).stdout
    assert f"confirmation  tuned:confirm: {budget}/{budget} runs on test seeds" in shown
    assert f"winner: trial {winner}" in shown
    report = run_admin("report", "tuned", "--storage", pg_url, "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"## Fresh-seed confirmation ({budget}/{budget} runs)" in text and "(confirmed on fresh seeds)" in text
    for image in ("confirmation.png", "curves.png", "importances.png"):
        assert (tmp_path / "report" / image).read_bytes()[:4] == b"\x89PNG", image
    store = tmp_path / "store"
    for _ in range(2):  # a report run again replaces the plot it attached to the study
        attached = run_admin("report", "tuned", "--storage", pg_url, "--out", str(tmp_path / "report"),
                           "--artifact-dir", str(store))  # fmt: skip
        assert attached.returncode == 0, attached.stderr
    storage = open_storage(pg_url)
    attrs = storage.get_study_system_attrs(storage.get_study_id_from_name("tuned"))
    live = [value for key, value in attrs.items() if key.startswith("artifacts:") and json.loads(value)]
    assert len(live) == 1 and (store / artifacts_in(attrs)["confirmation.png"]).exists()


def test_confirm_runs_on_an_older_study(tmp_path: Path) -> None:
    """What an old definition means does not depend on the storage: the embedded one is enough."""
    storage_url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    fixture = Path(__file__).parent / "fixtures" / "definitions" / "v1_ppo_custom_space.json"
    study = optuna.create_study(study_name="old", storage=storage_url, direction="maximize")
    for _ in range(3):
        study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING))
    study.set_user_attr("paused", False)
    study.set_user_attr("definition", fixture.read_text().strip())

    early = run_admin("confirm", "old", "--storage", storage_url)
    assert early.returncode == 2 and "study 'old' still has 3 trial(s) to run" in early.stderr
    run_worker_in_process(storage_url)
    assert not any(
        s.study_name.endswith(":confirm") for s in optuna.get_all_study_summaries(storage_url)
    )  # v1: on demand

    confirmed = run_admin("confirm", "old", "--top", "1", "--seeds", "2", "--storage", storage_url)
    assert confirmed.returncode == 0 and confirmed.stdout.strip() == "old:confirm"
    again = run_admin("confirm", "old", "--storage", storage_url)
    assert again.returncode == 2 and "already has its confirmation 'old:confirm'" in again.stderr
    run_worker_in_process(storage_url)
    assert_budget_accounted(storage_url, "old:confirm", 4)
    best = json.loads(run_admin("best", "old", "--storage", storage_url, "--format", "json").stdout)
    assert best["confirmed"] is True and len(best["confirmation"]["candidates"]) == 1


def test_one_confirmation_however_many_create_it_at_once(storage_url: str, tiny_space: Path) -> None:
    create_tiny_study(storage_url, "raced", tiny_space, 2, 256)
    run_worker_in_process(storage_url)
    storage = open_storage(storage_url)
    half = optuna.create_study(study_name="raced:confirm", storage=storage)  # a creator killed half-way
    half.add_trial(optuna.trial.create_trial(state=TrialState.WAITING))
    outcomes: list[str] = []

    def create() -> None:
        try:
            outcomes.append(str(create_confirmation(open_storage(storage_url), "raced")))
        except StudyError as exc:
            outcomes.append(str(exc).split(";")[0])

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["raced:confirm"] + ["study 'raced' already has its confirmation 'raced:confirm'"] * 3
    names = [s.study_name for s in optuna.get_all_study_summaries(storage_url)]
    assert names.count("raced:confirm") == 1
    assert len(trials_of(storage_url, "raced:confirm")) == 2 * 5  # one candidate + the baseline, 5 seeds


def test_a_worker_killed_during_confirmation_leaves_every_seed_once(
    pg_url: str, tiny_space: Path, tmp_path: Path
) -> None:
    create_tiny_study(pg_url, "sturdy", tiny_space, 2, 6000, "--confirm", "--confirm-top", "1", "--test-seeds", "3",
                      "--eval-episodes", "1", "--no-baseline", "--pruner", "none")  # fmt: skip
    workers = [start_worker(pg_url, *FAST, log=tmp_path / f"w{i}.log") for i in range(2)]
    victim_pid = wait_for(lambda: next(iter(running_by_pid(pg_url, "sturdy:confirm")), None)
                          if any(s.study_name == "sturdy:confirm" for s in optuna.get_all_study_summaries(pg_url))
                          else None, 300, what="a confirmation run")  # fmt: skip
    victim = next(w for w in workers if w.pid == victim_pid)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivor = next(w for w in workers if w.pid != victim_pid)
    assert survivor.wait(timeout=600) == 0
    confirmation = assert_budget_accounted(pg_url, "sturdy:confirm", 6)
    complete = Counter(
        (t.user_attrs["candidate"], t.user_attrs["seed"]) for t in confirmation if t.state == TrialState.COMPLETE
    )
    assert len(complete) == 6 and set(complete.values()) == {1}
    assert any(t.state == TrialState.FAIL for t in confirmation)  # the killed run, retried with its seed
