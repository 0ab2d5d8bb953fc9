"""SIGKILL at every moment of a worker's life, on both storages: no slot is ever lost or run twice.

Victims die at named crash points (``WORKER_CRASH_AT``: right after a claim, during setup, after an
evaluation, before telling the result, between failing a stale trial and queueing its retry, between
handing a trial back and queueing its retry) or at a random moment of training. After each pair of
kills the accounting must hold: WAITING + RUNNING + COMPLETE + PRUNED + finally failed = budget.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from study_contract.store.catalog import summarise
from study_contract.store.storage import open_storage
from tests.conftest import assert_budget_accounted, create_tiny_study, running_by_pid, start_worker, wait_for
from worker.slots import maintain

pytestmark = pytest.mark.slow

GRACE = 2
FAST = ["--poll-interval", "0.2", "--heartbeat-interval", "1", "--grace-period", str(GRACE)]
ROUNDS = [("claim", "random"), ("setup", "hand-back"), ("evaluation", "reclaim"), ("finish", "random")]
BUDGETS = {"kills": 12, "long": 4}


def _victim(url: str, point: str, log: Path) -> subprocess.Popen[bytes]:
    study = "long" if point in ("hand-back", "random") else "kills"
    env = {} if point == "random" else {"WORKER_CRASH_AT": point}
    return start_worker(url, *FAST, "--drain-seconds", "0", "--study", study, log=log, env=env)


def _kill(url: str, point: str, process: subprocess.Popen[bytes], rng: random.Random) -> None:
    """Bring about the victim's death at ``point`` and wait for it."""
    if point == "hand-back":
        wait_for(lambda: running_by_pid(url, "long").get(process.pid) is not None, 120, what="training to hand back")
        process.send_signal(signal.SIGTERM)
    elif point == "random":
        wait_for(lambda: running_by_pid(url, "long").get(process.pid) is not None, 120, what="training")
        time.sleep(rng.uniform(0.0, 3.0))
        process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=120) == -signal.SIGKILL, f"{point}: exit {process.returncode}"


def _settle_and_check(url: str) -> None:
    """Look after both studies as any worker would until the dead victims' trials are reclaimed, then check
    every slot (SQLite's timestamps have whole seconds, so "stale" can take a second longer there)."""
    storage = open_storage(url, heartbeat_interval=1, grace_period=GRACE)

    def reclaimed() -> bool:
        for name in BUDGETS:
            maintain(storage, storage.get_study_id_from_name(name), grace_period=GRACE, max_retry=10, wait=True)
        return not any(s.running for s in summarise(storage.engine))

    wait_for(reclaimed, GRACE + 10, interval=0.5, what="the victims' trials reclaimed")
    for summary in summarise(storage.engine):
        assert summary.lost == 0 and summary.accounted == BUDGETS[summary.name], summary


def test_workers_killed_at_every_moment_never_lose_a_slot(storage_url: str, tiny_space: Path, tmp_path: Path) -> None:
    common = ["--eval-episodes", "1", "--pruner", "none", "--max-retry", "10"]
    create_tiny_study(storage_url, "kills", tiny_space, BUDGETS["kills"], 1024, "--eval-every", "256", *common)
    create_tiny_study(storage_url, "long", tiny_space, BUDGETS["long"], 1_000_000, *common)
    rng = random.Random(0)
    kills: Counter[str] = Counter()
    for round_number in range(len(ROUNDS)):  # every moment once, on each storage
        pair = ROUNDS[round_number]
        victims = [_victim(storage_url, p, tmp_path / f"r{round_number}-{p}.log") for p in pair]
        for point, process in zip(pair, victims, strict=True):
            _kill(storage_url, point, process, rng)
            kills[point] += 1
        _settle_and_check(storage_url)
    assert sum(kills.values()) == 2 * len(ROUNDS) and set(kills) == {p for pair in ROUNDS for p in pair}

    survivor = start_worker(storage_url, *FAST, "--study", "kills", "--until-idle", log=tmp_path / "survivor.log")
    assert survivor.wait(timeout=300) == 0
    assert_budget_accounted(storage_url, "kills", BUDGETS["kills"])
    print(f"\nkills ({storage_url.split(':')[0]}): {dict(kills)}; every slot accounted for after each pair")
