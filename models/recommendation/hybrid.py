"""Tradewind's recommender: candidates from several retrievers, re-ranked by LightGBM LambdaRank.

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
from dataclasses import dataclass
from typing import Literal, Self

import numpy as np
import polars as pl

from models.recommendation.base import EXCLUDED, NO_ITEM, Recommender, top_k_items
from models.recommendation.baselines import MostPopular
from models.recommendation.cold_start import SECONDS_PER_DAY
from models.recommendation.interactions import Interactions
from models.recommendation.ranker import LambdaRankRanker

TRAINING_BATCH_USERS = 512  # users whose dense score rows are built at once


@dataclass
class CandidateSet:
    """Candidates of a batch of users: rows of `features` are (users[row_user[r]], items[r])."""

    row_user: np.ndarray  # position in the batch of each row's user
    items: np.ndarray
    features: np.ndarray
    group_sizes: np.ndarray
    first_retriever_scores: np.ndarray  # users x items, orders the items that are not candidates


class RerankedHybrid(Recommender):
    """Retrievers -> candidate union -> LambdaRank; cold users -> fallback.

    `retrievers` are unfitted prototypes (copied, then fitted twice: on the ranker's training part
    and on everything); the first one also orders the items outside the candidate set.
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
            self._monotone_constraints() if self.monotone_retrieval else None,
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

    def _monotone_constraints(self) -> list[int]:
        """A better retrieval score or rank never lowers an item, all else equal: without this the
        ranker fits noise in the held-out labels (on MovieLens it lost to EASE alone)."""
        return [
            1 if name.endswith("_zscore") else -1 if name.endswith("_rank") else 0
            for name in self.feature_names_
        ]

    def _hold_out(self, interactions: Interactions, seed: int) -> tuple[Interactions, Interactions]:
        if self.holdout == "random":
            return interactions.split_per_user(self.holdout_fraction, seed)
        if interactions.last_seen is None:
            raise ValueError("a temporal hold-out needs interactions with timestamps")
        cutoff = np.quantile(interactions.last_seen, 1.0 - self.holdout_fraction)
        return interactions.split_at_time(float(cutoff))

    def _fit_parts(self, interactions: Interactions) -> None:
        self.train_ = interactions
        self.retrievers_ = {
            name: copy.deepcopy(retriever).fit(interactions) for name, retriever in self.retrievers.items()
        }
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
            *[f"{name}_{kind}" for name in self.retrievers for kind in ("zscore", "rank")],
            "item_relative_popularity",
            "item_relative_recent_popularity",
            "user_relative_history",
        ]

    # ------------------------------------------------------------ candidates and features

    def candidates(self, user_idx: np.ndarray) -> CandidateSet:
        """The union of every retriever's top unseen items per user, with ranker features."""
        user_idx = np.atleast_1d(np.asarray(user_idx))
        n_users, n_items = len(user_idx), self.train_.n_items
        seen_rows, seen_items = self.train_.items_of(user_idx)
        keep = min(self.candidates_per_retriever, n_items)
        columns, first_scores = [], None
        is_candidate = np.zeros((n_users, n_items), dtype=bool)
        per_retriever = []
        for retriever in self.retrievers_.values():
            scores = np.asarray(retriever.score(user_idx), dtype=np.float64)
            # standardised over the whole catalogue: cheap, and seen items are few
            mean, spread = scores.mean(axis=1), scores.std(axis=1)
            scores[seen_rows, seen_items] = EXCLUDED
            top = top_k_items(scores, keep)
            rows, places = np.nonzero(top != NO_ITEM)
            is_candidate[rows, top[rows, places]] = True
            per_retriever.append((scores, mean, np.where(spread > 0, spread, 1.0)))
            first_scores = scores if first_scores is None else first_scores
        is_candidate[seen_rows, seen_items] = False
        row_user, items = np.nonzero(is_candidate)
        group_sizes = is_candidate.sum(axis=1)
        for scores, mean, spread in per_retriever:
            candidate_scores = scores[row_user, items]
            columns += [
                (candidate_scores - mean[row_user]) / spread[row_user],
                rank_within_groups(candidate_scores, row_user),
            ]
        columns += [
            self.item_log_popularity_[items],
            self.item_log_recent_[items],
            self.user_log_history_[user_idx[row_user]],
        ]
        features = np.column_stack(columns)
        return CandidateSet(row_user, items, features, group_sizes, first_scores)

    # ------------------------------------------------------------ serving

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        """Ranker scores for candidates; every other item scores below all candidates, ordered by
        the first retriever. Users without history get the fallback's scores."""
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
        ranked = self.ranker_.predict(candidates.features)
        background = np.where(
            np.isneginf(candidates.first_retriever_scores), 0.0, candidates.first_retriever_scores
        )
        standardised = (background - background.mean(axis=1, keepdims=True)) / np.maximum(
            background.std(axis=1, keepdims=True), 1e-12
        )
        floor = np.full(len(user_idx), np.inf)
        np.minimum.at(floor, candidates.row_user, ranked)
        floor = np.where(np.isfinite(floor), floor, 0.0)
        # a squashed background score keeps non-candidates in (floor - 2, floor - 1)
        scores = floor[:, None] - 2.0 + 1.0 / (1.0 + np.exp(-np.clip(standardised, -30.0, 30.0)))
        scores[candidates.row_user, candidates.items] = ranked
        return scores

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


def rank_within_groups(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """1-based rank of each value within its group, largest first; `groups` sorted ascending."""
    order = np.lexsort((-values, groups))
    starts = np.searchsorted(groups, groups[order], side="left")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values)) - starts + 1
    return ranks


def _log_relative(counts: np.ndarray) -> np.ndarray:
    """log of each count over the mean positive count, with one added to both to keep zeros finite."""
    mean = counts[counts > 0].mean() if (counts > 0).any() else 1.0
    return np.log((counts + 1.0) / (mean + 1.0))
