"""This service against RL Baselines3 Zoo's ``-optimize`` at the same budget; appends results, asserts nothing.

Both tools tune the same task with the same number of trials, env-steps per trial, evaluations per
trial, evaluation episodes and single-threaded workers, on an empty database each. Each tool's winner
is then re-trained from scratch on fresh seeds, the same for both, by the command a user of that tool
runs (ours: the script ``study_admin export --format python`` writes; the Zoo: ``rl_zoo3.train
-params``), timed, and evaluated deterministically on a separate environment: the fresh-seed scores
are what a user would get, the re-training time what each later run of the winner costs.

python benchmarks/versus_zoo.py --algo ppo --envs Walker2d-v5 HalfCheetah-v5 --timesteps 30000 --repeats 3
  [--trials 12] [--workers 1] [--seeds 5] [--evaluations 5] [--eval-episodes 5] [--final-episodes 10]
  [--tools zoo ours] [--results benchmarks/results/versus_zoo.jsonl] [--hold-file F] [--ours-options ...]

Repeat r tunes with sampler seed r. Every finished run appends one JSON line to ``--results`` at once,
and a run whose line is already there is skipped, so a stopped benchmark resumes where it stopped.
``python benchmarks/report.py`` turns the result files into the README's tables and plot.

Needs rl_zoo3 and pandas (the dev dependency group). The Zoo runs as its users run it: several
``python -m rl_zoo3.train -optimize`` processes on one Optuna storage, one thread each, a different
``--seed`` each, its own per-task defaults (hyperparams/*.yml) applying during tuning and re-training.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

from benchmarks.tasks import split_of  # noqa: E402 - the repository root is on the path only now
from study_contract import protocol  # noqa: E402
from study_contract.algorithms import algorithm  # noqa: E402

FRESH_SEED_BASE = 900_000  # disjoint from both tools' tuning seeds
EVAL_SEED_BASE = 700_000
TOOLS = ("zoo", "ours")
VERSIONED = ("locomotion-tuner", "stable_baselines3", "sb3_contrib", "rl_zoo3", "optuna", "torch", "gymnasium")
# What makes two runs the same experiment: a run already in the results file is not run again.
RUN_KEY = ("tool", "algo", "env", "timesteps", "trials", "workers", "evaluations", "eval_episodes", "seeds",
           "final_episodes", "sampler_seed", "options")  # fmt: skip


@dataclass
class Tuned:
    wall_seconds: float
    cpu_seconds: float
    value: float
    winner: dict[str, Any]
    trials: int
    pruned: int
    trial_seconds: list[float]
    script: str = ""
    """Ours: the exported training script of the winner."""
    zoo_kwargs: dict[str, str] = field(default_factory=dict)
    """The Zoo: the winner's keyword arguments as Python source for ``rl_zoo3.train -params``."""
    progress: list[tuple[int, float | None]] = field(default_factory=list)
    """Each finished trial in the order it finished: (env-steps trained by then, its value; None if pruned)."""


def _trial_stats(study: Any) -> tuple[int, int, list[float]]:
    """Finished trials, pruned trials, and each finished trial's duration."""
    finished = [t for t in study.trials if t.state.is_finished()]
    pruned = sum(t.state.name == "PRUNED" for t in finished)
    return len(finished), pruned, [round(t.duration.total_seconds(), 1) for t in finished if t.duration]


def _progress(study: Any, timesteps: int) -> list[tuple[int, float | None]]:
    """(env-steps trained until each trial finished, its value), in the order trials finished; a trial counts the
    env-steps its worker recorded (a pruned one fewer), else the full budget."""
    finished = sorted((t for t in study.trials if t.state.is_finished() and t.datetime_complete),
                      key=lambda t: t.datetime_complete)  # fmt: skip
    steps, progress = 0, []
    for trial in finished:
        recorded = trial.user_attrs.get(protocol.ENV_STEPS)
        steps += recorded if isinstance(recorded, int) else timesteps
        progress.append((steps, trial.value))
    return progress


def _single_threaded() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wait_all(
    processes: list[subprocess.Popen[bytes]], started: float, cpu: float, *, check: bool
) -> tuple[float, float]:
    """Wall and CPU seconds from ``started``/``cpu`` until every process has exited."""
    codes = [p.wait() for p in processes]
    if check and any(codes):
        raise RuntimeError(f"a tuning process failed: exit codes {codes}")
    return time.perf_counter() - started, _children_cpu() - cpu


