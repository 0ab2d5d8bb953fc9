"""Exports a configuration runs as-is elsewhere: an RL Zoo hyperparameter file, a plain SB3 script, JSON.

- ``zoo``: ``python -m rl_zoo3.train --algo ALGO --env ENV --conf-file FILE`` runs it unchanged. The Zoo
  spells a linear schedule ``lin_<rate>`` and a constant one as the number; it has no cosine, so a cosine
  schedule is exported as the linear decay (both start at the rate and end at 0), with a comment.
- ``python``: a standalone script that needs only the algorithm's library and Gymnasium, with the
  schedule as code (the very function the worker trained with), ``VecNormalize``, the seed and the timesteps:
  the module ``study_admin best --format python`` prints (``ALGORITHM``, ``POLICY``, ``make_env``,
  ``kwargs``), with a ``main`` that trains and saves.
- ``json``: what ``study_admin best --format json`` prints.

Both render the configuration's recipe (``study_contract/algorithms``), the same data training builds
from. Everything here comes from the database, so every value reaches the generated text through
``repr``, ``int``, ``float`` or YAML's own dumper, never pasted: a task id or a seed cannot become code.
"""

from __future__ import annotations

import json

import yaml

from study_admin.models import Configuration
from study_contract.algorithms import ACTIVATION_CLASSES, Recipe, algorithm
from study_contract.protocol import VERSION_TEXT
from study_contract.schedules import SCHEDULES, ZOO_PREFIXES, source


def _policy_kwargs(recipe: Recipe, module: str, activation: str) -> str:
    """``policy_kwargs`` as Python source, the activation written as ``<module>.<activation>``."""
    extras = "".join(f", {name}={value!r}" for name, value in recipe.policy_extras.items())
    network = recipe.net_arch
    layers = ({str(k): [int(n) for n in v] for k, v in network.items()} if isinstance(network, dict)
              else [int(n) for n in network])  # fmt: skip
    return f"dict(net_arch={layers!r}, activation_fn={module}.{activation}{extras})"


def provenance_note(config: Configuration) -> str:
    """A comment naming the versions the trial was trained with (each checked against ``VERSION_TEXT`` when read,
    and again here: it is pasted into code)."""
    recorded = config.provenance or {}
    versions = {k: v for k, v in (recorded.get("versions") or {}).items()
                if VERSION_TEXT.fullmatch(k) and VERSION_TEXT.fullmatch(v)}  # fmt: skip
    if not versions:
        return "# Its worker recorded no versions (a release before provenance)."
    threads = recorded.get("threads")
    on = f" on {int(threads)} torch thread{'s' if threads != 1 else ''}" if isinstance(threads, int) else ""
    return f"# Trained with {', '.join(f'{k} {v}' for k, v in sorted(versions.items()))}{on}."


def to_zoo(config: Configuration) -> str:
    """An RL Zoo hyperparameter file (``--conf-file``) for ``config``."""
    recipe = config.recipe
    schedule, rate = recipe.lr_schedule, float(recipe.learning_rate)
    notes = [
        f"# Exported by locomotion-tuner from study {config.study!r}, trial {int(config.trial)}.",
        *(
            f"# Run: python -m rl_zoo3.train --algo {config.algo!r} --env {task!r} --conf-file THIS_FILE"
            for task in config.tasks or [config.env_id]
        ),
        provenance_note(config),
    ]
    if recipe.library != algorithm(config.algo).library:
        notes.append(f"# Tuned with {recipe.library}; RL Zoo trains these hyperparameters with Stable-Baselines3.")
    if schedule not in ZOO_PREFIXES:
        notes.append(
            f"# lr_schedule {schedule!r} has no RL Zoo spelling: exported as the linear decay lin_{rate!r}, its "
            "closest (both start at the rate and end at 0)."
        )
    entry = {
        "n_timesteps": int(config.timesteps),
        "policy": config.policy,
        "n_envs": int(config.n_envs),
        "normalize": recipe.normalize,
        "learning_rate": rate if schedule == "constant" else f"{ZOO_PREFIXES.get(schedule, 'lin_')}{rate!r}",
        **recipe.kwargs,
        "policy_kwargs": _policy_kwargs(recipe, "nn", ACTIVATION_CLASSES[recipe.activation]),
    }
    if recipe.action_noise is not None:
        entry |= {"noise_type": recipe.action_noise, "noise_std": float(recipe.noise_std or 0.0)}
    return "\n".join(notes) + "\n" + yaml.safe_dump({task: entry for task in config.tasks or [config.env_id]},
                                                     sort_keys=False)  # fmt: skip


