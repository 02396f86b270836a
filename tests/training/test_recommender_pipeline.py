"""The recommender family end to end on the tiny marketplace: train -> MLflow -> registry -> the
served pyfunc's answers, and a resumable Optuna study with nested runs."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest
from tiny_configs import tiny_recommender_config

from configs.settings import Settings
from features.tables import read_table
from models.recommendation.retrieval import AFFINITY_FEATURES, USER_FEATURES
from models.recommendation.served import ServedRecommender
from tracking.registry import CHAMPION, load_by_alias
from tracking.runs import configure_tracking, tracking_client
from training.pipeline import TrainResult, train, tune
from training.recommender.config import RecommenderConfig
from training.recommender.family import FAMILY


def small_config() -> RecommenderConfig:
    """The shipped config, shrunk so a fit takes seconds on the tiny marketplace."""
    return tiny_recommender_config(retrieval={"two_tower": {"epochs": 1, "embedding_dim": 8}})


@pytest.fixture(scope="module")
def trained(
    tiny_marketplace: Settings, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, TrainResult]:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        database = tmp_path_factory.mktemp("recommender-mlflow") / "mlflow.db"
        settings = tiny_marketplace.model_copy(
            update={
                "mlflow": tiny_marketplace.mlflow.model_copy(update={"tracking_uri": f"sqlite:///{database}"})
            }
        )
        result = train(settings, FAMILY, small_config())
        yield settings, result


@pytest.fixture(scope="module")
def served(trained: tuple[Settings, TrainResult]) -> ServedRecommender:
    settings, _ = trained
    configure_tracking(settings)
    model = load_by_alias(FAMILY.registered_model, CHAMPION).unwrap_python_model().served
    assert isinstance(model, ServedRecommender)
    return model


@pytest.fixture(scope="module")
def world(tiny_marketplace: Settings) -> dict[str, pl.DataFrame]:
    return {name: read_table(tiny_marketplace.contract_dir, name) for name in ("events", "listings")}


def listed_in(world: dict[str, pl.DataFrame], market: str) -> set[str]:
    return set(world["listings"].filter(pl.col("market_id") == market)["product_id"].to_list())


def test_train_registers_the_champion_with_finite_metrics(trained: tuple[Settings, TrainResult]) -> None:
    settings, result = trained
    assert result.version is not None and result.version.name == "tradewind-recommender"
    assert result.aliases == (CHAMPION,)
    configure_tracking(settings)
    run = tracking_client().get_run(result.run_id)
    metrics = run.data.metrics
    for name in ("tradewind.ndcg_at_10", "ease.ndcg_at_10", "item_knn.ndcg_at_10", "most_popular.ndcg_at_10"):
        assert name in metrics and math.isfinite(metrics[name])
    # the oracle ranks by the simulator's true purchase probabilities: popularity cannot match it
    assert metrics["oracle.ndcg_at_10"] > metrics["most_popular.ndcg_at_10"]
    assert metrics["quality_vs_oracle.tradewind_ndcg_ratio"] == pytest.approx(
        metrics["tradewind.ndcg_at_10"] / metrics["oracle.ndcg_at_10"]
    )
    assert any(name.startswith("market.") for name in metrics)
    assert all(math.isfinite(value) for value in metrics.values())
    assert result.evaluation.primary == pytest.approx(metrics["tradewind.ndcg_at_10"])
    assert run.data.tags["tradewind.feature_service"] == "recommender"
    artifacts = {item.path for item in tracking_client().list_artifacts(result.run_id, "plots")}
    assert {"plots/recall_at_k.png", "plots/ndcg_by_market.png"} <= artifacts


BASELINES = ("most_popular", "item_knn", "ease")


@pytest.mark.xfail(
    strict=True,
    reason="target missed (#16): on the tiny world the trained recommender ranks below its strongest "
    "baseline (measured nDCG@10 0.370 vs most-popular 0.386; EASE 0.379, item-kNN 0.368); strict, so the day "
    "it passes the suite goes red until this mark is removed",
)
def test_the_trained_recommender_beats_its_strongest_baseline(trained: tuple[Settings, TrainResult]) -> None:
    """On the simulator's world, where the oracle shows there is signal to find beyond popularity."""
    settings, result = trained
    configure_tracking(settings)
    metrics = tracking_client().get_run(result.run_id).data.metrics
    baselines = {name: metrics[f"{name}.ndcg_at_10"] for name in BASELINES}
    strongest = max(baselines, key=baselines.__getitem__)
    assert metrics["tradewind.ndcg_at_10"] > baselines[strongest], (strongest, baselines)


