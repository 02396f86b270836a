"""Evaluating the forecaster on its backtest folds, beside its baselines.

Seasonal naive, the oracle (the simulator's true mean demand, when its ground truth is there),
Prophet per series on Ray (when `prophet.enabled`, on the top series), per-market and per-category
breakdowns, bottom-up reconciled errors, a holiday period plotted with its P10-P90 band, and
per-feature contributions of the final model.
"""

from __future__ import annotations

import math
import re
import time
from datetime import date, timedelta
from typing import Any, Self

import numpy as np
import polars as pl

from models.forecasting.series import FORECAST_VALUE_COLUMNS
from training.forecaster.config import ForecasterConfig
from training.forecaster.data import SPEC, ForecastData
from training.forecaster.fit import (
    ForecasterTrained,
    lightgbm_factory,
    quiet_lightgbm,
    ray_map,
    ray_runtime,
    run_backtest,
)
from training.pipeline import Evaluation, TrainingSet

SUMMARY_KEYS = ("mase", "wape", "smape", "wrmsse", "bias", "coverage80", "pinball", "spl")


class OracleForecaster:
    """The simulator's true mean demand as a forecast: P10/P50/P90 by Monte Carlo of its units.

    Units are purchases plus extra units per purchase (1 + Poisson(extra) each), purchases
    Poisson with mean mean_demand / (1 + extra): the simulator's own sampling model. Reading the
    truth is only allowed here, in evaluation.
    """

    def __init__(self, truth: pl.DataFrame, extra_units_mean: float, draws: int, seed: int = 0) -> None:
        self.truth = truth
        self.extra = extra_units_mean
        self.draws = draws
        self.rng = np.random.default_rng(seed)

    def fit(self, history: pl.DataFrame) -> Self:
        self.series = history.select(SPEC.keys).unique()
        self.last = history[SPEC.date].max()
        return self

    def predict(self, horizon: int, future_covariates: pl.DataFrame | None = None) -> pl.DataFrame:
        days = pl.DataFrame(
            {
                "date": pl.date_range(
                    self.last + timedelta(days=1), self.last + timedelta(days=horizon), eager=True
                )
            }
        )
        grid = self.series.join(days, how="cross").join(self.truth, on=[*SPEC.keys, "date"], how="left")
        mean = grid["mean_demand"].fill_null(0.0).to_numpy()
        purchases = self.rng.poisson(np.repeat(mean[:, None] / (1 + self.extra), self.draws, axis=1))
        units = purchases + self.rng.poisson(self.extra * purchases)
        quantiles = np.quantile(units, [0.1, 0.5, 0.9], axis=1)
        return (
            grid.select(*SPEC.keys, "date")
            .with_columns(
                pl.Series("mean", mean),
                pl.Series("p10", quantiles[0]),
                pl.Series("p50", quantiles[1]),
                pl.Series("p90", quantiles[2]),
            )
            .sort([*SPEC.keys, "date"])
        )


def _summary(result: Any) -> dict[str, float]:
    row = result.summary().row(0, named=True)
    return {
        key: float(row[key]) for key in SUMMARY_KEYS if row.get(key) is not None and math.isfinite(row[key])
    }


def _metric_name(value: Any) -> str:
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", str(value))


def _breakdown(result: Any, by: str) -> tuple[dict[str, dict[str, float]], pl.DataFrame]:
    table = result.summary(by=[by])
    metrics = {
        _metric_name(row[by]): {
            k: float(row[k])
            for k in ("mase", "wape", "coverage80")
            if row[k] is not None and math.isfinite(row[k])
        }
        for row in table.iter_rows(named=True)
    }
    return metrics, table


def _subset(result: Any, series: pl.DataFrame) -> Any:
    from training.evaluation.forecast import BacktestResult

    keys = list(SPEC.keys)
    return BacktestResult(
        result.metrics.join(series, on=keys), result.forecasts.join(series, on=keys), result.folds
    )


def _reconciled_wape(result: Any, categories: pl.DataFrame) -> dict[str, float]:
    """Bottom-up sums of the last fold's forecasts and actuals; WAPE of the P50 at each level."""
    from models.forecasting.reconcile import bottom_up, level_name

    last = result.forecasts.filter(pl.col("fold") == result.forecasts["fold"].max()).join(
        categories, on="product_id", how="left"
    )
    levels = [["market_id", "category", "product_id"], ["market_id", "category"], ["market_id"], []]
    summed = bottom_up(last, levels, value_columns=(*FORECAST_VALUE_COLUMNS, SPEC.target))
    out = {}
    for level in levels:
        part = summed.filter(pl.col("level") == level_name(level))
        out[_metric_name(level_name(level)).replace("/", "_")] = float(
            (part["p50"] - part[SPEC.target]).abs().sum() / max(part[SPEC.target].sum(), 1e-9)
        )
    return out


