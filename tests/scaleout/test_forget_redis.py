"""Forgetting a user in the Redis online store (scale-out): the user's entity keys go, through
Feast's own Redis client and key format, and nobody else's do."""

from __future__ import annotations

from pathlib import Path

import pytest
from feast import FeatureStore, RepoConfig
from feast.infra.key_encoding_utils import deserialize_entity_key
from scaleout_services import RedisDb
from test_feature_store import JANUARY, january_stamps, synthetic_table

from configs.settings import Settings
from features.feature_repo.definitions import PROJECT, build_definitions
from features.forget_online import OnlineStoreKeys, user_views
from features.store import FEATURE_REPO_DIR, repo_config_values
from features.transforms import FEATURE_TABLES
from features.transforms.build import write_feature_table

pytestmark = pytest.mark.scaleout


def user_features(store: FeatureStore, user: str) -> list[object]:
    rows = [{"user_id": user, "category": category} for category in ("c1", "c2")]
    answer = store.get_online_features(
        features=[
            f"{view}:{feature}"
            for view in ("user_activity", "user_category_affinity")
            for feature in FEATURE_TABLES[view].feature_names
        ],
        entity_rows=rows,
        full_feature_names=True,
    ).to_dict()
    return [value for name, values in answer.items() if "__" in name for value in values]


def users_in_redis(redis_db: RedisDb) -> dict[str, int]:
    """Entity keys per user id, decoded from every key of the db (Feast's format: key + project)."""
    counts: dict[str, int] = {}
    suffix = PROJECT.encode()
    for key in redis_db.client.scan_iter(count=1000):
        if not key.endswith(suffix):
            continue  # the test db's claim key
        entity = deserialize_entity_key(key[: -len(suffix)], 3)
        values = dict(zip(entity.join_keys, entity.entity_values, strict=True))
        if "user_id" in values:
            counts[values["user_id"].string_val] = counts.get(values["user_id"].string_val, 0) + 1
    return counts


def test_forgetting_deletes_the_users_redis_keys_and_only_theirs(tmp_path: Path, redis_db: RedisDb) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    for name in ("user_activity", "user_category_affinity"):
        spec = FEATURE_TABLES[name]
        write_feature_table(synthetic_table(spec, january_stamps(spec)), settings.feature_dir, name)
    # the embedded file registry with the Redis online store: this test needs Redis only
    values = repo_config_values(settings)
    values["online_store"] = {"type": "redis", "connection_string": redis_db.feast_connection}
    settings.feast_dir.mkdir(parents=True)
    store = FeatureStore(config=RepoConfig(repo_path=FEATURE_REPO_DIR, **values))
    definitions = build_definitions(settings.feature_dir)
    views = [definitions.feature_views[name] for name in ("user_activity", "user_category_affinity")]
    store.apply([*definitions.entities.values(), *views])
    store.materialize(
        start_date=JANUARY, end_date=JANUARY.replace(month=3), feature_views=[v.name for v in views]
    )

    # u1 and u2 each: one user_activity key and one affinity key per category
    assert users_in_redis(redis_db) == {"u1": 3, "u2": 3}
    assert all(value is not None for value in user_features(store, "u1"))
    registered = user_views(store)
    assert [view.name for view in registered] == ["user_activity", "user_category_affinity"]

    # an id with a glob character takes only its own keys (the pattern is escaped, each key decoded)
    assert sum(OnlineStoreKeys(store, view).delete("u*") for view in registered) == 0
    deleted = {view.name: OnlineStoreKeys(store, view).delete("u1") for view in registered}
    assert deleted == {"user_activity": 1, "user_category_affinity": 2}
    assert users_in_redis(redis_db) == {"u2": 3}
    assert all(value is None for value in user_features(store, "u1"))
    assert all(value is not None for value in user_features(store, "u2"))
    # idempotent
    assert sum(OnlineStoreKeys(store, view).delete("u1") for view in registered) == 0
