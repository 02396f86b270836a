"""Recommendation models: baselines, two-tower, LambdaRank re-ranker, hybrid, cold start, rules."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr

from models.recommendation.base import NO_ITEM, Recommender
from models.recommendation.baselines import EASE, ItemKNN, MostPopular, ease_weights
from models.recommendation.candidate_index import ExactCandidateIndex
from models.recommendation.cold_start import AttributeSimilarity, PopularInMarket
from models.recommendation.hybrid import RerankedHybrid
from models.recommendation.interactions import Interactions
from models.recommendation.ranker import LambdaRankRanker
from models.recommendation.rules import ServingRules
from models.recommendation.two_tower import TwoTower, TwoTowerConfig
from training.evaluation.ranking import evaluate_recommenders, per_user_random_split

TINY_TOWER = dict(embedding_dim=16, hidden_dim=32, history_length=20, batch_size=128, num_threads=1)


def _planted(n_groups: int = 3, users_per_group: int = 30, items_per_group: int = 12, seed: int = 0):
    """Users of group g interact with 8 of group g's items: popularity says nothing about the group."""
    rng = np.random.default_rng(seed)
    rows, columns = [], []
    for group in range(n_groups):
        for user in range(group * users_per_group, (group + 1) * users_per_group):
            items = rng.choice(items_per_group, size=8, replace=False) + group * items_per_group
            rows += [user] * len(items)
            columns += items.tolist()
    shape = (n_groups * users_per_group, n_groups * items_per_group)
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, columns)), shape=shape)
    return Interactions(matrix, np.arange(shape[0]), np.arange(shape[1]))


# ---------------------------------------------------------------- interactions


def test_from_events_aggregates_weights_and_keeps_the_latest_time() -> None:
    events = pl.DataFrame(
        {
            "user": ["u2", "u1", "u1", "u2"],
            "item": ["b", "a", "a", "a"],
            "qty": [2.0, 1.0, 3.0, 5.0],
            "ts": [datetime(2011, 1, 3), datetime(2011, 1, 1), datetime(2011, 1, 2), datetime(2011, 1, 4)],
        }
    )
    interactions = Interactions.from_events(events, "user", "item", "ts", "qty")
    assert list(interactions.user_ids) == ["u1", "u2"] and list(interactions.item_ids) == ["a", "b"]
    assert interactions.matrix.toarray().tolist() == [[4.0, 0.0], [5.0, 2.0]]
    # naive event times are read as UTC
    assert interactions.last_seen.tolist() == [_epoch(datetime(2011, 1, day)) for day in (2, 4, 3)]
    assert [items.tolist() for items in interactions.recent_items(5)] == [[0], [0, 1]]
    positions, items = interactions.items_of(np.array([1, 0]))
    assert positions.tolist() == [0, 0, 1] and items.tolist() == [0, 1, 0]
    # a subset keeps indices and the time of each kept pair
    kept = interactions.subset(np.array([False, True, False]))
    assert kept.matrix.toarray().tolist() == [[0.0, 0.0], [5.0, 0.0]]
    assert kept.last_seen.tolist() == [interactions.last_seen[1]]


def _epoch(moment: datetime) -> float:
    return (moment - datetime(1970, 1, 1)).total_seconds()


# ---------------------------------------------------------------- baselines and recommend()


def test_ease_closed_form_equals_a_direct_solve() -> None:
    rng = np.random.default_rng(3)
    x = (rng.random((25, 6)) < 0.4).astype(np.float64)
    l2 = 2.5
    closed_form = ease_weights(x.T @ x, l2)
    # column j regresses item j on the other items: (X_-j^T X_-j + l2 I) b = X_-j^T x_j
    direct = np.zeros((6, 6))
    for j in range(6):
        others = [i for i in range(6) if i != j]
        design = x[:, others]
        direct[others, j] = np.linalg.solve(design.T @ design + l2 * np.eye(5), design.T @ x[:, j])
    np.testing.assert_allclose(closed_form, direct, atol=1e-10)
    fitted = EASE(l2).fit(Interactions(sp.csr_matrix(x), np.arange(25), np.arange(6)))
    np.testing.assert_allclose(fitted.score(np.array([0, 1])), x[:2] @ direct, atol=1e-5)
    # the single-user path (no sparse slicing) agrees with the batch path
    np.testing.assert_allclose(fitted.score(np.array([2])), x[2:3] @ direct, atol=1e-5)


