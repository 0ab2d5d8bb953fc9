"""No study, input, upgrade or database restart takes the workers down or loses a slot (issue cases verbatim)."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from study_admin.cli import main as admin
from study_contract.definition import SCHEMA_VERSION
from study_contract.store.catalog import summarise
from study_contract.store.storage import open_engine, open_storage
from tests.conftest import (
    assert_budget_accounted,
    create_tiny_study,
    run_admin,
    run_cli,
    run_worker_in_process,
    running_by_pid,
    start_worker,
    trials_of,
    wait_for,
)
from tests.envs import NAN_PENDULUM
from tests.pg import PostgresCluster, free_port

pytestmark = pytest.mark.slow
FAST = ["--until-idle", "--poll-interval", "0.3", "--heartbeat-interval", "1", "--grace-period", "4"]


def test_a_large_sampler_seed_runs(storage_url: str, tiny_space: Path, tmp_path: Path) -> None:
    """Case 1: ``--seed 50000`` made the sampler seed overflow numpy's range and the worker exit 1."""
    created = run_admin("create", "--algo", "ppo", "--env", "Pendulum-v1", "--n-trials", "2", "--seed",
                      "50000", "--timesteps", "256", "--space", str(tiny_space), "--n-evaluations", "1",
                      "--eval-episodes", "1", "--no-confirm", "--storage", storage_url)  # fmt: skip
    assert created.returncode == 0, created.stderr
    worker = start_worker(storage_url, *FAST, log=tmp_path / "w.log")
    assert worker.wait(timeout=300) == 0, (tmp_path / "w.log").read_text()[-3000:]
    trials = assert_budget_accounted(storage_url, "ppo-Pendulum-v1", 2)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert [t.user_attrs["seed"] for t in trials] == [50000, 50001]


def _write_definition(url: str, name: str, text: str) -> None:
    storage = open_storage(url)
    storage.set_study_user_attr(storage.get_study_id_from_name(name), "definition", text)


def test_a_study_from_a_newer_study_admin_is_skipped_not_fatal(
    storage_url: str, tiny_space: Path, tmp_path: Path
) -> None:
    """Case 2: one study with a newer schema made every worker, and ``list``, exit 1."""
    create_tiny_study(storage_url, "future", tiny_space, 2, 256)
    create_tiny_study(storage_url, "today", tiny_space, 2, 256)
    create_tiny_study(storage_url, "pinned", tiny_space, 1, 256)
    storage = open_storage(storage_url)
    newer = json.loads(storage.get_study_user_attrs(storage.get_study_id_from_name("future"))["definition"])
    newer["schema_version"] = SCHEMA_VERSION + 1
    newer["a_field_from_the_future"] = True
    _write_definition(storage_url, "future", json.dumps(newer))

    pinned = start_worker(storage_url, *FAST, "--study", "pinned", log=tmp_path / "pinned.log")
    everyone = start_worker(storage_url, *FAST, log=tmp_path / "all.log")
    assert pinned.wait(timeout=300) == 0 and everyone.wait(timeout=300) == 0
    log = (tmp_path / "all.log").read_text()
    refusal = f"definition schema_version={SCHEMA_VERSION + 1} was written by a newer study_admin"
    assert log.count(f"study future: skipped: {refusal}") == 1
    assert "upgrade this worker" in log
    assert all(
        t.state == TrialState.COMPLETE for t in trials_of(storage_url, "today") + trials_of(storage_url, "pinned")
    )
    assert all(t.state == TrialState.WAITING for t in trials_of(storage_url, "future"))

    listed = run_admin("list", "--storage", storage_url)
    assert listed.returncode == 0 and "future" in listed.stdout and "unreadable" in listed.stdout
    assert f"future: {refusal}" in listed.stdout
    shown = run_admin("show", "future", "--storage", storage_url)
    assert shown.returncode == 2 and "study 'future' cannot be read" in shown.stderr

    _write_definition(storage_url, "future", "{not json")
    broken = run_admin("list", "--storage", storage_url, "--format", "json")
    entry = next(s for s in json.loads(broken.stdout) if s["name"] == "future")
    assert entry["state"] == "unreadable" and entry["error"].startswith("definition is not JSON")


