"""One study read once: one best-trial rule and one budget account, the same in ``list``, ``show`` and the view."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from study_contract import protocol
from study_contract.algorithms import algorithm
from study_contract.store.catalog import summarise
from study_contract.store.storage import open_storage
from study_contract.store.study_view import load_study
from tests.conftest import create_tiny_study, run_admin


def _finish(storage: optuna.storages.RDBStorage, study_id: int, number: int, state: TrialState,
            value: float | None = None, **attrs: Any) -> None:  # fmt: skip
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
    for key, attr in attrs.items():
        storage.set_trial_user_attr(trial_id, key, attr)
    storage.set_trial_state_values(trial_id, state=state, values=None if value is None else [value])


def test_a_study_view_ranks_ties_and_counts_slots_as_the_summary_does(tmp_path: Path, tiny_space: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.sqlite3'}"
    create_tiny_study(url, "bystander", tiny_space, 2, 256, "--no-baseline")
    create_tiny_study(url, "ledger", tiny_space, 6, 256, "--no-baseline")
    storage = open_storage(url)
    study_id = storage.get_study_id_from_name("ledger")
    definition = load_study(storage, "ledger").definition
    params = {"hyperparams": algorithm("ppo").baseline(definition.space, definition.n_envs)}
    # Trials 0 and 1 tie; the earlier one is the best everywhere, its compute is the one `list` shows.
    _finish(storage, study_id, 0, TrialState.COMPLETE, 5.0, relative_compute=0.5, **params)
    _finish(storage, study_id, 1, TrialState.COMPLETE, 5.0, relative_compute=2.0, **params)
    _finish(storage, study_id, 2, TrialState.FAIL, retry=False, fail_reason="diverged")  # its slot is used up
    _finish(storage, study_id, 3, TrialState.FAIL, retry=True, fail_reason="handed back")  # owed a retry
    _finish(storage, study_id, 4, TrialState.PRUNED, 1.0)

    view = load_study(storage, "ledger")
    assert view.best is not None and view.best.number == 0
    assert [view.done(t) for t in view.trials] == [True, True, True, False, True]
    summary = view.summary
    assert (summary.done, summary.lost, summary.waiting, summary.to_run) == (4, 1, 1, 2)
    assert summary.best_value == view.best.value and summary.best_relative_compute == 0.5
    assert summary == next(s for s in summarise(storage.engine) if s.name == "ledger")  # one study's row, as listed

    shown = json.loads(run_admin("show", "ledger", "--format", "json", "--storage", url).stdout)
    assert shown["best"]["number"] == 0 and shown["summary"]["done"] == 4
    best = json.loads(run_admin("best", "ledger", "--format", "json", "--storage", url).stdout)
    assert best["trial"] == 0 and best["cost"]["relative_compute"] == 0.5
    assert view.trial(3) is not None and protocol.FAIL_REASON in view.started(3).attrs
