"""Plain-text output for people: tables, a progress bar, and machine formats without YAML anchors.

Plain text (no colours, no cursor control) reads the same in a terminal, a log and a pipe, and keeps
``list`` fast; a table library would add an import and escape codes to strip.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import yaml

from study_admin.models import CampaignReport, Cost, StudyDetails, TrialRecord
from study_contract.algorithms import ALGORITHMS
from study_contract.formatting import describe_origin, format_duration, format_value, printable
from study_contract.statistics import CHEAPEST_TIED
from study_contract.store.catalog import Summary

if TYPE_CHECKING:
    from study_contract.definition import StudyDefinition
    from study_contract.engine.confirmation import ConfirmationReport

EXAMPLE_ALGO = next(iter(ALGORITHMS))


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


# States and stages are StrEnums: YAML writes their stored text, as JSON does.
_NoAliases.add_multi_representer(StrEnum, lambda dumper, value: dumper.represent_str(value.value))


def dump(data: Any, fmt: str) -> str:
    """JSON or YAML text of ``data``; YAML never uses anchors, even where a dict appears twice."""
    if fmt == "json":
        return json.dumps(data, indent=2, default=str) + "\n"
    return yaml.dump(data, Dumper=_NoAliases, sort_keys=False, default_flow_style=False)


def table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart, no trailing spaces; every cell one printable line (a value read from
    the database cannot drive the terminal or forge a row)."""
    if not rows:
        return ""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows) + "\n"


def bar(done: int, total: int, width: int = 30) -> str:
    filled = round(width * done / total) if total else width
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def listing(summaries: list[Summary]) -> str:
    if not summaries:
        return f"no studies; create one with: study_admin create --algo {EXAMPLE_ALGO} --env Hopper-v5\n"
    header = ["NAME", "ALGO", "ENV", "STATE", "DONE/BUDGET", "RUNNING", "WORKERS", "PRUNED", "FAILED", "BEST",
              "COMPUTE", "ETA"]  # fmt: skip
    rows = [header] + [
        [
            printable(s.name),
            s.algo or "-",
            s.env_id or "-",
            s.state,
            f"{s.done}/{s.n_trials}" if s.algo else "-",
            str(s.running),
            str(s.workers),
            str(s.pruned),
            str(s.failed),
            format_value(s.best_value),
            _times(s.best_relative_compute),
            format_duration(s.eta_seconds),
        ]
        for s in summaries
    ]
    notes = [f"{printable(s.name)}: {printable(s.error)}" for s in summaries if s.error]
    notes += [f"{printable(s.name)}: {printable(s.paused_reason)}" for s in summaries if s.paused_reason]
    return table(rows) + "".join(f"  {note}\n" for note in notes)


