"""TQC (sb3-contrib): SAC with distributional critics whose top quantiles are dropped against overestimation."""

from __future__ import annotations

from typing import Any

from study_contract.algorithms import offpolicy, sac
from study_contract.algorithms.entry import AROUND, Algorithm, Space
from study_contract.space import SpaceError, choice, rng


def budget_space(timesteps: int, n_envs: int) -> Space:
    """SAC's budget ranges, with the quantiles per critic and the top ones each critic drops.

    Every pair the space offers keeps quantiles to learn from (``n_quantiles`` above the drop).
    """
    return offpolicy.budget_space(
        timesteps,
        {
            "ent_coef": choice(sac.ENT_COEFS),
            "n_quantiles": rng("int", 10, 50, (2, 200)),
            "top_quantiles_to_drop_per_net": rng("int", 0, 5, (0, 100)),
        },
    )


def check(space: Space, n_envs: int, timesteps: int) -> None:
    offpolicy.check(space, n_envs, timesteps)
    quantiles, drop = space["n_quantiles"], space["top_quantiles_to_drop_per_net"]
    if drop.largest >= quantiles.smallest:
        raise SpaceError(
            f"top_quantiles_to_drop_per_net up to {drop.largest} would drop every one of n_quantiles="
            f"{quantiles.smallest}; keep its high below n_quantiles's low"
        )


def cost(params: dict[str, Any], obs_size: int, action_size: int) -> float:
    """SAC's, with critics that output ``n_quantiles`` values each."""
    return offpolicy.cost(params, obs_size, action_size, critic_outputs=params["n_quantiles"])


def constrain(params: dict[str, Any], n_envs: int) -> dict[str, Any]:
    drop = min(params["top_quantiles_to_drop_per_net"], params["n_quantiles"] - 1)
    return {**params, "top_quantiles_to_drop_per_net": drop}


TQC = Algorithm(
    name="tqc",
    libraries={"sb3": "sb3_contrib", "sbx": "sbx"},
    class_name="TQC",
    defaults={**sac.DEFAULTS, "n_quantiles": 25, "top_quantiles_to_drop_per_net": 2},
    spaces={"budget": budget_space},
    sample=offpolicy.sample,
    cost=cost,
    check=check,
    constrain=constrain,
    constructor_params=offpolicy.CONSTRUCTOR_PARAMS | {"ent_coef", "top_quantiles_to_drop_per_net"},
    policy_params=frozenset(("n_quantiles",)),
    campaign={**sac.CAMPAIGN, "finetune": {**sac.CAMPAIGN["finetune"], "top_quantiles_to_drop_per_net": AROUND}},
)