def test_known_user_gets_listed_unbought_items_with_reasons(
    served: ServedRecommender, world: dict[str, pl.DataFrame]
) -> None:
    request = served.smoke_request()
    user, market = request["user_id"], request["market"]
    answer = served.answer({**request, "k": 8, "explain": True})
    assert not answer["cold_start"]
    products = [item["product_id"] for item in answer["items"]]
    assert len(products) == len(set(products)) == 8  # the tiny world lists far more than 8 unbought
    bought = set(
        world["events"]
        .filter((pl.col("user_id") == user) & (pl.col("event_type") == "purchase"))["product_id"]
        .to_list()
    )
    assert not set(products) & bought
    assert set(products) <= listed_in(world, market)
    scores = [item["score"] for item in answer["items"]]
    assert scores == sorted(scores, reverse=True)
    known_features = set(served.describe()["features"])
    for item in answer["items"]:
        assert len(item["reasons"]) == 3
        assert all(reason["feature"] in known_features for reason in item["reasons"])
        assert all(math.isfinite(reason["contribution"]) for reason in item["reasons"])

    excluded = served.answer({**request, "k": 8, "exclude": products[:2], "explain": False})
    assert not {item["product_id"] for item in excluded["items"]} & set(products[:2])
    assert "reasons" not in excluded["items"][0]


def test_online_features_replace_the_held_ones(served: ServedRecommender) -> None:
    request = {**served.smoke_request(), "explain": False}
    rows = served.online_entities(request)
    assert rows is not None and [row["category"] for row in rows] == served.categories
    assert all(row["user_id"] == request["user_id"] and row["market_id"] == request["market"] for row in rows)
    user = served.user_index[request["user_id"]]
    online = {
        "user_activity__purchases_90d": [500] * len(rows),
        "user_activity__views_30d": [None] * len(rows),  # absent: the held value stays
        "user_category_affinity__interaction_share_90d": [0.5] * len(rows),
    }
    user_features, affinity = served._user_features(user, online)
    held_user, held_affinity = served._user_features(user, None)
    assert user_features[list(USER_FEATURES).index("user_purchases_90d")] == 500
    views = list(USER_FEATURES).index("user_views_30d")
    assert user_features[views] == held_user[views] or (
        math.isnan(user_features[views]) and math.isnan(held_user[views])
    )
    share = list(AFFINITY_FEATURES).index("category_interaction_share_90d")
    assert (affinity[:, share] == 0.5).all()
    assert held_affinity.shape == affinity.shape
    assert served.answer(request, online)["items"]


def test_unknown_user_gets_market_aware_cold_start(
    served: ServedRecommender, world: dict[str, pl.DataFrame]
) -> None:
    markets = served.describe()["markets"]
    answers = {}
    for market in markets:
        answer = served.answer({"user_id": "nobody-knows-me", "market": market, "k": 5})
        assert answer["cold_start"] and answer["items"]
        assert {item["product_id"] for item in answer["items"]} <= listed_in(world, market)
        answers[market] = tuple(item["product_id"] for item in answer["items"])
    assert len(set(answers.values())) > 1  # trending differs between markets
    assert served.online_entities({"user_id": "nobody-knows-me", "market": markets[0]}) is None


def test_unknown_market_is_refused_by_name(served: ServedRecommender) -> None:
    with pytest.raises(ValueError, match=r"market: unknown market 'XX' \(known: .*US"):
        served.answer({"user_id": served.smoke_request()["user_id"], "market": "XX", "k": 5})


