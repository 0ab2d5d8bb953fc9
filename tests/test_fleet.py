"""Beyond one machine: the worker code through PgBouncer, and a small simulated fleet under random kills."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from benchmarks.fleet import simulate
from tests.conftest import (
    assert_budget_accounted,
    create_tiny_study,
    running_by_pid,
    start_worker,
    wait_for,
)
from tests.pg import PG_PASSWORD, PgBouncer, PostgresCluster

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("pgbouncer", [False, True], ids=["postgresql", "pgbouncer"])
def test_a_simulated_fleet_never_claims_twice_and_meets_its_budget(pgbouncer: bool) -> None:
    result = simulate(workers=24, processes=4, trials=72, trial_seconds=0.6, kill_fraction=0.25,
                      pgbouncer=pgbouncer, studies=2, sampler="random")  # fmt: skip
    print(f"\nfleet ({result['through']}): {result}")
    assert result["killed_processes"] == 1 and result["reclaimed_trials"] >= 1
    assert result["double_claims"] == 0
    assert result["budget_exact"] is True and result["trials"] == 72


def test_real_workers_through_pgbouncer(
    postgres: PostgresCluster, pg_url: str, tiny_space: Path, tmp_path: Path
) -> None:
    database = pg_url.rsplit("/", 1)[1]
    bouncer = PgBouncer(postgres, database, users={"postgres": PG_PASSWORD}, pool_size=4)
    bouncer.start()
    try:
        create_tiny_study(pg_url, "pooled", tiny_space, 6, 4096, "--eval-episodes", "1")
        fast = ["--until-idle", "--poll-interval", "0.3", "--heartbeat-interval", "1", "--grace-period", "3"]
        workers = [start_worker(bouncer.url(), *fast, log=tmp_path / f"w{i}.log") for i in range(3)]
        victim_pid = wait_for(lambda: next(iter(running_by_pid(pg_url, "pooled")), None), 120, what="training")
        victim = next(w for w in workers if w.pid == victim_pid)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        for worker in workers:
            if worker is not victim:
                assert worker.wait(timeout=300) == 0, (tmp_path / "w0.log").read_text()[-2000:]
        trials = assert_budget_accounted(pg_url, "pooled", 6)
        assert any(t.system_attrs.get("retry_history") for t in trials)  # the victim's trial, retried
    finally:
        bouncer.stop()
