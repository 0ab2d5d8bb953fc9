"""Least privilege on PostgreSQL: an owner, a worker role and a read-only dashboard role, set up by ``init``."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import psycopg2
import psycopg2.errors
import pytest
import sqlalchemy

from tests.conftest import (
    create_tiny_study,
    run_cli,
    snapshot,
    start_worker,
    trials_of,
)
from tests.pg import PostgresCluster, free_port

PASSWORDS = {"owner": "o:x9 'quoted' 100% sure", "worker": 'w:x9 "double" %s', "dashboard": "d:x9 ;-- DROP"}


def _url(postgres: PostgresCluster, database: str, user: str, password: str) -> str:
    return sqlalchemy.engine.URL.create(
        "postgresql+psycopg2", username=user, password=password, host="127.0.0.1", port=postgres.port, database=database
    ).render_as_string(hide_password=False)


def _role_names(pg_url: str) -> dict[str, str]:
    database = pg_url.rsplit("/", 1)[1]
    return {kind: f"{kind}_{database}" for kind in PASSWORDS}


def _init_env(pg_url: str) -> dict[str, str]:
    names = _role_names(pg_url)
    return {
        "ADMIN_DB_USER": names["owner"],
        "ADMIN_DB_PASSWORD": PASSWORDS["owner"],
        "WORKER_DB_USER": names["worker"],
        "WORKER_DB_PASSWORD": PASSWORDS["worker"],
        "DASHBOARD_DB_USER": names["dashboard"],
        "DASHBOARD_DB_PASSWORD": PASSWORDS["dashboard"],
    }


@pytest.fixture
def roles(postgres: PostgresCluster, pg_url: str) -> dict[str, str]:
    """``init`` as the superuser with three roles of this test's own; their URLs by kind."""
    database = pg_url.rsplit("/", 1)[1]
    names, env = _role_names(pg_url), _init_env(pg_url)
    for _ in range(2):  # init twice: it is idempotent
        result = run_cli("study_admin", "init", "--storage", pg_url, env=env)
        assert result.returncode == 0, result.stderr
    assert f"worker role '{names['worker']}'" in result.stdout
    return {kind: _url(postgres, database, names[kind], PASSWORDS[kind]) for kind in PASSWORDS}


def _refused(url: str, statement: str) -> str:
    conn = psycopg2.connect(sqlalchemy.engine.make_url(url).render_as_string(hide_password=False).replace(
        "postgresql+psycopg2", "postgresql"))  # fmt: skip
    conn.autocommit = True
    try:
        with conn.cursor() as cursor, pytest.raises(psycopg2.errors.InsufficientPrivilege) as info:
            cursor.execute(statement)
        return str(info.value)
    finally:
        conn.close()


def test_the_worker_role_trains_but_cannot_change_the_schema(
    roles: dict[str, str], tiny_space: Path, tmp_path: Path
) -> None:
    create_tiny_study(roles["owner"], "owned", tiny_space, 2, 256)
    worker = start_worker(roles["worker"], "--until-idle", "--poll-interval", "0.3", log=tmp_path / "w.log")
    assert worker.wait(timeout=300) == 0, (tmp_path / "w.log").read_text()[-3000:]
    assert all(t.state.name == "COMPLETE" for t in trials_of(roles["owner"], "owned"))
    assert "must be owner of table studies" in _refused(roles["worker"], "DROP TABLE studies")
    assert "permission denied to create role" in _refused(roles["worker"], "CREATE ROLE intruder")
    assert "permission denied for schema public" in _refused(roles["worker"], "CREATE TABLE mine (x int)")
    assert "must be owner of table trials" in _refused(roles["worker"], "ALTER TABLE trials ADD COLUMN x int")


def test_init_again_waits_on_no_workers_transaction(roles: dict[str, str], pg_url: str) -> None:
    """Compose runs init again at every ``up`` while workers hold transactions on the tables: it must take no table
    lock that waits on them (``ALTER TABLE ... OWNER`` on tables the owner already owned did, and deadlocked)."""
    worker = sqlalchemy.create_engine(roles["worker"])
    with worker.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT trial_id FROM trials FOR UPDATE"))  # a claim's transaction, still open
        again = run_cli("study_admin", "init", "--storage", pg_url, env=_init_env(pg_url), timeout=30)
        assert again.returncode == 0, again.stderr
        conn.rollback()
    worker.dispose()


def test_the_server_ends_a_worker_session_left_idle_in_a_transaction(roles: dict[str, str]) -> None:
    """A frozen worker must not hold row locks that the worker reclaiming its trial waits on."""
    worker, owner = (sqlalchemy.create_engine(roles[kind]) for kind in ("worker", "owner"))
    with worker.connect() as conn:
        assert conn.execute(sqlalchemy.text("SHOW idle_in_transaction_session_timeout")).scalar_one() == "1min"
    with owner.connect() as conn:  # positive control: only the worker role has it
        assert conn.execute(sqlalchemy.text("SHOW idle_in_transaction_session_timeout")).scalar_one() == "0"


