"""One configuration for all the development tasks against one per task, at the same total budget; appends results.

One study over the three development tasks (``--env A --env B --env C``, one seed per configuration, N trials)
trains 3 x N runs, as three single-task studies of N trials do (``benchmarks/settings.py`` records those with
the defaults, ``--no-confirm``, under the same sampler seeds). Its winner is re-trained on 5 fresh seeds of every
task, as each single-task winner is on its own task. A run already in the results file is skipped.

python benchmarks/multi_task.py --algo ppo --timesteps 30000 [--repeats 2] [--trials 12] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import versus_zoo  # noqa: E402 - the repository root is on the path only now
from benchmarks.tasks import DEVELOPMENT_TASKS  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "instances" / "multi_task.jsonl"


def on_task(script: str, task: str) -> str:
    """The exported training script, training on ``task`` (a development task named by this harness) instead."""
    return re.sub(r"^ENV_ID = .*$", f"ENV_ID = {task!r}", script, count=1, flags=re.MULTILINE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", required=True)
    parser.add_argument("--timesteps", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--first-repeat", type=int, default=0)
    versus_zoo.add_run_options(parser, workers=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    tasks = list(DEVELOPMENT_TASKS)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in args.results.read_text().splitlines()] if args.results.exists() else []
    for repeat in range(args.first_repeat, args.first_repeat + args.repeats):
        args.env, args.sampler_seed = tasks[0], repeat
        args.ours_options = ["--no-confirm", *(f"--env={task}" for task in tasks[1:])]
        settings = {**versus_zoo.run_settings(args, "ours"), "tasks": tasks}
        if any(all(r.get(k) == v for k, v in settings.items()) for r in done):
            continue
        load_before = os.getloadavg()[0]
        with tempfile.TemporaryDirectory(prefix="multi-task-") as work:
            tuned = versus_zoo.tune_ours(args, Path(work))
        seeds = [versus_zoo.FRESH_SEED_BASE + i for i in range(args.seeds)]
        fresh = {}
        for task in tasks:
            on = replace(tuned, script=on_task(tuned.script, task))
            task_args = argparse.Namespace(**{**vars(args), "env": task})
            with ProcessPoolExecutor(max_workers=args.workers) as pool:
                runs = list(pool.map(versus_zoo.retrain, ["ours"] * len(seeds), [on] * len(seeds),
                                     [task_args] * len(seeds), seeds))  # fmt: skip
            fresh[task] = [score for score, _, _ in runs]
        record = {**settings, "wall_seconds": round(tuned.wall_seconds, 1), "cpu_seconds": round(tuned.cpu_seconds, 1),
                  "tuned_value": tuned.value, "trials_finished": tuned.trials, "pruned": tuned.pruned,
                  "winner": tuned.winner, "fresh_seeds": seeds, "fresh_seed_scores": fresh,
                  "commit": versus_zoo._commit(), "machine": versus_zoo._machine(),
                  "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                  "date": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
        with args.results.open("a") as out:
            out.write(json.dumps(record, default=str) + "\n")
        print(f"{args.algo} {'+'.join(tasks)} seed {repeat}: tuned {tuned.wall_seconds:.0f} s, fresh "
              f"{ {t: [round(s) for s in v] for t, v in fresh.items()} }", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
