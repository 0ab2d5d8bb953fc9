"""The worker loop's steps in this process, with a fake clock where timing matters."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import sqlalchemy

from tests.conftest import create_tiny_study, trials_of
from worker import loop
from worker.callbacks import DrainOnShutdown, TrainingClock
from worker.config import WorkerConfig
from worker.db import DatabaseUnavailable, Retrier
from worker.shutdown import ShutdownFlag


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_worker(url: str, clock: FakeClock | None = None, **settings: Any) -> loop.Worker:
    config = WorkerConfig(storage=url, heartbeat_interval=1, grace_period=8, poll_interval=0.1, **settings)
    shutdown = ShutdownFlag()
    storage = loop.connect(config, Retrier(max_wait=1, deadline=10, stop=shutdown.event))
    return loop.Worker(config, storage, shutdown, clock=clock or FakeClock())


def test_run_once_runs_one_trial_then_reports_nothing_to_do(storage_url: str, tiny_space: Path, tmp_path: Path) -> None:
    create_tiny_study(storage_url, "steps", tiny_space, 1, 256)
    health = tmp_path / "alive"
    worker = make_worker(storage_url, health_file=str(health))
    assert worker.run_once() is True and worker.outcomes == ["complete"]
    health.unlink()
    assert worker.run_once() is False
    assert health.exists()  # an idle poll shows the worker alive
    assert worker.is_idle() is True


def test_is_idle_waits_for_work_but_not_for_paused_studies(storage_url: str, tiny_space: Path) -> None:
    from study_admin.cli import main as admin

    worker = make_worker(storage_url)
    assert worker.is_idle() is True  # an empty database
    create_tiny_study(storage_url, "later", tiny_space, 1, 256)
    assert worker.is_idle() is False
    assert admin(["pause", "later", "--storage", storage_url]) == 0
    assert worker.is_idle() is True
    assert worker.run_once() is False  # paused: nothing is handed out


def test_is_idle_waits_while_another_worker_creates_the_follow_up(storage_url: str, tiny_space: Path) -> None:
    from study_contract.engine.confirmation import confirmation_name
    from study_contract.engine.creation import study_created
    from study_contract.store.locks import study_lock

    create_tiny_study(storage_url, "tuned", tiny_space, 2, 256, "--confirm", "--confirm-top", "1", "--test-seeds", "1")
    worker = make_worker(storage_url)
    assert worker.run_once() is True and worker.run_once() is True  # the baseline and one tuned trial: done
    (study,) = worker.studies()
    with study_lock(worker.storage.engine, study.study_id):  # another worker, creating the confirmation
        assert worker.run_once() is False
        assert worker.is_idle() is False
    assert worker.run_once() is True  # the lock is free again and nobody created it: this worker does
    assert study_created(worker.storage, confirmation_name("tuned"))


def test_is_idle_waits_for_a_follow_up_nobody_has_created_yet(storage_url: str, tiny_space: Path) -> None:
    """Another worker finished the study between this worker's last claim and its idle check: the
    confirmation is due, so there is work coming."""
    from study_contract.engine.confirmation import confirmation_name
    from study_contract.engine.creation import study_created

    create_tiny_study(storage_url, "handed", tiny_space, 2, 256, "--confirm", "--confirm-top", "1", "--test-seeds", "1")
    finisher, idler = make_worker(storage_url), make_worker(storage_url)
    assert finisher.run_once() is True and finisher.run_once() is True  # the budget is done
    assert idler.is_idle() is False
    assert idler.run_once() is True  # it creates the confirmation
    assert study_created(idler.storage, confirmation_name("handed"))
    assert idler.is_idle() is False  # and its runs are waiting


def test_each_study_is_looked_after_at_most_once_per_interval(
    storage_url: str, tiny_space: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_tiny_study(storage_url, "looked", tiny_space, 1, 256)
    calls: list[float] = []
    real = loop.maintain
    clock = FakeClock()

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(clock.now)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "maintain", counted)
    worker = make_worker(storage_url, clock)
    (study,) = worker.studies()
    for _ in range(3):
        worker.maintain(study)
    assert calls == [1000.0]
    clock.now += worker.maintenance_interval - 0.01
    worker.maintain(study)
    clock.now += 0.02
    worker.maintain(study)
    assert calls == [1000.0, 1000.0 + worker.maintenance_interval + 0.01]
    worker.maintain(study, force=True)
    assert len(calls) == 3


def test_one_studys_trouble_is_logged_once_and_the_next_study_is_served(
    storage_url: str, tiny_space: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    create_tiny_study(storage_url, "cursed", tiny_space, 1, 256)
    create_tiny_study(storage_url, "fine", tiny_space, 1, 256)
    real = loop.claim

    def claim(storage: Any, study_id: int, *, grace_period: float) -> Any:
        if study_id == worker.storage.get_study_id_from_name("cursed"):
            raise sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))
        return real(storage, study_id, grace_period=grace_period)

    monkeypatch.setattr(loop, "claim", claim)
    worker = make_worker(storage_url)
    assert worker.run_once() is True and worker.run_once() is False and worker.run_once() is False
    assert [t.state.name for t in trials_of(storage_url, "fine")] == ["COMPLETE"]
    warnings = [r.getMessage() for r in caplog.records if "cursed" in r.getMessage()]
    assert warnings == ["study cursed: claiming a trial failed: duplicate key"]


class _Evaluator(SimpleNamespace):
    pass


def _drain(steps_done: int, seconds: float, drain_seconds: float) -> DrainOnShutdown:
    """A drain decision after ``steps_done`` env-steps in ``seconds`` of training, 1000 steps to go."""
    clock = FakeClock()
    evaluator = _Evaluator(eval_seconds=0.0, curve=[], eval_freq=10_000)
    training = TrainingClock(cast(Any, evaluator), steps_done + 1000, clock=clock)
    training.model = cast(Any, SimpleNamespace(get_env=lambda: SimpleNamespace(num_envs=1)))
    clock.now += seconds
    training.num_timesteps = steps_done
    flag = ShutdownFlag()
    flag.request()
    drain = DrainOnShutdown(flag, training, drain_seconds)
    drain.num_timesteps = steps_done
    drain._on_step()
    return drain


def test_the_drain_decision_uses_the_measured_rate() -> None:
    # 500 steps in 5 s: 100 steps/s, so the 1000 steps left take 10 s (+ one evaluation of 0 s).
    assert _drain(500, 5.0, drain_seconds=9.0).decision == "hand back"
    assert _drain(500, 5.0, drain_seconds=11.0).decision == "finish"
    assert _drain(500, 5.0, drain_seconds=9.0).clock.seconds_left() == pytest.approx(10.0)


def test_the_retry_deadline_ends_an_outage_on_a_fake_clock() -> None:
    clock = FakeClock()

    class Stop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            clock.now += timeout or 0
            return False

    attempts: list[float] = []

    def down() -> None:
        attempts.append(clock.now)
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    retry = Retrier(max_wait=4, deadline=20, stop=Stop(), clock=clock)
    with pytest.raises(
        DatabaseUnavailable, match=r"database unavailable for 19 s during listing \(connection refused\)"
    ):
        retry("listing", down)
    assert [t - 1000.0 for t in attempts] == [0, 1, 3, 7, 11, 15, 19]  # back-off 1, 2, 4, then capped at 4

    def refused() -> None:
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception('password authentication failed for "w"'))

    attempts.clear()
    with pytest.raises(sqlalchemy.exc.OperationalError):
        retry("connecting", refused)  # permanent: no waiting at all
    assert clock.now == 1019.0
