"""``study_admin``: define, inspect, pause and delete tuning studies.

Every command reads the storage from ``--storage`` or ``DATABASE_URL``; with neither, it uses the
embedded SQLite file under ``--data-dir`` / ``TUNER_DATA_DIR``. Exit codes: 0 success, 1 database
unusable, 2 bad input.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from study_contract.algorithms import algorithm
from study_contract.artifacts import UnsafeArtifact
from study_contract.campaign import DEFAULT_BUDGET_TRIALS
from study_contract.definition import DEFAULT_ENV, DefinitionError, StudyDefinition, StudyError, check_study_name
from study_contract.options import Option, add_options, collect, options_of, parse_bool
from study_contract.space import SpaceError, apply_overrides, read_space_file
from study_contract.storage import StorageError

EXIT_DB = 1
EXIT_INPUT = 2
MAX_NUMBER = 2**31 - 1  # trial numbers and counts are 32-bit integers in the database
CREATE_OPTIONS = options_of(StudyDefinition)
DEFAULTS = {f.name: f.default for f in fields(StudyDefinition)}


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


def _command(
    commands: Any, name: str, text: str, *, formats: tuple[str, ...] = (), study: bool = False
) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = commands.add_parser(name, help=text, description=text)
    _storage_options(sub)
    if study:
        sub.add_argument("name", help="study name")
    if formats:
        sub.add_argument("--format", choices=formats, default=formats[0], help=f"output format (default {formats[0]})")
    return sub


def _artifact_option(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument(
        "--artifact-dir",
        default=os.environ.get("TUNER_ARTIFACT_DIR"),
        help=f"{text}: a directory or s3://BUCKET [env: TUNER_ARTIFACT_DIR; default: beside the embedded database]",
    )


def _whole(text: str, low: int, high: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{value} must be {what} ({low}-{high})")
    return value


def _positive(text: str) -> int:
    return _whole(text, 1, MAX_NUMBER, "a positive integer")


def _trial_number(text: str) -> int:
    return _whole(text, 0, MAX_NUMBER, "a trial number")


def write_file(path: str, text: str) -> None:
    """Write ``text`` to the file ``path``, or one line saying why it cannot be."""
    if Path(path).is_dir():
        raise InputError(f"--out {path!r} is a directory; give the path of a file to write")
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise InputError(f"cannot write --out {path!r}: {exc.strerror}") from None


def output_dir(path: str) -> Path:
    """The directory ``path``, created if missing, or one line saying why it cannot be."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the directory --out {path!r}: {exc.strerror}") from None
    return Path(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="study_admin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    create = _command(commands, "create", "define a study; workers pick it up at once")
    add_options(create, CREATE_OPTIONS, required=("algo",))
    create.add_argument("--name", help="study name (default: ALGO-ENV, made unique)")
    create.add_argument(
        "--space", metavar="FILE", help="YAML file narrowing, widening or fixing parameters of the preset"
    )
    create.add_argument("--n-evaluations", type=_positive, help="evaluations per trial, instead of --eval-every")

    init = _command(commands, "init", "create the schema once, and the worker and dashboard roles")
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
        help="when the database holds no study, create one from DEMO_ALGO (ppo), DEMO_ENV "
        "(InvertedPendulum-v5), DEMO_N_TRIALS (50), DEMO_TIMESTEPS (20000) and DEMO_EVAL_EPISODES (5) "
        "[env: DEMO_STUDY]",
    )

    _command(commands, "list", "every study with its progress, workers and ETA", formats=("table", "json"))
    _command(commands, "show", "progress, ETA, best trial, top trials and failures", formats=("table", "yaml", "json"),
             study=True)  # fmt: skip
    _command(commands, "best", "the best configuration as SB3 keyword arguments", formats=("yaml", "json"), study=True)
    confirm = _command(commands, "confirm", "re-train the best configurations and the baseline on fresh seeds",
                       study=True)  # fmt: skip
    confirm.add_argument("--top", type=_positive, help="configurations to confirm (default: the study's confirm_top)")
    confirm.add_argument("--seeds", type=_positive, help="test seeds (default: the study's test_seeds)")
    export = _command(commands, "export", "the configuration for RL Zoo, plain SB3 or as JSON", study=True)
    export.add_argument("--trial", type=_trial_number, help="trial number (default: the best, confirmed if it was)")
    export.add_argument("--format", choices=("zoo", "python", "json"), required=True, help="what to write")
    export.add_argument("--out", help="file to write (default: standard output)")
    download = _command(commands, "download", "a trial's model, statistics, learning curve and video", study=True)
    download.add_argument("--trial", type=_trial_number, help="trial number (default: the best, confirmed if it was)")
    download.add_argument("--out", required=True, help="directory to write the files into")
    _artifact_option(download, "the workers' artifact store")
    report = _command(commands, "report", "write a Markdown report with plots", study=True)
    report.add_argument("--out", required=True, help="directory to write report.md and its PNG plots into")
    _artifact_option(report, "attach the confirmation plot to the study in this artifact store")
    _command(commands, "pause", "stop handing out new trials", study=True)
    _command(commands, "resume", "hand out trials again (clears a failure pause)", study=True)
    remove = _command(commands, "delete", "delete a study and all its trials", study=True)
    remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    remove.add_argument("--force", action="store_true", help="delete even while trials run (workers drop them)")
    _artifact_option(remove, "remove the study's models, curves and videos from this artifact store")

    campaign = commands.add_parser("campaign", help="the guide's four steps as one campaign the fleet carries out")
    verbs = campaign.add_subparsers(dest="verb", required=True, metavar="VERB")
    start = _command(verbs, "create", "plan a campaign and create its first stage; workers do the rest")
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
    _command(verbs, "list", "every campaign and its stage", formats=("table", "json"))
    _command(verbs, "show", "the ladder: stages, budgets, winners, improvement over the baseline",
             formats=("table", "json"), study=True)  # fmt: skip

    dashboard = _command(commands, "dashboard", "serve optuna-dashboard (survives database restarts)")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dashboard.add_argument("--port", type=_positive, default=8080, help="port (default 8080)")
    _artifact_option(dashboard, "show the artifacts the workers store")
    return parser


