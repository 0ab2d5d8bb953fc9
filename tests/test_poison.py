"""The poison test: whatever the worker role writes into one study, no command, worker or dashboard route is harmed.

The worker role can write every Optuna table. Hypothesis generates hostile values (wrong types, huge numbers,
deep nesting, NaN, control characters, paths, code-looking text, text that is not JSON at all) and writes one into
a study's or a trial's attribute, a field of the stored definition, a parameter's value or distribution, a
trial's value, its learning curve, or an artifact record of the "victim" study, straight into the tables. Then
every command runs on the victim (``list``, ``show``, ``best``, ``export`` in every format, ``download``,
``report``, ``campaign list`` and ``show``, ``create`` warm-started from it, and ``delete`` last), a worker loop
looks after the database, and the dashboard lists the studies and serves the victim's artifacts. Each either works
or refuses the victim with one line; none raises, writes outside its ``--out``, runs code, or changes what another
study ("bystander") shows.

``POISON_SEED`` reproduces a run (the seed is printed); ``POISON_EXAMPLES`` sets how many values each storage gets.
"""

from __future__ import annotations

import ast
import contextlib
import gc
import io
import json
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
import sqlalchemy
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from optuna.trial import TrialState

from study_contract import protocol
from study_contract.definition import DEFINITION_ATTR, FOLLOW_UP_ATTR, PAUSED_ATTR, PAUSED_REASON_ATTR
from study_contract.engine.confirmation import create_confirmation
from study_contract.engine.stages import OUTCOME_ATTR
from study_contract.store.artifacts import ARTIFACTS_ATTR_PREFIX, CURVE, FILES, MODEL
from study_contract.store.storage import open_engine, open_storage
from study_contract.store.tables import FIXED_PARAMS
from tests.conftest import create_tiny_study
from tests.test_trust import PARAMS

pytestmark = pytest.mark.slow
SEED = int(os.environ.get("POISON_SEED") or random.SystemRandom().randrange(2**32))
EXAMPLES = int(os.environ.get("POISON_EXAMPLES", "12"))
MARKER = "/tmp/poison-ran-code"
CODE = f"__import__('os').system('touch {MARKER}')"
ARTIFACT_ID = "5e1f0a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"

LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["../../escaped", "/etc/passwd", "conftest.py", CODE, f"relu if {CODE} else None", "relu",
                     "baseline", "text/html", "\x1b]0;owned\x07", "1e-4", "model.zip", "x" * 5000, "tiny", "",
                     "ppo", "sbx", "Pendulum-v1", "os:Popen-v0", "confirmation", "tuning", -1, 0, 2**31, 1e308]),
)  # fmt: skip
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=8,
)
# Stored text that is not JSON, or JSON nested deeper than any parser recurses.
RAW = st.one_of(st.text(max_size=30), st.integers(50, 5000).map(lambda n: "[" * n + "]" * n))


@st.composite
def poisons(draw: st.DrawFn) -> tuple[str, str, Any, bool]:
    """(where, key, value, raw): one hostile write into the victim study."""
    where = draw(st.sampled_from(["study_user", "definition", "space", "trial_user", "trial_system", "artifact",
                                  "param_value", "param_distribution", "value", "curve"]))  # fmt: skip
    keys = {
        "study_user": [DEFINITION_ATTR, PAUSED_ATTR, PAUSED_REASON_ATTR, FOLLOW_UP_ATTR, OUTCOME_ATTR, "other"],
        "definition": ["algo", "env_id", "n_trials", "timesteps", "eval_every", "backend", "stage", "parent",
                       "campaign", "space", "schema_version", "max_compute", "policy", "space_preset", "seed"],
        "space": ["learning_rate", "activation", "net_arch", "n_steps", "batch_size", "lr_schedule", "normalize"],
        "trial_user": [*protocol.USER_ATTRS, "other"],
        "trial_system": [*protocol.SYSTEM_ATTRS, FIXED_PARAMS, "constraints"],
        "artifact": ["filename", "artifact_id", "mimetype", "encoding", "record"],
        "param_value": ["learning_rate", "n_epochs"],
        "param_distribution": ["learning_rate", "n_epochs"],
        "value": ["value"],
        "curve": ["curve"],
    }[where]  # fmt: skip
    key = draw(st.sampled_from(keys))
    raw = where in ("study_user", "trial_user", "trial_system", "param_distribution") and draw(st.booleans())
    value = draw(RAW if raw else VALUES)
    if where in ("param_value", "value", "curve"):
        value = draw(st.floats(allow_nan=True, allow_infinity=True))
    return where, key, value, raw


