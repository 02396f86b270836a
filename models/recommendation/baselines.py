"""Baselines every Tradewind recommender has to beat: most-popular, item-kNN and EASE."""

from __future__ import annotations

from typing import Self

import numpy as np
import scipy.sparse as sp

from models.recommendation.base import NO_ITEM, Recommender, top_k_items
from models.recommendation.interactions import Interactions


class MostPopular(Recommender):
    """Every user gets the items most users interacted with."""

    def fit(self, interactions: Interactions) -> Self:
        # distinct users per item: one wholesaler buying 500 units is one vote, not 500
        self.item_popularity_ = np.asarray(interactions.binary().sum(axis=0)).ravel().astype(np.float32)
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return np.tile(self.item_popularity_, (len(np.atleast_1d(user_idx)), 1))


class ItemKNN(Recommender):
    """Item-based nearest neighbours with shrunk cosine similarity (Sarwar et al. 2001).

    sim(i, j) = <x_i, x_j> / (|x_i| |x_j| + shrinkage); each item keeps its `neighbours` most
    similar items, and a user's score for j sums sim(i, j) over the user's items i that have j
    among their neighbours.
    """

    def __init__(self, neighbours: int = 100, shrinkage: float = 10.0, binary: bool = True) -> None:
        self.neighbours = neighbours
        self.shrinkage = shrinkage
        self.binary = binary  # False: use the interaction weights (e.g. purchase 1, view 0.2)

    def fit(self, interactions: Interactions) -> Self:
        self.train_ = interactions.binary() if self.binary else interactions.matrix.copy()
        x = self.train_
        co_counts = np.asarray((x.T @ x).todense(), dtype=np.float32)
        norms = np.sqrt(np.diag(co_counts))
        similarity = co_counts / (np.outer(norms, norms) + self.shrinkage + 1e-12)
        np.fill_diagonal(similarity, 0.0)
        # row i keeps the neighbours of item i (Deshpande and Karypis 2004, item-based top-N)
        self.similarity_ = _keep_top_per_row(similarity, self.neighbours)
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return np.asarray((self.train_[np.atleast_1d(user_idx)] @ self.similarity_).todense())


class EASE(Recommender):
    """Embarrassingly Shallow Autoencoder (Steck 2019, "Embarrassingly Shallow Autoencoders for
    Sparse Data", WWW): the item-item weights B minimising ||X - XB||^2 + l2 ||B||^2 with
    diag(B) = 0, in closed form: P = (X^T X + l2 I)^-1, B = I - P diag(1 / diag(P)).

    The paper tunes l2 on held-out users; 200-1000 is typical for MovieLens-sized data.
    """

    def __init__(self, l2: float = 500.0, binary: bool = True) -> None:
        self.l2 = l2
        self.binary = binary  # False: use the interaction weights (e.g. purchase 1, view 0.2)

    def fit(self, interactions: Interactions) -> Self:
        self.train_ = interactions.binary() if self.binary else interactions.matrix.copy()
        gram = np.asarray((self.train_.T @ self.train_).todense(), dtype=np.float64)
        self.weights_ = ease_weights(gram, self.l2).astype(np.float32)
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        user_idx = np.atleast_1d(user_idx)
        if len(user_idx) == 1:
            # one request: summing the user's rows of B skips scipy's slicing overhead (~0.1 ms)
            start, end = self.train_.indptr[user_idx[0]], self.train_.indptr[user_idx[0] + 1]
            weights = self.train_.data[start:end]
            return (weights @ self.weights_[self.train_.indices[start:end]])[None, :]
        return np.asarray(self.train_[user_idx] @ self.weights_)


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """EASE's closed-form item-item weights from the Gram matrix X^T X."""
    regularised = gram + l2 * np.eye(gram.shape[0])
    precision = np.linalg.inv(regularised)
    weights = -precision / np.diag(precision)  # divides column j by P_jj
    np.fill_diagonal(weights, 0.0)
    return weights


def _keep_top_per_row(matrix: np.ndarray, keep: int) -> sp.csr_matrix:
    """A sparse copy of `matrix` with only the `keep` largest positive values of each row."""
    n_rows, n_cols = matrix.shape
    keep = min(keep, n_cols)
    columns = top_k_items(matrix, keep)
    present = columns != NO_ITEM  # a -inf value is never kept: its place adds 0 to column 0
    columns = np.where(present, columns, 0)
    values = np.where(present, np.take_along_axis(matrix, columns, axis=1), 0.0)
    rows = np.repeat(np.arange(n_rows), keep)
    kept = sp.csr_matrix((values.ravel(), (rows, columns.ravel())), shape=matrix.shape)
    kept.eliminate_zeros()
    return kept