def test_delete_refuses_while_training_and_force_lets_workers_go_on(
    pg_url: str, tiny_space: Path, tmp_path: Path
) -> None:
    """Case 3: deleting a study a worker trained made the worker exit 1 with KeyError."""
    create_tiny_study(pg_url, "doomed", tiny_space, 1, 1_000_000, "--no-baseline", "--pruner", "none")
    create_tiny_study(pg_url, "next", tiny_space, 1, 256)
    worker = start_worker(pg_url, *FAST, "--progress-interval", "0.5", log=tmp_path / "w.log")
    wait_for(lambda: running_by_pid(pg_url, "doomed"), 120, what="training")

    refused = run_admin("delete", "doomed", "--yes", "--storage", pg_url)
    assert refused.returncode == 2
    assert "study 'doomed' has 1 running trial(s); pause it and wait, or delete with --force" in refused.stderr
    forced = run_admin("delete", "doomed", "--yes", "--force", "--storage", pg_url)
    assert forced.returncode == 0, forced.stderr

    assert worker.wait(timeout=120) == 0, (tmp_path / "w.log").read_text()[-3000:]
    log = (tmp_path / "w.log").read_text()
    assert "its study was deleted; going on" in log and "Traceback" not in log
    assert [t.state for t in trials_of(pg_url, "next")] == [TrialState.COMPLETE]


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def _serve(app: Any) -> tuple[str, WSGIServer]:
    server = make_server("127.0.0.1", free_port(), app, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_dashboard_survives_a_database_restart(postgres: PostgresCluster, pg_url: str, tiny_space: Path) -> None:
    """Case 4: after ``docker compose restart db`` the dashboard answered HTTP 500 while its health check passed."""
    from optuna_dashboard import wsgi
    from optuna_dashboard._storage_url import get_storage

    from study_admin.dashboard import make_app

    create_tiny_study(pg_url, "shown", tiny_space, 1, 256)
    ours, our_server = _serve(make_app(pg_url, None))
    plain, plain_server = _serve(wsgi(get_storage(pg_url)))  # what `optuna-dashboard URL` runs
    try:
        for base in (ours, plain):
            assert _status(f"{base}/api/studies") == 200
        assert _status(f"{ours}/healthz") == 200
        postgres.stop()
        assert _status(f"{ours}/healthz") == 500  # the health check covers the database
        postgres.start()
        assert _status(f"{plain}/api/studies") == 500  # the failure this guards against
        assert _status(f"{ours}/api/studies") == 200
        assert _status(f"{ours}/healthz") == 200
    finally:
        our_server.shutdown()
        plain_server.shutdown()


def test_a_failing_study_pauses_itself_and_resume_clears_it(pg_url: str, tmp_path: Path) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text("n_steps: 64\nbatch_size: 32\nn_epochs: 1\nnet_arch: tiny\n")
    argv = ["create", "--storage", pg_url, "--name", "broken", "--algo", "ppo", "--env", NAN_PENDULUM, "--space",
            str(space), "--n-trials", "8", "--timesteps", "256", "--eval-every", "128", "--no-confirm"]  # fmt: skip
    assert admin(argv) == 0
    run_worker_in_process(pg_url)
    trials = trials_of(pg_url, "broken")
    assert [t.state for t in trials].count(TrialState.FAIL) == 3
    assert [t.state for t in trials].count(TrialState.WAITING) == 5
    (summary,) = summarise(open_engine(pg_url))
    assert summary.state == "paused"
    assert summary.paused_reason and summary.paused_reason.startswith(
        "paused after 3 consecutive trials failed the same way and none succeeded"
    )
    listed = run_admin("list", "--storage", pg_url).stdout
    assert "broken: paused after 3 consecutive trials" in listed
    assert run_admin("resume", "broken", "--storage", pg_url).returncode == 0
    (summary,) = summarise(open_engine(pg_url))
    assert summary.state == "waiting" and summary.paused_reason is None


def test_a_lost_slot_is_flagged_then_restored(storage_url: str, tiny_space: Path) -> None:
    """A worker killed between failing a trial and queueing its retry: show flags it, a worker restores it."""
    create_tiny_study(storage_url, "holes", tiny_space, 2, 256, "--no-baseline")
    storage = open_storage(storage_url)
    study_id = storage.get_study_id_from_name("holes")
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, 0)
    storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
    storage.set_trial_user_attr(trial_id, "retry", True)
    storage.set_trial_user_attr(trial_id, "fail_reason", "handed back: worker shut down")
    storage.set_trial_state_values(trial_id, state=TrialState.FAIL)  # ... and the process died here

    shown = run_admin("show", "holes", "--storage", storage_url).stdout
    assert "MISMATCH: 1 failed trial(s) neither retried nor final" in shown
    run_worker_in_process(storage_url)
    assert_budget_accounted(storage_url, "holes", 2)
    assert "MISMATCH" not in run_admin("show", "holes", "--storage", storage_url).stdout


