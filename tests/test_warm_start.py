"""A new study first tries the winners of the finished studies already in the database, and says so."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy

from study_contract import protocol
from study_contract.algorithms import algorithm
from study_contract.definition import define
from study_contract.engine.warm_start import Source, WarmStart
from study_contract.store.storage import open_engine, open_storage
from study_contract.store.study_view import load_study
from tests.conftest import create_tiny_study, run_admin, run_worker_in_process, trials_of


def _warm(url: str, name: str) -> list[dict]:
    return [t.user_attrs[protocol.WARM_START] for t in trials_of(url, name) if protocol.WARM_START in t.user_attrs]


def test_a_new_study_tries_the_winner_of_a_finished_one_without_a_flag(tiny_space: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    create_tiny_study(url, "first", tiny_space, 2, 256, "--no-baseline")
    run_worker_in_process(url)
    winner = load_study(open_storage(url), "first").best
    assert winner is not None

    argv = ["create", "--storage", url, "--algo", "ppo", "--env", "Pendulum-v1", "--n-trials", "4", "--timesteps",
            "256", "--space", str(tiny_space), "--no-confirm", "--no-baseline", "--no-known-good", "--n-evaluations",
            "2"]  # fmt: skip
    created = run_admin(*argv, "--name", "second")
    assert created.returncode == 0, created.stderr
    origin = {"study": "first", "env_id": "Pendulum-v1", "trial": winner.number, "value": winner.value,
              "confirmed": False}  # fmt: skip
    assert _warm(url, "second") == [origin]
    (slot,) = [t.number for t in trials_of(url, "second") if protocol.WARM_START in t.user_attrs]
    assert slot == 0  # the first slot, with neither baseline nor known-good points before it
    assert f"warm start: from first trial {winner.number} (Pendulum-v1, value " in created.stderr

    run_worker_in_process(url, study="second", max_trials=1)
    tried = trials_of(url, "second")[slot]
    assert tried.user_attrs[protocol.HYPERPARAMS] == winner.hyperparams  # the same space: the same configuration
    shown = run_admin("show", "second", "--trial", str(slot), "--storage", url)
    assert f"warm start from first trial {winner.number} (Pendulum-v1, value" in shown.stdout

    cold = run_admin(*argv, "--name", "cold", "--warm-start", "off")
    assert cold.returncode == 0 and _warm(url, "cold") == [] and "warm start" not in cold.stderr
    # Another task's winners only when named: from other tasks they were no better on fresh seeds (docs/tuning.md).
    elsewhere = [*argv[:5], "--env", "InvertedPendulum-v5", *argv[7:]]
    assert run_admin(*elsewhere, "--name", "other-task").returncode == 0 and _warm(url, "other-task") == []
    assert run_admin(*elsewhere, "--name", "named", "--warm-start", "first").returncode == 0
    assert _warm(url, "named") == [origin]


def test_auto_passes_over_a_study_it_cannot_read(tiny_space: Path, tmp_path: Path) -> None:
    """One finished study whose trial rows Optuna cannot read must not stop every create."""
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    create_tiny_study(url, "good", tiny_space, 1, 256, "--no-baseline")
    create_tiny_study(url, "broken", tiny_space, 1, 256, "--no-baseline")
    run_worker_in_process(url)
    broken = trials_of(url, "broken")[0]._trial_id
    with open_engine(url).begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE trial_params SET distribution_json = 'not json' WHERE trial_id = :id"),
                     {"id": broken})  # fmt: skip
    argv = ["create", "--storage", url, "--algo", "ppo", "--env", "Pendulum-v1", "--n-trials", "4", "--timesteps",
            "256", "--space", str(tiny_space), "--no-confirm", "--no-baseline", "--name", "next"]  # fmt: skip
    created = run_admin(*argv)
    assert created.returncode == 0, created.stderr
    assert "warm start: passed over broken: " in created.stderr
    assert [origin["study"] for origin in _warm(url, "next")] == ["good"]  # the newer, broken one first, passed over
    named = run_admin(*argv[:-1], "again", "--warm-start", "broken")
    assert named.returncode == 2 and named.stderr.startswith("study_admin: error: ") and "broken" in named.stderr


def test_warm_start_from_a_named_study_must_exist_and_tune_the_same_algorithm(tiny_space: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    create_tiny_study(url, "first", tiny_space, 1, 256, "--no-baseline")
    argv = ["create", "--storage", url, "--algo", "sac", "--env", "Pendulum-v1", "--n-trials", "4", "--timesteps",
            "256", "--no-confirm"]  # fmt: skip
    other = run_admin(*argv, "--warm-start", "first")
    assert other.returncode == 2
    assert other.stderr == "study_admin: error: --warm-start: study 'first' tuned ppo, not sac\n"
    missing = run_admin(*argv, "--warm-start", "nosuch")
    assert missing.returncode == 2
    assert missing.stderr == "study_admin: error: --warm-start: no readable study named 'nosuch'\n"
    bad = run_admin(*argv, "--warm-start", "a b")
    assert bad.returncode == 2 and "'a b' is not auto, off or a comma-separated list of study names" in bad.stderr
    assert run_admin(*argv, "--warm-start", "off").returncode == 0  # positive control


def test_a_rollout_keeps_its_share_of_the_budget_in_a_study_of_another_budget() -> None:
    """A 2048-step rollout tuned at 300k env-steps per trial is a 256-step one at 30k (clipping alone would keep
    2048, a tenth of the new budget per rollout); from a study of the same budget it stays 2048."""
    definition = define(algo="ppo", env_id="Pendulum-v1", n_trials=12, timesteps=30_000)
    entry = algorithm("ppo")
    winner = {**entry.defaults, "n_steps": 2048, "batch_size": 64}
    for source_steps, expected in ((300_000, 256), (30_000, 2048)):
        source = Source("old", "Hopper-v5", 3, winner, 1000.0, True, source_steps)
        (point,) = WarmStart([source], []).points(definition, [])
        assert point.params is not None and point.params["n_steps"] == expected, source_steps
