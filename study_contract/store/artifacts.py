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

from study_contract.store.storage import StorageError

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts._protocol import ArtifactStore

MODEL = "model.zip"
NORMALIZATION = "vecnormalize.pkl"
CURVE = "learning_curve.csv"
VIDEO = "rollout.mp4"
MIMETYPES = {
    MODEL: "application/zip",
    NORMALIZATION: "application/octet-stream",
    CURVE: "text/csv",
    VIDEO: "video/mp4",
}
ARTIFACTS_ATTR_PREFIX = "artifacts:"
ARTIFACT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # Optuna's uuid4 ids


class UnsafeArtifact(ValueError):
    """An artifact record (from the database) whose file name is not a plain name or whose id is not Optuna's."""


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

        return Boto3ArtifactStore(where.removeprefix("s3://").strip("/"))
    from optuna.artifacts import FileSystemArtifactStore

    try:
        Path(where).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"artifact directory {where!r} cannot be created: {exc.strerror}") from None
    if writable and not os.access(where, os.W_OK | os.X_OK):
        raise StorageError(f"artifact directory {where!r} is not writable by this user")
    return FileSystemArtifactStore(where)


def trial_artifacts(trial: optuna.trial.FrozenTrial) -> dict[str, str]:
    """filename -> artifact id of a trial's artifacts (ones deleted in the dashboard skipped)."""
    return artifacts_in(trial.system_attrs)


def artifacts_in(system_attrs: dict[str, Any], *, strict: bool = True) -> dict[str, str]:
    """filename -> artifact id among a trial's or a study's system attributes (deleted ones skipped).

    Each record comes from the database: a file name that is not a plain name, or an id that is not
    Optuna's, raises :class:`UnsafeArtifact` (``strict=False`` leaves it out instead).
    """
    found: dict[str, str] = {}
    for key, value in system_attrs.items():
        if not key.startswith(ARTIFACTS_ATTR_PREFIX):
            continue
        meta: Any = json.loads(value) if isinstance(value, str) else value
        if not isinstance(meta, dict) or not meta.get("filename"):  # the dashboard leaves "null" after a delete
            continue
        filename, artifact_id = meta["filename"], meta.get("artifact_id")
        plain = isinstance(filename, str) and filename not in (".", "..") and Path(filename).name == filename
        if plain and "\\" not in filename and isinstance(artifact_id, str) and ARTIFACT_ID.fullmatch(artifact_id):
            found[filename] = artifact_id
        elif strict:
            raise UnsafeArtifact(
                f"artifact {filename!r} (id {artifact_id!r}) is not a plain file name with an Optuna artifact id; "
                "nothing was downloaded"
            )
    return found


def download(store: ArtifactStore, trial: optuna.trial.FrozenTrial, out: Path) -> list[Path]:
    """Copy every artifact of ``trial`` into ``out``; the files written. Unless every record is safe, nothing
    is written (:class:`UnsafeArtifact`)."""
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
