"""Top-N ranking metrics and the evaluation protocol, written once for every recommender.

Metrics (binary relevance, averaged over users with at least one relevant test item):
- precision@k = hits in the top k / k
- recall@k = hits in the top k / number of relevant items
- nDCG@k = DCG / ideal DCG, DCG = sum over hits of 1 / log2(rank + 1), ranks from 1
- MAP@k = mean over users of AP@k = sum over hit ranks r of precision@r / min(relevant, k)
- hit rate@k = share of users with at least one hit
- coverage@k = share of the catalogue that appears in at least one user's top k

Protocols: a temporal split at one global cut-off time (what a deployed model faces), and a
per-user random split (75/25, seed 42), the common top-N protocol for MovieLens. Users without
training interactions are cold-start users and are reported apart from warm users.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from datetime import datetime
from typing import Self, TypeVar

import numpy as np
import polars as pl
import scipy.sparse as sp

from models.recommendation.base import NO_ITEM, Recommender, top_k_items
from models.recommendation.interactions import Interactions

METRICS = ("ndcg", "precision", "recall", "map", "hitrate")
DEFAULT_K = 10
SPLIT_SEED = 42
Value = TypeVar("Value")  # a hyperparameter value


# ---------------------------------------------------------------- metrics


def per_user_metrics(recommended: np.ndarray, relevant: sp.csr_matrix, k: int = DEFAULT_K) -> dict:
    """Each metric per user (rows of `recommended`, aligned with rows of `relevant`).

    `recommended` holds item indices, best first, NO_ITEM (-1) for empty slots; `relevant` is a
    users x items sparse matrix whose stored entries are the relevant items. Users without a
    relevant item get NaN.
    """
    recommended = np.asarray(recommended)[:, :k]
    relevant = sp.csr_matrix(relevant)
    n_relevant = np.diff(relevant.indptr).astype(np.float64)
    hits = hit_matrix(recommended, relevant)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(axis=1)
    ideal_length = np.minimum(n_relevant, k).astype(np.int64)
    ideal_dcg = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_length]
    hit_counts = hits.sum(axis=1)
    precision_at_rank = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        metrics = {
            "ndcg": dcg / ideal_dcg,
            "precision": hit_counts / k,
            "recall": hit_counts / n_relevant,
            "map": (precision_at_rank * hits).sum(axis=1) / ideal_length,
            "hitrate": (hit_counts > 0).astype(np.float64),
        }
    no_relevant = n_relevant == 0
    for values in metrics.values():
        values[no_relevant] = np.nan
    return metrics


def hit_matrix(recommended: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """hits[u, r] = 1.0 if the item at rank r of user u is relevant."""
    n_rows, k = recommended.shape
    rows = np.repeat(np.arange(n_rows), k)
    items = recommended.ravel()
    valid = items != NO_ITEM
    hits = np.zeros(n_rows * k)
    hits[valid] = np.asarray(relevant[rows[valid], items[valid]]).ravel() != 0
    return hits.reshape(n_rows, k)


def ranking_metrics(recommended: np.ndarray, relevant: sp.csr_matrix, k: int = DEFAULT_K) -> dict[str, float]:
    """Mean of each metric over users with a relevant item, plus coverage@k and the user count."""
    per_user = per_user_metrics(recommended, relevant, k)
    evaluated = ~np.isnan(per_user["ndcg"])
    summary = {
        name: float(np.mean(values[evaluated])) if evaluated.any() else float("nan")
        for name, values in per_user.items()
    }
    summary["coverage"] = catalogue_coverage(recommended[evaluated], relevant.shape[1], k)
    summary["n_users"] = int(evaluated.sum())
    return summary


def catalogue_coverage(recommended: np.ndarray, n_items: int, k: int = DEFAULT_K) -> float:
    """Share of the catalogue recommended to at least one user."""
    shown = np.asarray(recommended)[:, :k].ravel()
    shown = shown[shown != NO_ITEM]
    return len(np.unique(shown)) / n_items if n_items else float("nan")


# ---------------------------------------------------------------- splits


def per_user_random_split(
    interactions: Interactions, test_fraction: float = 0.25, seed: int = SPLIT_SEED
) -> tuple[Interactions, Interactions]:
    """Each user's interactions shuffled with `seed`; round(test_fraction * n) of them go to test.

    Users with a single interaction keep it in train. Both halves keep the same id maps.
    """
    return interactions.split_per_user(test_fraction, seed)


def temporal_split(
    events: pl.DataFrame,
    cutoff: datetime | float,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str = "timestamp",
    weight_col: str | None = None,
    user_ids: np.ndarray | None = None,
    item_ids: np.ndarray | None = None,
) -> tuple[Interactions, Interactions]:
    """Events before `cutoff` train, the rest test, on id maps built from all events (or given).

    Splitting the event log (not the aggregated matrix) keeps an item a user bought both before
    and after the cut-off in both halves; the evaluation then removes it from the test relevance
    when seen items are excluded. Users first seen after the cut-off have empty training rows.
    """
    before = events.filter(pl.col(time_col) < cutoff)
    after = events.filter(pl.col(time_col) >= cutoff)
    user_ids = events[user_col].unique().sort().to_numpy() if user_ids is None else user_ids
    item_ids = events[item_col].unique().sort().to_numpy() if item_ids is None else item_ids
    kwargs = dict(
        user_col=user_col,
        item_col=item_col,
        time_col=time_col,
        weight_col=weight_col,
        user_ids=user_ids,
        item_ids=item_ids,
    )
    return Interactions.from_events(before, **kwargs), Interactions.from_events(after, **kwargs)


def time_quantile_cutoff(events: pl.DataFrame, time_col: str, test_fraction: float) -> datetime | float:
    """The time that leaves the latest `test_fraction` of events after it."""
    return events[time_col].sort()[int(len(events) * (1.0 - test_fraction))]


# ---------------------------------------------------------------- the protocol


def recommend_in_batches(
    model: Recommender,
    user_idx: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None,
    batch_size: int = 1024,
) -> np.ndarray:
    """model.recommend over users in batches, so a users x items score matrix never gets large."""
    batches = [
        model.recommend(user_idx[start : start + batch_size], k, exclude)
        for start in range(0, len(user_idx), batch_size)
    ]
    return np.concatenate(batches) if batches else np.empty((0, k), dtype=np.int64)


def relevant_items(train: Interactions, test: Interactions, exclude_seen: bool = True) -> sp.csr_matrix:
    """The test items that count as hits: with `exclude_seen`, items already in train are dropped,
    since a model that never recommends seen items could not hit them."""
    relevant = test.binary()
    if exclude_seen:
        relevant = relevant - relevant.multiply(train.binary())
        relevant.eliminate_zeros()
    return sp.csr_matrix(relevant)


def evaluate_recommenders(
    models: Mapping[str, Recommender],
    train: Interactions,
    test: Interactions,
    k: int = DEFAULT_K,
    segments: Mapping[str, np.ndarray] | None = None,
    exclude_seen: bool = True,
    fit: bool = True,
    exclude: sp.csr_matrix | None = None,
    per_user: MutableMapping[tuple[str, str], dict[str, np.ndarray]] | None = None,
) -> pl.DataFrame:
    """Fit each model on `train`, recommend k items to every test user, and score them side by side.

    One row per model and user group: `all`, `warm` (users with training interactions),
    `cold_start` (users without) and, for each entry of `segments` (a name -> label per user
    index, e.g. "market" -> the user's market), one group per label, named "market=DE".
    Columns: model, segment, n_users, ndcg, precision, recall, map, hitrate, coverage (all at k),
    train_s (fit time), score_s (time to recommend for every test user).

    `exclude` (users x items) replaces the training matrix as what is never recommended and never
    counts as a hit, e.g. only the items bought when the training matrix also holds views.

    `per_user`, when given, receives each row's per-user metrics under (model, segment): one array
    per metric over the users the row averages, for intervals over users.
    """
    if exclude is not None and exclude_seen:
        seen = Interactions(sp.csr_matrix(exclude), train.user_ids, train.item_ids)
        relevant = relevant_items(seen, test, True)
    else:
        relevant = relevant_items(train, test, exclude_seen)
        exclude = train.matrix
    test_users = np.flatnonzero(np.diff(relevant.indptr) > 0)
    groups = user_groups(train, test_users, segments)
    rows = []
    for name, model in models.items():
        started = time.perf_counter()
        if fit:
            model.fit(train)
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        recommended = recommend_in_batches(model, test_users, k, exclude if exclude_seen else None)
        score_seconds = time.perf_counter() - started
        for group, members in groups.items():
            if not members.any():
                continue
            summary = ranking_metrics(recommended[members], relevant[test_users[members]], k)
            if per_user is not None:
                values = per_user_metrics(recommended[members], relevant[test_users[members]], k)
                evaluated = ~np.isnan(values["ndcg"])
                per_user[(name, group)] = {metric: array[evaluated] for metric, array in values.items()}
            rows.append(
                {
                    "model": name,
                    "segment": group,
                    **summary,
                    "train_s": train_seconds,
                    "score_s": score_seconds,
                }
            )
    columns = ["model", "segment", "n_users", *METRICS, "coverage", "train_s", "score_s"]
    return pl.DataFrame(rows).select(columns)


def user_groups(
    train: Interactions, users: np.ndarray, segments: Mapping[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Boolean masks over `users`: all, warm, cold_start, and one per segment label."""
    warm = train.history_counts()[users] > 0
    groups = {"all": np.ones(len(users), dtype=bool), "warm": warm, "cold_start": ~warm}
    for segment_name, labels in (segments or {}).items():
        user_labels = np.asarray(labels)[users]
        for label in np.unique(user_labels):
            groups[f"{segment_name}={label}"] = user_labels == label
    return groups


def tune_on_validation(
    make_model: Callable[[Value], Recommender],
    values: Iterable[Value],
    train: Interactions,
    validation: Interactions,
    k: int = DEFAULT_K,
    metric: str = "ndcg",
) -> tuple[Value, dict[Value, float]]:
    """The hyperparameter value whose model scores best on `validation` (warm users), with all scores."""
    relevant = relevant_items(train, validation)
    users = np.flatnonzero((np.diff(relevant.indptr) > 0) & (train.history_counts() > 0))
    scores = {}
    for value in values:
        recommended = recommend_in_batches(make_model(value).fit(train), users, k, train.matrix)
        scores[value] = ranking_metrics(recommended, relevant[users], k)[metric]
    best = max(scores, key=lambda value: scores[value])
    return best, scores


# ---------------------------------------------------------------- the oracle


class OracleRecommender(Recommender):
    """Ranks by the true relevance probabilities (users x items) the simulator knows.

    Run it through `evaluate_recommenders` beside the models: on sampled test data it is the best
    any model can be expected to do, so a model's metric divided by the oracle's is its quality
    as a share of the possible.
    """

    def __init__(self, relevance_probability: np.ndarray) -> None:
        self.relevance_probability = np.asarray(relevance_probability, dtype=np.float32)

    def fit(self, interactions: Interactions) -> Self:
        if self.relevance_probability.shape != interactions.matrix.shape:
            raise ValueError("relevance probabilities must be users x items like the interactions")
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return self.relevance_probability[np.atleast_1d(user_idx)]


def expected_metrics(
    recommended: np.ndarray, relevance_probability: np.ndarray, k: int = DEFAULT_K
) -> dict[str, float]:
    """Expected precision@k, DCG@k and hit rate@k of a ranking when each recommended item is
    relevant independently with the given probability (rows of both aligned)."""
    recommended = np.asarray(recommended)[:, :k]
    probability = np.take_along_axis(np.asarray(relevance_probability), np.maximum(recommended, 0), axis=1)
    probability = np.where(recommended == NO_ITEM, 0.0, probability)
    discounts = 1.0 / np.log2(np.arange(2, recommended.shape[1] + 2))
    return {
        "precision": float(probability.sum(axis=1).mean() / k),
        "dcg": float((probability * discounts).sum(axis=1).mean()),
        "hitrate": float((1.0 - np.prod(1.0 - probability, axis=1)).mean()),
    }


def quality_vs_oracle(
    recommended: np.ndarray,
    relevance_probability: np.ndarray,
    k: int = DEFAULT_K,
    exclude: sp.csr_matrix | None = None,
) -> pl.DataFrame:
    """Expected metrics of the model's top k and of the oracle's (the k most probable items, which
    maximises all three), and their ratio. Rows of `exclude` must align with the given users."""
    probability = np.array(relevance_probability, dtype=np.float64, copy=True)
    oracle_scores = probability.copy()
    if exclude is not None:
        excluded = sp.csr_matrix(exclude)
        rows = np.repeat(np.arange(excluded.shape[0]), np.diff(excluded.indptr))
        oracle_scores[rows, excluded.indices] = -np.inf
    oracle = top_k_items(oracle_scores, k)
    model_metrics = expected_metrics(recommended, probability, k)
    oracle_metrics = expected_metrics(oracle, probability, k)
    return pl.DataFrame(
        {
            "metric": list(model_metrics),
            "model": list(model_metrics.values()),
            "oracle": [oracle_metrics[name] for name in model_metrics],
            "ratio": [
                model_metrics[name] / oracle_metrics[name] if oracle_metrics[name] > 0 else float("nan")
                for name in model_metrics
            ],
        }
    )
