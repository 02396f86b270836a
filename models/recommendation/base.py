"""The interface every recommender shares: fit, score, recommend.

Subclasses implement `fit` and `score`; `recommend` (top-k with exclusions) is written once here.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Self

import numpy as np
import scipy.sparse as sp

from models.recommendation.interactions import Interactions

# an excluded item's score; it sorts below every real score and is never returned
EXCLUDED = -np.inf
# the item index returned where fewer than k items are left after exclusions
NO_ITEM = -1


class Recommender(ABC):
    """fit(interactions) -> self; score(users) -> users x items; recommend(users, k) -> item indices."""

    @abstractmethod
    def fit(self, interactions: Interactions) -> Self: ...

    @abstractmethod
    def score(self, user_idx: np.ndarray) -> np.ndarray:
        """Dense float array of shape (len(user_idx), n_items); higher is better."""

    def recommend(
        self, user_idx: np.ndarray, k: int = 10, exclude: sp.csr_matrix | None = None
    ) -> np.ndarray:
        """Top-k item indices per user, best first.

        `exclude` is a users x items sparse matrix indexed like the training matrix (usually the
        training matrix itself); its stored entries are never recommended. Rows with fewer than k
        remaining items are padded with NO_ITEM (-1).
        """
        user_idx = np.atleast_1d(np.asarray(user_idx))
        scores = np.array(self.score(user_idx), dtype=np.float32, copy=True)
        if exclude is not None:
            mask_scores(scores, exclude[user_idx])
        return top_k_items(scores, k)


def mask_scores(scores: np.ndarray, excluded: sp.spmatrix) -> None:
    """Set scores[r, c] to EXCLUDED for every stored entry (r, c) of `excluded`, in place."""
    excluded = sp.csr_matrix(excluded)
    rows = np.repeat(np.arange(excluded.shape[0]), np.diff(excluded.indptr))
    scores[rows, excluded.indices] = EXCLUDED


def top_k_items(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest finite scores per row, best first; NO_ITEM where none is left."""
    n_rows, n_items = scores.shape
    k_kept = min(k, n_items)
    if k_kept < n_items:
        # argpartition finds the top k in linear time; only those k are then sorted
        candidates = np.argpartition(-scores, k_kept - 1, axis=1)[:, :k_kept]
    else:
        candidates = np.broadcast_to(np.arange(n_items), (n_rows, n_items))
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)
    order = np.argsort(-candidate_scores, axis=1, kind="stable")
    top = np.take_along_axis(candidates, order, axis=1)
    top_scores = np.take_along_axis(candidate_scores, order, axis=1)
    result = np.full((n_rows, k), NO_ITEM, dtype=np.int64)
    result[:, :k_kept] = np.where(np.isneginf(top_scores), NO_ITEM, top)
    return result


def available_cores() -> int:
    """Cores this process may run on (what torch and LightGBM thread counts default to)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
