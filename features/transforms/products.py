"""Product features: `product_catalog`, and per market-local day `product_market_popularity` and
`product_market_demand`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import polars as pl

from features.transforms.calendar import stamp_days
from features.transforms.inputs import LOCAL_DAY, FeatureInputs, with_usd_rate
from features.transforms.specs import (
    EVENT_TIMESTAMP,
    PRODUCT_CATALOG,
    PRODUCT_MARKET_DEMAND,
    PRODUCT_MARKET_POPULARITY,
)
from features.transforms.windows import (
    DAY,
    KEY,
    KeyCodes,
    alive_days,
    drop_unchanged,
    key_parts,
    ratio,
    values_days_before,
    window_sums,
)

PRODUCT_MARKET = ["product_id", "market_id"]
POPULARITY_WINDOWS = (7, 30)
DEMAND_LAGS = (1, 7, 14, 28)
DEMAND_MEANS = (7, 28)


def product_catalog(inputs: FeatureInputs) -> pl.LazyFrame:
    markets_listed = inputs.listings.group_by("product_id").agg(
        pl.len().cast(pl.Int64).alias("markets_listed")
    )
    return (
        inputs.products.join(markets_listed, on="product_id", how="left")
        .with_columns(pl.col("markets_listed").fill_null(0), pl.col("created_ts").alias(EVENT_TIMESTAMP))
        .select("product_id", EVENT_TIMESTAMP, *PRODUCT_CATALOG.feature_names)
    )


def _promotion_days(inputs: FeatureInputs, codes: KeyCodes) -> pl.DataFrame:
    """The deepest discount running per product x market code and local day."""
    return (
        codes.encode(inputs.promotions)
        .with_columns(pl.date_ranges("start_date", "end_date").alias(DAY))
        .explode(DAY)
        .group_by(KEY, DAY)
        .agg(pl.col("discount").max())
        .collect()
    )


def _promotion_anchors(inputs: FeatureInputs, codes: KeyCodes) -> pl.DataFrame:
    """Keep a series alive from the day before a promotion to its last day, so the rows for the
    target days in it, and for the first target day after it, exist."""
    return (
        codes.encode(inputs.promotions)
        .select(
            KEY,
            (pl.col("start_date") - timedelta(days=1)).alias(DAY),
            ((pl.col("end_date") - pl.col("start_date")).dt.total_days() + 1).cast(pl.Int64).alias("horizon"),
        )
        .collect()
    )


@dataclass(frozen=True)
class _Series:
    """What every part of a product x market table reads: codes, daily values, listings and
    promotions by code (computed once, held in memory)."""

    codes: KeyCodes
    daily: pl.DataFrame
    listings: pl.DataFrame
    promotion_days: pl.DataFrame
    promotion_anchors: pl.DataFrame

    def parts(self, keys_per_part: int) -> Iterator[tuple[pl.Expr, pl.LazyFrame]]:
        """Each part's key filter and its daily values."""
        for part in key_parts(self.codes, keys_per_part):
            yield part, self.daily.lazy().filter(part)


def _with_target_day_price(frame: pl.LazyFrame, inputs: FeatureInputs, series: _Series) -> pl.LazyFrame:
    """Price of the target day D + 1: promotions are planned, so the target day's is known on D;
    the exchange rate is the latest known one, day D's."""
    promotions = series.promotion_days.lazy().rename({DAY: "_target_day"})
    frame = (
        frame.with_columns((pl.col(DAY) + timedelta(days=1)).alias("_target_day"))
        .join(series.listings.lazy(), on=KEY, how="left")
        .join(promotions, on=[KEY, "_target_day"], how="left")
        .with_columns(pl.col("discount").fill_null(0.0))
        .with_columns(
            (pl.col("discount") > 0).alias("promo_active"),
            (pl.col("list_price") * (1 - pl.col("discount"))).alias("price_local"),
        )
    )
    frame = with_usd_rate(frame, inputs.usd_rates, DAY, "_list_currency")
    return frame.with_columns((pl.col("price_local") * pl.col("usd_rate")).alias("price_usd")).drop(
        "_target_day", "_list_currency", "usd_rate"
    )


def _finish(
    frame: pl.LazyFrame, inputs: FeatureInputs, codes: KeyCodes, feature_names: list[str]
) -> pl.LazyFrame:
    compact = drop_unchanged(frame, feature_names)
    return stamp_days(codes.decode(compact), inputs.market_day_ends)


