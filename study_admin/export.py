"""Exports a configuration runs as-is elsewhere: an RL Zoo hyperparameter file, a plain SB3 script, JSON.

- ``zoo``: ``python -m rl_zoo3.train --algo ALGO --env ENV --conf-file FILE`` runs it unchanged. The Zoo
  spells a linear schedule ``lin_<rate>`` and a constant one as the number; it has no cosine, so a cosine
  schedule is exported as the linear decay (both start at the rate and end at 0), with a comment.
- ``python``: a standalone script that needs only Stable-Baselines3 and Gymnasium, with the schedule as
  code (the very function the worker trained with), ``VecNormalize``, the seed and the timesteps.
- ``json``: what ``study_admin best --format json`` prints.

Everything here comes from the database, so every value reaches the generated text through ``repr``,
``int``, ``float`` or YAML's own dumper, never pasted: a task id or a seed cannot become code.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from study_contract.algorithms import NET_ARCHS
from study_contract.schedules import ZOO_PREFIXES, source

ACTIVATION_CLASSES = {"tanh": "Tanh", "relu": "ReLU"}


def _net_arch(config: dict[str, Any]) -> str:
    layers = NET_ARCHS[config["hyperparams"]["net_arch"]]
    if config["algo"] == "ppo":  # separate actor and critic networks, as SB3 builds them from a list
        return f"dict(pi={layers}, vf={layers})"
    return str(layers)


def _policy_kwargs(config: dict[str, Any], torch_nn: str) -> str:
    activation = ACTIVATION_CLASSES[config["hyperparams"]["activation"]]
    return f"dict(net_arch={_net_arch(config)}, activation_fn={torch_nn}.{activation})"


def to_zoo(config: dict[str, Any]) -> str:
    """An RL Zoo hyperparameter file (``--conf-file``) for ``config`` (the output of ``best``)."""
    kwargs = {k: v for k, v in config["kwargs"].items() if k not in ("policy_kwargs", "learning_rate")}
    schedule, rate = config["learning_rate_schedule"], float(config["kwargs"]["learning_rate"])
    notes = [
        f"# Exported by locomotion-tuner from study {config['study']!r}, trial {int(config['trial'])}.",
        f"# Run: python -m rl_zoo3.train --algo {config['algo']!r} --env {config['env_id']!r} --conf-file THIS_FILE",
    ]
    if schedule not in ZOO_PREFIXES:
        notes.append(
            f"# lr_schedule {schedule!r} has no RL Zoo spelling: exported as the linear decay lin_{rate!r}, its "
            "closest (both start at the rate and end at 0)."
        )
    entry = {
        "n_timesteps": int(config["timesteps"]),
        "policy": config["policy"],
        "n_envs": int(config["n_envs"]),
        "normalize": bool(config["normalize_observations"]),
        "learning_rate": rate if schedule == "constant" else f"{ZOO_PREFIXES.get(schedule, 'lin_')}{rate!r}",
        **kwargs,
        "policy_kwargs": _policy_kwargs(config, "nn"),
    }
    return "\n".join(notes) + "\n" + yaml.safe_dump({config["env_id"]: entry}, sort_keys=False)


PYTHON_TEMPLATE = '''"""Re-trains a configuration tuned by locomotion-tuner (STUDY and TRIAL below); needs only
stable-baselines3 and gymnasium (plus MuJoCo for MuJoCo tasks).

    python train.py [--timesteps N] [--seed S] [--out model.zip]
"""

import argparse
import functools
import math  # noqa: F401 - used by some learning-rate schedules

import torch
from stable_baselines3 import {sb3_class}
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

STUDY = {study!r}
TRIAL = {trial!r}
ENV_ID = {env_id!r}


{schedule_source}

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timesteps", type=int, default={timesteps!r})
    parser.add_argument("--seed", type=int, default={seed!r})
    parser.add_argument("--out", default="model.zip", help="where to save the trained model")
    args = parser.parse_args()
    env = make_vec_env(ENV_ID, n_envs={n_envs!r}, seed=args.seed)
    if {normalize!r}:
        env = VecNormalize(env)
    model = {sb3_class}(
        {policy!r},
        env,
        learning_rate=functools.partial({schedule_function}, {rate!r}),
{kwargs}        policy_kwargs={policy_kwargs},
        seed=args.seed,
        verbose=1,
    )
    model.learn(args.timesteps)
    model.save(args.out)
    if isinstance(env, VecNormalize):
        env.save(args.out.removesuffix(".zip") + "_vecnormalize.pkl")


if __name__ == "__main__":
    main()
'''


def to_python(config: dict[str, Any]) -> str:
    """A standalone SB3 training script for ``config`` (the output of ``best``)."""
    from study_contract.schedules import SCHEDULES

    schedule = config["learning_rate_schedule"]
    kwargs = {k: v for k, v in config["kwargs"].items() if k not in ("policy_kwargs", "learning_rate")}
    return PYTHON_TEMPLATE.format(
        trial=int(config["trial"]),
        study=str(config["study"]),
        sb3_class=config["sb3_class"],
        env_id=str(config["env_id"]),
        timesteps=int(config["timesteps"]),
        seed=int(config.get("seed") or 0),
        n_envs=int(config["n_envs"]),
        normalize=bool(config["normalize_observations"]),
        policy=config["policy"],
        schedule_source=source(schedule),
        schedule_function=SCHEDULES[schedule].__name__,
        rate=float(config["kwargs"]["learning_rate"]),
        kwargs="".join(f"        {k}={v!r},\n" for k, v in kwargs.items()),
        policy_kwargs=_policy_kwargs(config, "torch.nn"),
    )


def export(config: dict[str, Any], fmt: str) -> str:
    if fmt == "zoo":
        return to_zoo(config)
    if fmt == "python":
        return to_python(config)
    return json.dumps(config, indent=2, default=str) + "\n"
