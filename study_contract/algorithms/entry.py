"""What a registry entry is: an :class:`Algorithm`, everything about one algorithm in one place.

An entry holds its SB3 (or sb3-contrib) class, SB3's default hyperparameters (the baseline trial; a test
checks them against ``inspect.signature`` of the class and its policy), its named search spaces, the
constraints a space must satisfy, the pure ``trial -> params`` sampler, how each campaign stage
searches it, its known-good configurations, and :meth:`Algorithm.recipe`: one configuration as the
constructor takes it, in plain data. Training builds the objects from that recipe
(``building.materialise``) and the exports render it, so nothing about an algorithm is written twice.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from study_contract.schedules import SCHEDULES
from study_contract.space import ParamSpec, SpaceError, Suggester, choice, clamp, suggest

Space = dict[str, ParamSpec]

# A network as SB3's ``net_arch`` takes it: one list of layer widths for every network, or one list per network
# (``{"pi": [...], "qf": [...]}``).
Network = list[int] | dict[str, list[int]]
# Named network sizes: a space names a size, the recipe carries its layers. An entry may name its own.
NET_ARCHS: dict[str, list[int]] = {"tiny": [32, 32], "small": [64, 64], "medium": [256, 256], "large": [400, 300]}
# Activation names -> torch.nn class names (study_admin never imports torch; training looks them up).
ACTIVATION_CLASSES = {"tanh": "Tanh", "relu": "ReLU"}
ACTIVATIONS = tuple(ACTIVATION_CLASSES)
# Training libraries: Stable-Baselines3 (PyTorch), or SBX, the same API on JAX, where an entry has its class.
SB3, SBX = "sb3", "sbx"
BACKENDS = (SB3, SBX)
# Where each backend's activations live, and their names there: torch.nn classes, flax.linen functions. A name
# read from the database is looked up here, never used as it is.
ACTIVATION_MODULES = {SB3: "torch.nn", SBX: "flax.linen"}
ACTIVATION_NAMES = {SB3: ACTIVATION_CLASSES, SBX: {"tanh": "tanh", "relu": "relu"}}
# Exploration noise names (RL Zoo's noise_type) -> stable_baselines3.common.noise class names.
NOISE_CLASSES = {"normal": "NormalActionNoise", "ornstein-uhlenbeck": "OrnsteinUhlenbeckActionNoise"}
NOISE_MODULE = "stable_baselines3.common.noise"
NO_NOISE = "none"

SCHEDULE = choice(tuple(SCHEDULES))
NETS = tuple(NET_ARCHS)
LR_LIMITS = (1e-8, 10.0)
DISCOUNT_LIMITS = (0.8, 0.9999)

# How a campaign stage searches a parameter: the preset's range, or a factor around the previous winner.
PRESET, AROUND = "preset", "around"


def mlp_weights(inputs: int, layers: Sequence[int], outputs: int) -> int:
    """The weights of a fully connected network: what one sample's forward pass multiplies and adds."""
    return sum(a * b for a, b in pairwise([inputs, *layers, outputs]))


