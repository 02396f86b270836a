"""Cold start: what to show a user or an item the interaction models know nothing about.

- `PopularInMarket`: trending items in the user's market (popularity with recency decay, shrunk
  towards the global trend so that a small market is not ruled by a handful of orders). The
  fallback for unknown users; it needs only the market they shop in.
- `AttributeSimilarity`: content-based scores from item attributes (category, brand, any feature
  vector): a user's profile is the mean of the attribute vectors of the items they interacted
  with, and a new item scores its cosine similarity to that profile. The two-tower model's
  feature-only item vectors (`TwoTower.item_vectors_from_features`) are the learned alternative.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import scipy.sparse as sp

from models.recommendation.base import Recommender, row_wise_dot, top_k_items
from models.recommendation.interactions import Interactions

SECONDS_PER_DAY = 86_400.0


class PopularInMarket(Recommender):
    """Market-aware trending items.

    An interaction seen `age` days before the latest one weighs 0.5 ** (age / half_life_days).
    Per market m and item i, with c_m(i) the decayed count of distinct buyers in m:
        score_m(i) = (c_m(i) + smoothing * share(i)) / (C_m + smoothing)
    where share(i) is the item's share of the global decayed count and C_m = sum_i c_m(i).
    """

    def __init__(
        self,
        user_market: Sequence[str] | np.ndarray,
        half_life_days: float = 30.0,
        smoothing: float = 20.0,
    ) -> None:
        self.user_market = np.asarray(user_market, dtype=object)
        self.half_life_days = half_life_days
        self.smoothing = smoothing

    def fit(self, interactions: Interactions) -> Self:
        if len(self.user_market) != interactions.n_users:
            raise ValueError(
                f"user_market has {len(self.user_market)} labels for {interactions.n_users} users"
            )
        weights = np.ones(interactions.nnz)
        if interactions.last_seen is not None and interactions.nnz:
            age_days = (interactions.last_seen.max() - interactions.last_seen) / SECONDS_PER_DAY
            weights = 0.5 ** (age_days / self.half_life_days)
        decayed = sp.csr_matrix(
            (weights, interactions.matrix.indices, interactions.matrix.indptr),
            shape=interactions.matrix.shape,
        )
        global_counts = np.asarray(decayed.sum(axis=0)).ravel()
        global_share = global_counts / max(global_counts.sum(), 1e-12)
        self.global_scores_ = global_share.astype(np.float32)
        self.market_scores_: dict[str, np.ndarray] = {}
        for market in np.unique(self.user_market):
            counts = np.asarray(decayed[self.user_market == market].sum(axis=0)).ravel()
            smoothed = (counts + self.smoothing * global_share) / (counts.sum() + self.smoothing)
            self.market_scores_[market] = smoothed.astype(np.float32)
        return self

    def score_market(self, market: str) -> np.ndarray:
        """Item scores for anyone shopping in `market`; the global trend for a market never seen."""
        return self.market_scores_.get(market, self.global_scores_)

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        markets = self.user_market[np.atleast_1d(user_idx)]
        return np.stack([self.score_market(market) for market in markets])

    def recommend_for_market(
        self, market: str, k: int = 10, exclude_items: np.ndarray | None = None
    ) -> np.ndarray:
        """Top-k item indices for an unknown user in `market`, skipping `exclude_items`."""
        scores = self.score_market(market).copy()[None, :]
        if exclude_items is not None and len(exclude_items):
            scores[0, np.asarray(exclude_items)] = -np.inf
        return top_k_items(scores, k)[0]


class AttributeSimilarity(Recommender):
    """Content-based scores: cosine of the user's attribute profile to each item's attributes."""

    def __init__(self, item_attributes: np.ndarray | sp.spmatrix) -> None:
        self.item_attributes = item_attributes

    def fit(self, interactions: Interactions) -> Self:
        attributes = _unit_rows(self.item_attributes)
        if attributes.shape[0] != interactions.n_items:
            raise ValueError("item_attributes needs one row per item of the interactions")
        self.unit_attributes_ = attributes
        history = interactions.binary()
        counts = np.maximum(interactions.history_counts(), 1)[:, None]
        self.profiles_ = _unit_rows(np.asarray(history @ attributes) / counts)
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return row_wise_dot(self.profiles_[np.atleast_1d(user_idx)], self.unit_attributes_)

    def score_new_items(self, user_idx: np.ndarray, new_item_attributes: np.ndarray) -> np.ndarray:
        """users x new items: how well items outside the fitted catalogue match each user."""
        return self.profiles_[np.atleast_1d(user_idx)] @ _unit_rows(new_item_attributes).T


def _unit_rows(values: np.ndarray | sp.spmatrix) -> np.ndarray:
    dense = values.toarray() if sp.issparse(values) else np.asarray(values, dtype=np.float64)
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    return (dense / np.where(norms > 0, norms, 1.0)).astype(np.float32)
