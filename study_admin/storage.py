"""Where studies live: PostgreSQL from ``DATABASE_URL``, or an embedded SQLite file by default.

Both are Optuna's ``RDBStorage``, so heartbeats, stale-trial retries and the dashboard work the same on
each. SQLite gets immediate write transactions so that several local worker processes serialise their
writes instead of failing with "database is locked".
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy
import sqlalchemy.exc

if TYPE_CHECKING:
    import optuna

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "locomotion-tuner"
EMBEDDED_FILE = "studies.sqlite3"
SUPPORTED_SCHEMES = ("postgresql", "postgresql+psycopg2", "sqlite")


# Connection failures that no wait will fix; all other connection failures may pass (a restart).
PERMANENT_FAILURES = (
    "password authentication failed",
    "no password supplied",
    "does not exist",
    "unable to open database file",
    "permission denied",
    "readonly database",
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


def _engine_kwargs(url: str, connect_timeout: int) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60, "isolation_level": None}}
    # pre_ping: connections dropped while idle (server restart, firewall) are replaced before use.
    return {"pool_pre_ping": True, "pool_size": 2, "connect_args": {"connect_timeout": connect_timeout}}


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

    engine.dispose()


def _raise_storage_error(exc: BaseException, url: str) -> None:
    message = describe_db_error(exc, url)
    transient = not any(text in message.lower() for text in PERMANENT_FAILURES)
    raise StorageError(message, transient=transient) from exc


def open_engine(url: str, *, connect_timeout: int = 5) -> sqlalchemy.engine.Engine:
    """A plain SQLAlchemy engine for read-only views; connects once to report problems early."""
    _check_url(url)
    engine = sqlalchemy.create_engine(url, **_engine_kwargs(url, connect_timeout))
    try:
        engine.connect().close()
    except sqlalchemy.exc.SQLAlchemyError as exc:
        _raise_storage_error(exc, url)
    return engine


def describe_db_error(exc: BaseException, url: str) -> str:
    """One line that says what is wrong with the database at ``url``."""
    text = str(getattr(exc, "orig", None) or exc.__cause__ or exc).strip().splitlines()
    detail = text[0] if text else type(exc).__name__
    return f"cannot use database {mask_password(url)}: {detail}"


def open_storage(
    url: str,
    *,
    connect_timeout: int = 5,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_trial_callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> optuna.storages.RDBStorage:
    """Connect (creating Optuna's schema if it is missing) or raise :class:`StorageError`."""
    import optuna

    _check_url(url)
    try:
        storage = optuna.storages.RDBStorage(
            url,
            engine_kwargs=_engine_kwargs(url, connect_timeout),
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=stale_trial_callback,
        )
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
        _raise_storage_error(exc, url)
    except (ValueError, ImportError, RuntimeError) as exc:
        raise StorageError(describe_db_error(exc, url)) from exc
    if url.startswith("sqlite"):
        _serialise_sqlite_writes(storage.engine)
    return storage
