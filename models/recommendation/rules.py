"""Serving-time business rules on top of any recommender's scores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from models.recommendation.base import NO_ITEM, mask_scores, top_k_items


class ServingRules:
    """Business rules applied to model scores at serving time.

    - never recommend what the user already bought (`bought`, users x items, rows aligned with
      the scores);
    - only items listed in the user's market (`item_markets`: market -> boolean mask over items;
      a market without an entry has nothing listed);
    - at most `max_per_category` items of one category among the k (diversity), taking the next
      best item of another category instead.
    """

    def __init__(
        self,
        item_markets: Mapping[str, np.ndarray] | None = None,
        item_category: Sequence | np.ndarray | None = None,
        max_per_category: int | None = None,
    ) -> None:
        if max_per_category is not None and item_category is None:
            raise ValueError("max_per_category needs item_category")
        self.item_markets = item_markets
        self.item_category = None if item_category is None else np.asarray(item_category)
        self.max_per_category = max_per_category

    def apply(
        self,
        scores: np.ndarray,
        k: int,
        bought: sp.spmatrix | None = None,
        markets: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Top-k item indices per row of `scores` that pass the rules; NO_ITEM (-1) pads short rows."""
        # float64: rounding to float32 would tie scores the model told apart
        scores = np.array(np.atleast_2d(scores), dtype=np.float64, copy=True)
        if bought is not None:
            mask_scores(scores, bought)
        if self.item_markets is not None:
            if markets is None or len(markets) != scores.shape[0]:
                raise ValueError("market rules need one market per row of scores")
            for row, market in enumerate(markets):
                listed = self.item_markets.get(market)
                scores[row, ~listed if listed is not None else slice(None)] = -np.inf
        if self.max_per_category is None:
            return top_k_items(scores, k)
        return np.stack([self._capped_top_k(row_scores, k) for row_scores in scores])

    def _capped_top_k(self, scores: np.ndarray, k: int) -> np.ndarray:
        chosen = np.full(k, NO_ITEM, dtype=np.int64)
        per_category: dict = {}
        filled = 0
        for item in np.argsort(-scores, kind="stable"):
            if filled == k or np.isneginf(scores[item]):
                break
            category = self.item_category[item]
            if per_category.get(category, 0) < self.max_per_category:
                per_category[category] = per_category.get(category, 0) + 1
                chosen[filled] = item
                filled += 1
        return chosen
