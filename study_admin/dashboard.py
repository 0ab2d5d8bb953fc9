"""optuna-dashboard, served so that it survives database restarts and reports its own health.

``optuna-dashboard URL`` keeps pooled connections that die when PostgreSQL restarts (its next request
is an HTTP 500) and answers its health endpoint without touching the database. Here the storage pings
each connection before use, ``/healthz`` runs a query, and a threaded server keeps a video download
from blocking every other request.
"""

from __future__ import annotations

import logging
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import sqlalchemy

log = logging.getLogger(__name__)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        pass


def make_app(url: str, artifact_dir: str | None) -> Any:
    """The dashboard's WSGI app on a pre-pinging storage, with a database-backed ``/healthz``."""
    import optuna
    import optuna_dashboard

    from study_contract.store.artifacts import location, open_store
    from study_contract.store.storage import engine_kwargs, prepare_engine

    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), skip_table_creation=True,
                                         skip_compatibility_check=True)  # fmt: skip
    prepare_engine(storage.engine, writes=False)
    where = location(artifact_dir, url)
    app = optuna_dashboard.wsgi(storage, artifact_store=open_store(where) if where else None)

    @app.get("/healthz")
    def healthz() -> dict[str, bool]:
        with storage.engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        return {"ok": True}

    return app


def serve(url: str, host: str, port: int, artifact_dir: str | None) -> None:
    server = make_server(host, port, make_app(url, artifact_dir), server_class=_ThreadingServer,
                         handler_class=_QuietHandler)  # fmt: skip
    from study_contract.store.artifacts import location

    log.info("dashboard on http://%s:%d (artifacts: %s)", host, port, location(artifact_dir, url) or "none")
    server.serve_forever()
