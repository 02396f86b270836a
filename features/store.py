"""Tradewind's Feast feature store, configured from the platform settings.

`repo_config_values` is the one place that reads `settings.mode`: embedded keeps the registry and
the SQLite online store under `settings.feast_dir`; scale-out uses Feast's SQL registry on
PostgreSQL and a Redis online store. The offline store is Feast's DuckDB store over the parquet
feature tables in `settings.feature_dir`, in both modes.

Training sets come from Feast's `get_historical_features` and the online store is loaded by
Feast's `materialize`. The DuckDB offline store is used rather than Feast's `file` store (dask)
because, measured on Feast 0.67, the `file` store drops labels that have no earlier feature row,
collapses labels that share join keys and time (several candidates of one user at one moment),
and took 15 s and 2.2 GB for 20k labels; the DuckDB store keeps every label, in order, and its
point-in-time join is what the tests check.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import yaml
from feast import Entity, FeatureService, FeatureStore, FeatureView, RepoConfig
from feast.infra.offline_stores.file_source import FileSource

from configs.settings import Settings
from features.feature_repo.definitions import PROJECT, build_definitions
from features.transforms import FEATURE_TABLES
from features.transforms.specs import EVENT_TIMESTAMP

# ibis (under Feast's DuckDB store) calls a DuckDB method that DuckDB deprecates: library noise
warnings.filterwarnings("ignore", category=DeprecationWarning, module="ibis")

FEATURE_REPO_DIR = Path(__file__).resolve().parent / "feature_repo"
REGISTRY_FILE = "registry.db"
ONLINE_STORE_FILE = "online_store.db"
# how long a FeatureStore trusts its cached copy of the registry before reading it again
REGISTRY_CACHE_SECONDS = 60
# a run takes rows stamped up to and including its end; the next one starts just after
_NEXT_INSTANT = timedelta(microseconds=1)
# carries the caller's row order through Feast's join
_ENTITY_ROW = "__entity_row"


def repo_config_values(settings: Settings) -> dict[str, Any]:
    """The `feature_store.yaml` content for these settings: the embedded/scale-out switch."""
    common: dict[str, Any] = {
        "project": PROJECT,
        "provider": "local",
        "offline_store": {"type": "duckdb"},
        "entity_key_serialization_version": 3,
    }
    if settings.mode == "scaleout":
        return {
            **common,
            "registry": {
                "registry_type": "sql",
                "path": settings.scaleout.postgres_url,
                "cache_ttl_seconds": REGISTRY_CACHE_SECONDS,
            },
            "online_store": {"type": "redis", "connection_string": settings.scaleout.redis_url},
        }
    return {
        **common,
        "registry": {
            "registry_type": "file",
            "path": str(settings.feast_dir / REGISTRY_FILE),
            "cache_ttl_seconds": REGISTRY_CACHE_SECONDS,
        },
        "online_store": {"type": "sqlite", "path": str(settings.feast_dir / ONLINE_STORE_FILE)},
    }


def repo_config(settings: Settings) -> RepoConfig:
    return RepoConfig(repo_path=FEATURE_REPO_DIR, **repo_config_values(settings))


def write_feature_store_yaml(settings: Settings, path: Path) -> Path:
    """Write a `feature_store.yaml` for these settings (absolute paths), for `feast -f <path> ...`
    against a data folder or mode other than the checked-in embedded default."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(repo_config_values(settings), sort_keys=False))
    return path


def feature_store(settings: Settings) -> FeatureStore:
    # Feast creates only the last folder level of the registry and SQLite paths; unused in
    # scale-out, where the folder stays empty.
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=repo_config(settings))


_KINDS = {Entity: "entity", FeatureView: "feature_view", FeatureService: "feature_service"}