def test_a_claim_that_never_heartbeat_returns_to_waiting(storage_url: str, tiny_space: Path) -> None:
    """Claimed by a worker (of the previous release) that died before its first heartbeat."""
    from worker.slots import maintain

    create_tiny_study(storage_url, "orphan", tiny_space, 1, 256, "--no-baseline")
    storage = open_storage(storage_url, heartbeat_interval=1, grace_period=2)
    study_id = storage.get_study_id_from_name("orphan")
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, 0)
    storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
    assert maintain(storage, study_id, grace_period=2, max_retry=3).released == []  # still within the grace period
    time.sleep(2.5)
    assert maintain(storage, study_id, grace_period=2, max_retry=3).released == [trial_id]
    assert storage.get_trial(trial_id).state == TrialState.WAITING


@pytest.mark.parametrize(("point", "spends_a_retry"), [("setup", False), ("evaluation", True)])
def test_a_worker_killed_before_training_spends_no_retry(
    storage_url: str, tiny_space: Path, tmp_path: Path, point: str, spends_a_retry: bool
) -> None:
    """Killed in setup: queued again, no retry spent; killed while training: a retry of its max_retry."""
    from study_contract.protocol import STALE_RETRIES
    from worker.slots import maintain

    create_tiny_study(storage_url, "setup", tiny_space, 1, 256, "--no-baseline", "--eval-every", "128")
    victim = start_worker(storage_url, "--poll-interval", "0.2", "--heartbeat-interval", "1", "--grace-period", "2",
                          "--study", "setup", log=tmp_path / "victim.log", env={"WORKER_CRASH_AT": point})  # fmt: skip
    assert victim.wait(timeout=120) == -signal.SIGKILL
    storage = open_storage(storage_url, heartbeat_interval=1, grace_period=2)
    study_id = storage.get_study_id_from_name("setup")
    (claimed,) = trials_of(storage_url, "setup")
    passes: list[Any] = []

    def reclaimed() -> bool:
        passes.append(maintain(storage, study_id, grace_period=2, max_retry=3))
        return bool(passes[-1].requeued or passes[-1].stale)

    wait_for(reclaimed, 30, interval=0.5, what="the victim's trial reclaimed")
    done = passes[-1]
    assert (done.requeued, done.stale) == (([], [claimed.number]) if spends_a_retry else ([claimed.number], []))
    failed, queued = trials_of(storage_url, "setup")
    assert (failed.state, queued.state) == (TrialState.FAIL, TrialState.WAITING)
    assert queued.system_attrs["failed_trial"] == failed.number
    assert queued.system_attrs[STALE_RETRIES] == int(spends_a_retry)
    run_worker_in_process(storage_url, study="setup")
    assert_budget_accounted(storage_url, "setup", 1)