def _encoded_series(by_day: pl.LazyFrame, inputs: FeatureInputs) -> _Series:
    """Codes for every series with activity or a promotion, and what the parts read by code."""
    by_day_frame = by_day.collect().lazy()
    codes = KeyCodes.of([by_day_frame, inputs.promotions], PRODUCT_MARKET)
    listings = codes.encode(inputs.listings).select(
        KEY, pl.col("price").alias("list_price"), pl.col("currency").alias("_list_currency")
    )
    return _Series(
        codes=codes,
        daily=codes.encode(by_day_frame).collect(),
        listings=listings.collect(),
        promotion_days=_promotion_days(inputs, codes),
        promotion_anchors=_promotion_anchors(inputs, codes),
    )


def _alive_series(
    daily: pl.LazyFrame, horizon: int, inputs: FeatureInputs, series: _Series, part: pl.Expr
) -> pl.LazyFrame:
    """Days a series is alive: within `horizon` days of activity, or around a promotion."""
    anchors = pl.concat(
        [
            daily.select(KEY, DAY, pl.lit(horizon, dtype=pl.Int64).alias("horizon")),
            series.promotion_anchors.lazy().filter(part),
        ]
    )
    return alive_days(anchors, inputs.last_local_day)


def product_market_popularity(inputs: FeatureInputs, keys_per_part: int) -> Iterator[pl.LazyFrame]:
    """In parts of `keys_per_part` product x market series (each series' rows are its own)."""
    purchase = pl.col("event_type") == "purchase"
    by_day = inputs.events.group_by(*PRODUCT_MARKET, pl.col(LOCAL_DAY).alias(DAY)).agg(
        (pl.col("event_type") == "view").sum().cast(pl.Int64).alias("views"),
        (pl.col("event_type") == "add_to_cart").sum().cast(pl.Int64).alias("carts"),
        purchase.sum().cast(pl.Int64).alias("purchases"),
        pl.col("quantity").filter(purchase).sum().cast(pl.Int64).alias("units"),
    )
    series = _encoded_series(by_day, inputs)
    for part, daily in series.parts(keys_per_part):
        grid = _alive_series(daily, max(POPULARITY_WINDOWS), inputs, series, part)
        frame = window_sums(grid, daily, ["views", "carts", "purchases", "units"], POPULARITY_WINDOWS)
        frame = frame.with_columns(
            ratio(f"purchases_{window}d", f"views_{window}d").alias(f"conversion_{window}d")
            for window in POPULARITY_WINDOWS
        )
        frame = _with_target_day_price(frame, inputs, series)
        yield _finish(frame, inputs, series.codes, PRODUCT_MARKET_POPULARITY.feature_names)


def _daily_units(inputs: FeatureInputs) -> pl.LazyFrame:
    """Units per product, market and local day: purchase events, plus sources that only report
    daily sales. Weekly sales stay in the `sales` table for the forecaster to read directly."""
    from_events = inputs.events.filter(pl.col("event_type") == "purchase").select(
        *PRODUCT_MARKET, pl.col(LOCAL_DAY).alias(DAY), pl.col("quantity").cast(pl.Float64).alias("units")
    )
    from_sales = inputs.sales.filter(pl.col("frequency") == "daily").select(
        *PRODUCT_MARKET, pl.col("date").alias(DAY), pl.col("quantity").alias("units")
    )
    return pl.concat([from_events, from_sales]).group_by(*PRODUCT_MARKET, DAY).agg(pl.col("units").sum())


def product_market_demand(inputs: FeatureInputs, keys_per_part: int) -> Iterator[pl.LazyFrame]:
    """In parts of `keys_per_part` product x market series (each series' rows are its own)."""
    series = _encoded_series(_daily_units(inputs), inputs)
    for part, daily in series.parts(keys_per_part):
        grid = _alive_series(daily, max(*DEMAND_LAGS, *DEMAND_MEANS), inputs, series, part)
        frame = window_sums(grid, daily, ["units"], DEMAND_MEANS)
        frame = values_days_before(frame, daily, "units", DEMAND_LAGS, name="units_lag")
        frame = frame.with_columns(
            (pl.col(f"units_{window}d") / window).alias(f"units_mean_{window}") for window in DEMAND_MEANS
        )
        frame = _with_target_day_price(frame, inputs, series)
        yield _finish(frame, inputs, series.codes, PRODUCT_MARKET_DEMAND.feature_names)


def product_tables(inputs: FeatureInputs, keys_per_part: int) -> dict[str, Iterable[pl.LazyFrame]]:
    return {
        PRODUCT_CATALOG.name: [product_catalog(inputs)],
        PRODUCT_MARKET_POPULARITY.name: product_market_popularity(inputs, keys_per_part),
        PRODUCT_MARKET_DEMAND.name: product_market_demand(inputs, keys_per_part),
    }
