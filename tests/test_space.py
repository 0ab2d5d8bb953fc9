"""Search spaces, the algorithm registry, sampling and schedules: pure functions, no database, no training."""

from __future__ import annotations

import math

import optuna
import pytest

from study_contract.algorithms import algorithm
from study_contract.schedules import SCHEDULES, formula, make_schedule, source
from study_contract.space import SpaceError, apply_overrides, read_space_file

optuna.logging.set_verbosity(optuna.logging.WARNING)

# The tuning guide's tables (../shared/seed/hyperparameter-tuning-guide.md, section 1).
GUIDE_RANGES = {
    "ppo": {
        "learning_rate": (1e-5, 1e-3),
        "n_steps": (1024, 8192),
        "batch_size": (64, 512),
        "n_epochs": (3, 20),
        "ent_coef": (0.0, 0.01),
    },
    "sac": {
        "learning_rate": (1e-4, 1e-3),
        "buffer_size": (100_000, 1_000_000),
        "batch_size": (256, 1024),
        "tau": (0.005, 0.02),
        "train_freq": (1, 64),
        "gradient_steps": (1, 64),
    },
}
POW2 = {"n_steps", "batch_size", "train_freq", "gradient_steps"}


def sample_many(algo: str, space: dict, n_envs: int = 1, n: int = 300) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    samples = []
    for _ in range(n):
        trial = study.ask()
        samples.append(algorithm(algo).sample(trial, space, n_envs))
        study.tell(trial, 0.0)
    return samples


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_guide_preset_samples_exactly_the_guides_ranges(algo: str) -> None:
    samples = sample_many(algo, algorithm(algo).space("guide", 10_000_000, 1))
    for name, (low, high) in GUIDE_RANGES[algo].items():
        values = [s[name] for s in samples]
        assert min(values) >= low and max(values) <= high, name
        assert min(values) < low + (high - low) / 3 and max(values) > high - (high - low) / 3, name
        if name in POW2:
            assert all(v & (v - 1) == 0 for v in values), name
    assert {s["lr_schedule"] for s in samples} == set(SCHEDULES)


@pytest.mark.parametrize("timesteps", [2048, 30_000, 1_000_000])
def test_ppo_budget_preset_leaves_enough_updates_and_valid_minibatches(timesteps: int) -> None:
    for n_envs in (1, 2, 4):
        space = algorithm("ppo").space("budget", timesteps, n_envs)
        for s in sample_many("ppo", space, n_envs=n_envs, n=100):
            rollout = s["n_steps"] * n_envs
            assert s["batch_size"] <= rollout
            assert rollout <= max(timesteps // 10, 16 * n_envs)  # at least ten policy updates when it can
        assert space["gamma"].fixed is False and space["activation"].fixed is False


def test_sizes_are_stored_as_their_real_values_so_the_dashboard_shows_them() -> None:
    space = algorithm("ppo").space("guide", 1_000_000, 1)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    params = algorithm("ppo").sample(trial, space, 1)
    assert trial.params["n_steps"] == params["n_steps"] and trial.params["batch_size"] == params["batch_size"]
    assert "log2_n_steps" not in trial.params


def test_a_space_offering_a_minibatch_larger_than_a_rollout_is_refused() -> None:
    entry = algorithm("ppo")
    space = apply_overrides("ppo", entry.space("guide", 1_000_000, 1), {"n_steps": {"low": 64, "high": 256}})
    with pytest.raises(SpaceError, match="batch_size up to 512 does not fit the smallest rollout"):
        entry.check(space, 1, 1_000_000)
    entry.check(apply_overrides("ppo", space, {"batch_size": {"low": 32, "high": 64}}), 1, 1_000_000)  # positive


def test_overrides_narrow_widen_and_fix() -> None:
    space = apply_overrides(
        "ppo",
        algorithm("ppo").space("guide", 1_000_000, 1),
        {
            "learning_rate": {"low": 1e-4, "high": 2e-4},
            "gamma": {"low": 0.95, "high": 0.999},
            "ent_coef": 0.005,
            "lr_schedule": {"choices": ["linear"]},
        },
    )
    samples = sample_many("ppo", space, n=100)
    assert all(1e-4 <= s["learning_rate"] <= 2e-4 for s in samples)
    assert all(0.95 <= s["gamma"] <= 0.999 for s in samples)
    assert len({round(s["gamma"], 6) for s in samples}) > 10
    assert {s["ent_coef"] for s in samples} == {0.005}
    assert {s["lr_schedule"] for s in samples} == {"linear"}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("initial", [3e-4, 1e-3])
def test_the_exported_schedule_is_the_one_training_uses(name: str, initial: float) -> None:
    trained = make_schedule(name, initial)
    namespace: dict = {}
    exec(source(name), {"math": math}, namespace)  # noqa: S102 - our own source, as the Python export embeds it
    exported = namespace[SCHEDULES[name].__name__]
    for progress in (1.0, 0.75, 0.5, 0.1, 0.0):
        value = trained(progress)
        assert exported(initial, progress) == value
        shown = formula(name, initial).replace(f"{initial:g}", repr(initial))
        assert math.isclose(eval(shown, {"math": math, "progress_remaining": progress}), value, rel_tol=1e-12)  # noqa: S307
    assert trained(1.0) == initial


def test_linear_schedule_is_the_guides() -> None:
    assert [make_schedule("linear", 1e-3)(p) for p in (1.0, 0.5, 0.0)] == [1e-3, 5e-4, 0.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rat: 0.001\n", "unknown ppo parameter 'learning_rat' (did you mean 'learning_rate'?)"),
        ("learning_rate: {low: 0.01, high: 0.001}\n", "learning_rate: low=0.01 > high=0.001"),
        ("n_steps: {low: 1000, high: 2048}\n", "n_steps: low=1000 must be a power of two"),
        ("learning_rate: 1e400\n", "learning_rate: value=inf must be a finite number"),
        ("n_epochs: 100000000000000000000000\n", "outside the accepted range"),
        ("net_arch: huge\n", "net_arch: value='huge' is not one of"),
        ("ent_coef: {lo: 0.1}\n", "keys ['lo'] not understood"),
        ("learning_rate: {low: 0.0, high: 0.001}\n", "learning_rate: low=0.0 is outside the accepted range"),
        ("learning_rate: {low: 1e-4, high: 2e-4}\nn_steps: many\n", "n_steps: value='many' must be a finite number"),
        ("normalize: yes please\n", "normalize: value='yes please' is not one of"),
        ("gamma: 1.5\n", "gamma: value=1.5 is outside the accepted range"),
    ],
)
def test_bad_overrides_are_rejected_with_the_value(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError) as info:
        apply_overrides("ppo", algorithm("ppo").space("guide", 1_000_000, 1), read_space_file(path))
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("!!python/object/apply:os.system ['true']\n", "is not plain YAML data"),
        ("- 1\n- 2\n", "must be a mapping of parameter names, got list"),
        ("learning_rate: [1, 2\n", "is not plain YAML data"),
    ],
)
def test_bad_space_files_are_rejected_naming_the_file(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError) as info:
        read_space_file(path)
    assert message in str(info.value) and str(path) in str(info.value)
