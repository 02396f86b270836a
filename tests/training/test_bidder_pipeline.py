"""The bidding family end to end on the tiny marketplace: train -> evaluate -> register -> load and answer."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from tiny_configs import TINY_BIDDER

from configs import validate_config
from configs.settings import Settings
from models.bidding.served import ServedBidder
from tracking.pyfunc import ServedPyfunc
from tracking.registry import CHAMPION, alias_uri, load_by_alias, load_served_model
from tracking.runs import configure_tracking, tracking_client
from training.bidder.config import BidderConfig
from training.bidder.family import FAMILY
from training.pipeline import TrainResult, train, tune


def tiny_config() -> BidderConfig:
    return validate_config(TINY_BIDDER, BidderConfig, "tiny bidder config")


@pytest.fixture(scope="module")
def trained(
    tiny_marketplace: Settings, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, TrainResult]:
    """One training run with an MLflow store of the module's own (the registry starts empty)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('bidder-mlflow') / 'mlflow.db'}"
    settings = tiny_marketplace.model_copy(
        update={"mlflow": tiny_marketplace.mlflow.model_copy(update={"tracking_uri": uri})}
    )
    return settings, train(settings, FAMILY, tiny_config())


@pytest.fixture(scope="module")
def served(trained: tuple[Settings, TrainResult]) -> ServedBidder:
    settings, _ = trained
    configure_tracking(settings)
    model = load_served_model(alias_uri(FAMILY.registered_model, CHAMPION))
    assert isinstance(model, ServedBidder)
    return model


def test_train_registers_a_champion_with_finite_metrics(trained: tuple[Settings, TrainResult]) -> None:
    _, result = trained
    assert result.version is not None and result.version.name == "tradewind-bidder"
    assert result.aliases == (CHAMPION,)
    evaluation = result.evaluation
    assert evaluation.primary_metric == "mean_pct_of_optimum.dqn"
    flat = _flat(evaluation.metrics)
    assert all(math.isfinite(value) for value in flat.values())
    fractions = ("f1_2", "f1_4", "f1_8", "f1_16")  # configs/bidder.yaml's budget fractions
    for policy in ("constant", "linear", "fixed_lambda", "pid", "dqn", "hindsight_optimum"):
        # the headline is the mean over the budget levels of the percentage of the LP bound
        assert flat[f"mean_pct_of_optimum.{policy}"] == pytest.approx(
            np.mean([flat[f"pct_of_optimum.{fraction}.{policy}"] for fraction in fractions])
        )
    assert evaluation.primary == flat["mean_pct_of_optimum.dqn"]
    # the integral hindsight solution sits at the LP bound (within rounding of whole requests) and
    # above every policy, which bid without knowing the day
    optimum = flat["mean_pct_of_optimum.hindsight_optimum"]
    assert optimum == pytest.approx(100.0, abs=1.0)
    for policy in ("constant", "linear", "fixed_lambda", "pid", "dqn"):
        assert flat[f"mean_pct_of_optimum.{policy}"] < optimum, policy
    # ECE is at least the gap between the mean prediction and the observed rate (one bin's worth)
    gap = abs(flat["click_model.mean_prediction"] - flat["click_model.observed_rate"])
    assert flat["click_model.ece"] >= gap - 1e-12
    # the simulator's true click probability predicts the held-out clicks better than the model
    assert flat["true_click_model.log_loss"] < flat["click_model.log_loss"]
    # AUC is defined only with both clicked and unclicked held-out impressions
    assert ("click_model.auc" in flat) is (0 < flat["click_model.observed_rate"] < 1)
    # no policy spends more than its budget on any budget level
    assert all(value <= 1.0 + 1e-9 for key, value in flat.items() if key.startswith("spend_over_budget."))
    assert {"pacing_f1_8", "dqn_learning_curve"} <= set(evaluation.figures)


BASELINE_POLICIES = ("constant", "linear", "fixed_lambda", "pid")


