"""The trial runner with a stand-in trainer: what each way a training can end does to the claimed trial.

No SB3 here: the trainer is a function that returns a result or raises, so each test runs in a fraction of a
second on an embedded database, and the runner's bookkeeping (what it records, how it tells Optuna, what it
queues) is checked on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

from study_contract import protocol
from study_contract.store.catalog import tuning_studies
from study_contract.store.claims import claim
from study_contract.store.storage import open_storage
from tests.conftest import create_tiny_study, trials_of
from worker.config import WorkerConfig
from worker.db import Retrier
from worker.outcomes import Outcome, TrainingResult
from worker.shutdown import ShutdownFlag
from worker.trial_runner import run_trial
from worker.trial_session import TrialSession

CURVE = [[128.0, -900.0], [256.0, -700.0]]


@pytest.fixture
def session(tiny_space: Path, tmp_path: Path) -> TrialSession:
    """The first trial of a two-trial study, claimed by this test."""
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    create_tiny_study(url, "s", tiny_space, 2, 256, "--no-baseline")
    storage = open_storage(url)
    (study,) = tuning_studies(storage.engine)
    mine = claim(storage, study.study_id, grace_period=120)
    assert mine is not None
    config = WorkerConfig(storage=url, heartbeat_interval=30, grace_period=120)
    return TrialSession(storage=storage, study=study, claim=mine, config=config, shutdown=ShutdownFlag(),
                        retry=Retrier(max_wait=1, deadline=10))  # fmt: skip


def _trials(session: TrialSession) -> list[optuna.trial.FrozenTrial]:
    return trials_of(session.storage.url, "s")


def _ending(outcome: Outcome, value: float | None) -> Any:
    seen: dict[str, Any] = {}

    def train(session: TrialSession, trial: optuna.Trial, params: dict[str, Any], seed: int) -> TrainingResult:
        seen.update(params=params, seed=seed, number=trial.number)
        return TrainingResult(outcome, value, 256, 1.5, 0.5, CURVE, relative_compute=1.25)

    return train, seen


def test_a_complete_training_tells_its_value_and_records_what_produced_it(session: TrialSession) -> None:
    train, seen = _ending(Outcome.COMPLETE, -700.0)
    assert run_trial(session, train) == Outcome.COMPLETE
    first, second = _trials(session)
    assert first.state == TrialState.COMPLETE and first.value == -700.0
    assert first.user_attrs[protocol.HYPERPARAMS] == seen["params"] and first.user_attrs[protocol.SEED] == seen["seed"]
    assert first.user_attrs[protocol.ENV_STEPS] == 256 and first.user_attrs[protocol.RELATIVE_COMPUTE] == 1.25
    assert set(seen["params"]) >= {"n_steps", "batch_size", "n_epochs"}  # sampled from the study's space
    assert second.state == TrialState.WAITING  # the rest of the budget is untouched


def test_a_pruned_training_is_told_pruned(session: TrialSession) -> None:
    train, _ = _ending(Outcome.PRUNED, -900.0)
    assert run_trial(session, train) == Outcome.PRUNED
    assert _trials(session)[0].state == TrialState.PRUNED


def test_a_handed_back_training_queues_the_same_configuration_again(session: TrialSession) -> None:
    train, seen = _ending(Outcome.HANDED_BACK, None)
    assert run_trial(session, train) == Outcome.HANDED_BACK
    first, second, retry = _trials(session)
    assert first.state == TrialState.FAIL and protocol.HANDED_BACK in first.user_attrs
    assert retry.state == TrialState.WAITING and retry.params == first.params
    assert retry.user_attrs[protocol.SEED] == seen["seed"] and second.state == TrialState.WAITING


def test_a_trainer_that_raises_fails_the_trial_with_the_reason_and_the_worker_goes_on(session: TrialSession) -> None:
    def train(*_: Any) -> TrainingResult:
        raise ValueError("the env exploded")

    assert run_trial(session, train) == Outcome.FAILED
    first, second = _trials(session)
    assert first.state == TrialState.FAIL and first.user_attrs[protocol.RETRY] is False
    assert first.user_attrs[protocol.FAIL_REASON].startswith("ValueError: the env exploded (at test_trial_runner.py:")
    assert second.state == TrialState.WAITING


def test_a_shutdown_before_training_releases_the_trial_untrained(session: TrialSession) -> None:
    called = []

    def train(*args: Any) -> TrainingResult:
        called.append(args)
        return TrainingResult(Outcome.COMPLETE, 1.0, 256, 1.0, 0.0, CURVE)

    session.shutdown.request()
    assert run_trial(session, train) == Outcome.RELEASED
    assert called == [] and [t.state for t in _trials(session)] == [TrialState.WAITING, TrialState.WAITING]


def test_a_study_deleted_while_training_takes_nothing_and_keeps_no_file(session: TrialSession, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    session.artifact_store = FileSystemArtifactStore(str(store))
    (tmp_path / "learning_curve.csv").write_text("env_steps,mean_return\n")

    def train(session: TrialSession, trial: optuna.Trial, *_: Any) -> TrainingResult:
        session.upload(trial, tmp_path / "learning_curve.csv", "text/csv")
        assert len(list(store.iterdir())) == 1  # positive control: the upload reached the store
        optuna.delete_study(study_name="s", storage=session.storage)
        return TrainingResult(Outcome.COMPLETE, 1.0, 256, 1.0, 0.0, CURVE)

    assert run_trial(session, train) == Outcome.DROPPED
    assert optuna.get_all_study_names(session.storage) == [] and list(store.iterdir()) == []
