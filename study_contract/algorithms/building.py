"""A recipe's objects: the class, the schedule, the activation and the action noise (imports torch or JAX).

Only training calls this; ``study_admin`` renders the same recipe as text instead (``study_admin/export.py``).
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

from study_contract.algorithms.entry import NOISE_MODULE, Recipe
from study_contract.schedules import make_schedule


def materialise(recipe: Recipe, action_space: Any) -> tuple[type, dict[str, Any]]:
    """The class named by ``recipe`` and its constructor keyword arguments, without policy, env and seed."""
    import numpy as np

    kwargs = dict(recipe.kwargs)
    kwargs["learning_rate"] = make_schedule(recipe.lr_schedule, recipe.learning_rate)
    activation = getattr(importlib.import_module(recipe.activation_module), recipe.activation_class)
    kwargs["policy_kwargs"] = {"net_arch": copy.deepcopy(recipe.net_arch), "activation_fn": activation,
                               **recipe.policy_extras}  # fmt: skip
    if recipe.noise_class is not None:
        n_actions = int(np.prod(action_space.shape))
        sigma = float(recipe.noise_std or 0.0) * np.ones(n_actions)
        noise = getattr(importlib.import_module(NOISE_MODULE), recipe.noise_class)
        kwargs["action_noise"] = noise(mean=np.zeros(n_actions), sigma=sigma)
    return getattr(importlib.import_module(recipe.library), recipe.class_name), kwargs
