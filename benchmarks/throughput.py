"""Throughput benchmarks; prints numbers, asserts nothing (speed belongs here, not in timed tests).

python benchmarks/throughput.py threads    SAC on HalfCheetah-v5: 1 and 2 processes, default vs 1 thread
python benchmarks/throughput.py overhead   PPO on HalfCheetah-v5: a real worker trial vs bare model.learn
python benchmarks/throughput.py list       `study_admin list` latency on the embedded storage
python benchmarks/throughput.py backend    SB3 against SBX (JAX): SAC and PPO on HalfCheetah-v5, one thread
python benchmarks/throughput.py all
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PPO_PARAMS: dict[str, Any] = {"n_steps": 2048, "batch_size": 64, "n_epochs": 10, "learning_rate": 3e-4}


def sac_probe(threads: str, seconds: float) -> None:
    """Child process: SAC env-steps per second over a wall-clock window after learning starts."""
    if threads != "default":
        from worker.threads import pin_threads

        pin_threads(int(threads))
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    class Window(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps == 200:
                self.start = time.perf_counter()
            if self.num_timesteps > 200 and time.perf_counter() - self.start >= seconds:
                print(json.dumps({"steps_per_second": (self.num_timesteps - 200) / (time.perf_counter() - self.start)}))
                return False
            return True

    SAC("MlpPolicy", "HalfCheetah-v5", learning_starts=100, seed=0, device="cpu").learn(10**7, callback=Window())


def ppo_bare(timesteps: int) -> None:
    """Child process: bare PPO.learn with one pinned thread, like a worker."""
    from worker.threads import pin_threads

    pin_threads(1)
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", "HalfCheetah-v5", seed=0, device="cpu", **PPO_PARAMS)
    started = time.perf_counter()
    model.learn(timesteps)
    print(json.dumps({"steps_per_second": model.num_timesteps / (time.perf_counter() - started)}))


# One thread for JAX too: XLA's CPU client otherwise spreads over every core.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
BACKEND_CASES = [("SAC", 1), ("SAC", 8), ("PPO", 0)]  # (algorithm, train_freq of the off-policy bursts)


def backend_probe(library: str, algo: str, train_freq: int, steps: int) -> None:
    """Child process: env-steps per second of ``library``'s ``algo`` on HalfCheetah-v5, one thread, and the
    seconds its first 1,000 env-steps took (JAX compiles its update then)."""
    import importlib

    import torch
    from stable_baselines3.common.callbacks import BaseCallback

    torch.set_num_threads(1)
    marks: dict[int, float] = {}

    class Marks(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps in (1, 1000, steps // 4):
                marks[self.num_timesteps] = time.perf_counter()
            return True

    kwargs: dict[str, Any] = {}
    if algo == "SAC":  # updates in bursts of train_freq, one gradient step per env-step either way
        kwargs = {"train_freq": train_freq, "gradient_steps": -1 if train_freq > 1 else 1, "learning_starts": 100}
    model = getattr(importlib.import_module(library), algo)("MlpPolicy", "HalfCheetah-v5", seed=0, **kwargs)
    model.learn(steps, callback=Marks())
    end = time.perf_counter()
    rate = (steps - steps // 4) / (end - marks[steps // 4])
    print(json.dumps({"steps_per_second": rate, "first_1000_seconds": marks[1000] - marks[1]}))


def bench_backend(steps: int = 6000) -> None:
    print(f"SB3 against SBX on HalfCheetah-v5, one thread each, {steps} env-steps (rate over the last three quarters)")
    for algo, train_freq in BACKEND_CASES:
        results = {}
        for library in ("stable_baselines3", "sbx"):
            command = [sys.executable, __file__, "_backend", library, algo, str(train_freq), str(steps)]
            process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO,
                                       env={**os.environ, **ONE_THREAD})  # fmt: skip
            out, _ = process.communicate()
            results[library] = json.loads(out.strip().splitlines()[-1])
        sb3, sbx = results["stable_baselines3"], results["sbx"]
        shape = f"bursts of {train_freq}" if train_freq > 1 else ("one update per step" if train_freq else "defaults")
        print(f"  {algo} ({shape}): SB3 {sb3['steps_per_second']:.0f} env-steps/s, SBX {sbx['steps_per_second']:.0f} "
              f"({sbx['steps_per_second'] / sb3['steps_per_second']:.2f}x); first 1,000 env-steps "
              f"{sb3['first_1000_seconds']:.1f} s against {sbx['first_1000_seconds']:.1f} s")  # fmt: skip


def _probe(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, cwd=REPO)


def _rate(process: subprocess.Popen[str]) -> float:
    out, _ = process.communicate()
    return float(json.loads(out.strip().splitlines()[-1])["steps_per_second"])


def bench_threads(seconds: float = 40) -> None:
    print(f"SAC HalfCheetah-v5, env-steps/s over {seconds:.0f} s ({os.cpu_count()} cores)")
    for threads in ("default", "1"):
        single = _rate(_probe("_sac", threads, str(seconds)))
        pair = [_rate(p) for p in [_probe("_sac", threads, str(seconds)) for _ in range(2)]]
        print(
            f"  threads={threads:7}  1 process: {single:6.1f}   2 processes: {pair[0]:6.1f} + {pair[1]:6.1f}"
            f" = {sum(pair):6.1f} ({sum(pair) / single:.2f}x)"
        )


def bench_overhead(timesteps: int = 8192, repeats: int = 2) -> None:
    from study_admin.cli import main as admin

    bare, worker = [], []
    for _ in range(repeats):
        bare.append(_rate(_probe("_ppo", str(timesteps))))
        with tempfile.TemporaryDirectory() as data:
            space = Path(data) / "space.yaml"
            space.write_text("\n".join(f"{k}: {v}" for k, v in PPO_PARAMS.items()) + "\nlr_schedule: constant\n")
            url = f"sqlite:///{data}/studies.sqlite3"
            admin(
                [
                    "create",
                    "--storage",
                    url,
                    "--algo",
                    "ppo",
                    "--env",
                    "HalfCheetah-v5",
                    "--name",
                    "bench",
                    "--n-trials",
                    "1",
                    "--no-baseline",
                    "--no-confirm",
                    "--preset",
                    "guide",
                    "--timesteps",
                    str(timesteps),
                    "--eval-every",
                    "4096",
                    "--eval-episodes",
                    "2",
                    "--pruner",
                    "none",
                    "--space",
                    str(space),
                ]
            )
            subprocess.run(
                [str(BIN / "worker"), "--storage", url, "--max-trials", "1"], check=True, capture_output=True, cwd=REPO
            )
            import optuna

            trial = optuna.load_study(study_name="bench", storage=url).trials[0]
            worker.append(trial.user_attrs["train_steps_per_second"])
            evals = trial.user_attrs["eval_seconds"]
    b, w = statistics.median(bare), statistics.median(worker)
    print(
        f"PPO HalfCheetah-v5, {timesteps} steps, 1 thread: bare learn {b:.0f} steps/s, worker trial {w:.0f} "
        f"steps/s (training only; evaluation {evals:.1f} s measured apart) -> {100 * (w - b) / b:+.1f} %"
    )
    print(f"  runs: bare {[round(x) for x in bare]}, worker {[round(x) for x in worker]}")


def bench_list(n_studies: int = 20, repeats: int = 10) -> None:
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "TUNER_DATA_DIR": data}
        env.pop("DATABASE_URL", None)
        where = "embedded"
        if os.environ.get("BENCH_DATABASE_URL"):
            env["DATABASE_URL"], where = os.environ["BENCH_DATABASE_URL"], "PostgreSQL"
        for i in range(n_studies):
            subprocess.run(
                [
                    str(BIN / "study_admin"),
                    "create",
                    "--algo",
                    "ppo",
                    "--env",
                    "Hopper-v5",
                    "--n-trials",
                    "50",
                    "--name",
                    f"s{i}",
                ],
                check=True,
                capture_output=True,
                env=env,
            )
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run([str(BIN / "study_admin"), "list"], check=True, capture_output=True, env=env)
            times.append(time.perf_counter() - started)
    print(
        f"study_admin list, {n_studies} studies x 50 trials, {where}: median {statistics.median(times):.3f} s, "
        f"max {max(times):.3f} s"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what == "_sac":
        sac_probe(sys.argv[2], float(sys.argv[3]))
    elif what == "_ppo":
        ppo_bare(int(sys.argv[2]))
    elif what == "_backend":
        backend_probe(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif what == "backend":
        bench_backend()
    else:
        if what in ("list", "all"):
            bench_list()
        if what in ("overhead", "all"):
            bench_overhead()
        if what in ("threads", "all"):
            bench_threads()
