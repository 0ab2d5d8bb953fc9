"""The training glue on its own: divergence detection without a database."""

from __future__ import annotations

import gymnasium
import pytest
from stable_baselines3 import PPO

from tests.envs import NaNRewardAfter
from worker.callbacks import DivergedError, StopOnNonFinite


def test_non_finite_reward_stops_training_with_a_readable_reason() -> None:
    env = NaNRewardAfter(gymnasium.make("Pendulum-v1"), after=50)
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, policy_kwargs={"net_arch": [8]}, seed=0)
    with pytest.raises(DivergedError, match="non-finite rewards at step 51"):
        model.learn(256, callback=StopOnNonFinite())


def test_finite_training_is_left_alone() -> None:
    model = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, policy_kwargs={"net_arch": [8]}, seed=0)
    model.learn(128, callback=StopOnNonFinite())
    assert model.num_timesteps == 128
