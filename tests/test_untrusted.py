"""The second review, acting as the worker role (which can write every Optuna table): each test is one of its
reproductions, and shows that the value it wrote does no harm (with a positive control beside it).
"""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from study_contract import protocol
from study_contract.definition import DEFINITION_ATTR
from study_contract.store.artifacts import ARTIFACTS_ATTR_PREFIX
from study_contract.store.catalog import summarise, tuning_studies
from study_contract.store.claims import claim
from study_contract.store.storage import open_engine, open_storage
from tests.conftest import (
    assert_budget_accounted,
    create_tiny_study,
    run_admin,
    run_worker_in_process,
    trials_of,
)
from tests.test_algorithms import _space
from tests.test_trust import PARAMS, _tamper_definition

ARTIFACT_ID = "0b7c3f4e-9d3c-4a7e-8f0e-1d2c3b4a5f60"


def _one_line_refusal(result: Any, message: str, code: int = 2) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def _complete(url: str, name: str, params: dict[str, Any], value: float = -150.0, **attrs: Any) -> None:
    study = optuna.load_study(study_name=name, storage=url)
    trial = study.ask()
    for key, attr in {protocol.HYPERPARAMS: params, protocol.SEED: 7, **attrs}.items():
        trial.set_user_attr(key, attr)
    study.tell(trial, value)


def test_a_stored_space_cannot_widen_what_the_code_accepts(storage_url: str, tmp_path: Path) -> None:
    """Finding 1: an SBX study whose stored activation limits and best trial hold a payload exported code."""
    created = run_admin("create", "--storage", storage_url, "--name", "jax", "--algo", "sac", "--env",
                      "Pendulum-v1", "--backend", "sbx", "--n-trials", "1", "--timesteps", "300", "--no-baseline",
                      "--no-confirm", "--space", str(_space(tmp_path, "sac")))  # fmt: skip
    assert created.returncode == 0, created.stderr
    storage = open_storage(storage_url)
    definition = json.loads(storage.get_study_user_attrs(storage.get_study_id_from_name("jax"))[DEFINITION_ATTR])
    params = {name: spec["value"] if spec["fixed"] else spec["low"] if spec["kind"] != "choice" else spec["choices"][0]
              for name, spec in definition["space"].items()}  # fmt: skip
    _complete(storage_url, "jax", params)
    assert run_admin("export", "jax", "--format", "python", "--storage", storage_url).returncode == 0

    marker = tmp_path / "pwned"
    payload = f"relu if __import__('os').system('touch {marker}') else None"
    activation = definition["space"]["activation"]
    space = {**definition["space"], "activation": {**activation, "limits": [*activation["limits"], payload],
                                                   "choices": [payload], "fixed": True, "value": payload}}  # fmt: skip
    _tamper_definition(storage_url, "jax", space=space)
    study = optuna.load_study(study_name="jax", storage=storage_url)
    trial = study.ask()
    trial.set_user_attr(protocol.HYPERPARAMS, {**params, "activation": payload})
    study.tell(trial, 1e9)
    for fmt in ("python", "zoo", "json"):
        _one_line_refusal(run_admin("export", "jax", "--format", fmt, "--storage", storage_url),
                          "activation: value=")  # fmt: skip
    assert not marker.exists()


POISONED_DEFINITIONS = {
    "unknown algorithm": lambda d: json.dumps({**d, "algo": "dqn", "schema_version": 1}),
    "a string for the space": lambda d: json.dumps({**d, "space": "wide open", "schema_version": 1}),
    "deeply nested JSON": lambda d: "[" * 100_000 + "]" * 100_000,
    "limits wider than the code's": lambda d: json.dumps(
        {**d, "space": {**d["space"], "n_epochs": {**d["space"]["n_epochs"], "limits": [1, 10**9], "high": 10**9}}}
    ),
    "a task Gymnasium imports a module for": lambda d: json.dumps({**d, "env_id": "os:Popen-v0"}),
}


