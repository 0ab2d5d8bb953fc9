"""How a trial's training ends, and what the worker then did with the trial (torch-free: a fake trainer
and the worker loop use these without loading SB3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from study_contract import protocol


class Outcome(StrEnum):
    """What running one claimed trial came to (the worker's log and ``Worker.outcomes``)."""

    COMPLETE = "complete"
    PRUNED = "pruned"
    HANDED_BACK = "handed back"
    """Stopped by a shutdown; its configuration is queued for another worker."""
    FAILED = "failed"
    DROPPED = "dropped"
    """Its study was deleted, or it was failed as stale, while this worker ran it: nothing is written."""
    RELEASED = "released"
    """A shutdown came before training started: the trial is WAITING again."""
    QUEUED = "queued as instances"
    """A configuration of a study with several tasks or seeds: its instances are queued for any worker to train."""


@dataclass
class TrainingResult:
    outcome: Outcome  # COMPLETE, PRUNED or HANDED_BACK: any other ending is an exception
    value: float | None
    env_steps: int
    wall_seconds: float
    eval_seconds: float
    curve: list[list[float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    compute_per_step: float = 0.0
    relative_compute: float = 0.0

    @property
    def train_steps_per_second(self) -> float:
        return self.env_steps / max(self.wall_seconds - self.eval_seconds, 1e-9)

    def attrs(self) -> dict[str, Any]:
        measured = {}
        if self.env_steps:  # a configuration over max_compute never trained
            measured = {
                protocol.TRAIN_STEPS_PER_SECOND: round(self.train_steps_per_second, 2),
                protocol.SECONDS_PER_KSTEP: round(1000 / self.train_steps_per_second, 3),
            }
        return {
            protocol.ENV_STEPS: self.env_steps,
            protocol.WALL_SECONDS: round(self.wall_seconds, 3),
            protocol.EVAL_SECONDS: round(self.eval_seconds, 3),
            **measured,
            protocol.COMPUTE_PER_STEP: round(self.compute_per_step),
            protocol.RELATIVE_COMPUTE: round(self.relative_compute, 3),
            **self.extra,
        }
