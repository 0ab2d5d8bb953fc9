"""Re-run one complete trial on this machine and compare: ``study_admin reproduce NAME --trial N`` runs this.

The trial is trained again as its worker trained it (the stored configuration and seed, the study's
evaluation schedule, the recorded number of threads) and nothing is written to the database. The new
value and learning curve are compared with the stored ones, and each recorded version or task spec that
differs from this machine's is named. SB3 on CPU with the same versions, seed and threads gives the
same value.

python -m worker.reproduce NAME N THREADS   (the database URL in DATABASE_URL, so that it never shows in ``ps``)
Exit codes: 0 the stored value again, 1 database unusable, 2 nothing to re-run, 3 a different value, 4 training
failed. Only the thread pinning is imported at the top: the threads must be set before numpy, torch or JAX
start their pools, and Optuna imports numpy.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker.threads import pin_threads

if TYPE_CHECKING:
    from study_contract.definition import StudyDefinition
    from study_contract.store.trials import TrialView

EXIT_SAME, EXIT_DB, EXIT_INPUT, EXIT_DIFFERENT, EXIT_FAILED = 0, 1, 2, 3, 4


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
        from study_contract.formatting import format_value, printable

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


def train_again(definition: StudyDefinition, params: dict[str, Any], seed: int) -> list[tuple[int, float]]:
    """The learning curve of the configuration trained again, its last point the final evaluation."""
    from stable_baselines3.common.callbacks import CallbackList

    from worker.callbacks import StopOnNonFinite
    from worker.health import Pulse
    from worker.training import build_model, make_envs, make_evaluator

    train_env, eval_env = make_envs(definition, params, seed)
    try:
        model = build_model(definition, params, train_env, seed)
        evaluator = make_evaluator(definition, eval_env, None, retry=lambda _what, fn: fn(), pulse=Pulse(None))
        model.learn(definition.timesteps, callback=CallbackList([StopOnNonFinite(), evaluator]))
        evaluator.evaluate_now()
        return [(int(step), float(value)) for step, value in evaluator.curve]
    finally:
        train_env.close()
        eval_env.close()


def reproduce(url: str, name: str, number: int) -> Reproduction:
    from study_contract import protocol
    from study_contract.store.storage import open_storage
    from study_contract.store.study_view import trial_to_reproduce
    from worker.provenance import differences

    definition, trial = trial_to_reproduce(open_storage(url), name, number)
    assert trial.seed is not None  # trial_to_reproduce checked it
    params = definition.check_params(trial.hyperparams)
    curve = train_again(definition, params, trial.seed)
    recorded = trial.get(protocol.PROVENANCE) or {}
    return Reproduction(trial, definition, curve[-1][1], curve, differences(recorded, definition))


def main(argv: list[str]) -> int:
    name, number, threads = argv[0], int(argv[1]), int(argv[2])
    pin_threads(threads)  # threads change the order of sums, and so the value
    from study_contract.names import DefinitionError, StudyError
    from study_contract.store.storage import StorageError, describe_first_line

    try:
        result = reproduce(os.environ["DATABASE_URL"], name, number)
    except (StudyError, DefinitionError) as exc:
        print(f"study_admin: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except StorageError as exc:
        print(f"study_admin: error: {exc}", file=sys.stderr)
        return EXIT_DB
    except Exception as exc:  # noqa: BLE001 - a task or library that will not train here: one line, not a traceback
        print(f"study_admin: error: training trial {number} of {name!r} again failed: {type(exc).__name__}: "
              f"{describe_first_line(exc)}", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    sys.stdout.write(result.report(name))
    return EXIT_SAME if result.same else EXIT_DIFFERENT


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
