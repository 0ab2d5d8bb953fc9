"""Where studies live: PostgreSQL from ``DATABASE_URL``, or an embedded SQLite file by default.

Both are Optuna's ``RDBStorage``, so heartbeats, stale-trial retries and the dashboard work the same on
each. SQLite gets immediate write transactions so that several local worker processes serialise their
writes instead of failing with "database is locked". PostgreSQL sessions run in UTC: Optuna stores
naive timestamps in the session's time zone, and a daylight-saving jump would otherwise make every
running trial look stale at once.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy
import sqlalchemy.exc

if TYPE_CHECKING:
    import optuna

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "locomotion-tuner"
EMBEDDED_FILE = "studies.sqlite3"
SUPPORTED_SCHEMES = ("postgresql", "postgresql+psycopg2", "sqlite")
# The spellings users paste for PostgreSQL; SQLAlchemy would pick its psycopg 3 driver for them, which is
# not installed: they mean psycopg2.
POSTGRES_ALIASES = ("postgresql", "postgres")
POSTGRES_DRIVER = "postgresql+psycopg2"


# Database errors that no wait will fix; other connection failures may pass (a restart, a blip).
PERMANENT_FAILURES = (
    "password authentication failed",
    "no password supplied",
    "does not exist",
    "could not translate host name",
    "name or service not known",
    "unable to open database file",
    "permission denied",
    "must be owner",
    "readonly database",
    "attempt to write a readonly database",
)
# Errors a restart, a network blip or a dropped idle connection produce.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
)


class StorageError(RuntimeError):
    """The database cannot be used; the message is one line, password masked."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def mask_password(url: str) -> str:
    """``url`` for a message: its password hidden, in the user part and in the query string alike.

    An unencoded ``@`` in the password makes SQLAlchemy read the password's tail as part of the host;
    the part before the host's last ``@`` is hidden too. A URL that does not parse shows its scheme only.
    """
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        return url.partition("://")[0] + "://***" if "://" in url else "***"
    if parsed.host and "@" in parsed.host:
        parsed = parsed.set(password="***", host=parsed.host.rsplit("@", 1)[1])
    query = {key: "***" if "password" in key.lower() else value for key, value in parsed.query.items()}
    return parsed.set(query=query).render_as_string(hide_password=True)


def normalise_url(url: str) -> str:
    """``url`` checked, with ``postgresql://`` and ``postgres://`` meaning the psycopg2 driver."""
    parsed = _check_url(url)
    if parsed.drivername in POSTGRES_ALIASES:
        return parsed.set(drivername=POSTGRES_DRIVER).render_as_string(hide_password=False)
    return url


def resolve_url(url: str | None, data_dir: str | None) -> str:
    """The storage URL: ``url`` if given (checked), else the embedded file under ``data_dir``."""
    if url:
        return normalise_url(url)
    directory = Path(data_dir) if data_dir else DEFAULT_DATA_DIR
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"data directory {str(directory)!r} cannot be created: {exc.strerror}") from None
    if not os.access(directory, os.W_OK):
        raise StorageError(f"data directory {str(directory)!r} is not writable")
    return f"sqlite:///{directory / EMBEDDED_FILE}"


def _check_url(url: str) -> sqlalchemy.engine.URL:
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise StorageError(
            f"storage URL {mask_password(url)!r} is malformed; expected "
            "postgresql://USER:PASSWORD@HOST:PORT/DB or sqlite:///PATH"
        ) from None
    if parsed.drivername not in (*SUPPORTED_SCHEMES, *POSTGRES_ALIASES):
        raise StorageError(
            f"storage URL scheme {parsed.drivername!r} is not supported; use one of {list(SUPPORTED_SCHEMES)}"
        )
    if parsed.host and "@" in parsed.host:
        raise StorageError(
            f"storage URL {mask_password(url)!r} has an '@' in its password: percent-encode it as %40 "
            "(and '/' as %2F, '%' as %25)"
        )
    if parsed.drivername.startswith("postgres") and parsed.port is not None:
        if not 0 < parsed.port < 65536:
            raise StorageError(f"storage URL port {parsed.port} is outside 1-65535")
    return parsed


def engine_kwargs(url: str, connect_timeout: int = 5) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60, "isolation_level": None}}
    # pre_ping: connections dropped while idle (server restart, firewall) are replaced before use.
    return {"pool_pre_ping": True, "pool_size": 2, "connect_args": {"connect_timeout": connect_timeout}}


