"""What a trial leaves behind in the artifact store: its learning curve, and its model and video when it
is the study's best so far (or always, or never: the study's ``save_models``); in a confirmation study,
its candidate's best run so far, so a confirmed winner always has a model and a video to download.

Uploads happen before the trial is told, because Optuna refuses to change a finished trial. A video
that cannot be rendered never fails the trial: the reason is recorded as ``video_error``. Models are
kept only for trials that were the best so far when they finished, which in a study of n trials is
about ln(n) of them (the expected number of records in a random sequence), so disk use stays small.
"""

from __future__ import annotations

import csv
import logging
import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from study_contract import protocol
from study_contract.names import Stage
from study_contract.store.artifacts import CURVE, MIMETYPES, MODEL, NORMALIZATION, VIDEO
from study_contract.store.storage import describe_first_line
from study_contract.store.trials import by_value, views
from worker.health import Pulse
from worker.outcomes import Outcome
from worker.trial_session import TrialGone, TrialSession

log = logging.getLogger(__name__)


class TrialArtifacts:
    """Saves one trial's files through its session; :meth:`save` returns the attributes to record on the trial."""

    def __init__(self, session: TrialSession, trial: optuna.Trial, seed: int) -> None:
        definition = session.definition
        self.session = session
        self.trial = trial
        self.seed = seed
        self.save_models = definition.save_models
        self.env_id = definition.env_id
        self.rivals: dict[str, Any] | None = None
        # A confirmation run or an instance competes with its configuration's other seeds on the same task only, so
        # that every configuration keeps its best run's files (on every task).
        if definition.stage in (Stage.CONFIRMATION, Stage.INSTANCES):
            queued = protocol.decode_attrs(trial.user_attrs, protocol.USER_ATTRS)
            self.rivals = {key: queued.get(key) for key in (protocol.CANDIDATE, protocol.TASK)}

    def _upload(self, path: Path) -> None:
        self.session.upload(self.trial, path, MIMETYPES[path.name])

    def _best_so_far(self, value: float | None) -> bool:
        """Better than every completed trial, or, with ``rivals`` (attribute values), every completed trial that
        shares them (a configuration's other seeds on its task: each keeps its best run's files)."""
        study = self.trial.study
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ranked = views(complete)
        if self.rivals is not None:
            rivals = self.rivals
            ranked = [t for t in ranked if all(t.get(key) == mine for key, mine in rivals.items())]
        leader = next(iter(by_value(ranked)), None)
        return value is not None and (leader is None or value > (leader.value or 0.0))

    def save(
        self,
        model: Any,
        train_env: VecEnv,
        curve: list[list[float]],
        outcome: Outcome,
        value: float | None,
        pulse: Pulse,
    ) -> dict[str, Any]:
        try:
            return self._save(model, train_env, curve, outcome, value, pulse)
        except TrialGone:
            raise
        except Exception as exc:  # noqa: BLE001 - a full or unreachable store must not cost the trial
            reason = f"{type(exc).__name__}: {describe_first_line(exc)}"
            log.warning("trial %d: artifacts not saved (%s)", self.trial.number, reason)
            return {protocol.ARTIFACT_ERROR: reason[:500]}

    def _save(
        self,
        model: Any,
        train_env: VecEnv,
        curve: list[list[float]],
        outcome: Outcome,
        value: float | None,
        pulse: Pulse,
    ) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="trial-artifacts-") as work:
            folder = Path(work)
            with (folder / CURVE).open("w", newline="") as out:
                csv.writer(out).writerows([["env_steps", "mean_return"], *curve])
            self._upload(folder / CURVE)
            if outcome != Outcome.COMPLETE or self.save_models == "none":
                return attrs
            best = self._best_so_far(value)
            if self.save_models == "all" or best:
                model.save(folder / MODEL)
                self._upload(folder / MODEL)
                if isinstance(train_env, VecNormalize):
                    train_env.save(str(folder / NORMALIZATION))
                    self._upload(folder / NORMALIZATION)
                attrs[protocol.SAVED_MODEL] = True
            if best:
                attrs.update(self._video(model, train_env, folder / VIDEO, pulse))
        return attrs

    def _video(self, model: Any, train_env: VecEnv, path: Path, pulse: Pulse) -> dict[str, Any]:
        from worker.video import record_episode

        try:
            frames = record_episode(model, self.env_id, train_env, path, seed=self.seed, on_frame=pulse)
            self._upload(path)
        except TrialGone:
            raise
        except Exception as exc:  # noqa: BLE001 - a video is a bonus; rendering must never fail the trial
            reason = f"{type(exc).__name__}: {describe_first_line(exc)}"
            log.warning("trial %d: no rollout video (%s)", self.trial.number, reason)
            return {protocol.VIDEO_ERROR: reason[:500]}
        return {protocol.VIDEO_FRAMES: frames}