def _victim(url: str, store: Path) -> None:
    """A finished study with its confirmation and artifacts (the victim), and a finished study beside it."""
    space = store.parent / "tiny.yaml"
    space.write_text("n_steps: {low: 64, high: 128}\nbatch_size: {low: 32, high: 64}\nn_epochs: {low: 1, high: 2}\n"
                     "net_arch: tiny\n")  # fmt: skip
    for name in ("victim", "bystander"):
        create_tiny_study(url, name, space, 2, 256, "--no-baseline")
        study = optuna.load_study(study_name=name, storage=url)
        for number in range(2):
            trial = study.ask({"learning_rate": optuna.distributions.FloatDistribution(1e-5, 3e-3, log=True),
                               "n_epochs": optuna.distributions.IntDistribution(1, 2)})  # fmt: skip
            for key, value in ((protocol.HYPERPARAMS, PARAMS), (protocol.SEED, number), (protocol.WORKER, "w:1"),
                               (protocol.RELATIVE_COMPUTE, 0.5), (protocol.ENV_STEPS, 256)):  # fmt: skip
                trial.set_user_attr(key, value)
            trial.report(-200.0 + number, step=128)
            study.tell(trial, -150.0 + number)
    storage = open_storage(url)
    create_confirmation(storage, "victim", top=1, seeds=1)
    confirmation = optuna.load_study(study_name="victim:confirm", storage=url)
    for _ in range(2):
        trial = confirmation.ask()
        confirmation.tell(trial, -140.0)
    store.mkdir(exist_ok=True)
    for filename in (MODEL, CURVE):
        artifact_id = ARTIFACT_ID if filename == MODEL else ARTIFACT_ID.replace("5e", "6e", 1)
        (store / artifact_id).write_bytes(b"payload")
        meta = {"artifact_id": artifact_id, "filename": filename, "mimetype": FILES[filename], "encoding": None}
        _write(url, "trial_system", _victim_trial(url), ARTIFACTS_ATTR_PREFIX + artifact_id, json.dumps(meta))


def _victim_trial(url: str) -> int:
    """The id of the victim's best trial (number 1)."""
    with open_engine(url).connect() as conn:
        return int(conn.execute(sqlalchemy.text(
            "SELECT t.trial_id FROM trials t JOIN studies s ON s.study_id = t.study_id WHERE s.study_name = 'victim' "
            "AND t.number = 1")).scalar_one())  # fmt: skip


def _study_id(url: str) -> int:
    with open_engine(url).connect() as conn:
        query = sqlalchemy.text("SELECT study_id FROM studies WHERE study_name = 'victim'")
        return int(conn.execute(query).scalar_one())


TABLES = {"study_user": ("study_user_attributes", "study_id"), "trial_user": ("trial_user_attributes", "trial_id"),
          "trial_system": ("trial_system_attributes", "trial_id")}  # fmt: skip


def _write(url: str, where: str, owner: int, key: str, value_json: str) -> None:
    """Set one attribute straight in its table, as the worker role can (finished trial or not)."""
    table, column = TABLES[where]
    with open_engine(url).begin() as conn:
        conn.execute(sqlalchemy.text(f"DELETE FROM {table} WHERE {column} = :owner AND key = :key"),
                     {"owner": owner, "key": key})  # fmt: skip
        conn.execute(sqlalchemy.text(f"INSERT INTO {table} ({column}, key, value_json) VALUES (:owner, :key, :value)"),
                     {"owner": owner, "key": key, "value": value_json})  # fmt: skip


def _dumps(value: Any) -> str:
    return json.dumps(value)  # NaN and Infinity as Python writes them: Optuna's reader takes them


