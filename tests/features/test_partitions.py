"""The simulator's nightly deliveries: the last days held back as daily raw partitions, nothing lost."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from configs import load_config
from features.simulator import MarketplaceConfig, generate_marketplace
from features.simulator.partitions import DAILY_TABLES, hold_back_days, raw_partitions
from features.tables import partitions


def test_held_back_days_are_daily_partitions_and_no_row_is_lost(tmp_path: Path) -> None:
    raw, truth = tmp_path / "raw", tmp_path / "truth"
    config = load_config("marketplace", MarketplaceConfig)
    generate_marketplace(config, raw, truth, scale=0.02, progress=False)
    before = {table: pl.read_parquet(raw / table / "generated.parquet") for table in DAILY_TABLES}

    held = hold_back_days(raw, 3)

    last = config.end_date
    assert held == [(last - timedelta(days=offset)).isoformat() for offset in (2, 1, 0)]
    assert raw_partitions(raw) == held
    first_held = date.fromisoformat(held[0])
    for table, column in DAILY_TABLES.items():
        files = partitions(raw, table)
        after = pl.concat([pl.read_parquet(path) for path in files])
        assert after.sort(after.columns).equals(before[table].sort(after.columns)), f"{table}: rows changed"
        kept = pl.read_parquet(raw / table / "generated.parquet")
        day = pl.col(column).cast(pl.Date)
        # what stays is either before the held days or unreadable/future (the dirty rows ingest quarantines)
        assert kept.filter(day.is_between(first_held, date.today())).is_empty()
        for path in files:
            if path.stem != "generated":
                days = pl.read_parquet(path).select(day.clip(upper_bound=last).unique())[column].to_list()
                assert days == [date.fromisoformat(path.stem)], f"{path}: rows of other days"
    with pytest.raises(ValueError, match="at least one day"):
        hold_back_days(raw, 0)
