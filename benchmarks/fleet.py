"""A simulated fleet on a real PostgreSQL, directly or through PgBouncer; prints numbers, asserts nothing.

python benchmarks/fleet.py --workers 200 [--processes 10] [--trials 2000] [--trial-seconds 3] [--kill 0.1]
                           [--pgbouncer] [--studies 4] [--sampler random|tpe]

Each simulated worker is the real worker loop (studies, claims, heartbeats, reports and pruning, stale
trials failed and retried, hand-backs, follow-ups) with training replaced by a timed wait that reports
intermediate values. Workers are threads, many to a process: a worker spends its time waiting, so
threads cost little, while hundreds of processes would not fit two cores; each thread has its own
storage and connection pool, exactly as a worker process would. Killing a process (SIGKILL) takes down
its workers at once, like a lost node. The coordinator measures throughput, claim latency, database
connections and CPU, double claims, budget exactness and how long a dead worker's trial takes to be
reclaimed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HEARTBEAT, GRACE = 2, 8  # seconds: a dead worker's trial is reclaimed within about GRACE + a poll


def simulated_training(seconds: float) -> Any:
    """A trainer that waits, reports evaluations, and may be pruned or handed back."""
    from worker.outcomes import Outcome, TrainingResult

    def train_trial(session: Any, trial: Any, params: dict[str, Any], seed: int) -> Any:
        definition = session.definition
        rng = random.Random(seed)
        quality = -abs(params.get("learning_rate", 1e-3) - 1e-3) * 1e4 + rng.gauss(0, 1)
        evaluations = max(definition.timesteps // definition.eval_every, 1)
        curve: list[list[float]] = []
        started = time.perf_counter()
        for index in range(1, evaluations + 1):
            if session.shutdown.event.wait(seconds / evaluations):
                return TrainingResult(Outcome.HANDED_BACK, None, index, time.perf_counter() - started, 0.0, curve)
            value = quality * index / evaluations
            step = index * definition.eval_every
            curve.append([step, value])
            session.guarded("reporting", lambda v=value, s=step: trial.report(v, step=s))
            if session.guarded("pruning check", trial.should_prune):
                return TrainingResult(Outcome.PRUNED, value, step, time.perf_counter() - started, 0.0, curve)
        return TrainingResult(
            Outcome.COMPLETE, curve[-1][1], definition.timesteps, time.perf_counter() - started, 0.0, curve
        )

    return train_trial


def run_process(url: str, workers: int, seconds: float, events: Path) -> None:
    """One process of the fleet: ``workers`` worker loops as threads, until the budget is done or SIGTERM."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    import worker.loop
    from study_contract.store.claims import Claim
    from worker.config import WorkerConfig
    from worker.db import Retrier
    from worker.shutdown import ShutdownFlag

    train = simulated_training(seconds)
    real_claim = worker.loop.claim
    lock = threading.Lock()
    out = events.open("a", buffering=1)

    def claim(storage: Any, study_id: int, *, grace_period: float) -> Claim | None:
        started = time.perf_counter()
        claimed = real_claim(storage, study_id, grace_period=grace_period)
        record = {"claim": claimed and claimed.trial_id, "seconds": time.perf_counter() - started,
                  "pid": os.getpid(), "at": time.time()}  # fmt: skip
        with lock:
            out.write(json.dumps(record) + "\n")
        return claimed

    worker.loop.claim = claim
    shutdown = ShutdownFlag()
    shutdown.install()
    config = WorkerConfig(storage=url, until_idle=True, poll_interval=2.0, heartbeat_interval=HEARTBEAT,
                          grace_period=GRACE, drain_seconds=0.0)  # fmt: skip

    def one() -> None:
        storage = worker.loop.connect(config, Retrier(max_wait=5, deadline=120, stop=shutdown.event))
        worker.loop.Worker(config, storage, shutdown, train=train).run()

    threads = [threading.Thread(target=one, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
        time.sleep(0.01)  # a fleet starts over seconds, not in one instant
    for thread in threads:
        thread.join()


def _postgres_cpu_seconds(datadir: Path) -> float:
    """CPU time of the postmaster and its backends, from /proc."""
    postmaster = int((datadir / "postmaster.pid").read_text().splitlines()[0])
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in [
        postmaster,
        *(int(p) for p in Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()),
    ]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / ticks
        except (FileNotFoundError, IndexError):
            continue
    return total


def _has_claimed(events: Path, pid: int) -> bool:
    if not events.exists():
        return False
    return any(c["pid"] == pid and c["claim"] is not None for c in map(json.loads, events.read_text().splitlines()))


def simulate(
    *,
    workers: int,
    processes: int,
    trials: int,
    trial_seconds: float,
    kill_fraction: float,
    pgbouncer: bool,
    studies: int,
    sampler: str,
    seed: int = 0,
) -> dict[str, Any]:
    """Run one simulated fleet on a fresh cluster; its measurements."""
    sys.path.insert(0, str(REPO))
    import optuna

    from study_admin.cli import main as admin
    from study_contract.store.catalog import summarise
    from study_contract.store.storage import open_engine
    from tests.pg import PgBouncer, PostgresCluster

    cluster = PostgresCluster.create(max_connections=max(200, workers * 3 + 50))
    cluster.start()
    bouncer = None
    try:
        cluster.execute("CREATE DATABASE fleet")
        direct = cluster.url("fleet")
        per_study = trials // studies
        for i in range(studies):
            argv = ["create", "--storage", direct, "--name", f"s{i}", "--algo", "ppo", "--env", "Pendulum-v1",
                    "--n-trials", str(per_study), "--timesteps", "1000", "--eval-every", "250", "--sampler", sampler,
                    "--pruner", "median", "--no-confirm", "--seed", str(seed + i)]  # fmt: skip
            assert admin(argv) == 0
        url = direct
        if pgbouncer:
            bouncer = PgBouncer(cluster, "fleet", pool_size=40, max_clients=workers * 3 + 100)
            bouncer.start()
            url = bouncer.url()
        work = Path(tempfile.mkdtemp(prefix="fleet-"))
        events = work / "events.jsonl"
        rng = random.Random(seed)
        sizes = [workers // processes + (i < workers % processes) for i in range(processes)]
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        started = time.monotonic()
        cpu_before = _postgres_cpu_seconds(cluster.datadir)
        fleet = [subprocess.Popen([sys.executable, __file__, "_process", url, str(n), str(trial_seconds), str(events)],
                                  env=env) for n in sizes if n]  # fmt: skip
        peak, killed, stop = 0, {}, threading.Event()

        def watch() -> None:
            nonlocal peak
            while not stop.wait(0.5):
                rows = cluster.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = 'fleet'")
                peak = max(peak, int(rows[0][0]))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        for victim in rng.sample(fleet, int(len(fleet) * kill_fraction)):
            # Killed while its workers train: after its first claim, at a random moment of a trial.
            while victim.poll() is None and not _has_claimed(events, victim.pid):
                time.sleep(0.2)
            time.sleep(rng.uniform(0, trial_seconds))
            victim.send_signal(signal.SIGKILL)
            killed[victim.pid] = time.time()
        for process in fleet:
            process.wait()
        wall = time.monotonic() - started
        stop.set()
        cpu = _postgres_cpu_seconds(cluster.datadir) - cpu_before

        engine = open_engine(direct)
        summaries = summarise(engine)
        claims = [json.loads(line) for line in events.read_text().splitlines()]
        claimants: dict[int, list[dict[str, Any]]] = {}
        for c in claims:
            if c["claim"] is not None:
                claimants.setdefault(c["claim"], []).append(c)
        claimed_by = {trial_id: mine[0]["pid"] for trial_id, mine in claimants.items()}
        # A trial claimed again is a double claim unless its claimant was killed: a claim that never
        # heartbeat (a previous release's worker) goes back to WAITING, and the second claim is its reclaim.
        double = 0
        reclaim = []  # seconds from a kill to the failing (and retrying) or the re-claiming of a trial it held
        for mine in claimants.values():
            for before, after in pairwise(mine):
                if before["pid"] in killed:
                    reclaim.append(after["at"] - killed[before["pid"]])
                else:
                    double += 1
        for name in (s.name for s in summaries):
            for trial in optuna.load_study(study_name=name, storage=direct).trials:
                pid = claimed_by.get(trial._trial_id)
                if pid in killed and trial.state == optuna.trial.TrialState.FAIL and trial.datetime_complete:
                    reclaim.append(trial.datetime_complete.timestamp() - killed[pid])
        latencies = sorted(c["seconds"] for c in claims)
        done = sum(s.complete + s.pruned + s.failed for s in summaries)
        return {
            "workers": workers,
            "processes": len(fleet),
            "through": "pgbouncer" if pgbouncer else "postgresql",
            "trials": done,
            "wall_seconds": round(wall, 1),
            "trials_per_second": round(done / wall, 2),
            "claim_p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
            "claim_p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1) if latencies else None,
            "peak_connections": peak,
            "postgres_cpu_cores": round(cpu / wall, 2),
            "double_claims": double,
            "budget_exact": all(
                s.accounted == s.n_trials and s.lost == 0 and not s.running and not s.waiting for s in summaries
            ),  # fmt: skip
            "killed_processes": len(killed),
            "reclaim_seconds_max": round(max(reclaim), 1) if reclaim else None,
            "reclaimed_trials": len(reclaim),
        }
    finally:
        if bouncer is not None:
            bouncer.stop()
        cluster.stop()
        cluster.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--processes", type=int, default=10)
    parser.add_argument("--trials", type=int, default=0, help="budget over all studies (default: 5 per worker)")
    parser.add_argument("--trial-seconds", type=float, default=3.0)
    parser.add_argument("--kill", type=float, default=0.1, help="fraction of processes SIGKILLed during the run")
    parser.add_argument("--pgbouncer", action="store_true")
    parser.add_argument("--studies", type=int, default=4)
    parser.add_argument("--sampler", choices=("random", "tpe"), default="random")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "fleet.jsonl")
    args = parser.parse_args()
    result = simulate(workers=args.workers, processes=min(args.processes, args.workers),
                      trials=args.trials or 5 * args.workers, trial_seconds=args.trial_seconds,
                      kill_fraction=args.kill, pgbouncer=args.pgbouncer, studies=args.studies,
                      sampler=args.sampler)  # fmt: skip
    print(json.dumps(result))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as out:
        out.write(json.dumps({**result, "date": time.strftime("%Y-%m-%d %H:%M")}) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_process":
        sys.path.insert(0, str(REPO))
        run_process(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), Path(sys.argv[5]))
    else:
        main()