def test_recommend_respects_k_and_exclusions() -> None:
    interactions = _planted()
    model = EASE(10.0).fit(interactions)
    users = np.arange(interactions.n_users)
    top = model.recommend(users, k=5, exclude=interactions.matrix)
    assert top.shape == (interactions.n_users, 5)
    seen = interactions.matrix.toarray() > 0
    assert not seen[users[:, None], top].any()
    scores = model.score(users)
    ordered = np.take_along_axis(scores, top, axis=1)
    assert np.all(np.diff(ordered, axis=1) <= 0)
    # with 36 items and 8 seen, only 28 remain: the rest of a top-30 is padding
    padded = model.recommend(users[:2], k=30, exclude=interactions.matrix)
    assert (padded[:, 28:] == NO_ITEM).all() and (padded[:, :28] >= 0).all()


def test_item_knn_and_popularity_behave() -> None:
    interactions = _planted()
    popular = MostPopular().fit(interactions)
    assert np.array_equal(popular.item_popularity_, interactions.matrix.getnnz(axis=0))
    knn = ItemKNN(neighbours=5).fit(interactions)
    assert (knn.similarity_.getnnz(axis=1) <= 5).all()
    # a user's neighbours come from the user's own group
    top = knn.recommend(np.array([0, 45]), k=3, exclude=interactions.matrix)
    assert (top[0] < 12).all() and ((top[1] >= 12) & (top[1] < 24)).all()


def test_exact_index_search_excludes_and_orders() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    index = ExactCandidateIndex(vectors)
    items, scores = index.search(np.array([[1.0, 0.2]]), k=2, exclude=sp.csr_matrix([[1, 0, 0]]))
    assert items.tolist() == [[2, 1]]
    assert scores[0].tolist() == pytest.approx([0.84, 0.2])


# ---------------------------------------------------------------- two-tower


def test_two_tower_learns_planted_groups_better_than_popularity() -> None:
    train, test = per_user_random_split(_planted(), seed=1)
    config = TwoTowerConfig(**TINY_TOWER, epochs=10, learning_rate=2e-2)
    results = evaluate_recommenders(
        {"two_tower": TwoTower(config), "popular": MostPopular()}, train, test, k=4
    )
    overall = results.filter(pl.col("segment") == "all")
    ndcg = dict(zip(overall["model"], overall["ndcg"], strict=True))
    assert ndcg["two_tower"] > ndcg["popular"] + 0.3


def test_logq_correction_restores_popularity_on_skewed_data() -> None:
    # items chosen independently of the user, with Zipf-like popularity: P(item | user) = P(item).
    # In-batch negatives meet popular items more often; without the correction the model learns
    # to push them down, with it the scores follow popularity (Yi et al. 2019).
    rng = np.random.default_rng(0)
    n_users, n_items = 300, 40
    popularity = 1.0 / np.arange(1, n_items + 1)
    popularity /= popularity.sum()
    rows, columns = [], []
    for user in range(n_users):
        items = rng.choice(n_items, size=6, replace=False, p=popularity)
        rows += [user] * 6
        columns += items.tolist()
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, columns)), shape=(n_users, n_items))
    interactions = Interactions(matrix, np.arange(n_users), np.arange(n_items))
    counts = matrix.getnnz(axis=0)
    correlations = {}
    for corrected in (True, False):
        config = TwoTowerConfig(**TINY_TOWER, epochs=8, logq_correction=corrected)
        mean_scores = TwoTower(config).fit(interactions).score(np.arange(n_users)).mean(axis=0)
        correlations[corrected] = spearmanr(mean_scores, counts).statistic
    assert correlations[True] > 0.7
    assert correlations[False] < correlations[True] - 0.5


def test_two_tower_scores_new_items_from_features() -> None:
    interactions = _planted()
    group = np.repeat(np.eye(3, dtype=np.float32), 12, axis=0)  # item feature: its group
    with_features = Interactions(
        interactions.matrix, interactions.user_ids, interactions.item_ids, item_features=group
    )
    model = TwoTower(TwoTowerConfig(**TINY_TOWER, epochs=30, id_dropout=0.5, learning_rate=1e-2)).fit(
        with_features
    )
    new_items = model.item_vectors_from_features(np.eye(3, dtype=np.float32))
    # users of group 0 prefer a new group-0 item, users of group 2 a new group-2 item
    scores = model.user_vectors(np.array([0, 1, 70, 71])) @ new_items.T
    assert (scores[:2].argmax(axis=1) == 0).all() and (scores[2:].argmax(axis=1) == 2).all()


