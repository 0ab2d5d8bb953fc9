"""study_admin against real storages (PostgreSQL and the embedded default): what a user sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from study_admin.cli import main
from study_contract.algorithms import ALGORITHMS
from tests.conftest import run_admin, run_cli, snapshot
from tests.pg import PostgresCluster, free_port


def admin(url: str, *args: str) -> int:
    return main([args[0], "--storage", url, *args[1:]])


def create_args(space: Path | None = None, *extra: str) -> list[str]:
    args = [
        "create",
        "--algo",
        "ppo",
        "--env",
        "Pendulum-v1",
        "--n-trials",
        "5",
        "--timesteps",
        "256",
        "--n-evaluations",
        "2",
        "--eval-episodes",
        "2",
    ]
    return args + (["--space", str(space)] if space else []) + list(extra)


def admin_json(url: str, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    capsys.readouterr()
    assert admin(url, *args, "--format", "json") == 0
    return json.loads(capsys.readouterr().out)


def test_create_list_show_pause_delete(storage_url: str, tiny_space: Path, capsys) -> None:
    assert admin(storage_url, *create_args(tiny_space)) == 0
    assert admin(storage_url, *create_args(tiny_space)) == 0
    assert capsys.readouterr().out.split() == ["ppo-Pendulum-v1", "ppo-Pendulum-v1-2"]

    listing = admin_json(storage_url, capsys, "list")
    assert [(s["name"], s["state"], s["waiting"], s["n_trials"], s["done"]) for s in listing] == [
        ("ppo-Pendulum-v1", "waiting", 5, 5, 0),
        ("ppo-Pendulum-v1-2", "waiting", 5, 5, 0),
    ]

    assert admin(storage_url, "list") == 0
    table = capsys.readouterr().out
    assert "DONE/BUDGET" in table and "0/5" in table

    assert admin(storage_url, "pause", "ppo-Pendulum-v1") == 0
    assert admin_json(storage_url, capsys, "list")[0]["state"] == "paused"
    assert admin(storage_url, "resume", "ppo-Pendulum-v1") == 0
    assert admin_json(storage_url, capsys, "list")[0]["state"] == "waiting"

    details = admin_json(storage_url, capsys, "show", "ppo-Pendulum-v1")
    assert details["definition"]["timesteps"] == 256 and details["best"] is None

    assert admin(storage_url, "delete", "ppo-Pendulum-v1-2", "--yes") == 0
    assert [s["name"] for s in admin_json(storage_url, capsys, "list")] == ["ppo-Pendulum-v1"]


def test_ppo_rollouts_are_capped_to_the_trial_budget(storage_url: str, capsys) -> None:
    args = ["create", "--algo", "ppo", "--env", "Hopper-v5", "--timesteps", "3000", "--n-envs", "2"]
    args += ["--preset", "guide"]
    assert admin(storage_url, *args) == 0
    details = admin_json(storage_url, capsys, "show", "ppo-Hopper-v5")
    assert details["definition"]["timesteps"] == 3000
    space = details["space"]
    assert (space["n_steps"]["low"], space["n_steps"]["high"]) == (1024, 1024)  # 1024 x 2 envs <= 3000 < 2048 x 2


def test_baseline_is_the_first_trial_and_can_be_turned_off(storage_url: str, tiny_space: Path) -> None:
    import optuna

    assert admin(storage_url, *create_args(tiny_space, "--name", "with")) == 0
    assert admin(storage_url, *create_args(tiny_space, "--name", "without", "--no-baseline")) == 0
    first = optuna.load_study(study_name="with", storage=storage_url).get_trials()[0]
    assert first.user_attrs["baseline"] is True
    assert first.system_attrs["fixed_params"]["learning_rate"] == 3e-4
    assert all(not t.system_attrs for t in optuna.load_study(study_name="without", storage=storage_url).get_trials())


def test_known_good_configurations_follow_the_baseline_inside_the_space(storage_url: str, tmp_path: Path) -> None:
    import optuna

    from study_contract.algorithms import ALGORITHMS

    space = tmp_path / "space.yaml"
    space.write_text("tau: {low: 0.001, high: 0.05}\n")  # narrowed by the user: the known-good points follow
    args = ["create", "--algo", "sac", "--env", "Pendulum-v1", "--timesteps", "5000", "--space", str(space)]
    assert admin(storage_url, *args, "--n-trials", "6", "--name", "started") == 0
    assert admin(storage_url, *args, "--n-trials", "6", "--name", "plain", "--no-known-good") == 0
    assert admin(storage_url, *args, "--n-trials", "1", "--name", "small") == 0
    points = ALGORITHMS["sac"].known_good
    assert points

    def fixed(name: str) -> list[dict[str, Any]]:
        trials = optuna.load_study(study_name=name, storage=storage_url).get_trials()
        return [{**t.user_attrs, **t.system_attrs["fixed_params"]} for t in trials if t.system_attrs]

    baseline, *started = fixed("started")
    assert baseline["baseline"] is True and all(t["known_good"] is True for t in started)
    assert [t["learning_rate"] for t in started] == [p.params["learning_rate"] for p in points]
    taus = [p.params["tau"] for p in points]
    assert [t["tau"] for t in started] == [min(tau, 0.05) for tau in taus] != taus
    assert [t["baseline"] for t in fixed("plain")] == [True]
    assert [t["baseline"] for t in fixed("small")] == [True]  # the baseline comes first in a small budget


def test_study_stays_a_plain_optuna_study(pg_url: str, tiny_space: Path) -> None:
    assert admin(pg_url, *create_args(tiny_space, "--name", "plain")) == 0
    out = subprocess.run(
        [str(Path(sys.executable).parent / "optuna"), "studies", "--storage", pg_url, "-f", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert [s["name"] for s in json.loads(out)] == ["plain"]


def test_console_script_answers_without_heavy_imports(tmp_path: Path) -> None:
    code = (
        "import sys; from study_admin.cli import main; main(['list']); "
        "heavy = [m for m in ('torch', 'stable_baselines3', 'mujoco', 'optuna', 'alembic') if m in sys.modules]; "
        "sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "TUNER_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "no studies" in result.stdout


def test_embedded_default_needs_no_url(tmp_path: Path) -> None:
    env = {"TUNER_DATA_DIR": str(tmp_path / "data")}
    created = run_cli(
        "study_admin",
        "create",
        "--algo",
        "sac",
        "--env",
        "InvertedPendulum-v5",
        "--n-trials",
        "3",
        "--timesteps",
        "1000",
        env=env,
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "sac-InvertedPendulum-v5"
    assert (tmp_path / "data" / "studies.sqlite3").exists()
    listed = run_cli("study_admin", "list", env=env)
    assert "sac-InvertedPendulum-v5" in listed.stdout and "0/3" in listed.stdout


def test_delete_asks_and_keeps_the_study_without_yes(storage_url: str, tiny_space: Path) -> None:
    assert admin(storage_url, *create_args(tiny_space, "--name", "keep")) == 0
    refused = run_cli("study_admin", "delete", "keep", "--storage", storage_url, stdin="n\n")
    assert refused.returncode != 0 and "not deleted" in refused.stderr
    agreed = run_cli("study_admin", "delete", "keep", "--storage", storage_url, stdin="y\n")
    assert agreed.returncode == 0 and "keep: deleted" in agreed.stdout


BAD_SPACES = {
    "hostile.yaml": "!!python/object/apply:os.system ['touch /tmp/pwned']\n",
    "huge.yaml": "n_epochs: 1000000000000000000000000000000\n",
    "inverted.yaml": "learning_rate: {low: 0.01, high: 0.0001}\n",
    "unknown.yaml": "entropy: 0.01\n",
    "broken.yaml": "learning_rate: {low: 0.01\n",
    "nofit.yaml": "n_steps: 64\nbatch_size: {low: 128, high: 256}\n",
}

# (arguments after "study_admin", expected fragment of the one-line error); {space} = the space dir.
BAD_ADMIN_INPUT = [
    (["create", "--algo", "dqn", "--env", "Pendulum-v1"], f"--algo='dqn' is not one of {list(ALGORITHMS)}"),
    (
        ["create", "--algo", "ppo", "--env", "Halfcheetah-v5"],
        "unknown environment 'Halfcheetah-v5'; did you mean 'HalfCheetah-v5'?",
    ),
    (["create", "--algo", "ppo", "--env", "Nope-v0"], "unknown environment 'Nope-v0'"),
    (["create", "--algo", "ppo", "--n-trials", "0"], "--n-trials=0 is outside the accepted range"),
    (["create", "--algo", "ppo", "--timesteps", "-5"], "--timesteps=-5 is outside the accepted range [1, 1000000000]"),
    (["create", "--algo", "ppo", "--env", "Pendulum-v1", "--n-trials", "ten"], "--n-trials='ten' is not a valid int"),
    (["create", "--algo", "ppo", "--seed", "50000000000"], "--seed=50000000000 is outside the accepted range [0, 21"),
    (["create", "--algo", "ppo", "--n-trials", "100001"], "--n-trials=100001 is outside the accepted range [1, 10"),
    (["create", "--algo", "ppo", "--n-envs", "65"], "--n-envs=65 is outside the accepted range [1, 64]"),
    (["create", "--algo", "ppo", "--eval-episodes", "0"], "--eval-episodes=0 is outside the accepted range [1, 1000]"),
    (["create", "--algo", "ppo", "--max-retry", "11"], "--max-retry=11 is outside the accepted range [0, 10]"),
    (["create", "--algo", "ppo", "--preset", "huge"], "--preset='huge' is not one of ['budget', 'guide']"),
    (["create", "--algo", "ppo", "--backend", "sbx"], "backend='sbx' is not one of ['sb3'] for ppo"),
    (["create", "--algo", "td3", "--preset", "guide"], "space preset 'guide' is not one of ['budget'] for td3"),
    (["create", "--algo", "ppo", "--name", "a b"], "study name 'a b' must be 1-100 characters"),
    (["create", "--algo", "ppo", "--name", "x" * 101], "must be 1-100 characters"),
    (["create", "--algo", "ppo", "--name", ".hidden"], "starting with a letter or digit"),
    (["create", "--algo", "ppo", "--name", "abc\n"], "study name 'abc\\n' must be 1-100 characters"),
    (
        ["create", "--algo", "ppo", "--env", "Pendulum-v1", "--timesteps", "1"],
        "SB3's PPO needs rollouts and minibatches of at least 2 env-steps",
    ),
    (
        ["create", "--algo", "ppo", "--env", "Pendulum-v1", "--timesteps", "1000", "--n-evaluations", "999999"],
        "--n-evaluations=999999 exceeds --timesteps=1000",
    ),
    (
        [
            "campaign",
            "create",
            "--algo",
            "ppo",
            "--env",
            "Pendulum-v1",
            "--timesteps",
            "1000",
            "--stage",
            "coarse:trials=0",
        ],
        "trials=0 is outside the accepted range [1, 100000]",
    ),  # fmt: skip
    (
        [
            "campaign",
            "create",
            "--algo",
            "ppo",
            "--env",
            "Pendulum-v1",
            "--timesteps",
            "1000",
            "--stage",
            "coarse:fidelity=0.0001",
        ],
        "campaign stage coarse (1 env-steps per trial): n_steps x n_envs=1",
    ),  # fmt: skip
    (
        ["create", "--algo", "ppo", "--env", "Pendulum-v1", "--eval-every", "10", "--n-evaluations", "3"],
        "give --eval-every or --n-evaluations, not both",
    ),
    (
        ["create", "--algo", "ppo", "--env", "Pendulum-v1", "--timesteps", "100", "--eval-every", "500"],
        "eval_every=500 exceeds timesteps=100",
    ),
    (
        ["create", "--algo", "ppo", "--env", "Pendulum-v1", "--sampler", "cmaes"],
        "--sampler='cmaes' is not one of ['tpe', 'random']",
    ),
    (["create", "--algo", "ppo", "--env", "Pendulum-v1", "--pruner", "often"], "--pruner='often' is not one of"),
    (["create", "--algo", "ppo", "--env", "Pendulum-v1", "--space", "{space}/missing.yaml"], "cannot be read"),
    (["create", "--algo", "ppo", "--env", "Pendulum-v1", "--space", "{space}/hostile.yaml"], "is not plain YAML data"),
    (["create", "--algo", "ppo", "--env", "Pendulum-v1", "--space", "{space}/huge.yaml"], "outside the accepted range"),
    (["create", "--algo", "ppo", "--env", "Pendulum-v1", "--space", "{space}/inverted.yaml"], "low=0.01 > high=0.0001"),
    (
        ["create", "--algo", "ppo", "--env", "Pendulum-v1", "--space", "{space}/unknown.yaml"],
        "unknown ppo parameter 'entropy'",
    ),
    (["create", "--algo", "ppo", "--env", "Pendulum-v1", "--space", "{space}/broken.yaml"], "is not plain YAML data"),
    (
        ["create", "--algo", "ppo", "--env", "Pendulum-v1", "--space", "{space}/nofit.yaml"],
        "batch_size up to 256 does not fit the smallest rollout n_steps x n_envs=64 x 1=64",
    ),
    (
        ["create", "--algo", "ppo", "--env", "Pendulum-v1", "--name", "existing"],
        "a study named 'existing' already exists",
    ),
    (["show", "ghost"], "no study named 'ghost'; existing studies: existing"),
    (["best", "ghost"], "no study named 'ghost'"),
    (["best", "existing"], "study 'existing' has no completed trial yet"),
    (["pause", "ghost"], "no study named 'ghost'"),
    (["delete", "ghost", "--yes"], "no study named 'ghost'"),
    (["list", "--format", "xml"], "invalid choice: 'xml'"),
]


@pytest.mark.parametrize(
    ("args", "message"), BAD_ADMIN_INPUT, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_bad_input_is_one_clear_line_and_writes_nothing(
    storage_url: str, tiny_space: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    for name, text in BAD_SPACES.items():
        (tmp_path / name).write_text(text)
    assert admin(storage_url, *create_args(tiny_space, "--name", "existing")) == 0
    before = snapshot(storage_url)
    result = run_admin(*[a.format(space=tmp_path) for a in args], env={"DATABASE_URL": storage_url})
    assert result.returncode != 0
    error_line = result.stderr.strip().splitlines()[-1]  # argparse prints its usage above it
    assert error_line.startswith("study_admin") and message in error_line
    assert snapshot(storage_url) == before
    assert not Path("/tmp/pwned").exists()


def test_bad_database_urls_are_named_without_the_password(postgres: PostgresCluster, tmp_path: Path) -> None:
    cases = [
        (postgres.url("postgres", password="wrong-secret"), "password authentication failed"),
        (postgres.url("postgres", user="nobody"), "password authentication failed"),
        (postgres.url("no_such_db"), 'database "no_such_db" does not exist'),
        (f"postgresql+psycopg2://u:wrong-secret@127.0.0.1:{free_port()}/db", "Connection refused"),
        ("postgresql+psycopg2://u:wrong-secret@127.0.0.1:99999/db", "port 99999 is outside 1-65535"),
        ("mysql://u:wrong-secret@localhost/db", "scheme 'mysql' is not supported"),
        ("not a url", "is malformed"),
    ]
    before = snapshot(postgres.url("postgres"))
    for url, message in cases:
        result = run_cli("study_admin", "list", "--storage", url)
        assert result.returncode == 1, (url, result.stderr)
        assert message in result.stderr, (url, result.stderr)
        assert "wrong-secret" not in result.stderr and "Traceback" not in result.stderr
    unwritable = run_cli("study_admin", "list", "--data-dir", "/proc/no-such-dir")
    assert unwritable.returncode == 1 and "data directory '/proc/no-such-dir' cannot be created" in unwritable.stderr
    assert snapshot(postgres.url("postgres")) == before


def test_best_is_reported_as_sb3_keyword_arguments(pg_url: str, tiny_space: Path, capsys) -> None:
    import optuna

    assert admin(pg_url, *create_args(tiny_space, "--name", "done", "--no-baseline")) == 0
    study = optuna.load_study(study_name="done", storage=pg_url)
    trial = study.ask()
    trial.set_user_attr(
        "hyperparams",
        {
            "learning_rate": 1e-3,
            "lr_schedule": "linear",
            "n_steps": 128,
            "batch_size": 64,
            "n_epochs": 2,
            "ent_coef": 0.0,
            "gamma": 0.99,
            "gae_lambda": 0.95,
            "clip_range": 0.2,
            "max_grad_norm": 0.5,
            "net_arch": "tiny",
            "activation": "relu",
            "normalize": True,
        },
    )
    study.tell(trial, -150.0)
    capsys.readouterr()
    assert admin(pg_url, "best", "done", "--format", "yaml") == 0
    best = yaml.safe_load(capsys.readouterr().out)
    assert best["kwargs"]["policy_kwargs"] == {"net_arch": [32, 32], "activation_fn": "torch.nn.ReLU"}
    assert best["learning_rate_schedule"] == "linear"
    assert best["learning_rate_formula"] == "progress_remaining * 0.001"
    assert best["normalize_observations"] is True


def test_choosing_sbx_says_where_it_learned_worse(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    args = [
        "create",
        "--storage",
        url,
        "--algo",
        "sac",
        "--env",
        "Pendulum-v1",
        "--n-trials",
        "2",
        "--timesteps",
        "500",
    ]
    plain = run_cli("study_admin", *args)
    assert plain.returncode == 0 and plain.stderr == ""  # positive control: SB3 needs no note
    jax = run_cli("study_admin", *args, "--backend", "sbx")
    assert (
        jax.returncode == 0
        and jax.stderr.startswith("note: SBX trains about twice as fast")
        and "learned worse" in jax.stderr
    )
