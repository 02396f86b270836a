"""The recommendation family: `tradewind train|tune recommender` on the simulator's world.

Training set (from the contract tables and Feast's `recommendation` feature service):
- interactions: events of the types weighted in the config (a pair keeps its largest weight);
  purchases are what is predicted and what the "already bought" rule removes;
- a temporal split: the last `holdout_days` are the test period; the `ranker_label_days` before
  it give the LambdaRank re-ranker its labels (retrievers fitted on what came before them);
- ranker features come from Feast `historical_features`, point-in-time correct at the start of
  each period: the user's activity, the user's affinity to the candidate's category, the
  candidate's popularity and price in the market, the price relative to the user's usual spend,
  the market, and every retriever's score and rank.

Model: retrievers (EASE, item-kNN, content, two-tower, trending-in-market) propose their top
unbought items listed in the market; LightGBM LambdaRank orders their union; the rest of the allowed
catalogue follows in EASE order (the back-fill); unknown users get market-aware trending items.
The registered pyfunc (`RecommenderModel`) holds numpy arrays only: user histories, retriever
weights, feature values as of the end of the data (the fallback when serving passes no online
features), and the booster. The family's evaluation ranks with that served model itself, wound back
to the start of the test period (`as_of_holdout`), through the code `answer` runs.

Retraining gate (`compare_on_holdout`): the champion and a challenger, loaded from the registry, both
answer the test period's buyers through `answer`, each rewound to what was known when the period
began (`as_of_holdout`), and are scored with the shared nDCG@k.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import scipy.sparse as sp
from pydantic import Field

from configs import StrictModel
from configs.families import RECOMMENDER
from configs.settings import Settings
from models.recommendation.base import NO_ITEM, Recommender, mask_scores, row_wise_dot, top_k_items
from models.recommendation.baselines import EASE, ItemKNN, MostPopular
from models.recommendation.cold_start import AttributeSimilarity, PopularInMarket
from models.recommendation.hybrid import rank_within_groups
from models.recommendation.interactions import Interactions
from models.recommendation.ranker import LambdaRankRanker
from models.recommendation.rules import ServingRules
from tracking.registry import pinned_requirements
from training.pipeline import Evaluation, HoldoutComparison, Reporter, TrainedModel, TrainingSet

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

FEATURE_SERVICE = RECOMMENDER.feature_service
CONTRACT_TABLES = ("events", "users", "products", "listings", "markets")
SECONDS_PER_DAY = 86_400.0

# ranker feature name -> Feast column (`<view>__<feature>`)
USER_FEATURES = {
    "user_purchases_90d": "user_activity__purchases_90d",
    "user_views_30d": "user_activity__views_30d",
    "user_carts_30d": "user_activity__carts_30d",
    "user_spend_usd_90d": "user_activity__spend_usd_90d",
    "user_days_since_last_purchase": "user_activity__days_since_last_purchase",
    "user_price_level_90d": "user_activity__price_level_90d",
    "user_distinct_categories_90d": "user_activity__distinct_categories_90d",
}
AFFINITY_FEATURES = {
    "category_interactions_30d": "user_category_affinity__interactions_30d",
    "category_purchases_90d": "user_category_affinity__purchases_90d",
    "category_interaction_share_90d": "user_category_affinity__interaction_share_90d",
    "category_purchase_share_90d": "user_category_affinity__purchase_share_90d",
}
ITEM_MARKET_FEATURES = {
    "item_views_30d": "product_market_popularity__views_30d",
    "item_purchases_7d": "product_market_popularity__purchases_7d",
    "item_purchases_30d": "product_market_popularity__purchases_30d",
    "item_conversion_30d": "product_market_popularity__conversion_30d",
    "item_discount": "product_market_popularity__discount",
    "item_promo_active": "product_market_popularity__promo_active",
    "item_price_usd": "product_market_popularity__price_usd",
    "item_markets_listed": "product_catalog__markets_listed",
}
DERIVED_FEATURES = ("price_vs_user_spend", "user_history_items", "market_code")
# the reason given for an item served below the ranked candidates, in the first retriever's order
BACKFILL_REASON = "backfill"
# the user index of a request from a user the model does not know
NO_USER = -1


# ---------------------------------------------------------------------------------------------
# config


class EventWeights(StrictModel):
    purchase: float = Field(1.0, gt=0)
    add_to_cart: float = Field(0.0, ge=0)
    view: float = Field(0.0, ge=0)


class DataConfig(StrictModel):
    event_weights: EventWeights = EventWeights()
    holdout_days: int = Field(28, ge=1)
    ranker_label_days: int = Field(28, ge=1)
    validation_share: float = Field(0.2, gt=0, lt=1)
    max_label_users: int | None = Field(4000, ge=10)


class TwoTowerSection(StrictModel):
    enabled: bool = False
    epochs: int = Field(4, ge=1)
    embedding_dim: int = Field(32, ge=4)
    temperature: float = Field(0.2, gt=0)


class RetrievalConfig(StrictModel):
    candidates_per_retriever: int = Field(40, ge=1)
    ease_l2: float = Field(200.0, gt=0)
    knn_neighbours: int = Field(100, ge=1)
    popular_half_life_days: float = Field(30.0, gt=0)
    content: bool = True
    two_tower: TwoTowerSection = TwoTowerSection()


class RankerConfig(StrictModel):
    n_estimators: int = Field(100, ge=1)
    learning_rate: float = Field(0.08, gt=0)
    num_leaves: int = Field(15, ge=2)
    min_child_samples: int = Field(50, ge=1)
    monotone_retrieval: bool = True
    report_every: int = Field(10, ge=1)


class ServingConfig(StrictModel):
    default_k: int = Field(10, ge=1)
    max_per_category: int | None = Field(None, ge=1)


class EvaluationConfig(StrictModel):
    k: int = Field(10, ge=1)
    curve_max_k: int = Field(50, ge=1)
    oracle: bool = True


class RecommenderConfig(StrictModel):
    data: DataConfig = DataConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    ranker: RankerConfig = RankerConfig()
    serving: ServingConfig = ServingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    threads: int = Field(1, ge=1)
    seed: int = 42


# ---------------------------------------------------------------------------------------------
# the training set


@dataclass
class PeriodFeatures:
    """Feast feature values at one moment: per user, per user x category, per market x item."""

    at: datetime
    user: np.ndarray  # users x len(USER_FEATURES), NaN where unknown
    affinity: np.ndarray  # users x categories x len(AFFINITY_FEATURES)
    item_market: np.ndarray  # markets x items x len(ITEM_MARKET_FEATURES)


@dataclass
class RecommenderData:
    """The world a recommender is trained and evaluated on; row/column indices match throughout."""

    user_ids: np.ndarray
    user_market: np.ndarray  # market index of each user's home market
    item_ids: np.ndarray
    item_category: np.ndarray  # category index per item
    item_attributes: np.ndarray  # items x (categories + brands) one-hot
    markets: list[str]
    categories: list[str]
    listed: np.ndarray  # markets x items, bool
    events: pl.DataFrame  # user_idx, item_idx, is_purchase, weight, time (epoch s), over all time
    label_start: datetime
    test_start: datetime
    end: datetime
    features: dict[str, PeriodFeatures]  # "label", "test", "serve"
    label_users: np.ndarray
    oracle_probability: np.ndarray | None = None  # users x items for test users (else 0)
    cache: dict = field(default_factory=dict)  # fitted retrievers shared by tuning trials

    def interactions(self, before: datetime | None = None) -> Interactions:
        """Weighted interactions (each pair's largest weight) of events before `before`."""
        return self._matrix(self._events(None, before), "weight")

    def purchases(self, start: datetime | None = None, before: datetime | None = None) -> Interactions:
        events = self._events(start, before).filter(pl.col("is_purchase"))
        return self._matrix(events.with_columns(weight=pl.lit(1.0)), "weight")

    def _events(self, start: datetime | None, before: datetime | None) -> pl.DataFrame:
        events = self.events
        if start is not None:
            events = events.filter(pl.col("time") >= start.timestamp())
        if before is not None:
            events = events.filter(pl.col("time") < before.timestamp())
        return events

    def _matrix(self, events: pl.DataFrame, weight: str) -> Interactions:
        pairs = events.group_by("user_idx", "item_idx").agg(pl.col(weight).max(), pl.col("time").max())
        pairs = pairs.sort("user_idx", "item_idx")
        rows = pairs["user_idx"].to_numpy()
        indptr = np.searchsorted(rows, np.arange(len(self.user_ids) + 1)).astype(np.int64)
        matrix = sp.csr_matrix(
            (
                pairs[weight].to_numpy().astype(np.float32),
                pairs["item_idx"].to_numpy().astype(np.int32),
                indptr,
            ),
            shape=(len(self.user_ids), len(self.item_ids)),
        )
        return Interactions(
            matrix=matrix,
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            last_seen=pairs["time"].to_numpy().astype(np.float64),
            item_features=self.item_attributes,
        )


def build_training_set(settings: Settings, config: RecommenderConfig) -> TrainingSet:
    """Contract tables + Feast -> `RecommenderData`, with the contract digests as lineage."""
    from features.tables import read_required_tables, snapshot

    contract = settings.contract_dir
    step = _StepTimer("recommender training set")
    tables = read_required_tables(contract, CONTRACT_TABLES)
    users, products, listings = tables["users"], tables["products"], tables["listings"]
    markets = sorted(tables["markets"]["market_id"].to_list())
    market_index = {market: i for i, market in enumerate(markets)}
    user_ids = users["user_id"].sort().to_numpy()
    users = users.sort("user_id")
    products = products.sort("product_id")
    item_ids = products["product_id"].to_numpy()
    categories = sorted(products["category"].unique().to_list())
    brands = sorted(products["brand"].unique().to_list())
    item_category = products["category"].replace_strict(categories, range(len(categories))).to_numpy()
    item_brand = products["brand"].replace_strict(brands, range(len(brands))).to_numpy()
    attributes = np.zeros((len(item_ids), len(categories) + len(brands)), dtype=np.float32)
    attributes[np.arange(len(item_ids)), item_category] = 1.0
    attributes[np.arange(len(item_ids)), len(categories) + item_brand] = 1.0
    listed = np.zeros((len(markets), len(item_ids)), dtype=bool)
    item_index = {item: i for i, item in enumerate(item_ids.tolist())}
    for product, market in listings.select("product_id", "market_id").iter_rows():
        if product in item_index and market in market_index:
            listed[market_index[market], item_index[product]] = True

    events = _weighted_events(tables["events"], config.data.event_weights, user_ids, item_ids)
    if events.filter(pl.col("is_purchase")).is_empty():
        raise ValueError(f"contract table 'events' under {contract} has no purchases to learn from")
    end = datetime.fromtimestamp(events["time"].max(), UTC)
    test_start = _midnight(end) - timedelta(days=config.data.holdout_days - 1)
    label_start = test_start - timedelta(days=config.data.ranker_label_days)
    if events["time"].min() >= label_start.timestamp():
        raise ValueError(
            f"{config.data.holdout_days} holdout days + {config.data.ranker_label_days} ranker label days "
            f"leave no earlier events to train on (events start {_day(events['time'].min())})"
        )
    data = RecommenderData(
        user_ids=user_ids,
        user_market=users["market_id"].replace_strict(market_index, default=0).to_numpy(),
        item_ids=item_ids,
        item_category=item_category,
        item_attributes=attributes,
        markets=markets,
        categories=categories,
        listed=listed,
        events=events,
        label_start=label_start,
        test_start=test_start,
        end=end,
        features={},
        label_users=np.empty(0, dtype=np.int64),
    )
    step("contract tables and interactions")
    data.label_users = _label_users(data, config)
    test_users = np.flatnonzero(_new_purchases(data, data.test_start, None).history_counts() > 0)
    serve_users = np.flatnonzero(data.interactions().history_counts() > 0)
    data.features = _feast_features(
        settings, data, {"label": (label_start, data.label_users), "test": (test_start, test_users)}
    )
    step(f"Feast historical features ({len(data.label_users)} label users, {len(test_users)} test users)")
    data.features["serve"] = _latest_features(settings, data, serve_users)
    step("latest feature values for serving")
    if config.evaluation.oracle and settings.truth_dir.exists():
        data.oracle_probability = _oracle_probability(settings, data, test_users)
        step("oracle probabilities")
    digests = snapshot(contract)["tables"]
    lineage = {name: digests[name]["digest"] for name in CONTRACT_TABLES if name in digests}
    summary = {
        "users": len(user_ids),
        "products": len(item_ids),
        "events": events.height,
        "purchases": int(events["is_purchase"].sum()),
        "label_users": len(data.label_users),
        "test_users": len(test_users),
        "holdout_days": config.data.holdout_days,
    }
    return TrainingSet(data=data, lineage=lineage, summary=summary)


class _StepTimer:
    """Logs how long each step of a long job took (INFO), so a slow run says where it spends."""

    def __init__(self, job: str) -> None:
        self.job, self.last = job, time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        logger.info("%s: %s in %.1f s", self.job, step, now - self.last)
        self.last = now


def _weighted_events(
    events: pl.DataFrame, weights: EventWeights, user_ids: np.ndarray, item_ids: np.ndarray
) -> pl.DataFrame:
    weight_of = {kind: getattr(weights, kind) for kind in ("purchase", "add_to_cart", "view")}
    kept = [kind for kind, weight in weight_of.items() if weight > 0]
    users = pl.DataFrame({"user_id": user_ids, "user_idx": np.arange(len(user_ids))})
    items = pl.DataFrame({"product_id": item_ids, "item_idx": np.arange(len(item_ids))})
    return (
        events.filter(pl.col("event_type").is_in(kept))
        .join(users, on="user_id")
        .join(items, on="product_id")
        .select(
            "user_idx",
            "item_idx",
            (pl.col("event_type") == "purchase").alias("is_purchase"),
            pl.col("event_type").replace_strict(weight_of, return_dtype=pl.Float64).alias("weight"),
            (pl.col("event_ts").dt.epoch("us").cast(pl.Float64) / 1e6).alias("time"),
        )
    )


def _day(epoch_seconds: float) -> str:
    return f"{datetime.fromtimestamp(epoch_seconds, UTC):%Y-%m-%d}"


def _midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _new_purchases(data: RecommenderData, start: datetime, before: datetime | None) -> Interactions:
    """Purchases in [start, before) of items the user had not bought before `start`."""
    bought = data.purchases(before=start).binary()
    later = data.purchases(start, before).binary()
    fresh = later - later.multiply(bought)
    fresh.eliminate_zeros()
    return Interactions(sp.csr_matrix(fresh), data.user_ids, data.item_ids)


def _label_users(data: RecommenderData, config: RecommenderConfig) -> np.ndarray:
    """Users with history before the label period and a new purchase in it (a sample, if many)."""
    history = data.interactions(before=data.label_start).history_counts()
    labelled = _new_purchases(data, data.label_start, data.test_start).history_counts()
    users = np.flatnonzero((history > 0) & (labelled > 0))
    limit = config.data.max_label_users
    if limit is not None and len(users) > limit:
        users = np.sort(np.random.default_rng(config.seed).choice(users, limit, replace=False))
    return users


def _feast_features(
    settings: Settings, data: RecommenderData, periods: Mapping[str, tuple[datetime, np.ndarray]]
) -> dict[str, PeriodFeatures]:
    """Feast `historical_features` at each period's start, in three calls: a row per user (user
    activity), per (user, category) (category affinity) and per listed (product, market)
    (catalogue, popularity and price in the market). Kept apart because a join costs per row: user
    activity joined to every (user, category) row took 7x longer than to one row per user."""
    from features.store import feature_store, historical_features

    n_users, n_items = len(data.user_ids), len(data.item_ids)
    n_categories, n_markets = len(data.categories), len(data.markets)
    listed_market, listed_item = np.nonzero(data.listed)
    categories = np.asarray(data.categories)
    markets = np.asarray(data.markets)

    def rows(columns: dict[str, np.ndarray]) -> pl.DataFrame:
        frames = []
        for period, (moment, users) in periods.items():
            frame = pl.DataFrame({name: make(users) for name, make in columns.items()})
            frames.append(frame.with_columns(period=pl.lit(period), event_timestamp=pl.lit(moment)))
        return pl.concat(frames)

    store = feature_store(settings)
    user_rows = rows({"user_idx": lambda users: users})
    user_rows = user_rows.with_columns(user_id=pl.Series(data.user_ids[user_rows["user_idx"].to_numpy()]))
    affinity_rows = rows(
        {
            "user_idx": lambda users: np.repeat(users, n_categories),
            "category_idx": lambda users: np.tile(np.arange(n_categories), len(users)),
        }
    )
    affinity_rows = affinity_rows.with_columns(
        user_id=pl.Series(data.user_ids[affinity_rows["user_idx"].to_numpy()]),
        category=pl.Series(categories[affinity_rows["category_idx"].to_numpy()]),
    )
    item_rows = rows({"item_idx": lambda _: listed_item, "market_idx": lambda _: listed_market})
    item_rows = item_rows.with_columns(
        product_id=pl.Series(data.item_ids[item_rows["item_idx"].to_numpy()]),
        market_id=pl.Series(markets[item_rows["market_idx"].to_numpy()]),
    )
    joined = {
        name: historical_features(settings, frame, FEATURE_SERVICE, views=views, store=store)
        for name, frame, views in (
            ("user", user_rows, ["user_activity"]),
            ("affinity", affinity_rows, ["user_category_affinity"]),
            ("item", item_rows, ["product_catalog", "product_market_popularity"]),
        )
    }
    result = {}
    for period, (moment, _) in periods.items():
        users_part = joined["user"].filter(pl.col("period") == period)
        affinity_part = joined["affinity"].filter(pl.col("period") == period)
        items_part = joined["item"].filter(pl.col("period") == period)
        user = np.full((n_users, len(USER_FEATURES)), np.nan, dtype=np.float32)
        affinity = np.full((n_users, n_categories, len(AFFINITY_FEATURES)), np.nan, dtype=np.float32)
        item_market = np.full((n_markets, n_items, len(ITEM_MARKET_FEATURES)), np.nan, dtype=np.float32)
        user[users_part["user_idx"].to_numpy()] = _columns(users_part, USER_FEATURES)
        u, c = affinity_part["user_idx"].to_numpy(), affinity_part["category_idx"].to_numpy()
        affinity[u, c] = _columns(affinity_part, AFFINITY_FEATURES)
        m, i = items_part["market_idx"].to_numpy(), items_part["item_idx"].to_numpy()
        item_market[m, i] = _columns(items_part, ITEM_MARKET_FEATURES)
        result[period] = PeriodFeatures(moment, user, affinity, item_market)
    return result


def _latest_features(settings: Settings, data: RecommenderData, users: np.ndarray) -> PeriodFeatures:
    """The newest row of each key in the feature tables Feast serves from: what `materialize` put
    in the online store. The served model holds them as its fallback when a request comes without
    online features. (Read directly: Feast's online read of 40k rows took 89 s, its offline
    point-in-time join for all users at the end as long as the label and test periods together.)"""
    from features.transforms.build import feature_table_path

    def latest(view: str, keys: list[str]) -> pl.DataFrame:
        frame = pl.scan_parquet(feature_table_path(settings.feature_dir, view))
        # the row stamped last per key (a filter against the per-key maximum: no full sort)
        newest = frame.filter(pl.col("event_timestamp") == pl.col("event_timestamp").max().over(keys))
        newest = newest.filter(pl.col("created_timestamp") == pl.col("created_timestamp").max().over(keys))
        newest = newest.unique(keys, keep="last")
        return newest.rename(
            {name: f"{view}__{name}" for name in newest.collect_schema().names() if name not in keys}
        )

    user_index = pl.DataFrame({"user_id": data.user_ids[users], "user_idx": users})
    category_index = pl.DataFrame(
        {"category": data.categories, "category_idx": np.arange(len(data.categories))}
    )
    item_index = pl.DataFrame({"product_id": data.item_ids, "item_idx": np.arange(len(data.item_ids))})
    market_index = pl.DataFrame({"market_id": data.markets, "market_idx": np.arange(len(data.markets))})
    activity = latest("user_activity", ["user_id"]).join(user_index.lazy(), on="user_id").collect()
    affinity_rows = (
        latest("user_category_affinity", ["user_id", "category"])
        .join(user_index.lazy(), on="user_id")
        .join(category_index.lazy(), on="category")
        .collect()
    )
    items = (
        latest("product_market_popularity", ["product_id", "market_id"])
        .join(latest("product_catalog", ["product_id"]), on="product_id", how="left")
        .join(item_index.lazy(), on="product_id")
        .join(market_index.lazy(), on="market_id")
        .collect()
    )
    n_users, n_items = len(data.user_ids), len(data.item_ids)
    user = np.full((n_users, len(USER_FEATURES)), np.nan, dtype=np.float32)
    affinity = np.full((n_users, len(data.categories), len(AFFINITY_FEATURES)), np.nan, dtype=np.float32)
    item_market = np.full((len(data.markets), n_items, len(ITEM_MARKET_FEATURES)), np.nan, dtype=np.float32)
    user[activity["user_idx"].to_numpy()] = _columns(activity, USER_FEATURES)
    affinity[affinity_rows["user_idx"].to_numpy(), affinity_rows["category_idx"].to_numpy()] = _columns(
        affinity_rows, AFFINITY_FEATURES
    )
    item_market[items["market_idx"].to_numpy(), items["item_idx"].to_numpy()] = _columns(
        items, ITEM_MARKET_FEATURES
    )
    return PeriodFeatures(data.end, user, affinity, item_market)


def _columns(frame: pl.DataFrame, columns: Mapping[str, str]) -> np.ndarray:
    return (
        frame.select(pl.col(column).cast(pl.Float64) for column in columns.values())
        .to_numpy()
        .astype(np.float32)
    )


def _oracle_probability(settings: Settings, data: RecommenderData, users: np.ndarray) -> np.ndarray | None:
    """The simulator's true purchase probabilities on the first test day, users x items (0 for users
    outside `users` or unknown to the truth)."""
    from features.simulator.truth import load_choice_model, true_purchase_probabilities

    model = load_choice_model(settings.truth_dir)
    known = set(model.user_ids)
    column_of = {product: column for column, product in enumerate(model.product_ids)}
    columns = np.array([column_of.get(item, -1) for item in data.item_ids.tolist()])
    probability = np.zeros((len(data.user_ids), len(data.item_ids)), dtype=np.float32)
    for market_idx, market in enumerate(data.markets):
        if market not in model.outside_utility:
            continue
        rows = [u for u in users.tolist() if data.user_market[u] == market_idx and data.user_ids[u] in known]
        if not rows:
            continue
        truth = true_purchase_probabilities(
            settings.truth_dir, data.user_ids[rows].tolist(), market, on=data.test_start.date()
        )
        probability[np.array(rows)] = np.where(columns >= 0, truth[:, np.maximum(columns, 0)], 0.0)
    return probability


# ---------------------------------------------------------------------------------------------
# retrieval: every retriever scores the whole catalogue from a user's history


@dataclass
class RetrievalStack:
    """Fitted retrievers reduced to the arrays that score a history (numpy only: no torch at serve
    time; two-tower user vectors are computed from each known user's history when fitted)."""

    names: list[str]
    ease_weights: np.ndarray | None  # items x items
    knn_similarity: sp.csr_matrix | None
    content_attributes: np.ndarray | None  # items x attributes, unit rows
    tower_items: np.ndarray | None  # items x d, scaled by the temperature
    tower_users: np.ndarray | None  # users x d, from the histories the stack serves
    popular: np.ndarray  # markets x items, trending in the market

    def scores(self, users: np.ndarray, history: sp.csr_matrix, markets: np.ndarray) -> list[np.ndarray]:
        """One users x items score matrix per retriever; `history` rows align with `users`."""
        results = []
        for name in self.names:
            if name == "ease":
                results.append(np.asarray(history @ self.ease_weights))
            elif name == "knn":
                results.append(np.asarray((history @ self.knn_similarity).todense()))
            elif name == "content":
                counts = np.maximum(np.diff(history.indptr), 1)[:, None]
                profile = np.asarray(history.sign() @ self.content_attributes) / counts
                norms = np.linalg.norm(profile, axis=1, keepdims=True)
                unit_profile = profile / np.where(norms > 0, norms, 1.0)
                results.append(row_wise_dot(unit_profile, self.content_attributes))
            elif name == "two_tower":
                results.append(row_wise_dot(self.tower_users[users], self.tower_items))
            elif name == "popular":
                results.append(self.popular[markets])
        return results


def fit_retrievers(
    data: RecommenderData,
    train: Interactions,
    config: RecommenderConfig,
    params: Mapping[str, Any],
    purchases: Interactions | None = None,
) -> tuple[RetrievalStack, Any]:
    """Fit every configured retriever on `train`, the two-tower model on `purchases` (its cost grows
    with the pairs, and views are many; default: `train`), user vectors from those histories;
    returns the stack and the two-tower model (None without one). Fits are cached in `data.cache`,
    keyed by the data's cut-off and their parameters, so tuning trials share them."""
    retrieval = config.retrieval
    cutoff = float(train.last_seen.max()) if train.nnz else 0.0
    names = ["ease", "knn"]
    ease = _cached(
        data, ("ease", cutoff, params["ease_l2"]), lambda: EASE(params["ease_l2"], binary=False).fit(train)
    )
    knn = _cached(
        data,
        ("knn", cutoff, params["knn_neighbours"]),
        lambda: ItemKNN(int(params["knn_neighbours"]), binary=False).fit(train),
    )
    content = None
    if retrieval.content:
        names.append("content")
        content = AttributeSimilarity(data.item_attributes).fit(train).unit_attributes_
    tower_items = tower_users = None
    if retrieval.two_tower.enabled:
        from models.recommendation.two_tower import TwoTower, TwoTowerConfig

        names.append("two_tower")
        tower_config = TwoTowerConfig(
            embedding_dim=retrieval.two_tower.embedding_dim,
            hidden_dim=4 * retrieval.two_tower.embedding_dim,
            epochs=retrieval.two_tower.epochs,
            temperature=retrieval.two_tower.temperature,
            seed=config.seed,
            num_threads=config.threads,
        )
        tower_train = purchases if purchases is not None else train
        tower = _cached(
            data, ("two_tower", cutoff, tower_config), lambda: TwoTower(tower_config).fit(tower_train)
        )
        tower_users = tower_vectors(tower, tower_train)
        tower_items = tower.index_.item_vectors
    names.append("popular")
    market_labels = np.asarray(data.markets, dtype=object)[data.user_market]
    trending = PopularInMarket(market_labels, half_life_days=retrieval.popular_half_life_days).fit(train)
    popular = np.stack([trending.score_market(market) for market in data.markets]).astype(np.float32)
    stack = RetrievalStack(
        names=names,
        ease_weights=ease.weights_,
        knn_similarity=sp.csr_matrix(knn.similarity_, dtype=np.float32),
        content_attributes=content,
        tower_items=tower_items,
        tower_users=tower_users,
        popular=popular,
    )
    return stack, tower if retrieval.two_tower.enabled else None


def tower_vectors(tower: Any, histories: Interactions) -> np.ndarray:
    """Two-tower user vectors of every user from their interactions, most recent first."""
    return tower.encode_users(histories.recent_items(tower.config.history_length)).astype(np.float32)


def _cached(data: RecommenderData, key: tuple, make: Any) -> Any:
    if key not in data.cache:
        data.cache[key] = make()
    return data.cache[key]


# ---------------------------------------------------------------------------------------------
# candidates and their features


@dataclass
class Candidates:
    row_user: np.ndarray  # position in the batch of each row's user
    items: np.ndarray
    features: np.ndarray  # rows x features
    group_sizes: np.ndarray
    background: np.ndarray  # users x items: the first retriever's standardised score, -inf where barred


def feature_names(stack: RetrievalStack) -> list[str]:
    retrieval = [f"{name}_{kind}" for name in stack.names for kind in ("score", "rank")]
    return [*retrieval, *USER_FEATURES, *AFFINITY_FEATURES, *ITEM_MARKET_FEATURES, *DERIVED_FEATURES]


def monotone_constraints(names: list[str], n_retrieval: int) -> list[int]:
    """+1 for retrieval scores, -1 for retrieval ranks, 0 for the rest."""
    return [
        (1 if name.endswith("_score") else -1) if position < n_retrieval else 0
        for position, name in enumerate(names)
    ]


def candidates(
    stack: RetrievalStack,
    users: np.ndarray,
    history: sp.csr_matrix,
    barred: sp.csr_matrix | None,
    markets: np.ndarray,
    listed: np.ndarray,
    user_features: np.ndarray,
    affinity: np.ndarray,
    item_market: np.ndarray,
    item_category: np.ndarray,
    per_retriever: int,
    extra_barred: np.ndarray | None = None,
) -> Candidates:
    """Each retriever's top unbarred items listed in the user's market, united, with ranker features.

    `history` and `barred` (bought items) rows align with `users`; `user_features` and `affinity`
    rows too (users x features, users x categories x features); `item_market` is markets x items x
    features; `extra_barred` is a list of item indices barred for every user (a request's exclude).
    """
    n_users, n_items = len(users), listed.shape[1]
    allowed = listed[markets].copy()
    if barred is not None:
        rows = np.repeat(np.arange(n_users), np.diff(barred.indptr))
        allowed[rows, barred.indices] = False
    if extra_barred is not None and len(extra_barred):
        allowed[:, extra_barred] = False
    keep = max(1, min(per_retriever, n_items))
    is_candidate = np.zeros((n_users, n_items), dtype=bool)
    standardised = []
    for scores in stack.scores(users, history, markets):
        scores = np.asarray(scores, dtype=np.float64)
        mean, spread = scores.mean(axis=1, keepdims=True), scores.std(axis=1, keepdims=True)
        z = (scores - mean) / np.where(spread > 0, spread, 1.0)
        z[~allowed] = -np.inf
        top = top_k_items(z, keep)
        rows, places = np.nonzero(top != NO_ITEM)
        is_candidate[rows, top[rows, places]] = True
        standardised.append(z)
    is_candidate &= allowed
    row_user, items = np.nonzero(is_candidate)
    columns = []
    for z in standardised:
        values = z[row_user, items]
        columns += [values, rank_within_groups(values, row_user)]
    user_rows = user_features[row_user]
    affinity_rows = affinity[row_user, item_category[items]]
    item_rows = item_market[markets[row_user], items]
    history_items = np.diff(history.indptr).astype(np.float64)[row_user]
    spend = user_rows[:, list(USER_FEATURES).index("user_spend_usd_90d")]
    bought = user_rows[:, list(USER_FEATURES).index("user_purchases_90d")]
    price = item_rows[:, list(ITEM_MARKET_FEATURES).index("item_price_usd")]
    with np.errstate(divide="ignore", invalid="ignore"):
        usual = np.where(bought > 0, spend / bought, np.nan)
        price_ratio = np.log(price / usual)
    features = np.column_stack(
        [
            *columns,
            user_rows,
            affinity_rows,
            item_rows,
            price_ratio,
            history_items,
            markets[row_user].astype(np.float64),
        ]
    ).astype(np.float64)
    return Candidates(
        row_user, items, features, is_candidate.sum(axis=1), np.where(allowed, standardised[0], -np.inf)
    )


def _csr_row(matrix: sp.csr_matrix, row: int) -> sp.csr_matrix:
    """Row `row` as a 1 x n CSR matrix, without scipy's fancy-indexing overhead (per request)."""
    start, end = matrix.indptr[row], matrix.indptr[row + 1]
    return sp.csr_matrix(
        (matrix.data[start:end], matrix.indices[start:end], np.array([0, end - start])),
        shape=(1, matrix.shape[1]),
    )


def full_scores(candidate_set: Candidates, ranked: np.ndarray) -> np.ndarray:
    """users x items: ranker scores for candidates, every other allowed item below them in the
    first retriever's order, barred items -inf."""
    n_users = len(candidate_set.group_sizes)
    floor = np.full(n_users, np.inf)
    np.minimum.at(floor, candidate_set.row_user, ranked)
    floor = np.where(np.isfinite(floor), floor, 0.0)
    background = candidate_set.background
    squashed = 1.0 / (1.0 + np.exp(-np.clip(np.where(np.isfinite(background), background, 0.0), -30, 30)))
    scores = np.where(np.isfinite(background), floor[:, None] - 2.0 + squashed, -np.inf)
    scores[candidate_set.row_user, candidate_set.items] = ranked
    return scores


# ---------------------------------------------------------------------------------------------
# the fitted model, as a batch recommender (evaluation) and as the served pyfunc


@dataclass
class FittedRecommender:
    stack: RetrievalStack  # as evaluated: histories before the test period
    serve_stack: RetrievalStack  # the same retrievers, two-tower vectors from every history
    ranker: LambdaRankRanker
    feature_names: list[str]
    per_retriever: int
    learning_curve: list[float] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class UserScores:
    """What `RecommenderModel.score_users` gives for a batch of users."""

    scores: np.ndarray  # users x items: ranker scores of candidates, the back-fill below them, -inf barred
    warm: np.ndarray  # per user: ranked from a history (else trending in the market)
    candidates: Candidates | None  # of the warm users, in order (row_user indexes them)
    ranked: np.ndarray | None  # the ranker's score of each candidate row


class BatchRecommender(Recommender):
    """A served model ranking many users at once through the code `answer` runs (the same scores,
    back-fill and serve-time rules), each user in their home market with no request exclusions: the
    evaluation scores what serving returns. User indices are the model's own."""

    def __init__(self, model: RecommenderModel, user_market: np.ndarray) -> None:
        self.model, self.user_market = model, user_market

    def fit(self, interactions: Interactions) -> BatchRecommender:
        return self  # fitted already; evaluation calls fit=False

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        users = np.atleast_1d(np.asarray(user_idx))
        return self.model.score_users(users, self.user_market[users]).scores

    def recommend(
        self, user_idx: np.ndarray, k: int = 10, exclude: sp.csr_matrix | None = None
    ) -> np.ndarray:
        users = np.atleast_1d(np.asarray(user_idx))
        markets = self.user_market[users]
        scores = self.model.score_users(users, markets).scores
        if exclude is not None:
            mask_scores(scores, exclude[users])
        return self.model.top_items(scores, markets, k)


class ListedOnly(Recommender):
    """Any recommender restricted to items listed in each user's market (the serving rule), so that
    baselines face the same rule as Tradewind's model."""

    def __init__(self, model: Recommender, listed: np.ndarray, user_market: np.ndarray) -> None:
        self.model, self.listed, self.user_market = model, listed, user_market

    def fit(self, interactions: Interactions) -> ListedOnly:
        self.model.fit(interactions)
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        users = np.atleast_1d(np.asarray(user_idx))
        scores = np.asarray(self.model.score(users), dtype=np.float64)
        return np.where(self.listed[self.user_market[users]], scores, -np.inf)


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """Tradewind's recommender as served: `answer(request, online)` for one request.

    Request: {"user_id", "market", "k", "exclude": [product_id...], "explain"}. Response:
    {"items": [{"product_id", "score", "reasons": [{"feature", "contribution"}]}], "cold_start"}.
    A known user's ranked candidates come first, then (the back-fill) every other allowed item in
    the first retriever's order, so k items come back whenever the market lists k the user may get.
    Unknown or history-less users get trending items of the market; an unknown market is a
    ValueError naming it. Items already bought, excluded or not listed in the market are never
    returned; `max_per_category` caps any one category among the k. The family's evaluation ranks
    through the same `score_users` and `top_items` (`BatchRecommender`).
    """

    feature_service: str | None = FEATURE_SERVICE

    def __init__(
        self,
        model: FittedRecommender,
        data: RecommenderData,
        config: RecommenderConfig,
    ) -> None:
        history = data.interactions()
        bought = data.purchases()
        serve = data.features["serve"]
        self.stack = model.serve_stack
        self.booster = model.ranker.booster_
        self.feature_names = model.feature_names
        self.per_retriever = model.per_retriever
        self.user_ids = data.user_ids
        self.user_index = {user: i for i, user in enumerate(data.user_ids.tolist())}
        self.item_ids = data.item_ids
        self.item_index = {item: i for i, item in enumerate(data.item_ids.tolist())}
        self.markets = list(data.markets)
        self.market_index = {market: i for i, market in enumerate(self.markets)}
        self.categories = list(data.categories)
        self.item_category = data.item_category
        self.listed = data.listed
        self.history = history.matrix
        self.bought = bought.binary()
        self.user_features = serve.user
        self.affinity = serve.affinity
        self.item_market = serve.item_market
        self.default_k = config.serving.default_k
        self.rules = ServingRules(
            item_markets={market: data.listed[i] for i, market in enumerate(self.markets)},
            item_category=data.item_category,
            max_per_category=config.serving.max_per_category,
        )
        # one product per category: Feast's online lookup needs a product key in every entity row
        self.category_probe = [
            str(data.item_ids[np.flatnonzero(data.item_category == c)[0]])
            for c in range(len(self.categories))
        ]
        self.trained_until = data.end.isoformat()
        example_user = int(np.argmax(np.diff(self.history.indptr) > 0))
        self.example_user = str(data.user_ids[example_user])
        self.example_market = self.markets[int(data.user_market[example_user])]

    # -------------------------------------------------------------------- serving contract

    def describe(self) -> dict:
        return {
            "markets": self.markets,
            "catalogue_size": len(self.item_ids),
            "users": len(self.user_ids),
            "retrievers": list(self.stack.names),
            "features": list(self.feature_names),
            "trained_until": self.trained_until,
            "max_per_category": self.rules.max_per_category,
        }

    def smoke_request(self) -> dict:
        return {
            "user_id": self.example_user,
            "market": self.example_market,
            "k": 5,
            "exclude": [],
            "explain": True,
        }

    def online_entities(self, request: dict) -> list[dict] | None:
        """One entity row per category for a known user (user activity + category affinity)."""
        user = request.get("user_id")
        if user not in self.user_index:
            return None
        market = request.get("market")
        return [
            {"user_id": user, "product_id": probe, "market_id": market, "category": category}
            for category, probe in zip(self.categories, self.category_probe, strict=True)
        ]

    def answer(self, request: dict, online: dict | None = None) -> dict:
        market = request.get("market")
        if market not in self.market_index:
            raise ValueError(f"market: unknown market {market!r} (known: {', '.join(self.markets)})")
        k = int(request.get("k") or self.default_k)
        if k < 1:
            raise ValueError(f"k: must be at least 1, got {k}")
        markets = np.array([self.market_index[market]])
        exclude = np.array(
            [self.item_index[item] for item in request.get("exclude") or () if item in self.item_index],
            dtype=np.int64,
        )
        user = self.user_index.get(request.get("user_id"))
        scored = self.score_users(np.array([NO_USER if user is None else user]), markets, exclude, online)
        top = self.top_items(scored.scores, markets, k)[0]
        top = top[top != NO_ITEM]
        items: list[dict[str, Any]] = [
            {"product_id": str(self.item_ids[item]), "score": float(scored.scores[0, item])}
            for item in top.tolist()
        ]
        if request.get("explain", False):
            self._explain(items, top, scored)
        return {"items": items, "cold_start": not bool(scored.warm[0])}

    def score_users(
        self,
        users: np.ndarray,
        markets: np.ndarray,
        exclude: np.ndarray | None = None,
        online: dict | None = None,
    ) -> UserScores:
        """Scores over the catalogue for each of `users` (the model's indices, NO_USER for one it does
        not know) in `markets` (indices): a user with a history gets the ranker's scores for its
        candidates and, below them all, every other allowed item in the first retriever's order (the
        back-fill, so k items come back while k are allowed); anyone else gets trending in the market.
        Barred (-inf): not listed in the market, already bought, in `exclude` (item indices). `online`
        (Feast values) applies to a single user. Serving and evaluation both score through here."""
        users, markets = np.asarray(users, dtype=np.int64), np.asarray(markets, dtype=np.int64)
        known = users != NO_USER
        warm = np.zeros(len(users), dtype=bool)
        warm[known] = self.history.indptr[users[known] + 1] > self.history.indptr[users[known]]
        scores = np.where(self.listed[markets], self.stack.popular[markets].astype(np.float64), -np.inf)
        cold_known = np.flatnonzero(known & ~warm)
        if len(cold_known):
            barred = self._rows(self.bought, users[cold_known])
            rows = np.repeat(cold_known, np.diff(barred.indptr))
            scores[rows, barred.indices] = -np.inf
        if exclude is not None and len(exclude):
            scores[:, exclude] = -np.inf
        if not warm.any():
            return UserScores(scores, warm, None, None)
        warm_users = users[warm]
        if len(users) == 1:
            user_features, affinity = self._user_features(int(users[0]), online)
            user_features, affinity = user_features[None, :], affinity[None, :, :]
        else:
            user_features, affinity = self.user_features[warm_users], self.affinity[warm_users]
        candidate_set = candidates(
            self.stack,
            warm_users,
            self._rows(self.history, warm_users),
            self._rows(self.bought, warm_users),
            markets[warm],
            self.listed,
            user_features,
            affinity,
            self.item_market,
            self.item_category,
            self.per_retriever,
            extra_barred=exclude,
        )
        ranked = self.booster.predict(candidate_set.features, num_threads=1)
        scores[warm] = full_scores(candidate_set, ranked)
        return UserScores(scores, warm, candidate_set, ranked)

    def top_items(self, scores: np.ndarray, markets: np.ndarray, k: int) -> np.ndarray:
        """The top k item indices per row of `score_users` scores under the serve-time rules (the
        category cap; listing, bought and exclusions are barred in the scores already)."""
        if self.rules.max_per_category is None:
            return top_k_items(scores, k)
        return self.rules.apply(scores, k, markets=[self.markets[market] for market in markets])

    def _explain(self, items: list[dict[str, Any]], top: np.ndarray, scored: UserScores) -> None:
        """Reasons for one user's items: the ranker's three largest feature contributions for a
        ranked candidate; for a back-filled one the first retriever's standardised score; for
        trending items their trending score."""
        if not scored.warm[0]:
            for entry in items:
                entry["reasons"] = [{"feature": "trending_in_market", "contribution": entry["score"]}]
            return
        candidate_set = scored.candidates
        rows = np.minimum(np.searchsorted(candidate_set.items, top), len(candidate_set.items) - 1)
        is_candidate = candidate_set.items[rows] == top  # candidate items are sorted
        contributions = (
            self.booster.predict(candidate_set.features[rows[is_candidate]], pred_contrib=True, num_threads=1)
            if is_candidate.any()
            else np.empty((0, len(self.feature_names) + 1))
        )
        ranked_reasons = iter(contributions[:, :-1])
        for entry, item, ranked in zip(items, top.tolist(), is_candidate.tolist(), strict=True):
            if not ranked:
                entry["reasons"] = [
                    {"feature": BACKFILL_REASON, "contribution": float(candidate_set.background[0, item])}
                ]
                continue
            row = next(ranked_reasons)
            order = np.argsort(-np.abs(row), kind="stable")[:3]
            entry["reasons"] = [
                {"feature": self.feature_names[column], "contribution": float(row[column])}
                for column in order
            ]

    @staticmethod
    def _rows(matrix: sp.csr_matrix, users: np.ndarray) -> sp.csr_matrix:
        return _csr_row(matrix, int(users[0])) if len(users) == 1 else matrix[users]

    def _user_features(self, user: int, online: dict | None) -> tuple[np.ndarray, np.ndarray]:
        """The user's features from Feast online values where present, else the held ones."""
        user_features, affinity = self.user_features[user].copy(), self.affinity[user].copy()
        if not online:
            return user_features, affinity
        for position, column in enumerate(USER_FEATURES.values()):
            values = online.get(column)
            if values and values[0] is not None:
                user_features[position] = float(values[0])
        for position, column in enumerate(AFFINITY_FEATURES.values()):
            values = online.get(column) or []
            for category, value in enumerate(values[: len(self.categories)]):
                if value is not None:
                    affinity[category, position] = float(value)
        return user_features, affinity

    # -------------------------------------------------------------------- MLflow's generic path

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        rows = []
        for request in model_input.to_dict(orient="records"):
            exclude = request.get("exclude")
            request["exclude"] = [] if exclude is None else [str(item) for item in list(exclude)]
            answer = self.answer(request)
            rows.append(
                {
                    "product_ids": [item["product_id"] for item in answer["items"]],
                    "scores": [item["score"] for item in answer["items"]],
                    "cold_start": answer["cold_start"],
                    "reasons": json.dumps([item.get("reasons", []) for item in answer["items"]]),
                }
            )
        return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# fitting


def fit_model(
    data: RecommenderData, config: RecommenderConfig, params: Mapping[str, Any], report: Reporter | None
) -> FittedRecommender:
    """Ranker on the label period (retrievers fitted before it), then retrievers refitted on
    everything before the test period: the model that is evaluated and served."""
    started = time.perf_counter()
    per_retriever = int(params["candidates_per_retriever"])
    label_history = data.interactions(before=data.label_start)
    label_stack, _ = fit_retrievers(
        data, label_history, config, params, data.purchases(before=data.label_start)
    )
    bought = data.purchases(before=data.label_start)
    positives = _new_purchases(data, data.label_start, data.test_start).matrix
    period = data.features["label"]
    users = data.label_users
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start in range(0, len(users), 512):
        batch = users[start : start + 512]
        candidate_set = candidates(
            label_stack,
            batch,
            label_history.matrix[batch],
            bought.matrix[batch],
            data.user_market[batch],
            data.listed,
            period.user[batch],
            period.affinity[batch],
            period.item_market,
            data.item_category,
            per_retriever,
        )
        labels = np.asarray(positives[batch[candidate_set.row_user], candidate_set.items]).ravel() > 0
        has_positive = np.bincount(candidate_set.row_user, weights=labels, minlength=len(batch)) > 0
        for position in np.flatnonzero(has_positive):
            rows = candidate_set.row_user == position
            parts.append(
                (candidate_set.features[rows], labels[rows].astype(np.float64), np.array([rows.sum()]))
            )
    if len(parts) < 4:
        raise ValueError(
            f"only {len(parts)} users bought a candidate in the ranker's label period "
            f"({data.label_start:%Y-%m-%d} to {data.test_start:%Y-%m-%d}): too little data to train on"
        )
    rng = np.random.default_rng(config.seed)
    is_validation = rng.random(len(parts)) < config.data.validation_share
    is_validation[0] = False  # keep both sides non-empty
    is_validation[-1] = True

    def stack_parts(chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        picked = [parts[i] for i in np.flatnonzero(chosen)]
        return (
            np.vstack([p[0] for p in picked]),
            np.concatenate([p[1] for p in picked]),
            np.concatenate([p[2] for p in picked]),
        )

    names = feature_names(label_stack)
    train_rows, validation_rows = stack_parts(~is_validation), stack_parts(is_validation)
    curve: list[float] = []

    def record(env: Any) -> None:
        value = float(env.evaluation_result_list[0][2])
        curve.append(value)
        iteration = env.iteration + 1
        if report is not None and (
            iteration % config.ranker.report_every == 0 or iteration == env.end_iteration
        ):
            report(iteration, value)

    ranker = LambdaRankRanker(
        n_estimators=int(params["n_estimators"]),
        learning_rate=float(params["learning_rate"]),
        num_leaves=int(params["num_leaves"]),
        min_child_samples=int(params["min_child_samples"]),
        seed=config.seed,
        num_threads=config.threads,
    ).fit(
        *train_rows,
        feature_names=names,
        monotone_constraints=(
            monotone_constraints(names, 2 * len(label_stack.names))
            if config.ranker.monotone_retrieval
            else None
        ),
        validation=validation_rows,
        callbacks=[record],
    )
    stack, tower = fit_retrievers(
        data,
        data.interactions(before=data.test_start),
        config,
        params,
        data.purchases(before=data.test_start),
    )
    serve_stack = (
        stack if tower is None else replace(stack, tower_users=tower_vectors(tower, data.purchases()))
    )
    return FittedRecommender(
        stack, serve_stack, ranker, names, per_retriever, curve, time.perf_counter() - started
    )


# ---------------------------------------------------------------------------------------------
# evaluation


def evaluate_model(
    model: RecommenderModel, fitted: FittedRecommender, data: RecommenderData, config: RecommenderConfig
) -> Evaluation:
    """`model` (the served pyfunc of `fitted`, trained on `data`) and the baselines on the test period.
    Tradewind's rankings are the served model's own, wound back to the start of the test period as
    the retraining gate does (`as_of_holdout`), through the code `answer` runs."""
    from training.evaluation.ranking import evaluate_recommenders, quality_vs_oracle, recommend_in_batches

    k = config.evaluation.k
    history = data.interactions(before=data.test_start)
    bought = data.purchases(before=data.test_start)
    test = data.purchases(start=data.test_start)
    tradewind = BatchRecommender(as_of_holdout(model, data, stack=fitted.stack), data.user_market)
    market_labels = np.asarray(data.markets, dtype=object)[data.user_market]
    params = {"ease_l2": config.retrieval.ease_l2, "knn_neighbours": config.retrieval.knn_neighbours}
    baselines: dict[str, Recommender] = {
        "most_popular": MostPopular(),
        "popular_in_market": PopularInMarket(market_labels, config.retrieval.popular_half_life_days),
        "item_knn": ItemKNN(int(params["knn_neighbours"]), binary=False),
        "ease": EASE(params["ease_l2"], binary=False),
    }
    models: dict[str, Recommender] = {
        "tradewind": tradewind,
        **{
            name: ListedOnly(model, data.listed, data.user_market).fit(history)
            for name, model in baselines.items()
        },
    }
    if data.oracle_probability is not None:
        from training.evaluation.ranking import OracleRecommender

        models["oracle"] = OracleRecommender(data.oracle_probability)
    # each model ranks every test user once, deep enough for the recall curve; the metrics at k
    # read the first k of those rankings
    relevant = _relevant(bought, test)
    users = np.flatnonzero(np.diff(relevant.indptr) > 0)
    curve_k = max(config.evaluation.curve_max_k, k)
    rankings = {
        name: recommend_in_batches(model, users, curve_k, bought.matrix) for name, model in models.items()
    }
    results = evaluate_recommenders(
        {name: Precomputed(users, ranking) for name, ranking in rankings.items()},
        history,
        test,
        k,
        segments={"market": market_labels},
        fit=False,
        exclude=bought.matrix,
    )
    metrics: dict[str, Any] = {}
    for row in results.iter_rows(named=True):
        values = {
            f"{metric}_at_{k}": row[metric] for metric in ("ndcg", "precision", "recall", "map", "hitrate")
        }
        values[f"coverage_at_{k}"] = row["coverage"]
        values["users"] = row["n_users"]
        segment = row["segment"]
        key = row["model"] if segment == "all" else f"{segment.replace('=', '.')}.{row['model']}"
        metrics[key] = {
            name: value for name, value in values.items() if value is not None and math.isfinite(value)
        }
    curves = {name: _recall_curve(ranking, relevant[users], curve_k) for name, ranking in rankings.items()}
    figures = {"recall_at_k": _recall_figure(curves), "ndcg_by_market": _market_figure(results, k)}
    if "oracle" in models:
        oracle_ndcg = metrics["oracle"].get(f"ndcg_at_{k}")
        ratios = {}
        for name in models:
            if name != "oracle" and oracle_ndcg:
                ratios[f"{name}_ndcg_ratio"] = metrics[name][f"ndcg_at_{k}"] / oracle_ndcg
        expected = quality_vs_oracle(
            rankings["tradewind"][:, :k], data.oracle_probability[users], k, exclude=bought.matrix[users]
        )
        for row in expected.iter_rows(named=True):
            if math.isfinite(row["ratio"]):
                ratios[f"tradewind_expected_{row['metric']}_ratio"] = row["ratio"]
        metrics["quality_vs_oracle"] = ratios
    metrics["train_seconds"] = fitted.seconds
    tables = {"ranking_results": results, "ranker_feature_importance": fitted.ranker.feature_importance()}
    return Evaluation(
        metrics=metrics,
        primary_metric=f"tradewind.ndcg_at_{k}",
        higher_is_better=True,
        figures=figures,
        tables=tables,
    )


class Precomputed(Recommender):
    """Rankings already made for a set of users, replayed to the shared evaluation."""

    def __init__(self, users: np.ndarray, rankings: np.ndarray) -> None:
        self.row_of = {user: row for row, user in enumerate(users.tolist())}
        self.rankings = rankings

    def fit(self, interactions: Interactions) -> Precomputed:
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError("precomputed rankings have no scores; use recommend")

    def recommend(
        self, user_idx: np.ndarray, k: int = 10, exclude: sp.csr_matrix | None = None
    ) -> np.ndarray:
        rows = [self.row_of[user] for user in np.atleast_1d(user_idx).tolist()]
        return self.rankings[rows, :k]


def _relevant(bought: Interactions, test: Interactions) -> sp.csr_matrix:
    relevant = test.binary() - test.binary().multiply(bought.binary())
    relevant.eliminate_zeros()
    return sp.csr_matrix(relevant)


def _recall_curve(ranking: np.ndarray, relevant: sp.csr_matrix, max_k: int) -> list[float]:
    from training.evaluation.ranking import _hit_matrix

    hits = _hit_matrix(ranking[:, :max_k], relevant)
    n_relevant = np.diff(relevant.indptr).astype(np.float64)
    return (np.cumsum(hits, axis=1) / n_relevant[:, None]).mean(axis=0).tolist()


def _recall_figure(curves: Mapping[str, list[float]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        axis.plot(
            np.arange(1, len(curve) + 1), curve, label=name, linewidth=2.5 if name == "tradewind" else 1.2
        )
    axis.set_xlabel("k")
    axis.set_ylabel("recall@k")
    axis.set_title("Recall at k on the test period")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


def _market_figure(results: pl.DataFrame, k: int) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_market = results.filter(pl.col("segment").str.starts_with("market="))
    markets = sorted(per_market["segment"].unique().to_list())
    models = per_market["model"].unique(maintain_order=True).to_list()
    figure, axis = plt.subplots(figsize=(max(7, len(markets) * 1.2), 4.5))
    width = 0.8 / max(len(models), 1)
    for position, model in enumerate(models):
        values = dict(per_market.filter(pl.col("model") == model).select("segment", "ndcg").iter_rows())
        axis.bar(
            np.arange(len(markets)) + position * width,
            [values.get(market, 0.0) for market in markets],
            width,
            label=model,
        )
    axis.set_xticks(np.arange(len(markets)) + 0.4 - width / 2, [m.removeprefix("market=") for m in markets])
    axis.set_ylabel(f"nDCG@{k}")
    axis.set_title(f"nDCG@{k} per market")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


# ---------------------------------------------------------------------------------------------
# the retraining gate: served models on the latest holdout


def compare_served_models(
    champion: RecommenderModel, challenger: RecommenderModel, data: RecommenderData, config: RecommenderConfig
) -> HoldoutComparison:
    """The serving champion and a challenger, as loaded from the registry, on `data`'s test period.

    Both answer every user with a new purchase in the test period through the served path
    (`RecommenderModel.answer`, the user's home market, k = evaluation.k), each knowing only what
    was known when the period began (`as_of_holdout`); their top k are scored with the shared
    ranking metrics against the same purchases. A user a model does not know gets its cold-start
    answer, as serving would give."""
    from training.evaluation.ranking import ranking_metrics

    k = config.evaluation.k
    bought = data.purchases(before=data.test_start)
    relevant = _relevant(bought, data.purchases(start=data.test_start))
    users = np.flatnonzero(np.diff(relevant.indptr) > 0)
    if not len(users):
        raise ValueError(
            f"no user bought a new item in the test period from {data.test_start:%Y-%m-%d}: "
            "nothing to compare the models on"
        )
    scores: dict[str, float] = {}
    details: dict[str, float] = {"users": float(len(users)), "purchases": float(relevant.nnz)}
    for role, model in (("champion", champion), ("challenger", challenger)):
        ranking, cold_start, unserved = served_rankings(as_of_holdout(model, data), data, users, k)
        metrics = ranking_metrics(ranking, relevant[users], k)
        scores[role] = metrics["ndcg"]
        for name in ("recall", "hitrate", "precision"):
            details[f"{name}_at_{k}.{role}"] = metrics[name]
        details[f"cold_start_users.{role}"] = float(cold_start)
        details[f"unknown_market_users.{role}"] = float(unserved)
    holdout = (
        f"new purchases {data.test_start:%Y-%m-%d} to {data.end:%Y-%m-%d}: {len(users)} users, "
        f"{relevant.nnz} user-item purchases"
    )
    return HoldoutComparison(f"ndcg@{k}", True, scores["champion"], scores["challenger"], holdout, details)


def as_of_holdout(
    model: RecommenderModel, data: RecommenderData, stack: RetrievalStack | None = None
) -> RecommenderModel:
    """A copy of a served model that knows only what was known when `data`'s test period began: the
    users' interactions, purchases and Feast feature values as of `data.test_start`, mapped onto the
    model's own user, item, category and market ids. What it learned stays its own: retrievers,
    trending items, ranker, catalogue and serving rules.

    A served model holds every history up to its training end, which for the newest model is the
    end of the test period: scored as it is, it would bar the period's purchases as already bought
    and read features that count them, while an older champion would not. `stack`: the model's
    retrievers as of the test period's start, where known (the family's evaluation has them: two-tower
    user vectors from the histories before it); the gate has only the served ones.
    """
    if stack is None and "two_tower" in model.stack.names:
        # its user vectors come from the histories it was trained with; the tower is not served
        logger.warning("two-tower user vectors of the model compared may include test-period purchases")
    users = _positions(model.user_ids, data.user_ids)
    items = _positions(model.item_ids, data.item_ids)
    categories = _positions(np.asarray(model.categories), np.asarray(data.categories))
    markets = _positions(np.asarray(model.markets), np.asarray(data.markets))
    period = data.features["test"]
    rewound = copy.copy(model)  # shallow: only the attributes set below differ from the model's
    if stack is not None:
        rewound.stack = stack
    rewound.history = _reindexed(data.interactions(before=data.test_start).matrix, users, items)
    rewound.bought = _reindexed(data.purchases(before=data.test_start).binary(), users, items)
    rewound.user_features = _take(period.user, users, axis=0)
    rewound.affinity = _take(_take(period.affinity, users, axis=0), categories, axis=1)
    rewound.item_market = _take(_take(period.item_market, markets, axis=0), items, axis=1)
    return rewound


def served_rankings(
    model: RecommenderModel, data: RecommenderData, users: np.ndarray, k: int
) -> tuple[np.ndarray, int, int]:
    """Each user's top k from `model.answer`, as item indices of `data` (NO_ITEM pads short answers
    and items `data` does not know), with the number of cold-start answers and of users left
    unanswered because the model does not know their market (serving refuses those requests)."""
    item_of = {item: i for i, item in enumerate(data.item_ids.tolist())}
    ranking = np.full((len(users), k), NO_ITEM, dtype=np.int64)
    cold_start = unserved = 0
    for row, user in enumerate(users.tolist()):
        market = data.markets[int(data.user_market[user])]
        if market not in model.market_index:
            unserved += 1
            continue
        user_id = str(data.user_ids[user])
        answer = model.answer({"user_id": user_id, "market": market, "k": k, "exclude": [], "explain": False})
        cold_start += bool(answer["cold_start"])
        picked = [item_of.get(item["product_id"], NO_ITEM) for item in answer["items"][:k]]
        ranking[row, : len(picked)] = picked
    return ranking, cold_start, unserved


def _positions(wanted: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The position of each of `wanted` in `known`, -1 where absent."""
    index = {value: i for i, value in enumerate(np.asarray(known).tolist())}
    return np.array([index.get(value, -1) for value in np.asarray(wanted).tolist()], dtype=np.int64)


def _reindexed(matrix: sp.csr_matrix, rows: np.ndarray, columns: np.ndarray) -> sp.csr_matrix:
    """`matrix` on other row and column ids: new row r is old row rows[r] (empty where -1), and old
    column columns[c] becomes new column c (old columns no new one maps to are dropped)."""
    matrix = sp.csr_matrix(matrix)
    known_rows, known_columns = np.flatnonzero(rows >= 0), np.flatnonzero(columns >= 0)
    select_rows = sp.csr_matrix(
        (np.ones(len(known_rows), dtype=matrix.dtype), (known_rows, rows[known_rows])),
        shape=(len(rows), matrix.shape[0]),
    )
    select_columns = sp.csr_matrix(
        (np.ones(len(known_columns), dtype=matrix.dtype), (columns[known_columns], known_columns)),
        shape=(matrix.shape[1], len(columns)),
    )
    result = sp.csr_matrix(select_rows @ matrix @ select_columns, dtype=matrix.dtype)
    result.sort_indices()
    return result


def _take(values: np.ndarray, positions: np.ndarray, axis: int) -> np.ndarray:
    """`values` at `positions` along `axis`, NaN where a position is -1 (unknown: a missing feature)."""
    taken = np.take(values, np.maximum(positions, 0), axis=axis)
    missing = [slice(None)] * taken.ndim
    missing[axis] = positions < 0
    taken[tuple(missing)] = np.nan
    return taken


# ---------------------------------------------------------------------------------------------
# the family


class RecommenderFamily:
    names = RECOMMENDER
    name = RECOMMENDER.name
    registered_model = RECOMMENDER.registered_model
    config_name = RECOMMENDER.config_name
    feature_service = RECOMMENDER.feature_service
    config_model = RecommenderConfig
    higher_is_better = True

    @staticmethod
    def live_check(settings: Settings, champion: Any, config: Any) -> Any:
        from training.monitoring.live import check_recommender

        return check_recommender(settings, champion, config)

    def training_set(self, settings: Settings, config: RecommenderConfig) -> TrainingSet:
        """Built from the contract and Feast; the last one is reused while the data folder, the
        contract content and the config are the same (a resumed tuning study, a notebook's reruns)."""
        from features.tables import snapshot

        key = (str(settings.root), snapshot(settings.contract_dir)["digest"], config.model_dump_json())
        if _last_training_set.get("key") != key:
            _last_training_set.clear()
            _last_training_set.update(key=key, value=build_training_set(settings, config))
        return _last_training_set["value"]

    def fit(
        self,
        training_set: TrainingSet,
        config: RecommenderConfig,
        params: Mapping[str, Any],
        report: Reporter | None,
    ) -> TrainedModel:
        data: RecommenderData = training_set.data
        fitted = fit_model(data, config, params, report)
        model = RecommenderModel(fitted, data, config)
        model.fitted_ = fitted  # for evaluate; dropped before the model is pickled
        request = model.smoke_request()
        input_example = pd.DataFrame([{**request, "exclude": [str(data.item_ids[0])], "explain": False}])
        return TrainedModel(
            python_model=model,
            input_example=input_example,
            extra_requirements=pinned_requirements(("lightgbm", "scipy")),
            learning_curve={"ranker_validation_ndcg_at_10": fitted.learning_curve},
            # label-period users held out from the ranker: before the test period, never the holdout
            validation_score=fitted.learning_curve[-1] if fitted.learning_curve else None,
        )

    def evaluate(
        self, trained: TrainedModel, training_set: TrainingSet, config: RecommenderConfig
    ) -> Evaluation:
        model: RecommenderModel = trained.python_model
        fitted = model.__dict__.pop("fitted_")
        return evaluate_model(model, fitted, training_set.data, config)

    def compare_on_holdout(
        self,
        champion: RecommenderModel,
        challenger: RecommenderModel,
        challenger_params: Mapping[str, Any],
        training_set: TrainingSet,
        config: RecommenderConfig,
    ) -> HoldoutComparison:
        """nDCG@k of both served models on the test period of the challenger's training set."""
        return compare_served_models(champion, challenger, training_set.data, config)

    def default_params(self, config: RecommenderConfig) -> dict[str, Any]:
        return {
            "ease_l2": config.retrieval.ease_l2,
            "knn_neighbours": config.retrieval.knn_neighbours,
            "candidates_per_retriever": config.retrieval.candidates_per_retriever,
            "n_estimators": config.ranker.n_estimators,
            "learning_rate": config.ranker.learning_rate,
            "num_leaves": config.ranker.num_leaves,
            "min_child_samples": config.ranker.min_child_samples,
        }

    def search_space(self, trial: optuna.Trial, config: RecommenderConfig) -> dict[str, Any]:
        return {
            "ease_l2": trial.suggest_float("ease_l2", 20.0, 2000.0, log=True),
            "candidates_per_retriever": trial.suggest_int("candidates_per_retriever", 20, 80, step=10),
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 7, 63, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 10, 200, log=True),
        }


_last_training_set: dict[str, Any] = {}


FAMILY = RecommenderFamily()
