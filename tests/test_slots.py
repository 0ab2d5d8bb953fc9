"""Budget slots under contention, on both storages: every trial is claimed once, never more."""

from __future__ import annotations

import threading
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import TrialState

from study_contract.store.claims import claim
from study_contract.store.storage import open_storage
from tests.conftest import create_tiny_study
from worker.slots import hand_back


def test_racing_claims_take_each_trial_exactly_once(storage_url: str, tiny_space: Path) -> None:
    create_tiny_study(storage_url, "race", tiny_space, 40, 256)
    claimed: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def claimer() -> None:
        storage = open_storage(storage_url)  # one storage (and connection pool) per worker
        study_id = storage.get_study_id_from_name("race")
        start.wait()
        while (mine := claim(storage, study_id, grace_period=120)) is not None:
            with lock:
                claimed.append(mine.trial_id)

    threads = [threading.Thread(target=claimer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 40 and len(set(claimed)) == 40
    trials = optuna.load_study(study_name="race", storage=storage_url).get_trials()
    assert len(trials) == 40 and all(t.state == TrialState.RUNNING for t in trials)
    storage = open_storage(storage_url)
    with storage.engine.connect() as conn:  # each claim wrote its first heartbeat in the same transaction
        beats = conn.execute(sqlalchemy.text("SELECT COUNT(DISTINCT trial_id) FROM trial_heartbeats")).scalar()
    assert beats == 40


def test_a_handed_back_trial_is_retried_with_its_configuration(storage_url: str, tiny_space: Path) -> None:
    create_tiny_study(storage_url, "back", tiny_space, 1, 256, "--no-baseline")
    storage = open_storage(storage_url)
    study = optuna.load_study(study_name="back", storage=storage)
    mine = claim(storage, storage.get_study_id_from_name("back"), grace_period=120)
    assert mine is not None
    trial_id = mine.trial_id
    study.get_trials()
    trial = optuna.Trial(study, trial_id)
    lr = trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True)
    trial.set_user_attr("seed", 7)
    trial.set_user_attr("eval_curve", [[128, -1000.0]])
    hand_back(storage, storage.get_study_id_from_name("back"), trial_id, "worker shut down")
    first, retry = optuna.load_study(study_name="back", storage=storage_url).get_trials()
    assert first.state == TrialState.FAIL and first.user_attrs["handed_back"] == "worker shut down"
    assert first.user_attrs["retry"] is True
    assert retry.state == TrialState.WAITING and retry.system_attrs["failed_trial"] == 0
    assert retry.params == {"learning_rate": lr}
    assert retry.user_attrs == {"seed": 7}  # the same seed, none of the dead run's results
