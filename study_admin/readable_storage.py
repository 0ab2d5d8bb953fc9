"""The dashboard's storage: every study whose rows can be read, whatever one other study holds.

Optuna's ``get_all_studies`` decodes every study's attributes in one go, and optuna-dashboard reads it for its
study list and for every study page: one attribute that is not JSON, which the worker role can write, answered
HTTP 500 for every study in the fleet. Here a study that cannot be read is left out (and logged) instead.
"""

from __future__ import annotations

import logging

import optuna
from optuna.study._frozen import FrozenStudy  # what get_all_studies returns; Optuna does not export it

from study_contract.store.catalog import UNREADABLE_ROW, study_names

log = logging.getLogger(__name__)


class ReadableStudies(optuna.storages.RDBStorage):
    def get_all_studies(self) -> list[FrozenStudy]:
        try:
            return super().get_all_studies()
        except UNREADABLE_ROW:
            pass
        readable = []
        for name in study_names(self.engine):
            try:
                study_id = self.get_study_id_from_name(name)
                readable.append(FrozenStudy(name, None, self.get_study_user_attrs(study_id),
                                            self.get_study_system_attrs(study_id), study_id,
                                            directions=self.get_study_directions(study_id)))  # fmt: skip
            except UNREADABLE_ROW as exc:
                log.warning("study %r left out: it cannot be read (%s)", name, f"{type(exc).__name__}: {exc}"[:200])
        return readable
