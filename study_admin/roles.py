"""A read-only PostgreSQL role for optuna-dashboard, which has no authentication of its own.

Its API can delete studies and rewrite trials; connected as this role, those requests fail in the
database. Notes saved from the dashboard need writes too, so they fail as well (read-only by design).
"""

from __future__ import annotations

import re

import sqlalchemy

ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def grant_read_only(engine: sqlalchemy.engine.Engine, role: str, password: str) -> None:
    """Create or update ``role`` with SELECT on the current (and future) Optuna tables, nothing else."""
    if not ROLE_NAME.match(role):
        raise ValueError(f"dashboard role {role!r} must match {ROLE_NAME.pattern}")
    if not password:
        raise ValueError("the dashboard role needs a password (DASHBOARD_DB_PASSWORD)")
    if engine.dialect.name != "postgresql":
        raise ValueError(f"a dashboard role needs PostgreSQL, not {engine.dialect.name}")
    with engine.begin() as conn:
        # One creator at a time: several init runs racing on CREATE ROLE would otherwise collide.
        conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(727274)"))
        exists = conn.execute(sqlalchemy.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
        verb = "ALTER" if exists else "CREATE"
        quoted_password = password.replace("'", "''")
        conn.execute(sqlalchemy.text(f"{verb} ROLE {role} LOGIN PASSWORD '{quoted_password}'"))
        database = conn.execute(sqlalchemy.text("SELECT current_database()")).scalar_one()
        conn.execute(sqlalchemy.text(f'GRANT CONNECT ON DATABASE "{database}" TO {role}'))
        conn.execute(sqlalchemy.text(f"GRANT USAGE ON SCHEMA public TO {role}"))
        conn.execute(sqlalchemy.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
        conn.execute(sqlalchemy.text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}"))
