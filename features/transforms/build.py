"""Build every feature table from the contract tables and write it as parquet for Feast."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from tqdm import tqdm

from configs.settings import Settings
from features.transforms.campaigns import campaign_tables
from features.transforms.inputs import FeatureInputs, load_inputs
from features.transforms.markets import market_tables
from features.transforms.products import product_tables
from features.transforms.specs import CREATED_TIMESTAMP, EVENT_TIMESTAMP, FEATURE_TABLES, FeatureTableSpec
from features.transforms.users import user_tables

TableBuilder = Callable[[FeatureInputs], dict[str, pl.LazyFrame]]
BUILDERS: tuple[TableBuilder, ...] = (user_tables, product_tables, market_tables, campaign_tables)


def feature_table_path(feature_dir: Path, name: str) -> Path:
    """The parquet file a feature view's FileSource reads."""
    return feature_dir / f"{name}.parquet"


def finalize(frame: pl.LazyFrame, spec: FeatureTableSpec, as_of: datetime, created: datetime) -> pl.DataFrame:
    """Cut at `as_of`, stamp `created_timestamp`, and select the spec's columns with its types.

    A missing column raises here, so a transformation cannot silently disagree with the Feast
    feature view declared from the same spec.
    """
    schema = frame.collect_schema()
    missing = [name for name in spec.polars_schema if name not in schema and name != CREATED_TIMESTAMP]
    if missing:
        raise ValueError(f"feature table {spec.name} lacks columns {missing}")
    table = (
        frame.with_columns(pl.lit(created, dtype=pl.Datetime("us", "UTC")).alias(CREATED_TIMESTAMP))
        .select(pl.col(name).cast(dtype, strict=True) for name, dtype in spec.polars_schema.items())
        .collect()
    )
    if table[EVENT_TIMESTAMP].null_count():
        raise ValueError(f"feature table {spec.name} has rows without an event timestamp")
    # Time order lets parquet statistics skip row groups on time filters (materialization). Rows of
    # one timestamp come in no fixed order (a tie-breaking sort on the keys costs several times
    # more): readers select rows by their keys, never by position.
    return table.filter(pl.col(EVENT_TIMESTAMP) <= as_of).sort(EVENT_TIMESTAMP)


def write_feature_table(table: pl.DataFrame, feature_dir: Path, name: str) -> Path:
    """Replace the table atomically, so Feast never reads a half-written file."""
    path = feature_table_path(feature_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    table.write_parquet(tmp)
    tmp.replace(path)
    return path


def build_feature_tables(
    settings: Settings, as_of: datetime | None = None, show_progress: bool = True
) -> dict[str, int]:
    """Build all feature tables from `settings.contract_dir` into `settings.feature_dir`.

    `as_of` is the instant the data is complete up to (default: midnight UTC after the last event
    or auction); no row is stamped later. Returns the number of rows written per table.
    """
    inputs = load_inputs(settings.contract_dir, as_of)
    created = datetime.now(UTC)
    rows: dict[str, int] = {}
    with tqdm(
        total=len(FEATURE_TABLES), desc="feature tables", unit="table", disable=not show_progress
    ) as bar:
        for builder in BUILDERS:
            for name, frame in builder(inputs).items():
                bar.set_postfix_str(name)
                table = finalize(frame, FEATURE_TABLES[name], inputs.as_of, created)
                write_feature_table(table, settings.feature_dir, name)
                rows[name] = table.height
                bar.update()
    return rows
