"""The algorithm registry: one :class:`Algorithm` entry per SB3 algorithm, everything about it in one place.

An entry holds the SB3 class name, SB3's default hyperparameters (the baseline trial; a test checks
them against ``inspect.signature`` of the SB3 class and its policy), the named search spaces
(``budget``, the default, and ``guide``, the tuning guide's table exactly), the constraints a space
must satisfy, the pure ``trial -> params`` sampler, and the mapping to SB3 keyword arguments. Adding
an algorithm is one entry here plus its tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from study_contract.schedules import SCHEDULES
from study_contract.space import (
    ParamSpec,
    SpaceError,
    Suggester,
    choice,
    clamp,
    fixed,
    fixed_choice,
    largest_pow2_at_most,
    rng,
    smallest_pow2_at_least,
    suggest,
)

# Named network sizes: a space names a size, the worker builds ``policy_kwargs={"net_arch": [...]}``.
NET_ARCHS: dict[str, list[int]] = {"tiny": [32, 32], "small": [64, 64], "medium": [256, 256], "large": [400, 300]}
# Activation names; the worker maps them to torch.nn classes (study_admin never imports torch).
ACTIVATIONS = ("tanh", "relu")
# Below this many policy updates per trial, PPO's budget space shrinks its rollouts (see ppo_budget_space).
MIN_PPO_UPDATES = 10

Space = dict[str, ParamSpec]
_SCHEDULE = choice(tuple(SCHEDULES))
_NETS = tuple(NET_ARCHS)
_LR_LIMITS = (1e-8, 10.0)
_DISCOUNT_LIMITS = (0.8, 0.9999)


@dataclass(frozen=True)
class Algorithm:
    name: str
    """Registry key and ``--algo`` value."""
    sb3_class: str
    """The Stable-Baselines3 class the worker trains."""
    defaults: dict[str, Any]
    """SB3's defaults for every parameter, as readable values: the baseline trial."""
    spaces: dict[str, Callable[[int, int], Space]]
    """Named spaces, each built for (timesteps per trial, n_envs); the first is the default."""
    sample: Callable[[Suggester, Space, int], dict[str, Any]]
    """Pure ``(trial, space, n_envs) -> params`` sampler."""
    check: Callable[[Space, int, int], None]
    """Raises :class:`SpaceError` when no valid configuration exists in (space, n_envs, timesteps)."""
    sb3_only: frozenset[str] = field(default_factory=frozenset)
    """Parameters that are SB3 constructor arguments as they are (the rest are mapped)."""
    constrain: Callable[[dict[str, Any], int], dict[str, Any]] = lambda params, n_envs: params
    """Moves a configuration built outside the sampler (the baseline) back inside the constraints."""
    fit: Callable[[Space, int, int], Space] = lambda space, timesteps, n_envs: space
    """Narrows a space (after a user's overrides) to what a trial of ``timesteps`` can use."""
    known_good: tuple[dict[str, Any], ...] = ()
    """Configurations that learned fast in short trials (parameters left out are SB3's defaults): queued
    after the baseline, so the search starts from them."""

    @property
    def default_space_name(self) -> str:
        return next(iter(self.spaces))

    def space(self, name: str, timesteps: int, n_envs: int) -> Space:
        if name not in self.spaces:
            raise SpaceError(f"space preset {name!r} is not one of {list(self.spaces)}")
        return self.spaces[name](timesteps, n_envs)

    def baseline(self, space: Space, n_envs: int) -> dict[str, Any]:
        """SB3's defaults, moved inside ``space`` where it excludes them."""
        return self._inside(space, {}, n_envs)

    def starting_points(self, space: Space, n_envs: int) -> list[dict[str, Any]]:
        """The known-good configurations moved inside ``space`` like the baseline, each once, none the baseline."""
        points = [self.baseline(space, n_envs)]
        for point in self.known_good:
            moved = self._inside(space, point, n_envs)
            if moved not in points:
                points.append(moved)
        return points[1:]

    def _inside(self, space: Space, params: dict[str, Any], n_envs: int) -> dict[str, Any]:
        """``params`` (SB3's defaults for the rest) moved inside ``space`` and its constraints."""
        merged = {**self.defaults, **params}
        return self.constrain({name: clamp(spec, merged[name]) for name, spec in space.items()}, n_envs)

    def sb3_kwargs(self, params: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments for the SB3 class, with ``policy_kwargs`` built from the named network.

        ``learning_rate`` is the initial rate (``lr_schedule`` says how it decays) and
        ``policy_kwargs["activation_fn"]`` is a name from :data:`ACTIVATIONS`; ``normalize`` is a
        ``VecNormalize`` wrapper, not an SB3 argument.
        """
        kwargs = {k: v for k, v in params.items() if k in self.sb3_only}
        kwargs["policy_kwargs"] = {
            "net_arch": list(NET_ARCHS[params["net_arch"]]),
            "activation_fn": params["activation"],
        }
        return kwargs


def _sample_all(trial: Suggester, space: Space, params: dict[str, Any]) -> dict[str, Any]:
    for name, spec in space.items():
        if name not in params:
            params[name] = suggest(trial, name, spec)
    return params


# --- PPO -------------------------------------------------------------------------------------------


def ppo_guide_space(timesteps: int, n_envs: int) -> Space:
    """The guide's PPO table; everything it does not list fixed at SB3's defaults."""
    return fit_rollout_to_budget(
        {
            "learning_rate": rng("float", 1e-5, 1e-3, _LR_LIMITS, log=True),
            "lr_schedule": _SCHEDULE,
            "n_steps": rng("pow2", 1024, 8192, (8, 2**16)),
            "batch_size": rng("pow2", 64, 512, (4, 2**16)),
            "n_epochs": rng("int", 3, 20, (1, 100)),
            "ent_coef": rng("float", 0.0, 0.01, (0.0, 1.0)),
            "gamma": fixed("discount", 0.99, _DISCOUNT_LIMITS),
            "gae_lambda": fixed("float", 0.95, (0.5, 1.0)),
            "clip_range": fixed("float", 0.2, (0.01, 1.0)),
            "max_grad_norm": fixed("float", 0.5, (0.01, 100.0)),
            "net_arch": fixed_choice("small", _NETS),
            "activation": fixed_choice("tanh", ACTIVATIONS),
            "normalize": fixed_choice(False, (False, True)),
        },
        timesteps,
        n_envs,
    )


def ppo_budget_space(timesteps: int, n_envs: int) -> Space:
    """Ranges that suit the trial's budget: rollouts leave at least ``MIN_PPO_UPDATES`` policy updates.

    The largest rollout ``n_steps * n_envs`` is at most ``timesteps / MIN_PPO_UPDATES`` (and 2048
    steps per env), the smallest an eighth of it; minibatches fit the smallest rollout. The knobs the
    guide leaves at their defaults (discount, GAE, clipping, gradient norm, network, activation,
    observation normalisation) are searched too, in the ranges RL Zoo's tuned MuJoCo settings use.
    """
    per_env = max(timesteps // (MIN_PPO_UPDATES * n_envs), 1)
    steps_high = max(largest_pow2_at_most(min(per_env, 2048)), min(16, largest_pow2_at_most(timesteps // n_envs)))
    steps_low = max(steps_high // 8, min(16, steps_high))
    batch_high = min(256, largest_pow2_at_most(steps_low * n_envs))
    return {
        "learning_rate": rng("float", 1e-5, 3e-3, _LR_LIMITS, log=True),
        "lr_schedule": _SCHEDULE,
        "n_steps": rng("pow2", steps_low, steps_high, (8, 2**16)),
        "batch_size": rng("pow2", min(32, batch_high), batch_high, (4, 2**16)),
        "n_epochs": rng("int", 1, 20, (1, 100)),
        "ent_coef": rng("float", 0.0, 0.01, (0.0, 1.0)),
        "gamma": rng("discount", 0.9, 0.9999, _DISCOUNT_LIMITS),
        "gae_lambda": rng("float", 0.8, 1.0, (0.5, 1.0)),
        "clip_range": rng("float", 0.1, 0.4, (0.01, 1.0)),
        "max_grad_norm": rng("float", 0.3, 5.0, (0.01, 100.0), log=True),
        "net_arch": choice(("small", "medium"), _NETS),
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


def check_ppo(space: Space, n_envs: int, timesteps: int) -> None:
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
    if batch.exponent:  # schema-1 spaces tighten ranges per trial instead (sample_ppo)
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


def sample_ppo(trial: Suggester, space: Space, n_envs: int) -> dict[str, Any]:
    """PPO parameters; ``batch_size <= n_steps * n_envs`` holds for every pair the space offers."""
    params: dict[str, Any] = {}
    steps, batch = space["n_steps"], space["batch_size"]
    if batch.exponent:  # schema 1: the ranges offered were tightened per trial to keep the pair valid
        batch_high = None if batch.fixed else min(batch.high, largest_pow2_at_most(steps.largest * n_envs))
        params["batch_size"] = suggest(trial, "batch_size", batch, high=batch_high)
        steps_low = None if steps.fixed else max(steps.low, smallest_pow2_at_least(params["batch_size"] / n_envs))
        params["n_steps"] = suggest(trial, "n_steps", steps, low=steps_low)
    return _sample_all(trial, space, params)


def constrain_ppo(params: dict[str, Any], n_envs: int) -> dict[str, Any]:
    batch = min(params["batch_size"], largest_pow2_at_most(params["n_steps"] * n_envs))
    return {**params, "batch_size": batch}


PPO = Algorithm(
    name="ppo",
    sb3_class="PPO",
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
    spaces={"budget": ppo_budget_space, "guide": ppo_guide_space},
    sample=sample_ppo,
    check=check_ppo,
    constrain=constrain_ppo,
    fit=fit_rollout_to_budget,
    sb3_only=frozenset(
        (
            "learning_rate",
            "n_steps",
            "batch_size",
            "n_epochs",
            "ent_coef",
            "gamma",
            "gae_lambda",
            "clip_range",
            "max_grad_norm",
        )  # fmt: skip
    ),
)

# --- SAC -------------------------------------------------------------------------------------------

_GRADIENT_STEPS = (-1, 1, 2, 4, 8, 16, 32, 64, 128, 256)
_ENT_COEFS = ("auto", "auto_0.1", "auto_0.01")


def sac_guide_space(timesteps: int, n_envs: int) -> Space:
    """The guide's SAC table; everything it does not list fixed at SB3's defaults."""
    return {
        "learning_rate": rng("float", 1e-4, 1e-3, _LR_LIMITS, log=True),
        "lr_schedule": _SCHEDULE,
        "buffer_size": rng("int", 100_000, 1_000_000, (100, 10_000_000), log=True),
        "batch_size": rng("pow2", 256, 1024, (4, 2**14)),
        "tau": rng("float", 0.005, 0.02, (1e-4, 1.0), log=True),
        "train_freq": rng("pow2", 1, 64, (1, 1024)),
        "gradient_steps": rng("pow2", 1, 64, (1, 1024)),
        "gamma": fixed("discount", 0.99, _DISCOUNT_LIMITS),
        "learning_starts": fixed("int", 100, (0, 1_000_000)),
        "ent_coef": fixed_choice("auto", _ENT_COEFS),
        "net_arch": fixed_choice("medium", _NETS),
        "activation": fixed_choice("relu", ACTIVATIONS),
    }


def sac_budget_space(timesteps: int, n_envs: int) -> Space:
    """SAC ranges for the trial's budget, with one gradient step per env-step collected.

    ``gradient_steps=-1`` (SB3: as many as env-steps collected) ties updates to ``train_freq``, so a
    trial's cost stays that of the defaults; ``learning_starts`` is at most a tenth of the budget; the
    replay buffer stays at SB3's 1e6, which a tuning trial never fills and a full run needs. ``tau``
    reaches 0.1 (the guide stops at 0.02): in a short run a target network that follows quickly is
    what lets the critic learn at all.
    """
    return {
        "learning_rate": rng("float", 1e-4, 3e-3, _LR_LIMITS, log=True),
        "lr_schedule": _SCHEDULE,
        "buffer_size": fixed("int", 1_000_000, (100, 10_000_000)),
        "batch_size": rng("pow2", 64, 1024, (4, 2**14)),
        "tau": rng("float", 0.001, 0.1, (1e-4, 1.0), log=True),
        "train_freq": rng("pow2", 1, 16, (1, 1024)),
        "gradient_steps": fixed_choice(-1, _GRADIENT_STEPS),
        "gamma": rng("discount", 0.9, 0.9999, _DISCOUNT_LIMITS),
        "learning_starts": rng("int", 0, max(min(10_000, timesteps // 10), 1), (0, 1_000_000)),
        "ent_coef": choice(_ENT_COEFS),
        "net_arch": choice(("small", "medium", "large"), _NETS),
        "activation": fixed_choice("relu", ACTIVATIONS),
    }


# Two ways to learn within a few thousand env-steps, measured on 3 seeds each at 5k env-steps: a small
# network updated in bursts of 8 on large batches, with a fast target network and a far horizon,
# balanced InvertedPendulum on every seed and took Hopper past 1000 on two of three; a medium one with
# a short horizon was the steadier on Pendulum (-146 to -174, where the first reached -687 once).
_SAC_BURSTS = {"train_freq": 8, "gradient_steps": -1}
SAC_KNOWN_GOOD = (
    {"learning_rate": 6e-4, "batch_size": 1024, "tau": 0.07, "gamma": 0.9999, "net_arch": "small", **_SAC_BURSTS},
    {"learning_rate": 1e-3, "batch_size": 256, "tau": 0.02, "gamma": 0.98, "learning_starts": 500, **_SAC_BURSTS},
)


def check_sac(space: Space, n_envs: int, timesteps: int) -> None:
    starts = space["learning_starts"].smallest
    if starts >= timesteps:
        raise SpaceError(
            f"learning_starts={starts} is not below timesteps={timesteps}: no trial would ever train; "
            "lower learning_starts in --space or raise --timesteps"
        )


def sample_sac(trial: Suggester, space: Space, n_envs: int) -> dict[str, Any]:
    return _sample_all(trial, space, {})


SAC = Algorithm(
    name="sac",
    sb3_class="SAC",
    defaults={
        "learning_rate": 3e-4,
        "lr_schedule": "constant",
        "buffer_size": 1_000_000,
        "batch_size": 256,
        "tau": 0.005,
        "train_freq": 1,
        "gradient_steps": 1,
        "gamma": 0.99,
        "learning_starts": 100,
        "ent_coef": "auto",
        "net_arch": "medium",
        "activation": "relu",
    },
    spaces={"budget": sac_budget_space, "guide": sac_guide_space},
    sample=sample_sac,
    check=check_sac,
    known_good=SAC_KNOWN_GOOD,
    sb3_only=frozenset(
        (
            "learning_rate",
            "buffer_size",
            "batch_size",
            "tau",
            "train_freq",
            "gradient_steps",
            "gamma",
            "learning_starts",
            "ent_coef",
        )  # fmt: skip
    ),
)

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (PPO, SAC)}


def algorithm(name: str) -> Algorithm:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise SpaceError(f"unknown algorithm {name!r}; choose one of {list(ALGORITHMS)}") from None
