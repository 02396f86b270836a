"""Evaluating the bidder: every bidder on the held-out days against the hindsight optimum.

training.evaluation.bidding on the held-out days at 1/2 .. 1/16 of each day's unconstrained spend,
the DQN against constant, linear, best fixed lambda and PID bidders tuned per campaign on its
training days, and the hindsight optimum. Won impressions are credited with the simulator's true
click probability when its ground truth is in the data folder (evaluation only, never a feature),
else with the pCTR. Primary metric: the DQN's mean % of the hindsight optimum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from models.bidding.auction import AuctionType
from models.bidding.served import ServedBidder
from training.bidder.config import BidderConfig
from training.bidder.data import BiddingData, CampaignDays, bidder_rows, campaign_days
from training.pipeline import Evaluation, TrainedModel, TrainingSet

if TYPE_CHECKING:
    from training.evaluation.bidding import BiddingEvaluation

DQN_POLICY = "dqn"
# the budget levels the DQN's uplift over linear bidding is reported at
TIGHTEST_FRACTIONS = (1 / 8, 1 / 16)


def policy_factories(
    model: ServedBidder,
    days: Mapping[str, CampaignDays],
    auction_type: AuctionType,
    grid_size: int = 60,
) -> dict[str, Any]:
    """Each bidder per (budget fraction, campaign), tuned on that campaign's training days."""
    from models.bidding.baselines import (
        ConstantBid,
        FixedLambda,
        LinearBid,
        PIDPacing,
        reference_bid_value,
        tune_constant_bid,
        tune_linear_base_bid,
    )
    from models.bidding.dqn import DQNBidPolicy, DQNConfig

    n_steps = model.n_steps
    agent = DQNConfig(
        n_steps=n_steps,
        lambda_factors=model.lambda_factors,
        action_mode="absolute",
        pacing_gain=model.pacing_gain,
    )

    def prior(fraction: float, campaign: str) -> float:
        return model.campaigns[campaign].prior(fraction)

    return {
        "constant": lambda f, c: ConstantBid(
            tune_constant_bid(days[c].train, f, auction_type, grid_size), n_steps
        ),
        "linear": lambda f, c: LinearBid(
            tune_linear_base_bid(days[c].train, f, auction_type, grid_size),
            reference_bid_value(days[c].train),
            n_steps,
        ),
        "fixed_lambda": lambda f, c: FixedLambda(prior(f, c), n_steps),
        "pid": lambda f, c: PIDPacing(prior(f, c), n_steps=n_steps),
        DQN_POLICY: lambda f, c: (
            DQNBidPolicy(model.actor_weights, prior(f, c), agent)  # type: ignore[arg-type]
            if c in model.campaigns
            else ConstantBid(0.0, n_steps)  # serving refuses a campaign the model does not know
        ),
    }


def evaluate_policies(
    model: ServedBidder,
    data: BiddingData,
    config: BidderConfig,
    source: str = "synthetic",
    *,
    policies: Sequence[str] | None = None,
    test_credit: np.ndarray | None = None,
) -> BiddingEvaluation:
    """Every bidder (or only `policies`) on the held-out days of every campaign
    (training.evaluation.bidding), bidding with the model's own pCTR; `test_credit` replaces what
    won test impressions are credited with (see `campaign_days`)."""
    from training.evaluation.bidding import evaluate_bidding

    days = campaign_days(data, model.click_model.predict(bidder_rows(data)), test_credit)
    test_days, groups = [], []
    for campaign_id in sorted(days):
        for day in days[campaign_id].test:
            test_days.append(day)
            groups.append(campaign_id)
    factories = policy_factories(
        model, days, config.evaluation.auction_type, config.evaluation.tuning_grid_size
    )
    if policies is not None:
        factories = {name: factories[name] for name in policies}
    return evaluate_bidding(
        source,
        test_days,
        factories,
        budget_fractions=config.evaluation.budget_fractions,
        auction_type=config.evaluation.auction_type,
        day_groups=groups,
        replay=config.evaluation.replay,
    )


def click_metrics(model: ServedBidder, data: BiddingData) -> dict[str, dict[str, float]]:
    """AUC, log loss and ECE of the click model on the held-out days' won impressions (clicks exist
    only for them), and of the simulator's true click probability on the same impressions when known."""
    from training.evaluation.bidding import click_model_metrics

    held_out = data.requests.filter((pl.col("role") == "test") & pl.col("won"))
    labels = held_out["click"].to_numpy()
    metrics = {"click_model": _finite(click_model_metrics(labels, model.click_model.predict(held_out)))}
    if data.credit_source == "truth" and held_out["credit"].null_count() == 0:
        metrics["true_click_model"] = _finite(click_model_metrics(labels, held_out["credit"].to_numpy()))
    return metrics


def evaluate(trained: TrainedModel, training_set: TrainingSet, config: BidderConfig) -> Evaluation:
    from training.evaluation.bidding import learning_curve_figure, pacing_figure

    model: ServedBidder = trained.python_model.served  # type: ignore[attr-defined]
    data: BiddingData = training_set.data
    evaluation = evaluate_policies(model, data, config)
    metrics: dict[str, Any] = {
        key: value for key, value in evaluation.metrics().items() if math.isfinite(value)
    }
    metrics.update(click_metrics(model, data))
    for fraction in TIGHTEST_FRACTIONS:
        if fraction in evaluation.budget_fractions():
            uplift = evaluation.uplift_pct(DQN_POLICY, "linear", fraction)
            if math.isfinite(uplift):
                metrics[f"dqn_uplift_over_linear_pct.f1_{round(1 / fraction)}"] = uplift
    pacing_fraction = config.evaluation.pacing_budget_fraction
    if pacing_fraction not in evaluation.budget_fractions():
        pacing_fraction = evaluation.budget_fractions()[-1]
    busiest = int(np.argmax([run.requests for run in evaluation.runs[(pacing_fraction, DQN_POLICY)]]))
    figures = {
        f"pacing_f1_{round(1 / pacing_fraction)}": pacing_figure(
            evaluation, pacing_fraction, day_index=busiest
        ),
        "dqn_learning_curve": learning_curve_figure(model.curve),
    }
    table = pl.DataFrame([row.as_dict() for row in evaluation.rows])
    return Evaluation(
        metrics=metrics,
        primary_metric=f"mean_pct_of_optimum.{DQN_POLICY}",
        higher_is_better=True,
        figures=figures,
        tables={"bidding_evaluation": table},
    )


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    """The metrics that are defined: AUC is not when the held-out impressions hold no click."""
    return {name: value for name, value in metrics.items() if math.isfinite(value)}
