"""Where trial artifacts live (models, learning curves, rollout videos) and how they are named.

Optuna's artifact store keeps each file beside the trial that made it: workers upload, the dashboard
shows (``study_admin dashboard --artifact-dir``), ``study_admin download`` fetches. The location is
``--artifact-dir`` / ``TUNER_ARTIFACT_DIR``: a directory every worker and the dashboard share (a Compose
or Kubernetes volume), or ``s3://BUCKET`` for an S3-compatible store (``Boto3ArtifactStore``; endpoint and
credentials from the usual ``AWS_*`` variables). Without one, the embedded storage keeps artifacts in
a folder beside its database file, and PostgreSQL deployments keep none.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy

from study_contract.store.storage import StorageError

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts._protocol import ArtifactStore

MODEL = "model.zip"
NORMALIZATION = "vecnormalize.pkl"
CURVE = "learning_curve.csv"
VIDEO = "rollout.mp4"
CONFIRMATION_PLOT = "confirmation.png"
MIMETYPES = {
    MODEL: "application/zip",
    NORMALIZATION: "application/octet-stream",
    CURVE: "text/csv",
    VIDEO: "video/mp4",
}
# Every file this service stores, and how it is served: nothing else is downloaded or served as it claims to be.
FILES = {**MIMETYPES, CONFIRMATION_PLOT: "image/png"}
ARTIFACTS_ATTR_PREFIX = "artifacts:"
ARTIFACT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # Optuna's uuid4 ids


class UnsafeArtifact(ValueError):
    """An artifact record (from the database) that is not one this service writes: a file name outside its fixed
    list, an id that is not Optuna's, or a record that is not JSON."""


def location(explicit: str | None, storage_url: str) -> str | None:
    """The artifact location: the explicit one, else a folder beside an embedded database, else none."""
    if explicit:
        return explicit
    if storage_url.startswith("sqlite:///"):
        return str(Path(storage_url.removeprefix("sqlite:///")).parent / "artifacts")
    return None


def open_store(where: str, *, writable: bool = False) -> ArtifactStore:
    """The store at ``where``; a folder is created if missing, and must be writable for a ``writable`` store
    (:class:`StorageError` says why not in one line)."""
    if where.startswith("s3://"):
        from optuna.artifacts import Boto3ArtifactStore

        try:
            return Boto3ArtifactStore(where.removeprefix("s3://").strip("/"))
        except ImportError:
            raise StorageError(f"artifact store {where!r} needs boto3: pip install 'locomotion-tuner[s3]'") from None
    from optuna.artifacts import FileSystemArtifactStore

    try:
        Path(where).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"artifact directory {where!r} cannot be created: {exc.strerror}") from None
    if writable and not os.access(where, os.W_OK | os.X_OK):
        raise StorageError(f"artifact directory {where!r} is not writable by this user")
    return FileSystemArtifactStore(where)


def trial_artifacts(trial: optuna.trial.FrozenTrial, *, strict: bool = True) -> dict[str, str]:
    """filename -> artifact id of a trial's artifacts (ones deleted in the dashboard skipped)."""
    return artifacts_in(trial.system_attrs, strict=strict)


def _record(value: Any) -> Any:
    try:
        return json.loads(value) if isinstance(value, str) else value
    except (ValueError, RecursionError):
        return ...  # not JSON: malformed, unlike the dashboard's "null" for a deleted artifact


def owned_artifact_ids(engine: sqlalchemy.engine.Engine, study_id: int) -> list[str]:
    """The ids of every artifact record of the study and its trials that holds an Optuna id, whatever else the
    record holds: what deleting the study removes from the store. Read from the tables, so that no malformed
    row (one Optuna could not read) keeps a study from being deleted."""
    from optuna.storages._rdb import models  # Optuna's table objects

    study_attrs, trial_attrs = models.StudySystemAttributeModel.__table__, models.TrialSystemAttributeModel.__table__
    trials = models.TrialModel.__table__
    prefix = ARTIFACTS_ATTR_PREFIX + "%"
    queries = [
        sqlalchemy.select(study_attrs.c.value_json)
        .where(study_attrs.c.study_id == study_id, study_attrs.c.key.like(prefix)),
        sqlalchemy.select(trial_attrs.c.value_json)
        .join(trials, trials.c.trial_id == trial_attrs.c.trial_id)
        .where(trials.c.study_id == study_id, trial_attrs.c.key.like(prefix)),
    ]  # fmt: skip
    ids = []
    with engine.connect() as conn:
        for query in queries:
            for (value_json,) in conn.execute(query):
                try:
                    meta = _record(json.loads(value_json))
                except (TypeError, ValueError, RecursionError):
                    continue
                artifact_id = meta.get("artifact_id") if isinstance(meta, dict) else None
                if isinstance(artifact_id, str) and ARTIFACT_ID.fullmatch(artifact_id):
                    ids.append(artifact_id)
    return ids


def artifacts_in(system_attrs: dict[str, Any], *, strict: bool = True) -> dict[str, str]:
    """filename -> artifact id among a trial's or a study's system attributes (deleted ones skipped).

    Each record comes from the database: a file name that is not one this service writes (:data:`FILES`), an id
    that is not Optuna's, or a record that is not JSON raises :class:`UnsafeArtifact` (``strict=False`` leaves it
    out instead).
    """
    found: dict[str, str] = {}
    for key, value in system_attrs.items():
        if not key.startswith(ARTIFACTS_ATTR_PREFIX):
            continue
        meta = _record(value)
        if meta is None or (isinstance(meta, dict) and meta.get("filename") is None and "artifact_id" not in meta):
            continue  # the dashboard leaves "null" after a delete
        filename = meta.get("filename") if isinstance(meta, dict) else None
        artifact_id = meta.get("artifact_id") if isinstance(meta, dict) else None
        if isinstance(filename, str) and filename in FILES and isinstance(artifact_id, str) \
                and ARTIFACT_ID.fullmatch(artifact_id):  # fmt: skip
            found[filename] = artifact_id
        elif strict:
            shown = repr(filename)[:80] if isinstance(meta, dict) else "a record that is not a JSON object"
            raise UnsafeArtifact(
                f"artifact {shown} (id {str(artifact_id)[:60]!r}) is not one this service writes ({', '.join(FILES)}, "
                "each with an Optuna artifact id); nothing was downloaded"
            )
    return found


def download(store: ArtifactStore, trial: optuna.trial.FrozenTrial, out: Path) -> list[Path]:
    """Copy every artifact of ``trial`` into ``out`` under its fixed name (:data:`FILES`); the files written. Unless
    every record is one this service writes, nothing is written (:class:`UnsafeArtifact`)."""
    from optuna.artifacts import download_artifact

    artifacts = sorted(trial_artifacts(trial).items())
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, artifact_id in artifacts:
        target = out / filename
        target.unlink(missing_ok=True)
        download_artifact(artifact_store=store, file_path=str(target), artifact_id=artifact_id)
        written.append(target)
    return written


def retire_study_artifact(
    store: ArtifactStore, storage: optuna.storages.BaseStorage, study_id: int, filename: str
) -> None:
    """Delete the study's artifact named ``filename`` the way the dashboard does, so that an upload replaces it."""
    artifact_id = artifacts_in(storage.get_study_system_attrs(study_id), strict=False).get(filename)
    if artifact_id is not None:
        store.remove(artifact_id)
        storage.set_study_system_attr(study_id, ARTIFACTS_ATTR_PREFIX + artifact_id, json.dumps(None))
