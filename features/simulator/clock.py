"""Simulated days and times: market-local clock times turned into the contract's UTC timestamps."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from features.contract import UTC_TIMESTAMP

MICROS_PER_SECOND = 1_000_000
SECONDS_PER_DAY = 86_400


def day_range(start: date, end: date) -> np.ndarray:
    """Every day from start to end inclusive, as numpy datetime64[D]."""
    return np.arange(np.datetime64(start, "D"), np.datetime64(end, "D") + 1)


def day_of_year(days: np.ndarray) -> np.ndarray:
    """1 for 1 January ... 366 for 31 December of a leap year."""
    return (days - days.astype("datetime64[Y]")).astype(np.int64) + 1


def weekday(days: np.ndarray) -> np.ndarray:
    """0 for Monday ... 6 for Sunday."""
    return (days.astype("datetime64[D]").astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday


def local_to_utc(days: np.ndarray, day_index: np.ndarray, seconds: np.ndarray, timezone: str) -> np.ndarray:
    """UTC microseconds since the epoch of local wall-clock times in `timezone`.

    `day_index` points into `days` (the local dates), `seconds` is the local time of day. A time in
    the spring-forward gap is moved one hour on; an ambiguous autumn time takes its first instant.
    """
    local_day_us = days.astype("datetime64[us]").astype(np.int64)[day_index]
    local_us = local_day_us + np.asarray(seconds * MICROS_PER_SECOND, dtype=np.int64)
    local = pl.Series(local_us).cast(pl.Datetime("us"))
    zoned = local.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
    if zoned.null_count():
        one_hour_on = local.dt.offset_by("1h").dt.replace_time_zone(
            timezone, ambiguous="earliest", non_existent="null"
        )
        zoned = zoned.fill_null(one_hour_on)
    return zoned.dt.convert_time_zone("UTC").dt.replace_time_zone(None).cast(pl.Int64).to_numpy()


def utc_series(name: str, micros: np.ndarray) -> pl.Series:
    """A contract timestamp column (microseconds, UTC) from UTC microseconds since the epoch."""
    return (
        pl.Series(name, micros, dtype=pl.Int64)
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC")
        .cast(UTC_TIMESTAMP)
    )


def date_series(name: str, days: np.ndarray, day_index: np.ndarray) -> pl.Series:
    """A contract date column from indices into `days`."""
    return pl.Series(name, days[day_index]).cast(pl.Date)
