"""SAC (Stable-Baselines3): off-policy, entropy-regularised, the guide's second algorithm."""

from __future__ import annotations

from study_contract.algorithms import offpolicy
from study_contract.algorithms.entry import (
    ACTIVATIONS,
    AROUND,
    DISCOUNT_LIMITS,
    LR_LIMITS,
    NETS,
    PRESET,
    SCHEDULE,
    Algorithm,
    KnownGood,
    Space,
)
from study_contract.space import choice, fixed, fixed_choice, rng

ENT_COEFS = ("auto", "auto_0.1", "auto_0.01")


def guide_space(timesteps: int, n_envs: int) -> Space:
    """The guide's SAC table; everything it does not list fixed at SB3's defaults."""
    return {
        "learning_rate": rng("float", 1e-4, 1e-3, LR_LIMITS, log=True),
        "lr_schedule": SCHEDULE,
        "buffer_size": rng("int", 100_000, 1_000_000, (100, 10_000_000), log=True),
        "batch_size": rng("pow2", 256, 1024, (4, 2**14)),
        "tau": rng("float", 0.005, 0.02, (1e-4, 1.0), log=True),
        "train_freq": rng("pow2", 1, 64, (1, 1024)),
        "gradient_steps": rng("pow2", 1, 64, (1, 1024)),
        "gamma": fixed("discount", 0.99, DISCOUNT_LIMITS),
        "learning_starts": fixed("int", 100, (0, 1_000_000)),
        "ent_coef": fixed_choice("auto", ENT_COEFS),
        "net_arch": fixed_choice("medium", NETS),
        "activation": fixed_choice("relu", ACTIVATIONS),
    }


def budget_space(timesteps: int, n_envs: int) -> Space:
    """The off-policy budget ranges, with the entropy coefficient learned from one of three starts."""
    return offpolicy.budget_space(timesteps, {"ent_coef": choice(ENT_COEFS)})


DEFAULTS = {
    "learning_rate": 3e-4,
    "lr_schedule": "constant",
    **offpolicy.SB3_DEFAULTS,
    "ent_coef": "auto",
    "net_arch": "medium",
    "activation": "relu",
}
MEASURED = "measured with plain SB3 on 3 seeds at 5k env-steps per run"
CAMPAIGN = {
    "coarse": {"train_freq": PRESET, "gradient_steps": PRESET},
    "finetune": {"tau": AROUND, "gradient_steps": AROUND},
}

SAC = Algorithm(
    name="sac",
    libraries={"sb3": "stable_baselines3", "sbx": "sbx"},
    class_name="SAC",
    defaults=DEFAULTS,
    spaces={"budget": budget_space, "guide": guide_space},
    sample=offpolicy.sample,
    cost=offpolicy.cost,
    check=offpolicy.check,
    constructor_params=offpolicy.CONSTRUCTOR_PARAMS | {"ent_coef"},
    campaign=CAMPAIGN,
    known_good=(
        # A small network updated in bursts of 8 on large batches, with a fast target network and a far
        # horizon: InvertedPendulum balanced on every seed, Hopper past 1000 on two of three.
        KnownGood(
            {
                "learning_rate": 6e-4,
                "batch_size": 1024,
                "tau": 0.07,
                "gamma": 0.9999,
                "net_arch": "small",
                **offpolicy.BURSTS,
            },
            f"{MEASURED}: InvertedPendulum 1000 / 1000 / 1000, Hopper 1022 / 1016 / 228, Pendulum -159 / -179 / -687",
            ("Pendulum-v1", "InvertedPendulum-v5", "Hopper-v5"),
        ),  # fmt: skip
        # A medium one with a short horizon: the steadier on Pendulum.
        KnownGood(
            {
                "learning_rate": 1e-3,
                "batch_size": 256,
                "tau": 0.02,
                "gamma": 0.98,
                "learning_starts": 500,
                **offpolicy.BURSTS,
            },
            f"{MEASURED}: Pendulum -146 / -170 / -174",
            ("Pendulum-v1",),
        ),  # fmt: skip
    ),
)
