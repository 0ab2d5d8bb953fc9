"""The study contract: versions that keep reading, a CLI derived from the definition, one package both sides share."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from study_contract.algorithms import ALGORITHMS
from study_contract.definition import SCHEMA_VERSION, DefinitionTooNew, StudyDefinition, define
from study_contract.names import DefinitionError
from study_contract.options import options_of
from tests.conftest import REPO, run_cli

FIXTURES = Path(__file__).parent / "fixtures" / "definitions"


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_every_committed_definition_still_reads(fixture: Path) -> None:
    """Literal JSON written by earlier releases: every later change must keep reading it."""
    stored = json.loads(fixture.read_text())
    definition = StudyDefinition.from_json(fixture.read_text())
    assert definition.schema_version == SCHEMA_VERSION
    for name in ("algo", "env_id", "n_trials", "timesteps", "eval_every", "seed", "sampler", "pruner"):
        assert getattr(definition, name) == stored[name], name
    assert set(definition.space) == set(ALGORITHMS[definition.algo].defaults)
    for name, spec in stored["space"].items():
        kept = definition.space[name]
        assert (kept.kind, kept.low, kept.high, kept.fixed, kept.value) == (
            spec["kind"], spec["low"], spec["high"], spec["fixed"], spec["value"]), name  # fmt: skip
        assert kept.exponent == (spec["kind"] == "pow2" and stored["schema_version"] == 1), name
    assert definition.known_good is stored.get("known_good", False)  # older studies were created without them
    # Older studies train each configuration once, on their one task.
    assert definition.tasks == [stored["env_id"], *stored.get("more_envs", [])]
    assert definition.seeds_per_config == stored.get("seeds_per_config", 1)
    assert definition.has_instances is (stored["schema_version"] >= 6)
    assert StudyDefinition.from_json(definition.to_json()) == definition


def test_a_definition_from_a_newer_release_is_refused_by_name() -> None:
    text = json.loads((FIXTURES / "v1_ppo_default.json").read_text())
    text["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(DefinitionTooNew, match=f"schema_version={SCHEMA_VERSION + 1} was written by a newer"):
        StudyDefinition.from_json(json.dumps(text))
    current = json.loads(define(algo="ppo", timesteps=30_000).to_json())
    current["surprise"] = 1
    with pytest.raises(
        DefinitionError, match=rf"definition has fields \['surprise'\] that schema_version={SCHEMA_VERSION} does not"
    ):
        StudyDefinition.from_json(json.dumps(current))


def test_create_options_are_derived_from_the_definition() -> None:
    text = " ".join(run_cli("study_admin", "create", "--help").stdout.split())
    fields_by_name = {f.name: f for f in fields(StudyDefinition)}
    for option in options_of(StudyDefinition):
        assert option.flag in text, option.name
        assert option.help in text and option.help == fields_by_name[option.name].metadata["help"], option.name
    hidden = {f.name for f in fields(StudyDefinition)} - {o.name for o in options_of(StudyDefinition)}
    assert hidden == {"space", "policy", "schema_version", "stage", "parent", "campaign", "more_envs"}
    assert "Ant-v5, the guide's example task" in text


def test_create_with_only_the_algorithm_uses_the_guides_example_task(tmp_path: Path) -> None:
    created = run_cli("study_admin", "create", "--algo", "sac", env={"TUNER_DATA_DIR": str(tmp_path)})
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "sac-Ant-v5"


def test_study_admin_never_imports_torch_sb3_or_mujoco(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from study_admin.cli import main\n"
        "assert main(['create', '--algo', 'ppo', '--env', 'Hopper-v5', '--name', 'light']) == 0\n"
        "for command in (['list'], ['show', 'light'], ['list', '--format', 'json']):\n"
        "    assert main(command) == 0\n"
        "heavy = [m for m in ('torch', 'stable_baselines3', 'mujoco') if m in sys.modules]\n"
        "sys.exit(f'imported {heavy}' if heavy else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env={**os.environ, "TUNER_DATA_DIR": str(tmp_path)},
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr


def _imports(*paths: Path) -> set[str]:
    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
    return found


TRAINING = {"torch", "stable_baselines3", "sb3_contrib", "mujoco"}
DATABASE = {"sqlalchemy", "psycopg2", "optuna"}


def test_the_packages_depend_one_way() -> None:
    """study_admin and worker share study_contract and never import each other; the contract's pure part
    (definition, spaces, algorithms, schedules, protocol) imports no database, and only the recipe builder
    imports the training libraries."""
    contract = REPO / "study_contract"
    assert "worker" not in _imports(*(REPO / "study_admin").rglob("*.py"))
    assert "study_admin" not in _imports(*(REPO / "worker").rglob("*.py"))
    assert not {"study_admin", "worker"} & _imports(*contract.rglob("*.py"))
    builder = contract / "algorithms" / "building.py"
    pure = [*contract.glob("*.py"), *(p for p in (contract / "algorithms").glob("*.py") if p != builder)]
    assert not (TRAINING | DATABASE) & _imports(*pure)
    assert not DATABASE & _imports(builder)
    assert not TRAINING & _imports(*(contract / "store").glob("*.py"), *(contract / "engine").glob("*.py"))


def _project_imports() -> dict[str, set[str]]:
    """module -> the project's modules it imports anywhere (lazy imports included); ``from package import module``
    imports the module."""
    modules = {}
    for package in ("study_contract", "study_admin", "worker"):
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules.keys()
                found |= submodules or {node.module}
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = found & modules.keys() - {name}
    return graph


def test_no_module_imports_one_that_imports_it_back() -> None:
    """No import cycle, lazy imports included: a trial is read top down (loop, trial runner, training,
    artifacts, trial session), the contract bottom up (names, registry, campaign rules, definition)."""
    graph = _project_imports()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    assert graph["worker.loop"] >= {"worker.trial_runner"}  # positive control: the graph holds the real imports
    assert [name for name in sorted(graph) if reaches(name, name, set())] == []