def test_one_unreadable_definition_is_that_studys_error_never_the_fleets(storage_url: str, tiny_space: Path) -> None:
    """Findings 3 and 11: one such study made list and show of every study fail and every worker exit 1."""
    create_tiny_study(storage_url, "fine", tiny_space, 1, 256, "--no-baseline")
    storage = open_storage(storage_url)
    for n, poison in enumerate(POISONED_DEFINITIONS.values()):
        create_tiny_study(storage_url, f"bad{n}", tiny_space, 1, 256, "--no-baseline")
        study_id = storage.get_study_id_from_name(f"bad{n}")
        stored = json.loads(storage.get_study_user_attrs(study_id)[DEFINITION_ATTR])
        storage.set_study_user_attr(study_id, DEFINITION_ATTR, poison(stored))

    listed = run_admin("list", "--format", "json", "--storage", storage_url)
    assert listed.returncode == 0, listed.stderr
    states = {s["name"]: s["state"] for s in json.loads(listed.stdout)}
    assert states == {"fine": "waiting", **{f"bad{n}": "unreadable" for n in range(len(POISONED_DEFINITIONS))}}
    assert run_admin("show", "fine", "--storage", storage_url).returncode == 0
    for n in range(len(POISONED_DEFINITIONS)):
        shown = run_admin("show", f"bad{n}", "--storage", storage_url)
        _one_line_refusal(shown, f"study 'bad{n}' cannot be read")
    worker = run_worker_in_process(storage_url)
    assert worker.outcomes == ["complete"]  # the sound study is served; the others wait, untouched
    assert {t.state for n in range(len(POISONED_DEFINITIONS)) for t in trials_of(storage_url, f"bad{n}")} == {
        TrialState.WAITING
    }


