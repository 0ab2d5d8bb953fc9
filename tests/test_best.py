"""What ``best`` prints builds the model as printed: the README's two lines, for every algorithm and backend."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from study_contract import protocol
from study_contract.algorithms import algorithm
from study_contract.store.catalog import load_definition
from study_contract.store.storage import open_storage
from tests.conftest import REPO, run_admin
from tests.test_algorithms import _space
from tests.test_registry import ALGOS

pytestmark = pytest.mark.slow
COMBINATIONS = [(algo, backend) for algo in ALGOS for backend in algorithm(algo).libraries]


def _readme_lines() -> str:
    """The Python lines the README shows for building a model from ``best --format python``."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```python\n(from best import .*?)```", readme, re.S)
    assert block, "the README shows how to build a model from `best --format python`"
    return block.group(1)


def _finished_study(url: str, tmp_path: Path, algo: str, backend: str) -> None:
    """A study whose one completed trial is the algorithm's first starting point (TD3's: with action noise), on a
    cosine schedule, with observation normalisation where the algorithm searches it."""
    created = run_admin("create", "--storage", url, "--name", f"{algo}-{backend}", "--algo", algo,
                      "--env", "Pendulum-v1", "--backend", backend, "--n-trials", "1", "--timesteps", "300",
                      "--no-baseline", "--no-confirm", "--space", str(_space(tmp_path, algo)))  # fmt: skip
    assert created.returncode == 0, created.stderr
    storage = open_storage(url)
    definition = load_definition(storage, f"{algo}-{backend}")
    entry = algorithm(algo)
    params = (entry.starting_points(definition.space, 1) or [entry.baseline(definition.space, 1)])[0]
    params["lr_schedule"] = "cosine"
    if "normalize" in params:
        params["normalize"] = True
    study = optuna.load_study(study_name=f"{algo}-{backend}", storage=storage)
    trial = study.ask()
    trial.set_user_attr(protocol.HYPERPARAMS, params)
    trial.set_user_attr(protocol.SEED, 3)
    study.tell(trial, -150.0)


CHECK = """
from pydoc import locate

def check(model, expected, module):
    built = {
        "class": type(model),
        "activation": model.policy_kwargs["activation_fn"],
        "noise": type(model.action_noise).__name__,
        "normalized": type(model.get_env()).__name__ == "VecNormalize",
        "scheduled": model.learning_rate(0.5) != model.learning_rate(1.0),
    }
    printed = {
        "class": locate(expected["class"]),
        "activation": locate(expected["kwargs"]["policy_kwargs"]["activation_fn"]),
        "noise": (expected["kwargs"].get("action_noise") or {"class": "NoneType"})["class"].rsplit(".", 1)[-1],
        "normalized": expected["normalize_observations"],
        "scheduled": expected["learning_rate_schedule"] != "constant",
    }
    assert built == printed, (module, built, printed)
"""


def test_the_readme_lines_build_and_train_every_algorithm_from_best(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    checks = []
    for algo, backend in COMBINATIONS:
        _finished_study(url, tmp_path, algo, backend)
        module = f"best_{algo}_{backend}"
        printed = run_admin("best", f"{algo}-{backend}", "--format", "python", "--storage", url)
        assert printed.returncode == 0, printed.stderr
        (tmp_path / f"{module}.py").write_text(printed.stdout)
        best = json.loads(run_admin("best", f"{algo}-{backend}", "--format", "json", "--storage",
                                  url).stdout)  # fmt: skip
        checks.append((module, best))
    program = ["import json, sys"]
    for module, best in checks:
        lines = _readme_lines().replace("from best import", f"from {module} import")
        program += [
            lines,
            "model.learn(64)",
            f"expected = json.loads({json.dumps(json.dumps(best))})",
            f"check(model, expected, {module!r})",
        ]
    trained = subprocess.run([sys.executable, "-c", CHECK + "\n".join(program)], capture_output=True, text=True,
                             timeout=600, cwd=tmp_path)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    noisy = [best for _, best in checks if "action_noise" in best["kwargs"]]
    assert noisy, "a starting point with an action noise is among the checks"


def test_best_names_each_class_by_its_import_path(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    _finished_study(url, tmp_path, "td3", "sb3")
    best = yaml.safe_load(run_admin("best", "td3-sb3", "--format", "yaml", "--storage", url).stdout)
    assert best["class"] == "stable_baselines3.TD3"
    assert best["kwargs"]["policy_kwargs"]["activation_fn"] == "torch.nn.ReLU"
    assert best["kwargs"]["action_noise"] == {"class": "stable_baselines3.common.noise.NormalActionNoise",
                                              "sigma": 0.1}  # fmt: skip
