"""The Feast feature repo and `features.store`: apply, materialize, online reads, point-in-time
training sets, the scale-out switch and the plain `feast` CLI.

The feature tables here are synthetic: every feature value encodes the timestamp of its own row,
so a training set shows exactly which row each value came from.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml
from click.testing import CliRunner
from feast import FeatureView
from feast.cli.cli import cli as feast_cli
from feast.infra.online_stores.redis import RedisOnlineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
from feast.infra.registry.sql import SqlRegistryConfig
from feast.repo_config import RegistryConfig, load_repo_config

from configs.settings import ScaleoutSettings, Settings
from features.feature_repo.definitions import SERVICE_VIEWS
from features.store import (
    FEATURE_REPO_DIR,
    MaterializeSummary,
    ViewMaterialization,
    apply_definitions,
    feature_store,
    historical_features,
    materialize,
    online_features,
    repo_config,
    repo_config_values,
    write_feature_store_yaml,
)
from features.transforms import FEATURE_TABLES, FeatureTableSpec
from features.transforms.build import write_feature_table

KEY_VALUES = {
    "user_id": ["u1", "u2"],
    "product_id": ["p1", "p2"],
    "market_id": ["US", "JP"],
    "category": ["c1", "c2"],
    "campaign_id": ["k1"],
}
JANUARY = datetime(2024, 1, 1, tzinfo=UTC)
ROWS_PER_KEY = 5


def encoded(dtype: pl.DataType, stamp: datetime, key: str) -> object:
    """A feature value that names the row it came from."""
    seconds = int(stamp.timestamp())
    if dtype == pl.Int64:
        return seconds
    if dtype == pl.Float64:
        return float(seconds)
    if dtype == pl.Boolean:
        return seconds % 2 == 0
    return f"{key}@{seconds}"


def synthetic_table(
    spec: FeatureTableSpec, stamps_for: dict[tuple[str, ...], list[datetime]]
) -> pl.DataFrame:
    rows = []
    for key, stamps in stamps_for.items():
        for stamp in stamps:
            row = dict(zip(spec.keys, key, strict=True))
            row["event_timestamp"] = stamp
            row["created_timestamp"] = stamp + timedelta(hours=1)
            row.update({f.name: encoded(f.dtype, stamp, "/".join(key)) for f in spec.features})
            rows.append(row)
    return pl.DataFrame(rows, schema=spec.polars_schema)


def january_stamps(spec: FeatureTableSpec) -> dict[tuple[str, ...], list[datetime]]:
    """Each key gets rows at distinct, irregular January times (seconds apart from round hours)."""
    keys = itertools.product(*(KEY_VALUES[key] for key in spec.keys))
    return {
        key: [
            JANUARY + timedelta(days=3 + 5 * step + index, hours=index + step, seconds=7 * step + 1)
            for step in range(ROWS_PER_KEY)
        ]
        for index, key in enumerate(keys)
    }


@pytest.fixture
def store_settings(tmp_path: Path) -> Settings:
    """A data folder holding synthetic feature tables for every view, applied to Feast."""
    settings = Settings(data_dir=tmp_path / "data")
    for name, spec in FEATURE_TABLES.items():
        write_feature_table(synthetic_table(spec, january_stamps(spec)), settings.feature_dir, name)
    apply_definitions(settings)
    return settings


def service_keys(service: str) -> list[str]:
    return sorted({key for view in SERVICE_VIEWS[service] for key in FEATURE_TABLES[view].keys})


def labels_for(service: str, times: list[datetime]) -> pl.DataFrame:
    keys = service_keys(service)
    combos = itertools.product(*(KEY_VALUES[key] for key in keys), times)
    return pl.DataFrame(
        list(combos),
        schema={**dict.fromkeys(keys, pl.String), "event_timestamp": pl.Datetime("us", "UTC")},
        orient="row",
    )


def expected_row_time(settings: Settings, view: str, label: dict) -> int | None:
    """Brute force: the newest row of the view for the label's keys stamped at or before it."""
    table = pl.read_parquet(settings.feature_dir / f"{view}.parquet")
    keys = FEATURE_TABLES[view].keys
    known = table.filter(
        *(pl.col(key) == label[key] for key in keys), pl.col("event_timestamp") <= label["event_timestamp"]
    )
    return int(known["event_timestamp"].max().timestamp()) if known.height else None


