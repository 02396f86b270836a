"""Per-market holiday and shopping-event features.

The caller passes events as a frame (date, market_id, name, kind), e.g. from the market holiday
calendars; a null market_id (or no market_id column at all) means the event holds in every market.
For each (market, period start) the features say how far the next and the previous event are,
which events they are (as integer codes, for LightGBM's categorical splits), how many events fall
inside the period, and whether the period lies in the dip that follows an event (demand pulled
forward by Black Friday or Christmas is missing in the days after it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import polars as pl

from models.forecasting.series import SeriesSpec, check_columns

EVENT_COLUMNS = ("date", "market_id", "name", "kind")
EVENT_FEATURES = (
    "days_to_event",
    "days_since_event",
    "events_in_period",
    "next_event",
    "next_event_kind",
    "last_event",
    "post_event_dip",
)
CATEGORICAL_EVENT_FEATURES = ("next_event", "next_event_kind", "last_event")
# beyond this many days an event is "far away": one value keeps trees from splitting on noise
DISTANCE_CAP_DAYS = 60


def _codes(values: pl.Series) -> dict[str, int]:
    return {value: code for code, value in enumerate(sorted(set(values.drop_nulls().to_list())))}


@dataclass
class EventCalendar:
    """Events normalised once at fit time, with stable integer codes for names and kinds."""

    events: pl.DataFrame
    spec: SeriesSpec
    dip_days: int = 3
    name_codes: dict[str, int] = field(init=False)
    kind_codes: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        check_columns(self.events, ["date", "name"], "events")
        events = self.events
        if "market_id" not in events.columns:
            events = events.with_columns(pl.lit(None, dtype=pl.String).alias("market_id"))
        if "kind" not in events.columns:
            events = events.with_columns(pl.lit("event").alias("kind"))
        self.events = events.select(
            pl.col("date").cast(pl.Date),
            pl.col("market_id").cast(pl.String),
            pl.col("name").cast(pl.String),
            pl.col("kind").cast(pl.String),
        ).unique()
        self.name_codes = _codes(self.events["name"])
        self.kind_codes = _codes(self.events["kind"])

    def _per_market(self, markets: pl.Series) -> pl.DataFrame:
        """Events keyed by the rows' market values, with market-less events copied to every market."""
        market_column = self.spec.market or "_market"
        specific = self.events.filter(pl.col("market_id").is_not_null())
        everywhere = self.events.filter(pl.col("market_id").is_null()).drop("market_id")
        market_frame = pl.DataFrame({"market_id": markets.cast(pl.String).unique()})
        if self.spec.market is None:
            # no market column in the series: every event counts everywhere
            expanded = self.events.with_columns(pl.lit("all").alias("market_id"))
        else:
            expanded = pl.concat(
                [specific, everywhere.join(market_frame, how="cross").select(specific.columns)]
            )
        return expanded.rename({"market_id": market_column})

    def features(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Event features for the distinct (market, date) pairs of `rows`; join them back on those."""
        spec = self.spec
        market_column = spec.market or "_market"
        pairs = rows.select([spec.market, spec.date] if spec.market else [spec.date]).unique()
        if spec.market is None:
            pairs = pairs.with_columns(pl.lit("all").alias(market_column))
        market_dtype = pairs.schema[market_column]
        pairs = pairs.with_columns(pl.col(market_column).cast(pl.String))
        events = self._per_market(pairs[market_column]).with_columns(
            pl.col("name")
            .replace_strict(self.name_codes, default=None, return_dtype=pl.Int32)
            .alias("_name"),
            pl.col("kind")
            .replace_strict(self.kind_codes, default=None, return_dtype=pl.Int32)
            .alias("_kind"),
        )
        one_per_day = events.sort(["date", "name"]).unique(subset=[market_column, "date"], keep="first")
        one_per_day = one_per_day.sort("date")

        pairs = pairs.sort(spec.date)
        upcoming = pairs.join_asof(
            one_per_day.select(
                market_column,
                pl.col("date").alias("_next_date"),
                pl.col("_name").alias("next_event"),
                pl.col("_kind").alias("next_event_kind"),
            ),
            left_on=spec.date,
            right_on="_next_date",
            by=market_column,
            strategy="forward",
            check_sortedness=False,  # sorted by date overall, hence within every market
        )
        # the previous event is strictly before the period starts
        upcoming = upcoming.with_columns((pl.col(spec.date) - timedelta(days=1)).alias("_probe")).sort(
            "_probe"
        )
        both = upcoming.join_asof(
            one_per_day.select(
                market_column, pl.col("date").alias("_last_date"), pl.col("_name").alias("last_event")
            ),
            left_on="_probe",
            right_on="_last_date",
            by=market_column,
            strategy="backward",
            check_sortedness=False,
        )
        period_starts = (
            events.select(
                market_column,
                pl.int_ranges(0, spec.period_days).alias("_offset"),
                pl.col("date"),
            )
            .explode("_offset")
            .select(
                market_column,
                (pl.col("date") - pl.duration(days=pl.col("_offset"))).alias(spec.date),
            )
            .group_by([market_column, spec.date])
            .agg(pl.len().cast(pl.Float32).alias("events_in_period"))
        )
        both = both.join(period_starts, on=[market_column, spec.date], how="left")
        cap = DISTANCE_CAP_DAYS
        result = both.select(
            market_column,
            spec.date,
            (pl.col("_next_date") - pl.col(spec.date))
            .dt.total_days()
            .clip(0, cap)
            .fill_null(cap)
            .alias("days_to_event"),
            (pl.col(spec.date) - pl.col("_last_date"))
            .dt.total_days()
            .clip(0, cap)
            .fill_null(cap)
            .alias("days_since_event"),
            pl.col("events_in_period").fill_null(0.0),
            "next_event",
            "next_event_kind",
            "last_event",
            # after the event, not on its later days: multi-day events (Christmas week) count once
            (
                ((pl.col(spec.date) - pl.col("_last_date")).dt.total_days() <= self.dip_days)
                & pl.col("events_in_period").is_null()
            )
            .fill_null(False)
            .cast(pl.Float32)
            .alias("post_event_dip"),
        )
        result = result.with_columns(
            pl.col("days_to_event").cast(pl.Float32), pl.col("days_since_event").cast(pl.Float32)
        )
        if spec.market is None:
            return result.drop(market_column)
        return result.with_columns(pl.col(market_column).cast(market_dtype))
