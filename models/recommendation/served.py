"""Tradewind's recommender as served: one plain class holding numpy arrays only (user histories,
the retrieval stack, Feast feature values as of the end of the data, the LightGBM booster).

Serving, the retraining gate and the family's evaluation all rank through `ServedRecommender`'s
`score_users` and `top_items`; `answer` is one request. Nothing here imports MLflow or training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from models.recommendation.base import NO_ITEM, top_k_items
from models.recommendation.retrieval import (
    AFFINITY_FEATURES,
    USER_FEATURES,
    Candidates,
    RetrievalStack,
    candidates,
    full_scores,
)
from models.recommendation.rules import ServingRules

# the reason given for an item served below the ranked candidates, in the first retriever's order
BACKFILL_REASON = "backfill"
# the user index of a request from a user the model does not know
NO_USER = -1


def csr_row(matrix: sp.csr_matrix, row: int) -> sp.csr_matrix:
    """Row `row` as a 1 x n CSR matrix, without scipy's fancy-indexing overhead (per request)."""
    start, end = matrix.indptr[row], matrix.indptr[row + 1]
    return sp.csr_matrix(
        (matrix.data[start:end], matrix.indices[start:end], np.array([0, end - start])),
        shape=(1, matrix.shape[1]),
    )


@dataclass
class UserScores:
    """What `ServedRecommender.score_users` gives for a batch of users."""

    scores: np.ndarray  # users x items: ranker scores of candidates, the back-fill below them, -inf barred
    warm: np.ndarray  # per user: ranked from a history (else trending in the market)
    candidates: Candidates | None  # of the warm users, in order (row_user indexes them)
    ranked: np.ndarray | None  # the ranker's score of each candidate row


