"""What the database holds is untrusted, and no study can spoil another: each test here is a hole a review found.

Values read back from the database never become code or paths, a worker never writes into a trial that
is no longer its claim, paused and deleted studies are looked after, and bad input is one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
import yaml
from optuna.trial import TrialState

from study_contract import protocol
from study_contract.definition import DEFINITION_ATTR, PAUSED_ATTR, PAUSED_REASON_ATTR
from study_contract.store.catalog import summarise, tuning_studies
from study_contract.store.claims import Claim, beat, claim, lost_claim
from study_contract.store.storage import mask_password, open_engine, open_storage
from tests.conftest import VENV_BIN, create_tiny_study, run_admin, run_cli, snapshot, trials_of
from worker.slots import maintain

PARAMS = {"learning_rate": 1e-3, "lr_schedule": "linear", "n_steps": 128, "batch_size": 64, "n_epochs": 2,
          "ent_coef": 0.0, "gamma": 0.99, "gae_lambda": 0.95, "clip_range": 0.2, "max_grad_norm": 0.5,
          "net_arch": "tiny", "activation": "relu", "normalize": False}  # fmt: skip


def _finished(url: str, tiny_space: Path, **attrs: Any) -> optuna.Study:
    """Study ``done`` with one completed trial, as a worker leaves it (``attrs`` overriding what it records)."""
    create_tiny_study(url, "done", tiny_space, 2, 256, "--no-baseline")
    study = optuna.load_study(study_name="done", storage=url)
    trial = study.ask()
    for key, value in {protocol.HYPERPARAMS: PARAMS, protocol.SEED: 7, **attrs}.items():
        trial.set_user_attr(key, value)
    study.tell(trial, -150.0)
    return study


def _tamper_definition(url: str, name: str, **changes: Any) -> None:
    storage = open_storage(url)
    study_id = storage.get_study_id_from_name(name)
    stored = json.loads(storage.get_study_user_attrs(study_id)[DEFINITION_ATTR])
    storage.set_study_user_attr(study_id, DEFINITION_ATTR, json.dumps({**stored, **changes}))


INJECTED = 'Pendulum-v1"""; __import__("os").system("touch {marker}"); """'


def test_a_definition_is_checked_when_read_so_no_value_becomes_code(
    storage_url: str, tiny_space: Path, tmp_path: Path
) -> None:
    _finished(storage_url, tiny_space)
    script = tmp_path / "train.py"
    exported = run_admin("export", "done", "--format", "python", "--out", str(script),
                       "--storage", storage_url)  # fmt: skip
    assert exported.returncode == 0, exported.stderr  # positive control: a sound study exports
    assert "ENV_ID = 'Pendulum-v1'" in script.read_text()
    zoo = run_admin("export", "done", "--format", "zoo", "--storage", storage_url).stdout
    assert list(yaml.safe_load(zoo)) == ["Pendulum-v1"]

    marker = tmp_path / "pwned"
    _tamper_definition(storage_url, "done", env_id=INJECTED.format(marker=marker))
    for fmt in ("python", "zoo"):
        refused = run_admin("export", "done", "--format", fmt, "--storage", storage_url)
        assert refused.returncode == 2 and "is not a Gymnasium task id" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    (study,) = tuning_studies(open_engine(storage_url))
    assert study.definition is None and "is not a Gymnasium task id" in (study.error or "")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("attr", "value", "message"),
    [
        (protocol.HYPERPARAMS, {**PARAMS, "learning_rate": "__import__('os')"}, "learning_rate"),
        (protocol.HYPERPARAMS, {**PARAMS, "x=1,y": 1}, "are not this study's parameters"),
    ],
    ids=["value", "name"],
)
def test_trial_values_from_the_database_are_checked_before_any_export(
    pg_url: str, tiny_space: Path, attr: str, value: Any, message: str
) -> None:
    _finished(pg_url, tiny_space, **{attr: value})
    for fmt in ("python", "zoo", "json"):
        refused = run_admin("export", "done", "--format", fmt, "--storage", pg_url)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr


def test_a_seed_that_is_not_a_seed_counts_as_none_recorded(pg_url: str, tiny_space: Path) -> None:
    _finished(pg_url, tiny_space, **{protocol.SEED: "0); __import__('os').system('true'); ("})
    script = run_admin("export", "done", "--format", "python", "--storage", pg_url)
    assert script.returncode == 0 and "__import__('os')" not in script.stdout and "\nSEED = 0\n" in script.stdout
    shown = json.loads(run_admin("best", "done", "--format", "json", "--storage", pg_url).stdout)
    assert shown["seed"] is None


def test_download_writes_only_plain_file_names_inside_out(storage_url: str, tiny_space: Path, tmp_path: Path) -> None:
    create_tiny_study(storage_url, "files", tiny_space, 1, 256, "--no-baseline")
    trial = optuna.load_study(study_name="files", storage=storage_url).ask()  # running: its records may change
    trial.set_user_attr(protocol.HYPERPARAMS, PARAMS)
    store = tmp_path / "store"
    store.mkdir()
    artifact_id = "0b7c3f4e-9d3c-4a7e-8f0e-1d2c3b4a5f60"
    (store / artifact_id).write_text("payload")

    def download(filename: str, out: Path) -> subprocess.CompletedProcess[str]:
        meta = {"artifact_id": artifact_id, "filename": filename, "mimetype": "text/plain", "encoding": None}
        trial.storage.set_trial_system_attr(trial._trial_id, f"artifacts:{artifact_id}", json.dumps(meta))
        return run_admin("download", "files", "--trial", "0", "--storage", storage_url, "--artifact-dir",
                       str(store), "--out", str(out))  # fmt: skip

    assert download("learning_curve.csv", tmp_path / "fine").returncode == 0  # positive control
    assert (tmp_path / "fine" / "learning_curve.csv").read_text() == "payload"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "conftest.py").write_text("# the user's own")
    for hostile in ("../../escaped.txt", str(tmp_path / "absolute.txt"), "..", "conftest.py"):
        for out in (tmp_path / "out", tmp_path / "mine"):
            refused = download(hostile, out)
            assert refused.returncode == 2 and "is not one this service writes" in refused.stderr, refused.stderr
        assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "absolute.txt").exists()
        assert not (tmp_path / "out").exists() and (tmp_path / "mine" / "conftest.py").read_text() == "# the user's own"


def _old_embedded_database(path: Path) -> str:
    """An embedded database created by plain Optuna (as releases before this one did): SQLite reuses its ids."""
    url = f"sqlite:///{path}"
    subprocess.run([sys.executable, "-c", f"import optuna; optuna.storages.RDBStorage({url!r})"], check=True)
    return url


def test_a_late_worker_never_writes_into_the_study_that_took_its_ids(tiny_space: Path, tmp_path: Path) -> None:
    """On an embedded database from an older release, delete --force A then create B: B gets A's ids."""
    from worker.config import WorkerConfig
    from worker.db import Retrier
    from worker.shutdown import ShutdownFlag
    from worker.trial_runner import run_trial
    from worker.trial_session import TrialSession

    url = _old_embedded_database(tmp_path / "studies.sqlite3")
    create_tiny_study(url, "a", tiny_space, 1, 256, "--no-baseline")
    storage = open_storage(url)
    (study_a,) = tuning_studies(storage.engine)
    mine = claim(storage, study_a.study_id, grace_period=120)
    assert mine is not None and lost_claim(storage.engine, mine) is None and beat(storage.engine, mine)
    assert run_admin("delete", "a", "--yes", "--force", "--storage", url).returncode == 0
    create_tiny_study(url, "b", tiny_space, 1, 256, "--no-baseline")
    (study_b,) = tuning_studies(storage.engine)
    (waiting,) = trials_of(url, "b")
    assert (study_b.study_id, waiting._trial_id) == (study_a.study_id, mine.trial_id)  # the ids came back

    assert lost_claim(storage.engine, mine) == "deleted" and beat(storage.engine, mine) is False
    config = WorkerConfig(storage=url, heartbeat_interval=1, grace_period=8)
    session = TrialSession(storage=storage, study=study_a, claim=mine, config=config, shutdown=ShutdownFlag(),
                           retry=Retrier(max_wait=1, deadline=10))  # fmt: skip
    assert run_trial(session) == "dropped"
    (untouched,) = trials_of(url, "b")
    assert untouched.state == TrialState.WAITING and untouched.user_attrs == {} and untouched.params == {}


