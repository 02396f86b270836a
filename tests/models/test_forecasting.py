"""Demand forecasting models: seasonal naive, global LightGBM, Prophet per series, event features,
bottom-up reconciliation."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from models.forecasting import (
    EventCalendar,
    GlobalLightGBM,
    ProphetPerSeries,
    SeasonalNaive,
    SeriesSpec,
    bottom_up,
    complete_grid,
    fit_many,
    product_category_market_total,
    serial_map,
)

SPEC = SeriesSpec(keys=("product_id", "market_id"), target="quantity", frequency="daily")
WEEKLY_SHAPE = np.array([1.0, 1.0, 1.2, 1.2, 1.6, 2.4, 0.4])  # Monday .. Sunday
FAST_LIGHTGBM = {"num_boost_round": 150, "params": {"learning_rate": 0.1, "num_leaves": 15}, "num_threads": 1}


def _holidays(start: date, end: date) -> list[date]:
    """A holiday on the 10th and 25th of every month: frequent enough to learn from a few months."""
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    return [d for d in days if d.day in (10, 25)]


def _demand(
    series: int = 12, days: int = 200, uplift: float = 3.0, seed: int = 1
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Poisson demand with a planted weekly shape and a holiday uplift in the US market only."""
    rng = np.random.default_rng(seed)
    start = date(2024, 1, 1)
    dates = [start + timedelta(days=i) for i in range(days)]
    holidays = set(_holidays(start, dates[-1]))
    parts = []
    for i in range(series):
        market = "US" if i % 2 == 0 else "DE"
        level = rng.uniform(3, 30)
        mu = level * WEEKLY_SHAPE[[d.weekday() for d in dates]]
        if market == "US":
            mu = mu * np.where([d in holidays for d in dates], uplift, 1.0)
        parts.append(
            pl.DataFrame(
                {
                    "product_id": f"p{i:02d}",
                    "market_id": market,
                    "date": dates,
                    "quantity": rng.poisson(mu).astype(float),
                }
            )
        )
    events = pl.DataFrame(
        {
            "date": sorted(holidays),
            "market_id": ["US"] * len(holidays),
            "name": ["Mid-month day" if d.day == 10 else "Late-month day" for d in sorted(holidays)],
            "kind": ["shopping_event"] * len(holidays),
        }
    )
    return pl.concat(parts), events