def label_times(settings: Settings) -> list[datetime]:
    """Before any row, exactly at some rows, between rows, and after the last."""
    stamps = pl.concat(
        pl.read_parquet(settings.feature_dir / f"{name}.parquet", columns=["event_timestamp"])
        for name in FEATURE_TABLES
    )["event_timestamp"]
    return [
        JANUARY,
        stamps.sort()[len(stamps) // 3],
        stamps.sort()[len(stamps) // 2] + timedelta(seconds=1),
        stamps.sort()[2 * len(stamps) // 3] - timedelta(seconds=1),
        datetime(2024, 3, 1, tzinfo=UTC),
    ]


def assert_point_in_time(store_settings: Settings, service: str, labels: pl.DataFrame) -> dict[str, int]:
    """Feast's training set for `labels` keeps every label, in order, and each view's features come
    from the latest row at or before the label's time (or are empty if there is none)."""
    training = historical_features(store_settings, labels, service)

    assert training.select([*service_keys(service), "event_timestamp"]).equals(labels)
    outcomes = {"empty": 0, "joined": 0}
    for row in training.iter_rows(named=True):
        for view in SERVICE_VIEWS[service]:
            spec = FEATURE_TABLES[view]
            # every feature of the view names the same row: the expected one, or none
            expected = expected_row_time(store_settings, view, row)
            clock = next(f.name for f in spec.features if f.dtype == pl.Int64 or f.dtype == pl.Float64)
            value = row[f"{view}__{clock}"]
            if expected is None:
                assert all(row[f"{view}__{f.name}"] is None for f in spec.features)
                outcomes["empty"] += 1
            else:
                assert value == expected and value <= row["event_timestamp"].timestamp()
                key = "/".join(row[k] for k in spec.keys)
                assert all(
                    row[f"{view}__{f.name}"] == encoded(f.dtype, datetime.fromtimestamp(expected, UTC), key)
                    for f in spec.features
                )
                outcomes["joined"] += 1
    assert sum(outcomes.values()) == labels.height * len(SERVICE_VIEWS[service])
    return outcomes


@pytest.mark.parametrize("service", list(SERVICE_VIEWS))
def test_training_set_uses_the_latest_row_at_or_before_each_label(
    store_settings: Settings, service: str
) -> None:
    outcomes = assert_point_in_time(store_settings, service, labels_for(service, label_times(store_settings)))
    # both cases occur
    assert outcomes["empty"] > 0 and outcomes["joined"] > 0


def test_candidates_sharing_a_user_and_time_and_labels_before_any_row_are_all_kept(
    store_settings: Settings,
) -> None:
    """What a ranking training set needs, and what Feast's `file` offline store got wrong in 0.67:
    several candidates of one user at one moment, and labels older than any feature row."""
    keys = service_keys("recommender")
    candidates = list(itertools.product(*(KEY_VALUES[key] for key in keys if key != "user_id")))
    times = label_times(store_settings)
    rows = [
        {
            **dict(zip([k for k in keys if k != "user_id"], candidate, strict=True)),
            "user_id": user,
            "event_timestamp": time,
        }
        for time in [times[0] - timedelta(days=400), *times[1:4]]
        for user in ("u1", "u2")
        for candidate in candidates
    ]
    labels = pl.DataFrame(rows).select(*keys, pl.col("event_timestamp").cast(pl.Datetime("us", "UTC")))
    outcomes = assert_point_in_time(store_settings, "recommender", labels)
    assert outcomes["empty"] > 0 and outcomes["joined"] > 0


def test_of_two_rows_with_one_timestamp_the_one_created_last_wins(store_settings: Settings) -> None:
    spec = FEATURE_TABLES["user_activity"]
    stamp = datetime(2024, 2, 10, tzinfo=UTC)
    first, rebuilt = (synthetic_table(spec, {("u1",): [stamp]}) for _ in range(2))
    rebuilt = rebuilt.with_columns(
        pl.col("created_timestamp") + timedelta(days=1), pl.col("views_7d") + 1, pl.col("carts_7d") + 1
    )
    table = pl.read_parquet(store_settings.feature_dir / "user_activity.parquet")
    # the rebuilt row first in the file: file order must not decide
    write_feature_table(pl.concat([table, rebuilt, first]), store_settings.feature_dir, "user_activity")
    labels = pl.DataFrame(
        {"user_id": ["u1"], "product_id": ["p1"], "market_id": ["US"], "category": ["c1"]}
    ).with_columns(pl.lit(stamp + timedelta(hours=1)).alias("event_timestamp"))

    training = historical_features(store_settings, labels, "recommender")
    assert training["user_activity__views_7d"].to_list() == [int(stamp.timestamp()) + 1]

    materialize(store_settings)
    online = online_features(store_settings, "recommender", labels.drop("event_timestamp").to_dicts())
    assert online["user_activity__carts_7d"] == [int(stamp.timestamp()) + 1]


def test_materialize_then_online_features_are_the_latest_offline_values(store_settings: Settings) -> None:
    summary = materialize(store_settings)
    users = summary_of(summary, "user_activity")
    assert (users.rows, users.entities) == (2 * ROWS_PER_KEY, 2)

    online = online_features(store_settings, "bidder", [{"campaign_id": "k1", "market_id": "JP"}])
    latest = (
        pl.read_parquet(store_settings.feature_dir / "campaign_stats.parquet")
        .sort("event_timestamp")
        .row(-1, named=True)
    )
    assert online["campaign_stats__auctions_7d"] == [latest["auctions_7d"]]
    assert online["campaign_stats__avg_market_price_7d"] == [latest["avg_market_price_7d"]]

    rows = [{"user_id": "u2", "product_id": "p1", "market_id": "JP", "category": "c2"}]
    online = online_features(store_settings, "recommender", rows)
    for view in SERVICE_VIEWS["recommender"]:
        spec = FEATURE_TABLES[view]
        table = pl.read_parquet(store_settings.feature_dir / f"{view}.parquet")
        newest = (
            table.filter(*(pl.col(k) == rows[0][k] for k in spec.keys))
            .sort("event_timestamp")
            .row(-1, named=True)
        )
        assert {f.name: online[f"{view}__{f.name}"][0] for f in spec.features} == {
            f.name: newest[f.name] for f in spec.features
        }, view


def summary_of(summary: MaterializeSummary, view: str) -> ViewMaterialization:
    return next(item for item in summary.views if item.name == view)


def test_incremental_materialize_loads_only_new_rows(store_settings: Settings) -> None:
    materialize(store_settings)
    spec = FEATURE_TABLES["user_activity"]
    february = datetime(2024, 2, 20, tzinfo=UTC)
    table = pl.read_parquet(store_settings.feature_dir / "user_activity.parquet")
    newer = synthetic_table(spec, {("u1",): [february]})
    write_feature_table(pl.concat([table, newer]), store_settings.feature_dir, "user_activity")

    summary = materialize(store_settings)
    users = summary_of(summary, "user_activity")
    assert (users.rows, users.entities) == (1, 1)
    assert all(item.rows == 0 for item in summary.views if item.name != "user_activity")
    online = online_features(
        store_settings,
        "recommender",
        [{"user_id": "u1", "product_id": "p1", "market_id": "US", "category": "c1"}],
    )
    assert online["user_activity__views_7d"] == [int(february.timestamp())]


def test_apply_reports_objects_and_removes_views_no_longer_defined(store_settings: Settings) -> None:
    store = feature_store(store_settings)
    users = store.get_feature_view("user_activity")
    obsolete = FeatureView(
        name="obsolete_view",
        entities=[store.get_entity("user")],
        schema=users.schema,
        source=users.batch_source,
    )
    store.apply([obsolete])
    assert "obsolete_view" in {view.name for view in feature_store(store_settings).list_feature_views()}

    applied = apply_definitions(store_settings)
    assert "feature_service recommender" in applied and "entity campaign" in applied
    assert "deleted feature_view obsolete_view" in applied
    store = feature_store(store_settings)
    assert sorted(view.name for view in store.list_feature_views()) == sorted(FEATURE_TABLES)
    assert sorted(service.name for service in store.list_feature_services()) == sorted(SERVICE_VIEWS)


def test_scaleout_switch_selects_redis_and_sql_registry() -> None:
    settings = Settings(
        mode="scaleout",
        scaleout=ScaleoutSettings(
            redis_url="redis.internal:6380", postgres_url="postgresql+psycopg://u:p@db:5432/feast"
        ),
    )
    config = repo_config(settings)
    assert isinstance(config.online_store, RedisOnlineStoreConfig)
    assert config.online_store.connection_string == "redis.internal:6380"
    assert isinstance(config.registry, SqlRegistryConfig)
    assert config.registry.path == "postgresql+psycopg://u:p@db:5432/feast"
    assert config.offline_store.type == "duckdb"


def test_embedded_default_keeps_everything_under_the_feast_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    config = repo_config(settings)
    assert isinstance(config.online_store, SqliteOnlineStoreConfig)
    assert Path(config.online_store.path).parent == settings.feast_dir
    assert isinstance(config.registry, RegistryConfig) and config.registry.registry_type == "file"
    assert Path(config.registry.path).parent == settings.feast_dir

    # a written feature_store.yaml describes the same stores
    written = load_repo_config(FEATURE_REPO_DIR, write_feature_store_yaml(settings, tmp_path / "fs.yaml"))
    assert written.online_store.path == config.online_store.path
    assert written.registry.path == config.registry.path


def test_checked_in_feature_store_yaml_is_the_embedded_default() -> None:
    """The repo's yaml (relative paths, for `feast` in that folder) and `repo_config` for the
    default settings point at the same files."""
    checked_in = load_repo_config(FEATURE_REPO_DIR, FEATURE_REPO_DIR / "feature_store.yaml")
    default = repo_config_values(Settings())
    assert checked_in.project == default["project"]
    assert checked_in.offline_store.type == default["offline_store"]["type"]
    # Feast joins relative paths to the repo folder
    assert (FEATURE_REPO_DIR / checked_in.registry.path).resolve() == Path(default["registry"]["path"])
    assert (FEATURE_REPO_DIR / checked_in.online_store.path).resolve() == Path(
        default["online_store"]["path"]
    )


@pytest.mark.slow
def test_feast_cli_applies_the_repo_in_a_project_copy(store_settings: Settings, tmp_path: Path) -> None:
    """`feast apply` in a copy of the repo whose `../../data` is a temporary data folder, with
    TRADEWIND_DATA_DIR pointing the definitions at the same folder; then `feast feature-views
    list` (run in-process: the same click command, without a second Feast start-up)."""
    project = tmp_path / "project"
    repo = project / "features" / "feature_repo"
    shutil.copytree(FEATURE_REPO_DIR, repo, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(store_settings.feature_dir, project / "data" / "features")
    env = {**os.environ, "TRADEWIND_DATA_DIR": str(project / "data")}
    feast = Path(sys.executable).parent / "feast"

    applied = subprocess.run([feast, "apply"], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert applied.returncode == 0, applied.stderr
    listed = CliRunner().invoke(feast_cli, ["--chdir", str(repo), "feature-views", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert all(name in listed.output for name in FEATURE_TABLES)

    # what the CLI registered is what features.store reads for that data folder
    cli_settings = Settings(data_dir=project / "data")
    assert (cli_settings.feast_dir / "registry.db").exists()
    views = feature_store(cli_settings).list_feature_views()
    assert sorted(view.name for view in views) == sorted(FEATURE_TABLES)
    assert {Path(view.batch_source.path).parent for view in views} == {cli_settings.feature_dir}
    assert yaml.safe_load((repo / "feature_store.yaml").read_text())["project"] == "tradewind"
