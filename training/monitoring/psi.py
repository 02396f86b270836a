"""The population stability index (PSI), written once for features and predictions alike.

PSI compares the distribution of a value in a current sample with the one in a reference sample:

    PSI = sum over bins i of (current_i - reference_i) * ln(current_i / reference_i)

where `current_i` and `reference_i` are the shares of each sample in bin i. It is zero for identical
shares and grows with any shift, in either direction (it is the symmetrised Kullback-Leibler divergence
of the binned distributions).

- Numeric values: bins are the reference sample's quantiles (`bins` equal-mass bins; tied quantiles
  merge, so a value that is mostly 0 gets fewer bins), right-closed, open-ended at both sides so
  current values outside the reference range still land in the first or last bin.
- Categorical values (strings, booleans): one bin per category seen in either sample.
- Missing values (null, NaN) are a bin of their own: a feature that suddenly goes missing has drifted.
- An empty bin would make the logarithm infinite: shares are floored at `epsilon` first.

Under no drift at all PSI is not 0 on finite samples: from the chi-square approximation of PSI, its
expected value is about (bins - 1) x (1/n_reference + 1/n_current), 0.11 for 10 bins and 100 rows a
side. Feature drift therefore skips samples under a minimum size (configs/monitoring.yaml).

Thresholds (configs/monitoring.yaml): the customary reading, from credit scoring, is PSI < 0.1 no
significant change, 0.1-0.25 a moderate shift worth a look, > 0.25 a significant shift (N. Siddiqi,
"Credit Risk Scorecards", Wiley 2006, ch. 8; the figures go back to E. M. Lewis, "An Introduction to
Credit Scoring", 1992). B. Yurdakul's dissertation "Statistical Properties of Population Stability
Index" (Western Michigan University, 2018) studies how these cut-offs depend on sample size and bins.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

MISSING = "(missing)"
DEFAULT_EPSILON = 1e-4


@dataclass(frozen=True)
class PsiResult:
    """A PSI with the bins it was computed on (for the report)."""

    value: float
    kind: Literal["numeric", "categorical"]
    bins: tuple[str, ...]  # bin labels: "(-inf, 3]", "(3, 7]", ... or the categories
    reference_shares: tuple[float, ...]
    current_shares: tuple[float, ...]
    reference_rows: int
    current_rows: int


def psi_from_shares(reference: np.ndarray, current: np.ndarray, epsilon: float = DEFAULT_EPSILON) -> float:
    """PSI of two share vectors over the same bins; shares under `epsilon` count as `epsilon`."""
    reference = np.maximum(np.asarray(reference, dtype=np.float64), epsilon)
    current = np.maximum(np.asarray(current, dtype=np.float64), epsilon)
    if reference.shape != current.shape:
        raise ValueError(f"share vectors differ in length: {reference.shape} vs {current.shape}")
    return float(np.sum((current - reference) * np.log(current / reference)))


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges: the reference's 1/bins .. (bins-1)/bins quantiles, duplicates merged."""
    if bins < 2:
        raise ValueError(f"bins: need at least 2, got {bins}")
    levels = np.arange(1, bins) / bins
    return np.unique(np.quantile(reference, levels))


def numeric_psi(
    reference: np.ndarray, current: np.ndarray, bins: int = 10, epsilon: float = DEFAULT_EPSILON
) -> PsiResult:
    """PSI of two numeric samples on the reference's quantile bins; NaN is a bin of its own."""
    reference = np.asarray(reference, dtype=np.float64)
    current = np.asarray(current, dtype=np.float64)
    if reference.size == 0 or current.size == 0:
        raise ValueError(
            f"PSI needs both samples non-empty (reference {reference.size}, current {current.size})"
        )
    reference_missing, current_missing = np.isnan(reference), np.isnan(current)
    known = reference[~reference_missing]
    edges = quantile_edges(known, bins) if known.size else np.empty(0)
    # bin k holds values in (edges[k-1], edges[k]]: searchsorted "left" puts a value equal to an edge
    # in the bin that edge closes
    n_bins = len(edges) + 1
    reference_counts = np.bincount(np.searchsorted(edges, known, side="left"), minlength=n_bins)
    current_counts = np.bincount(
        np.searchsorted(edges, current[~current_missing], side="left"), minlength=n_bins
    )
    labels = _interval_labels(edges)
    reference_counts = np.append(reference_counts, reference_missing.sum())
    current_counts = np.append(current_counts, current_missing.sum())
    labels.append(MISSING)
    if reference_counts[-1] == 0 and current_counts[-1] == 0:  # no missing bin when nothing is missing
        reference_counts, current_counts, labels = reference_counts[:-1], current_counts[:-1], labels[:-1]
    return _result(reference_counts, current_counts, labels, "numeric", epsilon)


