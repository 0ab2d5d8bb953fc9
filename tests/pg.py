"""Throwaway PostgreSQL clusters and PgBouncers, run as the unprivileged ``postgres`` user.

``initdb`` and PgBouncer refuse root; when the tests (or benchmarks) run as root these helpers start
them through ``runuser``. Clusters listen on 127.0.0.1 only, with password authentication.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_PASSWORD = "test-only-password"
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _give_to_postgres(*paths: Path) -> None:
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for path in paths:
            os.chown(path, owner.pw_uid, owner.pw_gid)


@dataclass
class PostgresCluster:
    datadir: Path
    port: int
    user: str = "postgres"
    max_connections: int = 200

    @classmethod
    def create(cls, *, max_connections: int = 200) -> PostgresCluster:
        root = Path(tempfile.mkdtemp(prefix="tuner-pg-"))
        pwfile = root / "pwfile"
        pwfile.write_text(PG_PASSWORD)
        _give_to_postgres(root, pwfile)
        cluster = cls(datadir=root / "data", port=free_port(), max_connections=max_connections)
        initdb = [str(PG_BIN / "initdb"), "-D", str(cluster.datadir), "-U", "postgres", "--auth=scram-sha-256",
                  f"--pwfile={pwfile}", "--no-sync"]  # fmt: skip
        subprocess.run(as_postgres(initdb), check=True, stdout=subprocess.DEVNULL)
        return cluster

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-w", *args]), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 "
                   f"-c max_connections={self.max_connections}")  # fmt: skip
        self.pg_ctl("-o", options, "-l", str(self.datadir / "server.log"), "start")

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.datadir.parent, ignore_errors=True)

    def url(self, database: str, user: str | None = None, password: str = PG_PASSWORD, port: int | None = None) -> str:
        return f"postgresql+psycopg2://{user or self.user}:{password}@127.0.0.1:{port or self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> list[tuple]:
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=PG_PASSWORD, dbname=database)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()


@dataclass
class PgBouncer:
    """PgBouncer in transaction-pooling mode in front of ``cluster``'s database ``database``."""

    cluster: PostgresCluster
    database: str
    users: dict[str, str] = field(default_factory=lambda: {"postgres": PG_PASSWORD})
    pool_size: int = 20
    max_clients: int = 2000
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        root = Path(tempfile.mkdtemp(prefix="tuner-pgbouncer-"))
        userlist = root / "userlist.txt"
        userlist.write_text("".join(f'"{u}" "{p}"\n' for u, p in self.users.items()))
        config = root / "pgbouncer.ini"
        config.write_text(
            f"[databases]\n{self.database} = host=127.0.0.1 port={self.cluster.port} dbname={self.database}\n"
            f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = scram-sha-256\nauth_file = {userlist}\npool_mode = transaction\n"
            f"max_client_conn = {self.max_clients}\ndefault_pool_size = {self.pool_size}\n"
            "server_reset_query = DISCARD ALL\nignore_startup_parameters = extra_float_digits\n"
        )
        _give_to_postgres(root, userlist, config)
        command = as_postgres(["prlimit", f"--nofile={self.max_clients * 2 + 100}", PGBOUNCER, str(config)])
        log = open(root / "pgbouncer.log", "wb")  # noqa: SIM115 - handed to the process for its lifetime
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"pgbouncer did not listen on {self.port}: see {root / 'pgbouncer.log'}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def url(self, user: str = "postgres") -> str:
        return self.cluster.url(self.database, user=user, password=self.users[user], port=self.port)
