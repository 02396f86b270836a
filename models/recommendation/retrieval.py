"""Tradewind's retrieval and candidates: every retriever scores the whole catalogue from a user's
history; each one's top unbarred items listed in the user's market are united and described for the
LightGBM LambdaRank ranker (every retriever's standardised score and rank, the user's activity and
category affinity, the item's popularity and price in the market).

Used alike by the family's fit (training/recommender/fit.py), by its evaluation and by the served
model (`models.recommendation.served.ServedRecommender`). Numpy and scipy only: no torch at serve time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from models.recommendation.base import NO_ITEM, row_wise_dot, top_k_items

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


def retrieved(
    stack: RetrievalStack,
    users: np.ndarray,
    history: sp.csr_matrix,
    markets: np.ndarray,
    allowed: np.ndarray,
    per_retriever: int,
) -> Candidates:
    """Each retriever's top `per_retriever` allowed items per user, united; `features` holds every
    retriever's standardised score and rank within the user's candidates (the retrieval columns).

    `history` rows align with `users`, `markets` (indices into `stack.popular`) too; `allowed` is
    users x items. Scores are standardised over the whole catalogue before the barred are removed.
    """
    n_users, n_items = allowed.shape
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
    return Candidates(
        row_user,
        items,
        np.column_stack(columns).astype(np.float64),
        is_candidate.sum(axis=1),
        np.where(allowed, standardised[0], -np.inf),
    )


def with_context(candidate_set: Candidates, *columns: np.ndarray) -> Candidates:
    """The candidates with context columns (one value per candidate row, or rows x k) appended after
    the retrieval columns: the ranker's features."""
    features = np.column_stack([candidate_set.features, *columns]).astype(np.float64)
    return replace(candidate_set, features=features)


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
    """Each retriever's top unbarred items listed in the user's market, united, with ranker features:
    the retrieval columns, then the Feast ones (user, category affinity, item in market) and derived.

    `history` and `barred` (bought items) rows align with `users`; `user_features` and `affinity`
    rows too (users x features, users x categories x features); `item_market` is markets x items x
    features; `extra_barred` is a list of item indices barred for every user (a request's exclude).
    """
    n_users = len(users)
    allowed = listed[markets].copy()
    if barred is not None:
        rows = np.repeat(np.arange(n_users), np.diff(barred.indptr))
        allowed[rows, barred.indices] = False
    if extra_barred is not None and len(extra_barred):
        allowed[:, extra_barred] = False
    candidate_set = retrieved(stack, users, history, markets, allowed, per_retriever)
    row_user, items = candidate_set.row_user, candidate_set.items
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
    return with_context(
        candidate_set,
        user_rows,
        affinity_rows,
        item_rows,
        price_ratio,
        history_items,
        markets[row_user].astype(np.float64),
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


def rank_within_groups(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """1-based rank of each value within its group, largest first; `groups` sorted ascending."""
    order = np.lexsort((-values, groups))
    starts = np.searchsorted(groups, groups[order], side="left")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values)) - starts + 1
    return ranks
