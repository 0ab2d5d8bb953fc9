"""``study_admin``: define, inspect, pause and delete tuning studies.

Every command reads the storage from ``--storage`` or ``DATABASE_URL``; with neither, it uses the
embedded SQLite file under ``--data-dir`` / ``TUNER_DATA_DIR``. Exit codes: 0 success, 1 database
unusable, 2 bad input.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from study_admin.definition import ALGOS, PRUNERS, SAMPLERS, DefinitionError, StudyDefinition
from study_admin.space import DEFAULT_SPACES, SpaceError, fit_rollout_to_budget, load_space_file

EXIT_DB = 1
EXIT_INPUT = 2


class InputError(ValueError):
    """Bad input on the command line."""


def _storage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        default=os.environ.get("DATABASE_URL"),
        help="database URL, e.g. postgresql+psycopg2://user:pass@host:5432/db "
        "[env: DATABASE_URL; default: the embedded SQLite file]",
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("TUNER_DATA_DIR"),
        help="directory of the embedded storage when no URL is given "
        "[env: TUNER_DATA_DIR; default: ~/.local/share/locomotion-tuner]",
    )


def _format_option(parser: argparse.ArgumentParser, choices: tuple[str, ...]) -> None:
    parser.add_argument("--format", choices=choices, default=choices[0], help="output format")


def _int_at_least(minimum: int, wording: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} {wording}")
        return value

    return parse


_positive_int = _int_at_least(1, "must be a positive integer")
_non_negative_int = _int_at_least(0, "must be >= 0")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="study_admin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    create = commands.add_parser("create", help="define a study; workers pick it up at once")
    _storage_options(create)
    create.add_argument("--algo", required=True, help=f"one of {list(ALGOS)}")
    create.add_argument("--env", required=True, dest="env_id", help="Gymnasium id, e.g. Ant-v5")
    create.add_argument("--name", help="study name (default: ALGO-ENV, made unique)")
    create.add_argument("--n-trials", type=_positive_int, default=100, help="trials in the whole study (default 100)")
    create.add_argument("--timesteps", type=_positive_int, default=1_000_000, help="env-steps per trial (default 1e6)")
    evals = create.add_mutually_exclusive_group()
    evals.add_argument("--eval-every", type=_positive_int, help="env-steps between evaluations")
    evals.add_argument("--n-evaluations", type=_positive_int, help="evaluations per trial (default 10)")
    create.add_argument("--eval-episodes", type=_positive_int, default=10, help="episodes per evaluation (default 10)")
    create.add_argument("--n-envs", type=_positive_int, default=1, help="training envs per trial (default 1)")
    create.add_argument("--sampler", default="tpe", help=f"one of {list(SAMPLERS)} (default tpe)")
    create.add_argument("--pruner", default="median", help=f"one of {list(PRUNERS)} (default median)")
    create.add_argument(
        "--pruner-startup-trials",
        type=_non_negative_int,
        default=5,
        help="median pruner: trials finished before pruning starts (default 5)",
    )
    create.add_argument(
        "--pruner-warmup-evals",
        type=_non_negative_int,
        default=1,
        help="median pruner: evaluations before a trial may be pruned (default 1)",
    )
    create.add_argument(
        "--seed", type=_non_negative_int, default=0, help="sampler seed; trial seeds are seed + trial number"
    )
    create.add_argument("--space", help="YAML file narrowing, widening or fixing parameters")
    create.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run SB3's defaults as the first trial (default on)",
    )

    init = commands.add_parser("init", help="create the schema once (and a read-only dashboard role)")
    _storage_options(init)
    init.add_argument(
        "--dashboard-role",
        default=os.environ.get("DASHBOARD_DB_USER"),
        help="PostgreSQL role for optuna-dashboard with SELECT only; its password comes from "
        "DASHBOARD_DB_PASSWORD [env: DASHBOARD_DB_USER]",
    )
    init.add_argument(
        "--demo",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("DEMO_STUDY", "false").lower() in ("1", "true", "yes"),
        help="when the database holds no study, create one from DEMO_ALGO (ppo), DEMO_ENV "
        "(InvertedPendulum-v5), DEMO_N_TRIALS (50) and DEMO_TIMESTEPS (20000) [env: DEMO_STUDY]",
    )

    listing = commands.add_parser("list", help="every study with its progress")
    _storage_options(listing)
    _format_option(listing, ("table", "json"))

    show = commands.add_parser("show", help="progress, best trial, throughput and top trials")
    _storage_options(show)
    show.add_argument("name")
    _format_option(show, ("table", "json"))

    best = commands.add_parser("best", help="the best configuration as SB3 keyword arguments")
    _storage_options(best)
    best.add_argument("name")
    _format_option(best, ("yaml", "json"))

    for verb, text in (("pause", "stop handing out new trials"), ("resume", "hand out trials again")):
        sub = commands.add_parser(verb, help=text)
        _storage_options(sub)
        sub.add_argument("name")

    remove = commands.add_parser("delete", help="delete a study and all its trials")
    _storage_options(remove)
    remove.add_argument("name")
    remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return parser


def check_env_id(env_id: str) -> None:
    import gymnasium  # registry only: importing gymnasium does not load MuJoCo

    known = list(gymnasium.envs.registry)
    if env_id not in known:
        close = difflib.get_close_matches(env_id, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see gymnasium.envs.registry"
        raise InputError(f"unknown environment {env_id!r}; {hint}")


def definition_from_args(args: argparse.Namespace) -> StudyDefinition:
    algo = args.algo.lower()
    if algo not in ALGOS:
        raise InputError(f"unknown algorithm {args.algo!r}; choose one of {list(ALGOS)}")
    check_env_id(args.env_id)
    if args.eval_every is not None:
        eval_every = args.eval_every
    else:
        eval_every = max(args.timesteps // (args.n_evaluations or 10), 1)
    space = load_space_file(args.space, algo) if args.space else dict(DEFAULT_SPACES[algo])
    space = fit_rollout_to_budget(algo, space, args.n_envs, args.timesteps)
    return StudyDefinition(
        algo=algo,
        env_id=args.env_id,
        n_trials=args.n_trials,
        timesteps=args.timesteps,
        eval_every=eval_every,
        eval_episodes=args.eval_episodes,
        n_envs=args.n_envs,
        sampler=args.sampler,
        pruner=args.pruner,
        pruner_startup_trials=args.pruner_startup_trials,
        pruner_warmup_evals=args.pruner_warmup_evals,
        seed=args.seed,
        baseline=args.baseline,
        space=space,
    )


def demo_definition(environ: Any) -> StudyDefinition:
    """The study a first ``docker compose up`` tunes, so the dashboard has something to show."""
    args = build_parser().parse_args(
        [
            "create",
            "--algo",
            environ.get("DEMO_ALGO", "ppo"),
            "--env",
            environ.get("DEMO_ENV", "InvertedPendulum-v5"),
            "--n-trials",
            environ.get("DEMO_N_TRIALS", "50"),
            "--timesteps",
            environ.get("DEMO_TIMESTEPS", "20000"),
            "--eval-episodes",
            environ.get("DEMO_EVAL_EPISODES", "5"),
        ]
    )
    return definition_from_args(args)


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip())


def _dump(data: Any, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(data, indent=2, default=str))
    else:
        import yaml

        print(yaml.safe_dump(data, sort_keys=False), end="")


def print_listing(summaries: list[Any], fmt: str) -> None:
    from study_admin.progress import format_value

    if fmt == "json":
        _dump([s.to_dict() for s in summaries], "json")
    elif not summaries:
        print("no studies; create one with: study_admin create --algo ppo --env Hopper-v5")
    else:
        header = ["NAME", "ALGO", "ENV", "STATE", "DONE/BUDGET", "RUNNING", "PRUNED", "FAILED", "BEST"]
        rows = [header] + [
            [
                s.name,
                s.algo,
                s.env_id,
                s.state,
                f"{s.done}/{s.n_trials}",
                str(s.running),
                str(s.pruned),
                str(s.failed),
                format_value(s.best_value),
            ]
            for s in summaries
        ]
        _print_table(rows)


def run(args: argparse.Namespace) -> int:
    from study_admin.storage import open_engine, open_storage, resolve_url

    if args.command == "list":  # the fast path: no Optuna import (see study_admin/progress.py)
        from study_admin.progress import summarise

        print_listing(summarise(open_engine(resolve_url(args.storage, args.data_dir))), args.format)
        return 0

    import optuna

    from study_admin import studies

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.command == "create":
        definition = definition_from_args(args)  # validate everything before connecting
        storage = open_storage(resolve_url(args.storage, args.data_dir))
        print(studies.create_study(storage, definition, args.name))
        return 0
    storage = open_storage(resolve_url(args.storage, args.data_dir))
    if args.command == "init":
        if args.dashboard_role:
            from study_admin.roles import grant_read_only

            try:
                grant_read_only(storage.engine, args.dashboard_role, os.environ.get("DASHBOARD_DB_PASSWORD", ""))
            except ValueError as exc:
                raise InputError(str(exc)) from None
            print(f"schema ready; role {args.dashboard_role!r} can read, not write")
        else:
            print("schema ready")
        if args.demo and not studies.summarise(storage.engine):
            print(studies.create_study(storage, demo_definition(os.environ)))
    elif args.command == "show":
        details = studies.study_details(storage, args.name)
        if args.format == "json":
            _dump(details, "json")
        else:
            _dump(details, "yaml")
    elif args.command == "best":
        _dump(studies.best_configuration(storage, args.name), args.format)
    elif args.command in ("pause", "resume"):
        studies.set_paused(storage, args.name, args.command == "pause")
        print(f"{args.name}: {'paused' if args.command == 'pause' else 'resumed'}")
    elif args.command == "delete":
        studies.summary_of(storage, args.name)
        if not args.yes and not _confirm(f"delete study {args.name!r} and all its trials? [y/N] "):
            print("not deleted", file=sys.stderr)
            return EXIT_INPUT
        studies.delete(storage, args.name)
        print(f"{args.name}: deleted")
    return 0


def _confirm(prompt: str) -> bool:
    try:
        return input(prompt).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from study_admin.definition import StudyError
    from study_admin.storage import StorageError

    try:
        return run(args)
    except (InputError, SpaceError, DefinitionError, StudyError) as exc:
        print(f"study_admin: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except StorageError as exc:
        print(f"study_admin: error: {exc}", file=sys.stderr)
        return EXIT_DB