def test_a_lock_holder_that_stalls_past_the_servers_timeout_writes_nothing(
    pg_url: str, tiny_space: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 4: the server ended the stalled holder's session (and lock); another worker restored the slot; the
    stalled one queued it again: 3 WAITING + 1 FAIL for a budget of 2."""
    import worker.slots
    from worker.slots import maintain

    create_tiny_study(pg_url, "stall", tiny_space, 2, 256, "--no-baseline")
    owner = open_engine(pg_url)
    with owner.begin() as conn:
        database = conn.execute(sqlalchemy.text("SELECT current_database()")).scalar_one()
        conn.execute(sqlalchemy.text(f"ALTER DATABASE {database} SET idle_in_transaction_session_timeout = '1s'"))
    storage = open_storage(pg_url)
    study_id = storage.get_study_id_from_name("stall")
    dead = claim(storage, study_id, grace_period=1)
    assert dead is not None
    storage.set_trial_user_attr(dead.trial_id, protocol.WORKER, "gone:1")
    time.sleep(1.5)

    stalled = threading.Event()

    def stall_once(point: str) -> None:
        if point == "reclaim" and not stalled.is_set():  # between failing the stale trial and queueing its retry
            stalled.set()
            time.sleep(3)  # idle in its transaction: the server ends the session, and the lock with it

    monkeypatch.setattr(worker.slots, "crash_point", stall_once)
    errors: list[BaseException] = []

    def slow_maintainer() -> None:
        try:
            maintain(open_storage(pg_url), study_id, grace_period=1, max_retry=3, wait=True)
        except Exception as exc:  # noqa: BLE001 - its connection is gone: what matters is that it wrote nothing
            errors.append(exc)

    thread = threading.Thread(target=slow_maintainer)
    thread.start()
    assert stalled.wait(10)
    time.sleep(1.5)  # the stalled session is ended by now, its lock released
    assert maintain(storage, study_id, grace_period=1, max_retry=3, wait=True).stale  # the other worker restores it
    thread.join(20)
    assert errors, "the stalled holder's writes failed with its session"
    states = sorted(t.state.name for t in trials_of(pg_url, "stall"))
    assert states == ["FAIL", "WAITING", "WAITING"]  # a budget of 2: the failed slot's one retry and the untouched one
    (summary,) = summarise(storage.engine)
    assert summary.mismatch is None


def test_attributes_of_the_wrong_type_count_as_absent(storage_url: str, tiny_space: Path, tmp_path: Path) -> None:
    """Finding 5: a worker, progress or retry_history of the wrong type made list and show exit 1 for every study; a
    confirmation run's candidate as a list broke show, best, export and report; fail reasons as lists made the
    worker exit 1."""
    from worker.study_health import pause_if_failing

    create_tiny_study(storage_url, "done", tiny_space, 1, 256, "--no-baseline")
    _complete(storage_url, "done", PARAMS)
    confirmed = run_admin("confirm", "done", "--top", "1", "--seeds", "1", "--storage", storage_url)
    assert confirmed.returncode == 0, confirmed.stderr
    study = optuna.load_study(study_name="done:confirm", storage=storage_url)
    for _ in range(2):
        trial = study.ask()
        trial.set_user_attr(protocol.CANDIDATE, [0])
        trial.set_user_attr(protocol.HYPERPARAMS, PARAMS)
        study.tell(trial, -120.0)
    create_tiny_study(storage_url, "typed", tiny_space, 6, 256, "--no-baseline", "--pause-after-failures", "3")
    storage = open_storage(storage_url)
    typed = storage.get_study_id_from_name("typed")
    running = claim(storage, typed, grace_period=120)
    assert running is not None
    storage.set_trial_user_attr(running.trial_id, protocol.WORKER, ["host", 1])
    storage.set_trial_user_attr(running.trial_id, protocol.PROGRESS, "fast")
    for _ in range(3):
        failed = claim(storage, typed, grace_period=120)
        assert failed is not None
        storage.set_trial_user_attr(failed.trial_id, protocol.FAIL_REASON, ["boom"])
        storage.set_trial_system_attr(failed.trial_id, protocol.RETRY_HISTORY, "1, 2")
        storage.set_trial_state_values(failed.trial_id, state=TrialState.FAIL)

    assert run_admin("list", "--storage", storage_url).returncode == 0
    for args in (["show", "typed"], ["show", "done"], ["best", "done"], ["export", "done", "--format", "zoo"],
                 ["report", "done", "--out", str(tmp_path / "report")]):  # fmt: skip
        result = run_admin(*args, "--storage", storage_url)
        assert result.returncode == 0, (args, result.stderr)
    (study_typed,) = [s for s in tuning_studies(storage.engine) if s.name == "typed"]
    assert pause_if_failing(storage, study_typed) is False  # reasons that are not text are not "the same way"


def test_a_deleted_confirmation_is_not_created_again(pg_url: str, tiny_space: Path) -> None:
    """Finding 6: "follow-up missing" was read as "follow-up due", and `confirm` then refused because one existed."""
    create_tiny_study(pg_url, "once", tiny_space, 1, 256, "--confirm", "--confirm-top", "1", "--test-seeds", "1",
                      "--no-baseline")  # fmt: skip
    run_worker_in_process(pg_url)
    assert_budget_accounted(pg_url, "once:confirm", 2)  # positive control: created when due
    assert run_admin("delete", "once:confirm", "--yes", "--storage", pg_url).returncode == 0
    worker = run_worker_in_process(pg_url)
    assert worker.outcomes == [] and "once:confirm" not in [s.name for s in tuning_studies(worker.storage.engine)]
    again = run_admin("confirm", "once", "--storage", pg_url)
    assert again.returncode == 0 and again.stdout.strip() == "once:confirm", again.stderr


def _artifact(url: str, name: str, store: Path, filename: str, mimetype: str, body: bytes) -> int:
    """A trial of study ``name`` with one artifact record, as the worker role could write it; the trial's id."""
    _complete(url, name, PARAMS)
    trial = [t for t in trials_of(url, name) if t.state == TrialState.COMPLETE][-1]
    store.mkdir(exist_ok=True)
    (store / ARTIFACT_ID).write_bytes(body)
    meta = {"artifact_id": ARTIFACT_ID, "filename": filename, "mimetype": mimetype, "encoding": None}
    _write_system_attr(url, trial._trial_id, ARTIFACTS_ATTR_PREFIX + ARTIFACT_ID, json.dumps(json.dumps(meta)))
    return trial._trial_id


def _write_system_attr(url: str, trial_id: int, key: str, value_json: str) -> None:
    """A trial system attribute written straight into the table, as the worker role can, finished trial or not."""
    with open_engine(url).begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO trial_system_attributes (trial_id, key, value_json) VALUES (:trial, :key, :value)"
            ),
            {"trial": trial_id, "key": key, "value": value_json},
        )


@pytest.mark.parametrize(("mimetype", "served"), [("text/html", "application/octet-stream"),
                                                  ("video/mp4", "video/mp4")])  # fmt: skip
def test_the_dashboard_serves_artifacts_as_the_types_this_service_writes(
    pg_url: str, tiny_space: Path, tmp_path: Path, mimetype: str, served: str
) -> None:
    """Finding 7: an artifact whose record says text/html was served as text/html, to any origin."""
    from study_admin.dashboard import make_app

    create_tiny_study(pg_url, "shown", tiny_space, 2, 256, "--no-baseline")
    trial_id = _artifact(pg_url, "shown", tmp_path / "store", "rollout.mp4", mimetype, b"<script>alert(1)</script>")
    study_id = open_storage(pg_url).get_study_id_from_name("shown")
    environ: dict[str, Any] = {"PATH_INFO": f"/artifacts/{study_id}/{trial_id}/{ARTIFACT_ID}"}
    setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO()
    answered: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        answered.update(status=status, headers=dict(headers))

    body = b"".join(make_app(pg_url, str(tmp_path / "store"))(environ, start_response))
    assert answered["status"].startswith("200") and body == b"<script>alert(1)</script>"
    headers = answered["headers"]
    assert headers["Content-Type"] == served and headers["X-Content-Type-Options"] == "nosniff"
    assert "Access-Control-Allow-Origin" not in headers and "sandbox" in headers["Content-Security-Policy"]