def _holiday_window(data: ForecastData, config: ForecasterConfig) -> tuple[date, str] | None:
    """A week before the first day of the configured event's last occurrence whose window fits in the
    history, and the market (of those running it then) that sold the most in that window."""
    plot = config.holiday_plot
    first, horizon = data.frame["date"].min(), timedelta(days=config.horizon)
    starts = (
        data.events.filter(pl.col("name") == plot.event)
        .select("market_id", "date")
        .unique()
        .sort("market_id", "date")
        # an occurrence starts on a day that does not follow another day of the event
        .filter((pl.col("date") - pl.col("date").shift(1).over("market_id")).dt.total_days().fill_null(2) > 1)
        .with_columns((pl.col("date") - timedelta(days=plot.days_before)).alias("origin"))
        .filter(
            (pl.col("origin") + horizon <= data.last_date)
            & ((pl.col("origin") - first).dt.total_days() > 2 * config.horizon + 14)
        )
    )
    if starts.height == 0:
        return None
    origin = starts["origin"].max()
    markets = starts.filter(pl.col("origin") == origin)["market_id"]
    in_window = data.frame.filter(
        pl.col("market_id").is_in(markets.implode()),
        (pl.col("date") > origin) & (pl.col("date") <= origin + horizon),
    )
    volume = (
        in_window.group_by("market_id")
        .agg(pl.col(SPEC.target).sum())
        .sort([SPEC.target, "market_id"], descending=[True, False])
    )
    return origin, (volume["market_id"][0] if volume.height else markets.sort()[0])


def _holiday_evaluation(
    trained: ForecasterTrained, data: ForecastData, config: ForecasterConfig
) -> tuple[dict[str, Any], dict[str, Any]]:
    from models.forecasting import SeasonalNaive
    from training.evaluation.forecast import plot_forecast, series_metrics, summarize

    window = _holiday_window(data, config)
    if window is None:
        return {}, {}
    origin, market = window
    end = origin + timedelta(days=config.horizon)
    history = data.frame.filter(pl.col("date") <= origin)
    actual = data.frame.filter((pl.col("date") > origin) & (pl.col("date") <= end))
    future = actual.drop(SPEC.target)
    model = lightgbm_factory(data, config, trained.params)().fit(history)
    forecast = model.predict(config.horizon, future)
    naive = SeasonalNaive(SPEC).fit(history).predict(config.horizon)
    metrics: dict[str, Any] = {}
    for name, candidate in (("lightgbm", forecast), ("seasonal_naive", naive)):
        row = summarize(series_metrics(candidate, actual, history, SPEC)).row(0, named=True)
        metrics[name] = {
            k: float(row[k])
            for k in ("mase", "wape", "coverage80")
            if row[k] is not None and math.isfinite(row[k])
        }
    top = (
        actual.filter(pl.col("market_id") == market)
        .group_by(SPEC.keys)
        .agg(pl.col(SPEC.target).sum())
        .sort([SPEC.target, "product_id"], descending=[True, False])
        .head(config.holiday_plot.series)
    )
    figures = {}
    for index, series in enumerate(top.select(SPEC.keys).iter_rows(named=True)):
        figures[f"holiday_{index}_{series['product_id']}_{series['market_id']}.png"] = plot_forecast(
            history,
            forecast,
            SPEC,
            series=series,
            actual=actual,
            lookback=3 * config.horizon,
            title=f"{series['product_id']} in {series['market_id']}: {config.holiday_plot.event} "
            f"{origin + timedelta(days=config.holiday_plot.days_before)}, forecast from {origin}",
        )
    return metrics, figures


def evaluate(trained: ForecasterTrained, training_set: TrainingSet, config: ForecasterConfig) -> Evaluation:
    with quiet_lightgbm():
        return _evaluate(trained, training_set, config)


