"""CrossQ (sb3-contrib): SAC without target networks, with batch normalisation in wide critics and a delayed actor.

With no target network there is no ``tau``; the critics are far wider than the actor, so each network size names
both (``pi`` for the actor, ``qf`` for each critic).
"""

from __future__ import annotations

from typing import Any

from study_contract.algorithms import offpolicy, sac
from study_contract.algorithms.entry import ACTIVATIONS, AROUND, PRESET, Algorithm, Space, mlp_weights
from study_contract.space import choice, fixed_choice, rng

# sb3-contrib's default is "medium" (critics 1024 wide); RL Zoo's MuJoCo settings use "large" (2048).
NETWORKS: dict[str, dict[str, list[int]]] = {
    "tiny": {"pi": [32, 32], "qf": [32, 32]},
    "small": {"pi": [256, 256], "qf": [256, 256]},
    "medium": {"pi": [256, 256], "qf": [1024, 1024]},
    "large": {"pi": [256, 256], "qf": [2048, 2048]},
}


def budget_space(timesteps: int, n_envs: int) -> Space:
    """The off-policy budget ranges without ``tau``, with the entropy start and the actor's delay."""
    space = offpolicy.budget_space(timesteps, {"ent_coef": choice(sac.ENT_COEFS),
                                               "policy_delay": rng("int", 1, 4, (1, 100))})  # fmt: skip
    del space["tau"]
    return {**space, "net_arch": choice(("small", "medium"), tuple(NETWORKS)),
            "activation": fixed_choice("relu", ACTIVATIONS)}  # fmt: skip


def cost(params: dict[str, Any], obs_size: int, action_size: int) -> float:
    """Each gradient step passes the batch and its next observations through both critics at once (CrossQ's joint
    pass), the actor for the next actions, and the actor's own update every ``policy_delay`` steps; each env-step,
    the actor once."""
    network = NETWORKS[params["net_arch"]]
    actor = mlp_weights(obs_size, network["pi"], action_size)
    critics = 2 * mlp_weights(obs_size + action_size, network["qf"], 1)
    per_sample = 2 * critics + actor * (1 + 1 / params["policy_delay"])
    return offpolicy.updates_per_step(params) * params["batch_size"] * per_sample + actor


CROSSQ = Algorithm(
    name="crossq",
    libraries={"sb3": "sb3_contrib"},
    class_name="CrossQ",
    defaults={
        "learning_rate": 1e-3,
        "lr_schedule": "constant",
        **{k: v for k, v in offpolicy.SB3_DEFAULTS.items() if k != "tau"},
        "ent_coef": "auto",
        "policy_delay": 3,
        "net_arch": "medium",
        "activation": "relu",
    },
    spaces={"budget": budget_space},
    sample=offpolicy.sample,
    cost=cost,
    check=offpolicy.check,
    constructor_params=(offpolicy.CONSTRUCTOR_PARAMS - {"tau"}) | {"ent_coef", "policy_delay"},
    campaign={
        "coarse": {"train_freq": PRESET, "gradient_steps": PRESET},
        "finetune": {"policy_delay": AROUND, "gradient_steps": AROUND},
    },
    networks=NETWORKS,
)