def test_a_malformed_artifact_record_spoils_nothing_but_itself(
    storage_url: str, tiny_space: Path, tmp_path: Path
) -> None:
    """Finding 8: one record that is not JSON made the study impossible to delete, and broke download and report."""
    create_tiny_study(storage_url, "odd", tiny_space, 2, 256, "--no-baseline")
    store = tmp_path / "store"
    trial_id = _artifact(storage_url, "odd", store, "rollout.mp4", "video/mp4", b"frames")
    _write_system_attr(storage_url, trial_id, ARTIFACTS_ATTR_PREFIX + "x", '"{not json"')
    args = ["--storage", storage_url, "--artifact-dir", str(store)]
    _one_line_refusal(run_admin("download", "odd", "--out", str(tmp_path / "out"), *args),
                      "is not one this service writes")  # fmt: skip
    assert not (tmp_path / "out").exists()
    report = run_admin("report", "odd", "--out", str(tmp_path / "report"), *args)
    assert report.returncode == 0, report.stderr
    deleted = run_admin("delete", "odd", "--yes", "--force", *args)
    assert deleted.returncode == 0, deleted.stderr
    assert list(store.iterdir()) == []  # the sound record's file went with the study


def _dashboard_studies(url: str) -> tuple[str, list[str]]:
    """The dashboard's study list: (HTTP status, the names it lists)."""
    from study_admin.dashboard import make_app

    environ: dict[str, Any] = {"PATH_INFO": "/api/studies"}
    setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO()
    answered: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        answered.update(status=status)

    body = b"".join(make_app(url, None)(environ, start_response))
    if not answered["status"].startswith("200"):
        return answered["status"], []
    return answered["status"], [s["study_name"] for s in json.loads(body)["study_summaries"]]


def test_one_study_attribute_that_is_not_json_hides_no_other_study(storage_url: str, tiny_space: Path) -> None:
    """Found by the poison test: a study attribute stored as '' (not JSON) made the dashboard answer HTTP 500 for
    every study, and create without --name fail, since Optuna decodes every study's attributes to list names."""
    create_tiny_study(storage_url, "fine", tiny_space, 1, 256, "--no-baseline")
    create_tiny_study(storage_url, "odd", tiny_space, 1, 256, "--no-baseline")
    assert _dashboard_studies(storage_url) == ("200 OK", ["fine", "odd"])  # positive control
    with open_engine(storage_url).begin() as conn:
        conn.execute(sqlalchemy.text("INSERT INTO study_user_attributes (study_id, key, value_json) "
                                     "SELECT study_id, 'other', '' FROM studies WHERE study_name = 'odd'"))  # fmt: skip

    assert _dashboard_studies(storage_url) == ("200 OK", ["fine"])
    created = run_admin("create", "--algo", "ppo", "--env", "Pendulum-v1", "--n-trials", "1",
                      "--timesteps", "256", "--no-baseline", "--no-confirm", "--warm-start", "off",
                      "--storage", storage_url)  # fmt: skip
    assert created.returncode == 0 and created.stdout.strip() == "ppo-Pendulum-v1", created.stderr
    _one_line_refusal(run_admin("show", "absent", "--storage", storage_url),
                      "no study named 'absent'; existing studies: fine, odd, ppo-Pendulum-v1")  # fmt: skip


def test_show_writes_names_and_values_from_the_database_escaped(storage_url: str, tiny_space: Path) -> None:
    """Finding 10: hyperparameter names and values reached the terminal as they were."""
    create_tiny_study(storage_url, "loud", tiny_space, 2, 256, "--no-baseline")
    _complete(storage_url, "loud", {"\x1b]0;owned\x07": "\x1b[2J", "n_steps\nforged row": 1})
    shown = run_admin("show", "loud", "--storage", storage_url)
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout and "\nforged row" not in shown.stdout
    assert "\\x1b]0;owned\\x07 = \\x1b[2J" in shown.stdout and "n_steps\\nforged row = 1" in shown.stdout


