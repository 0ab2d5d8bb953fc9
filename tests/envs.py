"""Tasks that misbehave on purpose, registered with Gymnasium for tests in this process."""

from __future__ import annotations

import threading
import time
from typing import Any

import gymnasium
import numpy as np


class NaNRewardAfter(gymnasium.Wrapper):
    """Pendulum whose reward turns NaN after ``after`` steps: training diverges at a known step."""

    def __init__(self, env: gymnasium.Env, after: int) -> None:
        super().__init__(env)
        self.after, self.steps = after, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        return obs, (np.nan if self.steps > self.after else reward), terminated, truncated, info


def nan_reward_pendulum(after: int = 50, **kwargs: Any) -> gymnasium.Env:
    return NaNRewardAfter(gymnasium.make("Pendulum-v1", **kwargs), after)


NAN_PENDULUM = "tests/NaNRewardPendulum-v0"
if NAN_PENDULUM not in gymnasium.envs.registry:
    gymnasium.register(NAN_PENDULUM, entry_point="tests.envs:nan_reward_pendulum", max_episode_steps=200)


_hang = threading.Event()


class HangAt(gymnasium.Wrapper):
    """Pendulum whose step blocks at env-step ``at`` until :func:`release_hanging`: a hung training step."""

    def __init__(self, env: gymnasium.Env, at: int) -> None:
        super().__init__(env)
        self.at, self.steps = at, 0

    def step(self, action):
        self.steps += 1
        if self.steps == self.at:
            _hang.wait()
        return self.env.step(action)


def hanging_pendulum(at: int = 100, **kwargs: Any) -> gymnasium.Env:
    return HangAt(gymnasium.make("Pendulum-v1", **kwargs), at)


def release_hanging() -> None:
    _hang.set()


HANGING_PENDULUM = "tests/HangingPendulum-v0"
if HANGING_PENDULUM not in gymnasium.envs.registry:
    gymnasium.register(HANGING_PENDULUM, entry_point="tests.envs:hanging_pendulum", max_episode_steps=200)


class NoRender(gymnasium.Wrapper):
    def render(self):
        raise RuntimeError("this task cannot render")


def unrenderable_pendulum(**kwargs: Any) -> gymnasium.Env:
    return NoRender(gymnasium.make("Pendulum-v1", **kwargs))


UNRENDERABLE_PENDULUM = "tests/UnrenderablePendulum-v0"
if UNRENDERABLE_PENDULUM not in gymnasium.envs.registry:
    gymnasium.register(UNRENDERABLE_PENDULUM, entry_point="tests.envs:unrenderable_pendulum", max_episode_steps=200)


class Slow(gymnasium.Wrapper):
    """Pendulum whose every step takes ``delay`` seconds: evaluations and videos that take long."""

    def __init__(self, env: gymnasium.Env, delay: float) -> None:
        super().__init__(env)
        self.delay = delay

    def step(self, action):
        time.sleep(self.delay)
        return self.env.step(action)


def slow_pendulum(delay: float = 0.05, **kwargs: Any) -> gymnasium.Env:
    return Slow(gymnasium.make("Pendulum-v1", **kwargs), delay)


SLOW_PENDULUM = "tests/SlowPendulum-v0"
if SLOW_PENDULUM not in gymnasium.envs.registry:
    gymnasium.register(SLOW_PENDULUM, entry_point="tests.envs:slow_pendulum", max_episode_steps=200)
