"""Settings of this service compared on the development tasks, where defaults are chosen; appends results.

Each setting is a set of ``study_admin create`` options; every (repeat, task, setting) is one run of
``benchmarks/versus_zoo.py``'s harness for this service alone (tune, then re-train the winner on fresh
seeds). Runs are interleaved (repeat, then task, then setting) so that settings share the machine's
conditions, and a run already in the results file is skipped, so a stopped comparison resumes.

python benchmarks/settings.py --algo ppo --timesteps 30000 --settings "" "--max-compute 3" ...
  [--envs Pendulum-v1 ...] [--repeats 3] [--trials 12] [--workers 2] [--results FILE]

The options ``--no-confirm`` always precede a setting's own: the Zoo has no confirmation, and the
comparison is of the search. ``python benchmarks/report.py`` writes the tables in docs/tuning.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import versus_zoo  # noqa: E402 - the repository root is on the path only now
from benchmarks.tasks import DEVELOPMENT_TASKS  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "development" / "settings.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", required=True)
    parser.add_argument("--timesteps", type=int, required=True)
    parser.add_argument("--settings", nargs="+", required=True, help="each a quoted string of create options")
    parser.add_argument("--envs", nargs="+", default=list(DEVELOPMENT_TASKS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--first-repeat", type=int, default=0)
    versus_zoo.add_run_options(parser, workers=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--hold-file", type=Path, default=Path("/tmp/benchmark.hold"))
    args = parser.parse_args()
    for env_id in args.envs:
        if env_id not in DEVELOPMENT_TASKS:
            parser.error(f"{env_id!r} is not a development task ({', '.join(DEVELOPMENT_TASKS)}): defaults are "
                         "chosen there only")  # fmt: skip
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for repeat in range(args.first_repeat, args.first_repeat + args.repeats):
        for env_id in args.envs:
            for setting in args.settings:
                args.env, args.sampler_seed = env_id, repeat
                args.ours_options = ["--no-confirm", *shlex.split(setting)]
                if versus_zoo._key(versus_zoo.run_settings(args, "ours")) in versus_zoo._done(args.results):
                    continue
                while args.hold_file.exists():
                    time.sleep(10)
                record = versus_zoo.run_one(args, "ours")
                with args.results.open("a") as out:
                    out.write(json.dumps(record, default=str) + "\n")
                scores = [round(s, 1) for s in record["fresh_seed_scores"]]
                print(f"{args.algo} {env_id} seed {repeat} [{setting}]: tuned {record['wall_seconds']:.0f} s "
                      f"(CPU {record['cpu_seconds']:.0f} s), fresh {scores}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
