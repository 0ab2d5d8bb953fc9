"""The whole service on a real Docker engine, built from the project's own Dockerfile and compose file.

One stack serves the scenarios below, in order (each builds on the state the one before left). Needs
``../shared/docker`` (engine, stand-in base images, CPU torch index). On CI (``CI=true``) it must run;
elsewhere it skips, saying why, when no engine can be started.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import optuna
import pytest
from optuna.trial import TrialState

from study_contract.store.artifacts import CURVE, MODEL, VIDEO, trial_artifacts
from study_contract.store.catalog import summarise
from study_contract.store.storage import open_engine
from tests.conftest import REPO, assert_budget_accounted, trials_of, wait_for
from tests.pg import free_port

pytestmark = [pytest.mark.slow, pytest.mark.docker]

SHARED_DOCKER = REPO.parent / "shared" / "docker"
BIN = Path(sys.executable).parent
ARTIFACTS = REPO / "test-artifacts"
ON_CI = os.environ.get("CI", "").lower() == "true"
PROJECT = "tuner-e2e"
PASSWORDS = {"POSTGRES_PASSWORD": "e2e-superuser", "ADMIN_DB_PASSWORD": "e2e-admin:x9",
             "WORKER_DB_PASSWORD": "e2e-worker 'q'", "DASHBOARD_DB_PASSWORD": "e2e-dashboard%"}  # fmt: skip


def _unavailable(reason: str) -> None:
    if ON_CI:
        pytest.fail(f"Docker end-to-end test cannot run on CI: {reason}")
    pytest.skip(reason)


def _sh(*args: str, env: dict[str, str] | None = None, timeout: float = 900, check: bool = True) -> str:
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


@pytest.fixture(scope="module")
def engine() -> str:
    """A running engine, the stand-in base images, and the CPU torch index URL."""
    if not SHARED_DOCKER.is_dir():
        _unavailable(f"{SHARED_DOCKER} (engine and stand-in scripts) is missing")
    if os.geteuid() != 0:
        _unavailable("starting dockerd needs root")
    try:
        _sh("bash", str(SHARED_DOCKER / "engine-up.sh"), timeout=600)
        _sh("bash", str(SHARED_DOCKER / "standins" / "build.sh"), timeout=900)
        return _sh("bash", str(SHARED_DOCKER / "torch-index.sh"), "start", timeout=600).strip().splitlines()[-1]
    except (AssertionError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"no Docker engine could be started: {exc}")
        raise


@dataclass
class Stack:
    compose: list[str]
    env: dict[str, str]

    def sh(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        try:
            return _sh(*self.compose, *args, env=self.env, timeout=timeout, check=check)
        except AssertionError as exc:  # what the services said, before the stack is torn down
            logs = _sh(*self.compose, "logs", "--no-color", "--tail", "40", env=self.env, check=False)
            raise AssertionError(f"{exc}\nthe services' last lines:\n{logs}") from None

    def url(self, role: str) -> str:
        """The published database as ``role`` (admin, worker), quoted as a URL needs."""
        import sqlalchemy

        user = {"admin": "tuner_admin", "worker": "tuner_worker"}[role]
        password = PASSWORDS[f"{role.upper()}_DB_PASSWORD"]
        return sqlalchemy.engine.URL.create("postgresql+psycopg2", username=user, password=password,
                                            host="127.0.0.1", port=int(self.env["DB_PORT"]),
                                            database="tuner").render_as_string(hide_password=False)  # fmt: skip

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.env['DASHBOARD_PORT']}"

    def containers(self, service: str) -> list[docker.models.containers.Container]:
        client = docker.from_env()
        labels = [f"com.docker.compose.project={PROJECT}", f"com.docker.compose.service={service}"]
        return client.containers.list(all=True, filters={"label": labels})


@pytest.fixture(scope="module")
def stack(engine: str) -> Iterator[Stack]:
    env = {
        **os.environ,
        **PASSWORDS,
        "COMPOSE_PROJECT_NAME": PROJECT,
        "TORCH_INDEX_URL": engine,
        "PIP_TRUSTED_HOST": engine.split("//", 1)[1].split(":", 1)[0],
        "DB_PORT": str(free_port()),
        "DASHBOARD_PORT": str(free_port()),
        "PGBOUNCER_PORT": str(free_port()),
        "DEMO_N_TRIALS": "40",
        "DEMO_TIMESTEPS": "1024",
        "WORKER_DRAIN_SECONDS": "30",
        "WORKER_POLL_INTERVAL": "2",
    }
    env.pop("DATABASE_URL", None)
    stack = Stack(["docker", "compose", "-f", str(REPO / "docker-compose.yml")], env)
    try:
        stack.sh("up", "-d", "--build", "--scale", "worker=3", timeout=1200)
        yield stack
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        everything = ("--profile", "admin", "--profile", "pooler")
        (ARTIFACTS / "compose.log").write_text(stack.sh(*everything, "logs", "--no-color", check=False, timeout=120))
        stack.sh(*everything, "down", "-v", "--remove-orphans", check=False, timeout=300)


def _demo(stack: Stack) -> str:
    def first_study() -> str:
        return next(iter(s.name for s in summarise(open_engine(stack.url("admin")))), "")

    return wait_for(first_study, 300, interval=2, what="the demo study")


def _assert_every_slot_accounted(stack: Stack) -> None:
    for summary in summarise(open_engine(stack.url("admin"))):
        assert summary.lost == 0 and summary.accounted == summary.n_trials, summary


def test_up_tunes_the_demo_study_with_three_workers(stack: Stack) -> None:
    demo = _demo(stack)

    def finished_by() -> set[str]:
        return {
            t.user_attrs["worker"]
            for t in trials_of(stack.url("admin"), demo)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "worker" in t.user_attrs
        }

    wait_for(lambda: len(finished_by()) >= 3, 600, interval=3, what="trials finished by three workers")
    logs = stack.sh("logs", "--no-color", "worker")
    assert "progress study=" in logs and "env_steps=" in logs and "eta=" in logs


def test_a_study_created_through_compose_is_picked_up_without_a_restart(stack: Stack, tmp_path: Path) -> None:
    space = tmp_path / "sac.yaml"
    space.write_text("batch_size: 64\nbuffer_size: 10000\ntrain_freq: 1\nnet_arch: tiny\nlearning_starts: 100\n")
    space.chmod(0o644)
    created = stack.sh("run", "--rm", "-v", f"{space}:/space.yaml:ro", "study_admin", "create", "--algo", "sac",
                       "--env", "InvertedPendulum-v5", "--name", "e2e-sac", "--n-trials", "3", "--timesteps", "600",
                       "--eval-every", "300", "--eval-episodes", "2", "--space", "/space.yaml")  # fmt: skip
    assert created.strip().splitlines()[-1] == "e2e-sac"
    wait_for(lambda: any(t.state != TrialState.WAITING for t in trials_of(stack.url("admin"), "e2e-sac")), 300,
             interval=2, what="a worker taking the new study")  # fmt: skip


def test_the_dashboard_shows_the_studies_in_chromium(stack: Stack) -> None:
    demo = _demo(stack)
    listed = json.load(urllib.request.urlopen(f"{stack.dashboard}/api/studies", timeout=10))["study_summaries"]
    assert {demo, "e2e-sac"} <= {s["study_name"] for s in listed}
    assert json.load(urllib.request.urlopen(f"{stack.dashboard}/healthz", timeout=10)) == {"ok": True}
    dashboard = stack.containers("dashboard")[0]
    assert dashboard.attrs["State"]["Health"]["Status"] == "healthy"

    with _browser() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{stack.dashboard}/dashboard")
        page.get_by_text("e2e-sac").first.wait_for(timeout=30_000)
        page.get_by_text(demo).first.wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"))
        demo_id = next(s["study_id"] for s in listed if s["study_name"] == demo)
        page.goto(f"{stack.dashboard}/dashboard/studies/{demo_id}")
        page.get_by_text("Intermediate values", exact=False).first.wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "dashboard-study.png"), full_page=True)


@contextlib.contextmanager
def _browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],  # fmt: skip
        )
        try:
            yield browser
        finally:
            browser.close()


def test_the_best_trials_rollout_video_plays_in_the_dashboard(stack: Stack) -> None:
    demo = _demo(stack)

    def best_with_video() -> optuna.trial.FrozenTrial | None:
        study = optuna.load_study(study_name=demo, storage=stack.url("admin"))
        done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        best = max(done, key=lambda t: float(t.value or 0.0), default=None)
        return best if best is not None and VIDEO in trial_artifacts(best) else None

    best = wait_for(best_with_video, 300, interval=3, what="a best trial with its rollout video")
    assert best is not None and best.user_attrs["video_frames"] > 1 and {MODEL, CURVE} <= set(trial_artifacts(best))
    listed = json.load(urllib.request.urlopen(f"{stack.dashboard}/api/studies", timeout=10))["study_summaries"]
    study_id = next(s["study_id"] for s in listed if s["study_name"] == demo)
    with _browser() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{stack.dashboard}/dashboard/studies/{study_id}/trials?numbers={best.number}")
        source = page.locator('video > source[src^="/artifacts/"]').first
        source.wait_for(state="attached", timeout=60_000)
        assert source.get_attribute("type") == "video/mp4"
        page.locator("video").first.scroll_into_view_if_needed()
        page.wait_for_function("document.querySelector('video').readyState >= 1", timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "dashboard-video.png"), full_page=True)


def test_a_worker_on_another_host_joins_through_the_published_port(stack: Stack, tmp_path: Path) -> None:
    # The Compose workers are paused so that the host's worker gets the trial.
    stack.sh("pause", "worker")
    try:
        tiny = tmp_path / "tiny.yaml"
        tiny.write_text("n_steps: 64\nbatch_size: 32\nn_epochs: 1\nnet_arch: tiny\n")
        _sh(str(BIN / "study_admin"), "create", "--storage", stack.url("admin"), "--name", "e2e-host", "--algo", "ppo",
            "--env", "Pendulum-v1", "--n-trials", "1", "--timesteps", "256", "--eval-episodes", "1", "--space",
            str(tiny))  # fmt: skip
        command = [str(BIN / "worker"), "--storage", stack.url("worker"), "--study", "e2e-host", "--max-trials", "1"]
        joined = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    finally:
        stack.sh("unpause", "worker")
    assert joined.returncode == 0, joined.stderr[-2000:]
    (host_trial,) = trials_of(stack.url("admin"), "e2e-host")
    assert host_trial.state == TrialState.COMPLETE
    assert host_trial.user_attrs["worker"].startswith(f"{socket.gethostname()}:")
    listed = _sh(str(BIN / "study_admin"), "list", "--storage", stack.url("admin"))
    assert "e2e-sac" in listed and "e2e-host" in listed


def test_scaling_down_drains_workers_and_loses_no_slot(stack: Stack) -> None:
    stack.sh("up", "-d", "--no-recreate", "--scale", "worker=1")
    assert len([c for c in stack.containers("worker") if c.status == "running"]) == 1
    for study in (s.name for s in summarise(open_engine(stack.url("admin")))):
        trials = trials_of(stack.url("admin"), study)
        assert sum(t.state == TrialState.RUNNING for t in trials) <= 1
        retried = {t.system_attrs["retry_history"][-1] for t in trials if t.system_attrs.get("retry_history")}
        assert {t.number for t in trials if "handed_back" in t.user_attrs} <= retried
    _assert_every_slot_accounted(stack)


def test_stop_drains_in_time_and_up_resumes_from_the_same_volume(stack: Stack) -> None:
    demo = _demo(stack)
    started = time.monotonic()
    stack.sh("stop", "worker")
    stopped_after = time.monotonic() - started
    exit_codes = [c.attrs["State"]["ExitCode"] for c in stack.containers("worker")]
    assert exit_codes == [0], exit_codes
    assert stopped_after < 120
    assert not [t for t in trials_of(stack.url("admin"), demo) if t.state == TrialState.RUNNING]
    _assert_every_slot_accounted(stack)

    def finished() -> int:
        return len([t for t in trials_of(stack.url("admin"), demo) if t.state.is_finished()])

    before = finished()
    stack.sh("up", "-d", "--scale", "worker=2")
    wait_for(lambda: finished() > before, 300, interval=3, what="trials finished after a restart")
    print(f"\ncompose: scaled 3 -> 1 without losing a slot; last worker stopped in {stopped_after:.1f} s")


def test_workers_can_reach_the_database_through_pgbouncer(stack: Stack, tmp_path: Path) -> None:
    """The pooler profile: PgBouncer built from the postgres image, transaction pooling, the worker role."""
    pooled = {**stack.env, "COMPOSE_PROFILES": "pooler"}
    _sh(*stack.compose, "up", "-d", "--build", "pgbouncer", env=pooled, timeout=900)
    wait_for(lambda: stack.containers("pgbouncer")[0].attrs["State"].get("Health", {}).get("Status") == "healthy",
             120, interval=2, what="a healthy pgbouncer")  # fmt: skip
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text("n_steps: 64\nbatch_size: 32\nn_epochs: 1\nnet_arch: tiny\n")
    _sh(str(BIN / "study_admin"), "create", "--storage", stack.url("admin"), "--name", "e2e-pooled", "--algo", "ppo",
        "--env", "Pendulum-v1", "--n-trials", "1", "--timesteps", "256", "--eval-episodes", "1", "--no-confirm",
        "--space", str(tiny))  # fmt: skip
    pooled["WORKER_DB_HOST"], pooled["WORKER_DB_PORT"] = "pgbouncer", "6432"
    stack.sh("pause", "worker")
    try:
        _sh(*stack.compose, "run", "--rm", "worker", "worker", "--study", "e2e-pooled", "--max-trials", "1",
            "--until-idle", env=pooled, timeout=300)  # fmt: skip
    finally:
        stack.sh("unpause", "worker")
    assert "user=tuner_worker" in _sh(*stack.compose, "logs", "pgbouncer", env=pooled)
    # A direct worker may claim the trial between create and pause; the pooled worker then runs its retry once
    # the paused owner's grace period is over: either way one trial completes and the budget is exact.
    trials = assert_budget_accounted(stack.url("admin"), "e2e-pooled", 1)
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 1


def test_up_refuses_to_publish_the_database_with_built_in_passwords(stack: Stack) -> None:
    def preflight(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*stack.compose, "run", "--rm", "--no-deps", "preflight"], capture_output=True,
                              text=True, env={**env, "DB_BIND": "0.0.0.0"}, cwd=REPO, timeout=120)  # fmt: skip

    refused = preflight({k: v for k, v in stack.env.items() if k not in PASSWORDS})
    assert refused.returncode == 1, refused.stderr
    assert "refusing to publish PostgreSQL on DB_BIND=0.0.0.0 with a built-in password" in refused.stderr
    assert preflight(stack.env).returncode == 0  # positive control: passwords of one's own pass