@pytest.mark.xfail(
    strict=True,
    reason="target missed (#15): on the tiny world the DQN bidder reaches less of the hindsight optimum "
    "than its strongest baseline (measured 80.3% vs fixed lambda 87.9%, mean over the budget levels); "
    "strict, so the day it passes the suite goes red until this mark is removed",
)
def test_the_trained_bidder_beats_its_strongest_baseline(trained: tuple[Settings, TrainResult]) -> None:
    """On the simulator's world, where the hindsight optimum of each held-out day is known."""
    flat = _flat(trained[1].evaluation.metrics)
    baselines = {policy: flat[f"mean_pct_of_optimum.{policy}"] for policy in BASELINE_POLICIES}
    strongest = max(baselines, key=baselines.__getitem__)
    assert flat["mean_pct_of_optimum.dqn"] > baselines[strongest], (strongest, baselines)


def test_loaded_model_answers_its_smoke_request(served: ServedBidder) -> None:
    answer = served.answer(served.smoke_request())
    assert set(answer) == {"bid", "pctr", "lambda"}
    assert 0 < answer["pctr"] < 1 and answer["lambda"] > 0 and answer["bid"] > 0
    state = served.smoke_request()["state"]
    assert answer["bid"] <= state["budget"] - state["spent"]
    # the bid is pCTR / lambda when the guard does not bind
    assert answer["bid"] == pytest.approx(answer["pctr"] / answer["lambda"])
    # MLflow's generic path gives the same answer as the fast path
    frame = load_by_alias(FAMILY.registered_model, CHAMPION).predict(ServedPyfunc(served).input_example())
    assert frame.iloc[0]["bid"] == pytest.approx(answer["bid"])
    assert served.online_entities(served.smoke_request()) == [
        {"campaign_id": served.smoke_request()["campaign_id"], "market_id": served.describe()["markets"][0]}
    ]


def test_never_bids_above_the_remaining_budget(served: ServedBidder) -> None:
    rng = np.random.default_rng(0)
    base = served.smoke_request()
    exchanges = [*served.scorer.codes["exchange"], "unseen-exchange"]
    for _ in range(500):
        budget = float(rng.choice([0.0, 1e-6, 1e-3, 0.1, 10.0, 1e4]) * rng.uniform(0.5, 2))
        spent = float(budget * rng.choice([0.0, rng.uniform(0, 1), 1.0, 1.5]))
        request = {
            "campaign_id": base["campaign_id"],
            "state": {
                "budget": budget,
                "spent": spent,
                "time_fraction": float(rng.uniform(0, 1)),
                "recent_win_rate": float(rng.uniform(0, 1)),
                "recent_cpc": float(rng.uniform(0, 5)),
                "recent_ctr": float(rng.uniform(0, 0.1)),
            },
            "request": {
                **base["request"],
                "hour": int(rng.integers(0, 24)),
                "exchange": str(rng.choice(exchanges)),
                "floor_price": float(rng.exponential(2.0)),
                "known_user": bool(rng.random() < 0.5),
            },
        }
        answer = served.answer(request)
        assert 0.0 <= answer["bid"] <= max(budget - spent, 0.0)
        assert answer["lambda"] > 0 and 0 < answer["pctr"] <= 1
        if spent >= budget:
            assert answer["bid"] == 0.0


def test_bids_nothing_once_the_budget_is_spent(served: ServedBidder) -> None:
    request = served.smoke_request()
    request["state"]["spent"] = request["state"]["budget"]
    assert served.answer(request)["bid"] == 0.0


@pytest.mark.parametrize(
    ("where", "field", "value", "named"),
    [
        ("state", "budget", -1.0, "state.budget"),
        ("state", "spent", "lots", "state.spent"),
        ("state", "time_fraction", 1.5, "state.time_fraction"),
        ("request", "hour", 24, "request.hour"),
        ("request", "floor_price", None, "request.floor_price"),
        ("request", "exchange", 7, "request.exchange"),
        (None, "campaign_id", "no-such-campaign", "campaign_id"),
    ],
)
def test_a_bad_field_is_named(
    served: ServedBidder, where: str | None, field: str, value: object, named: str
) -> None:
    request = served.smoke_request()
    target = request if where is None else request[where]
    target[field] = value
    with pytest.raises(ValueError, match="^" + re.escape(named) + ":"):
        served.answer(request)


