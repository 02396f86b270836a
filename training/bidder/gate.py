"""The bidder's retraining gate: the champion's and a challenger's DQN policies, each with its own
click model, replayed on the same held-out days and credited with the same clicks, scored as % of
the hindsight optimum."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from models.bidding.served import ServedBidder
from training.bidder.config import BidderConfig
from training.bidder.data import BiddingData, bidder_rows
from training.bidder.evaluate import DQN_POLICY, evaluate_policies
from training.pipeline import HoldoutComparison, TrainingSet


def compare_on_holdout(
    champion: ServedBidder,
    challenger: ServedBidder,
    challenger_params: Mapping[str, Any],
    training_set: TrainingSet,
    config: BidderConfig,
) -> HoldoutComparison:
    """The serving champion and a challenger, as loaded from the registry (the plain served models),
    on the held-out days of the challenger's `training_set`.

    Each model's DQN policy bids with its own click model (as it would serve) through the shared
    replay on the same requests, prices and budgets (evaluation.budget_fractions of each day's
    unconstrained spend); won impressions are credited alike for both: with the simulator's true
    click probability when known, else with the mean of the two models' pCTRs (neither model's own
    estimate then decides what a click was). Score: the % of the hindsight optimum (the same optimum
    for both), averaged over the budget fractions, as `evaluate`'s primary metric. A campaign a
    model does not know gets no bids from it: serving refuses it."""
    data: BiddingData = training_set.data
    rows = bidder_rows(data)
    is_test = (rows["role"] == "test").to_numpy()
    if not is_test.any():
        raise ValueError("the bidding training set has no held-out (role 'test') requests to compare on")
    pctr = {
        "champion": champion.click_model.predict(rows),
        "challenger": challenger.click_model.predict(rows),
    }
    shared = (pctr["champion"] + pctr["challenger"]) / 2.0
    truth = rows["credit"].to_numpy().astype(np.float64)  # NaN where the truth is not known
    credit = np.where(np.isnan(truth), shared, truth)
    evaluations = {
        role: evaluate_policies(model, data, config, policies=(DQN_POLICY,), test_credit=credit)
        for role, model in (("champion", champion), ("challenger", challenger))
    }
    details: dict[str, float] = {}
    for role, evaluation in evaluations.items():
        for fraction in evaluation.budget_fractions():
            row = evaluation.row(fraction, DQN_POLICY)
            key = f"f1_{round(1 / fraction)}"
            details[f"clicks.{key}.{role}"] = row.clicks
            details[f"spend_over_budget.{key}.{role}"] = row.spend / row.budget if row.budget > 0 else 0.0
    for role, model in (("champion", champion), ("challenger", challenger)):
        details[f"unknown_campaigns.{role}"] = float(sum(c not in model.campaigns for c in data.campaigns))
    test = rows.filter(is_test)
    days = test.select("campaign_id", "local_date").unique()
    credited = (
        "true click probability"
        if not np.isnan(truth[is_test]).any()
        else "two models' mean pCTR where the truth is unknown"
    )
    fractions = ", ".join(f"1/{round(1 / fraction)}" for fraction in config.evaluation.budget_fractions)
    holdout = (
        f"{days.height} held-out campaign-days ({days['campaign_id'].n_unique()} campaigns, "
        f"{test['local_date'].min()} to {test['local_date'].max()}), {test.height} requests, budgets "
        f"{fractions} of each day's unconstrained spend, clicks credited with the {credited}"
    )
    details.update(days=float(days.height), requests=float(test.height))
    champion_score, challenger_score = (
        evaluations[role].mean_pct_of_optimum(DQN_POLICY) for role in ("champion", "challenger")
    )
    return HoldoutComparison("pct_of_optimum", True, champion_score, challenger_score, holdout, details)
