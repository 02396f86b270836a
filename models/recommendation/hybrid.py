"""Tradewind's retrieve-and-rank recommender fitted on interactions alone (the benchmarks' protocol):
the same retrieval stack, candidates and back-fill (`models.recommendation.retrieval`) the
recommender family trains and serves, with interaction-only context features instead of Feast's.

Each retriever (EASE, item-kNN, two-tower, popularity, ...) proposes its top unseen candidates;
the union is described by every retriever's per-user standardised score and rank, plus the item's
popularity and recent popularity and the user's history length (each relative to the mean), and
the ranker orders it. The ranker is monotone in the retrieval features by default.

The ranker must learn from interactions the retrievers have not seen, so `fit` holds out part of
the training interactions (per user at random, or the latest by time), fits the retrievers on
the rest, labels their candidates with the held-out items, trains the ranker, then refits the
retrievers on everything for serving. Users without any history get the fallback's scores
(e.g. `PopularInMarket`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Literal, Self

import numpy as np
import polars as pl
import scipy.sparse as sp

from models.recommendation.base import Recommender
from models.recommendation.baselines import EASE, ItemKNN, MostPopular
from models.recommendation.cold_start import SECONDS_PER_DAY, PopularInMarket
from models.recommendation.interactions import Interactions
from models.recommendation.ranker import LambdaRankRanker
from models.recommendation.retrieval import (
    Candidates,
    RetrievalStack,
    full_scores,
    monotone_constraints,
    retrieved,
    with_context,
)

TRAINING_BATCH_USERS = 512  # users whose dense score rows are built at once


class RerankedHybrid(Recommender):
    """Retrievers -> candidate union -> LambdaRank; cold users -> fallback.

    `retrievers` are unfitted prototypes (copied, then fitted twice: on the ranker's training part
    and on everything) and become a `RetrievalStack` (see `stack_of`); the first one also orders the
    items outside the candidate set. Candidates, their retrieval features and the back-fill are the
    served recommender's own (`retrieved`, `full_scores`).
    """

    def __init__(
        self,
        retrievers: Mapping[str, Recommender],
        ranker: LambdaRankRanker | None = None,
        candidates_per_retriever: int = 50,
        holdout: Literal["random", "temporal"] = "random",
        holdout_fraction: float = 0.2,
        fallback: Recommender | None = None,
        monotone_retrieval: bool = True,
        recent_half_life_days: float = 7.0,
        seed: int = 42,
        label_folds: int = 1,
    ) -> None:
        self.retrievers = dict(retrievers)
        self.ranker = ranker or LambdaRankRanker(seed=seed)
        self.candidates_per_retriever = candidates_per_retriever
        self.holdout = holdout
        self.holdout_fraction = holdout_fraction
        self.fallback = fallback or MostPopular()
        self.monotone_retrieval = monotone_retrieval
        self.recent_half_life_days = recent_half_life_days
        self.seed = seed
        # random hold-outs drawn with seeds seed, seed + 1, ...: each adds a set of labels, so the
        # ranker sees more (user, held-out item) examples than one 20% hold-out gives
        self.label_folds = label_folds

    # ------------------------------------------------------------ training

    def fit(self, interactions: Interactions) -> Self:
        features: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        group_sizes: list[np.ndarray] = []
        folds = self.label_folds if self.holdout == "random" else 1
        for fold in range(folds):
            base, held_out = self._hold_out(interactions, self.seed + fold)
            self._fit_parts(base)
            self._collect_labels(base, held_out, features, labels, group_sizes)
        self.ranker_ = copy.deepcopy(self.ranker).fit(
            np.vstack(features),
            np.concatenate(labels),
            np.concatenate(group_sizes),
            self.feature_names_,
            monotone_constraints(self.feature_names_, 2 * len(self.stack_.names))
            if self.monotone_retrieval
            else None,
        )
        self.training_rows_ = sum(len(rows) for rows in labels)
        self._fit_parts(interactions)
        return self

    def _collect_labels(
        self,
        base: Interactions,
        held_out: Interactions,
        features: list[np.ndarray],
        labels: list[np.ndarray],
        group_sizes: list[np.ndarray],
    ) -> None:
        label_users = np.flatnonzero((held_out.history_counts() > 0) & (base.history_counts() > 0))
        for start in range(0, len(label_users), TRAINING_BATCH_USERS):
            users = label_users[start : start + TRAINING_BATCH_USERS]
            candidates = self.candidates(users)
            is_positive = (
                np.asarray(held_out.matrix[users[candidates.row_user], candidates.items]).ravel() > 0
            )
            # a user none of whose candidates was chosen carries no ranking signal
            positives = np.bincount(candidates.row_user, weights=is_positive, minlength=len(users))
            useful = positives[candidates.row_user] > 0
            features.append(candidates.features[useful])
            labels.append(is_positive[useful].astype(np.float64))
            group_sizes.append(candidates.group_sizes[positives > 0])

    def _hold_out(self, interactions: Interactions, seed: int) -> tuple[Interactions, Interactions]:
        if self.holdout == "random":
            return interactions.split_per_user(self.holdout_fraction, seed)
        if interactions.last_seen is None:
            raise ValueError("a temporal hold-out needs interactions with timestamps")
        cutoff = np.quantile(interactions.last_seen, 1.0 - self.holdout_fraction)
        return interactions.split_at_time(float(cutoff))

    def _fit_parts(self, interactions: Interactions) -> None:
        self.train_ = interactions
        fitted = {
            name: copy.deepcopy(retriever).fit(interactions) for name, retriever in self.retrievers.items()
        }
        self.stack_, self.user_market_, self.binary_ = stack_of(fitted, interactions.n_users)
        self.fallback_ = copy.deepcopy(self.fallback).fit(interactions)
        # features are relative (to the mean item, the mean user) so that they mean the same
        # whether the retrievers saw the ranker's training part or all interactions
        binary = interactions.binary()
        self.item_log_popularity_ = _log_relative(np.asarray(binary.sum(axis=0)).ravel())
        recent = np.ones(interactions.nnz)
        if interactions.last_seen is not None and interactions.nnz:
            age_days = (interactions.last_seen.max() - interactions.last_seen) / SECONDS_PER_DAY
            recent = 0.5 ** (age_days / self.recent_half_life_days)
        self.item_log_recent_ = _log_relative(
            np.bincount(binary.indices, weights=recent, minlength=binary.shape[1])
        )
        self.user_log_history_ = _log_relative(interactions.history_counts().astype(np.float64))
        self.feature_names_ = [
            *[f"{name}_{kind}" for name in self.stack_.names for kind in ("score", "rank")],
            "item_relative_popularity",
            "item_relative_recent_popularity",
            "user_relative_history",
        ]

    # ------------------------------------------------------------ candidates and features

    def candidates(self, user_idx: np.ndarray) -> Candidates:
        """The union of every retriever's top unseen items per user, with ranker features."""
        user_idx = np.atleast_1d(np.asarray(user_idx))
        history = self.train_.binary() if self.binary_ else self.train_.matrix
        history = history[user_idx]
        allowed = np.ones((len(user_idx), self.train_.n_items), dtype=bool)
        allowed[np.repeat(np.arange(len(user_idx)), np.diff(history.indptr)), history.indices] = False
        candidate_set = retrieved(
            self.stack_,
            user_idx,
            history,
            self.user_market_[user_idx],
            allowed,
            self.candidates_per_retriever,
        )
        items, users = candidate_set.items, user_idx[candidate_set.row_user]
        return with_context(
            candidate_set,
            self.item_log_popularity_[items],
            self.item_log_recent_[items],
            self.user_log_history_[users],
        )

    # ------------------------------------------------------------ serving

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        """Ranker scores for candidates; every other unseen item scores below all candidates, ordered
        by the first retriever (`full_scores`, as served); seen items -inf. Users without history get
        the fallback's scores."""
        user_idx = np.atleast_1d(np.asarray(user_idx))
        scores = np.empty((len(user_idx), self.train_.n_items), dtype=np.float64)
        warm = self.train_.history_counts()[user_idx] > 0
        if (~warm).any():
            scores[~warm] = self.fallback_.score(user_idx[~warm])
        if warm.any():
            scores[warm] = self._warm_scores(user_idx[warm])
        return scores

    def _warm_scores(self, user_idx: np.ndarray) -> np.ndarray:
        candidates = self.candidates(user_idx)
        return full_scores(candidates, self.ranker_.predict(candidates.features))

    def explain(self, user: int, k: int = 10, top_n: int = 3) -> pl.DataFrame:
        """For the user's top-k items: the `top_n` features that moved each item's score most.

        Columns: position (1 = best), item_idx, item_id, then the ranker's explanation columns.
        """
        candidates = self.candidates(np.array([user]))
        ranked = self.ranker_.predict(candidates.features)
        best = np.argsort(-ranked, kind="stable")[:k]
        explanation = self.ranker_.explain(candidates.features[best], top_n)
        positions = explanation["row"].to_numpy()
        items = candidates.items[best][positions]
        return explanation.with_columns(
            pl.Series("position", positions + 1),
            pl.Series("item_idx", items),
            pl.Series("item_id", self.train_.item_ids[items]),
        ).select("position", "item_idx", "item_id", pl.exclude("row", "position", "item_idx", "item_id"))