def test_a_confirmation_keeps_only_each_candidates_best_runs_models(storage_url: str, tiny_space: Path) -> None:
    """Finding 13: confirmations kept every run's model (up to 22 x 100 per study), not each candidate's best."""
    from study_contract.engine.confirmation import plan

    create_tiny_study(storage_url, "done", tiny_space, 1, 256, "--no-baseline")
    _complete(storage_url, "done", PARAMS)
    confirmation, _ = plan(open_storage(storage_url), "done")
    assert confirmation.save_models == "best"  # each run competes with its candidate's other seeds (rivals)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "--algo", "ppo", "--n-trials", "\uff15"], "--n-trials='\uff15' is not a valid int"),
        (["create", "--algo", "ppo", "--env", "Pendulum-v1", "--max-compute", "1e-300"], "max_compute=1e-300"),
        (["create", "--algo", "ppo", "--env", "Pendulum-v1", "--space", "/dev/zero"], "not a regular file"),
        (["create", "--algo", "ppo", "--bogus"], "unrecognized arguments: --bogus"),
        (
            [
                "campaign",
                "create",
                "--algo",
                "ppo",
                "--env",
                "Pendulum-v1",
                "--timesteps",
                "100000",
                "--budget-steps",
                "1",
            ],
            "--budget-steps=1 cannot pay for the campaign's stages",
        ),
        (["dashboard", "--port", "70000"], "must be a TCP port"),
        (["dashboard", "--host", "999.1.1.1", "--port", "18089"], "cannot serve on --host '999.1.1.1'"),
    ],
    ids=["full-width digit", "tiny cap", "space from a device", "unknown flag", "budget too small", "port", "host"],
)
def test_command_line_edges_are_one_line_refusals(tmp_path: Path, args: list[str], message: str) -> None:
    """Finding 14: tracebacks, 19 lines of usage, a space file read until killed, values accepted that make no study."""
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    _one_line_refusal(run_admin(*args, "--storage", url, timeout=60), message)
    assert summarise(open_engine(url)) == []


def test_an_s3_store_without_boto3_is_a_one_line_refusal(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    program = ("import sys; sys.modules['boto3'] = None  # as on a machine without the s3 extra\n"
               "from study_admin.cli import main; sys.exit(main(sys.argv[1:]))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", program, "dashboard", "--storage", url, "--artifact-dir",
                             "s3://bucket", "--port", "18091"], capture_output=True, text=True, timeout=60)  # fmt: skip
    # exit 1, as for any store or database this machine cannot use
    _one_line_refusal(result, "artifact store 's3://bucket' needs boto3: pip install 'locomotion-tuner[s3]'", code=1)


def test_the_help_names_no_empty_default() -> None:
    shown = run_admin("create", "--help").stdout
    assert "default: ]" not in shown and "default: ;" not in shown


def test_jax_caches_are_cleared_after_each_sbx_trial(tmp_path: Path) -> None:
    """Finding 12: SBX workers grew (850 -> 1240 MB over 14 TD3 trials): JAX kept every trial's compiled code."""
    import jax
    import jax.numpy as jnp

    compiled = jax.jit(lambda x: x + 1)
    compiled(jnp.ones(2))
    assert compiled._cache_size() == 1  # type: ignore[attr-defined]
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    created = run_admin("create", "--storage", url, "--name", "jax", "--algo", "sac", "--env",
                      "Pendulum-v1", "--backend", "sbx", "--n-trials", "1", "--timesteps", "120", "--n-evaluations",
                      "1", "--eval-episodes", "1", "--no-confirm", "--space", str(_space(tmp_path, "sac")))  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert run_worker_in_process(url).outcomes == ["complete"]
    assert compiled._cache_size() == 0  # type: ignore[attr-defined]


def test_an_error_that_quotes_the_database_is_one_line_that_cannot_drive_a_terminal(
    tmp_path: Path, tiny_space: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    create_tiny_study(url, "victim", tiny_space, 1, 256)
    _tamper_definition(url, "victim", space={"\x0c\x1b[2J": [None]})  # a form feed and a clear-screen sequence
    shown = run_admin("show", "victim", "--storage", url)
    assert shown.returncode == 2 and shown.stderr.startswith("study_admin: error: study 'victim' cannot be read")
    assert shown.stderr.count("\n") == 1 and "\x1b" not in shown.stderr and "\\x0c\\x1b[2J" in shown.stderr
