"""The recommender's training set, from the contract tables and Feast's `recommender` feature service.

- interactions: events of the types weighted in the config (a pair keeps its largest weight);
  purchases are what is predicted and what the "already bought" rule removes;
- a temporal split: the last `holdout_days` are the test period; the `ranker_label_days` before
  it give the LambdaRank re-ranker its labels (retrievers fitted on what came before them);
- ranker features come from Feast `historical_features`, point-in-time correct at the start of
  each period (label, test), and the newest values for serving;
- lineage: the contract tables' content digests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from configs.families import RECOMMENDER
from configs.settings import Settings
from models.recommendation.interactions import Interactions
from models.recommendation.retrieval import AFFINITY_FEATURES, ITEM_MARKET_FEATURES, USER_FEATURES
from training.pipeline import TrainingSet
from training.recommender.config import EventWeightsConfig, RecommenderConfig

logger = logging.getLogger(__name__)

CONTRACT_TABLES = ("events", "users", "products", "listings", "markets")


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
    test_users = np.flatnonzero(new_purchases(data, data.test_start, None).history_counts() > 0)
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
    events: pl.DataFrame, weights: EventWeightsConfig, user_ids: np.ndarray, item_ids: np.ndarray
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


def new_purchases(data: RecommenderData, start: datetime, before: datetime | None) -> Interactions:
    """Purchases in [start, before) of items the user had not bought before `start`."""
    bought = data.purchases(before=start).binary()
    later = data.purchases(start, before).binary()
    fresh = later - later.multiply(bought)
    fresh.eliminate_zeros()
    return Interactions(sp.csr_matrix(fresh), data.user_ids, data.item_ids)


def _label_users(data: RecommenderData, config: RecommenderConfig) -> np.ndarray:
    """Users with history before the label period and a new purchase in it (a sample, if many)."""
    history = data.interactions(before=data.label_start).history_counts()
    labelled = new_purchases(data, data.label_start, data.test_start).history_counts()
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
        name: historical_features(settings, frame, RECOMMENDER.feature_service, views=views, store=store)
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


def training_set(settings: Settings, config: RecommenderConfig) -> TrainingSet:
    """Built from the contract and Feast; the last one is reused while the data folder, the
    contract content and the config are the same (a resumed tuning study, a notebook's reruns)."""
    from features.tables import snapshot

    key = (str(settings.root), snapshot(settings.contract_dir)["digest"], config.model_dump_json())
    if _last_training_set.get("key") != key:
        _last_training_set.clear()
        _last_training_set.update(key=key, value=build_training_set(settings, config))
    return _last_training_set["value"]


_last_training_set: dict[str, Any] = {}
