"""A small long-format sales file (sku, day, units) as a user would hand to `benchmark forecaster`."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl


def write_sales_csv(path: Path, series: int, seed: int = 1) -> Path:
    """`series` SKUs with Poisson(4) daily units over 2025-01-01..2025-03-31, written as CSV."""
    rng = np.random.default_rng(seed)
    days = pl.date_range(date(2025, 1, 1), date(2025, 3, 31), eager=True)
    pl.concat(
        pl.DataFrame({"sku": f"S{index}", "day": days, "units": rng.poisson(4, len(days)).astype(float)})
        for index in range(series)
    ).write_csv(path)
    return path
