"""What a set of demand series looks like, and the frame operations every forecaster shares.

Series arrive in long format: one row per series and period, with the series key columns (e.g.
product_id, market_id), a date (the first day of the period) and the target (units). Optional
columns carry the price, a promotion flag or discount, and an FX rate (US dollars per unit of the
price's currency). Every forecaster returns the same frame: keys..., date, mean, p10, p50, p90.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

import polars as pl

Frequency = Literal["daily", "weekly"]
QUANTILE_COLUMNS = ("p10", "p50", "p90")
FORECAST_VALUE_COLUMNS = ("mean", *QUANTILE_COLUMNS)


@dataclass(frozen=True)
class SeriesSpec:
    """Names the columns of a long-format sales frame and its period length."""

    keys: tuple[str, ...] = ("product_id", "market_id")
    date: str = "date"
    target: str = "quantity"
    frequency: Frequency = "daily"
    market: str | None = "market_id"  # the key column that selects a holiday calendar
    price: str | None = None
    promo: str | None = None
    fx: str | None = None  # US dollars per unit of the price's currency

    def __post_init__(self) -> None:
        if self.frequency not in ("daily", "weekly"):
            raise ValueError(f"frequency must be 'daily' or 'weekly', not {self.frequency!r}")
        if self.market is not None and self.market not in self.keys:
            raise ValueError(f"market column {self.market!r} must be one of the keys {self.keys}")

    @property
    def period(self) -> timedelta:
        return timedelta(days=1 if self.frequency == "daily" else 7)

    @property
    def period_days(self) -> int:
        return self.period.days

    @property
    def season_length(self) -> int:
        """Periods in one seasonal cycle: a week of days, or a year of weeks."""
        return 7 if self.frequency == "daily" else 52

    @property
    def covariates(self) -> tuple[str, ...]:
        return tuple(column for column in (self.price, self.promo, self.fx) if column is not None)


def check_columns(frame: pl.DataFrame, columns: tuple[str, ...] | list[str], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise KeyError(f"{what} is missing column(s) {missing}; it has {frame.columns}")


def complete_grid(frame: pl.DataFrame, spec: SeriesSpec, end: date | None = None) -> pl.DataFrame:
    """Every series on a gap-free grid from its first period to `end` (default: the last date seen).

    A period without a row is a period without sales, so its target becomes 0; covariates are
    carried forward from the last known value. Duplicate (key, date) rows are summed (target) and
    averaged (covariates). The result is sorted by keys then date, so a shift of k rows within a
    series is a lag of k periods.
    """
    check_columns(frame, [*spec.keys, spec.date, spec.target], "history")
    aggregations = [pl.col(spec.target).cast(pl.Float64).sum()]
    aggregations += [pl.col(column).cast(pl.Float64).mean() for column in spec.covariates if column in frame]
    frame = (
        frame.with_columns(pl.col(spec.date).cast(pl.Date))
        .group_by([*spec.keys, spec.date])
        .agg(aggregations)
    )
    last = end or frame[spec.date].max()
    starts = frame.group_by(spec.keys).agg(pl.col(spec.date).min().alias("_start"))
    grid = starts.with_columns(
        pl.date_ranges("_start", pl.lit(last), interval=f"{spec.period_days}d").alias(spec.date)
    ).explode(spec.date)
    grid = grid.drop("_start").filter(pl.col(spec.date).is_not_null())
    completed = grid.join(frame, on=[*spec.keys, spec.date], how="left").sort([*spec.keys, spec.date])
    completed = completed.with_columns(pl.col(spec.target).fill_null(0.0))
    carried = [column for column in spec.covariates if column in completed.columns]
    if carried:
        completed = completed.with_columns(pl.col(carried).forward_fill().over(spec.keys))
    return completed


def future_grid(last_dates: pl.DataFrame, spec: SeriesSpec, horizon: int) -> pl.DataFrame:
    """Keys and the next `horizon` dates after each series' last date."""
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1, not {horizon}")
    step = spec.period_days
    return (
        last_dates.select([*spec.keys, spec.date])
        .with_columns(
            pl.date_ranges(
                pl.col(spec.date) + timedelta(days=step),
                pl.col(spec.date) + timedelta(days=step * horizon),
                interval=f"{step}d",
            ).alias(spec.date)
        )
        .explode(spec.date)
        .sort([*spec.keys, spec.date])
    )


def last_dates(frame: pl.DataFrame, spec: SeriesSpec) -> pl.DataFrame:
    return frame.group_by(spec.keys).agg(pl.col(spec.date).max())
