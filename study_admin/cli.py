"""``study_admin``: define, inspect, pause and delete tuning studies.

Every command reads the storage from ``--storage`` or ``DATABASE_URL``; with neither, it uses the
embedded SQLite file under ``--data-dir`` / ``TUNER_DATA_DIR``. Exit codes: 0 success, 1 database
unusable, 2 bad input; ``reproduce`` also 3 (a different value) and 4 (training failed). The commands
themselves are in ``study_admin/commands.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from study_admin import commands
from study_admin.algorithms import DOCS_TIMESTEPS
from study_admin.commands import CREATE_OPTIONS, DEMO, InputError
from study_contract.campaign import DEFAULT_BUDGET_TRIALS
from study_contract.formatting import printable
from study_contract.names import DefinitionError, StudyError
from study_contract.options import HelpFormatter, OneLineParser, add_options, parse_bool, parse_number
from study_contract.space import SpaceError
from study_contract.statistics import PICK_RULES
from study_contract.store.artifacts import UnsafeArtifact
from study_contract.store.storage import StorageError, resolve_url

EXIT_DB = 1
EXIT_INPUT = commands.EXIT_INPUT
MAX_NUMBER = 2**31 - 1  # trial numbers and counts are 32-bit integers in the database


def _storage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        default=os.environ.get("DATABASE_URL"),
        help="database URL, e.g. postgresql://user:pass@host:5432/db "
        "[env: DATABASE_URL; default: the embedded SQLite file]",
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("TUNER_DATA_DIR"),
        help="directory of the embedded storage when no URL is given "
        "[env: TUNER_DATA_DIR; default: ~/.local/share/locomotion-tuner]",
    )


def _command(
    commands_: Any, name: str, text: str, handler: Any, *, formats: tuple[str, ...] = (), study: bool = False
) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = commands_.add_parser(name, help=text, description=text,
                                                        formatter_class=HelpFormatter)  # fmt: skip
    sub.set_defaults(handler=handler)
    _storage_options(sub)
    if study:
        sub.add_argument("name", help="study name")
    if formats:
        sub.add_argument("--format", choices=formats, default=formats[0], help=f"output format (default {formats[0]})")
    return sub


def _warm_start(text: str) -> str:
    from study_contract.engine.warm_start import parse_sources  # Optuna: only when a study is created

    try:
        return parse_sources(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _pick_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pick",
        choices=PICK_RULES,
        default=PICK_RULES[0],
        help="once confirmed, recommend the cheapest to train of the configurations statistically tied with the "
        "best fresh-seed IQM (its 95%% interval), or the best itself [default: %(default)s]",
    )


def _artifact_option(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument(
        "--artifact-dir",
        default=os.environ.get("TUNER_ARTIFACT_DIR"),
        help=f"{text}: a directory or s3://BUCKET [env: TUNER_ARTIFACT_DIR; default: beside the embedded database]",
    )


def _whole(text: str, low: int, high: int, what: str) -> int:
    try:
        value = parse_number(int, text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{value} must be {what} ({low}-{high})")
    return value


def _positive(text: str) -> int:
    return _whole(text, 1, MAX_NUMBER, "a positive integer")


def _trial_number(text: str) -> int:
    return _whole(text, 0, MAX_NUMBER, "a trial number")


def _port(text: str) -> int:
    return _whole(text, 1, 65535, "a TCP port")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="study_admin", description=__doc__, formatter_class=HelpFormatter)
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    create = _command(subcommands, "create", "define a study; workers pick it up at once", commands.create)
    add_options(create, CREATE_OPTIONS, required=("algo",))
    create.add_argument("--name", help="study name (default: ALGO-ENV, made unique)")
    create.add_argument(
        "--space", metavar="FILE", help="YAML file narrowing, widening or fixing parameters of the preset"
    )
    create.add_argument("--n-evaluations", type=_positive, help="evaluations per trial, instead of --eval-every")
    create.add_argument("--warm-start", type=_warm_start, default="auto", metavar="auto|off|STUDY[,STUDY...]",
                        help="first try the winners of finished studies of the same algorithm, after the baseline "
                             "and known-good points (auto: those of the same task, at any budget; a named study may "
                             "tune another task) (default: auto)")  # fmt: skip

    init = _command(subcommands, "init", "create the schema once, and the worker and dashboard roles", commands.init)
    for kind, text in (
        ("owner", "owns the tables; study_admin connects as it"),
        ("worker", "reads and writes trials, cannot change the schema"),
        ("dashboard", "SELECT only, for optuna-dashboard"),
    ):
        variable = "ADMIN" if kind == "owner" else kind.upper()
        init.add_argument(
            f"--{kind}-role",
            default=os.environ.get(f"{variable}_DB_USER"),
            help=f"PostgreSQL role that {text}; password from {variable}_DB_PASSWORD [env: {variable}_DB_USER]",
        )
    init.add_argument(
        "--demo",
        action=argparse.BooleanOptionalAction,
        default=parse_bool(os.environ.get("DEMO_STUDY", "false")),
        help="when the database holds no study, create one from "
        + ", ".join(f"{variable} ({default})" for variable, default in DEMO.values())
        + " [env: DEMO_STUDY]",
    )

    _command(
        subcommands,
        "list",
        "every study with its progress, workers and ETA",
        commands.list_studies,
        formats=("table", "json"),
    )
    show = _command(
        subcommands,
        "show",
        "progress, ETA, best trial, top trials and failures; or one trial with what produced it",
        commands.show,
        formats=("table", "yaml", "json"),
        study=True,
    )
    show.add_argument("--trial", type=_trial_number, help="one trial: its configuration, curve, cost and provenance")
    best = _command(
        subcommands,
        "best",
        "the recommended configuration as SB3 keyword arguments, with its cost; --format python prints it as a module "
        "that builds the model (ALGORITHM, POLICY, make_env, kwargs)",
        commands.best,
        formats=("yaml", "json", "python"),
        study=True,
    )
    _pick_option(best)
    confirm = _command(
        subcommands,
        "confirm",
        "re-train the best configurations and the baseline on fresh seeds",
        commands.confirm,
        study=True,
    )
    confirm.add_argument("--top", type=_positive, help="configurations to confirm (default: the study's confirm_top)")
    confirm.add_argument("--seeds", type=_positive, help="test seeds (default: the study's test_seeds)")
    export = _command(
        subcommands, "export", "the configuration for RL Zoo, plain SB3 or as JSON", commands.export, study=True
    )
    export.add_argument("--trial", type=_trial_number, help="trial number (default: the recommended one)")
    _pick_option(export)
    export.add_argument("--format", choices=("zoo", "python", "json"), required=True, help="what to write")
    export.add_argument("--out", help="file to write (default: standard output)")
    download = _command(
        subcommands, "download", "a trial's model, statistics, learning curve and video", commands.download, study=True
    )
    download.add_argument("--trial", type=_trial_number, help="trial number (default: the recommended one)")
    _pick_option(download)
    download.add_argument("--out", required=True, help="directory to write the files into")
    _artifact_option(download, "the workers' artifact store")
    again = "train one complete trial again on this machine; compare its value, curve and recorded versions"
    reproduce = _command(subcommands, "reproduce", again, commands.reproduce, study=True)
    reproduce.add_argument("--trial", type=_trial_number, required=True, help="trial number")
    report = _command(subcommands, "report", "write a Markdown report with plots", commands.report, study=True)
    report.add_argument("--out", required=True, help="directory to write report.md and its PNG plots into")
    _artifact_option(report, "attach the confirmation plot to the study in this artifact store")
    _command(subcommands, "pause", "stop handing out new trials", commands.pause, study=True)
    _command(subcommands, "resume", "hand out trials again (clears a failure pause)", commands.resume, study=True)
    remove = _command(subcommands, "delete", "delete a study and all its trials", commands.delete, study=True)
    remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    remove.add_argument("--force", action="store_true", help="delete even while trials run (workers drop them)")
    _artifact_option(remove, "remove the study's models, curves and videos from this artifact store")

    campaign = subcommands.add_parser("campaign", help="the guide's four steps as one campaign the fleet carries out")
    verbs = campaign.add_subparsers(dest="verb", required=True, metavar="VERB")
    start = _command(
        verbs, "create", "plan a campaign and create its first stage; workers do the rest", commands.campaign_create
    )
    add_options(start, CREATE_OPTIONS, required=("algo",))
    start.add_argument("--name", help="campaign name (default: ALGO-ENV-campaign, made unique)")
    start.add_argument("--n-evaluations", type=_positive, help="evaluations per trial, instead of --eval-every")
    budget = f"env-steps for the whole campaign (default: {DEFAULT_BUDGET_TRIALS} x --timesteps)"
    start.add_argument("--budget-steps", type=_positive, help=budget)
    start.add_argument("--trials-per-stage", type=_positive, help="trials of every stage, instead of the budget split")
    start.add_argument(
        "--stage",
        action="append",
        default=[],
        metavar="STAGE:KEY=VALUE",
        help="override a stage's trials, fidelity (fraction of --timesteps) or space (a YAML file), e.g. "
        "coarse:fidelity=0.1, finetune:trials=20, schedule:space=narrow.yaml",
    )
    _command(verbs, "list", "every campaign and its stage", commands.campaign_list, formats=("table", "json"))
    _command(
        verbs,
        "show",
        "the ladder: stages, budgets, winners, improvement over the baseline",
        commands.campaign_show,
        formats=("table", "json"),
        study=True,
    )

    algorithms = _command(
        subcommands,
        "algorithms",
        "the algorithms a study can tune: class, backends, presets, and what the default preset searches",
        commands.algorithms,
        formats=("table", "markdown", "json"),
    )
    algorithms.add_argument("--timesteps", type=_positive, default=DOCS_TIMESTEPS,
                            help=f"env-steps per trial the ranges are for (default {DOCS_TIMESTEPS:,})")  # fmt: skip

    dashboard = _command(
        subcommands, "dashboard", "serve optuna-dashboard (survives database restarts)", commands.dashboard
    )
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dashboard.add_argument("--port", type=_port, default=8080, help="port (default 8080)")
    _artifact_option(dashboard, "show the artifacts the workers store")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args, resolve_url(args.storage, args.data_dir)))
    # An error may quote what the database holds: one line, that cannot drive the terminal.
    except (InputError, SpaceError, DefinitionError, StudyError, UnsafeArtifact) as exc:
        print(f"study_admin: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_INPUT
    except StorageError as exc:
        print(f"study_admin: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_DB
