"""TD3 (Stable-Baselines3): off-policy, deterministic actor, twin critics, delayed policy updates."""

from __future__ import annotations

from study_contract.algorithms import offpolicy
from study_contract.algorithms.entry import AROUND, NO_NOISE, NOISE_CLASSES, PRESET, Algorithm, KnownGood, Space
from study_contract.space import choice, rng

NOISES = (NO_NOISE, *NOISE_CLASSES)


def budget_space(timesteps: int, n_envs: int) -> Space:
    """The off-policy budget ranges, with the exploration noise (its kind and scale) searched too."""
    return offpolicy.budget_space(
        timesteps,
        {"action_noise": choice(NOISES), "noise_std": rng("float", 0.05, 0.5, (0.0, 2.0))},
    )


TD3 = Algorithm(
    name="td3",
    libraries={"sb3": "stable_baselines3", "sbx": "sbx"},
    class_name="TD3",
    defaults={
        "learning_rate": 1e-3,
        "lr_schedule": "constant",
        **offpolicy.SB3_DEFAULTS,
        "action_noise": NO_NOISE,  # SB3 explores with the deterministic policy alone unless given a noise
        "noise_std": 0.1,  # the scale a noise gets when one is chosen (TD3's paper, RL Zoo's default)
        "net_arch": "large",
        "activation": "relu",
    },
    spaces={"budget": budget_space},
    sample=offpolicy.sample,
    cost=offpolicy.cost,
    check=offpolicy.check,
    constructor_params=offpolicy.CONSTRUCTOR_PARAMS,
    campaign={
        "coarse": {"train_freq": PRESET, "action_noise": PRESET, "noise_std": PRESET},
        "finetune": {"tau": AROUND, "noise_std": AROUND},
    },
    known_good=(
        KnownGood(
            {"action_noise": "normal", "noise_std": 0.1},
            "published: Gaussian exploration noise of scale 0.1 (Fujimoto et al., 2018, 'Addressing Function "
            "Approximation Error in Actor-Critic Methods'; RL Zoo's td3.yml default)",
        ),
    ),
)