def stack_of(retrievers: Mapping[str, Recommender], n_users: int) -> tuple[RetrievalStack, np.ndarray, bool]:
    """Fitted retrievers as the arrays of a `RetrievalStack`, each user's row of its `popular`, and
    whether the stack scores binary histories. Known kinds: "ease" (`EASE`), "knn" (`ItemKNN`),
    "two_tower" (`TwoTower`), "popular" (`MostPopular` or `PopularInMarket`)."""
    parts: dict = {"ease_weights": None, "knn_similarity": None, "content_attributes": None}
    parts.update(tower_items=None, tower_users=None)
    user_market = np.zeros(n_users, dtype=np.int64)
    popular = None
    binary = {retriever.binary for retriever in retrievers.values() if isinstance(retriever, EASE | ItemKNN)}
    if len(binary) > 1:
        raise ValueError("EASE and item-kNN must both score binary or both weighted histories")
    for name, retriever in retrievers.items():
        if name == "ease" and isinstance(retriever, EASE):
            parts["ease_weights"] = retriever.weights_
        elif name == "knn" and isinstance(retriever, ItemKNN):
            parts["knn_similarity"] = sp.csr_matrix(retriever.similarity_, dtype=np.float32)
        elif name == "two_tower" and hasattr(retriever, "user_vectors"):
            parts["tower_users"] = retriever.user_vectors(np.arange(n_users)).astype(np.float32)
            parts["tower_items"] = retriever.index_.item_vectors
        elif name == "popular" and isinstance(retriever, PopularInMarket):
            markets, user_market = np.unique(retriever.user_market.astype(str), return_inverse=True)
            popular = np.stack([retriever.score_market(market) for market in markets.tolist()])
        elif name == "popular" and isinstance(retriever, MostPopular):
            popular = retriever.item_popularity_[None, :]
        else:
            raise ValueError(f"retriever {name!r}: a {type(retriever).__name__} has no place in the stack")
    if popular is None:
        raise ValueError("the stack needs a 'popular' retriever (it also answers users without history)")
    stack = RetrievalStack(names=list(retrievers), popular=popular, **parts)
    return stack, user_market, binary != {False}


def _log_relative(counts: np.ndarray) -> np.ndarray:
    """log of each count over the mean positive count, with one added to both to keep zeros finite."""
    mean = counts[counts > 0].mean() if (counts > 0).any() else 1.0
    return np.log((counts + 1.0) / (mean + 1.0))
