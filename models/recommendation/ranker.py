"""LightGBM LambdaRank re-ranker over candidate features, with per-item explanations.

It takes a generic feature matrix (one row per user x candidate item, rows of one user together)
and the group sizes, so it does not care where the features come from: the hybrid model here,
or a Feast-built training set later. Explanations are LightGBM's TreeSHAP contributions
(`pred_contrib=True`): per row they sum, with the bias, to the raw model score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Self

import lightgbm as lgb
import numpy as np
import polars as pl

from models.recommendation.base import available_cores

FeatureMatrix = np.ndarray | pl.DataFrame
BIAS = "bias"


class LambdaRankRanker:
    """Learning to rank with LambdaMART (Burges 2010) as implemented by LightGBM.

    The defaults are small on purpose: a few thousand users' held-out items are noisy labels
    (bigger models fitted that noise on MovieLens and Online Retail), and fewer, shallower
    trees keep a request's re-ranking well under a millisecond.
    """

    def __init__(
        self,
        n_estimators: int = 100,
        learning_rate: float = 0.1,
        num_leaves: int = 15,
        min_child_samples: int = 100,
        feature_fraction: float = 0.9,
        truncation_level: int = 20,
        seed: int = 42,
        num_threads: int | None = None,
        **params: Any,
    ) -> None:
        self.n_estimators = n_estimators
        self.params = {
            "objective": "lambdarank",
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "min_child_samples": min_child_samples,
            "feature_fraction": feature_fraction,
            # only swaps among the top positions matter for nDCG@10
            "lambdarank_truncation_level": truncation_level,
            "seed": seed,
            "deterministic": True,
            "num_threads": num_threads or available_cores(),
            "verbosity": -1,
            **params,
        }

    def fit(
        self,
        features: FeatureMatrix,
        labels: np.ndarray,
        group_sizes: Sequence[int] | np.ndarray,
        feature_names: Sequence[str] | None = None,
        monotone_constraints: Sequence[int] | None = None,
        validation: tuple[FeatureMatrix, np.ndarray, Sequence[int] | np.ndarray] | None = None,
        callbacks: Sequence[Callable[..., None]] | None = None,
    ) -> Self:
        """`group_sizes[g]` consecutive rows belong to the g-th user (query).

        `monotone_constraints` (+1, -1 or 0 per feature) forces the score to rise, fall or do
        either with a feature, all else equal. `validation` (features, labels, group sizes) is
        scored with LightGBM's nDCG@10 after every round, which `callbacks` (LightGBM callbacks,
        e.g. one reporting to a tuner) can read.
        """
        matrix, self.feature_names_ = _as_matrix(features, feature_names)
        if int(np.sum(group_sizes)) != matrix.shape[0]:
            raise ValueError(f"group sizes add up to {int(np.sum(group_sizes))}, not {matrix.shape[0]} rows")
        dataset = lgb.Dataset(
            matrix,
            label=np.asarray(labels),
            group=np.asarray(group_sizes),
            feature_name=self.feature_names_,
            free_raw_data=True,
        )
        params = dict(self.params)
        if monotone_constraints is not None:
            params["monotone_constraints"] = list(monotone_constraints)
        valid_sets = []
        if validation is not None:
            valid_features, valid_labels, valid_groups = validation
            valid_matrix, _ = _as_matrix(valid_features, self.feature_names_)
            valid_sets.append(
                lgb.Dataset(
                    valid_matrix,
                    label=np.asarray(valid_labels),
                    group=np.asarray(valid_groups),
                    reference=dataset,
                )
            )
            params.setdefault("metric", "ndcg")
            params.setdefault("eval_at", [10])
        self.booster_ = lgb.train(
            params,
            dataset,
            num_boost_round=self.n_estimators,
            valid_sets=valid_sets or None,
            valid_names=["validation"] if valid_sets else None,
            callbacks=list(callbacks or []),
        )
        return self

    def predict(self, features: FeatureMatrix, num_threads: int | None = None) -> np.ndarray:
        """Raw ranking scores (higher is better), comparable within a user's candidates."""
        matrix, _ = _as_matrix(features, self.feature_names_)
        # one thread for small requests: a thread pool costs more than it saves on 100 rows
        threads = num_threads or (1 if matrix.shape[0] < 5000 else self.params["num_threads"])
        return self.booster_.predict(matrix, num_threads=threads)

    def contributions(self, features: FeatureMatrix) -> np.ndarray:
        """rows x (features + 1) TreeSHAP contributions; the last column is the bias."""
        matrix, _ = _as_matrix(features, self.feature_names_)
        return self.booster_.predict(matrix, pred_contrib=True)

    def explain(self, features: FeatureMatrix, top_n: int = 3) -> pl.DataFrame:
        """The `top_n` features with the largest absolute contribution to each row's score.

        Columns: row, rank (1 = largest), feature, value (the feature's value in that row),
        contribution, score (the row's raw score), bias.
        """
        matrix, _ = _as_matrix(features, self.feature_names_)
        contributions = self.contributions(matrix)
        per_feature, bias = contributions[:, :-1], contributions[:, -1]
        top_n = min(top_n, per_feature.shape[1])
        order = np.argsort(-np.abs(per_feature), axis=1, kind="stable")[:, :top_n]
        rows = np.repeat(np.arange(matrix.shape[0]), top_n)
        columns = order.ravel()
        return pl.DataFrame(
            {
                "row": rows,
                "rank": np.tile(np.arange(1, top_n + 1), matrix.shape[0]),
                "feature": np.asarray(self.feature_names_)[columns],
                "value": matrix[rows, columns],
                "contribution": per_feature[rows, columns],
                "score": contributions.sum(axis=1)[rows],
                "bias": bias[rows],
            }
        )

    def feature_importance(self) -> pl.DataFrame:
        """Total gain per feature, largest first."""
        gain = self.booster_.feature_importance(importance_type="gain")
        return pl.DataFrame({"feature": self.feature_names_, "gain": gain}).sort("gain", descending=True)


def _as_matrix(features: FeatureMatrix, names: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    if isinstance(features, pl.DataFrame):
        if names is not None and list(features.columns) != list(names):
            features = features.select(list(names))
        return features.to_numpy().astype(np.float64, copy=False), list(features.columns)
    matrix = np.asarray(features, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError("features must be a rows x features matrix")
    names = list(names) if names is not None else [f"f{i}" for i in range(matrix.shape[1])]
    if len(names) != matrix.shape[1]:
        raise ValueError(f"{len(names)} feature names for {matrix.shape[1]} columns")
    return matrix, names
