"""A trial as read back from the database, decoded once: every value of the type and range a worker writes.

The worker role can write every Optuna table, so nothing a trial holds is trusted: its attributes pass
through the protocol's decoders (``study_contract/protocol.py``), its value and learning curve must be
finite numbers, and what fails a check counts as absent. Everything that reads trials reads these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from study_contract import protocol

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


@dataclass(frozen=True)
class TrialView:
    """One trial, decoded: ``attrs`` and ``system`` hold only the attributes that passed their decoders."""

    trial_id: int
    number: int
    state: str
    """``WAITING``, ``RUNNING``, ``COMPLETE``, ``PRUNED`` or ``FAIL`` (Optuna's state names)."""
    value: float | None
    attrs: dict[str, Any] = field(default_factory=dict)
    system: dict[str, Any] = field(default_factory=dict)
    curve: list[tuple[int, float]] = field(default_factory=list)
    """The evaluations reported to the pruner, by env-step."""
    started: datetime | None = None
    completed: datetime | None = None

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialView:
        recorded = protocol.decode_attrs(trial.user_attrs, protocol.USER_ATTRS).get(protocol.CURVE, [])
        reported = list(trial.intermediate_values.items()) or [(step, value) for step, value in recorded]
        curve = sorted((step, float(v)) for step, v in reported if protocol.finite(v) is not None)
        return cls(
            trial_id=trial._trial_id,
            number=trial.number,
            state=trial.state.name,
            value=protocol.finite(trial.values[0]) if trial.values else None,
            attrs=protocol.decode_attrs(trial.user_attrs, protocol.USER_ATTRS),
            system=protocol.decode_attrs(trial.system_attrs, protocol.SYSTEM_ATTRS),
            curve=curve,
            started=trial.datetime_start,
            completed=trial.datetime_complete,
        )

    def get(self, key: str, default: Any = None) -> Any:
        """A decoded user attribute."""
        return self.attrs.get(key, default)

    @property
    def complete(self) -> bool:
        """Completed with a finite value."""
        return self.state == "COMPLETE" and self.value is not None

    @property
    def hyperparams(self) -> dict[str, Any] | None:
        return self.attrs.get(protocol.HYPERPARAMS)

    @property
    def seed(self) -> int | None:
        return self.attrs.get(protocol.SEED)


def views(trials: list[FrozenTrial]) -> list[TrialView]:
    return [TrialView.of(t) for t in trials]


def by_value(trials: list[TrialView]) -> list[TrialView]:
    """The completed trials, best value first (the study maximises), ties by number: the one best-trial rule."""
    return sorted((t for t in trials if t.complete), key=lambda t: (-(t.value or 0.0), t.number))