def _split(frame: pl.DataFrame, horizon: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    origin = frame["date"].max() - timedelta(days=horizon)
    return frame.filter(pl.col("date") <= origin), frame.filter(pl.col("date") > origin)


def _wape(forecast: pl.DataFrame, actual: pl.DataFrame) -> float:
    joined = forecast.join(actual, on=["product_id", "market_id", "date"])
    return float((joined["p50"] - joined["quantity"]).abs().sum() / joined["quantity"].sum())


# -- series helpers -----------------------------------------------------------------------------


def test_complete_grid_fills_missing_days_with_zero_and_sums_duplicates() -> None:
    frame = pl.DataFrame(
        {
            "product_id": ["a", "a", "a", "b"],
            "market_id": ["US"] * 4,
            "date": [date(2024, 1, 1), date(2024, 1, 1), date(2024, 1, 4), date(2024, 1, 3)],
            "quantity": [1.0, 2.0, 5.0, 7.0],
        }
    )
    grid = complete_grid(frame, SPEC)
    a = grid.filter(pl.col("product_id") == "a")
    assert a["quantity"].to_list() == [3.0, 0.0, 0.0, 5.0]
    # b starts when it starts, and runs to the last date of the frame
    assert grid.filter(pl.col("product_id") == "b")["date"].to_list() == [date(2024, 1, 3), date(2024, 1, 4)]


# -- seasonal naive -----------------------------------------------------------------------------


def test_seasonal_naive_repeats_the_last_season() -> None:
    frame, _ = _demand(series=2, days=30)
    model = SeasonalNaive(SPEC).fit(frame)
    forecast = model.predict(10)
    for product in ("p00", "p01"):
        last_week = frame.filter(pl.col("product_id") == product).sort("date").tail(7)["quantity"].to_list()
        predicted = forecast.filter(pl.col("product_id") == product).sort("date")
        assert predicted["p50"].to_list() == last_week + last_week[:3]
        assert predicted["date"][0] == frame["date"].max() + timedelta(days=1)
    assert (forecast["p10"] <= forecast["p50"]).all() and (forecast["p50"] <= forecast["p90"]).all()
    assert (forecast["p10"] >= 0).all()


def test_seasonal_naive_weekly_uses_52_weeks() -> None:
    spec = SeriesSpec(keys=("store",), market=None, target="sales", frequency="weekly")
    dates = [date(2020, 1, 4) + timedelta(weeks=i) for i in range(60)]
    frame = pl.DataFrame({"store": "s1", "date": dates, "sales": [float(i) for i in range(60)]})
    forecast = SeasonalNaive(spec).fit(frame).predict(3)
    assert forecast["p50"].to_list() == [8.0, 9.0, 10.0]  # 52 weeks before weeks 60, 61, 62
    assert forecast["date"].to_list() == [dates[-1] + timedelta(weeks=k) for k in (1, 2, 3)]


# -- events -------------------------------------------------------------------------------------


def test_event_features_per_market_with_global_events() -> None:
    events = pl.DataFrame(
        {
            "date": [date(2024, 11, 29), date(2024, 12, 25)],
            "market_id": ["US", None],
            "name": ["Black Friday", "Christmas Day"],
            "kind": ["shopping_event", "public_holiday"],
        }
    )
    calendar = EventCalendar(events, SPEC, dip_days=3)
    rows = pl.DataFrame(
        {
            "market_id": ["US", "US", "US", "DE", "DE"],
            "date": [
                date(2024, 11, 27),
                date(2024, 11, 29),
                date(2024, 12, 1),
                date(2024, 11, 27),
                date(2024, 12, 27),
            ],
        }
    )
    features = rows.join(calendar.features(rows), on=["market_id", "date"], how="left").sort(
        "market_id", "date"
    )
    us = features.filter(pl.col("market_id") == "US").sort("date")
    assert us["days_to_event"].to_list() == [2, 0, 24]
    assert us["days_since_event"].to_list()[2] == 2
    assert us["post_event_dip"].to_list() == [0, 0, 1]
    assert us["next_event"].to_list()[:2] == [calendar.name_codes["Black Friday"]] * 2
    de = features.filter(pl.col("market_id") == "DE").sort("date")
    assert de["days_to_event"][0] == 28  # Black Friday is a US event; Christmas is everywhere
    assert de["post_event_dip"][1] == 1


def test_post_event_dip_starts_after_a_multi_day_event() -> None:
    rush = [date(2024, 12, 14) + timedelta(days=i) for i in range(11)]  # 14 to 24 December
    events = pl.DataFrame({"date": rush, "market_id": ["GB"] * 11, "name": ["Christmas"] * 11})
    rows = pl.DataFrame(
        {"market_id": "GB", "date": [date(2024, 12, 20), date(2024, 12, 25), date(2024, 12, 28)]}
    )
    features = EventCalendar(events, SPEC, dip_days=3).features(rows).sort("date")
    assert features["post_event_dip"].to_list() == [0, 1, 0]
    assert features["days_since_event"].to_list() == [1, 1, 4]


def test_weekly_event_features_count_events_inside_the_week() -> None:
    spec = SeriesSpec(keys=("store",), market=None, target="sales", frequency="weekly")
    events = pl.DataFrame(
        {"date": [date(2024, 11, 28), date(2024, 11, 29)], "name": ["Thanksgiving", "Black Friday"]}
    )
    rows = pl.DataFrame({"date": [date(2024, 11, 23), date(2024, 11, 30), date(2024, 11, 16)]})
    features = EventCalendar(events, spec).features(rows).sort("date")
    # weeks starting 16, 23 and 30 November: both events fall in the week of the 23rd
    assert features["events_in_period"].to_list() == [0.0, 2.0, 0.0]
    assert features["days_to_event"].to_list() == [12, 5, 60]  # 60: no event ahead (the cap)
    assert features["post_event_dip"].to_list() == [0, 0, 1]  # the week after


# -- global LightGBM ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demand() -> tuple[pl.DataFrame, pl.DataFrame]:
    return _demand()


@pytest.fixture(scope="module")
def fitted_lightgbm(demand: tuple[pl.DataFrame, pl.DataFrame]) -> GlobalLightGBM:
    frame, events = demand
    history, _ = _split(frame, 28)
    return GlobalLightGBM(SPEC, horizon=28, events=events, **FAST_LIGHTGBM).fit(history)


def test_global_lightgbm_beats_seasonal_naive_with_ordered_quantiles(
    demand: tuple[pl.DataFrame, pl.DataFrame], fitted_lightgbm: GlobalLightGBM
) -> None:
    frame, _ = demand
    history, actual = _split(frame, 28)
    forecast = fitted_lightgbm.predict(28)
    assert forecast.columns == ["product_id", "market_id", "date", "mean", "p10", "p50", "p90"]
    assert forecast.height == 12 * 28
    assert (forecast["p10"] <= forecast["p50"]).all() and (forecast["p50"] <= forecast["p90"]).all()
    assert (forecast["p10"] >= 0).all()
    naive = SeasonalNaive(SPEC).fit(history).predict(28)
    assert _wape(forecast, actual) < 0.8 * _wape(naive, actual)
    joined = forecast.join(actual, on=["product_id", "market_id", "date"])
    coverage = ((joined["quantity"] >= joined["p10"]) & (joined["quantity"] <= joined["p90"])).mean()
    assert 0.6 <= coverage <= 0.95


def test_global_lightgbm_learns_the_us_holiday_uplift(
    demand: tuple[pl.DataFrame, pl.DataFrame], fitted_lightgbm: GlobalLightGBM
) -> None:
    _, events = demand
    forecast = fitted_lightgbm.predict(28)
    holidays = set(events["date"].to_list())
    # uplift = forecast on holidays over forecast on the same weekdays without a holiday
    with_flag = forecast.with_columns(
        pl.col("date").is_in(list(holidays)).alias("holiday"), pl.col("date").dt.weekday().alias("weekday")
    )
    holiday_weekdays = with_flag.filter(pl.col("holiday"))["weekday"].unique()
    by_flag = (
        with_flag.filter(pl.col("weekday").is_in(holiday_weekdays.implode()))
        .group_by("market_id", "holiday")
        .agg(pl.col("mean").mean())
    )

    def mean_of(market: str, holiday: bool) -> float:
        return by_flag.filter((pl.col("market_id") == market) & (pl.col("holiday") == holiday))["mean"][0]

    assert mean_of("US", True) > 1.8 * mean_of("US", False)
    assert mean_of("DE", True) < 1.3 * mean_of("DE", False)


def test_global_lightgbm_contributions_add_up_to_the_prediction(fitted_lightgbm: GlobalLightGBM) -> None:
    forecast = fitted_lightgbm.predict(10)
    contributions = fitted_lightgbm.explain(10)
    assert contributions.height == forecast.height
    parts = [c for c in contributions.columns if c not in ("product_id", "market_id", "date")]
    assert {"days_to_event", "lag_7", "bias", "log_baseline"} <= set(parts)
    log_mean = contributions.select(pl.sum_horizontal(parts))
    np.testing.assert_allclose(
        np.exp(log_mean.to_series().to_numpy()), forecast["mean"].to_numpy(), rtol=1e-5
    )


def test_global_lightgbm_refuses_a_longer_horizon_than_fitted(fitted_lightgbm: GlobalLightGBM) -> None:
    with pytest.raises(ValueError, match="fitted horizon"):
        fitted_lightgbm.predict(29)


def test_global_lightgbm_uses_promotions_and_usd_prices() -> None:
    rng = np.random.default_rng(3)
    start = date(2024, 1, 1)
    dates = [start + timedelta(days=i) for i in range(150)]
    parts = []
    for i in range(8):
        promo = (rng.random(len(dates)) < 0.15).astype(float)
        mu = 10.0 * WEEKLY_SHAPE[[d.weekday() for d in dates]] * np.where(promo == 1, 3.0, 1.0)
        parts.append(
            pl.DataFrame(
                {
                    "product_id": f"p{i}",
                    "market_id": "JP" if i % 2 else "US",
                    "date": dates,
                    "quantity": rng.poisson(mu).astype(float),
                    "price": np.where(promo == 1, 7.0, 10.0) * (150.0 if i % 2 else 1.0),
                    "promo": promo,
                    "usd_per_unit": 1 / 150.0 if i % 2 else 1.0,
                }
            )
        )
    frame = pl.concat(parts)
    spec = SeriesSpec(target="quantity", price="price", promo="promo", fx="usd_per_unit")
    model = GlobalLightGBM(spec, horizon=7, **FAST_LIGHTGBM).fit(frame)
    future = model.predict(7).select("product_id", "market_id", "date")
    list_price = pl.when(pl.col("market_id") == "JP").then(1500.0).otherwise(10.0)
    # a planned promotion comes with its price cut; without one the price stays at list
    on_promo = future.with_columns(pl.lit(1.0).alias("promo"), (list_price * 0.7).alias("price"))
    no_promo = future.with_columns(pl.lit(0.0).alias("promo"))
    with_promo = model.predict(7, on_promo)["mean"].sum()
    without = model.predict(7, no_promo)["mean"].sum()
    assert with_promo > 1.5 * without
    importance = model.feature_importance().group_by("feature").agg(pl.col("importance").sum())
    assert {"price_usd", "price_ratio", "promo"} <= set(importance["feature"])


# -- Prophet ------------------------------------------------------------------------------------


def test_prophet_per_series_on_a_tiny_series(demand: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    frame, events = demand
    tiny = frame.filter(pl.col("product_id") == "p00").filter(pl.col("date") <= date(2024, 4, 30))
    calls: list[int] = []

    def counting_executor(function, items):  # type: ignore[no-untyped-def]
        calls.append(len(items))
        return serial_map(function, items)

    model = ProphetPerSeries(SPEC, events, executor=counting_executor, uncertainty_samples=100).fit(tiny)
    forecast = model.predict(14)
    assert calls == [1, 1]  # one series fitted, then forecast, through the executor
    assert forecast.height == 14 and forecast["date"].min() == date(2024, 5, 1)
    assert (forecast["p10"] <= forecast["p50"]).all() and (forecast["p50"] <= forecast["p90"]).all()
    weekly = (
        forecast.with_columns(pl.col("date").dt.weekday().alias("weekday"))
        .group_by("weekday")
        .agg(pl.col("p50").mean())
    )
    # the planted Saturday peak and Sunday trough are in Prophet's weekly seasonality
    by_day = dict(zip(weekly["weekday"], weekly["p50"], strict=True))
    assert by_day[6] > by_day[7]


def test_fit_many_keeps_item_order_with_any_executor() -> None:
    def reversed_executor(function, items):  # type: ignore[no-untyped-def]
        return list(reversed([function(item) for item in reversed(items)]))

    assert fit_many([1, 2, 3], lambda x: x * 10) == [10, 20, 30]
    assert fit_many([1, 2, 3], lambda x: x * 10, reversed_executor) == [10, 20, 30]


# -- reconciliation -----------------------------------------------------------------------------


def test_bottom_up_sums_are_coherent_at_every_level() -> None:
    rng = np.random.default_rng(0)
    products = pl.DataFrame(
        {"product_id": ["a", "b", "c", "d"], "category": ["toys", "toys", "books", "books"]}
    )
    dates = [date(2024, 1, 1), date(2024, 1, 2)]
    bottom = (
        products.join(pl.DataFrame({"market_id": ["US", "DE"]}), how="cross")
        .join(pl.DataFrame({"date": dates}), how="cross")
        .with_columns(pl.Series("p50", rng.uniform(0, 10, 16)))
        .with_columns(
            pl.col("p50").alias("mean"), (pl.col("p50") * 0.5).alias("p10"), (pl.col("p50") * 2).alias("p90")
        )
    )
    levels = product_category_market_total(bottom)
    assert levels["level"].unique(maintain_order=True).to_list() == [
        "market_id/category/product_id",
        "market_id/category",
        "market_id",
        "total",
    ]

    def level_sum(level: str, by: list[str]) -> pl.DataFrame:
        return (
            levels.filter(pl.col("level") == level)
            .group_by([*by, "date"])
            .agg(pl.col("p50").sum())
            .sort([*by, "date"])
        )

    for value in ("mean", "p10", "p50", "p90"):
        total = levels.filter(pl.col("level") == "total").sort("date")[value].to_numpy()
        np.testing.assert_allclose(
            total, bottom.group_by("date").agg(pl.col(value).sum()).sort("date")[value].to_numpy()
        )
    np.testing.assert_allclose(
        level_sum("market_id/category", ["market_id"])["p50"], level_sum("market_id", ["market_id"])["p50"]
    )
    np.testing.assert_allclose(
        level_sum("market_id/category/product_id", ["market_id", "category"])["p50"],
        level_sum("market_id/category", ["market_id", "category"])["p50"],
    )
    markets = level_sum("market_id", ["market_id"]).group_by("date").agg(pl.col("p50").sum()).sort("date")
    np.testing.assert_allclose(markets["p50"], levels.filter(pl.col("level") == "total").sort("date")["p50"])
    assert math.isclose(levels.filter(pl.col("level") == "total")["p50"].sum(), bottom["p50"].sum())


def test_bottom_up_refuses_missing_grouping_columns() -> None:
    bottom = pl.DataFrame(
        {
            "product_id": ["a"],
            "date": [date(2024, 1, 1)],
            "mean": [1.0],
            "p10": [1.0],
            "p50": [1.0],
            "p90": [1.0],
        }
    )
    with pytest.raises(KeyError, match="category"):
        bottom_up(bottom, [["category"], []])


# -- real data ----------------------------------------------------------------------------------


@pytest.mark.realdata
def test_global_lightgbm_beats_seasonal_naive_on_walmart() -> None:
    from benchmarks.forecaster import DEFAULT_DATA_DIR, WALMART_FILE, load_walmart

    if not (DEFAULT_DATA_DIR / WALMART_FILE).exists():
        pytest.skip("Walmart data not found beside the project")
    data = load_walmart(DEFAULT_DATA_DIR, top_n=30)
    origin = data.frame["date"].max() - timedelta(weeks=13)
    history = data.frame.filter(pl.col("date") <= origin)
    actual = data.frame.filter(pl.col("date") > origin)
    on = ["store", "dept", "date"]

    def wape(forecast: pl.DataFrame) -> float:
        joined = forecast.join(actual, on=on)
        return float((joined["p50"] - joined["sales"]).abs().sum() / joined["sales"].sum())

    model = GlobalLightGBM(data.spec, 13, data.events, num_threads=1).fit(history)
    assert wape(model.predict(13)) < wape(SeasonalNaive(data.spec).fit(history).predict(13))
