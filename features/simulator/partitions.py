"""Nightly deliveries from the simulated world: the last days of activity held back as daily partitions.

A marketplace's data does not arrive at once: every night brings the day's events, auctions and FX
rates. `hold_back_days(raw_dir, days)` cuts the generated partition so that its last `days` days
become one raw partition per day (`raw/<table>/<YYYY-MM-DD>.parquet`), which `tradewind ingest
--partition DAY` or `tradewind retrain MODEL` then take in one at a time. Dimension tables (markets,
users, products, listings, promotions, campaigns) stay whole in the generated partition, as a
delivery of reference data ahead of the activity would.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from features.simulator.generate import PARTITION
from features.tables import partition_path, partitions, write_partition

# activity table -> the column whose UTC date decides its day
DAILY_TABLES = {"events": "event_ts", "auctions": "request_ts", "fx_rates": "date"}


def _day(column: str, dtype: pl.DataType) -> pl.Expr:
    return pl.col(column) if dtype == pl.Date else pl.col(column).dt.date()


def hold_back_days(raw_dir: Path, days: int) -> list[str]:
    """Move the last `days` days of the activity tables out of the generated partition, one raw
    partition per day; returns the partition names in date order.

    The days are the last `days` dates of the FX table up to today. Rows whose time is missing
    or in the future (the simulator's dirty rows) stay in the generated partition, where ingest
    quarantines them.
    """
    if days < 1:
        raise ValueError(f"days: hold back at least one day, got {days}")
    raw_dir = Path(raw_dir)
    generated = {table: partition_path(raw_dir, table, PARTITION) for table in DAILY_TABLES}
    missing = [str(path) for path in generated.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"no generated partition to hold days back from: {', '.join(missing)}")
    # the last simulated day is the FX table's; an event stamped in UTC just after it (a market
    # west of UTC, late in its evening) belongs to that last delivery
    fx_dates = pl.read_parquet(generated["fx_rates"], columns=["date"])["date"]
    today = datetime.now(UTC).date()
    last = fx_dates.filter(fx_dates <= today).max()
    if last is None:
        raise ValueError(f"{generated['fx_rates']}: no FX rate dated today or earlier")
    first_held: date = last - timedelta(days=days - 1)
    for table, column in DAILY_TABLES.items():
        frame = pl.read_parquet(generated[table])
        stamped = _day(column, frame.schema[column])
        is_held = stamped.is_between(first_held, today)
        day = pl.min_horizontal(stamped, pl.lit(last))
        held = frame.filter(is_held)
        for (held_day,), rows in held.group_by(day.alias("day"), maintain_order=True):
            write_partition(rows, raw_dir, table, held_day.isoformat())
        write_partition(frame.filter(~is_held.fill_null(False)), raw_dir, table, PARTITION)
    return [(first_held + timedelta(days=offset)).isoformat() for offset in range(days)]


def raw_partitions(raw_dir: Path) -> list[str]:
    """The dated partitions waiting in raw/ (any table), in order."""
    names = {path.stem for table in DAILY_TABLES for path in partitions(Path(raw_dir), table)}
    return sorted(name for name in names if name != PARTITION)