def format_param(value: Any) -> str:
    """A parameter's value as one printable line."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return printable(value if isinstance(value, str) else str(value))


def show(details: StudyDetails) -> str:
    """``study_admin show`` for people: header, progress and ETA, accounting, best, top trials, failures."""
    s, d = details.summary, details.definition
    lines = [f"{s.name}: {d.algo.upper()} on {tasks(d)}, {s.state}"]
    if s.paused_reason:
        lines.append(f"  paused: {printable(s.paused_reason)}")
    eta = format_duration(s.eta_seconds)
    workers = f"{s.workers} worker{'s' if s.workers != 1 else ''}"
    lines.append(f"progress  {bar(s.done, s.n_trials)} {s.done}/{s.n_trials} done, ETA {eta} with {workers}")
    lines.append(
        f"trials    complete {s.complete}, pruned {s.pruned}, failed {s.failed}, running {s.running}, "
        f"waiting {s.waiting} = {s.accounted} of budget {s.n_trials}" + (f"; retried {s.retried}" if s.retried else "")
    )
    if s.mismatch:
        lines.append(f"  MISMATCH: {s.mismatch}")
    if details.mean_train_steps_per_second:
        lines.append(
            f"speed     {details.mean_train_steps_per_second:.0f} env-steps/s per trial, "
            f"{details.env_steps_total} env-steps so far"
        )
    lines.append(
        f"budget    {d.n_trials} trials x {d.timesteps} env-steps, evaluated every {d.eval_every} "
        f"on {d.eval_episodes} episodes; sampler {d.sampler}, pruner {d.pruner}, seed {d.seed}"
    )
    best = details.best
    if best:
        cost = describe_cost(best.cost)
        lines.append(f"best      trial {best.number}: {format_value(best.value)} (seed {best.seed}){cost}")
        if best.warm_start:
            lines.append(f"            warm start {describe_origin(best.warm_start)}")
        lines.extend(f"            {printable(name)} = {format_param(value)}"
                     for name, value in (best.hyperparams or {}).items())  # fmt: skip
    else:
        lines.append("best      - (no completed trial yet)")
    top = details.top_trials
    if top:
        first = top[0].hyperparams or {}
        varying = [n for n in first if len({repr((t.hyperparams or {}).get(n)) for t in top}) > 1]
        origin = ["FROM"] if any(t.warm_start for t in top) else []
        rows = [["TRIAL", "VALUE", "SEED", "MINUTES", "COMPUTE", "S/1K STEPS", *origin, *varying]] + [
            [str(t.number), format_value(t.value), str(t.seed), f"{(t.wall_seconds or 0) / 60:.1f}",
             _times(t.cost.relative_compute), format_value(t.cost.seconds_per_kstep),
             *[f"{t.warm_start['study']} #{t.warm_start['trial']}" if t.warm_start else "-" for _ in origin],
             *[format_param((t.hyperparams or {}).get(n)) for n in varying]]
            for t in top
        ]  # fmt: skip
        lines.append("top trials")
        lines.extend("  " + row for row in table(rows).splitlines())
        lines.extend(instances(top))
    if details.failures:
        lines.append("recent failures")
        lines.extend(f"  trial {f.number}: {printable(f.fail_reason)}" for f in details.failures)
    lines.extend(confirmation(details.confirmation))
    return "\n".join(lines) + "\n"


def trial(name: str, definition: StudyDefinition, t: TrialRecord) -> str:
    """``study_admin show NAME --trial N`` for people: the trial, its curve, cost and what produced its value."""
    value = "" if t.value is None else f", value {format_value(t.value)}"
    lines = [f"trial {t.number} of {printable(name)}: {definition.algo.upper()} on {tasks(definition)}, {t.state}"
             f"{value} (seed {t.seed})"]  # fmt: skip
    if t.fail_reason:
        lines.append(f"  failed: {printable(t.fail_reason)}")
    lines.append("configuration")
    lines.extend(f"  {printable(n)} = {format_param(v)}" for n, v in (t.hyperparams or {}).items())
    if t.curve:
        points = ", ".join(f"{step}: {format_value(v)}" for step, v in t.curve)
        lines.append(f"curve     {points}")
    if t.env_steps is not None:
        lines.append(f"training  {t.env_steps} env-steps in {format_duration(t.wall_seconds)} on "
                     f"{printable(t.worker or '-')}{describe_cost(t.cost)}")  # fmt: skip
    if t.warm_start:
        lines.append(f"warm start {describe_origin(t.warm_start)}")
    if definition.has_instances:
        lines.extend(instances([t]) or ["instances: queued, or not yet all done (see the study's :task-N studies)"])
    else:
        lines.extend(provenance(t.provenance))
    return "\n".join(lines) + "\n"


def tasks(definition: StudyDefinition) -> str:
    """The tasks a study tunes for, and its seeds per configuration when more than one."""
    seeds = definition.seeds_per_config
    return ", ".join(definition.tasks) + (f" ({seeds} seeds per configuration)" if seeds > 1 else "")


def instances(trials: Sequence[TrialRecord]) -> list[str]:
    """Each configuration's return on every task and seed, for the trials that have them."""
    rows = [[str(t.number), printable(task), *("-" if r is None else format_value(r) for r in returns)]
            for t in trials for task, returns in (t.instance_returns or {}).items()]  # fmt: skip
    if not rows:
        return []
    width = max(len(row) for row in rows)
    header = ["TRIAL", "TASK", *(f"SEED {j + 1}" for j in range(width - 2))]
    padded = [row + ["-"] * (width - len(row)) for row in rows]
    return ["returns per instance"] + ["  " + row for row in table([header, *padded]).splitlines()]