def categorical_psi(
    reference: np.ndarray | list, current: np.ndarray | list, epsilon: float = DEFAULT_EPSILON
) -> PsiResult:
    """PSI of two categorical samples by category share; None is the category `(missing)`."""
    reference_values = [MISSING if value is None else str(value) for value in reference]
    current_values = [MISSING if value is None else str(value) for value in current]
    if not reference_values or not current_values:
        raise ValueError(
            "PSI needs both samples non-empty "
            f"(reference {len(reference_values)}, current {len(current_values)})"
        )
    categories = sorted(set(reference_values) | set(current_values))
    index = {category: position for position, category in enumerate(categories)}
    reference_counts = np.bincount([index[v] for v in reference_values], minlength=len(categories))
    current_counts = np.bincount([index[v] for v in current_values], minlength=len(categories))
    return _result(reference_counts, current_counts, categories, "categorical", epsilon)


def psi_for_column(
    reference: pl.Series, current: pl.Series, bins: int = 10, epsilon: float = DEFAULT_EPSILON
) -> PsiResult:
    """PSI of one polars column in two samples: numeric columns by quantile bins, others by category."""
    if reference.dtype.is_numeric():
        return numeric_psi(
            reference.cast(pl.Float64).fill_null(np.nan).to_numpy(),
            current.cast(pl.Float64).fill_null(np.nan).to_numpy(),
            bins,
            epsilon,
        )
    return categorical_psi(reference.to_list(), current.to_list(), epsilon)


def _result(
    reference_counts: np.ndarray,
    current_counts: np.ndarray,
    labels: list[str],
    kind: Literal["numeric", "categorical"],
    epsilon: float,
) -> PsiResult:
    reference_shares = reference_counts / reference_counts.sum()
    current_shares = current_counts / current_counts.sum()
    return PsiResult(
        value=psi_from_shares(reference_shares, current_shares, epsilon),
        kind=kind,
        bins=tuple(labels),
        reference_shares=tuple(float(share) for share in reference_shares),
        current_shares=tuple(float(share) for share in current_shares),
        reference_rows=int(reference_counts.sum()),
        current_rows=int(current_counts.sum()),
    )


def _interval_labels(edges: np.ndarray) -> list[str]:
    bounds = ["-inf", *(f"{edge:.4g}" for edge in edges), "inf"]
    return [f"({low}, {high}]" for low, high in itertools.pairwise(bounds)]


def share_psi(
    reference_totals: dict[str, float], current_totals: dict[str, float], epsilon: float = DEFAULT_EPSILON
) -> PsiResult:
    """PSI of two mixes given as totals per category (units per market x category, say): each
    category's share of its side's total. Rows in the result are the rounded totals."""
    categories = sorted(set(reference_totals) | set(current_totals))
    reference = np.array([max(float(reference_totals.get(c, 0.0)), 0.0) for c in categories])
    current = np.array([max(float(current_totals.get(c, 0.0)), 0.0) for c in categories])
    if reference.sum() <= 0 or current.sum() <= 0:
        raise ValueError(f"PSI needs positive totals (reference {reference.sum()}, current {current.sum()})")
    result = _result(reference, current, categories, "categorical", epsilon)
    return PsiResult(
        result.value,
        result.kind,
        result.bins,
        result.reference_shares,
        result.current_shares,
        round(float(reference.sum())),
        round(float(current.sum())),
    )