# ---------------------------------------------------------------- ranker and hybrid


def _ranking_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 15, size=60)
    features = rng.normal(size=(sizes.sum(), 4))
    labels = (features[:, 0] + 0.5 * features[:, 1] + 0.3 * rng.normal(size=sizes.sum()) > 1.0).astype(float)
    return features, labels, sizes


def test_ranker_learns_and_explanations_sum_to_the_raw_score() -> None:
    features, labels, sizes = _ranking_data()
    names = ["signal", "weak_signal", "noise_a", "noise_b"]
    ranker = LambdaRankRanker(n_estimators=50, num_leaves=7, min_child_samples=5, num_threads=1)
    ranker.fit(pl.DataFrame(features, schema=names), labels, sizes)
    raw = ranker.predict(features)
    contributions = ranker.contributions(features)
    np.testing.assert_allclose(contributions.sum(axis=1), raw, rtol=1e-6, atol=1e-6)
    explanation = ranker.explain(features[:4], top_n=2)
    assert explanation.height == 8
    np.testing.assert_allclose(
        explanation.filter(pl.col("rank") == 1)["score"].to_numpy(), raw[:4], atol=1e-6
    )
    first = explanation.filter(pl.col("row") == 0)
    assert abs(first["contribution"][0]) >= abs(first["contribution"][1])
    assert ranker.feature_importance()["feature"][0] == "signal"
    with pytest.raises(ValueError, match="group sizes"):
        ranker.fit(features, labels, sizes[:-1])


def test_hybrid_recommends_unseen_items_and_falls_back_for_cold_users() -> None:
    interactions = _planted()
    cold = 5
    interactions = interactions.subset(interactions.user_rows() != cold)
    hybrid = RerankedHybrid(
        {"ease": EASE(10.0), "popular": MostPopular()},
        ranker=LambdaRankRanker(n_estimators=20, min_child_samples=5, num_threads=1),
        candidates_per_retriever=10,
    ).fit(interactions)
    top = hybrid.recommend(np.array([0, 40, cold]), k=4, exclude=interactions.matrix)
    seen = interactions.matrix.toarray() > 0
    assert not seen[np.array([0, 40])[:, None], top[:2]].any()
    assert (top[0] < 12).all() and ((top[1] >= 12) & (top[1] < 24)).all()
    popular = MostPopular().fit(interactions).recommend(np.array([cold]), k=4)
    assert set(top[2]) == set(popular[0])
    explanation = hybrid.explain(0, k=3, top_n=2)
    assert explanation["position"].to_list() == [1, 1, 2, 2, 3, 3]
    assert set(explanation["feature"]) <= set(hybrid.feature_names_)
    assert explanation["item_idx"].to_list()[::2] == top[0, :3].tolist()


# ---------------------------------------------------------------- cold start and rules


def _market_events() -> tuple[Interactions, np.ndarray]:
    now = datetime(2011, 12, 1)
    rows = []
    # six DE users buy item 0 lately and item 1 two months ago; four FR users buy item 2; one item 3
    for user in range(6):
        rows.append((f"de{user}", "i0", now - timedelta(days=1)))
        rows.append((f"de{user}", "i1", now - timedelta(days=60)))
    for user in range(4):
        rows.append((f"fr{user}", "i2", now - timedelta(days=2)))
    rows.append(("fr0", "i3", now))
    events = pl.DataFrame(rows, schema=["user_id", "item_id", "ts"], orient="row")
    interactions = Interactions.from_events(events, time_col="ts")
    markets = np.array([user[:2].upper() for user in interactions.user_ids.tolist()], dtype=object)
    return interactions, markets


