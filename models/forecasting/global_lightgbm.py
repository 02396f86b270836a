"""One LightGBM model across all series, in the style of the M5 accuracy winners.

Design decisions
----------------
DIRECT, in horizon buckets, not recursive. The horizon is cut into a few buckets (daily default:
days 1-7, 8-14, 15-H; weekly: 1, 2, 3-4, 5-8, 9-H); each bucket has its own model whose lags all
start at the bucket's last period. Every feature of a forecast row is then known at the origin, so:
  - training rows and forecast rows come from the same feature code (no train/serve skew);
  - no forecast is fed back as an input: errors do not compound over the horizon, and the
    intervals need no simulated future paths (a recursive model's quantiles would);
  - the cost is a handful of models, not one per step, each trained once on the whole frame.
A recursive model reads the freshest lag at every step, which matters most for trends and ramps;
the buckets keep much of that (lag 7 for next week, lag 1 for next week in weekly data). On Online
Retail 1, 2, 3 or 4 daily buckets scored within 2% MASE of each other; on Walmart five weekly
buckets beat two by 3%.

QUANTILES by split-conformal calibration of the Tweedie mean, not by quantile objectives. Each
bucket is first trained with the last H periods held out (early stopping picks the number of
trees); the held-out residuals give the P10/P50/P90 offsets, kept per cell of predicted level and
recent dispersion (see `conformal.BinnedResiduals`), so a lumpy wholesale item gets a low median
and a wide interval and a steady seller a tight one. Then the bucket is refit on all the data with
that number of trees. Against one quantile objective per level this is a third of the training,
gives calibrated coverage by construction (under exchangeability of the recent past; 0.80-0.81 on
Walmart), never crosses, and leaves one model to explain with `pred_contrib`. Quantiles are clipped
at zero: demand is not negative. The P50 is the point forecast for absolute-error metrics; `mean`
(the Tweedie prediction) for squared-error ones.

SCALING. Targets are divided by each series' mean over the training history (restored on output),
so one model serves series of 2 units a day and of 20,000 dollars a week. With `relative_level`,
lags, rolling statistics and the label are further divided by the series' recent level (the mean
of the `level_window` periods before the first lag, floored at a tenth of the series' mean): the
model learns changes relative to where a series stands, and new plateaus look like old ones. The
Tweedie objective (power 1.1, as in M5) suits intermittent, zero-inflated demand. Negative targets
(returns) count as zero.

Features: lags, rolling means, spread and zero share, calendar, the per-market event features of
`events.EventCalendar`, price (in USD when an FX column is given) and promotion, the series keys and
any static columns (e.g. category) as categoricals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Self

import lightgbm as lgb
import numpy as np
import polars as pl

from models.forecasting.conformal import BinnedResiduals
from models.forecasting.events import CATEGORICAL_EVENT_FEATURES, EVENT_FEATURES, EventCalendar
from models.forecasting.lag_features import (
    DISPERSION,
    LABEL,
    LEVEL,
    SCALED_TARGET,
    LagPlan,
    calendar_expressions,
    calendar_feature_names,
    lag_expressions,
    lag_feature_names,
    lag_plan,
    level_expressions,
    price_expressions,
    price_feature_names,
    relative_expressions,
    seasonal_mean_expressions,
)
from models.forecasting.series import (
    FORECAST_VALUE_COLUMNS,
    QUANTILE_COLUMNS,
    SeriesSpec,
    check_columns,
    complete_grid,
    future_grid,
)

QUANTILE_LEVELS = (0.1, 0.5, 0.9)
DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "tweedie",
    "tweedie_variance_power": 1.1,
    "learning_rate": 0.1,
    "num_leaves": 63,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.6,
    "bagging_fraction": 0.5,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_bin": 255,
    "verbosity": -1,
}
HORIZON_COLUMN = "_horizon"


@dataclass
class _Bucket:
    """One direct model: it serves horizons (first, last] and reads lags from `last` on."""

    first: int
    last: int
    plan: LagPlan
    booster: lgb.Booster
    intervals: BinnedResiduals  # conformal offsets, in units of the label


def default_buckets(spec: SeriesSpec, horizon: int) -> tuple[int, ...]:
    edges = (7, 14) if spec.frequency == "daily" else (1, 2, 4, 8)
    return (*(edge for edge in edges if edge < horizon), horizon)


class GlobalLightGBM:
    """Global LightGBM demand forecaster: direct horizon buckets, Tweedie mean, conformal quantiles."""

    def __init__(
        self,
        spec: SeriesSpec,
        horizon: int,
        events: pl.DataFrame | None = None,
        *,
        buckets: Sequence[int] | None = None,
        static_columns: Sequence[str] = (),
        params: Mapping[str, Any] | None = None,
        num_boost_round: int = 500,
        early_stopping_rounds: int = 25,
        calibration_periods: int | None = None,
        interval_bins: int = 5,
        refit: bool = True,
        relative_level: bool = True,
        num_threads: int = 0,
        seed: int = 0,
    ) -> None:
        self.spec = spec
        self.horizon = horizon
        self.buckets = tuple(sorted(buckets)) if buckets else default_buckets(spec, horizon)
        if self.buckets[-1] < horizon:
            raise ValueError(f"buckets {self.buckets} do not reach the horizon {horizon}")
        self.events = (
            EventCalendar(events, spec, dip_days=3 if spec.frequency == "daily" else 7)
            if events is not None
            else None
        )
        self.static_columns = tuple(static_columns)
        self.params = {**DEFAULT_PARAMS, **(params or {}), "num_threads": num_threads, "seed": seed}
        self.num_boost_round = num_boost_round
        self.early_stopping_rounds = early_stopping_rounds
        self.calibration_periods = calibration_periods or horizon
        self.interval_bins = interval_bins
        self.refit = refit
        self.relative_level = relative_level
        self._fitted_buckets: list[_Bucket] = []

    # -- fitting --------------------------------------------------------------------------------

    @property
    def categorical_columns(self) -> tuple[str, ...]:
        return (*self.spec.keys, *self.static_columns)

    def fit(self, history: pl.DataFrame) -> Self:
        spec = self.spec
        check_columns(history, [*spec.keys, spec.date, spec.target, *self.static_columns], "history")
        grid = complete_grid(history, spec)
        self._last_date = grid[spec.date].max()
        self._series = self._series_table(grid, history)
        self._codes = {
            column: self._series.select(column).unique().sort(column).with_row_index(f"_code_{column}")
            for column in self.categorical_columns
        }
        lookback = max(lag_plan(edge, spec).lookback for edge in self.buckets)
        self._tail = grid.filter(pl.col(spec.date) > self._last_date - spec.period * lookback)
        base = self._base_features(grid)
        calibration_start = self._last_date - spec.period * (self.calibration_periods - 1)
        first = 0
        self._fitted_buckets = []
        for last in self.buckets:
            plan = lag_plan(last, spec)
            rows = self._with_lags(base, plan).filter(pl.col(f"lag_{plan.shift}").is_not_null())
            self._fitted_buckets.append(self._fit_bucket(rows, plan, first, calibration_start))
            first = last
        return self

    def _series_table(self, grid: pl.DataFrame, history: pl.DataFrame) -> pl.DataFrame:
        """One row per series: scale, usual price and static columns."""
        spec = self.spec
        aggregations = [pl.col(spec.target).clip(0).mean().alias("_scale")]
        if spec.price:
            aggregations.append(pl.col(spec.price).median().alias("_usual_price"))
        table = grid.group_by(spec.keys).agg(aggregations)
        table = table.with_columns(
            pl.when(pl.col("_scale") > 0).then(pl.col("_scale")).otherwise(1.0).alias("_scale")
        )
        if self.static_columns:
            statics = history.group_by(spec.keys).agg(pl.col(self.static_columns).first())
            table = table.join(statics, on=spec.keys, how="left")
        return table

    def _base_features(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Everything but the lags: scaled target, calendar, events, price, categorical codes."""
        spec = self.spec
        frame = frame.drop([c for c in self.static_columns if c in frame.columns]).join(
            self._series, on=spec.keys, how="left"
        )
        frame = frame.with_columns(
            (pl.col(spec.target).clip(0) / pl.col("_scale")).alias(SCALED_TARGET),
            pl.col("_scale").log().cast(pl.Float32).alias("log_scale"),
            *calendar_expressions(spec),
        )
        if spec.price:
            frame = frame.with_columns(price_expressions(spec))
        if spec.promo:
            frame = frame.with_columns(pl.col(spec.promo).fill_null(0.0).cast(pl.Float32).alias("promo"))
        if self.events is not None:
            on = [spec.market, spec.date] if spec.market else [spec.date]
            frame = frame.join(self.events.features(frame), on=on, how="left")
        for column, codes in self._codes.items():
            frame = frame.join(codes, on=column, how="left")
        return frame.sort([*spec.keys, spec.date])

    def _with_lags(self, base: pl.DataFrame, plan: LagPlan) -> pl.DataFrame:
        return (
            base.with_columns(lag_expressions(plan, self.spec.keys))
            .with_columns(seasonal_mean_expressions(plan))
            .with_columns(level_expressions(plan, self.relative_level))
            .with_columns(relative_expressions(plan, self.relative_level))
        )

    def feature_names(self, plan: LagPlan) -> list[str]:
        names = [*lag_feature_names(plan), "log_scale", *calendar_feature_names(self.spec)]
        if self.relative_level:
            names.append("log_level")
        names += price_feature_names(self.spec)
        if self.spec.promo:
            names.append("promo")
        if self.events is not None:
            names += list(EVENT_FEATURES)
        names += [f"_code_{column}" for column in self.categorical_columns]
        return names

    def _categorical_features(self) -> list[str]:
        names = [f"_code_{column}" for column in self.categorical_columns]
        return names + (list(CATEGORICAL_EVENT_FEATURES) if self.events is not None else [])

    def _matrix(self, rows: pl.DataFrame, features: list[str]) -> np.ndarray:
        return rows.select(pl.col(features).cast(pl.Float32)).to_numpy()

    def _fit_bucket(self, rows: pl.DataFrame, plan: LagPlan, first: int, calibration_start: date) -> _Bucket:
        spec = self.spec
        features = self.feature_names(plan)
        held_out = (rows[spec.date] >= calibration_start).to_numpy()
        train_index, valid_index = np.flatnonzero(~held_out), np.flatnonzero(held_out)
        if train_index.size == 0 or valid_index.size == 0:
            raise ValueError(
                f"not enough history: bucket with lags from {plan.shift} has {train_index.size} training "
                f"and {valid_index.size} calibration rows"
            )
        matrix = self._matrix(rows, features)
        label = rows[LABEL].to_numpy()
        # bin the features once; the held-out fit and the refit share the bins
        full_set = lgb.Dataset(
            matrix,
            label=label,
            feature_name=features,
            categorical_feature=self._categorical_features(),
            params={"max_bin": self.params["max_bin"], "verbosity": -1},
        ).construct()
        booster = lgb.train(
            self.params,
            full_set.subset(train_index),
            num_boost_round=self.num_boost_round,
            valid_sets=[full_set.subset(valid_index)],
            callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
        )
        best = booster.best_iteration or self.num_boost_round
        predicted = booster.predict(matrix[valid_index], num_iteration=best)
        intervals = BinnedResiduals.calibrate(
            predicted,
            label[valid_index],
            rows[DISPERSION].to_numpy()[valid_index],
            levels=QUANTILE_LEVELS,
            level_bins=self.interval_bins,
        )
        del matrix
        if self.refit:
            booster = lgb.train(self.params, full_set, num_boost_round=best)
        else:
            booster.best_iteration = best
        return _Bucket(first, plan.shift, plan, booster, intervals)

    # -- forecasting ----------------------------------------------------------------------------

    def _future_rows(self, horizon: int, future_covariates: pl.DataFrame | None) -> pl.DataFrame:
        """Stored tail plus the future rows (target null), covariates joined and carried forward."""
        spec = self.spec
        if not self._fitted_buckets:
            raise RuntimeError("fit the model before predicting")
        if not 1 <= horizon <= self.horizon:
            raise ValueError(
                f"horizon must be between 1 and the fitted horizon {self.horizon}, not {horizon}"
            )
        ends = self._series.select(spec.keys).with_columns(pl.lit(self._last_date).alias(spec.date))
        future = future_grid(ends, spec, horizon).with_columns(
            pl.int_range(1, pl.len() + 1).over(spec.keys).alias(HORIZON_COLUMN)
        )
        covariates = [c for c in spec.covariates if c in self._tail.columns]
        if future_covariates is not None and covariates:
            given = [c for c in covariates if c in future_covariates.columns]
            future_covariates = future_covariates.with_columns(pl.col(spec.date).cast(pl.Date))
            future = future.join(
                future_covariates.select([*spec.keys, spec.date, *given]),
                on=[*spec.keys, spec.date],
                how="left",
            )
        tail = self._tail.with_columns(pl.lit(None, dtype=pl.Int64).alias(HORIZON_COLUMN))
        frame = pl.concat([tail, future], how="diagonal_relaxed").sort([*spec.keys, spec.date])
        # an unannounced price stays where it was; an unannounced promotion does not happen
        carried = [c for c in (spec.price, spec.fx) if c in covariates]
        if carried:
            frame = frame.with_columns(pl.col(carried).forward_fill().over(spec.keys))
        if spec.promo in covariates:
            frame = frame.with_columns(pl.col(spec.promo).fill_null(0.0))
        return frame

    def _bucket_rows(
        self, horizon: int, future_covariates: pl.DataFrame | None
    ) -> list[tuple[_Bucket, pl.DataFrame]]:
        base = self._base_features(self._future_rows(horizon, future_covariates))
        selected = []
        for bucket in self._fitted_buckets:
            if bucket.first >= horizon:
                break
            rows = self._with_lags(base, bucket.plan).filter(
                pl.col(HORIZON_COLUMN).is_between(bucket.first + 1, bucket.last)
            )
            selected.append((bucket, rows))
        return selected

    def predict(self, horizon: int, future_covariates: pl.DataFrame | None = None) -> pl.DataFrame:
        """Forecasts for the next `horizon` periods: keys..., date, mean, p10, p50, p90."""
        spec = self.spec
        parts = []
        for bucket, rows in self._bucket_rows(horizon, future_covariates):
            matrix = self._matrix(rows, self.feature_names(bucket.plan))
            mean = bucket.booster.predict(matrix, num_iteration=bucket.booster.best_iteration or None)
            scale = (rows["_scale"] * rows[LEVEL]).to_numpy()
            quantiles = bucket.intervals.quantiles(mean, rows[DISPERSION].to_numpy()) * scale[:, None]
            parts.append(
                rows.select([*spec.keys, spec.date]).with_columns(
                    pl.Series("mean", mean * scale),
                    *(pl.Series(name, quantiles[:, i]) for i, name in enumerate(QUANTILE_COLUMNS)),
                )
            )
        return (
            pl.concat(parts)
            .select([*spec.keys, spec.date, *FORECAST_VALUE_COLUMNS])
            .sort([*spec.keys, spec.date])
        )

    def explain(self, horizon: int, future_covariates: pl.DataFrame | None = None) -> pl.DataFrame:
        """Per-feature contributions to each forecast (LightGBM `pred_contrib`).

        Contributions are in the model's raw score space, the log of the mean relative to the
        series' scale and recent level. `log_baseline` is the log of that scale times level, so
        every feature column plus `bias` plus `log_baseline` adds up to log(mean). Features a
        bucket does not use (another bucket's lags) are null.
        """
        spec = self.spec
        parts = []
        for bucket, rows in self._bucket_rows(horizon, future_covariates):
            features = self.feature_names(bucket.plan)
            contributions = bucket.booster.predict(
                self._matrix(rows, features),
                num_iteration=bucket.booster.best_iteration or None,
                pred_contrib=True,
            )
            baseline = (pl.col("_scale") * pl.col(LEVEL)).log().alias("log_baseline")
            parts.append(
                rows.select(*spec.keys, spec.date, baseline).hstack(
                    pl.DataFrame(contributions, schema=[*features, "bias"], orient="row")
                )
            )
        return pl.concat(parts, how="diagonal").sort([*spec.keys, spec.date])

    def feature_importance(self, importance_type: str = "gain") -> pl.DataFrame:
        """Importance of each feature in each bucket's model (gain by default)."""
        rows = []
        for bucket in self._fitted_buckets:
            names = bucket.booster.feature_name()
            values = bucket.booster.feature_importance(importance_type=importance_type)
            rows += [
                {"bucket_last_horizon": bucket.last, "feature": n, "importance": float(v)}
                for n, v in zip(names, values, strict=True)
            ]
        return pl.DataFrame(rows).sort(["bucket_last_horizon", "importance"], descending=[False, True])