def apply_definitions(settings: Settings) -> list[str]:
    """Register entities, feature views and services, and delete those no longer defined (as
    `feast apply` does). Returns what was applied or deleted, e.g. `feature_view user_activity`."""
    store = feature_store(settings)
    definitions = build_definitions(settings.feature_dir)
    stale: list[Any] = [
        *(view for view in store.list_feature_views() if view.name not in definitions.feature_views),
        *(
            service
            for service in store.list_feature_services()
            if service.name not in definitions.feature_services
        ),
        *(entity for entity in store.list_entities() if entity.name not in definitions.entities),
    ]
    store.apply(definitions.objects, objects_to_delete=stale, partial=False)
    applied = [
        *(f"entity {name}" for name in definitions.entities),
        *(f"feature_view {name}" for name in definitions.feature_views),
        *(f"feature_service {name}" for name in definitions.feature_services),
    ]
    return applied + [f"deleted {_KINDS[type(item)]} {item.name}" for item in stale]


# ---------------------------------------------------------------------------------------------
# materialization


@dataclass(frozen=True)
class ViewMaterialization:
    name: str
    start: datetime
    end: datetime
    rows: int  # feature rows stamped in [start, end]
    entities: int  # entity keys written to the online store (the latest row of each)
    seconds: float


@dataclass(frozen=True)
class MaterializeSummary:
    incremental: bool
    views: tuple[ViewMaterialization, ...]
    seconds: float

    @property
    def entities(self) -> int:
        return sum(view.entities for view in self.views)

    def __rich__(self) -> str:
        """`rich` prints the summary text rather than the dataclass fields."""
        return str(self)

    def __str__(self) -> str:
        kind = "incremental" if self.incremental else "full"
        lines = [f"materialized ({kind}) {self.entities:,} entity keys in {self.seconds:.1f} s"]
        for view in self.views:
            if view.start > view.end:
                lines.append(f"  {view.name}: up to date ({view.end:%Y-%m-%d %H:%M} UTC)")
                continue
            lines.append(
                f"  {view.name}: {view.entities:,} keys from {view.rows:,} rows "
                f"({view.start:%Y-%m-%d %H:%M} .. {view.end:%Y-%m-%d %H:%M} UTC, {view.seconds:.1f} s)"
            )
        return "\n".join(lines)


def _source_path(store: FeatureStore, source: FileSource) -> Path:
    return Path(FileSource.get_uri_for_file_path(store.config.repo_path, source.path))


def _scan_source(store: FeatureStore, view: FeatureView) -> pl.LazyFrame:
    path = _source_path(store, view.batch_source)
    if not path.exists():
        raise FileNotFoundError(f"feature table {path} is missing: run `tradewind features build` first")
    return pl.scan_parquet(path)


def _materialize_view(
    store: FeatureStore, view: FeatureView, start: datetime, end: datetime
) -> tuple[int, int]:
    """Load the view's latest values stamped in [start, end] with Feast; (rows, keys) in that span."""
    stamped = _scan_source(store, view).filter(
        pl.col(view.batch_source.timestamp_field).is_between(start, end)
    )
    rows, keys = stamped.select(pl.len(), pl.struct(view.join_keys).n_unique()).collect().row(0)
    if rows:
        store.materialize(start_date=start, end_date=end, feature_views=[view.name])
    return rows, keys