def test_retries_are_bounded_by_the_studys_max_retry_and_say_so(storage_url: str, tiny_space: Path) -> None:
    from study_contract.store.claims import claim
    from worker.slots import maintain

    create_tiny_study(storage_url, "cursed", tiny_space, 1, 256, "--no-baseline", "--max-retry", "1")
    storage = open_storage(storage_url, heartbeat_interval=1, grace_period=1)
    study_id = storage.get_study_id_from_name("cursed")
    for worker in ("w1", "w2"):  # two workers die in turn while training the same configuration
        mine = claim(storage, study_id, grace_period=1)
        assert mine is not None
        storage.set_trial_user_attr(mine.trial_id, "worker", worker)
        time.sleep(2.5)  # SQLite's CURRENT_TIMESTAMP has whole seconds
        maintain(storage, study_id, grace_period=1, max_retry=1)
    first, second = trials_of(storage_url, "cursed")
    assert first.user_attrs["retry"] is True and second.user_attrs["retry"] is False
    assert second.user_attrs["fail_reason"].endswith("not retried: its 1 retries used up max_retry=1")
    assert_budget_accounted(storage_url, "cursed", 1)


def test_sessions_run_in_utc_whatever_the_servers_zone(postgres: PostgresCluster, pg_url: str) -> None:
    database = pg_url.rsplit("/", 1)[1]
    postgres.execute(f"ALTER DATABASE {database} SET timezone TO 'America/New_York'")
    plain = sqlalchemy.create_engine(pg_url)
    with plain.connect() as conn:
        assert conn.execute(sqlalchemy.text("SHOW TimeZone")).scalar() == "America/New_York"
    plain.dispose()
    for engine in (open_storage(pg_url).engine, open_engine(pg_url)):
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SHOW TimeZone")).scalar() == "UTC"


def test_sigterm_ends_a_wait_for_the_database_and_a_long_outage_ends_the_worker(tmp_path: Path) -> None:
    unreachable = f"postgresql+psycopg2://u:p@127.0.0.1:{free_port()}/db"
    waiting = start_worker(unreachable, log=tmp_path / "waiting.log")
    wait_for(lambda: "database unavailable during connecting" in (tmp_path / "waiting.log").read_text(), 60,
             what="a retry")  # fmt: skip
    signalled = time.monotonic()
    waiting.send_signal(signal.SIGTERM)
    assert waiting.wait(timeout=10) == 0
    assert time.monotonic() - signalled < 3
    gave_up = run_cli("worker", "--storage", unreachable, "--db-retry-deadline", "2", timeout=60)
    assert gave_up.returncode == 1
    assert gave_up.stderr.strip().splitlines()[-1].startswith("worker: error: database unavailable for")


def test_a_trial_past_max_trial_seconds_fails_with_the_reason(pg_url: str, tiny_space: Path) -> None:
    create_tiny_study(pg_url, "slow", tiny_space, 1, 200_000, "--no-baseline", "--pruner", "none")
    run_worker_in_process(pg_url, max_trial_seconds=1.0)
    (trial,) = trials_of(pg_url, "slow")
    assert trial.state == TrialState.FAIL and trial.user_attrs["retry"] is False
    assert trial.user_attrs["fail_reason"].startswith("TrialTimeout: trial ran 1 s, longer than --max-trial-seconds=1")