def provenance(recorded: dict[str, Any] | None) -> list[str]:
    if not recorded:
        return ["provenance not recorded (a worker release before provenance ran this trial)"]
    lines = ["provenance"]
    versions = recorded.get("versions") or {}
    if versions:
        lines.append("  versions  " + ", ".join(f"{printable(k)} {printable(v)}" for k, v in sorted(versions.items())))
    env = recorded.get("env") or {}
    if env.get("id"):
        lines.append(
            f"  task      {printable(env.get('id') or '-')}, at most {env.get('max_episode_steps')} steps an "
            f"episode, keyword arguments {printable(json.dumps(env.get('kwargs') or {}, sort_keys=True))}"
        )
    seeds = recorded.get("seeds") or {}
    if seeds:
        lines.append(f"  seeds     training {seeds.get('training')}, evaluation {seeds.get('evaluation')}")
    if recorded.get("host") or recorded.get("threads"):
        lines.append(f"  worker    {printable(recorded.get('host') or '-')}, {recorded.get('threads')} torch threads")
    return lines


def campaign_list(reports: list[CampaignReport]) -> str:
    if not reports:
        return (
            f"no campaigns; create one with: study_admin campaign create --algo {EXAMPLE_ALGO} --env HalfCheetah-v5\n"
        )
    rows = [["CAMPAIGN", "STAGE", "STATE", "ENV-STEPS/BUDGET", "WINNER"]]
    for r in reports:
        w = r.winner
        best = f"{format_value(w.value)} ({w.study} #{w.trial})" if w else "-"
        rows.append([r.campaign, r.current.stage, r.current.state, f"{r.env_steps}/{r.budget_steps}", best])
    return table(rows)


def campaign(report: CampaignReport) -> str:
    """``campaign show``: the ladder, one row per stage, then each stage's decision."""
    rows = [["STAGE", "STUDY", "STATE", "TRIALS", "ENV-STEPS", "BEST", "VS BASELINE", "FIXED FROM BEFORE"]]
    for s in report.stages:
        gain = s.improvement_over_baseline
        rows.append([s.stage, s.study, s.state, f"{s.done}/{s.budget_trials}", str(s.env_steps),
                     format_value(s.best_value), "-" if gain is None else f"{gain:+.2f}",
                     ", ".join(f"{k}={format_param(v)}" for k, v in s.fixed.items()) or "-"])  # fmt: skip
    lines = [
        f"campaign {report.campaign}: {report.env_steps}/{report.budget_steps} env-steps",
        *table(rows).splitlines(),
    ]
    for s in report.stages:
        if s.decision:
            lines.append(
                f"  {s.stage}: {printable(s.decision.reason)}"
                + ("; kept the previous winner" * s.decision.kept_previous)
            )
    w = report.winner
    if w and w.confirmed:
        gain = w.improvement_over_baseline
        lines.append(
            f"winner: trial {w.trial} of {w.study}, fresh-seed IQM {format_value(w.value)} {_ci(w.ci)}, "
            f"{'-' if gain is None else f'{gain:+.2f}'} over the baseline, "
            f"P(beats baseline) {format_value(w.p_improvement)}"
        )
    elif w:
        lines.append(f"winner: trial {w.trial} of {w.study} ({format_value(w.value)}, tuning seed)")
    lines.extend(confirmation(report.confirmation))
    return "\n".join(lines) + "\n"


