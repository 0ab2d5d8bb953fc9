"""Where studies live: PostgreSQL from ``DATABASE_URL``, or an embedded SQLite file by default.

Both are Optuna's ``RDBStorage``, so heartbeats, stale-trial retries and the dashboard work the same on
each. SQLite gets immediate write transactions so that several local worker processes serialise their
writes instead of failing with "database is locked". PostgreSQL sessions run in UTC: Optuna stores
naive timestamps in the session's time zone, and a daylight-saving jump would otherwise make every
running trial look stale at once.
"""

from __future__ import annotations

import os
import re
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
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def resolve_url(url: str | None, data_dir: str | None) -> str:
    """The storage URL: ``url`` if given, else the embedded file under ``data_dir``."""
    if url:
        return url
    directory = Path(data_dir) if data_dir else DEFAULT_DATA_DIR
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"data directory {str(directory)!r} cannot be created: {exc.strerror}") from None
    if not os.access(directory, os.W_OK):
        raise StorageError(f"data directory {str(directory)!r} is not writable")
    return f"sqlite:///{directory / EMBEDDED_FILE}"


def _check_url(url: str) -> None:
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(
            f"storage URL {mask_password(url)!r} is malformed; expected "
            "postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB or sqlite:///PATH"
        ) from None
    if parsed.drivername not in SUPPORTED_SCHEMES:
        raise StorageError(
            f"storage URL scheme {parsed.drivername!r} is not supported; use one of {list(SUPPORTED_SCHEMES)}"
        )
    if parsed.drivername.startswith("postgresql") and parsed.port is not None:
        if not 0 < parsed.port < 65536:
            raise StorageError(f"storage URL port {parsed.port} is outside 1-65535")


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
    _check_url(url)
    engine = prepare_engine(sqlalchemy.create_engine(url, **engine_kwargs(url, connect_timeout)), writes=False)
    try:
        engine.connect().close()
    except sqlalchemy.exc.SQLAlchemyError as exc:
        _raise_storage_error(exc, url)
    return engine


def describe_db_error(exc: BaseException, url: str) -> str:
    """One line that says what is wrong with the database at ``url``."""
    return f"cannot use database {mask_password(url)}: {describe_first_line(exc)}"


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

    _check_url(url)
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