def _poison(url: str, where: str, key: str, value: Any, raw: bool) -> None:
    trial_id, study_id = _victim_trial(url), _study_id(url)
    text = value if raw else _dumps(value)
    engine = open_engine(url)
    if where in ("study_user", "trial_user", "trial_system"):
        _write(url, where, study_id if where == "study_user" else trial_id, key, text)
    elif where in ("definition", "space"):
        with engine.connect() as conn:
            stored = json.loads(json.loads(conn.execute(sqlalchemy.text(
                "SELECT value_json FROM study_user_attributes WHERE study_id = :s AND key = :k"),
                {"s": study_id, "k": DEFINITION_ATTR}).scalar_one()))  # fmt: skip
        if where == "definition":
            stored[key] = value
        else:
            stored["space"][key] = value if not isinstance(value, dict) else {**stored["space"][key], **value}
        _write(url, "study_user", study_id, DEFINITION_ATTR, _dumps(json.dumps(stored)))
    elif where == "artifact":
        meta = {"artifact_id": ARTIFACT_ID, "filename": MODEL, "mimetype": FILES[MODEL], "encoding": None}
        record = value if key == "record" else {**meta, key: value}
        _write(url, "trial_system", trial_id, ARTIFACTS_ATTR_PREFIX + ARTIFACT_ID, _dumps(_dumps(record)))
    else:
        statements = {
            "param_value": "UPDATE trial_params SET param_value = :v WHERE trial_id = :t AND param_name = :k",
            "param_distribution": "UPDATE trial_params SET distribution_json = :v WHERE trial_id = :t AND "
                                  "param_name = :k",
            "value": "UPDATE trial_values SET value = :v WHERE trial_id = :t",
            "curve": "UPDATE trial_intermediate_values SET intermediate_value = :v WHERE trial_id = :t",
        }  # fmt: skip
        bound = text if where == "param_distribution" else value
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(statements[where]), {"v": bound, "t": trial_id, "k": key})
    engine.dispose()


def _run(*argv: str, cwd: Path) -> tuple[int, str, str]:
    """A study_admin command in this process: (exit code, stdout, stderr); an exception fails the test."""
    from study_admin.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), contextlib.chdir(cwd):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def _no_code_in(script: str) -> None:
    """A generated script calls nothing the template does not: an injected value stays a string literal."""
    tree = ast.parse(script)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert "__import__" not in names and "system" not in attributes and "os" not in names, script


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def _check_commands(url: str, store: Path, work: Path) -> None:
    bystander = [("show", "bystander", "--format", "json"), ("best", "bystander", "--format", "json"),
                 ("export", "bystander", "--format", "python")]  # fmt: skip
    before = [_run(*args, "--storage", url, cwd=work) for args in bystander]
    outside = _files_under(work)
    commands = [
        ("list",), ("list", "--format", "json"), ("show", "victim"), ("show", "victim", "--format", "json"),
        ("best", "victim", "--format", "yaml"), ("best", "victim", "--format", "python"),
        ("export", "victim", "--format", "zoo"), ("export", "victim", "--format", "python"),
        ("export", "victim", "--format", "json"), ("export", "victim", "--format", "python", "--trial", "1"),
        ("download", "victim", "--out", str(work / "download"), "--artifact-dir", str(store)),
        ("report", "victim", "--out", str(work / "report")), ("campaign", "list"), ("campaign", "show", "victim"),
        ("show", "victim:confirm"), ("delete", "victim:confirm", "--yes", "--force", "--artifact-dir", str(store)),
        ("show", "victim", "--trial", "1"), ("show", "victim", "--trial", "1", "--format", "json"),
        ("create", "--algo", "ppo", "--env", "Pendulum-v1", "--n-trials", "4", "--timesteps", "256", "--no-confirm",
         "--warm-start", "victim"),
    ]  # fmt: skip
    for args in commands:
        code, out, err = _run(*args, "--storage", url, cwd=work)
        assert code in (0, 2), (args, code, err)
        if code:
            assert len(err.strip().splitlines()) == 1 and err.startswith("study_admin"), (args, err)
        if args[0] in ("best", "export") and "python" in args and code == 0:
            _no_code_in(out)
    written = _files_under(work) - outside
    allowed = (work / "download", work / "report")
    assert all(any(p.is_relative_to(a) for a in allowed) for p in written), written
    assert {p.name for p in written if p.is_relative_to(work / "download")} <= set(FILES)
    after = [_run(*args, "--storage", url, cwd=work) for args in bystander]
    assert after == before, "a poisoned study changed what another study shows"


def _check_worker(url: str) -> None:
    from tests.test_loop import make_worker

    worker = make_worker(url)
    for _ in range(3):
        worker.run_once()  # a finished victim: looked after and followed up, never a crash
    worker.is_idle()
    worker.storage.engine.dispose()


