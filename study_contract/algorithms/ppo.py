"""PPO (Stable-Baselines3): on-policy, rollouts of ``n_steps x n_envs`` env-steps split into minibatches."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from study_contract.algorithms.entry import (
    ACTIVATIONS,
    AROUND,
    DISCOUNT_LIMITS,
    LR_LIMITS,
    NET_ARCHS,
    NETS,
    PRESET,
    SCHEDULE,
    Algorithm,
    Space,
    mlp_weights,
    sample_all,
)
from study_contract.space import (
    SpaceError,
    Suggester,
    choice,
    fixed,
    fixed_choice,
    largest_pow2_at_most,
    rng,
    smallest_pow2_at_least,
    suggest,
)

# Below this many policy updates per trial, the budget space shrinks its rollouts (see budget_space).
MIN_UPDATES = 10


def guide_space(timesteps: int, n_envs: int) -> Space:
    """The guide's PPO table; everything it does not list fixed at SB3's defaults."""
    return fit_rollout_to_budget(
        {
            "learning_rate": rng("float", 1e-5, 1e-3, LR_LIMITS, log=True),
            "lr_schedule": SCHEDULE,
            "n_steps": rng("pow2", 1024, 8192, (8, 2**16)),
            "batch_size": rng("pow2", 64, 512, (4, 2**16)),
            "n_epochs": rng("int", 3, 20, (1, 100)),
            "ent_coef": rng("float", 0.0, 0.01, (0.0, 1.0)),
            "gamma": fixed("discount", 0.99, DISCOUNT_LIMITS),
            "gae_lambda": fixed("float", 0.95, (0.5, 1.0)),
            "clip_range": fixed("float", 0.2, (0.01, 1.0)),
            "max_grad_norm": fixed("float", 0.5, (0.01, 100.0)),
            "net_arch": fixed_choice("small", NETS),
            "activation": fixed_choice("tanh", ACTIVATIONS),
            "normalize": fixed_choice(False, (False, True)),
        },
        timesteps,
        n_envs,
    )


def budget_space(timesteps: int, n_envs: int) -> Space:
    """Ranges that suit the trial's budget: rollouts leave at least ``MIN_UPDATES`` policy updates.

    The largest rollout ``n_steps * n_envs`` is at most ``timesteps / MIN_UPDATES`` (and 2048 steps per
    env), the smallest an eighth of it; minibatches fit the smallest rollout. The knobs the guide leaves
    at their defaults (discount, GAE, clipping, gradient norm, network, activation, observation
    normalisation) are searched too, in the ranges RL Zoo's tuned MuJoCo settings use.
    """
    per_env = max(timesteps // (MIN_UPDATES * n_envs), 1)
    steps_high = max(largest_pow2_at_most(min(per_env, 2048)), min(16, largest_pow2_at_most(timesteps // n_envs)))
    steps_low = max(steps_high // 8, min(16, steps_high))
    batch_high = min(256, largest_pow2_at_most(steps_low * n_envs))
    return {
        "learning_rate": rng("float", 1e-5, 3e-3, LR_LIMITS, log=True),
        "lr_schedule": SCHEDULE,
        "n_steps": rng("pow2", steps_low, steps_high, (8, 2**16)),
        "batch_size": rng("pow2", min(32, batch_high), batch_high, (4, 2**16)),
        "n_epochs": rng("int", 1, 20, (1, 100)),
        "ent_coef": rng("float", 0.0, 0.01, (0.0, 1.0)),
        "gamma": rng("discount", 0.9, 0.9999, DISCOUNT_LIMITS),
        "gae_lambda": rng("float", 0.8, 1.0, (0.5, 1.0)),
        "clip_range": rng("float", 0.1, 0.4, (0.01, 1.0)),
        "max_grad_norm": rng("float", 0.3, 5.0, (0.01, 100.0), log=True),
        "net_arch": choice(("small", "medium"), NETS),
        "activation": choice(ACTIVATIONS),
        "normalize": choice((False, True)),
    }


def fit_rollout_to_budget(space: Space, timesteps: int, n_envs: int) -> Space:
    """Cap ``n_steps`` so one rollout (``n_steps * n_envs``) fits in a trial: PPO only collects whole ones."""
    steps = space["n_steps"]
    cap = largest_pow2_at_most(timesteps // n_envs) if timesteps >= n_envs else 0
    if not steps.fixed and steps.low <= cap < steps.high:
        space = {**space, "n_steps": replace(steps, high=cap)}
    return space


def fit_minibatches(space: Space, n_envs: int) -> Space:
    """Narrowed minibatches stay within the smallest rollout the space offers."""
    steps, batch = space["n_steps"], space["batch_size"]
    cap = largest_pow2_at_most(steps.smallest * n_envs)
    if batch.fixed and batch.value > cap:
        return {**space, "batch_size": replace(batch, value=cap)}
    if not batch.fixed and batch.high > cap:
        return {**space, "batch_size": replace(batch, low=min(batch.low, cap), high=cap)}
    return space


def check(space: Space, n_envs: int, timesteps: int) -> None:
    steps, batch = space["n_steps"], space["batch_size"]
    smallest_rollout = steps.smallest * n_envs
    if smallest_rollout < 2 or batch.smallest < 2:
        raise SpaceError(
            f"n_steps x n_envs={smallest_rollout} and batch_size={batch.smallest}: SB3's PPO needs rollouts and "
            "minibatches of at least 2 env-steps; raise --timesteps (to at least 2) or n_steps and batch_size"
        )
    if smallest_rollout > timesteps:
        raise SpaceError(
            f"n_steps x n_envs={smallest_rollout} exceeds timesteps={timesteps}: no trial could finish one "
            "PPO rollout within its budget; raise --timesteps or lower n_steps in --space"
        )
    if batch.exponent:  # schema-1 spaces tighten ranges per trial instead (sample)
        largest_rollout = steps.largest * n_envs
        if batch.smallest > largest_rollout:
            raise SpaceError(
                f"batch_size={batch.smallest} can never fit in a rollout of n_steps x n_envs={largest_rollout}; "
                "lower batch_size or raise n_steps / --n-envs"
            )
    elif batch.largest > smallest_rollout:
        raise SpaceError(
            f"batch_size up to {batch.largest} does not fit the smallest rollout n_steps x n_envs="
            f"{steps.smallest} x {n_envs}={smallest_rollout}; every pair the space offers must satisfy "
            f"batch_size <= n_steps * n_envs: lower batch_size's high to {largest_pow2_at_most(smallest_rollout)} "
            "or raise n_steps's low"
        )


def sample(trial: Suggester, space: Space, n_envs: int) -> dict[str, Any]:
    """PPO parameters; ``batch_size <= n_steps * n_envs`` holds for every pair the space offers."""
    params: dict[str, Any] = {}
    steps, batch = space["n_steps"], space["batch_size"]
    if batch.exponent:  # schema 1: the ranges offered were tightened per trial to keep the pair valid
        batch_high = None if batch.fixed else min(batch.high, largest_pow2_at_most(steps.largest * n_envs))
        params["batch_size"] = suggest(trial, "batch_size", batch, high=batch_high)
        steps_low = None if steps.fixed else max(steps.low, smallest_pow2_at_least(params["batch_size"] / n_envs))
        params["n_steps"] = suggest(trial, "n_steps", steps, low=steps_low)
    return sample_all(trial, space, params)


def cost(params: dict[str, Any], obs_size: int, action_size: int) -> float:
    """Each env-step collected passes the policy and value networks once, then ``n_epochs`` times in training."""
    layers = NET_ARCHS[params["net_arch"]]
    networks = mlp_weights(obs_size, layers, action_size) + mlp_weights(obs_size, layers, 1)
    return (1 + params["n_epochs"]) * networks


def constrain(params: dict[str, Any], n_envs: int) -> dict[str, Any]:
    batch = min(params["batch_size"], largest_pow2_at_most(params["n_steps"] * n_envs))
    return {**params, "batch_size": batch}


PPO = Algorithm(
    name="ppo",
    libraries={"sb3": "stable_baselines3"},
    class_name="PPO",
    defaults={
        "learning_rate": 3e-4,
        "lr_schedule": "constant",
        "n_steps": 2048,
        "batch_size": 64,
        "n_epochs": 10,
        "ent_coef": 0.0,
        "gamma": 0.99,
        "gae_lambda": 0.95,
        "clip_range": 0.2,
        "max_grad_norm": 0.5,
        "net_arch": "small",
        "activation": "tanh",
        "normalize": False,
    },
    spaces={"budget": budget_space, "guide": guide_space},
    sample=sample,
    cost=cost,
    check=check,
    constrain=constrain,
    fit=fit_rollout_to_budget,
    fit_stage=fit_minibatches,
    budget_scaled=frozenset(("n_steps",)),
    constructor_params=frozenset(
        ("n_steps", "batch_size", "n_epochs", "ent_coef", "gamma", "gae_lambda", "clip_range", "max_grad_norm")
    ),
    campaign={"coarse": {"n_steps": PRESET}, "finetune": {"ent_coef": AROUND, "n_epochs": AROUND}},
)
