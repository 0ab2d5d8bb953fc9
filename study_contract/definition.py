"""The study definition: the contract between ``study_admin`` (writes it) and ``worker`` (reads it).

It is stored as JSON in the Optuna study's user attribute ``definition``, so a worker needs nothing
but the database URL, and the dashboard shows it beside the study. Definitions carry a
``schema_version``: every older version is read (fields added since take their defaults, see
:func:`_upgrade`), a newer one is refused with :class:`DefinitionTooNew` so that an old worker skips
that study instead of misreading it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from study_contract.algorithms import ALGORITHMS, BACKENDS, algorithm
from study_contract.campaign import CampaignPlan
from study_contract.names import ENV_ID, STORED_STUDY_NAME, STUDY_NAME, DefinitionError, Stage
from study_contract.options import options_of
from study_contract.space import ParamSpec, SpaceError, check_value, check_within

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "successive-halving", "hyperband", "wilcoxon", "none")
SAVE_MODELS = ("best", "all", "none")
RETURN, RETURN_AND_COMPUTE = "return", "return-and-compute"
OBJECTIVES = (RETURN, RETURN_AND_COMPUTE)
METRIC_NAMES = {RETURN: ["mean evaluation return"], RETURN_AND_COMPUTE: ["mean evaluation return", "relative compute"]}
DEFINITION_ATTR = "definition"
PAUSED_ATTR = "paused"
PAUSED_REASON_ATTR = "paused_reason"
FOLLOW_UP_ATTR = "follow_up"
"""The name of the study created to follow this one (its confirmation, the next campaign stage), written in the
transaction that creates it: a follow-up that is missing though recorded was deleted, and is not due again."""
MAX_DEFINITION_CHARS = 1_000_000  # a stored definition longer than this is not one study_admin writes
SCHEMA_VERSION = 6
MAX_SEED = 2**31 - 1
# Derived seeds (trial, evaluation, test seeds) stay below numpy's limit of 2**32 - 1.
SEED_SPACE = 2**32
EVAL_SEED_OFFSET = 1_000_003
TEST_SEED_OFFSET = 1_000_000_000
INSTANCE_SEED_OFFSET = 2_000_000_000  # instance seeds: neither a tuning trial's seed + number nor a test seed
MAX_TASKS = 10
MIN_MAX_COMPUTE = 0.1
POLICIES = ("MlpPolicy",)
DEFAULT_ENV = "Ant-v5"
DEFAULT_EVALUATIONS = 10


STAGES = tuple(Stage)


class DefinitionTooNew(DefinitionError):
    """A definition written by a newer ``study_admin`` than this code understands."""


def check_study_name(name: str) -> str:
    if not STUDY_NAME.fullmatch(name):
        raise DefinitionError(
            f"study name {name!r} must be 1-100 characters: letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_stored_name(name: str) -> str:
    """A study name read from the database: one ``study_admin`` or a worker could have written."""
    if not STORED_STUDY_NAME.fullmatch(name):
        raise DefinitionError(f"study name {name!r} is not one study_admin writes")
    return name


def derive_seed(base: int, offset: int) -> int:
    """A seed numpy accepts, ``base + offset`` wrapped into [0, 2**32)."""
    return (base + offset) % SEED_SPACE


def _opt(default: Any, **meta: Any) -> Any:
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class StudyDefinition:
    """Everything a worker needs to run any trial of one study. The constructor only checks; :func:`define` builds one
    from option values, :meth:`from_json` from a stored one."""

    algo: str = _opt("", choices=ALGORITHMS, default_help=None, help="Stable-Baselines3 algorithm.")
    env_id: str = _opt(
        DEFAULT_ENV,
        flag="--env",
        default_help=f"{DEFAULT_ENV}, the guide's example task",
        repeatable=True,
        help="Registered Gymnasium id of the task. Repeat it (or give a comma list) to tune one configuration for "
        f"several tasks (up to {MAX_TASKS}): each configuration then trains on every task, and its value is the IQM "
        "of its returns normalised per task.",
    )
    more_envs: list[str] = _opt(None, cli=False)
    """The tasks after ``env_id`` that each configuration also trains on (``--env`` given more than once)."""
    seeds_per_config: int = _opt(
        1,
        bounds=(1, 20),
        help="Seeds each sampled configuration trains on, every one on every task: each (task, seed) is an instance "
        "that any worker may claim, and the configuration's value is the IQM over its instances. The seeds are the "
        "same for every configuration, so configurations are compared on the same instances.",
    )
    race: bool = _opt(
        True,
        help="With several instances per configuration: stop a configuration without running the rest of its "
        "instances once half of them are done and its mean normalised return on them is below the best "
        "configuration's on the same instances (SMAC's racing).",
    )
    n_trials: int = _opt(
        100, bounds=(1, 100_000), help="Trials in the whole study, across all workers (finished, pruned or failed)."
    )
    timesteps: int = _opt(1_000_000, bounds=(1, 10**9), help="Training env-steps per trial.")
    eval_every: int = _opt(
        0,
        bounds=(1, 10**9),
        default_help=f"timesteps / {DEFAULT_EVALUATIONS}",
        help="Env-steps between two deterministic evaluations (each is reported to the pruner).",
    )
    eval_episodes: int = _opt(10, bounds=(1, 1000), help="Episodes per evaluation.")
    n_envs: int = _opt(1, bounds=(1, 64), help="Parallel training environments per trial (a DummyVecEnv).")
    sampler: str = _opt(
        "tpe",
        choices=SAMPLERS,
        help="Optuna sampler: multivariate TPE (seeded, constant liar for parallel workers; its first "
        "max(10, n_trials / 10) trials random) or random.",
    )
    pruner: str = _opt(
        "median",
        choices=PRUNERS,
        help="Optuna pruner that stops unpromising trials at their evaluations: the median of the finished trials at "
        "the same env-step; successive halving (rungs at 1, 3, 9, ... evaluations, a third promoted); Hyperband; a "
        "Wilcoxon signed-rank test against the best trial's curve, paired by env-step (p < 0.1); or none.",
    )
    pruner_startup_trials: int = _opt(
        5, bounds=(0, 100_000), help="Median pruner: trials that finish before any pruning happens."
    )
    pruner_warmup: float = _opt(
        0.2, bounds=(0.0, 0.9), help="Median pruner: the fraction of a trial's env-steps before it may be pruned."
    )
    seed: int = _opt(
        0, bounds=(0, MAX_SEED), help="Seeds the sampler and, plus the trial number, each tuning trial's training."
    )
    baseline: bool = _opt(True, help="Run SB3's default hyperparameters as the first trial.")
    known_good: bool = _opt(
        True,
        help="Then run the algorithm's known-good configurations for short trials (inside the space), before "
        "any sampled one.",
    )
    max_retry: int = _opt(
        3, bounds=(0, 10), help="Times a configuration whose worker died or shut down is queued again."
    )
    pause_after_failures: int = _opt(
        3,
        bounds=(0, 1000),
        help="Pause the study after this many consecutive trials fail the same way with no success (0: never).",
    )
    confirm: bool = _opt(
        True, help="When tuning ends, re-train the best configurations and the baseline on fresh test seeds."
    )
    confirm_top: int = _opt(
        3,
        bounds=(1, 20),
        help="Configurations, best tuning values first, that the confirmation re-trains beside the baseline.",
    )
    test_seeds: int = _opt(
        5,
        bounds=(1, 100),
        help="Fresh seeds, disjoint from the tuning seeds, on which each confirmed configuration is re-trained.",
    )
    backend: str = _opt(
        BACKENDS[0],
        choices=BACKENDS,
        help="Training library: Stable-Baselines3 (PyTorch), or SBX (JAX; pip install '.[sbx]'), which trains the "
        "off-policy algorithms about twice as fast on a CPU core but learned worse with the same hyperparameters "
        "where measured (docs/tuning.md).",
    )
    max_compute: float = _opt(
        0.0,
        bounds=(0.0, 1000.0),
        help="Cap on a configuration's training compute per env-step, as a multiple of SB3's defaults' (0: no "
        "cap). A sampled configuration above it is not trained: pruned at once, an infeasible trial that "
        "Optuna's constrained TPE learns to avoid.",
    )
    objective: str = _opt(
        RETURN,
        choices=OBJECTIVES,
        help="What the sampler optimises: the final evaluation's mean return; or that and the training compute per "
        "env-step together (two objectives: multi-objective TPE searches the Pareto front of return against cost; "
        "Optuna prunes no multi-objective trial, so --pruner does not apply).",
    )
    save_models: str = _opt(
        "best",
        choices=SAVE_MODELS,
        help="Models (and VecNormalize statistics) kept as trial artifacts: the best so far, every trial's, or none.",
    )
    space_preset: str = _opt(
        "budget",
        flag="--preset",
        choices=tuple(dict.fromkeys(name for entry in ALGORITHMS.values() for name in entry.spaces)),
        help="Search space to start from: budget-aware ranges, or the tuning guide's table as written (where the "
        "guide has a table for the algorithm).",
    )
    space: dict[str, ParamSpec] = _opt(None, cli=False)
    """The resolved search space (the preset plus the ``--space`` file)."""
    policy: str = _opt("MlpPolicy", cli=False)
    """SB3 policy name."""
    stage: str = _opt(Stage.TUNING.value, cli=False)
    """``tuning`` (sampled trials), ``confirmation`` (fixed configurations on test seeds) or a campaign stage."""
    parent: str | None = _opt(None, cli=False)
    """The study this one follows (a confirmation's tuning study, a campaign stage's previous stage)."""
    campaign: dict[str, Any] | None = _opt(None, cli=False)
    """A campaign stage's campaign plan (``study_contract/campaign.py``), so any worker can go on with it."""
    schema_version: int = _opt(SCHEMA_VERSION, cli=False)
    """Version of this contract the definition was written with."""

    def __post_init__(self) -> None:
        """Checks only; :func:`define` fills what is derived from other fields (``eval_every``, ``space``)."""
        _check_options({option.name: getattr(self, option.name) for option in options_of(type(self))})
        if self.space is None:
            raise DefinitionError("definition has no space: define() resolves its preset's")
        if self.stage not in STAGES:
            raise DefinitionError(f"stage={self.stage!r} is not one of {[s.value for s in STAGES]}")
        if not ENV_ID.fullmatch(self.env_id):
            raise DefinitionError(
                f"env_id={self.env_id!r} is not a Gymnasium task id ([namespace/]name[-vN] in letters, digits, "
                "'_', '.' and '-'), e.g. HalfCheetah-v5"
            )
        if 0 < self.max_compute < MIN_MAX_COMPUTE:
            raise DefinitionError(
                f"max_compute={self.max_compute:g} is below {MIN_MAX_COMPUTE:g}: no configuration trains that cheaply; "
                "give 0 (no cap) or a multiple of SB3's defaults' compute from 0.1 to 1000, e.g. 3"
            )
        self._check_instances()
        if self.policy not in POLICIES:
            raise DefinitionError(f"policy={self.policy!r} is not one of {list(POLICIES)}")
        if self.parent is not None:
            check_stored_name(self.parent)
        if self.campaign is not None:
            CampaignPlan.from_dict(self.campaign)
        if self.eval_every > self.timesteps:
            raise DefinitionError(
                f"eval_every={self.eval_every} exceeds timesteps={self.timesteps}; a trial would never be evaluated"
            )
        entry = algorithm(self.algo)
        if self.backend not in entry.libraries:
            raise DefinitionError(f"backend={self.backend!r} is not one of {list(entry.libraries)} for {self.algo}")
        reference = entry.space(self.space_preset, self.timesteps, self.n_envs)
        if set(self.space) != set(entry.defaults):
            raise DefinitionError(
                f"space parameters {sorted(self.space)} do not match {self.algo}'s {sorted(entry.defaults)}"
            )
        try:  # a stored space may narrow what the code accepts, never widen it
            for name, spec in self.space.items():
                check_within(name, spec, reference[name])
        except SpaceError as exc:
            raise DefinitionError(str(exc)) from None
        if self.stage == Stage.CONFIRMATION:
            return  # a confirmation's configurations come from studies that checked them
        try:
            entry.check(self.space, self.n_envs, self.timesteps)
        except SpaceError as exc:
            raise DefinitionError(str(exc)) from None

    def _check_instances(self) -> None:
        if not isinstance(self.more_envs, list) or not all(isinstance(e, str) for e in self.more_envs):
            raise DefinitionError(f"more_envs={self.more_envs!r} must be a list of task ids")
        for env_id in self.more_envs:
            if not ENV_ID.fullmatch(env_id):
                raise DefinitionError(f"env_id={env_id!r} is not a Gymnasium task id, e.g. HalfCheetah-v5")
        tasks = self.tasks
        if len(set(tasks)) != len(tasks):
            raise DefinitionError(f"tasks {tasks} name a task twice; give each task once")
        if len(tasks) > MAX_TASKS:
            raise DefinitionError(f"{len(tasks)} tasks is more than the {MAX_TASKS} a study may tune for")
        several = len(tasks) * self.seeds_per_config > 1
        if not several or (self.stage == Stage.CONFIRMATION and self.seeds_per_config == 1):
            return  # a confirmation's slots are each one run, on one of its tuning study's tasks
        if not self.has_instances:
            raise DefinitionError(f"a {self.stage} study runs one configuration per slot: it has no instances; "
                                  "tasks and seeds per configuration belong to the study it follows")  # fmt: skip
        if self.two_objectives:
            raise DefinitionError(f"objective={RETURN_AND_COMPUTE!r} takes one run per configuration; with several "
                                  "tasks or seeds per configuration use objective='return'")  # fmt: skip

    @property
    def tasks(self) -> list[str]:
        """Every task a configuration trains on, ``env_id`` first."""
        return [self.env_id, *self.more_envs]

    @property
    def has_instances(self) -> bool:
        """Whether each configuration trains more than once (on several tasks or seeds), as instances of its own."""
        sampled = self.stage not in (Stage.CONFIRMATION, Stage.INSTANCES)  # tuning, or a campaign stage
        return sampled and len(self.tasks) * self.seeds_per_config > 1

    @property
    def instance_seed_list(self) -> list[int]:
        """The seeds every configuration trains on, the same for all so that configurations compare on the same
        instances: ``seed + 2e9 + j`` (mod 2**32), never a tuning or test seed."""
        return [derive_seed(self.seed, INSTANCE_SEED_OFFSET + j) for j in range(self.seeds_per_config)]

    def check_params(self, params: Any) -> dict[str, Any]:
        """``params`` (a trial's readable values, read from the database) if they are a configuration of this
        study's space: its parameters exactly, each value one the space accepts; else :class:`DefinitionError`."""
        if not isinstance(params, dict) or set(params) != set(self.space):
            names = sorted(map(str, params)) if isinstance(params, dict) else type(params).__name__
            raise DefinitionError(f"hyperparams {names} are not this study's parameters {sorted(self.space)}")
        try:
            return {name: check_value(name, spec, params[name], "value") for name, spec in self.space.items()}
        except SpaceError as exc:
            raise DefinitionError(f"hyperparams: {exc}") from None

    @property
    def two_objectives(self) -> bool:
        """Whether trials report return and compute together (and cannot be pruned or report a curve to Optuna)."""
        return self.objective == RETURN_AND_COMPUTE

    def trial_seed(self, number: int) -> int:
        """The training seed of tuning trial ``number`` (a retry keeps the seed of the trial it replaces)."""
        return derive_seed(self.seed, number)

    @property
    def test_seed_list(self) -> list[int]:
        """The confirmation's seeds: ``seed + 1e9 + i`` (mod 2**32), never a tuning trial's ``seed + number``."""
        return [derive_seed(self.seed, TEST_SEED_OFFSET + i) for i in range(self.test_seeds)]

    def to_json(self) -> str:
        data = asdict(self)
        data["space"] = {name: spec.to_dict() for name, spec in self.space.items()}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: Any) -> StudyDefinition:
        """Read any version up to :data:`SCHEMA_VERSION`; raise :class:`DefinitionError` for anything else.

        ``text`` comes from the database: whatever it holds, the only error it raises is :class:`DefinitionError`.
        """
        if not isinstance(text, str) or len(text) > MAX_DEFINITION_CHARS:
            raise DefinitionError(f"definition must be JSON text of at most {MAX_DEFINITION_CHARS} characters")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise DefinitionError(f"definition is not JSON: {type(exc).__name__}") from None
        if not isinstance(data, dict):
            raise DefinitionError(f"definition must be a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise DefinitionError(f"definition schema_version={version!r} is not a version this code knows")
        if version > SCHEMA_VERSION:
            raise DefinitionTooNew(
                f"definition schema_version={version} was written by a newer study_admin; this code reads "
                f"up to {SCHEMA_VERSION}: upgrade this worker (or study_admin)"
            )
        try:
            data = _upgrade(data, version)
            known = {f.name for f in fields(cls)}
            unknown = sorted(map(str, set(data) - known))
            if unknown:
                raise DefinitionError(f"definition has fields {unknown} that schema_version={version} does not have")
            if not isinstance(data.get("space"), dict):
                raise DefinitionError("definition has no space (a mapping of parameter names to their specs)")
            data["space"] = {name: ParamSpec.from_dict(name, spec) for name, spec in data["space"].items()}
            return define(**data)
        except DefinitionError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a stored definition holds, it is one study's error
            raise DefinitionError(f"definition cannot be read: {type(exc).__name__}: {str(exc)[:300]}") from None


def _check_options(values: dict[str, Any]) -> None:
    """Each option's value of its type and within its bounds or choices, else :class:`DefinitionError`."""
    for option in options_of(StudyDefinition):
        value = values[option.name]
        if option.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise DefinitionError(f"{option.name}={value!r} must be an integer")
        if not isinstance(value, option.kind):
            raise DefinitionError(f"{option.name}={value!r} must be a {option.kind.__name__}")
        try:
            option.check(value)
        except ValueError as exc:
            raise DefinitionError(str(exc)) from None


def define(**values: Any) -> StudyDefinition:
    """A definition from field values (``create``'s options, a stored definition): a float option given as an integer
    (as JSON may write it) becomes a float, ``eval_every`` 0 or absent becomes ``timesteps`` over
    :data:`DEFAULT_EVALUATIONS`, and an absent ``space`` is the algorithm's preset for the budget."""
    full: dict[str, Any] = {f.name: f.default for f in fields(StudyDefinition)} | values
    for option in options_of(StudyDefinition):
        value = full[option.name]
        if option.kind is float and isinstance(value, int) and not isinstance(value, bool):
            full[option.name] = float(value)
    if full["more_envs"] is None:
        full["more_envs"] = []
    if full["eval_every"] == 0 and isinstance(full["timesteps"], int):
        full["eval_every"] = max(full["timesteps"] // DEFAULT_EVALUATIONS, 1)
    if full["space"] is None:
        _check_options(full)  # the preset is looked up with checked values
        try:
            full["space"] = algorithm(full["algo"]).space(full["space_preset"], full["timesteps"], full["n_envs"])
        except SpaceError as exc:
            raise DefinitionError(str(exc)) from None
    return StudyDefinition(**full)


def _upgrade(data: dict[str, Any], version: int) -> dict[str, Any]:
    """Bring a stored definition of ``version`` up to :data:`SCHEMA_VERSION`, step by step."""
    data = dict(data)
    if version < 2:
        # Schema 1 searched sizes as exponents (log2_n_steps) and had no activation, max_grad_norm or
        # SAC ent_coef parameters: keep the exponents so its Optuna history stays usable, fix the new
        # parameters at SB3's defaults, and read its space as the guide's table it started from.
        entry = algorithm(data.get("algo", ""))
        guide = entry.space("guide", 1_000_000, 1)
        space = {name: dict(spec) for name, spec in data.get("space", {}).items()}
        for name, spec in space.items():
            if spec.get("kind") == "pow2":
                spec["exponent"] = True
            if spec.get("kind") != "choice" and name in guide:  # schema 1 accepted learning rates up to 1000
                (low, high), (code_low, code_high) = spec["limits"], guide[name].limits
                spec["limits"] = [max(low, code_low), min(high, code_high)]
        for name in set(entry.defaults) - set(space):
            space[name] = guide[name].to_dict()
        data["space"] = space
        data["space_preset"] = "guide"
        data["confirm"] = False  # confirmation did not exist; `study_admin confirm` runs it on demand
        evals = data.pop("pruner_warmup_evals", 1)
        data["pruner_warmup"] = min(evals * data.get("eval_every", 0) / max(data.get("timesteps", 1), 1), 0.9)
        data["schema_version"] = 2
    if version < 3:
        data["known_good"] = False  # studies were created without known-good configurations
        data["schema_version"] = 3
    if version < 4:
        data["max_compute"] = 0.0  # no cap on training compute
        data["schema_version"] = 4
    if version < 5:
        data["objective"] = RETURN
        data["schema_version"] = 5  # schema 5 adds pruners, objectives and defaults; a stored study keeps its own
    if version < 6:
        data["more_envs"], data["seeds_per_config"], data["race"] = [], 1, True  # one run per configuration
        data["schema_version"] = 6
    return data