def _evaluate(trained: ForecasterTrained, training_set: TrainingSet, config: ForecasterConfig) -> Evaluation:
    from models.forecasting import ProphetPerSeries, SeasonalNaive

    data: ForecastData = training_set.data
    lightgbm = trained.backtest
    metrics: dict[str, Any] = {"lightgbm": _summary(lightgbm)}
    tables: dict[str, pl.DataFrame] = {"backtest_folds": lightgbm.folds}
    timing = {"lightgbm_backtest_s": trained.backtest_seconds}

    naive = run_backtest(lambda: SeasonalNaive(SPEC), data, config)
    metrics["seasonal_naive"] = _summary(naive)
    metrics["vs_seasonal_naive"] = {
        "mase_ratio": metrics["lightgbm"]["mase"] / metrics["seasonal_naive"]["mase"]
    }

    if data.truth is not None:
        oracle = run_backtest(
            lambda: OracleForecaster(data.truth, data.extra_units_mean, config.oracle_draws), data, config
        )
        metrics["oracle"] = _summary(oracle)
        metrics["oracle_ratio"] = {
            key: metrics["lightgbm"][key] / metrics["oracle"][key]
            for key in ("mase", "wape", "wrmsse", "pinball")
            if metrics["oracle"].get(key)
        }

    if config.prophet.enabled:
        top = (
            data.frame.group_by(SPEC.keys)
            .agg(pl.col(SPEC.target).sum())
            .sort([SPEC.target, "product_id"], descending=[True, False])
            .head(config.prophet.max_series)
            .select(SPEC.keys)
        )
        subset = data.frame.join(top, on=list(SPEC.keys))
        prophet_data = ForecastData(
            subset,
            data.future,
            data.others,
            data.unsold,
            data.events,
            data.last_date,
            None,
            0.0,
            data.ray_address,
        )
        executor = ray_map(data.ray_address, num_cpus=config.prophet.num_cpus)
        started = time.perf_counter()
        with ray_runtime(data.ray_address, config.prophet.num_cpus):
            prophet = run_backtest(
                lambda: ProphetPerSeries(
                    SPEC,
                    data.events,
                    executor=executor,
                    uncertainty_samples=config.prophet.uncertainty_samples,
                ),
                prophet_data,
                config,
            )
        timing["prophet_ray_s"] = time.perf_counter() - started
        metrics["prophet"] = _summary(prophet)
        metrics["lightgbm_on_prophet_series"] = _summary(_subset(lightgbm, top))
        metrics["vs_prophet"] = {
            "mase_ratio": metrics["lightgbm_on_prophet_series"]["mase"] / metrics["prophet"]["mase"]
        }
    metrics["timing"] = timing

    for by in ("market_id", "category"):
        metrics[f"by_{by.removesuffix('_id')}"], tables[f"by_{by.removesuffix('_id')}"] = _breakdown(
            lightgbm, by
        )
    categories = data.frame.group_by("product_id").agg(pl.col("category").first())
    metrics["reconciled_wape"] = _reconciled_wape(lightgbm, categories)

    holiday_metrics, figures = _holiday_evaluation(trained, data, config)
    if holiday_metrics:
        metrics["holiday"] = holiday_metrics
    figures.update(_last_fold_figures(lightgbm, data, config))
    contributions = _contributions(trained, data, config)
    tables["contributions"] = contributions
    tables["model_comparison"] = pl.DataFrame(
        [
            {"model": name, **values}
            for name, values in metrics.items()
            if name in ("lightgbm", "seasonal_naive", "oracle", "prophet", "lightgbm_on_prophet_series")
        ]
    )
    return Evaluation(
        metrics, primary_metric="lightgbm.mase", higher_is_better=False, figures=figures, tables=tables
    )


def _last_fold_figures(result: Any, data: ForecastData, config: ForecasterConfig) -> dict[str, Any]:
    from training.evaluation.forecast import plot_forecast

    last = result.forecasts.filter(pl.col("fold") == result.forecasts["fold"].max())
    top = (
        last.group_by(SPEC.keys)
        .agg(pl.col(SPEC.target).sum())
        .sort([SPEC.target, "product_id"], descending=[True, False])
        .head(1)
    )
    series = top.select(SPEC.keys).row(0, named=True)
    origin = last["date"].min() - timedelta(days=1)
    figure = plot_forecast(
        data.frame.filter(pl.col("date") <= origin),
        last,
        SPEC,
        series=series,
        actual=data.frame.filter(pl.col("date") > origin),
        title=f"last backtest fold: {series['product_id']} in {series['market_id']} (P10-P90 band)",
    )
    return {"last_fold.png": figure}


def _contributions(trained: ForecasterTrained, data: ForecastData, config: ForecasterConfig) -> pl.DataFrame:
    """Mean absolute per-feature contribution (LightGBM pred_contrib) to the served forecasts."""
    explained = trained.final_model.explain(config.horizon, data.future)
    features = [c for c in explained.columns if c not in (*SPEC.keys, SPEC.date, "log_baseline", "bias")]
    means = explained.select(pl.col(features).abs().mean())
    return (
        pl.DataFrame({"feature": features, "mean_abs_contribution": [means[c][0] for c in features]})
        .drop_nulls()
        .sort("mean_abs_contribution", descending=True)
    )
