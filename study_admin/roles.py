"""Least-privilege PostgreSQL roles: an owner, a worker role and a read-only dashboard role.

- **owner** (``study_admin``): owns Optuna's tables; creates, pauses and deletes studies.
- **worker**: reads and writes Optuna's rows (trials, attributes, heartbeats, follow-up studies) but
  cannot change the schema, create roles or own anything.
- **dashboard**: SELECT only. optuna-dashboard has no login; connected as this role its delete and edit
  requests fail in the database.

``init`` runs once as a role that may create roles (the image's superuser in Compose): the superuser
password never reaches workers, the dashboard or ``study_admin``. Every statement is composed with
``psycopg2.sql``, so any password works, and an existing worker or dashboard role that holds more than
it should is refused, not silently used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy
from psycopg2 import sql

ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
ROLE_LOCK = 727274  # advisory lock key: one init at a time creates roles
WORKER_TABLE_RIGHTS = ("SELECT", "INSERT", "UPDATE", "DELETE")
DASHBOARD_TABLE_RIGHTS = ("SELECT",)
ALL_TABLE_RIGHTS = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
# A worker frozen inside a transaction (SIGSTOP, a paused container or VM) would hold its row locks for
# ever, and the worker reclaiming its trial after the grace period would wait on them: the server ends it.
WORKER_IDLE_IN_TRANSACTION = "60s"


class RoleError(ValueError):
    """A role that cannot be set up as asked; the message names the role and the problem."""


@dataclass(frozen=True)
class Role:
    name: str
    password: str
    kind: str  # "owner", "worker" or "dashboard"

    def __post_init__(self) -> None:
        if not ROLE_NAME.match(self.name):
            raise RoleError(f"{self.kind} role {self.name!r} must match {ROLE_NAME.pattern}")
        if not self.password:
            raise RoleError(f"the {self.kind} role {self.name!r} needs a password")


def _execute(conn: sqlalchemy.Connection, statement: sql.Composable) -> None:
    raw = conn.connection.dbapi_connection
    assert raw is not None
    cursor = raw.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


ROLE_FLAGS = ("SUPERUSER", "CREATEROLE", "CREATEDB", "BYPASSRLS")


def _extra_attributes(conn: sqlalchemy.Connection, role: str) -> list[str] | None:
    """The powerful attributes ``role`` holds, or None when it does not exist."""
    row = conn.execute(
        sqlalchemy.text("SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = :r"),
        {"r": role},
    ).first()
    return None if row is None else [flag for flag, on in zip(ROLE_FLAGS, row, strict=True) if on]


def _ensure_login(conn: sqlalchemy.Connection, role: Role) -> None:
    extra = _extra_attributes(conn, role.name)
    if extra:  # never demote an existing powerful role (it may be the cluster's own superuser)
        raise RoleError(
            f"the {role.kind} role {role.name!r} is {', '.join(extra)}; give the {role.kind} a role of its own "
            "(the superuser's password must reach only the database and init)"
        )
    verb = sql.SQL("ALTER ROLE") if extra is not None else sql.SQL("CREATE ROLE")
    _execute(
        conn,
        sql.SQL("{} {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD {}").format(
            verb, sql.Identifier(role.name), sql.Literal(role.password)
        ),
    )


def _tables(conn: sqlalchemy.Connection) -> list[str]:
    return list(conn.execute(sqlalchemy.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())


def _tables_not_owned_by(conn: sqlalchemy.Connection, owner: str) -> list[str]:
    query = sqlalchemy.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tableowner <> :owner")
    return list(conn.execute(query, {"owner": owner}).scalars())


def prepare_roles(engine: sqlalchemy.engine.Engine, roles: list[Role]) -> None:
    """Create or update the roles (before the schema exists) and let the owner create it."""
    if engine.dialect.name != "postgresql":
        raise RoleError(f"database roles need PostgreSQL, not {engine.dialect.name}")
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ROLE_LOCK})
        database = sql.Identifier(conn.execute(sqlalchemy.text("SELECT current_database()")).scalar_one())
        # Nobody but the owner creates tables in the schema (PUBLIC may on PostgreSQL < 15).
        _execute(conn, sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
        for role in roles:
            _ensure_login(conn, role)
            name = sql.Identifier(role.name)
            _execute(conn, sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, name))
            rights = "USAGE, CREATE" if role.kind == "owner" else "USAGE"
            _execute(conn, sql.SQL("GRANT {} ON SCHEMA public TO {}").format(sql.SQL(rights), name))
            if role.kind == "worker":
                timeout = sql.Literal(WORKER_IDLE_IN_TRANSACTION)
                _execute(
                    conn, sql.SQL("ALTER ROLE {} SET idle_in_transaction_session_timeout = {}").format(name, timeout)
                )


def grant_rights(engine: sqlalchemy.engine.Engine, roles: list[Role]) -> None:
    """Hand the tables to the owner and grant the worker and dashboard rights on them, now and later."""
    owner = next((r for r in roles if r.kind == "owner"), None)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ROLE_LOCK})
        if owner is not None:
            # Tables created before there was an owner role (older deployments). Only those: ALTER TABLE locks the
            # table exclusively, and on a database that workers use, init run again deadlocked with their claims.
            for table in _tables_not_owned_by(conn, owner.name):
                _execute(
                    conn,
                    sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(table), sql.Identifier(owner.name)),
                )
        creator = sql.SQL("FOR ROLE {} ").format(sql.Identifier(owner.name)) if owner else sql.SQL("")
        for role in roles:
            if role.kind == "owner":
                continue
            rights = WORKER_TABLE_RIGHTS if role.kind == "worker" else DASHBOARD_TABLE_RIGHTS
            name, granted = sql.Identifier(role.name), sql.SQL(", ").join(map(sql.SQL, rights))
            default = sql.SQL("ALTER DEFAULT PRIVILEGES {}IN SCHEMA public GRANT {} ON {} TO {}")
            _execute(conn, sql.SQL("GRANT {} ON ALL TABLES IN SCHEMA public TO {}").format(granted, name))
            _execute(conn, default.format(creator, granted, sql.SQL("TABLES"), name))
            if role.kind == "worker":  # inserting a row draws from the table's id sequence
                _execute(conn, sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(name))
                _execute(conn, default.format(creator, sql.SQL("USAGE"), sql.SQL("SEQUENCES"), name))
        for role in roles:
            if role.kind != "owner":
                check_least_privilege(conn, role)


# Any role granted to it: membership hands over that role's rights, and predefined roles such as
# pg_execute_server_program (COPY ... TO PROGRAM) or pg_write_server_files reach the server's OS user.
_MEMBERSHIPS = sqlalchemy.text(
    "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
    "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = :r"
)


def check_least_privilege(conn: sqlalchemy.Connection, role: Role) -> None:
    """Refuse a worker or dashboard role that could do more than its job."""
    flags = conn.execute(
        sqlalchemy.text("SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = :r"),
        {"r": role.name},
    ).one()
    extra = [name for name, on in zip(("SUPERUSER", "CREATEROLE", "CREATEDB", "BYPASSRLS"), flags, strict=True) if on]
    owned = (
        conn.execute(
            sqlalchemy.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tableowner = :r"),
            {"r": role.name},
        )
        .scalars()
        .all()
    )
    if owned:
        extra.append(f"owns tables {sorted(owned)}")
    if conn.execute(sqlalchemy.text("SELECT has_schema_privilege(:r, 'public', 'CREATE')"), {"r": role.name}).scalar():
        extra.append("CREATE on schema public")
    groups = conn.execute(_MEMBERSHIPS, {"r": role.name}).scalars().all()
    if groups:
        extra.append(f"member of {', '.join(sorted(groups))}")
    allowed = WORKER_TABLE_RIGHTS if role.kind == "worker" else DASHBOARD_TABLE_RIGHTS
    for table in _tables(conn):
        for right in ALL_TABLE_RIGHTS:
            if right in allowed:
                continue
            held = conn.execute(
                sqlalchemy.text("SELECT has_table_privilege(:r, :t, :p)"),
                {"r": role.name, "t": f"public.{table}", "p": right},
            ).scalar()
            if held:
                extra.append(f"{right} on {table}")
    if extra:
        raise RoleError(
            f"the {role.kind} role {role.name!r} holds more than it should: {', '.join(extra[:6])}"
            f"{' ...' if len(extra) > 6 else ''}; use a role of its own with nothing else granted"
        )
