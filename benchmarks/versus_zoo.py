"""This service against RL Baselines3 Zoo's ``-optimize`` at the same budget; prints numbers, asserts nothing.

Both tools tune the same task with the same number of trials, env-steps per trial, evaluations per
trial, evaluation episodes and single-threaded workers, on an empty database each. Each tool's winner
(its best trial) is then re-trained from scratch on fresh seeds, the same for both, and evaluated
deterministically on a separate environment: the fresh-seed IQM is what a user would get.

python benchmarks/versus_zoo.py --algo ppo --env Pendulum-v1 --trials 12 --timesteps 30000
  [--workers 2] [--seeds 5] [--evaluations 5] [--eval-episodes 5] [--final-episodes 10]
  [--sampler-seed 0] [--results benchmarks/results/versus_zoo.jsonl] [--only ours|zoo]

Needs rl_zoo3 and pandas (the dev dependency group). The Zoo runs as its users run it: several
``python -m rl_zoo3.train -optimize`` processes on one Optuna storage, one thread each, a different
``--seed`` each; its winner is re-trained with ``python -m rl_zoo3.train -params ...``, so the Zoo's own
per-task defaults (hyperparams/*.yml) apply to it exactly as during its tuning.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FRESH_SEED_BASE = 900_000  # disjoint from both tools' tuning seeds
EVAL_SEED_BASE = 700_000


@dataclass
class Tuned:
    tool: str
    wall_seconds: float
    value: float
    config: dict[str, Any]
    trials: int
    pruned: int
    trial_seconds: list[float]


def _trial_stats(study: Any) -> tuple[int, int, list[float]]:
    """Finished trials, pruned trials, and each finished trial's duration."""
    finished = [t for t in study.trials if t.state.is_finished()]
    pruned = sum(t.state.name == "PRUNED" for t in finished)
    return len(finished), pruned, [round(t.duration.total_seconds(), 1) for t in finished if t.duration]


def _single_threaded() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def tune_ours(args: argparse.Namespace, work: Path) -> Tuned:
    env = {**_single_threaded(), "TUNER_DATA_DIR": str(work)}
    env.pop("DATABASE_URL", None)
    create = [str(BIN / "study_admin"), "create", "--algo", args.algo, "--env", args.env, "--name", "ours",
              "--n-trials", str(args.trials), "--timesteps", str(args.timesteps), "--n-evaluations",
              str(args.evaluations), "--eval-episodes", str(args.eval_episodes), "--seed", str(args.sampler_seed),
              *args.ours_options]  # fmt: skip
    subprocess.run(create, check=True, env=env, capture_output=True)
    started = time.perf_counter()
    workers = [
        subprocess.Popen(
            [str(BIN / "worker"), "--until-idle", "--threads", "1", "--poll-interval", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(work / f"worker{i}.log", "wb"),
        )  # fmt: skip  # noqa: SIM115
        for i in range(args.workers)
    ]
    for worker in workers:
        if worker.wait() != 0:
            raise RuntimeError(f"worker failed: see {work}")
    wall = time.perf_counter() - started
    best = json.loads(subprocess.run([str(BIN / "study_admin"), "best", "ours", "--format", "json"], check=True,
                                     env=env, capture_output=True, text=True).stdout)  # fmt: skip
    import optuna

    study = optuna.load_study(study_name="ours", storage=f"sqlite:///{work / 'studies.sqlite3'}")
    return Tuned("ours", wall, best["mean_reward"], best, *_trial_stats(study))


def _zoo_train(args: argparse.Namespace, extra: list[str], log_dir: Path) -> list[str]:
    return [sys.executable, "-m", "rl_zoo3.train", "--algo", args.algo, "--env", args.env, "-n", str(args.timesteps),
            "--num-threads", "1", "-f", str(log_dir), *extra]  # fmt: skip


def tune_zoo(args: argparse.Namespace, work: Path) -> Tuned:
    import optuna

    storage = f"sqlite:///{work / 'zoo.db'}"
    optuna.create_study(storage=storage, study_name="zoo", direction="maximize")  # the Zoo races on a new file
    optimize = ["-optimize", "--max-total-trials", str(args.trials), "--n-jobs", "1", "--sampler", "tpe", "--pruner",
                "median", "--n-evaluations", str(args.evaluations), "--eval-episodes", str(args.eval_episodes),
                "--storage", storage, "--study-name", "zoo", "-uuid", "--no-optim-plots"]  # fmt: skip
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            _zoo_train(args, [*optimize, "--seed", str(args.sampler_seed * 100 + i)], work / "logs"),
            env=_single_threaded(),
            stdout=subprocess.DEVNULL,
            stderr=open(work / f"zoo{i}.log", "wb"),
        )  # fmt: skip  # noqa: SIM115
        for i in range(args.workers)
    ]
    for process in processes:
        process.wait()  # the Zoo exits 1 after its trials when it cannot write a report; the study is what counts
    wall = time.perf_counter() - started
    study = optuna.load_study(study_name="zoo", storage=storage)
    best = study.best_trial
    return Tuned("zoo", wall, cast(float, best.value), {"params": best.params}, *_trial_stats(study))