def test_two_trial_tune_resumes(mlflow_settings: Settings) -> None:
    config = tiny_config()
    first = tune(mlflow_settings, FAMILY, 1, config)
    second = tune(mlflow_settings, FAMILY, 1, config)
    assert (first.trials_total, second.trials_total) == (1, 2)  # the second run continued the study
    assert math.isfinite(second.best_value)
    # trials are scored on validation episodes from the training days, not on the held-out days
    client = tracking_client()
    parent = client.get_run(second.parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{second.parent_run_id}'"
    )
    assert [child.data.tags["tradewind.tuned_on"] for child in children] == ["validation"]
    # the study's best is the better of the two trials' validation scores (maximised)
    assert second.best_value == pytest.approx(
        max(first.best_value, children[0].data.metrics["validation_score"])
    )


def _flat(metrics: dict, prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = float(value)
    return flat


def test_served_lambda_is_the_evaluated_dqn_policys_lambda(served: ServedBidder) -> None:
    """What serving answers from the state it keeps is what the evaluation replayed step by step."""
    from dataclasses import replace

    from models.bidding.dqn import DQNBidPolicy, DQNConfig
    from models.bidding.policy import StepStats

    campaign = next(iter(served.campaigns.values()))
    agent = DQNConfig(
        n_steps=served.n_steps,
        lambda_factors=served.lambda_factors,
        action_mode="absolute",
        pacing_gain=served.pacing_gain,
    )
    rng = np.random.default_rng(1)
    for fraction in (0.5, 0.125, 1 / 16):
        budget = fraction * campaign.reference_spend  # in the prior's currency
        policy = DQNBidPolicy(served.actor_weights, campaign.prior(fraction), agent)
        start = policy.start(budget)
        for step in rng.integers(0, served.n_steps, 8):
            spent = float(rng.uniform(0, budget))
            wins = int(rng.integers(0, 11))
            state = replace(start, step=int(step), spent=spent, last_step=StepStats(requests=10, wins=wins))
            expected = policy.decide(state).bid_lambda
            local_budget = budget / campaign.to_target
            served_lambda = served.lambda_for(
                campaign,
                local_budget,
                spent / campaign.to_target,
                (int(step) + 0.5) / served.n_steps,
                wins / 10,
            )
            assert served_lambda / campaign.to_target == pytest.approx(expected, rel=1e-9)


def test_vectorised_level_tuning_equals_one_level_at_a_time() -> None:
    import datetime as dt

    from models.bidding.auction import AuctionType
    from models.bidding.baselines import static_bid_value, static_bid_values
    from models.bidding.days import AuctionDay, budget_for

    rng = np.random.default_rng(0)
    for _ in range(40):
        n = int(rng.integers(1, 300))
        pctr = rng.beta(1, 100, n)
        day = AuctionDay(
            date=dt.date(2026, 1, 1),
            time_of_day=np.sort(rng.random(n)),
            market_price=rng.lognormal(0, 1, n) * (rng.random(n) > 0.1),
            floor_price=rng.lognormal(-1, 1, n) * (rng.random(n) < 0.3),
            pctr=pctr,
            value=np.ones(n),
            click_prob=pctr,
        )
        bids = np.stack([day.bid_value / day.bid_value.mean() * level for level in rng.lognormal(0, 1.5, 12)])
        bids[0, :3] = np.nan
        for auction_type in AuctionType:
            for budget in (budget_for(day, 1.0), budget_for(day, 0.05), 0.0):
                one_by_one = [static_bid_value(day, row, budget, auction_type)[0] for row in bids]
                assert static_bid_values(day, bids, budget, auction_type) == pytest.approx(one_by_one)