def test_new_embedded_databases_never_reuse_a_deleted_studys_ids(tiny_space: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    create_tiny_study(url, "a", tiny_space, 1, 256, "--no-baseline")
    (first,) = trials_of(url, "a")
    assert run_admin("delete", "a", "--yes", "--storage", url).returncode == 0
    create_tiny_study(url, "b", tiny_space, 1, 256, "--no-baseline")
    (second,) = trials_of(url, "b")
    assert second._trial_id > first._trial_id


def _dead_owner(storage: optuna.storages.RDBStorage, name: str, grace: float) -> Claim:
    """A trial claimed by a worker that started training and then stopped beating."""
    mine = claim(storage, storage.get_study_id_from_name(name), grace_period=grace)
    assert mine is not None
    storage.set_trial_user_attr(mine.trial_id, protocol.WORKER, "gone:1")
    return mine


def test_a_paused_study_is_still_looked_after(storage_url: str, tiny_space: Path) -> None:
    from tests.test_loop import make_worker

    create_tiny_study(storage_url, "resting", tiny_space, 1, 256, "--no-baseline")
    storage = open_storage(storage_url)
    _dead_owner(storage, "resting", grace=1)
    assert run_admin("pause", "resting", "--storage", storage_url).returncode == 0
    time.sleep(2.5)  # SQLite's CURRENT_TIMESTAMP has whole seconds
    worker = make_worker(storage_url)
    assert worker.run_once() is False  # paused: nothing is handed out...
    dead, retry = trials_of(storage_url, "resting")  # ...but the dead worker's trial is failed and queued again
    assert (dead.state, retry.state) == (TrialState.FAIL, TrialState.WAITING)
    (summary,) = summarise(storage.engine)
    assert (summary.running, summary.workers, summary.state) == (0, 0, "paused")
    assert run_admin("delete", "resting", "--yes", "--storage", storage_url).returncode == 0


def test_text_from_the_database_cannot_drive_the_terminal(storage_url: str, tiny_space: Path) -> None:
    create_tiny_study(storage_url, "noisy", tiny_space, 2, 256, "--no-baseline")
    storage = open_storage(storage_url)
    study_id = storage.get_study_id_from_name("noisy")
    storage.set_study_user_attr(study_id, PAUSED_ATTR, True)
    storage.set_study_user_attr(study_id, PAUSED_REASON_ATTR, "\x1b]0;owned\x07\nnoisy  ppo  fake row")
    study = optuna.load_study(study_name="noisy", storage=storage)
    trial = study.ask()
    trial.set_user_attr(protocol.FAIL_REASON, "boom\x1b[2J")
    study.tell(trial, state=TrialState.FAIL)
    listed = run_admin("list", "--storage", storage_url).stdout
    shown = run_admin("show", "noisy", "--storage", storage_url).stdout
    for out in (listed, shown):
        assert "\x1b" not in out and "\x07" not in out
        assert "\\x1b]0;owned\\x07\\nnoisy  ppo  fake row" in out  # shown, escaped, on its own line
    assert "boom\\x1b[2J" in shown


def test_staleness_is_judged_by_the_owners_grace_period(storage_url: str, tiny_space: Path) -> None:
    create_tiny_study(storage_url, "patient", tiny_space, 2, 256, "--no-baseline")
    storage = open_storage(storage_url)
    study_id = storage.get_study_id_from_name("patient")
    slow = _dead_owner(storage, "patient", grace=60)  # promised a heartbeat within 60 s
    quick = _dead_owner(storage, "patient", grace=1)  # positive control: promised one within 1 s
    time.sleep(2.5)
    done = maintain(storage, study_id, grace_period=1, max_retry=3)  # a worker started with --grace-period 1
    numbers = {t._trial_id: t.number for t in trials_of(storage_url, "patient")}
    assert done.stale == [numbers[quick.trial_id]]
    assert storage.get_trial(slow.trial_id).state == TrialState.RUNNING


def test_a_retry_keeps_the_role_and_none_of_the_dead_runs_files(storage_url: str, tiny_space: Path) -> None:
    from study_contract.engine.creation import create_study
    from study_contract.store.catalog import load_definition
    from study_contract.store.tables import Slot
    from worker.slots import hand_back

    create_tiny_study(storage_url, "stage", tiny_space, 1, 256, "--no-baseline")
    storage = open_storage(storage_url)
    definition = load_definition(storage, "stage")
    roles = {protocol.PREVIOUS_WINNER: True, protocol.KNOWN_GOOD: True}
    create_study(storage, definition, "stage2", fixed=[Slot(PARAMS, dict(roles))])
    mine = claim(storage, storage.get_study_id_from_name("stage2"), grace_period=120)
    assert mine is not None
    for key, value in ((protocol.SEED, 3), (protocol.HYPERPARAMS, PARAMS), (protocol.ENV_STEPS, 128)):
        storage.set_trial_user_attr(mine.trial_id, key, value)
    storage.set_trial_system_attr(mine.trial_id, "artifacts:0b7c3f4e-9d3c-4a7e-8f0e-1d2c3b4a5f60", "{}")
    hand_back(storage, mine.study_id, mine.trial_id, "worker shut down")
    _, retry = trials_of(storage_url, "stage2")
    assert retry.user_attrs == {**roles, protocol.SEED: 3, protocol.HYPERPARAMS: PARAMS}
    assert not [key for key in retry.system_attrs if key.startswith("artifacts:")]


def test_a_study_deleted_and_created_again_is_confirmed_again(storage_url: str, tiny_space: Path) -> None:
    from study_contract.engine.confirmation import confirmation_name
    from study_contract.engine.creation import study_created
    from tests.test_loop import make_worker

    worker = make_worker(storage_url)
    for _ in range(2):
        create_tiny_study(storage_url, "again", tiny_space, 1, 256, "--confirm", "--confirm-top", "1",
                          "--test-seeds", "1", "--no-baseline")  # fmt: skip
        assert worker.run_once() is True and worker.run_once() is True  # the trial, then its confirmation
        assert study_created(worker.storage, confirmation_name("again"))
        for name in ("again:confirm", "again"):
            assert run_admin("delete", name, "--yes", "--storage", storage_url).returncode == 0


def test_deleting_a_campaigns_earlier_stage_does_not_stall_it(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    from study_contract.engine.creation import study_exists
    from tests.conftest import run_worker_in_process
    from tests.test_campaign import _create

    _create(pg_url, "cut", "--no-confirm")
    run_worker_in_process(pg_url, study="cut:1-baseline")  # the baseline, then the coarse stage is created
    assert run_admin("delete", "cut:1-baseline", "--yes", "--storage", pg_url).returncode == 0
    run_worker_in_process(pg_url, study="cut:2-coarse")
    assert study_exists(open_storage(pg_url), "cut:3-schedule")
    shown = run_admin("campaign", "show", "cut", "--format", "json", "--storage", pg_url)
    assert shown.returncode == 0, shown.stderr
    stages = {s["stage"]: s["state"] for s in json.loads(shown.stdout)["stages"]}
    assert stages["baseline"] == "deleted" and stages["coarse"] == "finished"
    assert [r.getMessage() for r in caplog.records if "was deleted" in r.getMessage()] == [
        "campaign stage cut:2-coarse: its previous stage cut:1-baseline was deleted; deciding without its outcome"
    ]


def test_delete_removes_the_studys_artifacts_and_a_late_worker_its_uploads(
    storage_url: str, tiny_space: Path, tmp_path: Path
) -> None:
    from tests.conftest import run_worker_in_process
    from worker.trial_runner import train_with_sb3

    store = tmp_path / "store"
    create_tiny_study(storage_url, "kept", tiny_space, 1, 256, "--no-baseline")
    run_worker_in_process(storage_url, artifact_dir=str(store))
    assert list(store.iterdir())  # positive control: the trial left its curve, model and video
    deleted = run_admin("delete", "kept", "--yes", "--storage", storage_url, "--artifact-dir", str(store))
    assert deleted.returncode == 0 and list(store.iterdir()) == []

    def deleted_while_training(session: Any, trial: Any, params: Any, seed: int) -> Any:
        result = train_with_sb3(session, trial, params, seed)  # uploads the trial's files
        assert run_admin("delete", "late", "--yes", "--force", "--storage", storage_url).returncode == 0
        return result

    create_tiny_study(storage_url, "late", tiny_space, 1, 256, "--no-baseline")
    worker = run_worker_in_process(storage_url, artifact_dir=str(tmp_path / "store2"), train=deleted_while_training)
    assert worker.outcomes == ["dropped"]
    assert list((tmp_path / "store2").iterdir()) == []


def test_passwords_never_show_in_a_url_printed() -> None:
    for url in ("postgresql://u:top@secret@db:5432/x", "postgresql://u@db/x?password=secret&sslmode=disable",
                "postgresql+psycopg2://u:secret@db/x", "postgresql://u:secret@[::1"):  # fmt: skip
        masked = mask_password(url)
        assert "secret" not in masked and "top" not in masked, masked
    assert mask_password("postgresql://u:secret@db:5432/x") == "postgresql://u:***@db:5432/x"


def test_postgresql_urls_as_users_paste_them_work(pg_url: str, tiny_space: Path) -> None:
    plain = pg_url.replace("postgresql+psycopg2://", "postgresql://")
    create_tiny_study(plain, "pasted", tiny_space, 1, 256)
    listed = run_admin("list", "--storage", plain)
    assert listed.returncode == 0 and "pasted" in listed.stdout, listed.stderr
    refused = run_admin("list", "--storage", plain.replace("@", ":x@x@", 1))
    assert refused.returncode == 1 and "percent-encode it as %40" in refused.stderr


def test_a_large_budget_is_written_at_once_or_not_at_all(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    started = time.monotonic()
    args = ["create", "--storage", url, "--algo", "ppo", "--env", "Pendulum-v1", "--n-trials", "100000", "--timesteps",
            "1000"]  # fmt: skip
    create = subprocess.Popen([str(VENV_BIN / "study_admin"), *args, "--name", "big"])
    time.sleep(1.5)
    create.kill()
    create.wait()
    studies = summarise(open_engine(url))
    assert studies == [] or [(s.name, s.waiting, s.error) for s in studies] == [("big", 100000, None)]
    done = run_admin(*args, "--name", "whole", timeout=120)
    assert done.returncode == 0, done.stderr
    whole = next(s for s in summarise(open_engine(url)) if s.name == "whole")
    assert whole.waiting == whole.n_trials == 100000 and whole.mismatch is None
    print(f"100000 trials created in {time.monotonic() - started:.1f} s (with the killed attempt)")


def test_a_study_without_a_definition_is_listed_as_incomplete_and_deleted(storage_url: str) -> None:
    optuna.create_study(study_name="half", storage=storage_url).enqueue_trial({"x": 1})  # as an old creator left it
    listed = run_admin("list", "--storage", storage_url)
    assert "half" in listed.stdout and "incomplete" in listed.stdout
    assert "`study_admin delete` removes it" in listed.stdout
    assert run_admin("delete", "half", "--yes", "--storage", storage_url).returncode == 0
    assert summarise(open_engine(storage_url)) == []


def test_the_worker_refuses_unusable_paths_in_one_line(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    for args, message in (
        (["--health-file", "/nonexistent/dir/alive"], "health_file='/nonexistent/dir/alive': its directory"),
        (["--artifact-dir", "/proc/no-store"], "artifact directory '/proc/no-store' cannot be created"),
    ):
        result = run_cli("worker", "--storage", url, "--until-idle", *args)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


def test_exports_and_reports_write_where_they_can_or_say_why(pg_url: str, tiny_space: Path, tmp_path: Path) -> None:
    _finished(pg_url, tiny_space)
    a_file = tmp_path / "file"
    a_file.write_text("")
    before = snapshot(pg_url)
    for args, message in (
        (["export", "done", "--format", "json", "--out", str(tmp_path)], "is a directory"),
        (["export", "done", "--format", "json", "--out", "/nonexistent/x.json"], "cannot write --out"),
        (["export", "done", "--format", "json", "--trial", "99999999999999999999"], "must be a trial number"),
        (["download", "done", "--out", str(a_file / "sub"), "--artifact-dir", str(tmp_path / "s")], "cannot create"),
        (["report", "nope", "--out", str(tmp_path / "report")], "no study named 'nope'"),
    ):
        result = run_admin(*args, "--storage", pg_url)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "report").exists()
    assert snapshot(pg_url) == before


def test_a_second_default_campaign_gets_a_name_of_its_own(pg_url: str) -> None:
    args = ["campaign", "create", "--storage", pg_url, "--algo", "ppo", "--env", "Pendulum-v1", "--timesteps", "512",
            "--trials-per-stage", "2"]  # fmt: skip
    first, second = run_admin(*args), run_admin(*args)
    assert first.returncode == second.returncode == 0, second.stderr
    assert (first.stdout.strip(), second.stdout.strip()) == (
        "ppo-Pendulum-v1-campaign:1-baseline",
        "ppo-Pendulum-v1-campaign-2:1-baseline",
    )


def test_a_claim_is_told_apart_from_a_later_claim_of_the_same_row(storage_url: str, tiny_space: Path) -> None:
    create_tiny_study(storage_url, "row", tiny_space, 1, 256, "--no-baseline")
    storage = open_storage(storage_url)
    mine = claim(storage, storage.get_study_id_from_name("row"), grace_period=120)
    assert mine is not None
    earlier = Claim(mine.trial_id, mine.study_id, datetime(2000, 1, 1))
    assert lost_claim(storage.engine, earlier) == "deleted" and beat(storage.engine, earlier) is False
    storage.set_trial_state_values(mine.trial_id, state=TrialState.FAIL)
    assert lost_claim(storage.engine, mine) == "finished" and beat(storage.engine, mine) is False
    with storage.engine.connect() as conn:  # the refused beats wrote nothing
        rows = conn.execute(sqlalchemy.text("SELECT COUNT(*) FROM trial_heartbeats")).scalar()
    assert rows == 1
