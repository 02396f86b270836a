"""Market-wide features per market-local day: `market_daily`, evaluated for every market and day."""

from __future__ import annotations

import polars as pl

from features.transforms.calendar import stamp_days
from features.transforms.inputs import LOCAL_DAY, FeatureInputs, with_usd_rate
from features.transforms.specs import MARKET_DAILY
from features.transforms.windows import DAY, KEY, KeyCodes, drop_unchanged, window_sums

WINDOW_DAYS = 7


def market_daily(inputs: FeatureInputs) -> pl.LazyFrame:
    purchase = pl.col("event_type") == "purchase"
    by_day = inputs.events.group_by("market_id", pl.col(LOCAL_DAY).alias(DAY)).agg(
        (pl.col("event_type") == "view").sum().cast(pl.Int64).alias("views"),
        purchase.sum().cast(pl.Int64).alias("purchases"),
        pl.col("quantity").filter(purchase).sum().cast(pl.Int64).alias("units"),
        (pl.col("quantity") * pl.col("unit_price_usd")).filter(purchase).sum().alias("gmv_usd"),
        pl.col("user_id").n_unique().cast(pl.Int64).alias("active_users"),
    )
    codes = KeyCodes.of([inputs.markets], ["market_id"])
    daily = codes.encode(by_day).collect().lazy()  # read by several joins below
    # Every market is evaluated every day, active or not: a handful of rows, and the rate moves.
    grid = codes.encode(inputs.market_day_ends.lazy().select("market_id", DAY))
    columns = ["views", "purchases", "units", "gmv_usd", "active_users"]
    frame = window_sums(grid, daily, columns, (1, WINDOW_DAYS))
    frame = frame.join(codes.encode(inputs.markets.select("market_id", "currency")), on=KEY, how="left")
    frame = with_usd_rate(frame, inputs.usd_rates, DAY, "currency", alias="usd_per_unit")
    compact = drop_unchanged(frame, MARKET_DAILY.feature_names)
    return stamp_days(codes.decode(compact), inputs.market_day_ends)


def market_tables(inputs: FeatureInputs, keys_per_part: int) -> dict[str, list[pl.LazyFrame]]:
    """One part: a handful of markets (`keys_per_part` does not apply)."""
    return {MARKET_DAILY.name: [market_daily(inputs)]}
