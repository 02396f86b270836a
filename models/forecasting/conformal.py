"""Split-conformal quantiles around a point forecast, in cells of similar series (Mondrian).

Held-out residuals (actual - predicted) are grouped into cells by two things known at forecast
time: the predicted level and the series' recent dispersion (spread over level). Each cell's
empirical residual quantiles become the offsets that turn a point forecast into P10/P50/P90. A
steady best-seller and a lumpy wholesale item with the same mean get different intervals, and a
different median: for lumpy demand the median sits well below the mean. Under exchangeability of
the held-out period and the forecast period the coverage holds per cell (Vovk, Gammerman and
Shafer, "Algorithmic Learning in a Random World", 2005, on Mondrian conformal prediction). A cell
with too few residuals falls back to its whole level bin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np


def _edges(values: np.ndarray, bins: int) -> np.ndarray:
    return np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])) if bins > 1 else np.array([])


@dataclass(frozen=True)
class BinnedResiduals:
    """Quantile offsets per (level bin, dispersion bin)."""

    levels: tuple[float, ...]
    level_edges: np.ndarray
    dispersion_edges: np.ndarray
    offsets: np.ndarray  # level bins x dispersion bins x quantile levels

    @classmethod
    def calibrate(
        cls,
        predicted: np.ndarray,
        actual: np.ndarray,
        dispersion: np.ndarray,
        levels: Sequence[float] = (0.1, 0.5, 0.9),
        level_bins: int = 5,
        dispersion_bins: int = 3,
        min_per_cell: int = 200,
    ) -> Self:
        residuals = actual - predicted
        dispersion = np.nan_to_num(dispersion, nan=0.0)
        level_bins = max(1, min(level_bins, predicted.size // (min_per_cell * dispersion_bins)))
        level_edges = _edges(predicted, level_bins)
        dispersion_edges = _edges(dispersion, dispersion_bins)
        level_index = np.searchsorted(level_edges, predicted, side="right")
        dispersion_index = np.searchsorted(dispersion_edges, dispersion, side="right")
        offsets = np.empty((level_edges.size + 1, dispersion_edges.size + 1, len(levels)))
        for i in range(offsets.shape[0]):
            in_level = level_index == i
            pooled = (
                np.quantile(residuals[in_level], levels) if in_level.any() else np.quantile(residuals, levels)
            )
            for j in range(offsets.shape[1]):
                in_cell = in_level & (dispersion_index == j)
                enough = in_cell.sum() >= min_per_cell
                offsets[i, j] = np.quantile(residuals[in_cell], levels) if enough else pooled
        return cls(tuple(levels), level_edges, dispersion_edges, offsets)

    def quantiles(self, predicted: np.ndarray, dispersion: np.ndarray) -> np.ndarray:
        """Predicted + offsets of each row's cell, clipped at zero: rows x quantile levels, ordered."""
        level_index = np.searchsorted(self.level_edges, predicted, side="right")
        dispersion_index = np.searchsorted(
            self.dispersion_edges, np.nan_to_num(dispersion, nan=0.0), side="right"
        )
        quantiles = predicted[:, None] + self.offsets[level_index, dispersion_index]
        return np.clip(quantiles, 0.0, None)