def test_popular_in_market_serves_unknown_users_by_market_and_recency() -> None:
    interactions, markets = _market_events()
    model = PopularInMarket(markets, half_life_days=30, smoothing=1.0).fit(interactions)
    item = {name: index for index, name in enumerate(interactions.item_ids.tolist())}
    assert model.recommend_for_market("DE", k=2).tolist() == [item["i0"], item["i1"]]
    assert model.recommend_for_market("FR", k=1).tolist() == [item["i2"]]
    assert model.recommend_for_market("FR", k=1, exclude_items=np.array([item["i2"]])).tolist() != [
        item["i2"]
    ]
    # a market never seen gets the global trend, where DE's recent item 0 leads
    assert model.recommend_for_market("JP", k=1).tolist() == [item["i0"]]
    # user rows follow their market
    fr_user = interactions.user_index["fr1"]
    assert model.recommend(np.array([fr_user]), k=1).tolist() == [[item["i2"]]]


def test_attribute_similarity_prefers_new_items_of_the_users_categories() -> None:
    interactions = _planted()
    category = np.repeat(np.eye(3), 12, axis=0)
    model = AttributeSimilarity(category).fit(interactions)
    new_items = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    scores = model.score_new_items(np.array([0, 80]), new_items)
    assert scores[0].argmax() == 1 and scores[1].argmax() == 0


def test_serving_rules_exclude_bought_unlisted_and_cap_categories() -> None:
    scores = np.array([[9.0, 8.0, 7.0, 6.0, 5.0, 4.0]])
    category = np.array(["a", "a", "a", "b", "b", "c"])
    listed = {"DE": np.array([True, True, True, True, False, True])}
    rules = ServingRules(item_markets=listed, item_category=category, max_per_category=1)
    top = rules.apply(scores, k=3, bought=sp.csr_matrix([[1, 0, 0, 0, 0, 0]]), markets=["DE"])
    assert top.tolist() == [[1, 3, 5]]
    capped_two = ServingRules(item_category=category, max_per_category=2).apply(scores, k=4)
    assert capped_two.tolist() == [[0, 1, 3, 4]]
    nothing_listed = rules.apply(scores, k=2, markets=["XX"])
    assert nothing_listed.tolist() == [[NO_ITEM, NO_ITEM]]


def test_every_recommender_shares_the_interface() -> None:
    interactions = _planted()
    markets = np.array(["DE"] * interactions.n_users, dtype=object)
    models: list[Recommender] = [
        MostPopular(),
        ItemKNN(5),
        EASE(5.0),
        PopularInMarket(markets),
        AttributeSimilarity(np.repeat(np.eye(3), 12, axis=0)),
    ]
    for model in models:
        top = model.fit(interactions).recommend(np.arange(3), k=4, exclude=interactions.matrix)
        assert top.shape == (3, 4) and (top >= 0).all()


def test_top_k_settles_ties_by_item_index_and_a_shorter_list_starts_a_longer_one() -> None:
    from models.recommendation.base import top_k_items

    rng = np.random.default_rng(3)
    # few distinct values over many items: every cut falls inside a run of ties
    scores = rng.integers(0, 4, size=(50, 200)).astype(np.float64)
    scores[:, 7] = -np.inf
    scores[0, 11] = np.nan
    for k in (1, 5, 10, 37, 200, 250):
        top = top_k_items(scores, k)
        for row in range(len(scores)):
            values = np.where(np.isnan(scores[row]), -np.inf, scores[row])
            expected = [item for item in np.lexsort((np.arange(200), -values)) if np.isfinite(values[item])][
                :k
            ]
            assert top[row, : len(expected)].tolist() == expected
            assert (top[row, len(expected) :] == NO_ITEM).all()
    # the same row ranks alike alone and in a batch, and with the items' order reversed
    np.testing.assert_array_equal(top_k_items(scores[5:6], 10), top_k_items(scores, 10)[5:6])


def test_row_wise_dot_gives_each_row_the_same_bits_alone_and_in_a_batch() -> None:
    from models.recommendation.base import row_wise_dot

    rng = np.random.default_rng(4)
    users = rng.normal(size=(257, 24)).astype(np.float32)
    items = rng.normal(size=(1000, 24)).astype(np.float32)
    batch = row_wise_dot(users, items)
    np.testing.assert_allclose(batch, users @ items.T, rtol=1e-4, atol=1e-4)
    for row in (0, 100, 256):
        assert np.array_equal(row_wise_dot(users[row : row + 1], items)[0], batch[row])
