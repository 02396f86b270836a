"""Contract tables prepared for the feature transformations: joined, dated and priced in USD."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from features.tables import scan_table
from features.transforms.calendar import local_date, market_day_ends, per_market
from features.transforms.windows import DAY

LOCAL_DAY = "local_day"
EVENT_COLUMNS = (
    "user_id",
    "product_id",
    "market_id",
    "category",
    "event_type",
    "quantity",
    "unit_price_usd",
    DAY,
    LOCAL_DAY,
)
AUCTION_COLUMNS = (
    "campaign_id",
    "market_id",
    "won",
    "click",
    "conversion",
    "value",
    "market_price",
    "usd_rate",
    DAY,
    LOCAL_DAY,
)


@dataclass(frozen=True)
class FeatureInputs:
    """Contract tables plus what every transformation needs to know about time.

    `as_of` is the instant up to which the data is complete: no snapshot is stamped later.
    `usd_rates` holds one rate per currency and day (carried forward over missing days), and
    `market_day_ends` the UTC end of every market-local day in the data.
    """

    markets: pl.LazyFrame
    events: pl.LazyFrame
    users: pl.LazyFrame
    products: pl.LazyFrame
    listings: pl.LazyFrame
    promotions: pl.LazyFrame
    sales: pl.LazyFrame
    campaigns: pl.LazyFrame
    auctions: pl.LazyFrame
    usd_rates: pl.LazyFrame
    market_day_ends: pl.DataFrame
    as_of: datetime

    @property
    def last_day(self) -> date:
        """The last UTC day that ends by `as_of`."""
        return (self.as_of - timedelta(microseconds=1)).date()

    @property
    def last_local_day(self) -> date:
        """Upper bound for market-local days (east of UTC they end earlier); rows stamped after
        `as_of` are cut when the table is written."""
        return self.last_day + timedelta(days=1)


def default_as_of(contract_dir: Path) -> datetime:
    """Midnight UTC after the last event or auction: the data is taken as complete up to there."""
    latest = [
        scan_table(contract_dir, table).select(pl.col(column).max()).collect().item()
        for table, column in (("events", "event_ts"), ("auctions", "request_ts"))
    ]
    known = [value for value in latest if value is not None]
    if not known:
        return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    last = max(known).astimezone(UTC)
    return datetime.combine(last.date() + timedelta(days=1), datetime.min.time(), UTC)


def daily_usd_rates(fx_rates: pl.LazyFrame, last_day: date) -> pl.DataFrame:
    """One USD rate per currency and day up to `last_day`, the latest published one carried over
    days without a rate. A small table that rows then join on equality (cheaper than as-of)."""
    first_days = fx_rates.group_by("currency").agg(pl.col("date").min().alias("_first"))
    calendar = first_days.with_columns(pl.date_ranges("_first", pl.lit(last_day)).alias(DAY)).explode(DAY)
    return (
        calendar.join(fx_rates.rename({"date": DAY}), on=["currency", DAY], how="left")
        .sort("currency", DAY)
        .with_columns(pl.col("usd_per_unit").forward_fill().over("currency"))
        .select("currency", DAY, "usd_per_unit")
        .collect()
    )


def with_usd_rate(
    frame: pl.LazyFrame, usd_rates: pl.LazyFrame, day: str, currency: str, alias: str = "usd_rate"
) -> pl.LazyFrame:
    """Add the USD value of one unit of `currency` on `day` (empty before its first rate)."""
    rates = usd_rates.select(
        pl.col("currency").alias(currency), pl.col(DAY).alias(day), pl.col("usd_per_unit").alias(alias)
    )
    return frame.join(rates, on=[currency, day], how="left")


def load_inputs(contract_dir: Path, as_of: datetime | None = None) -> FeatureInputs:
    as_of = (as_of or default_as_of(contract_dir)).astimezone(UTC)
    last_day = (as_of - timedelta(microseconds=1)).date()
    markets = scan_table(contract_dir, "markets").collect()
    time_zones = dict(zip(markets["market_id"], markets["timezone"], strict=True))
    usd_rates = daily_usd_rates(scan_table(contract_dir, "fx_rates"), last_day + timedelta(days=1)).lazy()
    products = scan_table(contract_dir, "products").filter(pl.col("created_ts") < as_of)

    # Only what was known by as_of: later rows would leak into snapshots otherwise.
    events = (
        scan_table(contract_dir, "events")
        .filter(pl.col("event_ts") < as_of)
        .join(products.select("product_id", "category"), on="product_id", how="left")
        .with_columns(pl.col("event_ts").dt.date().alias(DAY))
    )
    events = with_usd_rate(events, usd_rates, DAY, "currency").with_columns(
        (pl.col("price") * pl.col("usd_rate")).alias("unit_price_usd")
    )
    events = per_market(events, time_zones, lambda zone: [local_date("event_ts", zone).alias(LOCAL_DAY)])

    auctions = scan_table(contract_dir, "auctions").filter(pl.col("request_ts") < as_of)
    auctions = with_usd_rate(
        auctions.with_columns(pl.col("request_ts").dt.date().alias(DAY)), usd_rates, DAY, "currency"
    )
    auctions = per_market(
        auctions, time_zones, lambda zone: [local_date("request_ts", zone).alias(LOCAL_DAY)]
    )

    # Held in memory: every table reads them, and their enrichment (rates, local days) is the costly
    # part of a plan that the lazy engine would otherwise repeat per use. Only the columns the
    # transformations read: ids, channels and slots would be most of the memory of a large world.
    events_frame = events.select(EVENT_COLUMNS).collect()
    auctions_frame = auctions.select(AUCTION_COLUMNS).collect()
    promotions = scan_table(contract_dir, "promotions")
    sales = scan_table(contract_dir, "sales").filter(pl.col("date") <= last_day + timedelta(days=1))
    first_days = [
        events_frame[LOCAL_DAY].min(),
        auctions_frame[LOCAL_DAY].min(),
        promotions.select(pl.col("start_date").min()).collect().item(),
        sales.select(pl.col("date").min()).collect().item(),
    ]
    # a day earlier: promotions keep a series alive from the day before they start
    first_day = min((day for day in first_days if day is not None), default=last_day) - timedelta(days=1)
    return FeatureInputs(
        markets=markets.lazy(),
        events=events_frame.lazy(),
        users=scan_table(contract_dir, "users"),
        products=products,
        listings=scan_table(contract_dir, "listings"),
        promotions=promotions,
        sales=sales,
        campaigns=scan_table(contract_dir, "campaigns"),
        auctions=auctions_frame.lazy(),
        usd_rates=usd_rates,
        market_day_ends=market_day_ends(time_zones, first_day, last_day + timedelta(days=1)),
        as_of=as_of,
    )
