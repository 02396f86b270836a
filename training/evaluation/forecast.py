"""Forecast evaluation: point and interval metrics, a rolling-origin backtest, breakdowns and a plot.

Metrics and their sources:
- MASE (Hyndman and Koehler, "Another look at measures of forecast accuracy", IJF 22(4), 2006):
  mean absolute error over the in-sample mean absolute seasonal-naive error. 0 is perfect; the
  in-sample seasonal naive scores exactly 1.
- WAPE: sum of absolute errors over sum of actuals (volume-weighted, robust to zero periods).
- sMAPE as in the M4 competition, 2|y - f| / (|y| + |f|) averaged, here as a fraction in [0, 2]
  (times 100 for M4's percent); a period with y = f = 0 counts as 0.
- WRMSSE, the M5 accuracy measure (M5 Competitors' Guide, Makridakis, Spiliotis and Assimakopoulos,
  2020, section 4; and "M5 accuracy competition: results, findings, and conclusions", IJF 38(4),
  2022): per series RMSSE = sqrt(mean squared error / mean squared one-step naive difference in
  sample, counted from the series' first non-zero demand), weighted by the series' share of revenue
  (units x price; units alone when there is no price) over the last 28 days of the training data.
  M5 also averages over twelve aggregation levels; here it is taken at the level given.
- bias: sum of (forecast - actual) over sum of actuals; positive means over-forecasting.
- pinball loss of the P10/P50/P90 forecasts (Koenker and Bassett, 1978), and its scaled form SPL of
  the M5 uncertainty competition (divided by the MASE denominator).
- coverage80: share of actuals inside [P10, P90]; 0.8 is calibrated.

Absolute-error metrics (MASE, WAPE, sMAPE, bias) score the P50, which minimises them; WRMSSE scores
the mean, which minimises squared error (Kolassa, "Evaluating predictive count data distributions
in retail sales forecasting", IJF 32(3), 2016).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol, Self

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from models.forecasting.series import SeriesSpec, check_columns, complete_grid

QUANTILES = {"p10": 0.1, "p50": 0.5, "p90": 0.9}
SUMMARY_METRICS = ("mase", "wape", "smape", "wrmsse", "bias", "coverage80", "pinball", "spl")


# -- metrics on arrays (one series) -------------------------------------------------------------


def mase(actual: np.ndarray, forecast: np.ndarray, insample: np.ndarray, season: int = 1) -> float:
    """Mean absolute scaled error; the scale is the in-sample MAE of the seasonal naive."""
    scale = np.mean(np.abs(insample[season:] - insample[:-season]))
    return float(np.mean(np.abs(actual - forecast)) / scale)


def wape(actual: np.ndarray, forecast: np.ndarray) -> float:
    return float(np.sum(np.abs(actual - forecast)) / np.sum(np.abs(actual)))


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    denominator = np.abs(actual) + np.abs(forecast)
    ratio = np.divide(
        2 * np.abs(actual - forecast),
        denominator,
        out=np.zeros_like(denominator, dtype=float),
        where=denominator > 0,
    )
    return float(np.mean(ratio))


def rmsse(actual: np.ndarray, forecast: np.ndarray, insample: np.ndarray) -> float:
    """Root mean squared scaled error (M5): scale from one-step differences after the first sale."""
    nonzero = np.flatnonzero(insample != 0)
    active = insample[nonzero[0] :] if nonzero.size else insample
    scale = np.mean(np.diff(active) ** 2)
    return float(np.sqrt(np.mean((actual - forecast) ** 2) / scale))


def wrmsse(rmsse_values: np.ndarray, weights: np.ndarray) -> float:
    """Weighted RMSSE: weights are renormalised to sum to 1 over the series given."""
    return float(np.sum(rmsse_values * weights) / np.sum(weights))


def bias(actual: np.ndarray, forecast: np.ndarray) -> float:
    return float(np.sum(forecast - actual) / np.sum(actual))


def pinball_loss(actual: np.ndarray, quantile_forecast: np.ndarray, level: float) -> float:
    """Mean pinball (quantile) loss of a forecast of the `level` quantile."""
    error = actual - quantile_forecast
    return float(np.mean(np.maximum(level * error, (level - 1) * error)))


def interval_coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    return float(np.mean((actual >= lower) & (actual <= upper)))


# -- metrics on frames (many series) ------------------------------------------------------------


def revenue_weights(
    history: pl.DataFrame, spec: SeriesSpec, window: int | None = None, price: str | None = None
) -> pl.DataFrame:
    """M5 weights: each series' share of revenue (or units) over the last `window` periods.

    Default window: 28 days, or 4 weeks. Returns keys and `weight`, summing to 1.
    """
    window = window or (28 if spec.frequency == "daily" else 4)
    price = price or spec.price
    start = history[spec.date].max() - spec.period * (window - 1)
    recent = history.filter(pl.col(spec.date) >= start)
    amount = pl.col(spec.target).clip(0) * (pl.col(price).fill_null(0) if price else 1.0)
    totals = recent.group_by(spec.keys).agg(amount.sum().alias("weight"))
    return totals.with_columns(pl.col("weight") / pl.col("weight").sum())


def _insample_scales(history: pl.DataFrame, spec: SeriesSpec, season: int) -> pl.DataFrame:
    """Per series: the MASE denominator and the RMSSE denominator (from the first non-zero demand)."""
    y = pl.col(spec.target)
    return (
        history.sort([*spec.keys, spec.date])
        .with_columns(
            (y - y.shift(season)).abs().over(spec.keys).alias("_seasonal_abs"),
            ((y - y.shift(1)) ** 2).over(spec.keys).alias("_step_sq"),
            # a difference counts from the period after the first non-zero demand on
            (y != 0).cast(pl.Int8).cum_max().shift(1).over(spec.keys).fill_null(0).alias("_active"),
        )
        .group_by(spec.keys)
        .agg(
            pl.col("_seasonal_abs").mean().alias("mase_scale"),
            pl.col("_step_sq").filter(pl.col("_active") == 1).mean().alias("rmsse_scale"),
        )
    )


def series_metrics(
    forecast: pl.DataFrame,
    actual: pl.DataFrame,
    history: pl.DataFrame,
    spec: SeriesSpec,
    *,
    season: int | None = None,
    weight_window: int | None = None,
    attributes: Sequence[str] = (),
) -> pl.DataFrame:
    """One row per series: its metrics and the sums that `summarize` pools across series.

    `actual` and `history` must be complete grids (see `complete_grid`); `attributes` are columns of
    `history` constant per series (market, category) carried along for breakdowns.
    """
    season = season or spec.season_length
    keys, on = list(spec.keys), [*spec.keys, spec.date]
    check_columns(forecast, [*on, "mean", *QUANTILES], "forecast")
    joined = forecast.select([*on, "mean", *QUANTILES]).join(
        actual.select([*on, spec.target]), on=on, how="inner"
    )
    y, median = pl.col(spec.target), pl.col("p50")
    denominator = y.abs() + median.abs()
    pinball = [
        pl.max_horizontal(level * (y - pl.col(name)), (level - 1) * (y - pl.col(name))).alias(
            f"_pinball_{name}"
        )
        for name, level in QUANTILES.items()
    ]
    per_series = (
        joined.with_columns(*pinball)
        .group_by(keys)
        .agg(
            pl.len().alias("periods"),
            y.sum().alias("actual_sum"),
            (median - y).abs().sum().alias("abs_error_sum"),
            (median - y).sum().alias("error_sum"),
            ((pl.col("mean") - y) ** 2).mean().alias("mse"),
            pl.when(denominator > 0)
            .then(2 * (median - y).abs() / denominator)
            .otherwise(0.0)
            .sum()
            .alias("smape_sum"),
            ((y >= pl.col("p10")) & (y <= pl.col("p90"))).sum().alias("covered"),
            pl.mean_horizontal([f"_pinball_{name}" for name in QUANTILES]).mean().alias("pinball"),
        )
    )
    per_series = per_series.join(_insample_scales(history, spec, season), on=keys, how="left")
    per_series = per_series.join(revenue_weights(history, spec, weight_window), on=keys, how="left")
    if attributes:
        per_series = per_series.join(
            history.group_by(keys).agg(pl.col(attributes).first()), on=keys, how="left"
        )

    def scaled(numerator: pl.Expr, scale: str) -> pl.Expr:
        return pl.when(pl.col(scale) > 0).then(numerator / pl.col(scale))

    return per_series.with_columns(
        pl.col("weight").fill_null(0.0),
        scaled(pl.col("abs_error_sum") / pl.col("periods"), "mase_scale").alias("mase"),
        scaled(pl.col("mse"), "rmsse_scale").sqrt().alias("rmsse"),
        scaled(pl.col("pinball"), "mase_scale").alias("spl"),
    ).sort(keys)


def summarize(per_series: pl.DataFrame, by: Sequence[str] = ()) -> pl.DataFrame:
    """Pool per-series metrics into one row (or one per group of `by`, e.g. market or category).

    MASE and SPL average over series (M4/M5 style); WAPE, bias, sMAPE and coverage pool the sums;
    WRMSSE weights each series' RMSSE by its revenue share, renormalised within the group.
    """
    weight = pl.col("weight")
    finite_weighted = weight.filter(pl.col("rmsse").is_not_null())
    aggregations = [
        pl.len().alias("series"),
        pl.col("mase").drop_nulls().mean().alias("mase"),
        (pl.col("abs_error_sum").sum() / pl.col("actual_sum").sum()).alias("wape"),
        (pl.col("smape_sum").sum() / pl.col("periods").sum()).alias("smape"),
        ((pl.col("rmsse") * weight).sum() / finite_weighted.sum()).alias("wrmsse"),
        (pl.col("error_sum").sum() / pl.col("actual_sum").sum()).alias("bias"),
        (pl.col("covered").sum() / pl.col("periods").sum()).alias("coverage80"),
        pl.col("spl").drop_nulls().mean().alias("spl"),
    ]
    if "pinball" in per_series.columns:  # mean pinball loss over series, in the target's units
        aggregations.append(pl.col("pinball").drop_nulls().mean().alias("pinball"))
    if by:
        return per_series.group_by(list(by)).agg(aggregations).sort(list(by))
    return per_series.select(aggregations)


# -- rolling-origin backtest --------------------------------------------------------------------


class Forecaster(Protocol):
    def fit(self, history: pl.DataFrame) -> Self: ...

    def predict(self, horizon: int, future_covariates: pl.DataFrame | None = None) -> pl.DataFrame: ...


@dataclass(frozen=True)
class BacktestResult:
    """`metrics`: one row per fold and series; `forecasts`: every forecast with its fold and actual;
    `folds`: per fold train_end, test_start, test_end, fit_seconds, predict_seconds."""

    metrics: pl.DataFrame
    forecasts: pl.DataFrame
    folds: pl.DataFrame

    def summary(self, by: Sequence[str] = ()) -> pl.DataFrame:
        """Metrics per fold (pooled over series), then averaged over folds."""
        per_fold = summarize(self.metrics, by=["fold", *by])
        if not by:
            return per_fold.drop("fold").mean()
        return per_fold.drop("fold").group_by(list(by)).mean().sort(list(by))

    def per_series(self, metric: str, keys: Sequence[str]) -> np.ndarray:
        """`metric` of every series in every fold, folds x series (series in key order; NaN where a
        series has no value in a fold): the units of an interval over series."""
        folds = sorted(self.metrics["fold"].unique().to_list())
        wide = (
            self.metrics.select("fold", *keys, metric)
            .pivot(on="fold", index=list(keys), values=metric)
            .sort(list(keys))
        )
        return wide.select([str(fold) for fold in folds]).cast(pl.Float64).to_numpy().T


def fold_origins(dates: Sequence[date] | pl.Series, horizon: int, folds: int, step: int) -> list[date]:
    """Last training date of each fold, oldest first; the last fold ends on the last date."""
    unique = sorted(set(dates))
    origins = []
    for fold in range(folds):
        end_index = len(unique) - 1 - (folds - 1 - fold) * step
        origin_index = end_index - horizon
        if origin_index < 1:
            raise ValueError(
                f"not enough periods ({len(unique)}) for {folds} folds of {horizon} with step {step}"
            )
        origins.append(unique[origin_index])
    return origins


def backtest(
    model_factory: Callable[[], Forecaster],
    frame: pl.DataFrame,
    horizon: int,
    folds: int = 3,
    step: int | None = None,
    *,
    spec: SeriesSpec,
    attributes: Sequence[str] = (),
    weight_window: int | None = None,
    on_fold: Callable[[int, pl.DataFrame], None] | None = None,
) -> BacktestResult:
    """Rolling-origin evaluation: refit a fresh model at each origin, forecast `horizon` periods.

    Folds are `step` periods apart (default: the horizon, so test windows tile the end of the data).
    The model sees only rows up to its origin; the covariates of the test window (price, promotion,
    FX: known in advance) are handed to `predict`, never the target. `on_fold(fold, per_series)` is
    called after each fold with its per-series metrics (e.g. to report a running score for pruning;
    it may raise to stop the backtest).
    """
    step = step or horizon
    grid = complete_grid(frame, spec)
    if attributes:
        grid = grid.join(
            frame.group_by(list(spec.keys)).agg(pl.col(attributes).first()), on=list(spec.keys), how="left"
        )
    origins = fold_origins(grid[spec.date], horizon, folds, step)
    metrics, forecasts, fold_rows = [], [], []
    for fold, origin in enumerate(origins):
        test_end = origin + spec.period * horizon
        history = grid.filter(pl.col(spec.date) <= origin)
        actual = grid.filter((pl.col(spec.date) > origin) & (pl.col(spec.date) <= test_end))
        covariates = [c for c in spec.covariates if c in actual.columns]
        future = actual.select([*spec.keys, spec.date, *covariates]) if covariates else None
        model = model_factory()
        started = time.perf_counter()
        model.fit(history)
        fitted = time.perf_counter()
        forecast = model.predict(horizon, future)
        predicted = time.perf_counter()
        per_series = series_metrics(
            forecast, actual, history, spec, weight_window=weight_window, attributes=attributes
        )
        metrics.append(per_series.with_columns(pl.lit(fold).alias("fold")))
        if on_fold is not None:
            on_fold(fold, per_series)
        on = [*spec.keys, spec.date]
        forecasts.append(
            forecast.join(actual.select([*on, spec.target]), on=on, how="left").with_columns(
                pl.lit(fold).alias("fold")
            )
        )
        fold_rows.append(
            {
                "fold": fold,
                "train_end": history[spec.date].max(),
                "test_start": actual[spec.date].min(),
                "test_end": actual[spec.date].max(),
                "fit_seconds": fitted - started,
                "predict_seconds": predicted - fitted,
            }
        )
    return BacktestResult(
        metrics=pl.concat(metrics, how="diagonal_relaxed"),
        forecasts=pl.concat(forecasts, how="diagonal_relaxed"),
        folds=pl.DataFrame(fold_rows),
    )


# -- plot ---------------------------------------------------------------------------------------


def plot_forecast(
    history: pl.DataFrame,
    forecast: pl.DataFrame,
    spec: SeriesSpec,
    *,
    series: Mapping[str, Any] | None = None,
    actual: pl.DataFrame | None = None,
    lookback: int | None = None,
    title: str | None = None,
) -> Figure:
    """History, actuals and the forecast (P50 line, P10-P90 band) of one series, as a Figure.

    `series` picks the series by its key values (default: the first series of `forecast`);
    `lookback` limits the history shown (default: four times the horizon). Nothing is shown or
    saved: the caller logs the figure.
    """
    keys = list(spec.keys)
    if series is None:
        series = forecast.select(keys).row(0, named=True)
    chosen = pl.all_horizontal([pl.col(k) == v for k, v in series.items()])
    one_forecast = forecast.filter(chosen).sort(spec.date)
    lookback = lookback or 4 * max(one_forecast.height, 1)
    one_history = history.filter(chosen).sort(spec.date).tail(lookback)

    figure = Figure(figsize=(10, 4), layout="constrained")
    axes = figure.add_subplot()
    axes.plot(one_history[spec.date], one_history[spec.target], color="0.3", linewidth=1, label="history")
    if actual is not None:
        one_actual = actual.filter(chosen).sort(spec.date)
        axes.plot(
            one_actual[spec.date],
            one_actual[spec.target],
            color="black",
            marker=".",
            linewidth=1,
            label="actual",
        )
    axes.fill_between(
        one_forecast[spec.date].to_list(),
        one_forecast["p10"].to_numpy(),
        one_forecast["p90"].to_numpy(),
        color="tab:blue",
        alpha=0.25,
        label="P10-P90",
    )
    axes.plot(
        one_forecast[spec.date], one_forecast["p50"], color="tab:blue", linewidth=1.5, label="forecast P50"
    )
    axes.set_title(title or ", ".join(f"{k}={v}" for k, v in series.items()))
    axes.set_xlabel(spec.date)
    axes.set_ylabel(spec.target)
    axes.legend(loc="upper left")
    figure.autofmt_xdate()
    return figure
