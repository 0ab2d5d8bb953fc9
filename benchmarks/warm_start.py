"""Warm start against cold on the development tasks, at the same budget; appends results, asserts nothing.

For each sampler seed the target is tuned cold (``--warm-start off``, an empty database), and warm once per
scenario with the same sampler seed (``--warm-start source``, on a copy of a database holding the scenario's
finished source study, tuned cold with the same seed and kept under ``--sources``). Each winner is re-trained
on fresh seeds as in ``benchmarks/versus_zoo.py``. The scenarios: a finished study of another development
task (InvertedPendulum-v5, Pendulum-v1), and one of the same task at a third of the budget.

python benchmarks/warm_start.py [--repeats 3] [--first-repeat 0] [--scenarios other-task smaller-budget]
  [--results benchmarks/results/warm_start/warm_start.jsonl] [--sources DIR] [--hold-file F]

Runs are interleaved (repeat, then cold and each scenario's warm run), and a run already in the results file is
skipped, so a stopped comparison resumes. ``python benchmarks/report.py`` writes the table in docs/tuning.md:
each side's fresh-seed IQM, and the env-steps the warm study trained until a trial first beat the cold
study's best tuning value.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import versus_zoo  # noqa: E402 - the repository root is on the path only now

RESULTS = REPO / "benchmarks" / "results" / "warm_start" / "warm_start.jsonl"
TARGET, TIMESTEPS, TRIALS = "Hopper-v5", 30_000, 12
# scenario -> (the source study's task, its env-steps per trial). SB3's defaults win on InvertedPendulum, so a study
# of it hands on the baseline every study runs; on Pendulum they do not.
SCENARIOS = {"other-task": ("InvertedPendulum-v5", TIMESTEPS), "other-task-pendulum": ("Pendulum-v1", TIMESTEPS),
             "smaller-budget": (TARGET, TIMESTEPS // 3)}  # fmt: skip
SIDES = {"cold": ["--no-confirm", "--warm-start", "off"], "warm": ["--no-confirm", "--warm-start", "source"]}


def _args(seed: int, env: str, timesteps: int, options: list[str], workers: int) -> argparse.Namespace:
    return argparse.Namespace(algo="ppo", env=env, timesteps=timesteps, trials=TRIALS, workers=workers, seeds=5,
                              evaluations=5, eval_episodes=5, final_episodes=10, sampler_seed=seed,
                              ours_options=options)  # fmt: skip


def source_database(scenario: str, seed: int, folder: Path, workers: int) -> Path:
    """The finished source study of ``scenario`` for ``seed`` (named ``source``), tuned once and kept."""
    kept = folder / f"{scenario}-{seed}.sqlite3"
    if not kept.exists():
        env, timesteps = SCENARIOS[scenario]
        args = _args(seed, env, timesteps, SIDES["cold"], workers)
        with tempfile.TemporaryDirectory(prefix="warm-source-") as work:
            versus_zoo.tune_ours(args, Path(work), name="source")
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(work) / "studies.sqlite3", kept.with_suffix(".partial"))
        kept.with_suffix(".partial").rename(kept)
    return kept


def _done(path: Path) -> set[tuple[str, str | None, int]]:
    if not path.exists():
        return set()
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["side"], r["scenario"], r["sampler_seed"]) for r in records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--first-repeat", type=int, default=0)
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--sources", type=Path, default=Path("/tmp/warm-start-sources"),
                        help="where the source studies' databases are kept between runs")  # fmt: skip
    parser.add_argument("--hold-file", type=Path, default=Path("/tmp/benchmark.hold"))
    args = parser.parse_args()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for seed in range(args.first_repeat, args.first_repeat + args.repeats):
        # One cold run per seed is every scenario's reference.
        for side, scenario in [("cold", None), *(("warm", s) for s in args.scenarios)]:
            if (side, scenario, seed) in _done(args.results):
                continue
            while args.hold_file.exists():
                time.sleep(10)
            base = None if scenario is None else source_database(scenario, seed, args.sources, args.workers)
            run = _args(seed, TARGET, TIMESTEPS, SIDES[side], args.workers)
            record = versus_zoo.run_one(run, "ours", base=base)
            record |= {"side": side, "scenario": scenario}
            if scenario is not None:
                record |= {"source_env": SCENARIOS[scenario][0], "source_timesteps": SCENARIOS[scenario][1]}
            with args.results.open("a") as out:
                out.write(json.dumps(record, default=str) + "\n")
            print(f"seed {seed} {side} {scenario or ''}: tuned {record['tuned_value']:.0f} in "
                  f"{record['wall_seconds']:.0f} s, fresh {[round(s) for s in record['fresh_seed_scores']]}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
