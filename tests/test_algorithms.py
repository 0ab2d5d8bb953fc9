"""Every algorithm in the registry, end to end: tuned, confirmed on fresh seeds, filmed, and exported to a
script and to RL Zoo that both train; and carried through a whole campaign."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from optuna.trial import TrialState

from study_contract.algorithms import ALGORITHMS, Algorithm, Space, algorithm
from study_contract.algorithms.building import materialise
from study_contract.algorithms.entry import (
    ACTIVATIONS,
    DISCOUNT_LIMITS,
    LR_LIMITS,
    NET_ARCHS,
    NETS,
    SCHEDULE,
    mlp_weights,
    sample_all,
)
from study_contract.space import fixed, fixed_choice, rng
from study_contract.store.artifacts import VIDEO, trial_artifacts
from tests.conftest import assert_budget_accounted, run_admin, run_worker_in_process, trials_of
from tests.test_registry import ALGOS

pytestmark = pytest.mark.slow
# Values that make any algorithm train in seconds on Pendulum-v1, for the parameters it has.
TINY = {"n_steps": 64, "batch_size": 32, "n_epochs": 1, "learning_starts": 50, "n_quantiles": 10, "net_arch": "tiny"}


def _space(tmp_path: Path, algo: str) -> Path:
    path = tmp_path / f"{algo}.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in TINY.items() if k in algorithm(algo).defaults}))
    return path


@pytest.mark.parametrize("algo", ALGOS)
def test_each_algorithm_is_tuned_confirmed_filmed_and_exported(tmp_path: Path, algo: str) -> None:
    """On the embedded storage (what differs between the storages is the same for every algorithm, and tested
    on both elsewhere)."""
    storage_url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    store = tmp_path / "artifacts"
    space = _space(tmp_path, algo)
    created = run_admin("create", "--storage", storage_url, "--name", algo, "--algo", algo, "--env",
                      "Pendulum-v1", "--n-trials", "2", "--timesteps", "300", "--n-evaluations", "1", "--eval-episodes",
                      "1", "--confirm-top", "1", "--test-seeds", "1", "--space", str(space))  # fmt: skip
    assert created.returncode == 0, created.stderr
    run_worker_in_process(storage_url, artifact_dir=str(store))
    assert_budget_accounted(storage_url, algo, 2)
    assert_budget_accounted(storage_url, f"{algo}:confirm", 2)  # the winner and the baseline on one fresh seed
    best = json.loads(run_admin("best", algo, "--format", "json", "--storage", storage_url).stdout)
    assert best["confirmed"] is True and best["sb3_class"] == algorithm(algo).class_name
    filmed = [t for t in trials_of(storage_url, algo) if VIDEO in trial_artifacts(t)]
    assert filmed and all(t.state == TrialState.COMPLETE for t in filmed)

    script, conf = tmp_path / "train.py", tmp_path / "zoo.yml"
    for fmt, out in (("python", script), ("zoo", conf)):
        exported = run_admin("export", algo, "--format", fmt, "--out", str(out), "--storage", storage_url)
        assert exported.returncode == 0, exported.stderr
    trained = subprocess.run([sys.executable, str(script), "--timesteps", "120", "--out", str(tmp_path / "m.zip")],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    entry = algorithm(algo)
    model = getattr(importlib.import_module(entry.library), entry.class_name).load(tmp_path / "m.zip", device="cpu")
    assert model.batch_size == best["kwargs"].get("batch_size", model.batch_size)
    zoo = subprocess.run([sys.executable, "-m", "rl_zoo3.train", "--algo", algo, "--env", "Pendulum-v1", "--conf-file",
                          str(conf), "-n", "120", "-f", str(tmp_path / "logs"), "--eval-freq", "-1"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert zoo.returncode == 0, zoo.stderr[-3000:]
    assert list((tmp_path / "logs" / algo).glob("Pendulum-v1_*/Pendulum-v1.zip"))


def test_an_exploration_noise_reaches_the_model_and_both_exports(pg_url: str, tmp_path: Path) -> None:
    """TD3's known-good point (Gaussian noise of scale 0.1) runs second, with the noise built for the task."""
    space = _space(tmp_path, "td3")
    created = run_admin("create", "--storage", pg_url, "--name", "noisy", "--algo", "td3", "--env",
                      "Pendulum-v1", "--n-trials", "2", "--timesteps", "200", "--n-evaluations", "1", "--eval-episodes",
                      "1", "--no-confirm", "--space", str(space))  # fmt: skip
    assert created.returncode == 0, created.stderr
    run_worker_in_process(pg_url)
    baseline, known = trials_of(pg_url, "noisy")
    assert baseline.user_attrs["hyperparams"]["action_noise"] == "none"
    assert known.user_attrs["known_good"] and known.user_attrs["hyperparams"]["action_noise"] == "normal"
    cls, kwargs = materialise(algorithm("td3").recipe(known.user_attrs["hyperparams"]), _pendulum_actions())
    assert type(kwargs["action_noise"]).__name__ == "NormalActionNoise" and kwargs["action_noise"]._sigma[0] == 0.1
    python = run_admin("export", "noisy", "--trial", "1", "--format", "python", "--storage", pg_url)
    assert "action_noise=noise.NormalActionNoise(mean=np.zeros(n_actions), sigma=0.1 * np.ones(n_actions))" in (
        python.stdout
    )
    zoo = run_admin("export", "noisy", "--trial", "1", "--format", "zoo", "--storage", pg_url).stdout
    assert "noise_type: normal" in zoo and "noise_std: 0.1" in zoo


def _pendulum_actions() -> object:
    import gymnasium

    return gymnasium.make("Pendulum-v1").action_space


