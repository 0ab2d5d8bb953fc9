"""``study_admin report NAME --out DIR``: a Markdown summary with PNG plots a user can read or share.

Plots: learning curves of the top trials (their evaluations), parameter importances (Optuna's
default evaluator), and, once confirmed, every candidate's per-seed scores with IQM and 95 % interval
against the baseline. The confirmation plot is also attached to the tuned study itself as an artifact
when an artifact store is configured, so the dashboard shows it where users look for the winner.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna

from study_admin.display import (
    CONFIRMATION_HEADER,
    confirmation_notes,
    confirmation_rows,
    describe_cost,
    format_param,
)
from study_admin.export import provenance_note
from study_admin.models import Configuration, StudyDetails
from study_admin.studies import recommended_configuration, study_details
from study_contract.engine.confirmation import ConfirmationReport
from study_contract.formatting import describe_origin
from study_contract.space import ParamSpec, readable_names
from study_contract.store.catalog import UNREADABLE_ROW
from study_contract.store.study_view import StudyView

TOP_CURVES = 5


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_curves(study: StudyView, path: Path) -> bool:
    name, top = study.name, study.ranked[:TOP_CURVES]
    curves = [(t.number, t.curve) for t in top]
    if not any(curve for _, curve in curves):
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4))
    for number, curve in curves:
        if curve:
            axes.plot([s for s, _ in curve], [v for _, v in curve], marker="o", label=f"trial {number}")
    axes.set(xlabel="env-steps", ylabel="mean evaluation return", title=f"{name}: learning curves of the top trials")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_importances(
    storage: optuna.storages.RDBStorage, name: str, space: Mapping[str, ParamSpec], path: Path
) -> bool:
    study = optuna.load_study(study_name=name, storage=storage)
    try:
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(complete) < 3 or not any(t.params for t in complete):
            return False
        importances = optuna.importance.get_param_importances(study, target=lambda t: t.values[0])
    except (*UNREADABLE_ROW, RuntimeError):
        return False  # too few distinct values to rank anything, or parameters that cannot be read
    if not importances:
        return False
    plt = _pyplot()
    readable = readable_names(space)
    names = [readable.get(n, n) for n in importances][::-1]
    figure, axes = plt.subplots(figsize=(7, 0.4 * len(names) + 1.2))
    axes.barh(names, list(importances.values())[::-1])
    axes.set(xlabel="importance (PED-ANOVA)", title=f"{name}: parameter importances")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_confirmation(confirmation: ConfirmationReport, path: Path) -> bool:
    entries = [(f"trial {c.trial}", c.fresh) for c in confirmation.candidates] + [("baseline", confirmation.baseline)]
    entries = [(label, scores) for label, scores in entries if scores.scores]
    if not entries:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 0.6 * len(entries) + 1.5))
    for row, (label, scores) in enumerate(entries):
        color = "tab:green" if label == "baseline" else "tab:blue"
        axes.scatter(scores.scores, [row] * len(scores.scores), alpha=0.6, color=color)
        if scores.ci:
            axes.hlines(row, *scores.ci, color="black", linewidth=2)
        axes.plot([scores.iqm], [row], marker="D", color="black")
    axes.set_yticks(range(len(entries)), [label for label, _ in entries])
    axes.invert_yaxis()
    axes.set(xlabel="return on a fresh seed (points), IQM (diamond) and 95 % bootstrap interval",
             title=f"{confirmation.study}: fresh-seed confirmation")  # fmt: skip
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def _table(rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])] + [
        "| " + " | ".join(r) + " |" for r in rows[1:]
    ]


def markdown(details: StudyDetails, best: Configuration | None, images: dict[str, bool]) -> str:
    s, d = details.summary, details.definition
    lines = [
        f"# {s.name}",
        "",
        f"{d.algo.upper()} on `{d.env_id}`: {s.done}/{s.n_trials} trials done ({s.state}), "
        f"{d.timesteps} env-steps each, evaluated on {d.eval_episodes} episodes every {d.eval_every} steps.",
        "",
    ]
    if best:
        state = "confirmed on fresh seeds" if best.confirmed else "best tuning trial, not confirmed on fresh seeds"
        lines += [f"## Best configuration: trial {best.trial} ({state})", ""]
        lines += _table([["parameter", "value"], *([k, format_param(v)] for k, v in best.hyperparams.items())])
        lines += ["", f"Learning rate: `{best.learning_rate_formula}` ({best.recipe.lr_schedule}).", ""]
        if best.cost.relative_compute is not None:
            lines += [f"Training cost: {describe_cost(best.cost).removeprefix(', ')}.", ""]
        if best.pick is not None:
            lines += [f"Recommended by the rule `{best.pick.rule}`: {best.pick.statement}.", ""]
        if best.warm_start:
            lines += [f"A warm start: its configuration comes {describe_origin(best.warm_start)}.", ""]
        lines += [provenance_note(best).removeprefix("# "), ""]
    confirmation = details.confirmation
    if confirmation is not None:
        lines += [f"## Fresh-seed confirmation ({confirmation.done}/{confirmation.budget} runs)", ""]
        lines += _table([CONFIRMATION_HEADER, *confirmation_rows(confirmation)]) + [""]
        lines += [f"{note}." for note in confirmation_notes(confirmation)] + [""]
        if images.get("confirmation.png"):
            lines += ["![fresh-seed confirmation](confirmation.png)", ""]
    for image, title in (("curves.png", "Learning curves"), ("importances.png", "Parameter importances")):
        if images.get(image):
            lines += [f"## {title}", "", f"![{title.lower()}]({image})", ""]
    return "\n".join(lines)


def write_report(storage: optuna.storages.RDBStorage, study: StudyView, out: str | Path, store: Any = None) -> str:
    """Write ``report.md`` and its plots into ``out``; the report's path. With an artifact ``store``, the
    confirmation plot is attached to the study too, where the dashboard shows it."""
    name = study.name
    details = study_details(storage, study)
    best = recommended_configuration(study, details.confirmation) if details.best else None
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    images = {
        "curves.png": plot_curves(study, directory / "curves.png"),
        "importances.png": plot_importances(storage, name, details.definition.space, directory / "importances.png"),
    }
    confirmation = details.confirmation
    if confirmation is not None:
        images["confirmation.png"] = plot_confirmation(confirmation, directory / "confirmation.png")
        if store is not None and images["confirmation.png"]:
            from optuna.artifacts import upload_artifact

            from study_contract.store.artifacts import retire_study_artifact

            retire_study_artifact(store, storage, study.study_id, "confirmation.png")
            upload_artifact(artifact_store=store, file_path=str(directory / "confirmation.png"),
                            study_or_trial=optuna.load_study(study_name=name, storage=storage),
                            mimetype="image/png")  # fmt: skip
    report = directory / "report.md"
    report.write_text(markdown(details, best, images))
    return str(report)
