"""The worker's configuration: bad values fail fast with one line, and nothing is written."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from study_admin.cli import main as admin
from tests.conftest import run_cli, snapshot
from tests.pg import PG_PASSWORD, PostgresCluster

# (flags, extra environment, expected fragment of the error)
BAD_WORKER_CONFIG = [
    (["--threads", "0"], {}, "--threads=0 is outside the accepted range [1, 1024]"),
    (["--threads", "two"], {}, "--threads='two' is not a valid int"),
    ([], {"WORKER_POLL_INTERVAL": "soon"}, "WORKER_POLL_INTERVAL='soon' is not a valid float"),
    ([], {"WORKER_UNTIL_IDLE": "maybe"}, "WORKER_UNTIL_IDLE='maybe' is not a valid bool"),
    ([], {"WORKER_HEARTBEAT_INTERVAL": "0"}, "WORKER_HEARTBEAT_INTERVAL=0 is outside the accepted range [1, 86400]"),
    (["--max-trials", "-1"], {}, "--max-trials=-1 is outside the accepted range"),
    (["--heartbeat-interval", "30", "--grace-period", "10"], {}, "grace_period=10 must exceed heartbeat_interval=30"),
    (["--drain-seconds", "-5"], {}, "--drain-seconds=-5.0 is outside the accepted range [0, 86400]"),
    (
        ["--storage", "postgresql+psycopg2://postgres:wrong@127.0.0.1:{port}/postgres"],
        {},
        "password authentication failed",
    ),
    (["--storage", "mysql://u:p@localhost/db"], {}, "scheme 'mysql' is not supported"),
    (
        ["--storage", "postgresql+psycopg2://postgres:{password}@127.0.0.1:{port}/nope"],
        {},
        'database "nope" does not exist',
    ),
    (["--data-dir", "/proc/forbidden"], {}, "data directory '/proc/forbidden' cannot be created"),
]


@pytest.mark.parametrize(("flags", "environ", "message"), BAD_WORKER_CONFIG, ids=lambda v: str(v)[:60])
def test_bad_worker_configuration(
    postgres: PostgresCluster, pg_url: str, tiny_space: Path, flags: list[str], environ: dict[str, str], message: str
) -> None:
    assert (
        admin(
            [
                "create",
                "--storage",
                pg_url,
                "--algo",
                "ppo",
                "--env",
                "Pendulum-v1",
                "--space",
                str(tiny_space),
                "--n-trials",
                "2",
                "--timesteps",
                "256",
            ]
        )
        == 0
    )
    before = snapshot(pg_url)
    args = [f.format(port=postgres.port, password=PG_PASSWORD) for f in flags]
    if "--storage" not in args and "--data-dir" not in args:
        environ = {"DATABASE_URL": pg_url, **environ}
    result = run_cli("worker", *args, env=environ, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr and ":wrong@" not in result.stderr and PG_PASSWORD not in result.stderr
    assert snapshot(pg_url) == before


# What a health check must not load: SQLAlchemy alone cost ~0.8 s of CPU, and eight workers' checks on a
# 2-core machine all missed Docker's 5 s timeout while the workers trained.
HEAVY_MODULES = ("sqlalchemy", "optuna", "torch", "numpy", "gymnasium", "stable_baselines3", "psycopg2")


def _check_health(health: Path) -> tuple[int, set[str], float]:
    """``worker --check-health`` as the container runs it: exit code, top-level modules imported, CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_cli("worker", "--check-health", "--health-file", str(health), env={"PYTHONPROFILEIMPORTTIME": "1"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    return result.returncode, imported, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def test_the_health_check_imports_nothing_heavy(tmp_path: Path) -> None:
    health = tmp_path / "alive"
    health.touch()
    code, imported, cpu = _check_health(health)
    assert code == 0 and "worker" in imported  # the import log is read: the check's own package shows in it
    assert not imported & set(HEAVY_MODULES), sorted(imported & set(HEAVY_MODULES))
    assert cpu < 0.3, f"the health check took {cpu:.2f} s of CPU"
    os.utime(health, (0, 0))
    assert _check_health(health)[0] == 1  # positive control: a stale file is unhealthy
