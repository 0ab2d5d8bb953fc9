"""Re-run one complete trial on this machine and compare: ``study_admin reproduce NAME --trial N`` runs this.

The trial is trained again as its worker trained it (the stored configuration and seed, the study's
evaluation schedule, the recorded number of threads) and nothing is written to the database. The new
value and learning curve are compared with the stored ones, and each recorded version or task spec that
differs from this machine's is named. SB3 on CPU with the same versions, seed and threads gives the
same value.

python -m worker.reproduce NAME N   (the database URL in DATABASE_URL, so that it never shows in ``ps``)
Exit codes: 0 the stored value again, 3 a different value, 1 database unusable, 2 nothing to re-run.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import optuna

from study_contract import protocol
from study_contract.definition import DefinitionError, StudyDefinition, StudyError
from study_contract.formatting import format_value, printable
from study_contract.store.catalog import load_definition, read_trials
from study_contract.store.storage import StorageError, open_storage
from study_contract.store.trials import TrialView

EXIT_SAME, EXIT_DB, EXIT_INPUT, EXIT_DIFFERENT = 0, 1, 2, 3


@dataclass(frozen=True)
class Reproduction:
    trial: TrialView
    definition: StudyDefinition
    value: float
    curve: list[tuple[int, float]]
    differences: list[str]

    @property
    def same(self) -> bool:
        return self.value == self.trial.value

    def report(self, name: str) -> str:
        t, d = self.trial, self.definition
        stored = [(int(step), value) for step, value in t.curve]
        lines = [
            f"trial {t.number} of {printable(name)}: {d.algo.upper()} on {d.env_id}, {d.timesteps} env-steps, "
            f"seed {t.seed}",
            f"stored value      {format_value(t.value)}",
            f"reproduced value  {format_value(self.value)}"
            + ("  (the same)" if self.same else f"  (differs by {self.value - (t.value or 0.0):+.6g})"),
        ]
        if stored == self.curve:
            lines.append(f"learning curve    the same at all {len(stored)} evaluations")
        else:
            first = next((i for i, (a, b) in enumerate(zip(stored, self.curve, strict=False)) if a != b),
                         min(len(stored), len(self.curve)))  # fmt: skip
            lines.append(f"learning curve    {len(stored)} stored and {len(self.curve)} reproduced evaluations, "
                         f"first different at evaluation {first + 1}")  # fmt: skip
        if self.differences:
            lines.append("differs from the record:")
            lines.extend(f"  {printable(line)}" for line in self.differences)
        else:
            lines.append("versions, task spec and threads as recorded")
        return "\n".join(lines) + "\n"


def trial_to_reproduce(
    storage: optuna.storages.RDBStorage, name: str, number: int
) -> tuple[StudyDefinition, TrialView]:
    """The study's definition and its complete trial ``number``, with a configuration and seed to re-run."""
    definition = load_definition(storage, name)
    found = [t for t in read_trials(storage, name) if t.number == number]
    if not found:
        raise StudyError(f"study {name!r} has no trial {number} that has started")
    trial = found[0]
    if not trial.complete:
        raise StudyError(f"trial {number} of {name!r} is {trial.state}: only a complete trial has a value to reproduce")
    if trial.hyperparams is None or trial.seed is None:
        raise StudyError(f"trial {number} of {name!r} records no readable configuration or seed: nothing to re-run")
    return definition, trial


def train_again(definition: StudyDefinition, params: dict[str, Any], seed: int) -> list[tuple[int, float]]:
    """The learning curve of the configuration trained again, its last point the final evaluation."""
    from stable_baselines3.common.callbacks import CallbackList

    from worker.callbacks import StopOnNonFinite
    from worker.health import Pulse
    from worker.training import build_model, make_envs, make_evaluator

    train_env, eval_env = make_envs(definition, bool(params.get("normalize", False)), seed)
    try:
        model = build_model(definition, params, train_env, seed)
        evaluator = make_evaluator(definition, eval_env, None, retry=lambda _what, fn: fn(), pulse=Pulse(None))
        model.learn(definition.timesteps, callback=CallbackList([StopOnNonFinite(), evaluator]))
        evaluator.evaluate_now()
        return [(int(step), float(value)) for step, value in evaluator.curve]
    finally:
        train_env.close()
        eval_env.close()


def reproduce(storage: optuna.storages.RDBStorage, name: str, number: int) -> Reproduction:
    definition, trial = trial_to_reproduce(storage, name, number)
    params = definition.check_params(trial.hyperparams or {})
    recorded = trial.get(protocol.PROVENANCE) or {}
    from worker.threads import pin_threads

    pin_threads(recorded.get("threads") or 1)  # threads change the order of sums, and so the value
    from worker.provenance import differences

    assert trial.seed is not None  # trial_to_reproduce checked it
    curve = train_again(definition, params, trial.seed)
    return Reproduction(trial, definition, curve[-1][1], curve, differences(recorded, definition))


def main(argv: list[str] | None = None) -> int:
    name, number = (argv if argv is not None else sys.argv[1:])[:2]
    try:
        storage = open_storage(os.environ["DATABASE_URL"])
        result = reproduce(storage, name, int(number))
    except (StudyError, DefinitionError) as exc:
        print(f"study_admin: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except StorageError as exc:
        print(f"study_admin: error: {exc}", file=sys.stderr)
        return EXIT_DB
    sys.stdout.write(result.report(name))
    return EXIT_SAME if result.same else EXIT_DIFFERENT


if __name__ == "__main__":
    sys.exit(main())
