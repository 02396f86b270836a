"""Seeded percentile-bootstrap 95% intervals for benchmark and evaluation figures.

A figure is computed from units (users, series, campaign-days, requests). The bootstrap draws the
units with replacement, recomputes the figure on each draw and reports the 2.5th and 97.5th
percentiles of the recomputed values (Efron and Tibshirani, "An Introduction to the Bootstrap",
1993, ch. 13). A ratio of sums (WAPE, % of optimum) resamples its numerator and denominator on the
same units, so their pairing is kept.

Every statistic here takes a (resamples x n) array of unit indices and returns one value per row,
so resampling is vectorised; the draws depend only on the seed and n, so the same inputs give the
same interval every time.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
# indices drawn at once (resamples x units): bounds the memory of a bootstrap over many requests
CELLS_PER_BATCH = 4_000_000

Statistic = Callable[[np.ndarray], np.ndarray]  # (batch x n) unit indices -> one value per row


@dataclass(frozen=True)
class Interval:
    """A figure's bootstrap interval over `n` units; NaN bounds when no unit could be resampled."""

    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"n": self.n, "ci95_low": self.low, "ci95_high": self.high}

    def __str__(self) -> str:
        return f"[{self.low:.4g}, {self.high:.4g}]"


def bootstrap(
    statistic: Statistic, n: int, *, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL
) -> Interval:
    """Percentile interval of `statistic` over `resamples` draws of n units with replacement."""
    if n < 1:
        return Interval(float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    batch = max(1, CELLS_PER_BATCH // n)
    values = []
    for start in range(0, resamples, batch):
        draws = rng.integers(0, n, size=(min(batch, resamples - start), n))
        values.append(np.asarray(statistic(draws), dtype=np.float64))
    replicated = np.concatenate(values)
    replicated = replicated[np.isfinite(replicated)]
    if not replicated.size:
        return Interval(float("nan"), float("nan"), n)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(replicated, [tail, 100.0 - tail])
    return Interval(float(low), float(high), n)


def mean_interval(values: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED) -> Interval:
    """Interval of the mean over units; NaN units (no relevant item, no scale) are left out first,
    as the mean itself leaves them out."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return bootstrap(lambda draws: values[draws].mean(axis=1), len(values), resamples=resamples, seed=seed)


def ratio_interval(
    numerator: np.ndarray,
    denominator: np.ndarray,
    scale: float = 1.0,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Interval:
    """Interval of scale x sum(numerator) / sum(denominator), both resampled on the same units."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    if numerator.shape != denominator.shape:
        raise ValueError(f"numerator {numerator.shape} and denominator {denominator.shape} must pair up")

    def ratio(draws: np.ndarray) -> np.ndarray:
        below = denominator[draws].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return scale * numerator[draws].sum(axis=1) / below

    return bootstrap(ratio, len(numerator), resamples=resamples, seed=seed)


def quantile_interval(
    values: np.ndarray, quantile: float, *, resamples: int = RESAMPLES, seed: int = SEED
) -> Interval:
    """Interval of a quantile (p99 latency: quantile 0.99) over units."""
    values = np.asarray(values, dtype=np.float64)
    return bootstrap(
        lambda draws: np.percentile(values[draws], 100.0 * quantile, axis=1),
        len(values),
        resamples=resamples,
        seed=seed,
    )


def fold_mean_interval(per_fold: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED) -> Interval:
    """Interval of a backtest figure that averages units within each fold, then over the folds:
    `per_fold` is folds x units (NaN where a unit has no value in a fold); the units are resampled,
    each keeping its values in every fold."""
    per_fold = np.atleast_2d(np.asarray(per_fold, dtype=np.float64))

    def mean_of_folds(draws: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # a fold with no unit drawn is NaN, left out of the mean
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(np.nanmean(per_fold[:, draws], axis=2), axis=0)

    return bootstrap(mean_of_folds, per_fold.shape[1], resamples=resamples, seed=seed)
