"""Top-N retrieval over item vectors behind one small interface.

`ExactCandidateIndex` scores the whole catalogue with one matrix product, which is exact and, for
catalogues up to a few hundred thousand items, fast enough on a CPU. An approximate index (HNSW,
IVF-PQ) can implement the same two methods later without touching the models that use it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import scipy.sparse as sp

from models.recommendation.base import mask_scores, top_k_items


class CandidateIndex(Protocol):
    n_items: int

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """Inner product of each query vector with every item vector: queries x items."""
        ...

    def search(
        self, queries: np.ndarray, k: int, exclude: sp.spmatrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best items per query (indices, scores), best first; `exclude` rows align with queries."""
        ...


class ExactCandidateIndex:
    """Brute-force maximum inner product search."""

    def __init__(self, item_vectors: np.ndarray) -> None:
        # contiguous float32 keeps the product on the fast BLAS path
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        self.n_items = self.item_vectors.shape[0]

    def scores(self, queries: np.ndarray) -> np.ndarray:
        return np.atleast_2d(queries).astype(np.float32, copy=False) @ self.item_vectors.T

    def search(
        self, queries: np.ndarray, k: int, exclude: sp.spmatrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = self.scores(queries)
        if exclude is not None:
            mask_scores(scores, exclude)
        items = top_k_items(scores, k)
        found = np.take_along_axis(scores, np.maximum(items, 0), axis=1)
        return items, np.where(items >= 0, found, -np.inf)
