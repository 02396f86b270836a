"""The recommender's retraining gate: the serving champion and a challenger, both plain served models
loaded from the registry, answer the test period's buyers through `answer`, each rewound to what was
known when the period began (`as_of_holdout`), and are scored with the shared nDCG@k."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from models.recommendation.base import NO_ITEM
from models.recommendation.retrieval import RetrievalStack
from models.recommendation.served import ServedRecommender
from training.pipeline import HoldoutComparison, TrainingSet
from training.recommender.config import RecommenderConfig
from training.recommender.data import RecommenderData

logger = logging.getLogger(__name__)


def compare_served_models(
    champion: ServedRecommender,
    challenger: ServedRecommender,
    data: RecommenderData,
    config: RecommenderConfig,
) -> HoldoutComparison:
    """The serving champion and a challenger, as loaded from the registry, on `data`'s test period.

    Both answer every user with a new purchase in the test period through the served path
    (`ServedRecommender.answer`, the user's home market, k = evaluation.k), each knowing only what
    was known when the period began (`as_of_holdout`); their top k are scored with the shared
    ranking metrics against the same purchases. A user a model does not know gets its cold-start
    answer, as serving would give."""
    from training.evaluation.ranking import ranking_metrics, relevant_items

    k = config.evaluation.k
    bought = data.purchases(before=data.test_start)
    relevant = relevant_items(bought, data.purchases(start=data.test_start))
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
    model: ServedRecommender, data: RecommenderData, stack: RetrievalStack | None = None
) -> ServedRecommender:
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
    model: ServedRecommender, data: RecommenderData, users: np.ndarray, k: int
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


def compare_on_holdout(
    champion: ServedRecommender,
    challenger: ServedRecommender,
    challenger_params: Mapping[str, Any],
    training_set: TrainingSet,
    config: RecommenderConfig,
) -> HoldoutComparison:
    """nDCG@k of both served models on the test period of the challenger's training set."""
    return compare_served_models(champion, challenger, training_set.data, config)