CONFIGURATION_TEMPLATE = '''"""The configuration locomotion-tuner recommends for study {study!r} (trial {trial!r}), as
plain {library} keyword arguments; needs only {library} and gymnasium (plus MuJoCo for MuJoCo tasks).

    from {module_name} import ALGORITHM, POLICY, kwargs, make_env
    model = ALGORITHM(POLICY, make_env(), **kwargs)
"""
{provenance_note}

import functools
import math  # noqa: F401 - used by some learning-rate schedules

import gymnasium  # noqa: F401 - sizes action noises
import numpy as np  # noqa: F401 - used by action noises
import {activation_module}
from {library} import {class_name}
from stable_baselines3.common import noise  # noqa: F401 - used by action noises
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

STUDY = {study!r}
TRIAL = {trial!r}
ENV_ID = {env_id!r}
N_ENVS = {n_envs!r}
NORMALIZE = {normalize!r}
"""Observations (and rewards) normalised by a VecNormalize wrapper, as in tuning."""
TIMESTEPS = {timesteps!r}
SEED = {seed!r}
ALGORITHM = {class_name}
POLICY = {policy!r}


{schedule_source}

def make_env(seed=None):
    """The training environments as tuned: N_ENVS copies of ENV_ID, normalised when NORMALIZE."""
    env = make_vec_env(ENV_ID, n_envs=N_ENVS, seed=seed)
    return VecNormalize(env) if NORMALIZE else env

{noise_setup}
kwargs = dict(
    learning_rate=functools.partial({schedule_function}, {rate!r}),
{kwargs}    policy_kwargs={policy_kwargs},
)
'''

NOISE_SETUP = "n_actions = int(np.prod(gymnasium.make(ENV_ID).action_space.shape or (1,)))\n"

SCRIPT_TEMPLATE = '''

def main() -> None:
    """Re-trains the configuration above: python train.py [--timesteps N] [--seed S] [--out model.zip]"""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timesteps", type=int, default=TIMESTEPS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", default="model.zip", help="where to save the trained model")
    args = parser.parse_args()
    env = make_env(args.seed)
    model = ALGORITHM(POLICY, env, seed=args.seed, verbose=1, **kwargs)
    model.learn(args.timesteps)
    model.save(args.out)
    if isinstance(env, VecNormalize):
        env.save(args.out.removesuffix(".zip") + "_vecnormalize.pkl")


if __name__ == "__main__":
    main()
'''


def to_python(config: Configuration, *, module_name: str = "best") -> str:
    """``config`` as a Python module: ``ALGORITHM``, ``POLICY``, ``make_env()`` and ``kwargs``, ready to build the
    model with; ``module_name`` is what its docstring imports it as."""
    recipe = config.recipe
    kwargs = "".join(f"    {name}={value!r},\n" for name, value in recipe.kwargs.items())
    if recipe.noise_class is not None:
        kwargs += (f"    action_noise=noise.{recipe.noise_class}(mean=np.zeros(n_actions), "
                   f"sigma={float(recipe.noise_std or 0.0)!r} * np.ones(n_actions)),\n")  # fmt: skip
    return CONFIGURATION_TEMPLATE.format(
        module_name=module_name,
        provenance_note=provenance_note(config),
        library=recipe.library,
        class_name=recipe.class_name,
        trial=int(config.trial),
        study=str(config.study),
        env_id=str(config.env_id),
        timesteps=int(config.timesteps),
        seed=int(config.seed or 0),
        n_envs=int(config.n_envs),
        normalize=bool(recipe.normalize),
        policy=config.policy,
        schedule_source=source(recipe.lr_schedule),
        schedule_function=SCHEDULES[recipe.lr_schedule].__name__,
        rate=float(recipe.learning_rate),
        kwargs=kwargs,
        noise_setup=NOISE_SETUP if recipe.noise_class is not None else "",
        activation_module=recipe.activation_module,
        policy_kwargs=_policy_kwargs(recipe, recipe.activation_module, recipe.activation_class),
    )


def to_script(config: Configuration) -> str:
    """A standalone training script for ``config``: the configuration module with a ``main``."""
    return to_python(config, module_name="train") + SCRIPT_TEMPLATE


def export(config: Configuration, fmt: str) -> str:
    if fmt == "zoo":
        return to_zoo(config)
    if fmt == "python":
        return to_script(config)
    return json.dumps(config.to_dict(), indent=2, default=str) + "\n"
