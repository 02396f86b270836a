"""The recommender's fit: retrievers (EASE, item-kNN, content, two-tower, trending-in-market) fitted
before the label period, the LightGBM LambdaRank ranker trained on their candidates' label-period
purchases, then the retrievers refitted on everything before the test period: the model that is
evaluated and served (`models.recommendation.served.ServedRecommender`, wrapped for MLflow)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from configs.families import RECOMMENDER
from models.recommendation.baselines import EASE, ItemKNN
from models.recommendation.cold_start import AttributeSimilarity, PopularInMarket
from models.recommendation.interactions import Interactions
from models.recommendation.ranker import LambdaRankRanker
from models.recommendation.retrieval import RetrievalStack, candidates, feature_names, monotone_constraints
from models.recommendation.served import ServedRecommender
from tracking.pyfunc import ServedPyfunc
from tracking.registry import pinned_requirements
from training.pipeline import Reporter, TrainedModel, TrainingSet
from training.recommender.config import RecommenderConfig
from training.recommender.data import RecommenderData, new_purchases

if TYPE_CHECKING:
    import optuna


@dataclass
class FittedRecommender:
    stack: RetrievalStack  # as evaluated: histories before the test period
    serve_stack: RetrievalStack  # the same retrievers, two-tower vectors from every history
    ranker: LambdaRankRanker
    feature_names: list[str]
    per_retriever: int
    learning_curve: list[float] = field(default_factory=list)
    seconds: float = 0.0


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
    positives = new_purchases(data, data.label_start, data.test_start).matrix
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


def served_model(
    fitted: FittedRecommender, data: RecommenderData, config: RecommenderConfig
) -> ServedRecommender:
    """The fitted model as served: the serve stack and booster with every history and purchase up to
    the end of the data and the newest Feast values as the fallback for requests without online ones."""
    serve = data.features["serve"]
    return ServedRecommender(
        stack=fitted.serve_stack,
        booster=fitted.ranker.booster_,
        feature_names=fitted.feature_names,
        per_retriever=fitted.per_retriever,
        user_ids=data.user_ids,
        user_market=data.user_market,
        item_ids=data.item_ids,
        item_category=data.item_category,
        markets=data.markets,
        categories=data.categories,
        listed=data.listed,
        history=data.interactions().matrix,
        bought=data.purchases().binary(),
        user_features=serve.user,
        affinity=serve.affinity,
        item_market=serve.item_market,
        default_k=config.serving.default_k,
        max_per_category=config.serving.max_per_category,
        trained_until=data.end.isoformat(),
        feature_service=RECOMMENDER.feature_service,
    )


def fit(
    training_set: TrainingSet, config: RecommenderConfig, params: Mapping[str, Any], report: Reporter | None
) -> TrainedModel:
    """The family's fit: the served model wrapped for MLflow, with its learning curve."""
    data: RecommenderData = training_set.data
    fitted = fit_model(data, config, params, report)
    python_model = ServedPyfunc(served_model(fitted, data, config))
    python_model.fitted_ = fitted  # for evaluate; dropped before the model is pickled
    return TrainedModel(
        python_model=python_model,
        input_example=python_model.input_example(),
        extra_requirements=pinned_requirements(("lightgbm", "scipy")),
        learning_curve={"ranker_validation_ndcg_at_10": fitted.learning_curve},
        # label-period users held out from the ranker: before the test period, never the holdout
        validation_score=fitted.learning_curve[-1] if fitted.learning_curve else None,
    )


def default_params(config: RecommenderConfig) -> dict[str, Any]:
    return {
        "ease_l2": config.retrieval.ease_l2,
        "knn_neighbours": config.retrieval.knn_neighbours,
        "candidates_per_retriever": config.retrieval.candidates_per_retriever,
        "n_estimators": config.ranker.n_estimators,
        "learning_rate": config.ranker.learning_rate,
        "num_leaves": config.ranker.num_leaves,
        "min_child_samples": config.ranker.min_child_samples,
    }


def search_space(trial: optuna.Trial, config: RecommenderConfig) -> dict[str, Any]:
    return {
        "ease_l2": trial.suggest_float("ease_l2", 20.0, 2000.0, log=True),
        "candidates_per_retriever": trial.suggest_int("candidates_per_retriever", 20, 80, step=10),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 7, 63, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 10, 200, log=True),
    }