def materialize(
    settings: Settings,
    end: datetime | None = None,
    incremental: bool = True,
) -> MaterializeSummary:
    """Load the latest feature values up to `end` into the online store.

    Incremental (the default) starts each view where its last materialization ended; a full run,
    or a view never materialized, starts at its first row. `end` defaults to the newest row of
    any feature table. Feast records each interval in the registry, which is where the next
    incremental run resumes.
    """
    started = time.perf_counter()
    store = feature_store(settings)
    views = sorted(store.list_feature_views(), key=lambda view: view.name)
    spans = {
        view.name: _scan_source(store, view)
        .select(
            pl.col(view.batch_source.timestamp_field).min().alias("first"),
            pl.col(view.batch_source.timestamp_field).max().alias("last"),
        )
        .collect()
        .row(0)
        for view in views
    }
    if end is None:
        end = max((last for _, last in spans.values() if last is not None), default=datetime.now(UTC))
    end = end.astimezone(UTC)
    results = []
    for view in views:
        resume = view.most_recent_end_time if incremental else None
        first = spans[view.name][0]
        if resume is not None:
            start = resume.astimezone(UTC) + _NEXT_INSTANT
        elif first is not None:
            start = first.astimezone(UTC)
        else:
            start = end
        view_started = time.perf_counter()
        rows, keys = _materialize_view(store, view, start, end) if start <= end else (0, 0)
        results.append(
            ViewMaterialization(view.name, start, end, rows, keys, time.perf_counter() - view_started)
        )
    return MaterializeSummary(incremental, tuple(results), time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# retrieval


def _entity_frame(entity_df: pl.DataFrame | pd.DataFrame) -> pl.DataFrame:
    """The entity rows as polars, with `event_timestamp` in UTC (naive times are taken as UTC)."""
    frame = pl.from_pandas(entity_df) if isinstance(entity_df, pd.DataFrame) else entity_df
    if EVENT_TIMESTAMP not in frame.columns:
        raise ValueError(f"entity_df needs an `{EVENT_TIMESTAMP}` column: the time of each label")
    timestamp = frame.schema[EVENT_TIMESTAMP]
    if not isinstance(timestamp, pl.Datetime):
        raise ValueError(f"`{EVENT_TIMESTAMP}` must be a datetime column, got {timestamp}")
    column = pl.col(EVENT_TIMESTAMP)
    utc = (
        column.dt.replace_time_zone("UTC")
        if timestamp.time_zone is None
        else column.dt.convert_time_zone("UTC")
    )
    return frame.with_columns(utc.cast(pl.Datetime("us", "UTC")))


def _feature_dtypes() -> dict[str, pl.DataType]:
    return {
        f"{view}__{feature.name}": feature.dtype
        for view, spec in FEATURE_TABLES.items()
        for feature in spec.features
    }


def historical_features(
    settings: Settings,
    entity_df: pl.DataFrame | pd.DataFrame,
    service_name: str,
    *,
    views: Sequence[str] | None = None,
    store: FeatureStore | None = None,
) -> pl.DataFrame:
    """A point-in-time correct training set from Feast's `get_historical_features`: `entity_df`
    (join keys + `event_timestamp` per label, any other columns kept) with the service's features
    as `<view>__<feature>` columns, in the order of `entity_df`, in the feature tables' types.

    `views` keeps only those feature views of the service (then `entity_df` needs only their join
    keys): rows that describe a user alone need not pay for a join against product tables."""
    store = store or feature_store(settings)
    service = store.get_feature_service(service_name)
    features: FeatureService | list[str] = service
    if views is not None:
        in_service = {projection.name: projection for projection in service.feature_view_projections}
        unknown = [view for view in views if view not in in_service]
        if unknown:
            raise ValueError(
                f"feature service {service_name!r} has no feature view {unknown[0]!r} "
                f"(it has: {', '.join(in_service)})"
            )
        features = [f"{view}:{feature.name}" for view in views for feature in in_service[view].features]
    frame = _entity_frame(entity_df).with_row_index(_ENTITY_ROW)
    job = store.get_historical_features(
        entity_df=frame.to_pandas(), features=features, full_feature_names=True
    )
    training = pl.from_pandas(job.to_df()).sort(_ENTITY_ROW).drop(_ENTITY_ROW)
    # pandas turns integer features with gaps into floats; give every column its own type back
    dtypes = {**_feature_dtypes(), **frame.drop(_ENTITY_ROW).schema}
    return training.with_columns(
        pl.col(name).cast(dtypes[name]) for name in training.columns if name in dtypes
    )


def online_features(
    settings: Settings,
    service: str | FeatureService,
    entity_rows: list[dict[str, Any]],
    *,
    store: FeatureStore | None = None,
) -> dict[str, list[Any]]:
    """The latest materialized features of a service for each entity row, as columns named
    `<view>__<feature>` (plus the join keys). Pass `store`, and the `FeatureService` itself rather
    than its name, to reuse them across requests without a registry lookup each time."""
    store = store or feature_store(settings)
    if isinstance(service, str):
        service = store.get_feature_service(service)
    response = store.get_online_features(features=service, entity_rows=entity_rows, full_feature_names=True)
    return response.to_dict()
