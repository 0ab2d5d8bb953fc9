"""One function per ``study_admin`` command: ``(arguments, storage URL) -> exit code``.

Each imports what it needs when it runs, so ``list`` answers without importing Optuna, and no command
imports torch, SB3 or MuJoCo.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from study_contract.algorithms import ALGORITHMS, SBX, algorithm
from study_contract.definition import DEFAULT_ENV, StudyDefinition, check_study_name, define
from study_contract.formatting import printable
from study_contract.names import StudyError
from study_contract.options import Option, collect, options_of
from study_contract.space import read_space_file
from study_contract.store.storage import StorageError

if TYPE_CHECKING:
    import optuna

EXIT_INPUT = 2
CREATE_OPTIONS = options_of(StudyDefinition)
DEFAULTS = {f.name: f.default for f in fields(StudyDefinition)}
# The study a first `docker compose up` tunes: the registry's first algorithm on a task that learns in minutes.
DEMO = {
    "algo": ("DEMO_ALGO", next(iter(ALGORITHMS))),
    "env_id": ("DEMO_ENV", "InvertedPendulum-v5"),
    "n_trials": ("DEMO_N_TRIALS", "50"),
    "timesteps": ("DEMO_TIMESTEPS", "20000"),
    "eval_episodes": ("DEMO_EVAL_EPISODES", "5"),
}


SBX_NOTE = (
    "note: SBX trains about twice as fast per core, but where measured it learned worse than SB3 with the same "
    "hyperparameters (HalfCheetah-v5: fresh-seed IQM 1328 against 2223 on the same five seeds); re-train the "
    "winner with SB3 (export --format zoo trains it with SB3) before relying on it: docs/tuning.md"
)


class InputError(ValueError):
    """Bad input on the command line."""


def _print(text: str) -> None:
    sys.stdout.write(text)


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


def check_env_id(env_id: str) -> None:
    import gymnasium  # registry only: importing gymnasium does not load MuJoCo

    known = list(gymnasium.envs.registry)
    if env_id not in known:
        close = difflib.get_close_matches(env_id, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see gymnasium.envs.registry"
        raise InputError(f"unknown environment {env_id!r}; {hint}")


def split_tasks(given: str | list[str]) -> list[str]:
    """The tasks ``--env`` names, given once or more, each time a task id or a comma list of them."""
    return [task.strip() for item in ([given] if isinstance(given, str) else given) for task in item.split(",")]


def build_definition(
    values: Mapping[str, Any], *, space_file: str | None = None, n_evaluations: int | None = None
) -> StudyDefinition:
    """A validated definition from option values (defaults for the rest), a space file and an evaluation count."""
    from study_contract.engine.spaces import resolve_space
    from study_contract.space import SpaceError

    values = dict(values)
    entry = algorithm(values["algo"])
    tasks = split_tasks(values.get("env_id", DEFAULT_ENV))
    for env_id in tasks:
        check_env_id(env_id)
    values["env_id"], values["more_envs"] = tasks[0], tasks[1:]
    timesteps, n_envs = values.get("timesteps", DEFAULTS["timesteps"]), values.get("n_envs", DEFAULTS["n_envs"])
    if n_evaluations is not None:
        if "eval_every" in values:
            raise InputError("give --eval-every or --n-evaluations, not both")
        if n_evaluations > timesteps:
            raise InputError(
                f"--n-evaluations={n_evaluations} exceeds --timesteps={timesteps}: at most one evaluation per env-step"
            )
        values["eval_every"] = max(timesteps // n_evaluations, 1)
    preset = values.get("space_preset", DEFAULTS["space_preset"])
    entry.space(preset, timesteps, n_envs)  # a preset the algorithm lacks is refused before any file is read
    overrides = read_space_file(space_file) if space_file else None
    try:
        space = resolve_space(values["algo"], preset, timesteps, n_envs, overrides=overrides)
    except SpaceError as exc:
        raise SpaceError(f"space file {space_file!r}: {exc}" if space_file else str(exc)) from None
    return define(**values, space=space)


def demo_definition(environ: Mapping[str, str]) -> StudyDefinition:
    """The study a first ``docker compose up`` tunes, so the dashboard has something to show."""
    by_name: dict[str, Option] = {o.name: o for o in CREATE_OPTIONS}
    try:
        values = {name: by_name[name].convert(environ.get(var, default), var) for name, (var, default) in DEMO.items()}
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return build_definition(values)


def _storage(url: str) -> optuna.storages.RDBStorage:
    import optuna

    from study_contract.store.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return open_storage(url)


def _store(explicit: str | None, url: str) -> Any:
    """The artifact store the workers use, or None when there is none."""
    from study_contract.store.artifacts import location, open_store

    where = location(explicit, url)
    return open_store(where) if where else None


def list_studies(args: argparse.Namespace, url: str) -> int:
    """The fast path: SQLAlchemy Core only, no Optuna import (``study_contract/store/catalog.py``)."""
    from study_admin.display import dump, listing
    from study_contract.store.catalog import summarise
    from study_contract.store.storage import open_engine

    summaries = summarise(open_engine(url))
    _print(dump([s.to_dict() for s in summaries], "json") if args.format == "json" else listing(summaries))
    return 0


def algorithms(args: argparse.Namespace, url: str) -> int:
    from study_admin import algorithms as registry
    from study_admin import display

    if args.format == "markdown":
        _print(registry.markdown(args.timesteps))
    elif args.format == "json":
        _print(display.dump(registry.rows(args.timesteps), "json"))
    else:
        _print(registry.text(args.timesteps))
    return 0


def dashboard(args: argparse.Namespace, url: str) -> int:
    from study_admin.dashboard import serve

    if url.startswith("sqlite"):
        _storage(url)  # an embedded database is the user's own: its schema is created, as every command does
    try:
        serve(url, args.host, args.port, args.artifact_dir)
    except OSError as exc:  # an address that does not resolve or cannot be bound
        raise InputError(f"cannot serve on --host {args.host!r} --port {args.port}: {exc.strerror or exc}") from None
    return 0


def create(args: argparse.Namespace, url: str) -> int:
    from study_contract.engine import warm_start
    from study_contract.engine.creation import create_study

    if args.name is not None:
        check_study_name(args.name)
    definition = build_definition(collect(args, CREATE_OPTIONS), space_file=args.space,
                                  n_evaluations=args.n_evaluations)  # fmt: skip
    storage = _storage(url)
    plan = warm_start.plan(storage, definition, args.warm_start)
    chosen: list[Any] = []

    def warm(taken: list[dict[str, Any]]) -> list[Any]:
        chosen.extend(plan.points(definition, taken))
        return chosen

    print(create_study(storage, definition, args.name, warm=warm))
    for point in chosen:
        print(f"warm start: {warm_start.describe(point)}", file=sys.stderr)
    for line in plan.skipped:
        print(f"warm start: passed over {printable(line)}", file=sys.stderr)
    if plan.sources and not chosen:
        print(f"warm start: none of {len(plan.sources)} found added: a budget of {definition.n_trials} trials spares "
              "them at most a quarter, after the baseline and the known-good points, which none may repeat",
              file=sys.stderr)  # fmt: skip
    if definition.backend == SBX:
        print(SBX_NOTE, file=sys.stderr)
    return 0


def _role_url(url: str, user: str, password: str) -> str:
    import sqlalchemy

    return sqlalchemy.engine.make_url(url).set(username=user, password=password).render_as_string(hide_password=False)


def init(args: argparse.Namespace, url: str) -> int:
    import sqlalchemy.exc

    from study_admin.roles import Role, RoleError, grant_rights, prepare_roles
    from study_contract.engine.creation import create_study
    from study_contract.store.catalog import summarise
    from study_contract.store.storage import describe_db_error, open_engine, open_storage

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
    return 0


def show(args: argparse.Namespace, url: str) -> int:
    from study_admin import display, studies
    from study_contract.store.study_view import load_study

    storage = _storage(url)
    study = load_study(storage, args.name)
    if args.trial is not None:
        trial = studies.one_trial(study, args.trial)
        _print(display.trial(args.name, study.definition, trial) if args.format == "table"
               else display.dump(asdict(trial), args.format))  # fmt: skip
        return 0
    details = studies.study_details(storage, study)
    _print(display.show(details) if args.format == "table" else display.dump(details.to_dict(), args.format))
    return 0


def best(args: argparse.Namespace, url: str) -> int:
    from study_admin import display, studies
    from study_admin.export import to_python
    from study_contract.store.study_view import load_study

    storage = _storage(url)
    config = studies.best_configuration(storage, load_study(storage, args.name), args.pick)
    _print(to_python(config) if args.format == "python" else display.dump(config.to_dict(), args.format))
    return 0


def reproduce(args: argparse.Namespace, url: str) -> int:
    """The worker's ``worker/reproduce.py`` in a child process: training needs torch and SB3, which study_admin
    never imports, and the child pins the trial's threads before anything starts a thread pool. Its exit code:
    0 the same value, 3 a different one, 4 training failed."""
    import importlib.util
    import subprocess

    from study_contract.store.catalog import recorded_threads
    from study_contract.store.study_view import trial_to_reproduce

    _, trial = trial_to_reproduce(_storage(url), args.name, args.trial)  # refused here, before torch loads
    if importlib.util.find_spec("stable_baselines3") is None or importlib.util.find_spec("worker") is None:
        raise InputError("reproduce trains the trial again: it needs the worker's training packages "
                         "(pip install 'locomotion-tuner[train]')")  # fmt: skip
    # -P: the worker package installed beside study_admin, never a folder of that name where the user stands.
    child = [sys.executable, "-P", "-m", "worker.reproduce", args.name, str(args.trial), str(recorded_threads(trial))]
    return subprocess.run(child, env={**os.environ, "DATABASE_URL": url}, check=False).returncode


def confirm(args: argparse.Namespace, url: str) -> int:
    from study_contract.engine.confirmation import create_confirmation
    from study_contract.store.catalog import study_id_of

    storage = _storage(url)
    study_id_of(storage, args.name)
    print(create_confirmation(storage, args.name, top=args.top, seeds=args.seeds))
    return 0


def export(args: argparse.Namespace, url: str) -> int:
    from study_admin import studies
    from study_admin.export import export as render
    from study_contract.store.study_view import load_study

    storage = _storage(url)
    text = render(studies.trial_configuration(storage, load_study(storage, args.name), args.trial, args.pick),
                  args.format)  # fmt: skip
    if args.out:
        write_file(args.out, text)
        print(args.out)
    else:
        _print(text)
    return 0


def download(args: argparse.Namespace, url: str) -> int:
    from study_admin import studies
    from study_contract.store.artifacts import download as fetch
    from study_contract.store.artifacts import trial_artifacts

    store = _store(args.artifact_dir, url)
    if store is None:
        raise InputError("no artifact store: give --artifact-dir (or TUNER_ARTIFACT_DIR), as the workers have")
    storage = _storage(url)
    trial = studies.artifact_trial(storage, args.name, args.trial, args.pick)
    trial_artifacts(trial)  # records that are not this service's are refused before anything is written
    files = fetch(store, trial, output_dir(args.out))
    if not files:
        raise StudyError(f"trial {trial.number} has no artifacts in the store")
    print("\n".join(str(f) for f in files))
    return 0


def report(args: argparse.Namespace, url: str) -> int:
    from study_admin.report import write_report
    from study_contract.store.study_view import load_study

    storage = _storage(url)
    study = load_study(storage, args.name)  # a study to report on, before anything is written
    print(write_report(storage, study, output_dir(args.out), _store(args.artifact_dir, url)))
    return 0


def pause(args: argparse.Namespace, url: str) -> int:
    from study_admin import studies

    studies.set_paused(_storage(url), args.name, True)
    print(f"{args.name}: paused")
    return 0


def resume(args: argparse.Namespace, url: str) -> int:
    from study_admin import studies

    studies.set_paused(_storage(url), args.name, False)
    print(f"{args.name}: resumed")
    return 0


def _agreed(prompt: str) -> bool:
    try:
        return input(prompt).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def delete(args: argparse.Namespace, url: str) -> int:
    from study_admin import studies
    from study_contract.store.catalog import study_id_of

    storage = _storage(url)
    study_id_of(storage, args.name)
    if not args.yes and not _agreed(f"delete study {args.name!r} and all its trials? [y/N] "):
        print("not deleted", file=sys.stderr)
        return EXIT_INPUT
    left = studies.delete(storage, args.name, force=args.force, store=_store(args.artifact_dir, url))
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


def campaign_create(args: argparse.Namespace, url: str) -> int:
    from study_admin import campaigns
    from study_contract.campaign import plan_campaign
    from study_contract.engine.creation import unique_name
    from study_contract.engine.stages import create_campaign, stage_definition

    storage = _storage(url)
    if args.name is not None:
        check_study_name(args.name)
    base = build_definition(collect(args, CREATE_OPTIONS), n_evaluations=args.n_evaluations)
    taken = campaigns.campaign_names(storage)
    name = args.name or unique_name(storage, f"{base.algo}-{base.env_id}-campaign", also_taken=taken)
    if name in taken:
        raise StudyError(f"a campaign named {name!r} already exists; pick another --name")
    plan = plan_campaign(name, base.timesteps, budget_steps=args.budget_steps, trials_per_stage=args.trials_per_stage,
                         overrides=stage_overrides(args.stage), confirm=base.confirm,
                         evaluations=max(base.timesteps // base.eval_every, 1))  # fmt: skip
    defaults = algorithm(base.algo).baseline(base.space, base.n_envs)
    for step in plan.stages:  # every stage's overrides are checked now, not when a worker reaches it
        stage_definition(base, plan, step.name, defaults, None)
    print(create_campaign(storage, base, plan))
    return 0


def campaign_list(args: argparse.Namespace, url: str) -> int:
    from study_admin import campaigns, display

    storage = _storage(url)
    reports = [campaigns.campaign_report(storage, n) for n in campaigns.campaign_names(storage)]
    _print(display.dump([r.to_dict() for r in reports], "json") if args.format == "json"
           else display.campaign_list(reports))  # fmt: skip
    return 0


def campaign_show(args: argparse.Namespace, url: str) -> int:
    from study_admin import campaigns, display

    shown = campaigns.campaign_report(_storage(url), args.name)
    _print(display.dump(shown.to_dict(), "json") if args.format == "json" else display.campaign(shown))
    return 0
