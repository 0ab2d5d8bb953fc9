"""Statistics that fit RL results: per-seed scores summarised robustly, with uncertainty.

A handful of seeds per configuration is what RL practice affords, and their scores are heavy-tailed:
the interquartile mean (IQM) ignores the best and worst quarter, a percentile bootstrap gives its 95 %
interval, and the probability of improvement P(X > Y) compares two configurations seed against seed
(Agarwal et al., "Deep RL at the Edge of the Statistical Precipice", NeurIPS 2021).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
# How a winner is picked among confirmed configurations: the best fresh-seed IQM, or the cheapest to train
# of those statistically tied with it (their IQM inside its interval).
BEST, CHEAPEST_TIED = "best", "cheapest-tied"
PICK_RULES = (CHEAPEST_TIED, BEST)


def iqm(scores: Sequence[float]) -> float:
    """Interquartile mean: the mean of the scores left after trimming int(n/4) from each end (as rliable)."""
    from scipy.stats import trim_mean

    return float(trim_mean(list(scores), 0.25))


def bootstrap_ci(scores: Sequence[float], *, seed: int = 0) -> tuple[float, float] | None:
    """95 % percentile-bootstrap interval of the IQM; None with fewer than two scores."""
    if len(scores) < 2:
        return None
    if len(set(scores)) == 1:
        return (float(scores[0]), float(scores[0]))
    import numpy as np
    from scipy.stats import bootstrap, trim_mean

    result = bootstrap(
        (np.asarray(scores, dtype=float),),
        lambda sample, axis: trim_mean(sample, 0.25, axis=axis),
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return (float(result.confidence_interval.low), float(result.confidence_interval.high))


def probability_of_improvement(scores: Sequence[float], baseline: Sequence[float]) -> float | None:
    """P(X > Y) over every pair of a score X and a baseline score Y, ties counting one half."""
    if not scores or not baseline:
        return None
    wins = sum((x > y) + 0.5 * (x == y) for x in scores for y in baseline)
    return wins / (len(scores) * len(baseline))


@dataclass(frozen=True)
class ScoreSummary:
    scores: list[float]
    mean: float | None
    iqm: float | None
    ci: tuple[float, float] | None
    worst: float | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ci"] = list(self.ci) if self.ci else None
        return data


def summarise_scores(scores: Sequence[float]) -> ScoreSummary:
    values = [float(s) for s in scores]
    if not values:
        return ScoreSummary(scores=[], mean=None, iqm=None, ci=None, worst=None)
    return ScoreSummary(
        scores=values, mean=sum(values) / len(values), iqm=iqm(values), ci=bootstrap_ci(values), worst=min(values)
    )
