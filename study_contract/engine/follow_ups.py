"""What follows a study once its budget is done: the next campaign stage (or, after the last, its
confirmation), or the confirmation a tuning study asked for. The worker loop creates it, exactly once."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import optuna

from study_contract.definition import StudyDefinition
from study_contract.engine.confirmation import confirmation_due, confirmation_name, create_confirmation
from study_contract.engine.stages import advance, follow_up_name
from study_contract.names import Stage


@dataclass(frozen=True)
class FollowUp:
    name: str | None
    """The study that follows (None: a campaign's last stage with no confirmation)."""
    create: Callable[[optuna.storages.RDBStorage, str], str | None]
    """``(storage, finished study) ->`` the created study's name, or None when another worker holds the lock."""


def follow_up_of(definition: StudyDefinition, name: str) -> FollowUp | None:
    """What follows study ``name`` when its budget is done; None when nothing does."""
    if definition.campaign is not None and definition.stage != Stage.CONFIRMATION:
        return FollowUp(follow_up_name(definition, name), functools.partial(advance, wait=False))
    if confirmation_due(definition):
        return FollowUp(confirmation_name(name), functools.partial(create_confirmation, wait=False))
    return None
