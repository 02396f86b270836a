"""Tradewind's Feast objects: entities, one feature view per feature table, one feature service
per model family.

`build_definitions(feature_dir)` makes them for any data folder (tests, custom data dirs,
`features.store`). The plain `feast` CLI reads the module-level objects of `feast_objects.py`
instead, built by the same function.

Feature views carry no TTL: every row stays valid until the entity's next row (see
`features.transforms`), so a TTL would only turn correct values into missing ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import polars as pl
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Bool, FeastType, Float64, Int64, String

from configs.families import BIDDER, FORECASTER, RECOMMENDER
from features.transforms.build import feature_table_path
from features.transforms.specs import (
    CREATED_TIMESTAMP,
    ENTITY_JOIN_KEYS,
    EVENT_TIMESTAMP,
    FEATURE_TABLES,
    FeatureTableSpec,
)

PROJECT = "tradewind"
FOREVER = timedelta(0)

ENTITY_DESCRIPTIONS = {
    "user": "A shopper (contract table users)",
    "product": "A catalogue item (contract table products)",
    "market": "A country storefront (contract table markets)",
    "category": "A top-level product category",
    "campaign": "An advertiser's ad campaign (contract table campaigns)",
}

# Which feature views each model family reads. The entity columns a training set needs follow
# from them: recommendation needs user_id, product_id, market_id and the candidate's category.
SERVICE_VIEWS = {
    RECOMMENDER.feature_service: (
        "user_activity",
        "user_category_affinity",
        "product_catalog",
        "product_market_popularity",
    ),
    FORECASTER.feature_service: (
        "product_market_demand",
        "product_market_popularity",
        "market_daily",
        "product_catalog",
    ),
    BIDDER.feature_service: ("campaign_stats", "market_daily"),
}
SERVICE_DESCRIPTIONS = {
    RECOMMENDER.feature_service: "Ranking features for (user, product, market) candidates",
    FORECASTER.feature_service: "Demand history and context per product x market",
    BIDDER.feature_service: "Campaign auction statistics and market context",
}

_FEAST_TYPES: dict[type[pl.DataType], FeastType] = {
    pl.String: String,
    pl.Int64: Int64,
    pl.Float64: Float64,
    pl.Boolean: Bool,
}


def feast_type(dtype: pl.DataType) -> FeastType:
    try:
        return _FEAST_TYPES[type(dtype)]
    except KeyError:
        raise TypeError(f"no Feast type for polars {dtype}") from None


@dataclass(frozen=True)
class FeatureDefinitions:
    entities: dict[str, Entity]
    feature_views: dict[str, FeatureView]
    feature_services: dict[str, FeatureService]

    @property
    def objects(self) -> list[Entity | FeatureView | FeatureService]:
        """Everything to apply, in dependency order."""
        return [*self.entities.values(), *self.feature_views.values(), *self.feature_services.values()]


def _feature_view(spec: FeatureTableSpec, entities: dict[str, Entity], feature_dir: Path) -> FeatureView:
    source = FileSource(
        name=f"{spec.name}_source",
        path=str(feature_table_path(feature_dir.resolve(), spec.name)),
        timestamp_field=EVENT_TIMESTAMP,
        created_timestamp_column=CREATED_TIMESTAMP,
        description=f"Parquet feature table {spec.name} built by features.transforms",
    )
    # Join keys are declared in the schema too, so Feast never opens the file to infer them.
    key_fields = [Field(name=key, dtype=String) for key in spec.keys]
    feature_fields = [
        Field(name=feature.name, dtype=feast_type(feature.dtype), description=feature.description)
        for feature in spec.features
    ]
    return FeatureView(
        name=spec.name,
        entities=[entities[entity] for entity in spec.entities],
        ttl=FOREVER,
        schema=key_fields + feature_fields,
        source=source,
        online=True,
        description=spec.description,
        tags={"owner": "features"},
    )


def build_definitions(feature_dir: Path) -> FeatureDefinitions:
    """Entities, feature views over the parquet tables in `feature_dir`, and feature services."""
    entities = {
        name: Entity(
            name=name,
            join_keys=[join_key],
            value_type=ValueType.STRING,
            description=ENTITY_DESCRIPTIONS[name],
        )
        for name, join_key in ENTITY_JOIN_KEYS.items()
    }
    views = {name: _feature_view(spec, entities, feature_dir) for name, spec in FEATURE_TABLES.items()}
    services = {
        name: FeatureService(
            name=name,
            features=[views[view] for view in view_names],
            description=SERVICE_DESCRIPTIONS[name],
        )
        for name, view_names in SERVICE_VIEWS.items()
    }
    return FeatureDefinitions(entities, views, services)
