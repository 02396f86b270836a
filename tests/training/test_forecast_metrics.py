"""Forecast metrics on hand-computed examples, the rolling-origin backtest, breakdowns and the plot."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Self

import numpy as np
import polars as pl
import pytest
from matplotlib.figure import Figure

from models.forecasting import SeasonalNaive, SeriesSpec
from training.evaluation.forecast import (
    backtest,
    bias,
    fold_origins,
    interval_coverage,
    mase,
    pinball_loss,
    plot_forecast,
    revenue_weights,
    rmsse,
    series_metrics,
    smape,
    summarize,
    wape,
    wrmsse,
)

SPEC = SeriesSpec(keys=("product_id", "market_id"), target="quantity", frequency="daily")


def test_mase_of_a_perfect_forecast_is_zero() -> None:
    insample = np.array([3.0, 5, 4, 6, 2, 7, 5, 4])
    actual = np.array([5.0, 6, 3])
    assert mase(actual, actual.copy(), insample, season=2) == 0.0


def test_mase_of_the_insample_seasonal_naive_is_one() -> None:
    insample = np.array([3.0, 5, 4, 6, 2, 7, 5, 4, 9, 1])
    for season in (1, 2, 3):
        assert mase(insample[season:], insample[:-season], insample, season) == pytest.approx(1.0)


def test_mase_by_hand() -> None:
    # seasonal (m=1) in-sample differences |2-1|, |4-2|, |4-4| -> scale 1; errors 1 and 3 -> MAE 2
    assert mase(np.array([5.0, 5.0]), np.array([4.0, 8.0]), np.array([1.0, 2, 4, 4]), season=1) == 2.0


def test_wape_smape_bias_by_hand() -> None:
    actual, forecast = np.array([10.0, 0.0, 5.0]), np.array([8.0, 0.0, 10.0])
    assert wape(actual, forecast) == pytest.approx((2 + 0 + 5) / 15)
    # terms 2*2/18, 0 (0/0 counts as 0), 2*5/15
    assert smape(actual, forecast) == pytest.approx((4 / 18 + 0 + 10 / 15) / 3)
    assert bias(actual, forecast) == pytest.approx((-2 + 0 + 5) / 15)


def test_rmsse_starts_its_scale_at_the_first_sale() -> None:
    insample = np.array([0.0, 0.0, 2.0, 4.0, 2.0])  # differences after the first sale: 2, -2 -> scale 4
    assert rmsse(np.array([3.0, 3.0]), np.array([1.0, 5.0]), insample) == pytest.approx(1.0)


def test_pinball_loss_at_known_values() -> None:
    actual = np.array([10.0])
    assert pinball_loss(actual, np.array([8.0]), 0.9) == pytest.approx(0.9 * 2)  # under-forecast
    assert pinball_loss(actual, np.array([12.0]), 0.9) == pytest.approx(0.1 * 2)  # over-forecast
    assert pinball_loss(actual, np.array([12.0]), 0.5) == pytest.approx(1.0)  # half the absolute error


def test_interval_coverage_counts_the_bounds_as_inside() -> None:
    actual = np.array([1.0, 5.0, 9.0, 12.0])
    assert interval_coverage(actual, np.full(4, 1.0), np.full(4, 9.0)) == 0.75


def test_wrmsse_weights_sum_to_one_and_weight_rmsse() -> None:
    history = pl.DataFrame(
        {
            "product_id": ["a"] * 3 + ["b"] * 3,
            "market_id": ["US"] * 6,
            "date": [date(2024, 1, d) for d in (1, 2, 3)] * 2,
            "quantity": [1.0, 1.0, 2.0, 3.0, 3.0, 4.0],
        }
    )
    weights = revenue_weights(history, SPEC, window=2)
    assert weights["weight"].sum() == pytest.approx(1.0)
    assert dict(zip(weights["product_id"], weights["weight"], strict=True)) == pytest.approx(
        {"a": 3 / 10, "b": 7 / 10}
    )
    assert wrmsse(np.array([1.0, 2.0]), np.array([0.3, 0.7])) == pytest.approx(1.7)


def _frame(series: int = 3, days: int = 70, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    dates = [date(2024, 1, 1) + timedelta(days=i) for i in range(days)]
    weekly = np.array([1, 1, 1, 1, 2, 3, 0.5])
    parts = []
    for i in range(series):
        level = 5.0 * (i + 1)
        y = rng.poisson(level * weekly[[d.weekday() for d in dates]]).astype(float)
        parts.append(
            pl.DataFrame(
                {
                    "product_id": f"p{i}",
                    "market_id": "US" if i % 2 == 0 else "DE",
                    "category": "toys" if i < 2 else "books",
                    "date": dates,
                    "quantity": y,
                }
            )
        )
    return pl.concat(parts)


def test_series_metrics_match_the_array_metrics() -> None:
    frame = _frame(series=2, days=40)
    history = frame.filter(pl.col("date") <= date(2024, 2, 2))
    actual = frame.filter(pl.col("date") > date(2024, 2, 2))
    forecast = SeasonalNaive(SPEC).fit(history).predict(7)
    metrics = series_metrics(forecast, actual, history, SPEC)
    one = metrics.filter(pl.col("product_id") == "p1").row(0, named=True)
    y = actual.filter(pl.col("product_id") == "p1")["quantity"].to_numpy()
    f = forecast.filter(pl.col("product_id") == "p1")["p50"].to_numpy()
    insample = history.filter(pl.col("product_id") == "p1")["quantity"].to_numpy()
    assert one["mase"] == pytest.approx(mase(y, f, insample, 7))
    assert one["rmsse"] == pytest.approx(rmsse(y, f, insample))
    assert one["abs_error_sum"] / one["actual_sum"] == pytest.approx(wape(y, f))
    assert metrics["weight"].sum() == pytest.approx(1.0)


class _SpyNaive:
    """Seasonal naive that records the last date it was fitted on."""

    fitted_until: list[date] = []  # noqa: RUF012 (shared on purpose: the factory makes new ones)

    def __init__(self) -> None:
        self.model = SeasonalNaive(SPEC)

    def fit(self, history: pl.DataFrame) -> Self:
        _SpyNaive.fitted_until.append(history["date"].max())
        assert "quantity" in history.columns
        self.model.fit(history)
        return self

    def predict(self, horizon: int, future_covariates: pl.DataFrame | None = None) -> pl.DataFrame:
        return self.model.predict(horizon, future_covariates)


def test_backtest_has_three_folds_without_leakage() -> None:
    frame = _frame()
    _SpyNaive.fitted_until = []
    result = backtest(_SpyNaive, frame, horizon=7, folds=3, step=7, spec=SPEC, attributes=["category"])
    folds = result.folds
    assert folds.height == 3
    assert (folds["train_end"] < folds["test_start"]).all()
    assert _SpyNaive.fitted_until == folds["train_end"].to_list()
    assert folds["test_end"].max() == frame["date"].max()
    assert (folds["test_start"].diff().drop_nulls() == timedelta(days=7)).all()
    # every fold forecasts the 7 days after its origin for every series
    assert result.metrics.group_by("fold").agg(pl.col("periods").sum())["periods"].to_list() == [21] * 3
    for row in folds.iter_rows(named=True):
        dates = result.forecasts.filter(pl.col("fold") == row["fold"])["date"]
        assert dates.min() == row["test_start"] and dates.max() == row["test_end"]
    summary = result.summary()
    assert summary.height == 1 and 0 < summary["mase"][0] < 2
    assert set(result.summary(by=["market_id"])["market_id"]) == {"US", "DE"}
    assert set(result.summary(by=["category"])["category"]) == {"toys", "books"}


def test_per_series_values_give_back_the_backtest_figure() -> None:
    result = backtest(lambda: SeasonalNaive(SPEC), _frame(series=4), horizon=7, folds=3, step=7, spec=SPEC)
    per_fold = result.per_series("mase", SPEC.keys)
    series = result.metrics.select(SPEC.keys).n_unique()
    assert per_fold.shape == (3, series)
    # the mean over series in each fold, then over folds, is the table's MASE
    assert np.mean(np.nanmean(per_fold, axis=1)) == pytest.approx(result.summary()["mase"][0])
    first = result.metrics.filter(pl.col("fold") == 0).sort(list(SPEC.keys))["mase"].to_numpy()
    np.testing.assert_allclose(per_fold[0], first)


def test_fold_origins_refuse_too_short_data() -> None:
    dates = [date(2024, 1, 1) + timedelta(days=i) for i in range(10)]
    assert fold_origins(dates, horizon=3, folds=3, step=2) == [dates[2], dates[4], dates[6]]
    with pytest.raises(ValueError, match="not enough periods"):
        fold_origins(dates, horizon=7, folds=3, step=7)


def test_summarize_pools_sums_and_renormalises_weights() -> None:
    per_series = pl.DataFrame(
        {
            "market_id": ["US", "US", "DE"],
            "periods": [2, 2, 2],
            "actual_sum": [10.0, 30.0, 20.0],
            "abs_error_sum": [2.0, 6.0, 10.0],
            "error_sum": [2.0, -6.0, 0.0],
            "smape_sum": [0.2, 0.4, 0.6],
            "covered": [2, 1, 0],
            "mase": [0.5, 1.0, 2.0],
            "rmsse": [1.0, 3.0, 2.0],
            "weight": [0.1, 0.3, 0.6],
            "spl": [0.1, 0.2, 0.3],
        }
    )
    total = summarize(per_series).row(0, named=True)
    assert total["wape"] == pytest.approx(18 / 60)
    assert total["bias"] == pytest.approx(-4 / 60)
    assert total["coverage80"] == pytest.approx(3 / 6)
    assert total["wrmsse"] == pytest.approx(0.1 + 0.9 + 1.2)
    us = summarize(per_series, by=["market_id"]).filter(pl.col("market_id") == "US").row(0, named=True)
    assert us["wrmsse"] == pytest.approx((0.1 * 1 + 0.3 * 3) / 0.4)
    assert us["mase"] == pytest.approx(0.75)


def test_plot_forecast_draws_history_actual_and_band() -> None:
    frame = _frame(series=1, days=40)
    history = frame.filter(pl.col("date") <= date(2024, 2, 2))
    actual = frame.filter(pl.col("date") > date(2024, 2, 2))
    forecast = SeasonalNaive(SPEC).fit(history).predict(7)
    figure = plot_forecast(history, forecast, SPEC, actual=actual)
    assert isinstance(figure, Figure)
    axes = figure.axes[0]
    assert [line.get_label() for line in axes.get_lines()] == ["history", "actual", "forecast P50"]
    assert "product_id=p0" in axes.get_title()
