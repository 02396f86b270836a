"""Ranking metrics on hand-computed examples, the split protocols, side-by-side evaluation, oracle."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Self

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from models.recommendation.base import Recommender
from models.recommendation.baselines import MostPopular
from models.recommendation.interactions import Interactions
from training.evaluation.ranking import (
    OracleRecommender,
    catalogue_coverage,
    evaluate_recommenders,
    expected_metrics,
    per_user_metrics,
    per_user_random_split,
    quality_vs_oracle,
    ranking_metrics,
    relevant_items,
    temporal_split,
    tune_on_validation,
)

MOVIELENS = Path(__file__).resolve().parents[3] / "shared" / "data" / "movielens-100k" / "u.data"


def _relevance(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    matrix = sp.lil_matrix((len(rows), n_items))
    for user, items in enumerate(rows):
        for item in items:
            matrix[user, item] = 1
    return matrix.tocsr()


def test_metrics_of_a_known_ranking() -> None:
    # relevant {1, 3}; ranked [1, 2, 3]: hits at ranks 1 and 3
    metrics = per_user_metrics(np.array([[1, 2, 3]]), _relevance([[1, 3]], 5), k=3)
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    ideal = 1 / math.log2(2) + 1 / math.log2(3)
    assert metrics["ndcg"][0] == pytest.approx(dcg / ideal)
    assert metrics["precision"][0] == pytest.approx(2 / 3)
    assert metrics["recall"][0] == pytest.approx(1.0)
    assert metrics["map"][0] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert metrics["hitrate"][0] == 1.0


def test_missing_items_are_misses_and_users_without_relevant_items_are_skipped() -> None:
    recommended = np.array([[-1, 4, -1], [0, 1, 2], [3, 0, 1]])
    relevant = _relevance([[4, 0, 2, 3], [], [2]], 5)
    metrics = per_user_metrics(recommended, relevant, k=3)
    # user 0: one hit at rank 2; ideal fills all 3 ranks
    ideal = sum(1 / math.log2(r + 1) for r in (1, 2, 3))
    assert metrics["ndcg"][0] == pytest.approx((1 / math.log2(3)) / ideal)
    assert metrics["recall"][0] == pytest.approx(1 / 4)
    assert metrics["map"][0] == pytest.approx((1 / 2) / 3)
    assert np.isnan(metrics["ndcg"][1])
    assert metrics["hitrate"][2] == 0.0
    summary = ranking_metrics(recommended, relevant, k=3)
    assert summary["n_users"] == 2
    assert summary["hitrate"] == pytest.approx(0.5)
    # coverage counts the evaluated users' lists only: items 4, 3, 0, 1
    assert summary["coverage"] == pytest.approx(4 / 5)


def test_metrics_only_look_at_the_first_k() -> None:
    relevant = _relevance([[9]], 10)
    assert per_user_metrics(np.array([[0, 1, 9]]), relevant, k=2)["hitrate"][0] == 0.0
    assert per_user_metrics(np.array([[0, 1, 9]]), relevant, k=3)["hitrate"][0] == 1.0


def test_catalogue_coverage() -> None:
    assert catalogue_coverage(np.array([[0, 1], [1, 2], [-1, 2]]), n_items=8, k=2) == pytest.approx(3 / 8)


def _random_interactions(n_users: int = 30, n_items: int = 40, density: float = 0.3) -> Interactions:
    rng = np.random.default_rng(0)
    matrix = sp.random(n_users, n_items, density=density, format="csr", random_state=rng)
    matrix.data[:] = 1.0
    return Interactions(matrix, np.arange(n_users), np.arange(n_items))


def test_per_user_split_is_deterministic_and_75_25_per_user() -> None:
    interactions = _random_interactions()
    train, test = per_user_random_split(interactions)
    again_train, again_test = per_user_random_split(interactions)
    other_train, _ = per_user_random_split(interactions, seed=7)
    assert (train.matrix != again_train.matrix).nnz == 0
    assert (test.matrix != again_test.matrix).nnz == 0
    assert (train.matrix != other_train.matrix).nnz > 0
    counts = interactions.history_counts()
    expected_test = np.floor(counts * 0.25 + 0.5)
    expected_test[counts < 2] = 0
    assert np.array_equal(test.history_counts(), expected_test)
    assert train.matrix.multiply(test.matrix).nnz == 0
    assert ((train.matrix + test.matrix) != interactions.matrix).nnz == 0


def test_temporal_split_cuts_at_one_time_and_keeps_id_maps() -> None:
    events = pl.DataFrame(
        {
            "user_id": ["a", "a", "b", "b", "c"],
            "item_id": ["x", "y", "x", "x", "z"],
            "timestamp": [datetime(2011, 1, day) for day in (1, 5, 2, 9, 7)],
        }
    )
    train, test = temporal_split(events, datetime(2011, 1, 5))
    assert list(train.user_ids) == list(test.user_ids) == ["a", "b", "c"]
    assert list(train.item_ids) == ["x", "y", "z"]
    assert train.matrix.toarray().tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]
    # the cut-off moment itself belongs to the test period; b bought x on both sides
    assert test.matrix.toarray().tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 1]]
    # seen items leave the relevance: b's repeat of x cannot be a hit
    assert relevant_items(train, test).toarray().tolist() == [[0, 1, 0], [0, 0, 0], [0, 0, 1]]


class _Fixed(Recommender):
    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def fit(self, interactions: Interactions) -> Self:
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return self.scores[user_idx]


def test_evaluate_recommenders_reports_warm_cold_and_segments() -> None:
    interactions = _random_interactions(n_users=40)
    train, test = per_user_random_split(interactions)
    train = train.subset(train.user_rows() >= 5)  # users 0-4 lose their history: cold start
    probability = np.random.default_rng(1).random(interactions.matrix.shape)
    markets = np.array(["DE" if user % 2 else "FR" for user in range(40)])
    results = evaluate_recommenders(
        {"popular": MostPopular(), "oracle": OracleRecommender(test.matrix.toarray() + 0.01 * probability)},
        train,
        test,
        k=5,
        segments={"market": markets},
    )
    assert set(results["segment"]) == {"all", "warm", "cold_start", "market=DE", "market=FR"}
    popular = results.filter(pl.col("model") == "popular")
    by_segment = dict(zip(popular["segment"], popular["n_users"], strict=True))
    assert by_segment["all"] == by_segment["warm"] + by_segment["cold_start"]
    assert by_segment["cold_start"] == 5
    assert by_segment["market=DE"] + by_segment["market=FR"] == by_segment["all"]
    oracle = results.filter((pl.col("model") == "oracle") & (pl.col("segment") == "all"))
    assert oracle["hitrate"][0] == 1.0
    assert oracle["ndcg"][0] > popular.filter(pl.col("segment") == "all")["ndcg"][0]
    assert {"train_s", "score_s", "coverage"} <= set(results.columns)


def test_evaluate_recommenders_hands_out_the_per_user_values_each_row_averages() -> None:
    interactions = _random_interactions(n_users=40)
    train, test = per_user_random_split(interactions)
    train = train.subset(train.user_rows() >= 5)
    per_user: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    results = evaluate_recommenders({"popular": MostPopular()}, train, test, k=5, per_user=per_user)
    assert set(per_user) == {("popular", segment) for segment in results["segment"]}
    for row in results.iter_rows(named=True):
        values = per_user[(row["model"], row["segment"])]
        assert len(values["ndcg"]) == row["n_users"] > 0  # one value per evaluated user, no NaN
        for metric in ("ndcg", "precision", "recall", "map", "hitrate"):
            assert values[metric].mean() == pytest.approx(row[metric])
    # asking for them changes no figure
    again = evaluate_recommenders({"popular": MostPopular()}, train, test, k=5)
    assert again.drop("train_s", "score_s").equals(results.drop("train_s", "score_s"))


def test_tune_on_validation_picks_the_best_value() -> None:
    interactions = _random_interactions()
    train, validation = per_user_random_split(interactions)
    truth = validation.matrix.toarray()

    def make(weight: float) -> Recommender:
        return _Fixed(weight * truth + np.random.default_rng(0).random(truth.shape))

    best, scores = tune_on_validation(make, [0.0, 5.0], train, validation, k=5)
    assert best == 5.0
    assert scores[5.0] > scores[0.0]


def test_oracle_ratio_is_one_for_the_oracle_and_below_for_others() -> None:
    probability = np.array([[0.9, 0.1, 0.5, 0.0], [0.2, 0.3, 0.0, 0.8]])
    best = quality_vs_oracle(np.array([[0, 2], [3, 1]]), probability, k=2)
    assert best["ratio"].to_list() == pytest.approx([1.0, 1.0, 1.0])
    worse = quality_vs_oracle(np.array([[1, 3], [2, 0]]), probability, k=2)
    assert all(ratio < 1.0 for ratio in worse["ratio"].to_list())
    expected = expected_metrics(np.array([[0, 2]]), probability[:1], k=2)
    assert expected["precision"] == pytest.approx((0.9 + 0.5) / 2)
    assert expected["dcg"] == pytest.approx(0.9 + 0.5 / math.log2(3))
    assert expected["hitrate"] == pytest.approx(1 - 0.1 * 0.5)
    # excluding the oracle's favourite changes what the oracle can reach
    excluded = quality_vs_oracle(
        np.array([[2, 1], [3, 1]]), probability, k=2, exclude=_relevance([[0], []], 4)
    )
    assert excluded["ratio"].to_list() == pytest.approx([1.0, 1.0, 1.0])


@pytest.mark.realdata
@pytest.mark.skipif(not MOVIELENS.exists(), reason="MovieLens 100K not in ../shared/data")
def test_movielens_split_is_75_25_for_every_user() -> None:
    events = pl.read_csv(
        MOVIELENS, separator="\t", has_header=False, new_columns=["user_id", "item_id", "rating", "timestamp"]
    )
    interactions = Interactions.from_events(events, time_col="timestamp")
    assert (interactions.n_users, interactions.n_items, interactions.nnz) == (943, 1682, 100_000)
    _, test = per_user_random_split(interactions)
    # a quarter of every user's ratings, rounded
    assert np.all(np.abs(test.history_counts() - 0.25 * interactions.history_counts()) <= 0.5)
    assert test.nnz == pytest.approx(25_000, rel=0.01)
