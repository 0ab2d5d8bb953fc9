"""What produces a trial's value besides its configuration, recorded on every trial (``protocol.PROVENANCE``):
the versions of what trains and simulates, the task's registered spec, the seeds, the host and its threads.
A value can then be told apart from a changed library, and ``study_admin reproduce`` says which one changed.
"""

from __future__ import annotations

import functools
import platform
import socket
from importlib import metadata
from typing import Any

from study_contract import protocol
from study_contract.definition import EVAL_SEED_OFFSET, StudyDefinition, derive_seed

DISTRIBUTIONS = ("locomotion-tuner", "stable-baselines3", "sb3-contrib", "sbx-rl", "torch", "jax", "gymnasium",
                 "mujoco", "numpy", "optuna")  # fmt: skip
"""Installed distributions whose versions are recorded (those not installed are left out)."""


def installed_versions() -> dict[str, str]:
    return dict(_installed_versions())


@functools.cache
def _installed_versions() -> dict[str, str]:
    """Read once per process: installed packages do not change under a running worker, and each lookup scans
    the environment's metadata (every trial records them)."""
    versions = {"python": platform.python_version()}
    for name in DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def env_spec(env_id: str) -> dict[str, Any]:
    """The task's registered spec: its id (with version), episode limit and the keyword arguments it is made with."""
    import gymnasium

    spec = gymnasium.spec(env_id)
    kwargs = {key: value for key, value in spec.kwargs.items() if protocol.plain_data(value, depth=1)}
    # What the decoder reads back: a keyword argument that is not plain, shallow data is left out.
    return {"id": spec.id, "max_episode_steps": spec.max_episode_steps,
            "kwargs": kwargs if protocol.plain_data(kwargs) else {}}  # fmt: skip


def provenance(definition: StudyDefinition, seed: int) -> dict[str, Any]:
    import torch

    return {
        "versions": installed_versions(),
        "env": env_spec(definition.env_id),
        "seeds": {"training": seed, "evaluation": derive_seed(seed, EVAL_SEED_OFFSET)},
        "host": socket.gethostname(),
        "threads": torch.get_num_threads(),
    }


def differences(recorded: dict[str, Any], definition: StudyDefinition) -> list[str]:
    """What differs between a trial's recorded provenance and this machine, one line each; what is missing
    from the record is named too."""
    if not recorded:
        return ["no provenance recorded (a worker release before provenance ran this trial): versions, task spec "
                "and threads cannot be compared"]  # fmt: skip
    lines = []
    installed = installed_versions()
    for name, version in sorted(recorded.get("versions", {}).items()):
        now = installed.get(name)
        if now != version:
            lines.append(f"{name}: recorded {version}, installed {now or 'none'}")
    spec = env_spec(definition.env_id)
    for key, value in recorded.get("env", {}).items():
        if value is not None and spec.get(key) != value:
            lines.append(f"task {key}: recorded {value!r}, registered now {spec.get(key)!r}")
    return lines
