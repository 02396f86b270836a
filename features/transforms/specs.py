"""What each feature table holds: its entity keys and its feature columns with types and meaning.

The transformations produce exactly these columns (the writer checks it), and the Feast feature
views are declared from the same specs, so the parquet files and the registry cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from features.contract import UTC_TIMESTAMP

EVENT_TIMESTAMP = "event_timestamp"
CREATED_TIMESTAMP = "created_timestamp"
TIMESTAMP_DTYPE = UTC_TIMESTAMP

# Feast entity name -> its join key column. A table keyed by several columns (product x market)
# belongs to several entities, which is how Feast expresses a composite key.
ENTITY_JOIN_KEYS: dict[str, str] = {
    "user": "user_id",
    "product": "product_id",
    "market": "market_id",
    "category": "category",
    "campaign": "campaign_id",
}


@dataclass(frozen=True)
class FeatureColumn:
    name: str
    dtype: pl.DataType
    description: str


@dataclass(frozen=True)
class FeatureTableSpec:
    name: str
    entities: tuple[str, ...]
    description: str
    features: tuple[FeatureColumn, ...]

    @property
    def keys(self) -> list[str]:
        return [ENTITY_JOIN_KEYS[entity] for entity in self.entities]

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]

    @property
    def polars_schema(self) -> dict[str, pl.DataType]:
        """Column order and types of the parquet file."""
        schema: dict[str, pl.DataType] = dict.fromkeys(self.keys, pl.String())
        schema[EVENT_TIMESTAMP] = TIMESTAMP_DTYPE
        schema[CREATED_TIMESTAMP] = TIMESTAMP_DTYPE
        schema.update({feature.name: feature.dtype for feature in self.features})
        return schema


def _windowed(
    template: str, description: str, windows: tuple[int, ...], dtype: pl.DataType
) -> list[FeatureColumn]:
    return [
        FeatureColumn(template.format(w=window), dtype, description.format(w=window)) for window in windows
    ]


USER_ACTIVITY = FeatureTableSpec(
    name="user_activity",
    entities=("user",),
    description="A shopper's profile and activity over the trailing 7/30/90 UTC days.",
    features=(
        FeatureColumn("home_market", pl.String(), "Market the user registered in"),
        *_windowed("views_{w}d", "Product views in the last {w} days", (7, 30, 90), pl.Int64()),
        *_windowed("carts_{w}d", "Add-to-cart events in the last {w} days", (7, 30, 90), pl.Int64()),
        *_windowed("purchases_{w}d", "Purchase events in the last {w} days", (7, 30, 90), pl.Int64()),
        *_windowed("spend_usd_{w}d", "Amount spent in USD in the last {w} days", (7, 30, 90), pl.Float64()),
        *_windowed(
            "distinct_categories_{w}d",
            "Categories interacted with in the last {w} days",
            (30, 90),
            pl.Int64(),
        ),
        FeatureColumn(
            "days_since_last_purchase",
            pl.Int64(),
            "Whole days since the last purchase, capped at 90 (90 means 90 or more); empty if never",
        ),
        FeatureColumn(
            "price_level_90d",
            pl.Float64(),
            "Mean over the last 90 days' purchases of unit price / median list price of the category "
            "in that market (1 = typical, above 1 = buys dearer); empty without priced purchases",
        ),
    ),
)

USER_CATEGORY_AFFINITY = FeatureTableSpec(
    name="user_category_affinity",
    entities=("user", "category"),
    description="How much of a shopper's recent attention goes to one category (one row per user x "
    "category, so a ranker joins the candidate product's category).",
    features=(
        FeatureColumn(
            "interactions_30d", pl.Int64(), "Views, carts and purchases in the category, last 30 days"
        ),
        FeatureColumn(
            "interactions_90d", pl.Int64(), "Views, carts and purchases in the category, last 90 days"
        ),
        FeatureColumn("purchases_90d", pl.Int64(), "Purchases in the category, last 90 days"),
        FeatureColumn(
            "interaction_share_90d", pl.Float64(), "Category share of the user's interactions, last 90 days"
        ),
        FeatureColumn(
            "purchase_share_90d",
            pl.Float64(),
            "Category share of the user's purchases, last 90 days; empty without purchases",
        ),
    ),
)

PRODUCT_CATALOG = FeatureTableSpec(
    name="product_catalog",
    entities=("product",),
    description="Static catalogue attributes of a product, known from its listing time.",
    features=(
        FeatureColumn("category", pl.String(), "Top-level category"),
        FeatureColumn("brand", pl.String(), "Brand"),
        FeatureColumn("markets_listed", pl.Int64(), "Markets the product is offered in"),
    ),
)

_PRICE_FEATURES = (
    FeatureColumn("list_price", pl.Float64(), "Local list price"),
    FeatureColumn(
        "discount", pl.Float64(), "Promotion discount on the day that starts at the timestamp (0 if none)"
    ),
    FeatureColumn(
        "promo_active", pl.Boolean(), "Whether a promotion runs on the day that starts at the timestamp"
    ),
    FeatureColumn("price_local", pl.Float64(), "List price after the promotion, local currency"),
    FeatureColumn("price_usd", pl.Float64(), "price_local in USD at the latest known exchange rate"),
)

PRODUCT_MARKET_POPULARITY = FeatureTableSpec(
    name="product_market_popularity",
    entities=("product", "market"),
    description="Popularity, conversion and price of a product in one market over market-local days.",
    features=(
        *_windowed("views_{w}d", "Views in the last {w} days", (7, 30), pl.Int64()),
        *_windowed("carts_{w}d", "Add-to-cart events in the last {w} days", (7, 30), pl.Int64()),
        *_windowed("purchases_{w}d", "Purchase events in the last {w} days", (7, 30), pl.Int64()),
        FeatureColumn("units_30d", pl.Int64(), "Units sold in the last 30 days"),
        *_windowed(
            "conversion_{w}d",
            "Purchases / views over the last {w} days; empty without views",
            (7, 30),
            pl.Float64(),
        ),
        *_PRICE_FEATURES,
    ),
)

PRODUCT_MARKET_DEMAND = FeatureTableSpec(
    name="product_market_demand",
    entities=("product", "market"),
    description="Daily demand history of a product in a market, for the day that starts at the "
    "timestamp (the target day): lags count back from it, price and promotion describe it.",
    features=(
        FeatureColumn("units_lag_1", pl.Float64(), "Units sold on the day before the target day"),
        FeatureColumn("units_lag_7", pl.Float64(), "Units sold 7 days before the target day"),
        FeatureColumn("units_lag_14", pl.Float64(), "Units sold 14 days before the target day"),
        FeatureColumn("units_lag_28", pl.Float64(), "Units sold 28 days before the target day"),
        FeatureColumn("units_mean_7", pl.Float64(), "Mean daily units over the 7 days before the target day"),
        FeatureColumn(
            "units_mean_28", pl.Float64(), "Mean daily units over the 28 days before the target day"
        ),
        *_PRICE_FEATURES,
    ),
)

MARKET_DAILY = FeatureTableSpec(
    name="market_daily",
    entities=("market",),
    description="Market-wide activity over market-local days and the currency rate.",
    features=(
        FeatureColumn("usd_per_unit", pl.Float64(), "Latest known USD value of one unit of local currency"),
        FeatureColumn("active_users_1d", pl.Int64(), "Distinct shoppers with any event on the last day"),
        FeatureColumn("views_7d", pl.Int64(), "Product views in the last 7 days"),
        FeatureColumn("purchases_7d", pl.Int64(), "Purchase events in the last 7 days"),
        FeatureColumn("units_7d", pl.Int64(), "Units sold in the last 7 days"),
        FeatureColumn("gmv_usd_7d", pl.Float64(), "Gross merchandise value in USD, last 7 days"),
    ),
)

CAMPAIGN_STATS = FeatureTableSpec(
    name="campaign_stats",
    entities=("campaign",),
    description="Auction outcomes of a campaign over the campaign market's local days. Spend counts "
    "the market price of won impressions (second price, CPM / 1000), in the campaign currency.",
    features=(
        *_windowed("auctions_{w}d", "Bid requests seen in the last {w} days", (1, 7), pl.Int64()),
        *_windowed("wins_{w}d", "Auctions won in the last {w} days", (1, 7), pl.Int64()),
        FeatureColumn("clicks_7d", pl.Int64(), "Clicks on won impressions, last 7 days"),
        FeatureColumn("conversions_7d", pl.Int64(), "Conversions after clicks, last 7 days"),
        *_windowed("win_rate_{w}d", "Wins / auctions over the last {w} days", (1, 7), pl.Float64()),
        FeatureColumn("ctr_7d", pl.Float64(), "Clicks / wins, last 7 days"),
        FeatureColumn("cvr_7d", pl.Float64(), "Conversions / clicks, last 7 days"),
        FeatureColumn("avg_market_price_7d", pl.Float64(), "Mean price to beat (CPM), campaign currency"),
        FeatureColumn("avg_market_price_usd_7d", pl.Float64(), "Mean price to beat (CPM) in USD"),
        *_windowed("spend_{w}d", "Spend in the last {w} days, campaign currency", (1, 7), pl.Float64()),
        FeatureColumn("value_7d", pl.Float64(), "Conversion value in the last 7 days, campaign currency"),
        FeatureColumn("budget_spent_share_1d", pl.Float64(), "spend_1d / daily budget"),
    ),
)

FEATURE_TABLES: dict[str, FeatureTableSpec] = {
    spec.name: spec
    for spec in (
        USER_ACTIVITY,
        USER_CATEGORY_AFFINITY,
        PRODUCT_CATALOG,
        PRODUCT_MARKET_POPULARITY,
        PRODUCT_MARKET_DEMAND,
        MARKET_DAILY,
        CAMPAIGN_STATS,
    )
}