def test_the_health_file_follows_training_progress_not_the_heartbeat(
    pg_url: str, tiny_space: Path, tmp_path: Path
) -> None:
    from tests.envs import HANGING_PENDULUM, release_hanging

    space = tmp_path / "tiny.yaml"
    space.write_text("n_steps: 64\nbatch_size: 32\nn_epochs: 1\nnet_arch: tiny\n")
    argv = ["create", "--storage", pg_url, "--name", "hang", "--algo", "ppo", "--env", HANGING_PENDULUM, "--n-trials",
            "1", "--timesteps", "512", "--eval-episodes", "1", "--space", str(space), "--no-baseline",
            "--no-confirm"]  # fmt: skip
    assert admin(argv) == 0
    health = tmp_path / "alive"
    settings: dict[str, Any] = {
        "health_file": str(health),
        "heartbeat_interval": 1,
        "poll_interval": 0.2,
        "grace_period": 30,
    }
    thread = threading.Thread(target=run_worker_in_process, args=(pg_url,), kwargs=settings, daemon=True)
    thread.start()
    from worker.config import WorkerConfig
    from worker.health import is_fresh

    max_age = WorkerConfig(**settings).health_max_age
    wait_for(lambda: running_by_pid(pg_url, "hang"), 60, what="training")
    wait_for(lambda: health.exists() and not is_fresh(str(health), max_age), 30, what="an unhealthy worker")
    beat = sqlalchemy.create_engine(pg_url)
    with beat.connect() as conn:  # the heartbeat thread still beats: only the health file tells the truth
        age = conn.execute(sqlalchemy.text("SELECT EXTRACT(EPOCH FROM (now() AT TIME ZONE 'UTC') - heartbeat) "
                                           "FROM trial_heartbeats")).scalar()  # fmt: skip
    beat.dispose()
    assert age is not None and age < 5
    release_hanging()
    thread.join(timeout=120)
    assert [t.state for t in trials_of(pg_url, "hang")] == [TrialState.COMPLETE]
    assert is_fresh(str(health), max_age)


def test_long_evaluations_and_videos_keep_the_worker_healthy(pg_url: str, tmp_path: Path) -> None:
    from study_contract.store.artifacts import VIDEO, trial_artifacts
    from tests.envs import SLOW_PENDULUM
    from worker.config import WorkerConfig
    from worker.health import is_fresh

    space = tmp_path / "tiny.yaml"
    space.write_text("n_steps: 64\nbatch_size: 32\nn_epochs: 1\nnet_arch: tiny\n")
    argv = ["create", "--storage", pg_url, "--name", "patient", "--algo", "ppo", "--env", SLOW_PENDULUM, "--n-trials",
            "1", "--timesteps", "128", "--n-evaluations", "1", "--eval-episodes", "1", "--space", str(space),
            "--no-baseline", "--no-confirm"]  # fmt: skip
    assert admin(argv) == 0
    health = tmp_path / "alive"
    settings: dict[str, Any] = {"health_file": str(health), "heartbeat_interval": 2, "poll_interval": 0.2}
    max_age = WorkerConfig(**settings).health_max_age  # 6 s: an evaluation episode and a video take 10 s each
    stale: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            if health.exists() and not is_fresh(str(health), max_age):
                stale.append(time.monotonic())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        run_worker_in_process(pg_url, artifact_dir=str(tmp_path / "artifacts"), **settings)
    finally:
        done.set()
        watcher.join()
    (trial,) = trials_of(pg_url, "patient")
    assert trial.state == TrialState.COMPLETE and VIDEO in trial_artifacts(trial)
    assert trial.user_attrs["eval_seconds"] > max_age and trial.user_attrs["video_frames"] == 201
    assert stale == []


def test_old_studies_keep_their_exponent_parameters_and_still_run(pg_url: str, tmp_path: Path) -> None:
    """A schema-1 study created by the previous release keeps running under this worker."""
    fixture = Path(__file__).parent / "fixtures" / "definitions" / "v1_ppo_custom_space.json"
    text = fixture.read_text()
    study = optuna.create_study(study_name="old", storage=pg_url, direction="maximize")
    study.enqueue_trial({"log2_n_steps": 7, "log2_batch_size": 6, "one_minus_gamma": 0.01, "learning_rate": 3e-4,
                         "lr_schedule": "linear"}, user_attrs={"baseline": True})  # fmt: skip
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING))
    study.set_user_attr("paused", False)
    study.set_user_attr("definition", text.strip())
    run_worker_in_process(pg_url)
    trials = assert_budget_accounted(pg_url, "old", 3)
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert all("log2_n_steps" in t.params and "n_steps" not in t.params for t in trials)
    assert trials[0].user_attrs["hyperparams"]["n_steps"] == 128
    for t in trials:
        params = t.user_attrs["hyperparams"]
        assert params["batch_size"] <= params["n_steps"] * 2  # the fixture's n_envs
