"""The algorithm registry: one :class:`Algorithm` entry per algorithm, each in its own module.

Adding an algorithm is one module here, one line in :data:`ALGORITHMS`, and one test parameter; no other
code names an algorithm (``tests/test_registry.py`` checks).
"""

from __future__ import annotations

from study_contract.algorithms.crossq import CROSSQ
from study_contract.algorithms.entry import (
    ACTIVATION_CLASSES,
    ACTIVATIONS,
    AROUND,
    BACKENDS,
    NET_ARCHS,
    NOISE_MODULE,
    PRESET,
    SB3,
    SBX,
    Algorithm,
    KnownGood,
    Recipe,
    Space,
)
from study_contract.algorithms.ppo import PPO
from study_contract.algorithms.sac import SAC
from study_contract.algorithms.td3 import TD3
from study_contract.algorithms.tqc import TQC
from study_contract.space import SpaceError

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (PPO, SAC, TD3, TQC, CROSSQ)}

__all__ = ["ACTIVATIONS", "ACTIVATION_CLASSES", "ALGORITHMS", "AROUND", "BACKENDS", "NET_ARCHS", "NOISE_MODULE",
           "PRESET", "SB3", "SBX", "Algorithm", "KnownGood", "Recipe", "Space", "algorithm"]  # fmt: skip


def algorithm(name: str) -> Algorithm:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise SpaceError(f"unknown algorithm {name!r}; choose one of {list(ALGORITHMS)}") from None