def _python_source(value: Any) -> str:
    """A kwarg as Python source that rl_zoo3's ``-params`` evaluates (``th`` is torch there)."""
    if isinstance(value, type):
        return f"th.nn.{value.__name__}"
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}={_python_source(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(_python_source(v) for v in value) + "]"
    return repr(value)


def _evaluate(
    model: Any, args: argparse.Namespace, seed: int, normalize_from: Any = None, stats: Path | None = None
) -> float:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize, sync_envs_normalization

    eval_env = make_vec_env(args.env, n_envs=1, seed=EVAL_SEED_BASE + seed)
    if stats is not None and stats.exists():
        eval_env = VecNormalize.load(str(stats), eval_env)
        eval_env.training, eval_env.norm_reward = False, False
    elif normalize_from is not None:
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
        sync_envs_normalization(normalize_from, eval_env)
    mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=args.final_episodes, deterministic=True)
    return float(cast(float, mean))


def retrain(tool: str, config: dict[str, Any], args: argparse.Namespace, seed: int) -> float:
    """Train one winner from scratch on a fresh seed; its deterministic evaluation's mean return."""
    import torch

    torch.set_num_threads(1)
    if tool == "ours":
        from stable_baselines3.common.vec_env import VecNormalize

        from study_contract.definition import StudyDefinition
        from worker.training import build_model, make_envs

        definition = StudyDefinition(algo=args.algo, env_id=args.env, n_trials=1, timesteps=args.timesteps,
                                     n_envs=config["n_envs"])  # fmt: skip
        params = config["hyperparams"]
        train_env, _ = make_envs(definition, bool(params.get("normalize", False)), seed)
        model = build_model(definition, params, train_env, seed)
        model.learn(args.timesteps)
        return _evaluate(model, args, seed, normalize_from=train_env if isinstance(train_env, VecNormalize) else None)
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER
    from stable_baselines3.common.base_class import BaseAlgorithm

    kwargs = HYPERPARAMS_CONVERTER[args.algo](config["params"])
    with tempfile.TemporaryDirectory() as logs:
        command = _zoo_train(args, ["--seed", str(seed), "--eval-freq", "-1", "-params",
                                    *(f"{k}:{_python_source(v)}" for k, v in kwargs.items())], Path(logs))  # fmt: skip
        subprocess.run(command, check=True, env=_single_threaded(), capture_output=True)
        (run,) = Path(logs, args.algo).glob(f"{args.env}_*")
        sb3_class: type[BaseAlgorithm] = getattr(__import__("stable_baselines3"), args.algo.upper())
        model = sb3_class.load(str(run / f"{args.env}.zip"), device="cpu")
        return _evaluate(model, args, seed, stats=run / args.env / "vecnormalize.pkl")


def fresh_seed_scores(tuned: Tuned, args: argparse.Namespace) -> list[float]:
    seeds = [FRESH_SEED_BASE + i for i in range(args.seeds)]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        return list(pool.map(retrain, [tuned.tool] * len(seeds), [tuned.config] * len(seeds), [args] * len(seeds),
                             seeds))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", required=True, choices=("ppo", "sac"))
    parser.add_argument("--env", required=True)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--timesteps", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--evaluations", type=int, default=5)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--final-episodes", type=int, default=10)
    parser.add_argument("--sampler-seed", type=int, default=0)
    parser.add_argument("--only", choices=("ours", "zoo"))
    parser.add_argument("--ours-options", nargs=argparse.REMAINDER, default=[],
                        help="extra study_admin create options (last on the line)")  # fmt: skip
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "versus_zoo.jsonl")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from study_contract.statistics import summarise_scores

    print(f"{args.algo} {args.env}: {args.trials} trials x {args.timesteps} env-steps, {args.workers} workers, "
          f"{args.evaluations} evaluations of {args.eval_episodes} episodes, seed {args.sampler_seed}")  # fmt: skip
    print(f"{'tool':5} {'tuning s':>9} {'trials':>6} {'tuned':>9} {'fresh mean':>10} {'IQM':>9} {'95% CI':>21} "
          f"{'worst':>9}")  # fmt: skip
    for tool, tune in (("zoo", tune_zoo), ("ours", tune_ours)):
        if args.only and tool != args.only:
            continue
        with tempfile.TemporaryDirectory(prefix=f"versus-{tool}-") as work:
            tuned = tune(args, Path(work))
        scores = summarise_scores(fresh_seed_scores(tuned, args))
        ci = f"[{scores.ci[0]:.1f}, {scores.ci[1]:.1f}]" if scores.ci else "-"
        print(f"{tool:5} {tuned.wall_seconds:9.0f} {tuned.trials:6d} {tuned.value:9.1f} {scores.mean:10.1f} "
              f"{scores.iqm:9.1f} {ci:>21} {scores.worst:9.1f}", flush=True)  # fmt: skip
        args.results.parent.mkdir(parents=True, exist_ok=True)
        record = {"algo": args.algo, "env": args.env, "trials": args.trials, "timesteps": args.timesteps,
                  "workers": args.workers, "sampler_seed": args.sampler_seed, "ours_options": args.ours_options,
                  **asdict(tuned), "fresh": scores.to_dict(), "date": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
        with args.results.open("a") as out:
            out.write(json.dumps(record, default=str) + "\n")


if __name__ == "__main__":
    main()