class ServedRecommender:
    """Tradewind's recommender as served: `answer(request, online)` for one request.

    Request: {"user_id", "market", "k", "exclude": [product_id...], "explain"}. Response:
    {"items": [{"product_id", "score", "reasons": [{"feature", "contribution"}]}], "cold_start"}.
    A known user's ranked candidates come first, then (the back-fill) every other allowed item in
    the first retriever's order, so k items come back whenever the market lists k the user may get.
    Unknown or history-less users get trending items of the market; an unknown market is a
    ValueError naming it. Items already bought, excluded or not listed in the market are never
    returned; `max_per_category` caps any one category among the k. The family's evaluation ranks
    through the same `score_users` and `top_items` (`BatchRecommender`).

    A plain class (no MLflow): `tracking.pyfunc.ServedPyfunc` wraps it for the registry; its MLflow
    table form (`TabularForm`) is one request per row in, product_ids/scores/cold_start/reasons out.
    """

    def __init__(
        self,
        *,
        stack: RetrievalStack,
        booster: Any,
        feature_names: list[str],
        per_retriever: int,
        user_ids: np.ndarray,
        user_market: np.ndarray,
        item_ids: np.ndarray,
        item_category: np.ndarray,
        markets: list[str],
        categories: list[str],
        listed: np.ndarray,
        history: sp.csr_matrix,
        bought: sp.csr_matrix,
        user_features: np.ndarray,
        affinity: np.ndarray,
        item_market: np.ndarray,
        default_k: int,
        max_per_category: int | None,
        trained_until: str,
        feature_service: str | None,
    ) -> None:
        """`stack` and `booster` (a LightGBM booster) as fitted; `history` (weighted interactions)
        and `bought` (binary purchases) are users x items; `user_features` (users x features),
        `affinity` (users x categories x features) and `item_market` (markets x items x features)
        are the Feast values held as the fallback when a request comes without online ones."""
        self.feature_service = feature_service
        self.stack = stack
        self.booster = booster
        self.feature_names = feature_names
        self.per_retriever = per_retriever
        self.user_ids = user_ids
        self.user_index = {user: i for i, user in enumerate(user_ids.tolist())}
        self.item_ids = item_ids
        self.item_index = {item: i for i, item in enumerate(item_ids.tolist())}
        self.markets = list(markets)
        self.market_index = {market: i for i, market in enumerate(self.markets)}
        self.categories = list(categories)
        self.item_category = item_category
        self.listed = listed
        self.history = history
        self.bought = bought
        self.user_features = user_features
        self.affinity = affinity
        self.item_market = item_market
        self.default_k = default_k
        self.rules = ServingRules(
            item_markets={market: listed[i] for i, market in enumerate(self.markets)},
            item_category=item_category,
            max_per_category=max_per_category,
        )
        # one product per category: Feast's online lookup needs a product key in every entity row
        self.category_probe = [
            str(item_ids[np.flatnonzero(item_category == c)[0]]) for c in range(len(self.categories))
        ]
        self.trained_until = trained_until
        example_user = int(np.argmax(np.diff(self.history.indptr) > 0))
        self.example_user = str(user_ids[example_user])
        self.example_market = self.markets[int(user_market[example_user])]

    # -------------------------------------------------------------------- serving contract

    def describe(self) -> dict:
        return {
            "markets": self.markets,
            "catalogue_size": len(self.item_ids),
            "users": len(self.user_ids),
            "retrievers": list(self.stack.names),
            "features": list(self.feature_names),
            "trained_until": self.trained_until,
            "max_per_category": self.rules.max_per_category,
        }

    def smoke_request(self) -> dict:
        return {
            "user_id": self.example_user,
            "market": self.example_market,
            "k": 5,
            "exclude": [],
            "explain": True,
        }

    def online_entities(self, request: dict) -> list[dict] | None:
        """One entity row per category for a known user (user activity + category affinity)."""
        user = request.get("user_id")
        if user not in self.user_index:
            return None
        market = request.get("market")
        return [
            {"user_id": user, "product_id": probe, "market_id": market, "category": category}
            for category, probe in zip(self.categories, self.category_probe, strict=True)
        ]

    def answer(self, request: dict, online: dict | None = None) -> dict:
        market = request.get("market")
        if market not in self.market_index:
            raise ValueError(f"market: unknown market {market!r} (known: {', '.join(self.markets)})")
        k = int(request.get("k") or self.default_k)
        if k < 1:
            raise ValueError(f"k: must be at least 1, got {k}")
        markets = np.array([self.market_index[market]])
        exclude = np.array(
            [self.item_index[item] for item in request.get("exclude") or () if item in self.item_index],
            dtype=np.int64,
        )
        user = self.user_index.get(request.get("user_id"))
        scored = self.score_users(np.array([NO_USER if user is None else user]), markets, exclude, online)
        top = self.top_items(scored.scores, markets, k)[0]
        top = top[top != NO_ITEM]
        items: list[dict[str, Any]] = [
            {"product_id": str(self.item_ids[item]), "score": float(scored.scores[0, item])}
            for item in top.tolist()
        ]
        if request.get("explain", False):
            self._explain(items, top, scored)
        return {"items": items, "cold_start": not bool(scored.warm[0])}

    def score_users(
        self,
        users: np.ndarray,
        markets: np.ndarray,
        exclude: np.ndarray | None = None,
        online: dict | None = None,
    ) -> UserScores:
        """Scores over the catalogue for each of `users` (the model's indices, NO_USER for one it does
        not know) in `markets` (indices): a user with a history gets the ranker's scores for its
        candidates and, below them all, every other allowed item in the first retriever's order (the
        back-fill, so k items come back while k are allowed); anyone else gets trending in the market.
        Barred (-inf): not listed in the market, already bought, in `exclude` (item indices). `online`
        (Feast values) applies to a single user. Serving and evaluation both score through here."""
        users, markets = np.asarray(users, dtype=np.int64), np.asarray(markets, dtype=np.int64)
        known = users != NO_USER
        warm = np.zeros(len(users), dtype=bool)
        warm[known] = self.history.indptr[users[known] + 1] > self.history.indptr[users[known]]
        scores = np.where(self.listed[markets], self.stack.popular[markets].astype(np.float64), -np.inf)
        cold_known = np.flatnonzero(known & ~warm)
        if len(cold_known):
            barred = self._rows(self.bought, users[cold_known])
            rows = np.repeat(cold_known, np.diff(barred.indptr))
            scores[rows, barred.indices] = -np.inf
        if exclude is not None and len(exclude):
            scores[:, exclude] = -np.inf
        if not warm.any():
            return UserScores(scores, warm, None, None)
        warm_users = users[warm]
        if len(users) == 1:
            user_features, affinity = self._user_features(int(users[0]), online)
            user_features, affinity = user_features[None, :], affinity[None, :, :]
        else:
            user_features, affinity = self.user_features[warm_users], self.affinity[warm_users]
        candidate_set = candidates(
            self.stack,
            warm_users,
            self._rows(self.history, warm_users),
            self._rows(self.bought, warm_users),
            markets[warm],
            self.listed,
            user_features,
            affinity,
            self.item_market,
            self.item_category,
            self.per_retriever,
            extra_barred=exclude,
        )
        ranked = self.booster.predict(candidate_set.features, num_threads=1)
        scores[warm] = full_scores(candidate_set, ranked)
        return UserScores(scores, warm, candidate_set, ranked)

    def top_items(self, scores: np.ndarray, markets: np.ndarray, k: int) -> np.ndarray:
        """The top k item indices per row of `score_users` scores under the serve-time rules (the
        category cap; listing, bought and exclusions are barred in the scores already)."""
        if self.rules.max_per_category is None:
            return top_k_items(scores, k)
        return self.rules.apply(scores, k, markets=[self.markets[market] for market in markets])

    def _explain(self, items: list[dict[str, Any]], top: np.ndarray, scored: UserScores) -> None:
        """Reasons for one user's items: the ranker's three largest feature contributions for a
        ranked candidate; for a back-filled one the first retriever's standardised score; for
        trending items their trending score."""
        if not scored.warm[0]:
            for entry in items:
                entry["reasons"] = [{"feature": "trending_in_market", "contribution": entry["score"]}]
            return
        candidate_set = scored.candidates
        rows = np.minimum(np.searchsorted(candidate_set.items, top), len(candidate_set.items) - 1)
        is_candidate = candidate_set.items[rows] == top  # candidate items are sorted
        contributions = (
            self.booster.predict(candidate_set.features[rows[is_candidate]], pred_contrib=True, num_threads=1)
            if is_candidate.any()
            else np.empty((0, len(self.feature_names) + 1))
        )
        ranked_reasons = iter(contributions[:, :-1])
        for entry, item, ranked in zip(items, top.tolist(), is_candidate.tolist(), strict=True):
            if not ranked:
                entry["reasons"] = [
                    {"feature": BACKFILL_REASON, "contribution": float(candidate_set.background[0, item])}
                ]
                continue
            row = next(ranked_reasons)
            order = np.argsort(-np.abs(row), kind="stable")[:3]
            entry["reasons"] = [
                {"feature": self.feature_names[column], "contribution": float(row[column])}
                for column in order
            ]

    @staticmethod
    def _rows(matrix: sp.csr_matrix, users: np.ndarray) -> sp.csr_matrix:
        return csr_row(matrix, int(users[0])) if len(users) == 1 else matrix[users]

    def _user_features(self, user: int, online: dict | None) -> tuple[np.ndarray, np.ndarray]:
        """The user's features from Feast online values where present, else the held ones."""
        user_features, affinity = self.user_features[user].copy(), self.affinity[user].copy()
        if not online:
            return user_features, affinity
        for position, column in enumerate(USER_FEATURES.values()):
            values = online.get(column)
            if values and values[0] is not None:
                user_features[position] = float(values[0])
        for position, column in enumerate(AFFINITY_FEATURES.values()):
            values = online.get(column) or []
            for category, value in enumerate(values[: len(self.categories)]):
                if value is not None:
                    affinity[category, position] = float(value)
        return user_features, affinity

    # -------------------------------------------------------------------- MLflow's table form

    def request_from_row(self, row: dict[str, Any]) -> tuple[dict[str, Any], None]:
        """One input row as a request: `exclude` as a list of product ids (None: nothing excluded)."""
        exclude = row.get("exclude")
        return {**row, "exclude": [] if exclude is None else [str(item) for item in exclude]}, None

    def rows_from_answer(self, answer: dict[str, Any], index: int) -> list[dict[str, Any]]:
        """One output row per request: the items' ids and scores as lists, their reasons as JSON."""
        items = answer["items"]
        return [
            {
                "product_ids": [item["product_id"] for item in items],
                "scores": [item["score"] for item in items],
                "cold_start": answer["cold_start"],
                "reasons": json.dumps([item.get("reasons", []) for item in items]),
            }
        ]

    def example_row(self) -> dict[str, Any]:
        """The smoke request with one excluded product and no explanation: the input example."""
        return {**self.smoke_request(), "exclude": [str(self.item_ids[0])], "explain": False}