def _times(ratio: float | None) -> str:
    """A training cost relative to SB3's defaults, e.g. ``2.50x``."""
    return "-" if ratio is None else f"{ratio:.2f}x"


def describe_cost(cost: Cost) -> str:
    if cost.relative_compute is None:
        return ""
    speed = "" if cost.seconds_per_kstep is None else f", {cost.seconds_per_kstep:.2f} s per 1,000 env-steps"
    return f", {_times(cost.relative_compute)} the defaults' training compute{speed}"


def _ci(ci: Sequence[float] | None) -> str:
    return f"[{format_value(ci[0])}, {format_value(ci[1])}]" if ci else "-"


CONFIRMATION_HEADER = ["CANDIDATE", "TUNING RANK", "TUNING VALUE", "FRESH IQM", "95% CI", "MEAN", "WORST", "SEEDS",
                       "P(>BASELINE)", "COMPUTE", "S/1K STEPS"]  # fmt: skip


def confirmation_rows(report: ConfirmationReport) -> list[list[str]]:
    """The candidates beside their tuning ranking, then the baseline: one table for every format."""
    rows = []
    for c in report.candidates:
        p_improvement = "-" if c.p_improvement is None else f"{c.p_improvement:.2f}"
        rows.append([f"trial {c.trial}", str(c.tuning_rank), format_value(c.tuning_value), format_value(c.fresh.iqm),
                     _ci(c.fresh.ci), format_value(c.fresh.mean), format_value(c.fresh.worst),
                     str(len(c.fresh.scores)), p_improvement, _times(c.relative_compute),
                     format_value(c.seconds_per_kstep)])  # fmt: skip
    b = report.baseline
    rows.append(["baseline (SB3 defaults)", "-", "-", format_value(b.iqm), _ci(b.ci), format_value(b.mean),
                 format_value(b.worst), str(len(b.scores)), "-", "-",
                 format_value(report.baseline_seconds_per_kstep)])  # fmt: skip
    return rows


def confirmation_notes(report: ConfirmationReport) -> list[str]:
    if not report.confirmed or report.winner is None:
        return []
    notes = [f"winner: trial {report.winner.trial} (best fresh-seed IQM)"]
    cheapest = report.pick(CHEAPEST_TIED)
    if cheapest is not None and cheapest.trial != report.winner.trial:
        notes.append(f"recommended (cheapest of those tied with it): {cheapest.statement}")
    if not report.rankings_agree:
        notes.append("note: the fresh-seed ranking differs from the tuning-seed ranking")
    if not report.beats_baseline:
        notes.append("note: SB3's defaults did as well or better on the fresh seeds")
    return notes


def confirmation(report: ConfirmationReport | None) -> list[str]:
    """The fresh-seed candidates beside their tuning ranking, so a disagreement shows at once."""
    if report is None:
        return []
    head = f"confirmation  {report.study}: {report.done}/{report.budget} runs on test seeds {report.test_seeds}"
    rows = table([CONFIRMATION_HEADER, *confirmation_rows(report)]).splitlines()
    return [head, *("  " + row for row in rows), *("  " + note for note in confirmation_notes(report)),
            *confirmation_tasks(report)]  # fmt: skip


def confirmation_tasks(report: ConfirmationReport) -> list[str]:
    """A study tuned for several tasks: each candidate's IQM of raw fresh-seed returns on every task (the table's
    IQMs are of returns normalised per task, 0 the worst fresh-seed run there and 1 the best)."""
    if report.baseline_per_task is None:
        return []
    tasks = list(report.baseline_per_task)
    rows = [["CANDIDATE", *tasks]]
    rows += [[f"trial {c.trial}", *(format_value((c.per_task or {}).get(t)) for t in tasks)] for c in report.candidates]
    rows.append(["baseline (SB3 defaults)", *(format_value(report.baseline_per_task.get(t)) for t in tasks)])
    return ["  fresh-seed IQM per task (raw returns; the table above is normalised per task)",
            *("    " + row for row in table(rows).splitlines())]  # fmt: skip
