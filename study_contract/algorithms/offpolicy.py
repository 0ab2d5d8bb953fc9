"""What the off-policy algorithms (SAC, TD3, TQC) share: a replay buffer, a target network, updates in bursts."""

from __future__ import annotations

from typing import Any

from study_contract.algorithms.entry import (
    ACTIVATIONS,
    DISCOUNT_LIMITS,
    LR_LIMITS,
    NET_ARCHS,
    NETS,
    SCHEDULE,
    Space,
    mlp_weights,
    sample_all,
)
from study_contract.space import SpaceError, Suggester, choice, fixed, fixed_choice, rng

GRADIENT_STEPS = (-1, 1, 2, 4, 8, 16, 32, 64, 128, 256)
# RL Zoo's tuned MuJoCo settings start learning after up to 10,000 env-steps; a tuning trial keeps 9/10 to learn.
LEARNING_STARTS_CAP = 10_000
# Bursts: updates every 8 env-steps, as many gradient steps as env-steps collected (a known-good shape).
BURSTS = {"train_freq": 8, "gradient_steps": -1}


def budget_space(timesteps: int, extras: Space) -> Space:
    """Ranges for the trial's budget, with one gradient step per env-step collected, plus ``extras``.

    ``gradient_steps=-1`` (SB3: as many as env-steps collected) ties updates to ``train_freq``, so a
    trial's cost stays that of the defaults; ``learning_starts`` is at most a tenth of the budget; the
    replay buffer stays at SB3's 1e6, which a tuning trial never fills and a full run needs. ``tau``
    reaches 0.1 (the guide stops at 0.02): in a short run a target network that follows quickly is
    what lets the critic learn at all.
    """
    return {
        "learning_rate": rng("float", 1e-4, 3e-3, LR_LIMITS, log=True),
        "lr_schedule": SCHEDULE,
        "buffer_size": fixed("int", 1_000_000, (100, 10_000_000)),
        "batch_size": rng("pow2", 64, 1024, (4, 2**14)),
        "tau": rng("float", 0.001, 0.1, (1e-4, 1.0), log=True),
        "train_freq": rng("pow2", 1, 16, (1, 1024)),
        "gradient_steps": fixed_choice(-1, GRADIENT_STEPS),
        "gamma": rng("discount", 0.9, 0.9999, DISCOUNT_LIMITS),
        "learning_starts": rng("int", 0, max(min(LEARNING_STARTS_CAP, timesteps // 10), 1), (0, 1_000_000)),
        **extras,
        "net_arch": choice(("small", "medium", "large"), NETS),
        "activation": fixed_choice("relu", ACTIVATIONS),
    }


def check(space: Space, n_envs: int, timesteps: int) -> None:
    starts = space["learning_starts"].smallest
    if starts >= timesteps:
        raise SpaceError(
            f"learning_starts={starts} is not below timesteps={timesteps}: no trial would ever train; "
            "lower learning_starts in --space or raise --timesteps"
        )


def sample(trial: Suggester, space: Space, n_envs: int) -> dict[str, Any]:
    return sample_all(trial, space)


def updates_per_step(params: dict[str, Any]) -> float:
    """Gradient steps per env-step collected (``gradient_steps=-1``: one per env-step)."""
    steps = params["gradient_steps"]
    return 1.0 if steps == -1 else steps / params["train_freq"]


def cost(params: dict[str, Any], obs_size: int, action_size: int, *, critic_outputs: int = 1) -> float:
    """Each gradient step passes a batch through the actor and two critics; each env-step, the actor once."""
    layers = NET_ARCHS[params["net_arch"]]
    actor = mlp_weights(obs_size, layers, action_size)
    critics = 2 * mlp_weights(obs_size + action_size, layers, critic_outputs)
    return updates_per_step(params) * params["batch_size"] * (actor + critics) + actor


# SB3's own defaults for the replay and update settings every off-policy algorithm shares.
SB3_DEFAULTS = {
    "buffer_size": 1_000_000,
    "batch_size": 256,
    "tau": 0.005,
    "train_freq": 1,
    "gradient_steps": 1,
    "gamma": 0.99,
    "learning_starts": 100,
}
CONSTRUCTOR_PARAMS = frozenset(
    ("buffer_size", "batch_size", "tau", "train_freq", "gradient_steps", "gamma", "learning_starts")
)