def tune_ours(args: argparse.Namespace, work: Path, *, name: str = "ours", base: Path | None = None) -> Tuned:
    """Study ``name`` tuned by ``args.workers`` workers, on a copy of the database ``base`` (else an empty one)."""
    env = {**_single_threaded(), "TUNER_DATA_DIR": str(work)}
    env.pop("DATABASE_URL", None)
    if base is not None:
        shutil.copy(base, work / "studies.sqlite3")
    create = [str(BIN / "study_admin"), "create", "--algo", args.algo, "--env", args.env, "--name", name,
              "--n-trials", str(args.trials), "--timesteps", str(args.timesteps), "--n-evaluations",
              str(args.evaluations), "--eval-episodes", str(args.eval_episodes), "--seed", str(args.sampler_seed),
              *args.ours_options]  # fmt: skip
    subprocess.run(create, check=True, env=env, capture_output=True)
    started, cpu = time.perf_counter(), _children_cpu()
    workers = [
        subprocess.Popen([str(BIN / "worker"), "--until-idle", "--threads", "1", "--poll-interval", "1"], env=env,
                         stdout=subprocess.DEVNULL, stderr=open(work / f"worker{i}.log", "wb"))  # noqa: SIM115
        for i in range(args.workers)
    ]  # fmt: skip
    wall, used = _wait_all(workers, started, cpu, check=True)

    def admin(*command: str) -> str:
        return subprocess.run([str(BIN / "study_admin"), *command], check=True, env=env, capture_output=True,
                              text=True).stdout  # fmt: skip

    best = json.loads(admin("best", name, "--format", "json"))
    script = admin("export", name, "--format", "python")
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{work / 'studies.sqlite3'}")
    return Tuned(wall, used, best["mean_reward"], best, *_trial_stats(study), script=script,
                 progress=_progress(study, args.timesteps))  # fmt: skip


def _zoo_train(args: argparse.Namespace, extra: list[str], log_dir: Path) -> list[str]:
    return [sys.executable, "-m", "rl_zoo3.train", "--algo", args.algo, "--env", args.env, "-n", str(args.timesteps),
            "--num-threads", "1", "-f", str(log_dir), *extra]  # fmt: skip


def _python_source(value: Any) -> str:
    """A kwarg as Python source that rl_zoo3's ``-params`` evaluates (``th`` is torch there)."""
    if isinstance(value, type):
        return f"th.nn.{value.__name__}"
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}={_python_source(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(_python_source(v) for v in value) + "]"
    return repr(value)


def tune_zoo(args: argparse.Namespace, work: Path) -> Tuned:
    import optuna
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER

    storage = f"sqlite:///{work / 'zoo.db'}"
    optuna.create_study(storage=storage, study_name="zoo", direction="maximize")  # the Zoo races on a new file
    optimize = ["-optimize", "--max-total-trials", str(args.trials), "--n-jobs", "1", "--sampler", "tpe", "--pruner",
                "median", "--n-evaluations", str(args.evaluations), "--eval-episodes", str(args.eval_episodes),
                "--storage", storage, "--study-name", "zoo", "-uuid", "--no-optim-plots"]  # fmt: skip
    started, cpu = time.perf_counter(), _children_cpu()
    processes = [
        subprocess.Popen(_zoo_train(args, [*optimize, "--seed", str(args.sampler_seed * 100 + i)], work / "logs"),
                         env=_single_threaded(), stdout=subprocess.DEVNULL,
                         stderr=open(work / f"zoo{i}.log", "wb"))  # noqa: SIM115
        for i in range(args.workers)
    ]  # fmt: skip
    # The Zoo exits 1 after its trials when it cannot write its report; the study is what counts.
    wall, used = _wait_all(processes, started, cpu, check=False)
    study = optuna.load_study(study_name="zoo", storage=storage)
    best = study.best_trial
    kwargs = HYPERPARAMS_CONVERTER[args.algo](best.params)
    return Tuned(wall, used, cast(float, best.value), {"params": best.params}, *_trial_stats(study),
                 zoo_kwargs={k: _python_source(v) for k, v in kwargs.items()},
                 progress=_progress(study, args.timesteps))  # fmt: skip


def _load(library: str, class_name: str, path: Path) -> Any:
    import importlib

    module = importlib.import_module(library)
    # The saved schedule may be a function of the training script's __main__: evaluation needs none.
    constant = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}
    return getattr(module, class_name).load(str(path), device="cpu", custom_objects=constant)


def _evaluate(model: Any, args: argparse.Namespace, seed: int, stats: Path) -> float:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    eval_env = make_vec_env(args.env, n_envs=1, seed=EVAL_SEED_BASE + seed)
    if stats.exists():
        eval_env = VecNormalize.load(str(stats), eval_env)
        eval_env.training, eval_env.norm_reward = False, False
    mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=args.final_episodes, deterministic=True)
    return float(cast(float, mean))


def retrain(tool: str, tuned: Tuned, args: argparse.Namespace, seed: int) -> tuple[float, float, float]:
    """Train one winner from scratch on a fresh seed as its tool's user would: (fresh-seed score, wall seconds
    of the training command, its CPU seconds)."""
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix=f"retrain-{tool}-") as work:
        folder = Path(work)
        if tool == "ours":
            (folder / "train.py").write_text(tuned.script)
            command = [sys.executable, str(folder / "train.py"), "--timesteps", str(args.timesteps), "--seed",
                       str(seed), "--out", str(folder / "model.zip")]  # fmt: skip
        else:
            params = [f"{k}:{v}" for k, v in tuned.zoo_kwargs.items()]
            command = _zoo_train(args, ["--seed", str(seed), "--eval-freq", "-1", "-params", *params], folder)
        started, cpu = time.perf_counter(), _children_cpu()
        subprocess.run(command, check=True, env=_single_threaded(), capture_output=True, cwd=folder)
        seconds, cpu_seconds = time.perf_counter() - started, _children_cpu() - cpu
        if tool == "ours":
            model = _load(tuned.winner["library"], tuned.winner["sb3_class"], folder / "model.zip")
            stats = folder / "model_vecnormalize.pkl"
        else:
            (run,) = Path(folder, args.algo).glob(f"{args.env}_*")
            entry = algorithm(args.algo)  # the Zoo trains with SB3's (PyTorch) class
            model = _load(entry.library, entry.class_name, run / f"{args.env}.zip")
            stats = run / args.env / "vecnormalize.pkl"
        return _evaluate(model, args, seed, stats), round(seconds, 2), round(cpu_seconds, 2)


