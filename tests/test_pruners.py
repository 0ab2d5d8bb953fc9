"""Each pruner a study can choose stops a trial whose learning curve is worse than the finished trials', and lets a
better one go on (the worker's pruners, on Optuna's in-memory storage)."""

from __future__ import annotations

import optuna
import pytest

from study_contract.definition import PRUNERS, define
from worker.trial_runner import make_pruner

STEPS = [100 * i for i in range(1, 10)]


def _stopped(pruner: str, curve: list[float], finished: int) -> int | None:
    """The step at which a trial with ``curve`` is pruned after ``finished`` trials that climbed to 100, if it is."""
    definition = define(algo="ppo", env_id="Pendulum-v1", n_trials=20, timesteps=900, eval_every=100,
                                 pruner=pruner, pruner_startup_trials=2, pruner_warmup=0.0)  # fmt: skip
    # A fixed name: Hyperband puts a trial in a bracket by a hash of the study name and the trial number, and an
    # in-memory study is otherwise named at random (some names left the losing trial in a bracket of its own).
    study = optuna.create_study(study_name="pruners", direction="maximize", pruner=make_pruner(definition))
    for n in range(finished):
        trial = study.ask()
        for step in STEPS:
            trial.report(step / 9 + n, step)
            trial.should_prune()  # as a worker asks at every evaluation (successive halving records rungs so)
        study.tell(trial, 100.0 + n)
    trial = study.ask()
    for step, value in zip(STEPS, curve, strict=True):
        trial.report(value, step)
        if trial.should_prune():
            return step
    return None


@pytest.mark.parametrize("pruner", [p for p in PRUNERS if p != "none"])
def test_every_pruner_stops_a_losing_curve_and_keeps_a_winning_one(pruner: str) -> None:
    assert _stopped(pruner, [-50.0] * 9, finished=6) is not None
    assert _stopped(pruner, [step / 5 + 50 for step in STEPS], finished=6) is None  # positive control


def test_successive_halving_decides_at_the_first_evaluation() -> None:
    assert _stopped("successive-halving", [-50.0] * 9, finished=6) == STEPS[0]