def test_the_dashboard_role_reads_but_cannot_write(roles: dict[str, str], tiny_space: Path) -> None:
    create_tiny_study(roles["owner"], "precious", tiny_space, 2, 256)
    engine = sqlalchemy.create_engine(roles["dashboard"])
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT study_name FROM studies")).scalars().all() == ["precious"]
    engine.dispose()
    for statement in (
        "DELETE FROM trials",
        "UPDATE studies SET study_name = 'x'",
        "INSERT INTO studies VALUES (9, 'x')",
    ):
        assert "permission denied for table" in _refused(roles["dashboard"], statement)


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def _delete_through_dashboard(url: str, name: str) -> int:
    from study_admin.dashboard import make_app

    server = make_server("127.0.0.1", free_port(), make_app(url, None), handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        import json

        base = f"http://127.0.0.1:{server.server_port}"
        studies = json.load(urllib.request.urlopen(f"{base}/api/studies"))["study_summaries"]
        study_id = next(s["study_id"] for s in studies if s["study_name"] == name)
        request = urllib.request.Request(f"{base}/api/studies/{study_id}", method="DELETE")
        try:
            with urllib.request.urlopen(request) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
    finally:
        server.shutdown()


def test_the_dashboard_cannot_delete_a_study_but_the_owner_can(roles: dict[str, str], tiny_space: Path) -> None:
    create_tiny_study(roles["owner"], "kept", tiny_space, 2, 256)
    assert _delete_through_dashboard(roles["dashboard"], "kept") == 500  # the database refused the dashboard
    assert [t.number for t in trials_of(roles["owner"], "kept")] == [0, 1]
    assert _delete_through_dashboard(roles["owner"], "kept") == 204  # positive control: same request, owner role
    assert run_cli("study_admin", "list", "--storage", roles["owner"]).stdout.startswith("no studies")


@pytest.mark.parametrize("kind", ["WORKER", "DASHBOARD", "ADMIN"])
def test_init_refuses_a_role_that_holds_more_than_it_should(postgres: PostgresCluster, pg_url: str, kind: str) -> None:
    before = snapshot(pg_url)
    env = {f"{kind}_DB_USER": "postgres", f"{kind}_DB_PASSWORD": "anything"}
    result = run_cli("study_admin", "init", "--storage", pg_url, env=env)
    assert result.returncode == 2
    assert "role 'postgres' is SUPERUSER" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(pg_url) == before
    with psycopg2.connect(host="127.0.0.1", port=postgres.port, user="postgres", password="test-only-password",
                          dbname="postgres") as conn, conn.cursor() as cursor:  # fmt: skip
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'postgres'")
        assert cursor.fetchone() == (True,)  # never demoted


def test_init_refuses_a_dashboard_role_granted_writes_elsewhere(postgres: PostgresCluster, pg_url: str) -> None:
    database = pg_url.rsplit("/", 1)[1]
    role = f"leaky_{database}"
    first = run_cli("study_admin", "init", "--storage", pg_url, "--dashboard-role", role,
                    env={"DASHBOARD_DB_PASSWORD": "pw"})  # fmt: skip
    assert first.returncode == 0, first.stderr
    postgres.execute(f"GRANT INSERT ON trials TO {role}", database=database)
    again = run_cli("study_admin", "init", "--storage", pg_url, "--dashboard-role", role,
                    env={"DASHBOARD_DB_PASSWORD": "pw"})  # fmt: skip
    assert (
        again.returncode == 2
        and f"the dashboard role '{role}' holds more than it should: INSERT on trials" in again.stderr
    )


@pytest.mark.parametrize("kind", ["worker", "dashboard"])
@pytest.mark.parametrize("group", ["pg_execute_server_program", "accomplice"])
def test_init_refuses_a_role_that_is_a_member_of_another(
    postgres: PostgresCluster, pg_url: str, kind: str, group: str
) -> None:
    """A "SELECT-only" dashboard in pg_execute_server_program runs COPY ... TO PROGRAM as the server's OS user."""
    database = pg_url.rsplit("/", 1)[1]
    role = f"{kind}_{database}"
    init = ["study_admin", "init", "--storage", pg_url, f"--{kind}-role", role]
    env = {f"{kind.upper()}_DB_PASSWORD": "pw"}
    first = run_cli(*init, env=env)
    assert first.returncode == 0, first.stderr  # positive control: the same role, before the grant
    if group == "accomplice":
        group = f"accomplice_{database}"
        postgres.execute(f"CREATE ROLE {group}")
    postgres.execute(f"GRANT {group} TO {role}")
    again = run_cli(*init, env=env)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    (line,) = again.stderr.splitlines()
    assert f"the {kind} role '{role}' holds more than it should: member of {group}" in line
