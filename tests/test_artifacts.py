"""Leaving with a trained agent: models, learning curves and rollout videos as artifacts; exports that run."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import imageio
import optuna
import pytest
from optuna.trial import TrialState

from study_admin.cli import main as admin
from study_contract.definition import EVAL_SEED_OFFSET, derive_seed
from study_contract.store.artifacts import (
    CURVE,
    MODEL,
    NORMALIZATION,
    VIDEO,
    artifacts_in,
    open_store,
    retire_study_artifact,
    trial_artifacts,
)
from study_contract.store.storage import open_storage
from study_contract.store.study_view import load_study
from tests.conftest import run_admin, run_worker_in_process, trials_of
from tests.envs import UNRENDERABLE_PENDULUM

pytestmark = pytest.mark.slow


def _create(url: str, name: str, space: Path, *extra: str, env: str = "InvertedPendulum-v5") -> None:
    argv = ["create", "--storage", url, "--name", name, "--algo", "ppo", "--env", env, "--n-trials", "2",
            "--timesteps", "1024", "--n-evaluations", "1", "--eval-episodes", "3", "--space", str(space),
            "--no-confirm", *extra]  # fmt: skip
    assert admin(argv) == 0


@pytest.fixture
def space(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text("n_steps: {low: 64, high: 128}\nbatch_size: 32\nn_epochs: 2\nnet_arch: tiny\nnormalize: true\n")
    return path


def test_the_best_trial_leaves_a_model_a_curve_and_a_video(storage_url: str, space: Path, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    _create(storage_url, "kept", space)
    run_worker_in_process(storage_url, artifact_dir=str(artifacts))
    trials = trials_of(storage_url, "kept")
    best = next(t for t in trials if t.number == load_study(open_storage(storage_url), "kept").ranked[0].number)
    files = trial_artifacts(best)
    assert {MODEL, NORMALIZATION, CURVE, VIDEO} <= set(files), files
    assert all(CURVE in trial_artifacts(t) for t in trials)  # every trial keeps its curve

    out = tmp_path / "download"
    downloaded = run_admin("download", "kept", "--storage", storage_url, "--artifact-dir", str(artifacts),
                         "--out", str(out))  # fmt: skip
    assert downloaded.returncode == 0, downloaded.stderr
    assert {p.name for p in out.iterdir()} == set(files)

    with (out / CURVE).open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["env_steps", "mean_return"]
    reported = sorted(best.intermediate_values.items())
    assert [[float(x) for x in row] for row in rows[1:]] == [[step, value] for step, value in reported]

    frames = imageio.mimread(out / VIDEO, memtest=False)
    assert len(frames) == best.user_attrs["video_frames"] and frames[0].shape[-1] == 3
    assert 1 < len(frames) <= 1000

    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    model = PPO.load(out / MODEL, device="cpu")
    env = VecNormalize.load(str(out / NORMALIZATION), make_vec_env(
        "InvertedPendulum-v5", n_envs=1, seed=derive_seed(best.user_attrs["seed"], EVAL_SEED_OFFSET)))  # fmt: skip
    env.training, env.norm_reward = False, False
    mean, _ = evaluate_policy(model, env, n_eval_episodes=3, deterministic=True)
    assert mean == pytest.approx(best.value, rel=1e-6)  # the worker's final evaluation, reproduced exactly


def test_every_confirmation_candidate_keeps_its_best_runs_model_and_video(pg_url: str, space: Path,
                                                                         tmp_path: Path) -> None:  # fmt: skip
    artifacts = tmp_path / "artifacts"
    argv = ["create", "--storage", pg_url, "--name", "sure", "--algo", "ppo", "--env", "InvertedPendulum-v5",
            "--n-trials", "2", "--timesteps", "1024", "--n-evaluations", "1", "--eval-episodes", "3", "--space",
            str(space), "--confirm-top", "2", "--test-seeds", "2"]  # fmt: skip
    assert admin(argv) == 0
    run_worker_in_process(pg_url, artifact_dir=str(artifacts))
    runs = [t for t in trials_of(pg_url, "sure:confirm") if t.state == TrialState.COMPLETE]
    by_candidate: dict[object, list[optuna.trial.FrozenTrial]] = {}
    for run in runs:
        by_candidate.setdefault(run.user_attrs["candidate"], []).append(run)
    assert len(by_candidate) >= 2 and all(len(mine) == 2 for mine in by_candidate.values())
    for mine in by_candidate.values():
        finished = {t.number: t.datetime_complete.timestamp() for t in mine if t.datetime_complete}
        first = min(mine, key=lambda t: finished[t.number])  # its candidate's first run is its best so far
        assert {MODEL, VIDEO} <= set(trial_artifacts(first)), trial_artifacts(first)

    out = tmp_path / "download"
    downloaded = run_admin("download", "sure", "--storage", pg_url, "--artifact-dir", str(artifacts),
                         "--out", str(out))  # fmt: skip
    assert downloaded.returncode == 0, downloaded.stderr
    assert {MODEL, VIDEO} <= {p.name for p in out.iterdir()}


def test_a_study_artifact_uploaded_again_replaces_the_old_one(storage_url: str, tmp_path: Path) -> None:
    from optuna.artifacts import upload_artifact

    from study_contract.store.storage import open_storage

    storage = open_storage(storage_url)
    study = optuna.create_study(study_name="plotted", storage=storage, direction="maximize")
    study_id = storage.get_study_id_from_name("plotted")
    store = open_store(str(tmp_path / "store"))
    plot, other = tmp_path / "confirmation.png", tmp_path / "learning_curve.csv"
    plot.write_bytes(b"one")
    other.write_text("kept")
    upload_artifact(artifact_store=store, file_path=str(other), study_or_trial=study)
    for _ in range(2):
        retire_study_artifact(store, storage, study_id, "confirmation.png")
        upload_artifact(artifact_store=store, file_path=str(plot), study_or_trial=study, mimetype="image/png")
    live = artifacts_in(storage.get_study_system_attrs(study_id))
    assert sorted(live) == ["confirmation.png", "learning_curve.csv"]  # the other artifact is left alone
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == sorted(live.values())


def test_save_models_none_and_all(pg_url: str, space: Path, tmp_path: Path) -> None:
    _create(pg_url, "none", space, "--save-models", "none")
    _create(pg_url, "all", space, "--save-models", "all")
    run_worker_in_process(pg_url, artifact_dir=str(tmp_path / "artifacts"))
    assert not any(MODEL in trial_artifacts(t) for t in trials_of(pg_url, "none"))
    assert all(MODEL in trial_artifacts(t) for t in trials_of(pg_url, "all") if t.state == TrialState.COMPLETE)


def test_a_video_that_cannot_render_never_fails_the_trial(pg_url: str, tmp_path: Path) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text("n_steps: 64\nbatch_size: 32\nn_epochs: 1\nnet_arch: tiny\n")
    _create(pg_url, "blind", space, env=UNRENDERABLE_PENDULUM)
    run_worker_in_process(pg_url, artifact_dir=str(tmp_path / "artifacts"))
    trials = trials_of(pg_url, "blind")
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert trials[0].user_attrs["video_error"] == "RuntimeError: this task cannot render"
    assert MODEL in trial_artifacts(trials[0]) and VIDEO not in trial_artifacts(trials[0])


def _best_of_a_finished_study(url: str, tmp_path: Path, schedule: str) -> None:
    space = tmp_path / f"{schedule}.yaml"
    space.write_text(f"n_steps: 64\nbatch_size: 32\nn_epochs: 1\nnet_arch: tiny\nlr_schedule: {schedule}\n"
                     "normalize: true\nactivation: relu\n")  # fmt: skip
    _create(url, schedule, space)
    run_worker_in_process(url)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_the_zoo_export_runs_in_rl_zoo_unchanged(tmp_path: Path, schedule: str) -> None:
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    _best_of_a_finished_study(url, tmp_path, schedule)
    conf = tmp_path / "zoo.yml"
    exported = run_admin("export", schedule, "--format", "zoo", "--out", str(conf), "--storage", url)
    assert exported.returncode == 0, exported.stderr
    text = conf.read_text()
    assert ("has no RL Zoo spelling" in text) == (schedule == "cosine")
    assert "learning_rate: lin_" in text and "activation_fn=nn.ReLU" in text and "normalize: true" in text
    zoo = subprocess.run([sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", "InvertedPendulum-v5",
                          "--conf-file", str(conf), "-n", "256", "-f", str(tmp_path / "logs"), "--eval-freq", "-1"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert zoo.returncode == 0, zoo.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "ppo").glob("InvertedPendulum-v5_*")
    assert (run / "InvertedPendulum-v5.zip").exists()
    assert (run / "InvertedPendulum-v5" / "vecnormalize.pkl").exists()  # normalize: true was honoured


def test_the_python_export_trains_with_plain_sb3(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    _best_of_a_finished_study(url, tmp_path, "cosine")
    script = tmp_path / "train.py"
    exported = run_admin("export", "cosine", "--format", "python", "--out", str(script), "--storage", url)
    assert exported.returncode == 0, exported.stderr
    trained = subprocess.run([sys.executable, str(script), "--timesteps", "128", "--out", str(tmp_path / "m.zip")],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "study_contract" not in script.read_text() and "worker" not in script.read_text()
    from stable_baselines3 import PPO

    model = PPO.load(tmp_path / "m.zip", device="cpu")
    best = json.loads(run_admin("best", "cosine", "--format", "json", "--storage", url).stdout)
    assert model.n_steps == best["kwargs"]["n_steps"] and model.policy.activation_fn.__name__ == "ReLU"
    assert (tmp_path / "m_vecnormalize.pkl").exists()
    assert model.lr_schedule(0.5) == pytest.approx(best["kwargs"]["learning_rate"] * 0.5)  # cosine at mid-training


def test_an_s3_compatible_store_round_trips(tmp_path: Path) -> None:
    moto = pytest.importorskip("moto")
    import boto3

    with moto.mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="tuner")
        store = open_store("s3://tuner")
        study = optuna.create_study()
        trial = study.ask()
        source = tmp_path / CURVE
        source.write_text("env_steps,mean_return\n1,2\n")
        optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(source), study_or_trial=trial)
        from study_contract.store.artifacts import download

        (written,) = download(store, study.trials[0], tmp_path / "back")
        assert written.read_text() == source.read_text()