def _check_dashboard(url: str, store: Path) -> None:
    from study_admin.dashboard import make_app

    app = make_app(url, str(store))
    for path in (f"/artifacts/{_study_id(url)}/{_victim_trial(url)}/{ARTIFACT_ID}", "/api/studies"):
        environ: dict[str, Any] = {"PATH_INFO": path}
        setup_testing_defaults(environ)
        environ["wsgi.input"] = io.BytesIO()
        answered: dict[str, Any] = {}

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None, box: Any = answered) -> None:
            box.update(status=status, headers=dict(headers))

        body = b"".join(app(environ, start))
        if path == "/api/studies":  # one study's rows never hide the others
            assert answered["status"].startswith("200") and "bystander" in body.decode(), answered
        else:
            headers = answered["headers"]
            assert headers.get("Content-Type") in (*FILES.values(), "application/octet-stream"), headers
            assert "Access-Control-Allow-Origin" not in headers and headers["X-Content-Type-Options"] == "nosniff"


@contextlib.contextmanager
def _copy_of(base: str, postgres: Any, tmp: Path, index: list[int]) -> Iterator[str]:
    """A fresh copy of the base database for one example."""
    index[0] += 1
    if base.startswith("sqlite"):
        path = tmp / f"copy{index[0]}.sqlite3"
        shutil.copy(base.removeprefix("sqlite:///"), path)
        yield f"sqlite:///{path}"
        return
    name = f"poison_{os.getpid()}_{index[0]}"
    postgres.execute(f"CREATE DATABASE {name} TEMPLATE {base.rsplit('/', 1)[1]}")
    try:
        yield postgres.url(name)
    finally:
        gc.collect()  # close the connections the commands left in their pools


@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])
def test_no_value_the_worker_role_writes_harms_a_command_a_worker_or_another_study(
    storage: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    print(f"poison seed {SEED} (POISON_SEED={SEED} reproduces this run)")
    store = tmp_path / "store"
    postgres = request.getfixturevalue("postgres") if storage == "postgresql" else None
    if postgres is not None:
        postgres.execute(f"CREATE DATABASE poison_base_{os.getpid()}")
        base = postgres.url(f"poison_base_{os.getpid()}")
    else:
        base = f"sqlite:///{tmp_path / 'base.sqlite3'}"
    _victim(base, store)
    gc.collect()
    index = [0]

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              print_blob=True)  # fmt: skip
    @given(poison=poisons())
    def harmless(poison: tuple[str, str, Any, bool]) -> None:
        with _copy_of(base, postgres, tmp_path, index) as url:
            example_store = tmp_path / f"store{index[0]}"
            shutil.copytree(store, example_store)
            work = tmp_path / f"work{index[0]}"
            work.mkdir()
            _poison(url, *poison)
            _check_dashboard(url, example_store)
            _check_worker(url)
            _check_commands(url, example_store, work)
            assert not Path(MARKER).exists(), "a value from the database ran as code"
            code, _, err = _run("delete", "victim", "--yes", "--force", "--artifact-dir", str(example_store),
                                "--storage", url, cwd=work)  # fmt: skip
            assert code == 0, err  # whatever it holds, a study can be deleted
            sound = example_store / ARTIFACT_ID.replace("5e", "6e", 1)  # the curve, whose record is untouched
            assert not sound.exists(), "the victim's files went with it"

    harmless()


def test_the_poison_base_is_sound(tmp_path: Path) -> None:
    """Positive control: before any poison, every command works on the victim and its files download."""
    store = tmp_path / "store"
    url = f"sqlite:///{tmp_path / 'base.sqlite3'}"
    _victim(url, store)
    work = tmp_path / "work"
    work.mkdir()
    for args in (
        ("show", "victim"),
        ("best", "victim", "--format", "json"),
        ("export", "victim", "--format", "zoo"),
        ("download", "victim", "--trial", "1", "--out", str(work / "d"), "--artifact-dir", str(store)),
    ):
        code, _, err = _run(*args, "--storage", url, cwd=work)
        assert code == 0, (args, err)
    assert {p.name for p in (work / "d").iterdir()} == {MODEL, CURVE}
    assert [t.state for t in optuna.load_study(study_name="victim:confirm", storage=url).trials] == [
        TrialState.COMPLETE
    ] * 2