def _utc_sessions(engine: sqlalchemy.engine.Engine) -> None:
    # A SET on connect rather than the "options" startup parameter, which PgBouncer refuses; TimeZone
    # is one of the settings PgBouncer keeps per client, so this also holds behind transaction pooling.
    @sqlalchemy.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
        dbapi_connection.commit()


def prepare_engine(engine: sqlalchemy.engine.Engine, *, writes: bool) -> sqlalchemy.engine.Engine:
    """Session settings connections need: UTC on PostgreSQL; immediate transactions on SQLite for writers."""
    if engine.dialect.name == "postgresql":
        _utc_sessions(engine)
    elif writes:
        _serialise_sqlite_writes(engine)
    engine.dispose()  # connections opened before the listeners existed are not reused
    return engine


def describe_first_line(exc: BaseException) -> str:
    """The first line of what went wrong (the driver's message when there is one), never empty."""
    text = str(getattr(exc, "orig", None) or exc.__cause__ or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def is_permanent(exc: BaseException) -> bool:
    """Whether a database error names something no wait will fix (credentials, rights, a missing name)."""
    if isinstance(exc, StorageError):
        return not exc.transient
    return any(text in describe_first_line(exc).lower() for text in PERMANENT_FAILURES)


def is_transient(exc: BaseException) -> bool:
    """Whether waiting and trying again may help (a restart, a network blip, a dropped connection)."""
    if isinstance(exc, StorageError):
        return exc.transient
    import optuna  # StorageInternalError wraps the SQLAlchemy error of a failed commit

    transient = isinstance(exc, TRANSIENT_ERRORS) or isinstance(exc, optuna.exceptions.StorageInternalError)
    return transient and not is_permanent(exc)


def _serialise_sqlite_writes(engine: sqlalchemy.engine.Engine) -> None:
    # pysqlite's deferred transactions let two processes read the same WAITING trial and then fail
    # on upgrade; BEGIN IMMEDIATE takes the write lock up front and waits for it instead.
    @sqlalchemy.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    @sqlalchemy.event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _raise_storage_error(exc: BaseException, url: str) -> None:
    raise StorageError(describe_db_error(exc, url), transient=not is_permanent(exc)) from exc


def open_engine(url: str, *, connect_timeout: int = 5) -> sqlalchemy.engine.Engine:
    """A plain SQLAlchemy engine for read-only views; connects once to report problems early."""
    url = normalise_url(url)
    engine = prepare_engine(sqlalchemy.create_engine(url, **engine_kwargs(url, connect_timeout)), writes=False)
    try:
        engine.connect().close()
    except sqlalchemy.exc.SQLAlchemyError as exc:
        _raise_storage_error(exc, url)
    return engine


def describe_db_error(exc: BaseException, url: str) -> str:
    """One line that says what is wrong with the database at ``url``."""
    return f"cannot use database {mask_password(url)}: {describe_first_line(exc)}"


def _never_reuse_ids() -> None:
    """Embedded databases created from now on number studies and trials with SQLite's AUTOINCREMENT: without
    it SQLite gives a deleted study's ids to the next study, and a late write of a worker still training
    the deleted study's trial would land in the new one's (workers also check their claim before each
    write, which covers databases created before this)."""
    from optuna.storages._rdb import models

    for model in (models.StudyModel, models.TrialModel):
        model.__table__.dialect_kwargs["sqlite_autoincrement"] = True


def open_storage(
    url: str,
    *,
    connect_timeout: int = 5,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
) -> optuna.storages.RDBStorage:
    """Connect (creating Optuna's schema if it is missing) or raise :class:`StorageError`.

    A role that may not create the schema (the worker and dashboard roles) waits for ``study_admin
    init`` instead: that error is transient.
    """
    import optuna

    url = normalise_url(url)
    _never_reuse_ids()
    warnings.filterwarnings("ignore", "Argument ``heartbeat_interval``", optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", "Argument ``grace_period``", optuna.exceptions.ExperimentalWarning)
    try:
        storage = optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs(url, connect_timeout),
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
        )
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
        if "permission denied for schema" in describe_first_line(exc).lower():
            raise StorageError(
                f"{describe_db_error(exc, url)}: the database has no tuning schema yet and this role may not "
                "create it; run `study_admin init` as the owner",
                transient=True,
            ) from exc
        _raise_storage_error(exc, url)
    except (ValueError, ImportError, RuntimeError) as exc:
        raise StorageError(describe_db_error(exc, url)) from exc
    prepare_engine(storage.engine, writes=True)
    return storage
