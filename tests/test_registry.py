"""The algorithm registry: each entry complete, SB3's own defaults as its baseline, and no algorithm named
anywhere else in the product code, so that the next algorithm is one entry and one test parameter."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from benchmarks.tasks import DEVELOPMENT_TASKS, HELD_OUT_TASKS
from study_contract.algorithms import ALGORITHMS, BACKENDS, algorithm
from study_contract.campaign import STAGE_RULES
from study_contract.space import ParamSpec, optuna_params
from tests.conftest import REPO

# Every algorithm the registry has; adding one adds it here (and nowhere else outside the registry).
ALGOS = ["ppo", "sac", "td3", "tqc", "crossq"]
PRODUCT = ("study_contract", "study_admin", "worker")
REGISTRY = REPO / "study_contract" / "algorithms"


def test_the_parameter_list_is_the_registry() -> None:
    assert sorted(ALGORITHMS) == sorted(ALGOS)


@pytest.mark.parametrize("algo", ALGOS)
def test_each_registry_entry_is_complete(algo: str) -> None:
    entry = ALGORITHMS[algo]
    for name in entry.spaces:
        space = entry.space(name, 1_000_000, 1)
        assert set(space) == set(entry.defaults), name
        entry.check(space, 1, 1_000_000)
    assert entry.constructor_params | entry.policy_params <= set(entry.defaults)
    assert all(set(point.params) <= set(entry.defaults) and point.source for point in entry.known_good)
    for stage in entry.campaign.values():
        assert set(stage) <= set(entry.defaults)
    for rule in STAGE_RULES:  # what every campaign stage searches is a parameter the entry has
        assert set(rule.searched(algo)) <= set(entry.defaults), rule.name


def _sb3(algo: str) -> dict[str, Any]:
    """The installed library's own defaults, read from its classes (never restated here)."""
    entry = algorithm(algo)
    model_class = getattr(importlib.import_module(entry.library), entry.class_name)
    signature = {name: p.default for name, p in inspect.signature(model_class).parameters.items()}
    model = model_class("MlpPolicy", "Pendulum-v1", device="cpu")
    policy = inspect.signature(type(model.policy)).parameters
    return {
        "signature": signature,
        "policy": {n: p.default for n, p in policy.items()},
        "net_arch": model.policy.net_arch,
    }


@pytest.mark.parametrize("algo", ALGOS)
def test_registry_defaults_are_sb3s_defaults(algo: str) -> None:
    entry = algorithm(algo)
    sb3 = _sb3(algo)
    recipe = entry.recipe(entry.defaults)
    for name, value in recipe.kwargs.items():
        assert sb3["signature"][name] == value, name
    assert sb3["signature"]["learning_rate"] == recipe.learning_rate and recipe.lr_schedule == "constant"
    for name, value in recipe.policy_extras.items():
        assert sb3["policy"][name] == value, name
    assert sb3["net_arch"] in (recipe.net_arch, {"pi": recipe.net_arch, "vf": recipe.net_arch})
    assert sb3["policy"]["activation_fn"].__name__ == recipe.activation_class
    assert recipe.action_noise is None and sb3["signature"].get("action_noise") is None
    assert recipe.normalize is False


@pytest.mark.parametrize("algo", ALGOS)
def test_each_entrys_cost_is_relative_to_its_defaults_and_follows_the_network(algo: str) -> None:
    entry = algorithm(algo)
    for sizes in ((3, 1), (300, 30)):  # observation and action sizes
        assert entry.relative_cost(entry.defaults, *sizes) == 1.0
        assert entry.relative_cost({**entry.defaults, "net_arch": "tiny"}, *sizes) < 1.0


def _widest(space: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
    """Every parameter open over all the values it accepts."""
    return {
        name: replace(spec, fixed=False, value=None, choices=spec.limits)
        if spec.kind == "choice"
        else replace(spec, fixed=False, value=None, low=spec.limits[0], high=spec.limits[1])
        for name, spec in space.items()
    }


@pytest.mark.parametrize("algo", ALGOS)
def test_baseline_is_sb3s_defaults_inside_the_space(algo: str) -> None:
    entry = algorithm(algo)
    default = entry.space(entry.default_space_name, 10_000_000, 1)
    assert entry.baseline(_widest(default), 1) == entry.defaults
    tiny = entry.space(entry.default_space_name, 4096, 1)
    baseline = entry.baseline(tiny, 1)
    for name, spec in tiny.items():
        if not spec.fixed and spec.kind != "choice":
            assert spec.low <= baseline[name] <= spec.high, name
    optuna_params(tiny, baseline)  # every value is one the space can record
    assert set(entry.networks) >= {entry.defaults["net_arch"]}


@pytest.mark.parametrize("algo", ALGOS)
def test_known_good_points_never_come_from_a_held_out_task(algo: str) -> None:
    for point in algorithm(algo).known_good:
        assert not set(point.tasks) & set(HELD_OUT_TASKS), point
        assert set(point.tasks) <= set(DEVELOPMENT_TASKS) or point.source.startswith("published:"), point


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """The string constants of a module, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_algorithm_is_named_outside_the_registry() -> None:
    names = re.compile(rf"\b({'|'.join(ALGORITHMS)})\b", re.IGNORECASE)
    leaks = [
        f"{path.relative_to(REPO)}:{line}: {text!r}"
        for package in PRODUCT
        for path in sorted((REPO / package).rglob("*.py"))
        if REGISTRY not in path.parents
        for line, text in _string_constants(path)
        if names.search(text)
    ]
    assert leaks == []


def test_the_leak_check_finds_a_leak(tmp_path: Path) -> None:
    """Positive control: an algorithm name in a string constant is found, one in a docstring is not."""
    module = tmp_path / "leaky.py"
    module.write_text('"""Tunes PPO."""\nCHOICE = "sac"\n')
    assert _string_constants(module) == [(2, "sac")]


def test_the_recipes_of_existing_studies_stay_the_same() -> None:
    """What a worker builds for the baseline and the known-good points of every entry and backend, as the last
    release built it (``tests/fixtures/recipes.json``): a refactor must not change what existing studies train.
    A change meant to alter training updates the fixture in the same commit, and says why."""
    fixture = json.loads((Path(__file__).parent / "fixtures" / "recipes.json").read_text())
    built = {}
    for name, entry in ALGORITHMS.items():
        for backend in BACKENDS:
            if backend in entry.libraries:
                space = entry.space(entry.default_space_name, 100_000, 1)
                points = [entry.baseline(space, 1), *entry.starting_points(space, 1)]
                built[f"{name}/{backend}"] = [asdict(entry.recipe(p, backend)) for p in points]
    assert set(built) == set(fixture) and len(built) >= len(ALGORITHMS)  # every entry, each backend it has
    for key, recipes in built.items():
        assert json.loads(json.dumps(recipes)) == fixture[key], key