@pytest.mark.parametrize("algo", ["td3", "tqc"])
def test_a_campaign_runs_for_each_new_algorithm(tmp_path: Path, algo: str) -> None:
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    created = run_admin("campaign", "create", "--storage", url, "--name", "ladder", "--algo", algo,
                      "--env", "Pendulum-v1", "--timesteps", "300", "--n-evaluations", "1", "--eval-episodes", "1",
                      "--trials-per-stage", "1", "--confirm-top", "1", "--test-seeds", "1", "--stage",
                      f"coarse:space={_space(tmp_path, algo)}")  # fmt: skip
    assert created.returncode == 0, created.stderr
    run_worker_in_process(url)
    shown = json.loads(run_admin("campaign", "show", "ladder", "--format", "json", "--storage", url).stdout)
    assert [s["state"] for s in shown["stages"]] == ["finished"] * 4
    assert shown["winner"]["confirmed"] is True
    finetune = set(algorithm(algo).campaign["finetune"]) - {"gradient_steps"}  # a choice: fixed at the winner's
    assert finetune | {"batch_size"} <= set(shown["stages"][3]["searched"])


@pytest.mark.parametrize("algo", ["sac"])
def test_the_sbx_backend_trains_films_and_exports(tmp_path: Path, algo: str) -> None:
    """The same study on JAX: trained by SBX, filmed, and exported to a script that trains with SBX (one entry: what
    differs between the SBX entries, their keyword arguments, is built and trained for each in test_best.py)."""
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    created = run_admin("create", "--storage", url, "--name", algo, "--algo", algo, "--env", "Pendulum-v1",
                      "--backend", "sbx", "--n-trials", "2", "--timesteps", "300", "--n-evaluations", "1",
                      "--eval-episodes", "1", "--no-confirm", "--space", str(_space(tmp_path, algo)))  # fmt: skip
    assert created.returncode == 0, created.stderr
    run_worker_in_process(url, artifact_dir=str(tmp_path / "artifacts"))
    trials = assert_budget_accounted(url, algo, 2)
    assert all(t.state == TrialState.COMPLETE for t in trials) and any(VIDEO in trial_artifacts(t) for t in trials)
    best = json.loads(run_admin("best", algo, "--format", "json", "--storage", url).stdout)
    assert best["library"] == "sbx"
    script = tmp_path / "train.py"
    assert run_admin("export", algo, "--format", "python", "--out", str(script), "--storage",
                   url).returncode == 0  # fmt: skip
    assert "from sbx import" in script.read_text() and "activation_fn=flax.linen.relu" in script.read_text()
    trained = subprocess.run([sys.executable, str(script), "--timesteps", "120", "--out", str(tmp_path / "m.zip")],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (tmp_path / "m.zip").exists()


def _a2c_shaped() -> Algorithm:
    """An entry unlike the five: on-policy with no ``batch_size``, no known-good points, no campaign rules."""

    def space(timesteps: int, n_envs: int) -> Space:
        return {
            "learning_rate": rng("float", 1e-4, 1e-3, LR_LIMITS, log=True),
            "lr_schedule": SCHEDULE,
            "n_steps": rng("int", 5, 32, (1, 10_000)),
            "gamma": fixed("discount", 0.99, DISCOUNT_LIMITS),
            "net_arch": fixed_choice("small", NETS),
            "activation": fixed_choice("tanh", ACTIVATIONS),
        }

    def cost(params: dict[str, Any], obs_size: int, action_size: int) -> float:
        return 2 * mlp_weights(obs_size, NET_ARCHS[params["net_arch"]], action_size)

    def check(space: Space, n_envs: int, timesteps: int) -> None:
        pass

    return Algorithm(name="a2c", libraries={"sb3": "stable_baselines3"}, class_name="A2C",
                     defaults={"learning_rate": 7e-4, "lr_schedule": "constant", "n_steps": 5, "gamma": 0.99,
                               "net_arch": "small", "activation": "tanh"},
                     spaces={"budget": space}, sample=lambda trial, s, n_envs: sample_all(trial, s), cost=cost,
                     check=check, constructor_params=frozenset(("n_steps", "gamma")))  # fmt: skip


def test_an_entry_without_a_batch_size_is_created_trained_and_exported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry takes an algorithm shaped like none of its entries (A2C: no ``batch_size``) as one entry: a
    study is created, trained by a worker, confirmed, exported to a script that trains, and planned as a campaign."""
    from study_admin.cli import main as admin

    monkeypatch.setitem(ALGORITHMS, "a2c", _a2c_shaped())
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    assert admin(["create", "--storage", url, "--name", "a2c", "--algo", "a2c", "--env", "Pendulum-v1", "--n-trials",
                  "2", "--timesteps", "200", "--n-evaluations", "1", "--eval-episodes", "1", "--confirm-top", "1",
                  "--test-seeds", "1", "--warm-start", "off"]) == 0  # fmt: skip
    run_worker_in_process(url)
    assert all(t.state == TrialState.COMPLETE for t in assert_budget_accounted(url, "a2c", 2))
    assert_budget_accounted(url, "a2c:confirm", 2)
    script = tmp_path / "train.py"
    assert admin(["export", "a2c", "--format", "python", "--out", str(script), "--storage", url]) == 0
    trained = subprocess.run([sys.executable, str(script), "--timesteps", "50", "--out", str(tmp_path / "m.zip")],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert admin(["campaign", "create", "--storage", url, "--name", "ladder", "--algo", "a2c", "--env",
                  "Pendulum-v1", "--timesteps", "200", "--trials-per-stage", "1"]) == 0  # fmt: skip
