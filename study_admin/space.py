"""Search spaces as data: the guide's PPO and SAC tables, overrides from a YAML file, SB3 defaults.

A space maps each hyperparameter to a :class:`ParamSpec`. The worker turns a space into Optuna
suggestions (``worker/sampling.py``); this module only describes, validates and converts values, so
``study_admin`` can use it without importing torch or Stable-Baselines3.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

Kind = Literal["float", "int", "pow2", "discount", "choice"]

SCHEDULES = ("constant", "linear", "cosine")

# Named network sizes: YAML names a size, the worker builds ``policy_kwargs={"net_arch": [...]}``.
NET_ARCHS: dict[str, list[int]] = {
    "tiny": [32, 32],
    "small": [64, 64],
    "medium": [256, 256],
    "large": [400, 300],
}


class SpaceError(ValueError):
    """A search space or space file that cannot be used; the message names the value."""


@dataclass(frozen=True)
class ParamSpec:
    """How one hyperparameter is searched.

    ``kind`` says how it is sampled: ``float``/``int`` (optionally log scale), ``pow2`` (a power of
    two, sampled as its exponent), ``discount`` (sampled as ``1 - value`` on a log scale), ``choice``
    (one of ``choices``). ``fixed`` pins it to ``value``. ``limits`` are the values ever accepted.
    """

    kind: Kind
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    fixed: bool = False
    value: Any = None
    limits: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["choices"] = list(self.choices)
        data["limits"] = list(self.limits)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParamSpec:
        return cls(**{**data, "choices": tuple(data["choices"]), "limits": tuple(data["limits"])})


def _rng(kind: Kind, low: float, high: float, limits: tuple[float, float], log: bool = False) -> ParamSpec:
    return ParamSpec(kind=kind, low=low, high=high, log=log, limits=limits)


def _fixed(kind: Kind, value: Any, limits: tuple[Any, ...]) -> ParamSpec:
    return ParamSpec(kind=kind, fixed=True, value=value, limits=limits)


def _choice(choices: tuple[Any, ...], limits: tuple[Any, ...]) -> ParamSpec:
    return ParamSpec(kind="choice", choices=choices, limits=limits)


_SCHEDULE = _choice(SCHEDULES, SCHEDULES)
_NETS = tuple(NET_ARCHS)

# The guide's tables (section 1) plus the MuJoCo knobs it mentions, fixed at SB3's defaults.
PPO_SPACE: dict[str, ParamSpec] = {
    "learning_rate": _rng("float", 1e-5, 1e-3, (1e-8, 1e3), log=True),
    "lr_schedule": _SCHEDULE,
    "n_steps": _rng("pow2", 1024, 8192, (8, 2**16)),
    "batch_size": _rng("pow2", 64, 512, (4, 2**16)),
    "n_epochs": _rng("int", 3, 20, (1, 100)),
    "ent_coef": _rng("float", 0.0, 0.01, (0.0, 1.0)),
    "gamma": _fixed("discount", 0.99, (0.8, 0.9999)),
    "gae_lambda": _fixed("float", 0.95, (0.5, 1.0)),
    "clip_range": _fixed("float", 0.2, (0.01, 1.0)),
    "net_arch": ParamSpec(kind="choice", choices=_NETS, fixed=True, value="small", limits=_NETS),
    "normalize": ParamSpec(kind="choice", choices=(False, True), fixed=True, value=False, limits=(False, True)),
}

SAC_SPACE: dict[str, ParamSpec] = {
    "learning_rate": _rng("float", 1e-4, 1e-3, (1e-8, 1e3), log=True),
    "lr_schedule": _SCHEDULE,
    "buffer_size": _rng("int", 100_000, 1_000_000, (100, 10_000_000), log=True),
    "batch_size": _rng("pow2", 256, 1024, (4, 2**14)),
    "tau": _rng("float", 0.005, 0.02, (1e-4, 1.0), log=True),
    "train_freq": _rng("pow2", 1, 64, (1, 1024)),
    "gradient_steps": _rng("pow2", 1, 64, (1, 1024)),
    "gamma": _fixed("discount", 0.99, (0.8, 0.9999)),
    "learning_starts": _fixed("int", 100, (0, 1_000_000)),
    "net_arch": ParamSpec(kind="choice", choices=_NETS, fixed=True, value="medium", limits=_NETS),
}

DEFAULT_SPACES: dict[str, dict[str, ParamSpec]] = {"ppo": PPO_SPACE, "sac": SAC_SPACE}

# Stable-Baselines3's own defaults: the guide's step 1 ("Baseline") runs these first.
SB3_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {
        "learning_rate": 3e-4,
        "lr_schedule": "constant",
        "n_steps": 2048,
        "batch_size": 64,
        "n_epochs": 10,
        "ent_coef": 0.0,
        "gamma": 0.99,
        "gae_lambda": 0.95,
        "clip_range": 0.2,
        "net_arch": "small",
        "normalize": False,
    },
    "sac": {
        "learning_rate": 3e-4,
        "lr_schedule": "constant",
        "buffer_size": 1_000_000,
        "batch_size": 256,
        "tau": 0.005,
        "train_freq": 1,
        "gradient_steps": 1,
        "gamma": 0.99,
        "learning_starts": 100,
        "net_arch": "medium",
    },
}


def optuna_name(name: str, spec: ParamSpec) -> str:
    """The Optuna parameter behind ``name``: sizes are searched as exponents, discounts as ``1 - x``."""
    return {"pow2": f"log2_{name}", "discount": f"one_minus_{name}"}.get(spec.kind, name)


def to_optuna_value(spec: ParamSpec, value: Any) -> Any:
    """A readable value as the Optuna parameter :func:`optuna_name` names."""
    if spec.kind == "pow2":
        return int(value).bit_length() - 1
    if spec.kind == "discount":
        return 1.0 - value
    return value


def largest_pow2_at_most(limit: int) -> int:
    return 1 << (int(limit).bit_length() - 1)


def smallest_pow2_at_least(limit: float) -> int:
    return 1 << max(math.ceil(math.log2(limit)), 0)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_value(name: str, spec: ParamSpec, value: Any, what: str) -> Any:
    """Return ``value`` converted for ``spec``, or raise naming it and what is accepted."""
    if spec.kind == "choice":
        if value not in spec.limits or isinstance(value, bool) != isinstance(spec.limits[0], bool):
            raise SpaceError(f"{name}: {what}={value!r} is not one of {list(spec.limits)}")
        return value
    if isinstance(value, str):
        # YAML 1.1 reads exponents without a dot ("1e-4") as strings.
        try:
            value = float(value)
        except ValueError:
            pass
    if not _is_number(value) or not math.isfinite(value):
        raise SpaceError(f"{name}: {what}={value!r} must be a finite number")
    lo, hi = spec.limits
    if not lo <= value <= hi:
        raise SpaceError(f"{name}: {what}={value!r} is outside the accepted range [{lo}, {hi}]")
    if spec.kind in ("int", "pow2"):
        if value != int(value):
            raise SpaceError(f"{name}: {what}={value!r} must be an integer")
        value = int(value)
    if spec.kind == "pow2" and value & (value - 1):
        raise SpaceError(f"{name}: {what}={value!r} must be a power of two (e.g. 64, 128, 256)")
    if spec.kind == "float":
        value = float(value)
    return value


def _override(name: str, spec: ParamSpec, raw: Any) -> ParamSpec:
    if not isinstance(raw, dict):
        return replace(spec, fixed=True, value=_check_value(name, spec, raw, "value"))
    allowed = {"choices"} if spec.kind == "choice" else {"low", "high"}
    unknown = set(raw) - allowed
    if unknown or not raw:
        raise SpaceError(
            f"{name}: keys {sorted(map(str, unknown)) or '(none)'} not understood; "
            f"give a single value to fix it, or a mapping with {sorted(allowed)}"
        )
    if spec.kind == "choice":
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{name}: choices={choices!r} must be a non-empty list")
        checked = tuple(_check_value(name, spec, c, "choice") for c in choices)
        return replace(spec, choices=checked, fixed=False, value=None)
    base_low = spec.low if spec.low is not None else spec.value
    base_high = spec.high if spec.high is not None else spec.value
    low = _check_value(name, spec, raw.get("low", base_low), "low")
    high = _check_value(name, spec, raw.get("high", base_high), "high")
    if low > high:
        raise SpaceError(f"{name}: low={low!r} > high={high!r}")
    if spec.log and low <= 0:
        raise SpaceError(f"{name}: low={low!r} must be > 0 on a log scale")
    return replace(spec, low=low, high=high, fixed=False, value=None)


def apply_overrides(algo: str, overrides: dict[Any, Any]) -> dict[str, ParamSpec]:
    """The default space of ``algo`` with ``overrides`` (parsed YAML) applied and validated."""
    space = dict(DEFAULT_SPACES[algo])
    for name, raw in overrides.items():
        if name not in space:
            close = difflib.get_close_matches(str(name), space, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpaceError(f"unknown {algo} parameter {name!r}{hint}; known: {', '.join(space)}")
        space[name] = _override(name, space[name], raw)
    return space


def load_space_file(path: str | Path, algo: str) -> dict[str, ParamSpec]:
    """Read a YAML space file (plain data only: tags and code are refused)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpaceError(f"space file {str(path)!r} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise SpaceError(f"space file {str(path)!r} is not plain YAML data: {first}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpaceError(f"space file {str(path)!r} must be a mapping of parameter names, got {type(data).__name__}")
    try:
        return apply_overrides(algo, data)
    except SpaceError as exc:
        raise SpaceError(f"space file {str(path)!r}: {exc}") from None


def fit_rollout_to_budget(algo: str, space: dict[str, ParamSpec], n_envs: int, timesteps: int) -> dict[str, ParamSpec]:
    """Cap PPO's ``n_steps`` so one rollout (``n_steps * n_envs`` steps) fits in a trial's budget.

    PPO always collects whole rollouts, so a larger ``n_steps`` would silently overshoot ``timesteps``.
    """
    steps = space.get("n_steps")
    if algo != "ppo" or steps is None or steps.fixed:
        return space
    cap = largest_pow2_at_most(timesteps // n_envs) if timesteps >= n_envs else 0
    if steps.low <= cap < steps.high:
        return {**space, "n_steps": replace(steps, high=cap)}
    return space


def check_constraints(algo: str, space: dict[str, ParamSpec], n_envs: int, timesteps: int) -> None:
    """Reject spaces in which no valid configuration exists."""
    if algo != "ppo":
        return
    batch, n_steps = space["batch_size"], space["n_steps"]
    smallest_rollout = (n_steps.value if n_steps.fixed else n_steps.low) * n_envs
    if smallest_rollout > timesteps:
        raise SpaceError(
            f"n_steps x n_envs={smallest_rollout} exceeds timesteps={timesteps}: no trial could finish one "
            "PPO rollout within its budget; raise --timesteps or lower n_steps in --space"
        )
    smallest_batch = batch.value if batch.fixed else batch.low
    largest_rollout = (n_steps.value if n_steps.fixed else n_steps.high) * n_envs
    if smallest_batch > largest_rollout:
        raise SpaceError(
            f"batch_size={smallest_batch} can never fit in a rollout of n_steps x n_envs="
            f"{largest_rollout}; lower batch_size or raise n_steps / --n-envs"
        )


def baseline_params(algo: str, space: dict[str, ParamSpec], n_envs: int) -> dict[str, Any]:
    """SB3's defaults, moved inside ``space`` where the space excludes them."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        default = SB3_DEFAULTS[algo][name]
        if spec.fixed:
            params[name] = spec.value
        elif spec.kind == "choice":
            params[name] = default if default in spec.choices else spec.choices[0]
        else:
            params[name] = min(max(default, spec.low), spec.high)
    if algo == "ppo":
        steps = space["n_steps"]
        if params["batch_size"] > params["n_steps"] * n_envs and not steps.fixed:
            params["n_steps"] = min(smallest_pow2_at_least(params["batch_size"] / n_envs), steps.high)
        params["batch_size"] = min(params["batch_size"], largest_pow2_at_most(params["n_steps"] * n_envs))
    return params


def to_sb3_kwargs(algo: str, params: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments ``PPO(...)``/``SAC(...)`` accept unchanged, from readable parameters.

    ``learning_rate`` is the initial rate; ``lr_schedule`` and ``normalize`` are not SB3 arguments and
    are returned by :func:`schedule_and_wrappers` instead.
    """
    skip = {"lr_schedule", "normalize", "net_arch"}
    kwargs = {k: v for k, v in params.items() if k not in skip}
    kwargs["policy_kwargs"] = {"net_arch": list(NET_ARCHS[params["net_arch"]])}
    return kwargs


def schedule_and_wrappers(params: dict[str, Any]) -> dict[str, Any]:
    """What a user must add around the SB3 keyword arguments to reproduce a trial."""
    lr, schedule = params["learning_rate"], params["lr_schedule"]
    formulas = {
        "constant": f"{lr:g}",
        "linear": f"{lr:g} * progress_remaining",
        "cosine": f"{lr:g} * 0.5 * (1 + cos(pi * (1 - progress_remaining)))",
    }
    return {
        "learning_rate_schedule": schedule,
        "learning_rate_formula": formulas[schedule],
        "normalize_observations": bool(params.get("normalize", False)),
    }
