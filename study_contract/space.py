"""Search spaces as data: one :class:`ParamSpec` per hyperparameter, YAML overrides, Optuna suggestions.

A space maps each hyperparameter to a :class:`ParamSpec`. This module describes, validates and samples
spaces without importing torch, SB3 or Optuna (:func:`suggest` only calls the trial it is given); the
algorithm registry (``study_contract/algorithms/``) holds each algorithm's spaces and constraints.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml

Kind = Literal["float", "int", "pow2", "discount", "choice"]
KINDS: tuple[Kind, ...] = ("float", "int", "pow2", "discount", "choice")


class SpaceError(ValueError):
    """A search space or space file that cannot be used; the message names the value."""


class Suggester(Protocol):
    """The part of ``optuna.Trial`` a sampler uses."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class ParamSpec:
    """How one hyperparameter is searched.

    ``kind`` says how it is sampled: ``float``/``int`` (optionally log scale), ``pow2`` (a power of
    two between ``low`` and ``high``, offered as a choice of the real values), ``discount`` (sampled as
    ``1 - value`` on a log scale), ``choice`` (one of ``choices``). ``fixed`` pins it to ``value``.
    ``limits`` are the values ever accepted. ``exponent`` marks a ``pow2`` of a schema-1 study, which
    was searched as its exponent (``log2_<name>``): such studies keep sampling it that way.
    """

    kind: Kind
    low: Any = None  # a number for ranged kinds, None for choices and fixed parameters
    high: Any = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    fixed: bool = False
    value: Any = None
    limits: tuple[Any, ...] = ()
    exponent: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["choices"] = list(self.choices)
        data["limits"] = list(self.limits)
        return data

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> ParamSpec:
        """The spec of parameter ``name`` as stored, checked as untrusted input."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise SpaceError(f"{name}: parameter spec keys {sorted(unknown)} are not understood")
        spec = cls(**{**data, "choices": tuple(data.get("choices", ())), "limits": tuple(data.get("limits", ()))})
        spec.check(name)
        return spec

    def check(self, name: str) -> None:
        """Raise :class:`SpaceError` unless this is a spec the samplers can use: a known kind, and values
        (a fixed value, a range, choices) inside its limits."""
        if self.kind not in KINDS:
            raise SpaceError(f"{name}: kind={self.kind!r} is not one of {list(KINDS)}")
        if not all(isinstance(flag, bool) for flag in (self.log, self.fixed, self.exponent)):
            raise SpaceError(f"{name}: log, fixed and exponent must be true or false")
        if self.kind == "choice":
            if not self.limits:
                raise SpaceError(f"{name}: a choice needs its accepted values (limits)")
        elif len(self.limits) != 2 or not all(_is_number(v) and math.isfinite(v) for v in self.limits):
            raise SpaceError(f"{name}: limits={list(self.limits)!r} must be two finite numbers")
        if self.fixed:
            check_value(name, self, self.value, "value")
        elif self.kind == "choice":
            if not self.choices:
                raise SpaceError(f"{name}: an open choice needs choices")
            for value in self.choices:
                check_value(name, self, value, "choice")
        else:
            low, high = check_value(name, self, self.low, "low"), check_value(name, self, self.high, "high")
            if low > high or (self.log and low <= 0):
                raise SpaceError(f"{name}: low={low!r}, high={high!r} is not a range{' on a log scale' * self.log}")

    @property
    def smallest(self) -> Any:
        return self.value if self.fixed else self.low

    @property
    def largest(self) -> Any:
        return self.value if self.fixed else self.high


def rng(kind: Kind, low: float, high: float, limits: tuple[float, float], *, log: bool = False) -> ParamSpec:
    return ParamSpec(kind=kind, low=low, high=high, log=log, limits=limits)


def fixed(kind: Kind, value: Any, limits: tuple[Any, ...]) -> ParamSpec:
    return ParamSpec(kind=kind, fixed=True, value=value, limits=limits)


def choice(choices: tuple[Any, ...], limits: tuple[Any, ...] | None = None) -> ParamSpec:
    return ParamSpec(kind="choice", choices=choices, limits=limits or choices)


def fixed_choice(value: Any, limits: tuple[Any, ...]) -> ParamSpec:
    return ParamSpec(kind="choice", choices=limits, fixed=True, value=value, limits=limits)


def largest_pow2_at_most(limit: float) -> int:
    return 1 << (int(limit).bit_length() - 1)


def smallest_pow2_at_least(limit: float) -> int:
    return 1 << max(math.ceil(math.log2(limit)), 0)


def powers_of_two(low: int, high: int) -> list[int]:
    return [1 << e for e in range(int(low).bit_length() - 1, int(high).bit_length())]


def optuna_name(name: str, spec: ParamSpec) -> str:
    """The Optuna parameter behind ``name``: discounts are searched as ``one_minus_<name>``."""
    if spec.kind == "pow2" and spec.exponent:
        return f"log2_{name}"
    return f"one_minus_{name}" if spec.kind == "discount" else name


def readable_names(space: Mapping[str, ParamSpec]) -> dict[str, str]:
    """Optuna parameter name -> the readable name it stands for: the inverse of :func:`optuna_name`."""
    return {optuna_name(name, spec): name for name, spec in space.items()}


def to_optuna_value(spec: ParamSpec, value: Any) -> Any:
    """A readable value as the Optuna parameter :func:`optuna_name` names."""
    if spec.kind == "pow2" and spec.exponent:
        return int(value).bit_length() - 1
    if spec.kind == "discount":
        return 1.0 - value
    return value


def suggest(trial: Suggester, name: str, spec: ParamSpec, *, low: Any = None, high: Any = None) -> Any:
    """One readable value for ``name``; ``low``/``high`` tighten an exponent-coded range (schema 1)."""
    if spec.fixed:
        return spec.value
    internal = optuna_name(name, spec)
    if spec.kind == "float":
        return trial.suggest_float(internal, spec.low, spec.high, log=spec.log)
    if spec.kind == "int":
        return trial.suggest_int(internal, int(spec.low), int(spec.high), log=spec.log)
    if spec.kind == "pow2" and spec.exponent:
        lo, hi = (spec.low if low is None else low), (spec.high if high is None else high)
        return 2 ** trial.suggest_int(internal, to_optuna_value(spec, lo), to_optuna_value(spec, hi))
    if spec.kind == "pow2":
        return trial.suggest_categorical(internal, powers_of_two(spec.low, spec.high))
    if spec.kind == "discount":
        return 1.0 - trial.suggest_float(internal, 1.0 - spec.high, 1.0 - spec.low, log=True)
    return trial.suggest_categorical(internal, list(spec.choices))


def optuna_params(space: dict[str, ParamSpec], params: dict[str, Any]) -> dict[str, Any]:
    """Readable values as the Optuna parameters :func:`suggest` would have recorded (for enqueueing)."""
    return {optuna_name(n, s): to_optuna_value(s, params[n]) for n, s in space.items() if not s.fixed}


def clamp(spec: ParamSpec, value: Any) -> Any:
    """``value`` moved inside ``spec``: a fixed value, the nearest bound, or the first choice."""
    if spec.fixed:
        return spec.value
    if spec.kind == "choice":
        return value if value in spec.choices else spec.choices[0]
    return min(max(value, spec.low), spec.high)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_value(name: str, spec: ParamSpec, value: Any, what: str) -> Any:
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
    if spec.kind in ("float", "discount"):
        value = float(value)
    return value


def check_within(name: str, spec: ParamSpec, reference: ParamSpec) -> None:
    """Raise :class:`SpaceError` unless ``spec`` (read from the database) accepts only values that ``reference``
    (the registry's) accepts: the same kind with limits inside the reference's, or a choice among values the
    reference accepts as they are."""
    if spec.kind == "choice":
        for value in (*spec.limits, *spec.choices, *((spec.value,) if spec.fixed else ())):
            if isinstance(value, str) and reference.kind != "choice":
                raise SpaceError(f"{name}: value={value!r} must be a number")
            accepted = check_value(name, reference, value, "value")
            if accepted != value or isinstance(accepted, bool) != isinstance(value, bool):
                raise SpaceError(f"{name}: value={value!r} is not one the code accepts for {name}")
        return
    if spec.kind != reference.kind:
        raise SpaceError(f"{name}: kind={spec.kind!r} is not {reference.kind!r}, the kind {name} is searched as")
    (low, high), (ref_low, ref_high) = spec.limits, reference.limits
    if low < ref_low or high > ref_high:
        raise SpaceError(f"{name}: limits={list(spec.limits)!r} exceed the accepted range [{ref_low}, {ref_high}]")


def override(name: str, spec: ParamSpec, raw: Any) -> ParamSpec:
    """``spec`` with one YAML override: a value fixes it, ``{low, high}`` or ``{choices}`` opens it."""
    if not isinstance(raw, dict):
        return replace(spec, fixed=True, value=check_value(name, spec, raw, "value"))
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
        checked = tuple(check_value(name, spec, c, "choice") for c in choices)
        return replace(spec, choices=checked, fixed=False, value=None)
    low = check_value(name, spec, raw.get("low", spec.smallest), "low")
    high = check_value(name, spec, raw.get("high", spec.largest), "high")
    if low > high:
        raise SpaceError(f"{name}: low={low!r} > high={high!r}")
    if spec.log and low <= 0:
        raise SpaceError(f"{name}: low={low!r} must be > 0 on a log scale")
    return replace(spec, low=low, high=high, fixed=False, value=None)


def apply_overrides(algo: str, space: dict[str, ParamSpec], overrides: dict[Any, Any]) -> dict[str, ParamSpec]:
    """``space`` with ``overrides`` (parsed YAML) applied and validated."""
    result = dict(space)
    for name, raw in overrides.items():
        if name not in result:
            close = difflib.get_close_matches(str(name), result, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpaceError(f"unknown {algo} parameter {name!r}{hint}; known: {', '.join(result)}")
        result[name] = override(name, result[name], raw)
    return result


MAX_SPACE_FILE_BYTES = 1_000_000


def read_space_file(path: str | Path) -> dict[Any, Any]:
    """The overrides in a YAML space file (plain data only: tags and code are refused)."""
    if not Path(path).is_file():
        raise SpaceError(f"space file {str(path)!r} cannot be read: it is not a regular file")
    try:
        with Path(path).open("rb") as handle:
            raw = handle.read(MAX_SPACE_FILE_BYTES + 1)
        if len(raw) > MAX_SPACE_FILE_BYTES:
            raise SpaceError(f"space file {str(path)!r} is larger than {MAX_SPACE_FILE_BYTES} bytes")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpaceError(f"space file {str(path)!r} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise SpaceError(f"space file {str(path)!r} is not plain YAML data: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpaceError(f"space file {str(path)!r} must be a mapping of parameter names, got {type(data).__name__}")
    return data
