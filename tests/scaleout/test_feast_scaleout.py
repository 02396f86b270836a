"""Feast in scale-out mode: the SQL registry on PostgreSQL and the Redis online store answer as the
embedded mode (file registry, SQLite online store) does, on the same tiny feature tables."""

from __future__ import annotations

import itertools
from pathlib import Path

import psycopg
import pytest
from scaleout_services import RedisDb, ScratchDatabase, libpq_conninfo
from test_feature_store import KEY_VALUES, january_stamps, service_keys, synthetic_table

from configs.settings import ScaleoutSettings, Settings
from features.feature_repo.definitions import PROJECT, SERVICE_VIEWS
from features.store import apply_definitions, materialize, online_features
from features.transforms import FEATURE_TABLES
from features.transforms.build import write_feature_table

pytestmark = pytest.mark.scaleout


def entity_rows(service: str) -> list[dict[str, str]]:
    """Every combination of the tiny tables' keys, plus one key that has no feature rows at all."""
    keys = service_keys(service)
    rows = [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(KEY_VALUES[k] for k in keys))
    ]
    return [*rows, dict.fromkeys(keys, "unknown")]


def test_sql_registry_and_redis_serve_what_the_embedded_store_serves(
    tmp_path: Path,
    platform_scaleout: ScaleoutSettings,
    scratch_database: ScratchDatabase,
    redis_db: RedisDb,
) -> None:
    registry_url = scratch_database(platform_scaleout.postgres_url, "feast")
    embedded = Settings(data_dir=tmp_path / "embedded")
    scaleout = Settings(
        mode="scaleout",
        data_dir=tmp_path / "scaleout",
        scaleout=platform_scaleout.model_copy(
            update={"postgres_url": registry_url, "redis_url": redis_db.feast_connection}
        ),
    )
    for name, spec in FEATURE_TABLES.items():
        table = synthetic_table(spec, january_stamps(spec))
        for settings in (embedded, scaleout):
            write_feature_table(table, settings.feature_dir, name)

    assert apply_definitions(scaleout) == apply_definitions(embedded)
    scaled, local = materialize(scaleout), materialize(embedded)
    assert scaled.entities == local.entities > 0
    assert [(v.name, v.rows, v.entities) for v in scaled.views] == [
        (v.name, v.rows, v.entities) for v in local.views
    ]

    for service in SERVICE_VIEWS:
        rows = entity_rows(service)
        answer = online_features(scaleout, service, rows)
        assert answer == online_features(embedded, service, rows)
        # the row with unknown keys has no features; the others have some
        assert all(values[-1] is None for name, values in answer.items() if "__" in name)
        assert any(value is not None for name, values in answer.items() if "__" in name for value in values)

    # it really went to PostgreSQL and Redis, not to files under the data folder
    assert not any(scaleout.feast_dir.iterdir()) and any(embedded.feast_dir.iterdir())
    with psycopg.connect(libpq_conninfo(registry_url)) as connection:
        views = connection.execute(
            "SELECT feature_view_name FROM feature_views WHERE project_id = %s ORDER BY 1", (PROJECT,)
        ).fetchall()
    assert [name for (name,) in views] == sorted(FEATURE_TABLES)
    # one hash per entity key (the claim key besides): every view's keys, shared keys counted once
    assert redis_db.client.dbsize() > 1

    # the next incremental run resumes where the registry in PostgreSQL says the last one ended
    again = materialize(scaleout)
    assert again.entities == 0 and all(view.start > view.end for view in again.views)
