"""The recommender's evaluation on the test period: Tradewind's served model (wound back to the
start of the period, ranking through the code `answer` runs) beside the baselines (most popular,
popular in market, item-kNN, EASE, each restricted to the items listed in the user's market) and
the simulator's oracle; ranking metrics overall and per market, recall@k curves, nDCG per market."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from models.recommendation.base import Recommender, mask_scores
from models.recommendation.baselines import EASE, ItemKNN, MostPopular
from models.recommendation.cold_start import PopularInMarket
from models.recommendation.interactions import Interactions
from models.recommendation.served import ServedRecommender
from training.pipeline import Evaluation, TrainedModel, TrainingSet
from training.recommender.config import RecommenderConfig
from training.recommender.data import RecommenderData
from training.recommender.fit import FittedRecommender
from training.recommender.gate import as_of_holdout


class BatchRecommender(Recommender):
    """A served model ranking many users at once through the code `answer` runs (the same scores,
    back-fill and serve-time rules), each user in their home market with no request exclusions: the
    evaluation scores what serving returns. User indices are the model's own."""

    def __init__(self, model: ServedRecommender, user_market: np.ndarray) -> None:
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


def evaluate_model(
    model: ServedRecommender, fitted: FittedRecommender, data: RecommenderData, config: RecommenderConfig
) -> Evaluation:
    """`model` (the served pyfunc of `fitted`, trained on `data`) and the baselines on the test period.
    Tradewind's rankings are the served model's own, wound back to the start of the test period as
    the retraining gate does (`as_of_holdout`), through the code `answer` runs."""
    from training.evaluation.ranking import (
        evaluate_recommenders,
        quality_vs_oracle,
        recommend_in_batches,
        relevant_items,
    )

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
    relevant = relevant_items(bought, test)
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


def _recall_curve(ranking: np.ndarray, relevant: sp.csr_matrix, max_k: int) -> list[float]:
    from training.evaluation.ranking import hit_matrix

    hits = hit_matrix(ranking[:, :max_k], relevant)
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


def evaluate(trained: TrainedModel, training_set: TrainingSet, config: RecommenderConfig) -> Evaluation:
    """The family's evaluate: the fitted model `fit` returned, on its training set's test period."""
    python_model = trained.python_model
    fitted = python_model.__dict__.pop("fitted_")
    return evaluate_model(python_model.served, fitted, training_set.data, config)
