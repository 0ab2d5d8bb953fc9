"""The worker's configuration: bad values fail fast with one line, and nothing is written."""

from __future__ import annotations

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