def _machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    return {"host": platform.node(), "cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for package in VERSIONED:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def _commit() -> str:
    def git(*command: str) -> str:
        return subprocess.run(["git", *command], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def _done(path: Path) -> set[tuple[str, ...]]:
    if not path.exists():
        return set()
    return {_key(json.loads(line)) for line in path.read_text().splitlines() if line.strip()}


def _key(record: dict[str, Any]) -> tuple[str, ...]:
    return tuple(json.dumps(record.get(name), sort_keys=True) for name in RUN_KEY)


def run_one(args: argparse.Namespace, tool: str, *, base: Path | None = None) -> dict[str, Any]:
    """One tuning run and its winner re-trained on fresh seeds; ours on a copy of the database ``base``, if given."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix=f"versus-{tool}-") as work:
        tuned = tune_ours(args, Path(work), base=base) if tool == "ours" else tune_zoo(args, Path(work))
    seeds = [FRESH_SEED_BASE + i for i in range(args.seeds)]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        runs = list(pool.map(retrain, [tool] * len(seeds), [tuned] * len(seeds), [args] * len(seeds), seeds))
    return {
        **run_settings(args, tool),
        "split": split_of(args.env),
        "wall_seconds": round(tuned.wall_seconds, 1),
        "cpu_seconds": round(tuned.cpu_seconds, 1),
        "tuned_value": tuned.value,
        "trials_finished": tuned.trials,
        "pruned": tuned.pruned,
        "trial_seconds": tuned.trial_seconds,
        "progress": tuned.progress,
        "winner": tuned.winner if tool == "ours" else {**tuned.winner, "kwargs": tuned.zoo_kwargs},
        "fresh_seeds": seeds,
        "fresh_seed_scores": [score for score, _, _ in runs],
        "retrain_seconds": [seconds for _, seconds, _ in runs],
        "retrain_cpu_seconds": [cpu for _, _, cpu in runs],
        "versions": _versions(),
        "commit": _commit(),
        "machine": _machine(),
        "load_average": [round(v, 2) for v in (*load_before[:1], os.getloadavg()[0])],
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def add_run_options(parser: argparse.ArgumentParser, *, workers: int) -> None:
    """The options of one run that :func:`run_settings` records, for every harness built on :func:`tune_ours`."""
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--workers", type=int, default=workers)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--evaluations", type=int, default=5)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--final-episodes", type=int, default=10)


def run_settings(args: argparse.Namespace, tool: str) -> dict[str, Any]:
    return {"tool": tool, "algo": args.algo, "env": args.env, "timesteps": args.timesteps, "trials": args.trials,
            "workers": args.workers, "evaluations": args.evaluations, "eval_episodes": args.eval_episodes,
            "seeds": args.seeds, "final_episodes": args.final_episodes, "sampler_seed": args.sampler_seed,
            "options": args.ours_options if tool == "ours" else []}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", required=True)
    parser.add_argument("--envs", nargs="+", required=True)
    parser.add_argument("--timesteps", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=3, help="runs per tool and task, with sampler seeds 0..R-1")
    parser.add_argument("--first-repeat", type=int, default=0, help="sampler seed of the first repeat")
    add_run_options(parser, workers=1)
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "versus_zoo.jsonl")
    parser.add_argument(
        "--hold-file",
        type=Path,
        default=Path("/tmp/benchmark.hold"),
        help="while this file exists, wait before starting the next run (to free the machine)",
    )
    parser.add_argument("--ours-options", nargs=argparse.REMAINDER, default=[],
                        help="extra study_admin create options (last on the line)")  # fmt: skip
    args = parser.parse_args()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for repeat in range(args.first_repeat, args.first_repeat + args.repeats):
        for env_id in args.envs:
            for tool in args.tools:
                args.env, args.sampler_seed = env_id, repeat
                if _key(run_settings(args, tool)) in _done(args.results):
                    continue
                while args.hold_file.exists():
                    time.sleep(10)
                record = run_one(args, tool)
                with args.results.open("a") as out:
                    out.write(json.dumps(record, default=str) + "\n")
                scores = record["fresh_seed_scores"]
                print(
                    f"{tool} {args.algo} {env_id} seed {repeat}: tuned {record['wall_seconds']:.0f} s, fresh "
                    f"{[round(s, 1) for s in scores]}, re-train {record['retrain_seconds']} s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
