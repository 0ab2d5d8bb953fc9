"""Studies that cannot work stop themselves instead of burning their budget in minutes.

SAC on a discrete-action task, a task whose dependency is missing, a space that always diverges: every
trial fails the same way within seconds. After ``pause_after_failures`` consecutive trials fail for the
same reason, with no trial of the study ever succeeding, the study pauses itself and says why;
``study_admin resume`` clears it.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime

import optuna
from optuna.trial import TrialState

from study_contract import protocol
from study_contract.definition import PAUSED_ATTR, PAUSED_REASON_ATTR
from study_contract.protocol import FailureKind
from study_contract.store.catalog import TuningStudy, failures
from study_contract.store.trials import views

log = logging.getLogger(__name__)


def reason_key(reason: str) -> str:
    """A failure reason without its numbers and code location: "diverged at step 51" = "... step 77"."""
    return re.sub(r"\d+", "#", reason.split(" (at ", 1)[0])


def pause_if_failing(storage: optuna.storages.RDBStorage, study: TuningStudy) -> bool:
    """Pause ``study`` if its last finished trials all failed the same way and none ever succeeded."""
    definition = study.definition
    if definition is None or definition.pause_after_failures == 0:
        return False
    trials = views(
        storage.get_all_trials(
            study.study_id, deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        )
    )
    if any(t.state != "FAIL" for t in trials):
        return False
    with storage.engine.connect() as conn:
        kinds = failures(conn, study.study_id).get(study.study_id, {})
    final = [t for t in trials if t.get(protocol.FAIL_REASON) and kinds.get(t.number) == FailureKind.FINAL]
    final.sort(key=lambda t: (t.completed is None, t.completed or datetime.min, t.number))
    recent = final[-definition.pause_after_failures :]
    if len(recent) < definition.pause_after_failures:
        return False
    keys = {reason_key(t.get(protocol.FAIL_REASON)) for t in recent}
    if len(keys) != 1:
        return False
    reason = (
        f"paused after {len(recent)} consecutive trials failed the same way and none succeeded: "
        f"{recent[-1].get(protocol.FAIL_REASON)}"
    )
    storage.set_study_user_attr(study.study_id, PAUSED_REASON_ATTR, reason)
    storage.set_study_user_attr(study.study_id, PAUSED_ATTR, True)
    log.warning("study %s %s", study.name, reason)
    return True
