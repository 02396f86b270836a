"""Days and snapshot timestamps in UTC or in each market's own time zone.

A snapshot row describes a whole day D and is stamped at the moment D ends: midnight at the start
of D + 1 in the entity's calendar, converted to UTC. Market-bound entities count days in the
market's time zone (promotions and sales are dated that way); users count UTC days.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

import polars as pl

from features.transforms.specs import EVENT_TIMESTAMP

UTC = "UTC"


def local_date(timestamp: str, time_zone: str) -> pl.Expr:
    """The calendar date of a UTC timestamp column as seen in `time_zone`."""
    return pl.col(timestamp).dt.convert_time_zone(time_zone).dt.date()


def day_end_timestamp(day: str, time_zone: str) -> pl.Expr:
    """The UTC instant at which `day` ends in `time_zone` (the next day's local midnight)."""
    next_midnight = (pl.col(day) + timedelta(days=1)).cast(pl.Datetime("us"))
    localized = next_midnight.dt.replace_time_zone(time_zone, ambiguous="earliest", non_existent="null")
    # A few zones skip midnight on DST days; the day then starts at 01:00.
    shifted = (next_midnight + timedelta(hours=1)).dt.replace_time_zone(
        time_zone, ambiguous="earliest", non_existent="null"
    )
    return pl.coalesce(localized, shifted).dt.convert_time_zone(UTC)


def per_market(
    frame: pl.LazyFrame, time_zones: dict[str, str], columns: Callable[[str], list[pl.Expr]]
) -> pl.LazyFrame:
    """Add columns that depend on the market's time zone.

    Polars converts time zones only by a literal zone name, so each market's rows are converted
    on their own (a handful of markets, each vectorised) and stacked again.
    """
    parts = [
        frame.filter(pl.col("market_id") == market_id).with_columns(columns(time_zone))
        for market_id, time_zone in sorted(time_zones.items())
    ]
    if not parts:
        return frame.with_columns(columns(UTC)).clear()
    return pl.concat(parts, how="vertical")


def market_day_ends(time_zones: dict[str, str], first_day: date, last_day: date) -> pl.DataFrame:
    """`event_timestamp` of every market and day in a range: the day's end, in UTC.

    Rows take their stamp from this small table by a join, so the time zone arithmetic runs once
    per market and day rather than once per row.
    """
    days = pl.LazyFrame({"day": pl.date_range(first_day, last_day, eager=True)})
    grid = pl.LazyFrame({"market_id": sorted(time_zones)}, schema={"market_id": pl.String}).join(
        days, how="cross"
    )
    return per_market(
        grid, time_zones, lambda zone: [day_end_timestamp("day", zone).alias(EVENT_TIMESTAMP)]
    ).collect()


def stamp_days(frame: pl.LazyFrame, market_day_ends: pl.DataFrame | None, day: str = "day") -> pl.LazyFrame:
    """Add `event_timestamp`: the end of `day` in UTC (market_day_ends None) or in the row's market."""
    if market_day_ends is None:
        return frame.with_columns(day_end_timestamp(day, UTC).alias(EVENT_TIMESTAMP))
    return frame.join(market_day_ends.lazy().rename({"day": day}), on=["market_id", day], how="left")
