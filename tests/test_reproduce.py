"""Every trial records what produced its value, and ``study_admin reproduce`` trains it again to compare."""

from __future__ import annotations

import json
from importlib import metadata

import gymnasium
import pytest
import sqlalchemy
from optuna.trial import TrialState

from study_contract import protocol
from study_contract.store.storage import open_engine
from tests.conftest import create_tiny_study, run_cli, trials_of


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A study of one 256-step trial that a worker (one thread, as by default) finished; its URL."""
    folder = tmp_path_factory.mktemp("reproduce")
    space = folder / "tiny.yaml"
    space.write_text("n_steps: {low: 64, high: 128}\nbatch_size: {low: 32, high: 64}\nn_epochs: {low: 1, high: 2}\n"
                     "net_arch: tiny\n")  # fmt: skip
    url = f"sqlite:///{folder / 'studies.sqlite3'}"
    create_tiny_study(url, "r", space, 2, 256, "--no-baseline")
    assert run_cli("worker", "--storage", url, "--until-idle", "--max-trials", "1").returncode == 0
    return url


def _first(url: str) -> tuple[int, dict]:
    trial = trials_of(url, "r")[0]
    assert trial.state == TrialState.COMPLETE
    return trial._trial_id, trial.user_attrs[protocol.PROVENANCE]


def test_every_trial_records_its_versions_task_seeds_and_threads(trained: str) -> None:
    _, recorded = _first(trained)
    seed = trials_of(trained, "r")[0].user_attrs[protocol.SEED]
    assert recorded["versions"]["stable-baselines3"] == metadata.version("stable-baselines3")
    assert recorded["versions"]["gymnasium"] == metadata.version("gymnasium")
    assert recorded["env"]["max_episode_steps"] == gymnasium.spec("Pendulum-v1").max_episode_steps
    assert recorded["seeds"]["training"] == seed and recorded["seeds"]["evaluation"] != seed
    assert recorded["threads"] == 1
    shown = run_cli("study_admin", "show", "r", "--trial", "0", "--storage", trained)
    assert shown.returncode == 0
    assert f"stable-baselines3 {metadata.version('stable-baselines3')}" in shown.stdout
    assert "1 torch threads" in shown.stdout
    exported = run_cli("study_admin", "export", "r", "--format", "zoo", "--trial", "0", "--storage", trained)
    assert f"stable-baselines3 {metadata.version('stable-baselines3')}" in exported.stdout.splitlines()[2]


def test_reproduce_gives_the_stored_value_again(trained: str) -> None:
    result = run_cli("study_admin", "reproduce", "r", "--trial", "0", "--storage", trained, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(the same)" in result.stdout and "versions, task spec and threads as recorded" in result.stdout
    assert "learning curve    the same" in result.stdout


def _rewrite(url: str, trial_id: int, provenance: object) -> None:
    """Change a finished trial's record by hand, as Optuna would not."""
    update = sqlalchemy.text("UPDATE trial_user_attributes SET value_json = :value WHERE trial_id = :id AND key = :key")
    with open_engine(url).begin() as conn:
        conn.execute(update, {"value": json.dumps(provenance), "id": trial_id, "key": protocol.PROVENANCE})


def test_reproduce_names_a_version_that_differs_from_the_record(trained: str) -> None:
    trial_id, recorded = _first(trained)
    _rewrite(trained, trial_id, {**recorded, "versions": {**recorded["versions"], "stable-baselines3": "2.0.0"}})
    try:
        result = run_cli("study_admin", "reproduce", "r", "--trial", "0", "--storage", trained, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr  # the value does not depend on the record
        installed = metadata.version("stable-baselines3")
        assert f"stable-baselines3: recorded 2.0.0, installed {installed}" in result.stdout
        assert "gymnasium:" not in result.stdout  # only what differs is named

        _rewrite(trained, trial_id, "written by an older release")  # unreadable: as if none was recorded
        old = run_cli("study_admin", "reproduce", "r", "--trial", "0", "--storage", trained, timeout=300)
        assert old.returncode == 0 and "no provenance recorded" in old.stdout
        shown = run_cli("study_admin", "show", "r", "--trial", "0", "--storage", trained, "--format", "json")
        assert json.loads(shown.stdout)["provenance"] is None
    finally:
        _rewrite(trained, trial_id, recorded)


def test_reproduce_refuses_a_trial_that_never_ran_in_one_line(trained: str) -> None:
    waiting = run_cli("study_admin", "reproduce", "r", "--trial", "1", "--storage", trained)
    assert waiting.returncode == 2
    assert waiting.stderr == "study_admin: error: study 'r' has no trial 1 that has started\n"
