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
    """Indices of the k highest scores per row, best first; NO_ITEM where fewer are left.

    The one top-k of the project (evaluation, serving, baselines, benchmarks). Ties go to the lower
    item index, so the same scores give the same list on every machine and a shorter list is
    always the start of a longer one (argpartition alone settles ties by its own internal order).
    -inf and NaN mean barred: never returned.
    """
    scores = np.atleast_2d(scores)
    scores = np.where(np.isnan(scores), -np.inf, scores)
    n_rows, n_items = scores.shape
    kept = min(k, n_items)
    result = np.full((n_rows, k), NO_ITEM, dtype=np.int64)
    if kept < 1 or n_rows == 0:
        return result
    if kept < n_items:
        # everything above the k-th highest score is in; ties at it are taken lowest index first
        kth = np.partition(scores, n_items - kept, axis=1)[:, n_items - kept, None]
        above = scores > kth
        ties = scores == kth
        places_left = kept - above.sum(axis=1, keepdims=True)
        chosen = above | (ties & (np.cumsum(ties, axis=1) <= places_left))
        candidates = np.nonzero(chosen)[1].reshape(n_rows, kept)  # ascending item index per row
    else:
        candidates = np.broadcast_to(np.arange(n_items), (n_rows, n_items))
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)
    # a stable sort of ascending indices: equal scores stay lowest index first
    order = np.argsort(-candidate_scores, axis=1, kind="stable")
    top = np.take_along_axis(candidates, order, axis=1)
    top_scores = np.take_along_axis(candidate_scores, order, axis=1)
    result[:, :kept] = np.where(np.isneginf(top_scores), NO_ITEM, top)
    return result


def row_wise_dot(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """left @ right.T (rows x items), each row computed by the same float operations however many
    rows there are. BLAS picks other kernels, and so other summation orders, for one row than for
    many, so a user's scores (and the order of near-tied items) would depend on the batch: the
    served answer for one user and the evaluation of a batch must rank alike on every machine. So
    each row is its own matrix-vector product (gemv) with the same matrix: the same kernel and the
    same summation order for a row alone as in a batch, at BLAS speed (a 10,000-item catalogue:
    about 0.1 ms a row)."""
    lefts, rights = np.asarray(left), np.asarray(right)
    result = np.empty((lefts.shape[0], rights.shape[0]), dtype=np.result_type(lefts, rights))
    for position, row in enumerate(lefts):
        np.dot(rights, row.astype(result.dtype, copy=False), out=result[position])
    return result


def available_cores() -> int:
    """Cores this process may run on (what torch and LightGBM thread counts default to)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
