"""Fixtures: a throwaway PostgreSQL cluster started by the tests, and the embedded SQLite default.

The cluster runs as the unprivileged ``postgres`` user when the tests run as root (``initdb`` refuses
root), listens on 127.0.0.1 with password authentication, and every test gets its own database.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_PASSWORD = "test-only-password"
REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresCluster:
    datadir: Path
    port: int
    user: str = "postgres"

    def _as_owner(self, args: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *args]
        return args

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            self._as_owner([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-w", *args]),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self.pg_ctl("-o", options, "-l", str(self.datadir / "server.log"), "start")

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "stop")

    def url(self, database: str, user: str | None = None, password: str = PG_PASSWORD) -> str:
        return f"postgresql+psycopg2://{user or self.user}:{password}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=PG_PASSWORD, dbname=database)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()


@pytest.fixture(scope="session")
def postgres() -> PostgresCluster:
    root = Path(tempfile.mkdtemp(prefix="tuner-pg-"))
    datadir = root / "data"
    pwfile = root / "pwfile"
    pwfile.write_text(PG_PASSWORD)
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    cluster = PostgresCluster(datadir=datadir, port=free_port())
    subprocess.run(
        cluster._as_owner(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(datadir),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--no-sync",
            ]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    cluster.start()
    yield cluster
    cluster.stop()
    shutil.rmtree(root, ignore_errors=True)


_db_names = itertools.count()


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    name = f"t{os.getpid()}_{next(_db_names)}"
    postgres.execute(f"CREATE DATABASE {name}")
    return postgres.url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same contract on both backends: the embedded default and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def tiny_space(tmp_path: Path) -> Path:
    """A PPO space small enough to train in a second on Pendulum-v1."""
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "n_steps: {low: 64, high: 128}\nbatch_size: {low: 32, high: 64}\nn_epochs: {low: 1, high: 2}\nnet_arch: tiny\n"
    )
    return path


def create_tiny_study(url: str, name: str, space: Path, n_trials: int, timesteps: int, *extra: str) -> None:
    """A PPO study on Pendulum-v1, created through study_admin's own entry point."""
    from study_admin.cli import main as admin

    argv = ["create", "--storage", url, "--name", name, "--algo", "ppo", "--env", "Pendulum-v1",
            "--n-trials", str(n_trials), "--timesteps", str(timesteps), "--space", str(space), *extra]  # fmt: skip
    assert admin(argv) == 0


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a console script of this project (``study_admin`` or ``worker``) as a user would."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TUNER_DATA_DIR")}
    full_env.update(env or {})
    return subprocess.run(
        [str(VENV_BIN / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        env=full_env,
        input=stdin,
        timeout=timeout,
        cwd=REPO,
    )


def start_worker(url: str, *args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, "DATABASE_URL": url, **(env or {})}
    handle = open(log, "wb")  # noqa: SIM115 - closed when the process is reaped by the test
    return subprocess.Popen([str(VENV_BIN / "worker"), *args], stdout=handle, stderr=subprocess.STDOUT, env=full_env)


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
