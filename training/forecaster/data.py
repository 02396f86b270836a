"""The forecaster's training set: units per product x market per market-local day, from the contract.

From the contract's purchase events (plus any daily `sales`), on a gap-free grid from each series'
first sale; the day's local price (listing price less the promotion running that day), the
promotion's discount, and the USD value of the listing currency that day (fx_rates), so the model
sees the FX-normalised price; the category as a static feature; and each market's public holidays
and shopping events (from its country, the same calendars the simulator uses). The data ends on the
last day that is over in every market's time zone (the newest, still-running day would look like a
slump). The `series.top_n` biggest sellers are LightGBM's; every other listed series is kept apart
for the seasonal-naive fallback.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from configs import ConfigError
from configs.settings import Settings
from models.forecasting.series import SeriesSpec, complete_grid
from training.forecaster.config import CONFIG_FILE, ForecasterConfig
from training.pipeline import TrainingSet

SPEC = SeriesSpec(
    keys=("product_id", "market_id"),
    date="date",
    target="units",
    frequency="daily",
    market="market_id",
    price="price",
    promo="promo",
    fx="usd_per_unit",
)
STATIC_COLUMNS = ("category",)


@dataclass
class ForecastData:
    """What fit and evaluate read; `frame` holds the modelled series only."""

    frame: pl.DataFrame  # product_id, market_id, date, units, price, promo, usd_per_unit, category
    future: pl.DataFrame  # the same covariates for the `horizon` days after the last date
    others: pl.DataFrame  # product_id, market_id, date, units: every other listed series, on a grid
    unsold: pl.DataFrame  # product_id, market_id: listed, never sold
    events: pl.DataFrame  # date, market_id, name, kind
    last_date: date
    truth: (
        pl.DataFrame | None
    )  # product_id, market_id, date, mean_demand (the oracle); None off the simulator
    extra_units_mean: float
    ray_address: str | None


def daily_units(settings: Settings) -> pl.DataFrame:
    """Units per product x market x market-local day, from purchases and daily sales."""
    from features.tables import scan_table
    from features.transforms.calendar import local_date, per_market

    markets = scan_table(settings.contract_dir, "markets").collect()
    zones = dict(zip(markets["market_id"], markets["timezone"], strict=True))
    purchases = (
        scan_table(settings.contract_dir, "events")
        .filter(pl.col("event_type") == "purchase")
        .select("product_id", "market_id", "event_ts", pl.col("quantity").cast(pl.Float64).alias("units"))
    )
    purchases = per_market(purchases, zones, lambda zone: [local_date("event_ts", zone).alias("date")])
    sales = (
        scan_table(settings.contract_dir, "sales")
        .filter(pl.col("frequency") == "daily")
        .select("product_id", "market_id", "date", pl.col("quantity").cast(pl.Float64).alias("units"))
    )
    both = pl.concat([purchases.select("product_id", "market_id", "date", "units"), sales])
    return both.group_by("product_id", "market_id", "date").agg(pl.col("units").sum()).collect()


def last_complete_day(settings: Settings) -> date | None:
    """The last market-local day that is over in every market, by the newest event's time.

    The day the newest event falls on is still running in some market's time zone (a delivery of
    UTC days ends in the evening of New York's day and the morning of Tokyo's): its units are a
    part of the day's, and would read as a slump to the lags and as actuals to the retraining gate.
    None when there are no events (daily sales are whole days already).
    """
    from features.tables import scan_table

    newest = (
        scan_table(settings.contract_dir, "events")
        .filter(pl.col("event_ts").is_not_null())
        .select(pl.col("event_ts").max())
        .collect()
        .item()
    )
    if newest is None:
        return None
    zones = scan_table(settings.contract_dir, "markets").select("timezone").collect()["timezone"]
    stamp = pl.Series([newest])
    return min(stamp.dt.convert_time_zone(zone).dt.date()[0] for zone in zones) - timedelta(days=1)


def _covariates(settings: Settings, grid: pl.DataFrame) -> pl.DataFrame:
    """Price (listing price less the day's promotion), discount and the listing currency's USD rate."""
    from features.tables import read_table
    from features.transforms.inputs import daily_usd_rates

    listings = read_table(settings.contract_dir, "listings").select(
        "product_id", "market_id", pl.col("price").alias("_list_price"), "currency"
    )
    promotions = (
        read_table(settings.contract_dir, "promotions")
        .with_columns(pl.date_ranges("start_date", "end_date").alias("date"))
        .explode("date")
        .group_by("product_id", "market_id", "date")
        .agg(pl.col("discount").max())
    )
    last = grid["date"].max()
    rates = daily_usd_rates(read_table(settings.contract_dir, "fx_rates").lazy(), last).rename(
        {"day": "date"}
    )
    frame = (
        grid.join(listings, on=["product_id", "market_id"], how="left")
        .join(promotions, on=["product_id", "market_id", "date"], how="left")
        .join(rates, on=["currency", "date"], how="left")
        .sort("product_id", "market_id", "date")
        .with_columns(
            pl.col("discount").fill_null(0.0).alias("promo"),
            # the latest known rate for days past the last published one (the coming days)
            pl.col("usd_per_unit").forward_fill().over("product_id", "market_id"),
        )
        .with_columns((pl.col("_list_price") * (1 - pl.col("promo"))).alias("price"))
    )
    return frame.drop("_list_price", "currency", "discount")


def _events(settings: Settings, start: date, end: date) -> pl.DataFrame:
    from features.markets import holiday_calendar
    from features.tables import read_table

    markets = read_table(settings.contract_dir, "markets")
    return holiday_calendar(dict(markets.select("market_id", "country").iter_rows()), start, end)


def build_forecast_data(settings: Settings, config: ForecasterConfig) -> ForecastData:
    from features.tables import read_table

    daily = daily_units(settings)
    if daily.height == 0:
        raise FileNotFoundError(
            f"{settings.contract_dir}: no purchase events or daily sales to forecast from "
            "(run `tradewind demo`, or `tradewind ingest`)"
        )
    last = daily["date"].max()
    complete = last_complete_day(settings)
    if complete is not None and complete < last:
        daily = daily.filter(pl.col("date") <= complete)
        if daily.height == 0:
            raise ValueError(f"{settings.contract_dir}: no sales up to {complete}, the last complete day")
        last = complete
    if config.history_days:
        daily = daily.filter(pl.col("date") > last - timedelta(days=config.history_days))
    totals = daily.group_by("product_id", "market_id").agg(
        pl.col("units").sum().alias("_total"), pl.len().alias("_days")
    )
    eligible = totals.filter(pl.col("_days") >= config.series.min_active_days).sort(
        ["_total", "product_id", "market_id"], descending=[True, False, False]
    )
    chosen = eligible.head(config.series.top_n) if config.series.top_n else eligible
    if chosen.height == 0:
        raise ConfigError(
            f"{CONFIG_FILE}: key 'series.min_active_days': no series sold on at least "
            f"{config.series.min_active_days} days"
        )
    keys = ["product_id", "market_id"]
    grid = complete_grid(daily.join(chosen.select(keys), on=keys), SPEC, end=last)
    future_days = pl.DataFrame(
        {"date": pl.date_range(last + timedelta(days=1), last + timedelta(days=config.horizon), eager=True)}
    )
    future = chosen.select(keys).join(future_days, how="cross")
    both = _covariates(settings, pl.concat([grid, future], how="diagonal_relaxed"))
    categories = read_table(settings.contract_dir, "products").select("product_id", "category")
    both = both.join(categories, on="product_id", how="left").with_columns(
        pl.col("category").fill_null("unknown")
    )
    frame = both.filter(pl.col("date") <= last)
    future = both.filter(pl.col("date") > last).drop(SPEC.target)

    others = complete_grid(daily.join(chosen.select(keys), on=keys, how="anti"), SPEC, end=last)
    listed = read_table(settings.contract_dir, "listings").select(keys)
    unsold = listed.join(totals.select(keys), on=keys, how="anti")
    events = _events(settings, frame["date"].min(), last + timedelta(days=config.horizon + 60))
    truth, extra_units = None, 0.0
    if config.oracle and (settings.truth_dir / "demand").is_dir():
        truth, extra_units = _oracle_truth(settings, chosen.select(keys))
    ray_address = config.prophet.ray_address or settings.ray_address
    return ForecastData(frame, future, others, unsold, events, last, truth, extra_units, ray_address)


def _oracle_truth(settings: Settings, series: pl.DataFrame) -> tuple[pl.DataFrame, float]:
    from features.simulator.truth import load_meta, true_mean_demand

    truth = true_mean_demand(settings.truth_dir).select("product_id", "market_id", "date", "mean_demand")
    truth = truth.join(series, on=["product_id", "market_id"])
    meta = load_meta(settings.truth_dir)
    extra = float(meta.get("config", {}).get("choice", {}).get("extra_units_mean", 0.0))
    return truth, extra


def training_set(settings: Settings, config: ForecasterConfig) -> TrainingSet:
    from features.tables import snapshot

    started = time.perf_counter()
    data = build_forecast_data(settings, config)
    digests = snapshot(settings.contract_dir)["tables"]
    used = ("events", "sales", "listings", "promotions", "fx_rates", "markets", "products")
    lineage = {table: str(digests[table]["digest"]) for table in used if table in digests}
    summary = {
        "series": float(data.frame.select(SPEC.keys).n_unique()),
        "rows": float(data.frame.height),
        "days": float(data.frame["date"].n_unique()),
        "fallback_series": float(data.others.select(SPEC.keys).n_unique() + data.unsold.height),
        "units": float(data.frame[SPEC.target].sum()),
        "build_s": time.perf_counter() - started,
    }
    return TrainingSet(data=data, lineage=lineage, summary=summary)
