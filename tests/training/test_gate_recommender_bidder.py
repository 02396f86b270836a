"""The retraining gate's holdout comparison for the recommender and the bidder (`compare_on_holdout`),
on a tiny world of its own whose last days wait in raw/ as daily partitions. Every model is trained
with the shared flow into an MLflow store of this module's own and loaded back from the registry as
serving holds it; a good model must outscore a deliberately crippled one, a model must tie with
itself, and one end-to-end retrain of the recommender (on a copy of the world) promotes a better
challenger and refuses a worse one."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from marketplace_worlds import build_world
from tiny_configs import TINY_BIDDER, tiny_recommender_config

from configs import validate_config
from configs.settings import MlflowSettings, Settings
from tracking.registry import CHAMPION, load_served_model, version_for_alias
from tracking.runs import configure_tracking, tracking_client
from training.bidder.config import BidderConfig
from training.bidder.family import FAMILY as BIDDER_FAMILY
from training.evaluation.ranking import relevant_items
from training.pipeline import TrainingSet, TrainResult, train
from training.recommender.config import RecommenderConfig
from training.recommender.family import FAMILY as RECOMMENDER_FAMILY
from training.recommender.gate import as_of_holdout, served_rankings
from training.retrain import DECISION_TAG, retrain

HELD_DAYS = 2
# the recommender's ranker learned nothing (one tree that may not split: every candidate ties) and
# the whole catalogue is its candidates, so its answers come in catalogue order. (Fewer candidates
# would not cripple it: answers back-fill to k items in EASE order, a strong order on a tiny world.)
CRIPPLED_RECOMMENDER = {"n_estimators": 1, "candidates_per_retriever": 100_000, "min_child_samples": 10**9}
# one DQN episode over lambda factors of e^-5 .. e^5, and a one-tree click model
CRIPPLED_BIDDER = {"episodes": 1, "lambda_range": 5.0, "click_n_estimators": 1}


def small_recommender_config() -> RecommenderConfig:
    """The tiny config, one thread, no two-tower, no oracle."""
    return tiny_recommender_config(
        retrieval={"two_tower": {"enabled": False}}, evaluation={"oracle": False}, threads=1
    )


@dataclass
class Trained:
    settings: Settings
    config: Any
    training_set: TrainingSet
    good: TrainResult
    crippled: TrainResult

    def load(self, result: TrainResult) -> Any:
        """The model as serving holds it, loaded back from the registry."""
        assert result.version is not None
        configure_tracking(self.settings)
        return load_served_model(result.version.uri)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A fresh tiny marketplace (the session's one stays untouched) with its last HELD_DAYS days held
    back as raw partitions, and an empty MLflow store of its own."""
    root = tmp_path_factory.mktemp("gate-world")
    settings = Settings(
        data_dir=root / "data", mlflow=MlflowSettings(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    )
    build_world(settings, hold_back_days=HELD_DAYS)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield settings


@pytest.fixture(scope="module")
def recommenders(world: Settings) -> Trained:
    """The crippled recommender registered first (the champion), then a good one (a challenger)."""
    config = small_recommender_config()
    training_set = RECOMMENDER_FAMILY.training_set(world, config)
    crippled = train(
        world, RECOMMENDER_FAMILY, config, params=CRIPPLED_RECOMMENDER, training_set=training_set
    )
    good = train(world, RECOMMENDER_FAMILY, config, training_set=training_set)
    assert crippled.aliases == (CHAMPION,) and good.aliases != (CHAMPION,)
    return Trained(world, config, training_set, good, crippled)


@pytest.fixture(scope="module")
def bidders(world: Settings) -> Trained:
    import torch

    torch.set_num_threads(1)
    config = validate_config(TINY_BIDDER, BidderConfig, "gate test bidder config")
    training_set = BIDDER_FAMILY.training_set(world, config)
    crippled = train(world, BIDDER_FAMILY, config, params=CRIPPLED_BIDDER, training_set=training_set)
    good = train(world, BIDDER_FAMILY, config, training_set=training_set)
    return Trained(world, config, training_set, good, crippled)


# ---------------------------------------------------------------------------------------------
# recommender


def test_recommender_comparison_ranks_the_good_model_first(recommenders: Trained) -> None:
    family, trained = RECOMMENDER_FAMILY, recommenders
    crippled, good = trained.load(trained.crippled), trained.load(trained.good)
    comparison = family.compare_on_holdout(
        crippled, good, trained.good.params, trained.training_set, trained.config
    )
    assert comparison.metric == "ndcg@10" and comparison.higher_is_better
    assert comparison.challenger > 1.2 * comparison.champion > 0, comparison
    assert comparison.improvement() > 0.2
    # the served path on the test period, each model knowing only what came before it, is the
    # holdout the family's own evaluation scored: the good model's nDCG is the evaluation's
    assert comparison.challenger == pytest.approx(trained.good.evaluation.primary, abs=1e-9)
    details = comparison.details
    assert details["recall_at_10.challenger"] > details["recall_at_10.champion"]
    assert 0 < details["hitrate_at_10.champion"] <= details["hitrate_at_10.challenger"] <= 1
    data = trained.training_set.data
    relevant = relevant_items(data.purchases(before=data.test_start), data.purchases(start=data.test_start))
    assert details["users"] == (np.diff(relevant.indptr) > 0).sum() > 0
    assert details["purchases"] == relevant.nnz
    assert f"{data.test_start:%Y-%m-%d}" in comparison.holdout
    assert f"{int(details['users'])} users" in comparison.holdout

    # the roles do not matter: swapped, the same two numbers
    swapped = family.compare_on_holdout(good, crippled, {}, trained.training_set, trained.config)
    assert (swapped.champion, swapped.challenger) == (comparison.challenger, comparison.champion)


def test_recommender_compared_with_itself_ties(recommenders: Trained) -> None:
    trained = recommenders
    first, second = trained.load(trained.good), trained.load(trained.good)
    comparison = RECOMMENDER_FAMILY.compare_on_holdout(
        first, second, trained.good.params, trained.training_set, trained.config
    )
    assert comparison.champion == comparison.challenger > 0
    assert comparison.improvement() == 0.0


def test_recommender_is_rewound_to_the_start_of_the_holdout(recommenders: Trained) -> None:
    """The served model holds every purchase up to its training end, the test period's included; the
    comparison's copy knows only those before it, and the loaded model is left as it was."""
    trained = recommenders
    model = trained.load(trained.good)
    data = trained.training_set.data
    relevant = relevant_items(data.purchases(before=data.test_start), data.purchases(start=data.test_start))
    users = np.flatnonzero(np.diff(relevant.indptr) > 0)
    held_purchases = model.bought.nnz
    rewound = as_of_holdout(model, data)
    assert model.bought.multiply(relevant).nnz == relevant.nnz, "served: the holdout counts as bought"
    assert rewound.bought.multiply(relevant).nnz == 0
    assert model.bought.nnz == held_purchases and rewound.bought.nnz < held_purchases
    as_served, _, _ = served_rankings(model, data, users, 10)
    rewound_ranking, cold_start, unserved = served_rankings(rewound, data, users, 10)
    assert _hits(as_served, users, relevant) == 0 < _hits(rewound_ranking, users, relevant)
    assert unserved == 0 and 0 <= cold_start < len(users)


def test_recommender_users_a_champion_does_not_know_get_its_cold_start_answer(recommenders: Trained) -> None:
    trained = recommenders
    good = trained.load(trained.good)
    forgetful = copy.copy(good)  # knows every other user only, as an older champion might
    forgetful.user_index = {user: i for user, i in good.user_index.items() if i % 2 == 0}
    comparison = RECOMMENDER_FAMILY.compare_on_holdout(
        forgetful, good, {}, trained.training_set, trained.config
    )
    details = comparison.details
    assert details["cold_start_users.champion"] > details["cold_start_users.challenger"]
    assert 0 < comparison.champion < comparison.challenger


def _hits(ranking: np.ndarray, users: np.ndarray, relevant: Any) -> int:
    return sum(
        int(relevant[user, item] > 0)
        for user, row in zip(users.tolist(), ranking.tolist(), strict=True)
        for item in row
        if item >= 0
    )


# ---------------------------------------------------------------------------------------------
# bidder


def test_bidder_comparison_ranks_the_good_policy_first(bidders: Trained) -> None:
    family, trained = BIDDER_FAMILY, bidders
    crippled, good = trained.load(trained.crippled), trained.load(trained.good)
    comparison = family.compare_on_holdout(crippled, good, {}, trained.training_set, trained.config)
    assert comparison.metric == "pct_of_optimum" and comparison.higher_is_better
    assert comparison.challenger > comparison.champion + 10, comparison
    # each bids with its own click model and is credited with the true clicks: its own
    # evaluation's figure (the DQN policy at the same budgets against the same optimum)
    assert comparison.champion == pytest.approx(trained.crippled.evaluation.primary, abs=1e-9)
    assert comparison.challenger == pytest.approx(trained.good.evaluation.primary, abs=1e-9)
    details = comparison.details
    fractions = ("f1_2", "f1_4", "f1_8", "f1_16")
    for fraction in fractions:
        for role in ("champion", "challenger"):
            assert details[f"spend_over_budget.{fraction}.{role}"] <= 1 + 1e-9
    # the good policy spends its budget, so each halving of the budget buys fewer clicks
    clicks = [details[f"clicks.{fraction}.challenger"] for fraction in fractions]
    assert clicks == sorted(clicks, reverse=True) and clicks[-1] > 0 and len(set(clicks)) == 4, clicks
    assert details["days"] >= 1 and f"{int(details['days'])} held-out campaign-days" in comparison.holdout
    assert "true click probability" in comparison.holdout

    # the click model matters: the crippled policy with the good click model scores otherwise
    hybrid = copy.copy(crippled)
    hybrid.click_model = good.click_model
    mixed = family.compare_on_holdout(hybrid, good, {}, trained.training_set, trained.config)
    assert mixed.challenger == comparison.challenger
    assert mixed.champion != pytest.approx(comparison.champion, abs=1e-6)


def test_bidder_compared_with_itself_ties(bidders: Trained) -> None:
    trained = bidders
    first, second = trained.load(trained.good), trained.load(trained.good)
    comparison = BIDDER_FAMILY.compare_on_holdout(first, second, {}, trained.training_set, trained.config)
    assert comparison.champion == comparison.challenger > 0
    assert comparison.improvement() == 0.0


# ---------------------------------------------------------------------------------------------
# end to end, on a copy of the module's world and registry


@pytest.fixture
def retrain_world(recommenders: Trained, tmp_path: Path) -> Settings:
    """The module's data folder and MLflow store copied (the crippled recommender the champion): the
    retrain ingests the held partitions and moves the alias in the copy, never in the module's world.
    (New runs' artifacts still land in the experiment's artifact folder, which the store names.)"""
    from features.store import apply_definitions

    world = recommenders.settings
    shutil.copytree(world.root, tmp_path / "data")
    shutil.copy(world.mlflow_tracking_uri.removeprefix("sqlite:///"), tmp_path / "mlflow.db")
    settings = Settings(
        data_dir=tmp_path / "data", mlflow=MlflowSettings(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    )
    apply_definitions(settings)  # the copied Feast registry's views read the copy's feature tables
    return settings


def test_recommender_retrain_promotes_the_better_and_refuses_the_worse(
    recommenders: Trained, retrain_world: Settings
) -> None:
    family, settings, config = RECOMMENDER_FAMILY, retrain_world, recommenders.config
    crippled_version = recommenders.crippled.version
    assert crippled_version is not None
    configure_tracking(settings)
    assert version_for_alias(family.registered_model, CHAMPION).version == crippled_version.version

    better = retrain(settings, family, config=config)
    assert better.decision == "promoted", better.reasons
    assert better.metric == "ndcg@10" and better.challenger_score > better.champion_score
    assert better.champion_version == better.challenger_version != crippled_version.version
    assert version_for_alias(family.registered_model, CHAMPION).version == better.challenger_version
    assert (settings.contract_dir / "events" / f"{better.partition}.parquet").exists()

    worse = retrain(settings, family, config=config, params=CRIPPLED_RECOMMENDER)
    assert worse.partition != better.partition
    assert worse.decision == "refused", worse.reasons
    assert worse.challenger_score < worse.champion_score
    assert version_for_alias(family.registered_model, CHAMPION).version == better.challenger_version

    client = tracking_client()
    tag = client.get_model_version(family.registered_model, str(worse.challenger_version)).tags
    assert tag["tradewind.gate"] == "refused"
    for result, decision in ((better, "promoted"), (worse, "refused")):
        parent = client.get_run(result.run_id)
        assert parent.data.tags[DECISION_TAG] == decision
        metrics = parent.data.metrics
        assert metrics["gate.champion"] == pytest.approx(result.champion_score)
        assert metrics["gate.challenger"] == pytest.approx(result.challenger_score)
        assert {"gate.recall_at_10.champion", "gate.recall_at_10.challenger", "gate.users"} <= set(metrics)
        assert "gate.json" in [artifact.path for artifact in client.list_artifacts(result.run_id)]
        gate = json.loads(Path(client.download_artifacts(result.run_id, "gate.json")).read_text())
        assert gate["comparison"]["metric"] == "ndcg@10"
        assert gate["comparison"]["challenger"] == pytest.approx(result.challenger_score)
