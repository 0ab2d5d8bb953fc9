"""The contract's names and their errors, apart from the definition so that the campaign rules and the trial
protocol can use them without importing it: what a study is (its stage), the names a study and a task may
have, and the two errors every reader of the contract raises."""

from __future__ import annotations

import re
from enum import StrEnum

STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# A stored name: a study name, then the suffixes of confirmations and campaign stages (":confirm", ":2-coarse").
STORED_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}(?::[A-Za-z0-9][A-Za-z0-9._-]{0,39}){0,4}")
# Gymnasium's ids, [namespace/]name[-vN], in ASCII: a task id also reaches exports and file names. No ':': Gymnasium
# reads "module:Env-v0" as an order to import the module, on every worker and in every exported script.
ENV_ID = re.compile(r"(?:[A-Za-z0-9_-]{1,100}/)?[A-Za-z0-9_.-]{1,100}")


class Stage(StrEnum):
    """What a study is: sampled trials, a confirmation of a tuning study's winners, one task's instances of a
    tuning study's configurations, or one of the guide's four campaign steps (``study_contract/campaign.py`` holds
    their rules)."""

    TUNING = "tuning"
    CONFIRMATION = "confirmation"
    INSTANCES = "instances"
    """One task's instances of a tuning study's configurations: each slot one configuration on one seed."""
    BASELINE = "baseline"
    COARSE = "coarse"
    SCHEDULE = "schedule"
    FINETUNE = "finetune"


class DefinitionError(ValueError):
    """A study definition that cannot be run; the message names the value and what is accepted."""


class StudyError(ValueError):
    """A study that does not exist, already exists, or has nothing to show."""