def test_pyfunc_predict_answers_one_row_per_request(trained: tuple[Settings, TrainResult]) -> None:
    settings, result = trained
    configure_tracking(settings)
    model = mlflow.pyfunc.load_model(result.version.uri)
    request = model.unwrap_python_model().served.smoke_request()
    frame = pd.DataFrame(
        [
            {**request, "exclude": [], "explain": False},
            {
                "user_id": "nobody-knows-me",
                "market": request["market"],
                "k": 3,
                "exclude": [],
                "explain": True,
            },
        ]
    )
    output = model.predict(frame)
    assert len(output) == 2
    assert list(output["cold_start"]) == [False, True]
    assert len(output["product_ids"].iloc[1]) == 3


def test_tune_runs_nested_trials_and_resumes(mlflow_settings: Settings) -> None:
    config = small_config()
    first = tune(mlflow_settings, FAMILY, 2, config)
    assert first.trials_total == 2 and math.isfinite(first.best_value)
    children = tracking_client().search_runs(
        [tracking_client().get_experiment_by_name(mlflow_settings.mlflow.experiment).experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{first.parent_run_id}'",
    )
    assert len(children) == 2
    # every trial reported validation nDCG while fitting (what the pruner reads)
    assert all("intermediate" in child.data.metrics for child in children)
    # trials are scored on the ranker's validation users, never on the test period
    assert {child.data.tags["tradewind.tuned_on"] for child in children} == {"validation"}
    validation = [child.data.metrics["validation_score"] for child in children]
    assert first.best_value == pytest.approx(max(validation))
    again = tune(mlflow_settings, FAMILY, 1, config)
    assert again.trials_total == 3


def test_historical_features_can_keep_some_views_of_the_service(tiny_marketplace: Settings) -> None:
    from datetime import UTC, datetime

    from features.store import historical_features

    users = read_table(tiny_marketplace.contract_dir, "users")["user_id"].head(3).to_list()
    rows = pl.DataFrame({"user_id": users, "event_timestamp": [datetime(2026, 10, 1, tzinfo=UTC)] * 3})
    frame = historical_features(tiny_marketplace, rows, "recommender", views=["user_activity"])
    features = [name for name in frame.columns if "__" in name]
    assert features and all(name.startswith("user_activity__") for name in features)
    assert frame["user_id"].to_list() == users
    with pytest.raises(ValueError, match="no feature view 'campaign_stats'"):
        historical_features(tiny_marketplace, rows, "recommender", views=["campaign_stats"])


def test_benchmark_names_a_missing_column_of_an_interactions_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.recommender import main

    path = tmp_path / "events.csv"
    pl.DataFrame({"u": [1, 2], "i": [3, 4], "ts": [5, 6]}).write_csv(path)
    assert main(["--dataset", str(path), "--user-col", "u", "--item-col", "i", "--time-col", "when"]) == 2
    error = capsys.readouterr().err
    assert "no column 'when' (--time-col)" in error and str(path) in error
    assert main(["--dataset", str(tmp_path / "missing.csv")]) == 2
    assert "neither a known data set" in capsys.readouterr().err


def test_evaluation_ranks_what_serving_answers(
    trained: tuple[Settings, TrainResult], served: ServedRecommender
) -> None:
    """The evaluation's ranked list of a holdout user (the served model wound back to the start of
    the test period, ranked in batches) is the served answer's item list for the same k, and the
    evaluation's nDCG@k is that of the served answers. Answers back-fill to k items."""
    from models.recommendation.rules import ServingRules
    from models.recommendation.served import BACKFILL_REASON
    from training.evaluation.ranking import ranking_metrics, recommend_in_batches, relevant_items
    from training.recommender.evaluate import BatchRecommender
    from training.recommender.gate import as_of_holdout, served_rankings

    settings, result = trained
    config = small_config()
    data = FAMILY.training_set(settings, config).data
    k, depth = config.evaluation.k, config.evaluation.curve_max_k
    bought = data.purchases(before=data.test_start)
    relevant = relevant_items(bought, data.purchases(start=data.test_start))
    holdout_users = np.flatnonzero(np.diff(relevant.indptr) > 0)
    users = holdout_users[:: max(1, len(holdout_users) // 40)]
    # the served two-tower user vectors would know the test period (see as_of_holdout): off here
    assert "two_tower" not in served.stack.names
    rewound = as_of_holdout(served, data)
    evaluated = recommend_in_batches(BatchRecommender(rewound, data.user_market), users, depth, bought.matrix)
    answered, _, unserved = served_rankings(rewound, data, users, k)
    assert unserved == 0
    np.testing.assert_array_equal(evaluated[:, :k], answered)
    # the figure the run logged is the served answers' nDCG over every holdout user
    all_answered, _, _ = served_rankings(rewound, data, holdout_users, k)
    served_ndcg = ranking_metrics(all_answered, relevant[holdout_users], k)["ndcg"]
    assert result.evaluation.primary == pytest.approx(served_ndcg, abs=1e-12)

    # k items whenever the market lists k the user has not bought: the ranked candidates, then
    # the back-fill, which says so in its reasons
    allowed = data.listed[data.user_market[users]] & ~bought.binary()[users].toarray().astype(bool)
    filled = (answered != -1).sum(axis=1)
    np.testing.assert_array_equal(filled, np.minimum(allowed.sum(axis=1), k))
    user = int(users[0])
    few = copy.copy(rewound)
    few.per_retriever = 2  # few candidates, so most of the catalogue comes from the back-fill
    request = {
        "user_id": str(data.user_ids[user]),
        "market": data.markets[int(data.user_market[user])],
        "k": len(data.item_ids),
        "exclude": [],
        "explain": True,
    }
    everything = few.answer(request)
    assert len(everything["items"]) == allowed[0].sum()
    assert [entry["score"] for entry in everything["items"]] == sorted(
        (entry["score"] for entry in everything["items"]), reverse=True
    )
    kinds = [entry["reasons"][0]["feature"] == BACKFILL_REASON for entry in everything["items"]]
    assert not kinds[0] and kinds[-1] and kinds == sorted(kinds), "back-fill follows every candidate"

    # with a category cap the two paths still agree, and the cap holds
    capped = copy.copy(rewound)
    capped.rules = ServingRules(rewound.rules.item_markets, rewound.item_category, max_per_category=2)
    capped_evaluated = recommend_in_batches(BatchRecommender(capped, data.user_market), users, depth, None)
    capped_answered, _, _ = served_rankings(capped, data, users, k)
    np.testing.assert_array_equal(capped_evaluated[:, :k], capped_answered)
    for row in capped_answered:
        categories = data.item_category[row[row != -1]]
        assert np.bincount(categories).max() <= 2


def test_a_user_scores_the_same_bits_alone_and_in_a_batch(
    trained: tuple[Settings, TrainResult], served: ServedRecommender
) -> None:
    """Serving scores one user, evaluation a batch: the scores must be equal to the bit (not close),
    or near-tied items swap places on a machine whose math library sums in another order. Also on
    purpose with two-tower vectors, which the tiny config leaves off."""
    users = np.flatnonzero(np.diff(served.history.indptr) > 0)[:25]
    markets = np.array([served.market_index[served.markets[0]]] * len(users))
    batch = served.score_users(users, markets).scores
    for row, user in enumerate(users.tolist()):
        alone = served.score_users(np.array([user]), markets[row : row + 1]).scores[0]
        assert np.array_equal(alone, batch[row])
    stack = served.stack
    rng = np.random.default_rng(0)
    towers = copy.copy(stack)
    towers.names = [*stack.names[:-1], "two_tower"]
    towers.tower_users = rng.normal(size=(served.history.shape[0], 16)).astype(np.float32)
    towers.tower_items = rng.normal(size=(served.history.shape[1], 16)).astype(np.float32)
    history = served.history[users]
    together = towers.scores(users, history, markets)
    for row, user in enumerate(users.tolist()):
        alone = towers.scores(np.array([user]), history[row], markets[row : row + 1])
        for batch_scores, one_scores in zip(together, alone, strict=True):
            assert np.array_equal(one_scores[0], batch_scores[row])
