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

from study_contract.store.artifacts import FILES

log = logging.getLogger(__name__)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        pass


SERVED_TYPES = frozenset(FILES.values())
# An artifact is served as the type this service stores it as; anything else is a download that no browser renders or
# runs, whatever type its record claims (the record comes from the database).
DOWNLOAD_HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Disposition", "attachment")]
SAFE_HEADERS = [("X-Content-Type-Options", "nosniff"), ("Content-Security-Policy", "sandbox; default-src 'none'")]


def safe_artifacts(app: Any) -> Any:
    """``app`` with its ``/artifacts/`` responses made safe: a type outside :data:`FILES` becomes a download, no
    cross-origin access, no content sniffing, no script."""

    def middleware(environ: dict[str, Any], start_response: Any) -> Any:
        if not environ.get("PATH_INFO", "").startswith("/artifacts/"):
            return app(environ, start_response)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            claimed = next((v for k, v in headers if k.lower() == "content-type"), "")
            kept = [(k, v) for k, v in headers if k.lower() in ("content-length", "last-modified", "etag")]
            served = [("Content-Type", claimed)] if claimed in SERVED_TYPES else DOWNLOAD_HEADERS
            return start_response(status, [*kept, *served, *SAFE_HEADERS], exc_info)

        return app(environ, start)

    return middleware


def make_app(url: str, artifact_dir: str | None) -> Any:
    """The dashboard's WSGI app on a pre-pinging storage that leaves out the studies it cannot read, with a
    database-backed ``/healthz`` and artifacts served safely (:func:`safe_artifacts`)."""
    import optuna_dashboard

    from study_admin.readable_storage import ReadableStudies
    from study_contract.store.artifacts import location, open_store
    from study_contract.store.storage import engine_kwargs, prepare_engine

    storage = ReadableStudies(url, engine_kwargs=engine_kwargs(url), skip_table_creation=True,
                              skip_compatibility_check=True)  # fmt: skip
    prepare_engine(storage.engine, writes=False)
    where = location(artifact_dir, url)
    app = optuna_dashboard.wsgi(storage, artifact_store=open_store(where) if where else None)

    @app.get("/healthz")
    def healthz() -> dict[str, bool]:
        with storage.engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        return {"ok": True}

    return safe_artifacts(app)


def serve(url: str, host: str, port: int, artifact_dir: str | None) -> None:
    server = make_server(host, port, make_app(url, artifact_dir), server_class=_ThreadingServer,
                         handler_class=_QuietHandler)  # fmt: skip
    from study_contract.store.artifacts import location

    log.info("dashboard on http://%s:%d (artifacts: %s)", host, port, location(artifact_dir, url) or "none")
    server.serve_forever()
