"""A rollout video of a trained agent: one deterministic episode, rendered headless, encoded as H.264 mp4.

MuJoCo renders through ``MUJOCO_GL`` (``egl`` by default, set by the worker before MuJoCo loads; the
image ships Mesa's EGL), and imageio-ffmpeg brings its own ffmpeg with libx264.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium
import imageio
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

MAX_FRAMES = 1000
# MuJoCo renders on the CPU here (Mesa): a quarter of its default 480x480 pixels keeps a 1000-frame
# episode to seconds and a few hundred kB.
WIDTH, HEIGHT = 320, 240


def record_episode(
    model: Any, env_id: str, train_env: VecEnv, path: Path, *, seed: int, on_frame: Callable[[], None]
) -> int:
    """Write one deterministic episode (at most ``MAX_FRAMES`` frames) to ``path``; the number of frames.

    ``on_frame`` is called at each frame rendered (the worker's health pulse: rendering is progress).
    """
    try:
        env = gymnasium.make(env_id, render_mode="rgb_array", width=WIDTH, height=HEIGHT)
    except TypeError:  # tasks without a camera size (classic control) render at their own
        env = gymnasium.make(env_id, render_mode="rgb_array")
    try:
        normalize = train_env.normalize_obs if isinstance(train_env, VecNormalize) else (lambda obs: obs)
        obs, _ = env.reset(seed=seed)
        fps = int(env.metadata.get("render_fps") or 30)
        # Each frame goes to the encoder as it is rendered: kept, 1000 frames at 600x400 held ~720 MB.
        # yuv420p (what browsers play) needs even sizes; no need to round them up to 16.
        # imageio types the ffmpeg writer as its base class, which lacks append_data.
        writer: Any = imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=2)
        with writer as video:
            video.append_data(env.render())
            frames = 1
            while frames < MAX_FRAMES:
                action, _ = model.predict(normalize(obs), deterministic=True)
                obs, _, terminated, truncated, _ = env.step(action)
                video.append_data(env.render())
                frames += 1
                on_frame()
                if terminated or truncated:
                    break
        return frames
    finally:
        env.close()
