"""Rollout videos: frames stream to the encoder as they are rendered, never pile up in memory."""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any, cast

import gymnasium
import imageio
import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from worker.video import MAX_FRAMES, record_episode

COUNTED = "tests/CountedFrames-v0"
EPISODE = 300


class CountedFrames(gymnasium.Env):
    """An episode of ``EPISODE`` steps whose rendered frames are counted while anything holds them."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (1,))
    action_space = gymnasium.spaces.Box(-1.0, 1.0, (1,))
    alive = 0
    most_alive = 0

    def __init__(self, render_mode: str | None = None, width: int = 320, height: int = 240) -> None:
        self.render_mode, self.shape, self.steps = render_mode, (height, width, 3), 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.steps = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.steps += 1
        return np.zeros(1, dtype=np.float32), 0.0, self.steps >= EPISODE, False, {}

    def render(self) -> np.ndarray:
        frame = np.full(self.shape, self.steps % 256, dtype=np.uint8)
        CountedFrames.alive += 1
        CountedFrames.most_alive = max(CountedFrames.most_alive, CountedFrames.alive)
        weakref.finalize(frame, CountedFrames._release)
        return frame

    @staticmethod
    def _release() -> None:
        CountedFrames.alive -= 1


if COUNTED not in gymnasium.envs.registry:
    gymnasium.register(COUNTED, entry_point=cast(Any, CountedFrames))


class StandStill:
    def predict(self, obs: np.ndarray, deterministic: bool) -> tuple[np.ndarray, None]:
        return np.zeros(1, dtype=np.float32), None


def test_frames_stream_to_the_encoder(tmp_path: Path) -> None:
    CountedFrames.alive = CountedFrames.most_alive = 0
    path = tmp_path / "video.mp4"
    pulses: list[None] = []
    frames = record_episode(StandStill(), COUNTED, cast(VecEnv, None), path, seed=0,
                            on_frame=lambda: pulses.append(None))  # fmt: skip
    assert frames == EPISODE + 1 < MAX_FRAMES and len(pulses) == EPISODE
    assert CountedFrames.most_alive <= 2, f"{CountedFrames.most_alive} frames were held at once"
    video = imageio.mimread(path, memtest=False)
    assert len(video) == frames and video[-1].shape[-1] == 3  # positive control: every frame was encoded