def check_env_id(env_id: str) -> None:
    import gymnasium  # registry only: importing gymnasium does not load MuJoCo

    known = list(gymnasium.envs.registry)
    if env_id not in known:
        close = difflib.get_close_matches(env_id, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see gymnasium.envs.registry"
        raise InputError(f"unknown environment {env_id!r}; {hint}")


def build_definition(
    values: Mapping[str, Any], *, space_file: str | None = None, n_evaluations: int | None = None
) -> StudyDefinition:
    """A validated definition from option values (defaults for the rest), a space file and an evaluation count."""
    values = dict(values)
    entry = algorithm(values["algo"])
    check_env_id(values.get("env_id", DEFAULT_ENV))
    timesteps, n_envs = values.get("timesteps", DEFAULTS["timesteps"]), values.get("n_envs", DEFAULTS["n_envs"])
    if n_evaluations is not None:
        if "eval_every" in values:
            raise InputError("give --eval-every or --n-evaluations, not both")
        if n_evaluations > timesteps:
            raise InputError(
                f"--n-evaluations={n_evaluations} exceeds --timesteps={timesteps}: at most one evaluation per env-step"
            )
        values["eval_every"] = max(timesteps // n_evaluations, 1)
    space = entry.space(values.get("space_preset", DEFAULTS["space_preset"]), timesteps, n_envs)
    if space_file:
        overrides = read_space_file(space_file)
        try:
            space = entry.fit(apply_overrides(entry.name, space, overrides), timesteps, n_envs)
        except SpaceError as exc:
            raise SpaceError(f"space file {space_file!r}: {exc}") from None
    return StudyDefinition(**values, space=space)


def demo_definition(environ: Mapping[str, str]) -> StudyDefinition:
    """The study a first ``docker compose up`` tunes, so the dashboard has something to show."""
    by_name: dict[str, Option] = {o.name: o for o in CREATE_OPTIONS}
    given = {
        "algo": ("DEMO_ALGO", "ppo"),
        "env_id": ("DEMO_ENV", "InvertedPendulum-v5"),
        "n_trials": ("DEMO_N_TRIALS", "50"),
        "timesteps": ("DEMO_TIMESTEPS", "20000"),
        "eval_episodes": ("DEMO_EVAL_EPISODES", "5"),
    }
    try:
        values = {name: by_name[name].convert(environ.get(var, default), var) for name, (var, default) in given.items()}
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return build_definition(values)


def _role_url(url: str, user: str, password: str) -> str:
    import sqlalchemy

    return sqlalchemy.engine.make_url(url).set(username=user, password=password).render_as_string(hide_password=False)


def run_init(args: argparse.Namespace, url: str) -> None:
    import sqlalchemy.exc

    from study_admin.roles import Role, RoleError, grant_rights, prepare_roles
    from study_contract.catalog import summarise
    from study_contract.creation import create_study
    from study_contract.storage import describe_db_error, open_engine, open_storage

    try:
        roles = [
            Role(name, os.environ.get(f"{variable}_DB_PASSWORD", ""), kind)
            for kind, variable, name in (
                ("owner", "ADMIN", args.owner_role),
                ("worker", "WORKER", args.worker_role),
                ("dashboard", "DASHBOARD", args.dashboard_role),
            )
            if name
        ]
        if len({r.name for r in roles}) != len(roles):
            raise RoleError(f"the owner, worker and dashboard roles must differ: {[r.name for r in roles]}")
        if roles:
            prepare_roles(open_engine(url), roles)
        owner = next((r for r in roles if r.kind == "owner"), None)
        storage = open_storage(_role_url(url, owner.name, owner.password) if owner else url)
        if roles:
            grant_rights(open_engine(url), roles)
    except RoleError as exc:
        raise InputError(str(exc)) from None
    except sqlalchemy.exc.DBAPIError as exc:
        raise StorageError(describe_db_error(exc, url)) from None
    print("schema ready" + "".join(f"; {r.kind} role {r.name!r}" for r in roles))
    if args.demo and not summarise(storage.engine):
        print(create_study(storage, demo_definition(os.environ)))


def _print(text: str) -> None:
    sys.stdout.write(text)


def run(args: argparse.Namespace) -> int:
    from study_contract.storage import open_engine, open_storage, resolve_url

    url = resolve_url(args.storage, args.data_dir)
    if args.command == "list":  # the fast path: no Optuna import (see study_contract/catalog.py)
        from study_admin.display import dump, listing
        from study_contract.catalog import summarise

        summaries = summarise(open_engine(url))
        _print(dump([s.to_dict() for s in summaries], "json") if args.format == "json" else listing(summaries))
        return 0
    if args.command == "dashboard":
        from study_admin.dashboard import serve

        serve(url, args.host, args.port, args.artifact_dir)
        return 0

    import optuna

    from study_admin import display, studies
    from study_contract.creation import create_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.command == "create":
        if args.name is not None:
            check_study_name(args.name)
        values = collect(args, CREATE_OPTIONS)
        definition = build_definition(values, space_file=args.space, n_evaluations=args.n_evaluations)
        print(create_study(open_storage(url), definition, args.name))
        return 0
    if args.command == "init":
        run_init(args, url)
        return 0
    storage = open_storage(url)
    if args.command == "show":
        details = studies.study_details(storage, args.name)
        _print(display.show(details) if args.format == "table" else display.dump(details, args.format))
    elif args.command == "best":
        _print(display.dump(studies.best_configuration(storage, args.name), args.format))
    elif args.command == "confirm":
        from study_contract.confirmation import create_confirmation

        studies.study_id_of(storage, args.name)
        print(create_confirmation(storage, args.name, top=args.top, seeds=args.seeds))
    elif args.command == "export":
        from study_admin.export import export

        text = export(studies.trial_configuration(storage, args.name, args.trial), args.format)
        if args.out:
            write_file(args.out, text)
            print(args.out)
        else:
            _print(text)
    elif args.command == "download":
        from study_contract.artifacts import download, location, open_store

        where = location(args.artifact_dir, url)
        if where is None:
            raise InputError("no artifact store: give --artifact-dir (or TUNER_ARTIFACT_DIR), as the workers have")
        trial = studies.artifact_trial(storage, args.name, args.trial)
        files = download(open_store(where), trial, output_dir(args.out))
        if not files:
            raise StudyError(f"trial {trial.number} has no artifacts in {where}")
        print("\n".join(str(f) for f in files))
    elif args.command == "report":
        from study_admin.report import write_report
        from study_contract.artifacts import location, open_store

        where = location(args.artifact_dir, url)
        studies.summary_of(storage, args.name)  # a study to report on, before anything is written
        print(write_report(storage, args.name, output_dir(args.out), open_store(where) if where else None))
    elif args.command in ("pause", "resume"):
        studies.set_paused(storage, args.name, args.command == "pause")
        print(f"{args.name}: {args.command}d")
    elif args.command == "campaign":
        run_campaign(args, storage)
    elif args.command == "delete":
        studies.study_id_of(storage, args.name)
        if not args.yes and not _confirm(f"delete study {args.name!r} and all its trials? [y/N] "):
            print("not deleted", file=sys.stderr)
            return EXIT_INPUT
        from study_contract.artifacts import location, open_store

        where = location(args.artifact_dir, url)
        left = studies.delete(storage, args.name, force=args.force, store=open_store(where) if where else None)
        print(f"{args.name}: deleted")
        if left:
            print(f"{args.name}: {left} artifact(s) left in the workers' store: give --artifact-dir to remove them",
                  file=sys.stderr)  # fmt: skip
    return 0


def stage_overrides(texts: list[str]) -> dict[str, dict[str, Any]]:
    """``STAGE:KEY=VALUE`` options as {stage: {trials|fidelity|space: value}}."""
    overrides: dict[str, dict[str, Any]] = {}
    for text in texts:
        stage, _, setting = text.partition(":")
        key, _, value = setting.partition("=")
        parsers: dict[str, Callable[[str], Any]] = {"trials": int, "fidelity": float, "space": read_space_file}
        try:
            parsed = parsers[key](value)
        except KeyError:
            raise InputError(f"--stage {text!r}: give STAGE:trials=N, STAGE:fidelity=F or STAGE:space=FILE") from None
        except ValueError:
            raise InputError(f"--stage {text!r}: {value!r} is not a valid {key}") from None
        if key == "trials" and not 1 <= parsed <= 100_000:
            raise InputError(f"--stage {text!r}: trials={parsed} is outside the accepted range [1, 100000]")
        overrides.setdefault(stage, {})[key] = parsed
    return overrides


def run_campaign(args: argparse.Namespace, storage: Any) -> None:
    from study_admin import campaigns, display
    from study_contract.campaign import plan_campaign, stage_definition
    from study_contract.creation import unique_name
    from study_contract.stages import create_campaign

    if args.verb == "create":
        if args.name is not None:
            check_study_name(args.name)
        values = collect(args, CREATE_OPTIONS)
        base = build_definition(values, n_evaluations=args.n_evaluations)
        taken = campaigns.campaign_names(storage)
        name = args.name or unique_name(storage, f"{base.algo}-{base.env_id}-campaign", also_taken=taken)
        if name in taken:
            raise StudyError(f"a campaign named {name!r} already exists; pick another --name")
        plan = plan_campaign(name, base.timesteps, budget_steps=args.budget_steps,
                             trials_per_stage=args.trials_per_stage, overrides=stage_overrides(args.stage),
                             confirm=base.confirm, evaluations=max(base.timesteps // base.eval_every, 1))  # fmt: skip
        defaults = algorithm(base.algo).baseline(base.space, base.n_envs)
        for step in plan.stages:  # every stage's overrides are checked now, not when a worker reaches it
            stage_definition(base, plan, step.name, defaults, None)
        print(create_campaign(storage, base, plan))
    elif args.verb == "list":
        reports = [campaigns.campaign_report(storage, n) for n in campaigns.campaign_names(storage)]
        _print(display.dump(reports, "json") if args.format == "json" else display.campaign_list(reports))
    else:
        report = campaigns.campaign_report(storage, args.name)
        _print(display.dump(report, "json") if args.format == "json" else display.campaign(report))


def _confirm(prompt: str) -> bool:
    try:
        return input(prompt).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (InputError, SpaceError, DefinitionError, StudyError, UnsafeArtifact) as exc:
        print(f"study_admin: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except StorageError as exc:
        print(f"study_admin: error: {exc}", file=sys.stderr)
        return EXIT_DB
