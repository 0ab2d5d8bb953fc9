"""Search spaces, sampling and schedules: pure functions, no database, no training."""

from __future__ import annotations

import math

import optuna
import pytest

from study_admin.space import DEFAULT_SPACES, SpaceError, apply_overrides, baseline_params, load_space_file
from worker.sampling import SAMPLE_PARAMS
from worker.schedules import make_schedule

optuna.logging.set_verbosity(optuna.logging.WARNING)

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
        samples.append(SAMPLE_PARAMS[algo](trial, space, n_envs))
        study.tell(trial, 0.0)
    return samples


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_default_spaces_sample_within_the_guides_ranges(algo: str) -> None:
    samples = sample_many(algo, DEFAULT_SPACES[algo])
    for name, (low, high) in GUIDE_RANGES[algo].items():
        values = [s[name] for s in samples]
        assert all(low <= v <= high for v in values), name
        assert min(values) < low + (high - low) / 3 and max(values) > high - (high - low) / 3, name
        if name in POW2:
            assert all(v & (v - 1) == 0 for v in values), name
    assert {s["lr_schedule"] for s in samples} == {"constant", "linear", "cosine"}


def test_ppo_minibatch_never_exceeds_the_rollout() -> None:
    space = apply_overrides("ppo", {"n_steps": {"low": 16, "high": 256}, "batch_size": {"low": 16, "high": 512}})
    for n_envs in (1, 2, 3):
        for s in sample_many("ppo", space, n_envs=n_envs, n=200):
            assert s["batch_size"] <= s["n_steps"] * n_envs
            assert 16 <= s["batch_size"] <= 512 and 16 <= s["n_steps"] <= 256


def test_overrides_narrow_widen_and_fix() -> None:
    space = apply_overrides(
        "ppo",
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


def test_baseline_is_sb3_defaults() -> None:
    assert baseline_params("ppo", DEFAULT_SPACES["ppo"], 1) == {
        "learning_rate": 3e-4,
        "lr_schedule": "constant",
        "n_steps": 2048,
        "batch_size": 64,
        "n_epochs": 10,
        "ent_coef": 0.0,
        "gamma": 0.99,
        "gae_lambda": 0.95,
        "clip_range": 0.2,
        "net_arch": "small",
        "normalize": False,
    }
    sac = baseline_params("sac", DEFAULT_SPACES["sac"], 1)
    assert (sac["buffer_size"], sac["batch_size"], sac["tau"], sac["train_freq"]) == (1_000_000, 256, 0.005, 1)


@pytest.mark.parametrize(
    ("name", "initial", "expected"),
    [("constant", 3e-4, (3e-4, 3e-4, 3e-4)), ("linear", 1e-3, (1e-3, 5e-4, 0.0)), ("cosine", 1e-3, (1e-3, 5e-4, 0.0))],
)
def test_schedules_at_progress_1_half_0(name: str, initial: float, expected: tuple) -> None:
    schedule = make_schedule(name, initial)
    for progress, value in zip((1.0, 0.5, 0.0), expected, strict=False):
        assert math.isclose(schedule(progress), value, abs_tol=1e-12)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rat: 0.001\n", "unknown ppo parameter 'learning_rat' (did you mean 'learning_rate'?)"),
        ("learning_rate: {low: 0.01, high: 0.001}\n", "learning_rate: low=0.01 > high=0.001"),
        ("n_steps: {low: 1000, high: 2048}\n", "n_steps: low=1000 must be a power of two"),
        ("learning_rate: 1e400\n", "learning_rate: value=inf must be a finite number"),
        ("n_epochs: 100000000000000000000000\n", "outside the accepted range"),
        ("!!python/object/apply:os.system ['true']\n", "is not plain YAML data"),
        ("- 1\n- 2\n", "must be a mapping of parameter names, got list"),
        ("learning_rate: [1, 2\n", "is not plain YAML data"),
        ("net_arch: huge\n", "net_arch: value='huge' is not one of"),
        ("ent_coef: {lo: 0.1}\n", "keys ['lo'] not understood"),
        ("learning_rate: {low: 0.0, high: 0.001}\n", "learning_rate: low=0.0 is outside the accepted range"),
        ("learning_rate: {low: 1e-4, high: 2e-4}\nn_steps: many\n", "n_steps: value='many' must be a finite number"),
        ("normalize: yes please\n", "normalize: value='yes please' is not one of"),
    ],
)
def test_bad_space_files_are_rejected_with_the_value(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError) as info:
        load_space_file(path, "ppo")
    assert message in str(info.value)
    assert str(path) in str(info.value)
