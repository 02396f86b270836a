"""Seasonal naive: every future period repeats the same period of the last observed season.

The baseline every forecaster must beat (and the scale of MASE). Its interval comes from the
series' own seasonal differences y[t] - y[t-m]: their empirical quantiles, widened by sqrt(k) for a
period k seasons ahead, as the seasonal random walk implies (Hyndman and Athanasopoulos,
"Forecasting: Principles and Practice", 3rd ed., section 5.5, table of multi-step standard
deviations), and clipped at zero.
"""

from __future__ import annotations

from typing import Self

import polars as pl

from models.forecasting.series import FORECAST_VALUE_COLUMNS, SeriesSpec, complete_grid, future_grid


class SeasonalNaive:
    """Repeat the last season (7 days for daily data, 52 weeks for weekly, unless told otherwise)."""

    def __init__(self, spec: SeriesSpec, season_length: int | None = None) -> None:
        self.spec = spec
        self.season_length = season_length or spec.season_length
        self._last_season: pl.DataFrame | None = None

    def fit(self, history: pl.DataFrame) -> Self:
        spec, season = self.spec, self.season_length
        grid = complete_grid(history, spec)
        grid = grid.with_columns(
            (pl.col(spec.target) - pl.col(spec.target).shift(season).over(spec.keys)).alias("_seasonal_diff"),
            pl.int_range(pl.len()).reverse().over(spec.keys).alias("_from_end"),
        )
        spread = grid.group_by(spec.keys).agg(
            pl.col("_seasonal_diff").quantile(0.1, interpolation="linear").fill_null(0.0).alias("_q10"),
            pl.col("_seasonal_diff").quantile(0.9, interpolation="linear").fill_null(0.0).alias("_q90"),
        )
        # a series shorter than a season repeats what it has, aligned to the end
        self._last_season = (
            grid.filter(pl.col("_from_end") < season)
            .select([*spec.keys, spec.date, spec.target, "_from_end"])
            .join(spread, on=spec.keys, how="left")
        )
        return self

    def predict(self, horizon: int, future_covariates: pl.DataFrame | None = None) -> pl.DataFrame:
        """`future_covariates` is accepted for a uniform interface and ignored."""
        if self._last_season is None:
            raise RuntimeError("fit the model before predicting")
        spec, season = self.spec, self.season_length
        ends = self._last_season.group_by(spec.keys).agg(
            pl.col(spec.date).max(), pl.len().alias("_available")
        )
        future = future_grid(ends.select([*spec.keys, spec.date]), spec, horizon)
        future = future.join(ends.select([*spec.keys, "_available"]), on=spec.keys).with_columns(
            pl.int_range(1, pl.len() + 1).over(spec.keys).alias("_step")
        )
        # step h repeats the value ((h - 1) mod season) periods into the last season
        future = future.with_columns(
            (pl.col("_available") - 1 - ((pl.col("_step") - 1) % pl.col("_available"))).alias("_from_end"),
            (((pl.col("_step") - 1) // season + 1).cast(pl.Float64).sqrt()).alias("_widen"),
        )
        joined = future.join(
            self._last_season.drop(spec.date), on=[*spec.keys, "_from_end"], how="left"
        ).sort([*spec.keys, spec.date])
        point = pl.col(spec.target)
        return joined.select(
            *spec.keys,
            spec.date,
            point.alias("mean"),
            pl.min_horizontal(point + pl.col("_q10") * pl.col("_widen"), point).clip(0).alias("p10"),
            point.alias("p50"),
            pl.max_horizontal(point + pl.col("_q90") * pl.col("_widen"), point).alias("p90"),
        ).select([*spec.keys, spec.date, *FORECAST_VALUE_COLUMNS])
