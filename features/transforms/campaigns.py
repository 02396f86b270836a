"""Ad auction features per campaign and local day of the auction's market: `campaign_stats`."""

from __future__ import annotations

import polars as pl

from features.transforms.calendar import stamp_days
from features.transforms.inputs import LOCAL_DAY, FeatureInputs
from features.transforms.specs import CAMPAIGN_STATS
from features.transforms.windows import DAY, KEY, KeyCodes, alive_days, drop_unchanged, ratio, window_sums

WINDOWS = (1, 7)
# market prices are CPM: the cost of one impression is a thousandth
IMPRESSIONS_PER_PRICE_UNIT = 1000


def campaign_stats(inputs: FeatureInputs) -> pl.LazyFrame:
    won = pl.col("won")
    by_day = (
        inputs.auctions.group_by("campaign_id", pl.col(LOCAL_DAY).alias(DAY))
        .agg(
            pl.len().cast(pl.Int64).alias("auctions"),
            won.sum().cast(pl.Int64).alias("wins"),
            (won & pl.col("click")).sum().cast(pl.Int64).alias("clicks"),
            (won & pl.col("click") & pl.col("conversion")).sum().cast(pl.Int64).alias("conversions"),
            pl.col("value").sum().alias("value"),
            (pl.col("market_price").filter(won).sum() / IMPRESSIONS_PER_PRICE_UNIT).alias("spend"),
            pl.col("market_price").sum().alias("market_price"),
            (pl.col("market_price") * pl.col("usd_rate")).sum().alias("market_price_usd"),
        )
        .collect()
    )
    codes = KeyCodes.of([by_day.lazy()], ["campaign_id"])
    daily = codes.encode(by_day.lazy()).collect().lazy()  # read by several joins below
    anchors = daily.select(KEY, DAY, pl.lit(max(WINDOWS), dtype=pl.Int64).alias("horizon"))
    grid = alive_days(anchors, inputs.last_local_day)
    columns = [
        "auctions",
        "wins",
        "clicks",
        "conversions",
        "value",
        "spend",
        "market_price",
        "market_price_usd",
    ]
    frame = window_sums(grid, daily, columns, WINDOWS)
    # the campaign's market gives the time zone of its days
    campaigns = codes.encode(inputs.campaigns.select("campaign_id", "market_id", "daily_budget"))
    frame = frame.join(campaigns, on=KEY, how="left").with_columns(
        *(ratio(f"wins_{window}d", f"auctions_{window}d").alias(f"win_rate_{window}d") for window in WINDOWS),
        ratio("clicks_7d", "wins_7d").alias("ctr_7d"),
        ratio("conversions_7d", "clicks_7d").alias("cvr_7d"),
        ratio("market_price_7d", "auctions_7d").alias("avg_market_price_7d"),
        ratio("market_price_usd_7d", "auctions_7d").alias("avg_market_price_usd_7d"),
        ratio("spend_1d", "daily_budget").alias("budget_spent_share_1d"),
    )
    compact = drop_unchanged(frame, CAMPAIGN_STATS.feature_names)
    return stamp_days(codes.decode(compact), inputs.market_day_ends)


def campaign_tables(inputs: FeatureInputs, keys_per_part: int) -> dict[str, list[pl.LazyFrame]]:
    """One part: a few hundred campaigns (`keys_per_part` does not apply)."""
    return {CAMPAIGN_STATS.name: [campaign_stats(inputs)]}
