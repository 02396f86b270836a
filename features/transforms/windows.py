"""Trailing-window aggregates evaluated on chosen snapshot days, and the choice of those days.

A count over a window of W days ending on day D covers days D - W + 1 .. D. It is computed from
per-key running totals with as-of joins (total up to D minus total up to D - W), so any set of
snapshot days, dense or sparse, costs one join per window instead of a scan per day.

The functions here work on one integer entity key, `_key` (see `KeyCodes`): sorting and as-of
joins on one integer are several times faster than on string columns, and the frames hold
millions of rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

KEY = "_key"
DAY = "day"
# days since 1970 fit in 20 bits until the year 4840
_DAY_BITS = 20


@dataclass(frozen=True)
class KeyCodes:
    """A dictionary from an entity's key columns (product_id, market_id) to one integer `_key`."""

    keys: tuple[str, ...]
    table: pl.DataFrame

    @classmethod
    def of(cls, frames: Sequence[pl.LazyFrame], keys: Sequence[str]) -> KeyCodes:
        """Codes for every key that appears in any of `frames`, numbered in key order (so the
        output of a build does not depend on hash order)."""
        table = (
            pl.concat([frame.select(keys) for frame in frames])
            .unique()
            .sort(keys)
            .collect()
            .with_row_index(KEY)
            .with_columns(pl.col(KEY).cast(pl.Int64))
        )
        return cls(tuple(keys), table)

    def encode(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        """Replace the key columns by `_key`; rows whose key has no code are dropped."""
        return frame.join(self.table.lazy(), on=list(self.keys), how="inner").drop(list(self.keys))

    def decode(self, frame: pl.LazyFrame, keep_code: bool = False) -> pl.LazyFrame:
        """Add the key columns back for `_key` (and drop `_key` unless `keep_code`)."""
        decoded = frame.join(self.table.lazy(), on=KEY, how="inner")
        return decoded if keep_code else decoded.drop(KEY)


def key_parts(codes: KeyCodes, keys_per_part: int) -> list[pl.Expr]:
    """Filters that split the codes into consecutive ranges of at most `keys_per_part` keys.

    A table whose values depend on one entity's rows only is computed part by part: the same
    rows, with the memory of one part (every key-day of a large world at once does not fit).
    """
    if keys_per_part < 1:
        raise ValueError(f"keys_per_part: must be at least 1, got {keys_per_part}")
    count = max(codes.table.height, 1)
    return [
        pl.col(KEY).is_between(start, min(start + keys_per_part, count), closed="left")
        for start in range(0, count, keys_per_part)
    ]


def by_key_and_day() -> pl.Expr:
    """One integer that orders rows by key, then day (a two-column sort is several times slower)."""
    return pl.col(KEY) * (1 << _DAY_BITS) + pl.col(DAY).cast(pl.Int32).cast(pl.Int64)


def active_ranges(anchors: pl.LazyFrame, last_day: date) -> pl.LazyFrame:
    """Merged day ranges `_from` .. `_until` during which anchors keep each key alive.

    `anchors` holds `_key`, `day` and `horizon` (days): an anchor on day a keeps its key alive
    on a .. a + horizon, cut at `last_day`. Overlapping or adjacent ranges are merged.
    """
    return (
        anchors.with_columns((pl.col(DAY) + pl.duration(days=pl.col("horizon"))).alias("_until"))
        .group_by(KEY, DAY)
        .agg(pl.col("_until").max())
        .sort(by_key_and_day())
        .with_columns(pl.col("_until").cum_max().shift(1).over(KEY).alias("_covered_until"))
        .with_columns(
            (
                pl.col("_covered_until").is_null()
                | (pl.col(DAY) > pl.col("_covered_until") + timedelta(days=1))
            )
            .cum_sum()
            .over(KEY)
            .alias("_range")
        )
        .group_by(KEY, "_range")
        .agg(pl.col(DAY).min().alias("_from"), pl.col("_until").max())
        .with_columns(pl.min_horizontal(pl.col("_until"), pl.lit(last_day)))
        .filter(pl.col("_from") <= pl.col("_until"))
        .drop("_range")
    )


def alive_days(anchors: pl.LazyFrame, last_day: date) -> pl.LazyFrame:
    """Every day on which some anchor keeps the key alive (see `active_ranges`), as `_key`, `day`.

    With the horizon equal to the longest window, a key's last alive day is the first day on
    which that window is empty again, so its final row holds zeros.
    """
    return (
        active_ranges(anchors, last_day)
        .with_columns(pl.date_ranges("_from", "_until").alias(DAY))
        .explode(DAY)
        .select(KEY, DAY)
    )


def _next_sunday(column: str) -> pl.Expr:
    """The day itself if a Sunday, else the Sunday after it (weekday: Monday 1 .. Sunday 7)."""
    return pl.col(column) + pl.duration(days=(7 - pl.col(column).dt.weekday()) % 7)


def alive_week_ends(anchors: pl.LazyFrame, last_day: date) -> pl.LazyFrame:
    """Like `alive_days`, but only Sundays: from the first Sunday in a range to the first Sunday
    on or after its end, so the closing row still comes."""
    return (
        active_ranges(anchors, last_day)
        .with_columns(_next_sunday("_from").alias("_from"), _next_sunday("_until").alias("_until"))
        .with_columns(pl.min_horizontal(pl.col("_until"), pl.lit(last_day)))
        .filter(pl.col("_from") <= pl.col("_until"))
        .with_columns(pl.date_ranges("_from", "_until", interval="1w").alias(DAY))
        .explode(DAY)
        .select(KEY, DAY)
    )


def _running(daily: pl.LazyFrame, columns: Sequence[str]) -> pl.LazyFrame:
    """Per key and day, the sum of each column over all days up to that day."""
    return (
        daily.select(KEY, DAY, *columns)
        .sort(by_key_and_day())
        .with_columns(pl.col(column).fill_null(0).cum_sum().over(KEY) for column in columns)
        .rename({DAY: "_running_day"})
    )


def _join_totals(
    points: pl.LazyFrame, running: pl.LazyFrame, columns: Sequence[str], lag_days: int
) -> pl.LazyFrame:
    """Add `_total_<column>_<lag_days>`: the running total on the point's day minus `lag_days`."""
    renamed = running.rename({column: f"_total_{column}_{lag_days}" for column in columns})
    return (
        points.with_columns((pl.col(DAY) - timedelta(days=lag_days)).alias("_lookup_day"))
        .join_asof(
            renamed,
            left_on="_lookup_day",
            right_on="_running_day",
            by=KEY,
            strategy="backward",
            check_sortedness=False,
        )
        .drop("_lookup_day", "_running_day")
        .with_columns(pl.col(f"_total_{column}_{lag_days}").fill_null(0) for column in columns)
    )


def running_totals(points: pl.LazyFrame, daily: pl.LazyFrame, columns: Sequence[str]) -> pl.LazyFrame:
    """Add each column's sum over all days up to each point's day (0 before the key's first day).

    `points` must be sorted by `by_key_and_day()`; their order is kept.
    """
    totals = _join_totals(points, _running(daily, columns), columns, lag_days=0)
    return totals.rename({f"_total_{column}_0": column for column in columns})


def window_sums(
    points: pl.LazyFrame, daily: pl.LazyFrame, columns: Sequence[str], windows: Sequence[int]
) -> pl.LazyFrame:
    """Add `<column>_<W>d`: the sum of `daily[column]` over the W days ending on each point's day.

    `points` holds `_key` and `day`; `daily` holds `_key`, `day` and the columns, one row per key
    and day (missing days count as zero). The result is sorted by key and day.
    """
    offsets = sorted({0, *windows})
    running = _running(daily, columns).collect().lazy()  # read by one join per offset
    result = points.sort(by_key_and_day())
    for offset in offsets:
        result = _join_totals(result, running, columns, lag_days=offset)
    sums = [
        (pl.col(f"_total_{column}_0") - pl.col(f"_total_{column}_{window}")).alias(f"{column}_{window}d")
        for column in columns
        for window in windows
    ]
    totals = [f"_total_{column}_{offset}" for column in columns for offset in offsets]
    # Materialized: the engine runs this chain of as-of joins faster on its own than fused into
    # the joins that follow.
    return result.with_columns(sums).drop(totals).collect().lazy()


def values_days_before(
    points: pl.LazyFrame, daily: pl.LazyFrame, column: str, lags: Sequence[int], name: str
) -> pl.LazyFrame:
    """Add `<name>_<k>`: `daily[column]` on day D + 1 - k for each point's day D (0 if none).

    A point on day D describes the target day D + 1, so lag k counts back from that day.
    """
    result = points
    for lag in lags:
        shifted = daily.select(
            KEY, (pl.col(DAY) + timedelta(days=lag - 1)).alias(DAY), pl.col(column).alias(f"{name}_{lag}")
        )
        result = result.join(shifted, on=[KEY, DAY], how="left").with_columns(
            pl.col(f"{name}_{lag}").fill_null(0)
        )
    return result


def drop_unchanged(frame: pl.LazyFrame, columns: Sequence[str]) -> pl.LazyFrame:
    """Keep each key's first row and every row where some column differs from the previous row.

    A dropped row repeats what a point-in-time join already returns from the earlier row, so
    this loses nothing and keeps quiet entities from writing a row every day.
    """
    new_key = pl.col(KEY) != pl.col(KEY).shift(1)
    changed = pl.any_horizontal([pl.col(column).ne_missing(pl.col(column).shift(1)) for column in columns])
    return frame.sort(by_key_and_day()).filter(new_key.fill_null(True) | changed)


def ratio(numerator: str | pl.Expr, denominator: str | pl.Expr) -> pl.Expr:
    """numerator / denominator, empty (not infinite) when the denominator is zero or empty."""
    top = pl.col(numerator) if isinstance(numerator, str) else numerator
    bottom = pl.col(denominator) if isinstance(denominator, str) else denominator
    return pl.when(bottom > 0).then(top / bottom).otherwise(None)
