"""Bottom-up reconciliation: aggregate forecasts are sums of the bottom-level forecasts.

With levels product -> category -> market -> total, every category forecast is the sum of its
products', every market's the sum of its categories', and the total the sum of the markets', so the
numbers a planner sees at any level add up. Means and medians are summed as point forecasts. The
P10/P90 columns are summed too; that is the exact quantile of the aggregate only if the bottom
series move together (comonotone), so aggregate intervals are on the wide side.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from models.forecasting.series import FORECAST_VALUE_COLUMNS

TOTAL_LEVEL = "total"


def level_name(group_columns: Sequence[str]) -> str:
    return "/".join(group_columns) if group_columns else TOTAL_LEVEL


def bottom_up(
    bottom: pl.DataFrame,
    levels: Sequence[Sequence[str]],
    *,
    date_column: str = "date",
    value_columns: Sequence[str] = FORECAST_VALUE_COLUMNS,
) -> pl.DataFrame:
    """Sum bottom-level forecasts to each level; `levels` lists the grouping columns of each level.

    `bottom` holds one row per bottom series and date, with every grouping column present (join
    the category onto the product forecasts first). An empty list is the total. The result has a
    `level` column (e.g. "market_id/category" or "total"), every grouping column (null where the
    level does not group by it), the date and the summed values, levels in the given order.
    """
    group_columns = list(dict.fromkeys(column for level in levels for column in level))
    missing = [c for c in [*group_columns, date_column, *value_columns] if c not in bottom.columns]
    if missing:
        raise KeyError(f"bottom forecasts are missing column(s) {missing}")
    parts = []
    for level in levels:
        summed = bottom.group_by([*level, date_column]).agg(pl.col(value_columns).sum())
        absent = [pl.lit(None, dtype=bottom.schema[c]).alias(c) for c in group_columns if c not in level]
        parts.append(
            summed.with_columns(*absent, pl.lit(level_name(level)).alias("level"))
            .select("level", *group_columns, date_column, *value_columns)
            .sort([*level, date_column])
        )
    return pl.concat(parts)


def product_category_market_total(
    bottom: pl.DataFrame,
    *,
    product: str = "product_id",
    category: str = "category",
    market: str = "market_id",
    date_column: str = "date",
) -> pl.DataFrame:
    """The marketplace hierarchy: product in market, category in market, market, total."""
    levels = [[market, category, product], [market, category], [market], []]
    return bottom_up(bottom, levels, date_column=date_column)