def sample_all(trial: Suggester, space: Space, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every parameter of ``space`` not already in ``params``, suggested in the space's order."""
    params = dict(params or {})
    for name, spec in space.items():
        if name not in params:
            params[name] = suggest(trial, name, spec)
    return params


@dataclass(frozen=True)
class KnownGood:
    """A configuration that learned fast in short trials; parameters left out are SB3's defaults."""

    params: dict[str, Any]
    source: str
    """Where it comes from: a measurement on development tasks (named in ``tasks``), or a published source."""
    tasks: tuple[str, ...] = ()
    """The tasks it was measured on; empty for a published source. Never a benchmark's held-out task."""


@dataclass(frozen=True)
class Recipe:
    """One configuration as its constructor takes it, in plain data (numbers, names and lists)."""

    library: str
    class_name: str
    backend: str
    kwargs: dict[str, Any]
    """Constructor arguments as they are (no learning rate, policy or noise)."""
    lr_schedule: str
    learning_rate: float
    net_arch: Network
    activation: str
    policy_extras: dict[str, Any]
    """``policy_kwargs`` beyond the network and its activation (TQC's ``n_quantiles``)."""
    action_noise: str | None
    noise_std: float | None
    normalize: bool

    @property
    def activation_module(self) -> str:
        return ACTIVATION_MODULES[self.backend]

    @property
    def activation_class(self) -> str:
        """The activation's name in :attr:`activation_module` (``ReLU`` in torch.nn, ``relu`` in flax.linen)."""
        return ACTIVATION_NAMES[self.backend][self.activation]

    @property
    def activation_path(self) -> str:
        """The activation's import path, e.g. ``torch.nn.ReLU``."""
        return f"{self.activation_module}.{self.activation_class}"

    @property
    def class_path(self) -> str:
        """The algorithm's import path, e.g. ``stable_baselines3.PPO``."""
        return f"{self.library}.{self.class_name}"

    @property
    def noise_class(self) -> str | None:
        return None if self.action_noise is None else NOISE_CLASSES[self.action_noise]


def _same(space: Space, *_: Any) -> Space:
    return space


def _as_is(params: dict[str, Any], n_envs: int) -> dict[str, Any]:
    return params


@dataclass(frozen=True)
class Algorithm:
    name: str
    """Registry key and ``--algo`` value."""
    libraries: dict[str, str]
    """Backend -> the package that holds the class: ``stable_baselines3`` or ``sb3_contrib`` for SB3, ``sbx``."""
    class_name: str
    defaults: dict[str, Any]
    """SB3's defaults for every parameter, as readable values: the baseline trial."""
    spaces: dict[str, Callable[[int, int], Space]]
    """Named spaces, each built for (timesteps per trial, n_envs); the first is the default."""
    sample: Callable[[Suggester, Space, int], dict[str, Any]]
    """Pure ``(trial, space, n_envs) -> params`` sampler."""
    cost: Callable[[dict[str, Any], int, int], float]
    """Training compute per env-step of ``(params, observation size, action size)``: the network weights that
    samples pass through (forward and backward) per env-step collected, on any machine alike."""
    check: Callable[[Space, int, int], None]
    """Raises :class:`SpaceError` when no valid configuration exists in (space, n_envs, timesteps)."""
    constructor_params: frozenset[str]
    """Parameters passed to the constructor as they are (the rest are mapped by :meth:`recipe`)."""
    policy_params: frozenset[str] = frozenset()
    """Parameters passed in ``policy_kwargs``."""
    constrain: Callable[[dict[str, Any], int], dict[str, Any]] = _as_is
    """Moves a configuration built outside the sampler (the baseline) back inside the constraints."""
    fit: Callable[[Space, int, int], Space] = _same
    """Narrows a space (after a user's overrides) to what a trial of ``timesteps`` can use."""
    fit_stage: Callable[[Space, int], Space] = _same
    """Makes a campaign stage's narrowed space satisfy the constraints again (for ``n_envs``)."""
    campaign: dict[str, dict[str, str]] = field(default_factory=dict)
    """Campaign stage -> parameter -> PRESET or AROUND, beyond what the stage searches for every algorithm."""
    known_good: tuple[KnownGood, ...] = ()
    """Queued after the baseline, so the search starts from them."""
    networks: Mapping[str, Network] = field(default_factory=lambda: NET_ARCHS)
    """The network sizes ``net_arch`` names, as the constructor takes them."""
    budget_scaled: frozenset[str] = frozenset()
    """Parameters whose range follows a trial's env-steps per env (PPO's rollout ``n_steps``): a configuration
    carried to a study of another budget keeps their share of it (:meth:`rescaled`)."""

    @property
    def default_space_name(self) -> str:
        return next(iter(self.spaces))

    def space(self, name: str, timesteps: int, n_envs: int) -> Space:
        if name not in self.spaces:
            raise SpaceError(f"space preset {name!r} is not one of {list(self.spaces)} for {self.name}")
        return self.spaces[name](timesteps, n_envs)

    def baseline(self, space: Space, n_envs: int) -> dict[str, Any]:
        """SB3's defaults, moved inside ``space`` where it excludes them."""
        return self.moved_inside(space, {}, n_envs)

    def starting_points(self, space: Space, n_envs: int) -> list[dict[str, Any]]:
        """The known-good configurations moved inside ``space`` like the baseline, each once, none the baseline."""
        points = [self.baseline(space, n_envs)]
        for point in self.known_good:
            moved = self.moved_inside(space, point.params, n_envs)
            if moved not in points:
                points.append(moved)
        return points[1:]

    def moved_inside(self, space: Space, params: dict[str, Any], n_envs: int) -> dict[str, Any]:
        """``params`` (SB3's defaults for the rest) moved inside ``space`` and its constraints."""
        merged = {**self.defaults, **params}
        return self.constrain({name: clamp(spec, merged[name]) for name, spec in space.items()}, n_envs)

    def rescaled(self, params: dict[str, Any], space: Space, ratio: float) -> dict[str, Any]:
        """``params`` from a study of another budget: each of :attr:`budget_scaled` times ``ratio`` (the new steps
        per env over the old), a power of two staying one; the rest as they are (:meth:`moved_inside` clips)."""
        scaled = dict(params)
        for name in self.budget_scaled & params.keys() & space.keys():
            value = params[name] * ratio
            if space[name].kind == "pow2":
                scaled[name] = 2 ** round(math.log2(max(value, 1)))
            elif space[name].kind == "int":
                scaled[name] = round(value)
            else:
                scaled[name] = value
        return scaled

    def relative_cost(self, params: dict[str, Any], obs_size: int, action_size: int) -> float:
        """Training compute per env-step of ``params`` as a multiple of SB3's defaults' on the same task."""
        return self.cost(params, obs_size, action_size) / self.cost(self.defaults, obs_size, action_size)

    @property
    def library(self) -> str:
        """The SB3 package that holds the class."""
        return self.libraries[SB3]

    def recipe(self, params: dict[str, Any], backend: str = SB3) -> Recipe:
        """``params`` (readable values) as ``backend``'s constructor takes them: ``learning_rate`` is the initial
        rate of ``lr_schedule``, the network is named, ``normalize`` means a ``VecNormalize`` wrapper."""
        noise = params.get("action_noise", NO_NOISE)
        return Recipe(
            library=self.libraries[backend],
            class_name=self.class_name,
            backend=backend,
            kwargs={name: params[name] for name in self.defaults if name in self.constructor_params},
            lr_schedule=params["lr_schedule"],
            learning_rate=params["learning_rate"],
            net_arch=copy.deepcopy(self.networks[params["net_arch"]]),
            activation=params["activation"],
            policy_extras={name: params[name] for name in self.defaults if name in self.policy_params},
            action_noise=None if noise == NO_NOISE else noise,
            noise_std=None if noise == NO_NOISE else params["noise_std"],
            normalize=bool(params.get("normalize", False)),
        )
