"""Fitting the bidder: the calibrated click model, each campaign's lambda prior, one DQN for all
campaigns, packaged as the served bidder.

The calibrated LightGBM click model (models.bidding.click_model) gives every request a pCTR; each
campaign gets its lambda prior (models.bidding.baselines.LambdaPrior) from its training days; the
DQN (models.bidding.dqn, pacing mode) learns on generated days from all campaigns' training days at
once, each campaign's prices divided by its median so one agent fits all. It picks lambda = the
campaign's prior lambda for the budget x a factor, from the time left, the budget left and the
recent win rate: what the server keeps per campaign (models.bidding.served).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from configs.families import BIDDER
from models.bidding.baselines import LambdaPrior
from models.bidding.click_model import ClickModel, ClickModelConfig
from models.bidding.days import AuctionDay, unconstrained_spend
from models.bidding.served import KNOWN_USER, ServedBidder, ServedCampaign
from tracking.pyfunc import ServedPyfunc
from tracking.registry import pinned_requirements
from training.bidder.config import AgentConfig, BidderConfig
from training.bidder.data import BiddingData, bidder_rows, campaign_days
from training.pipeline import Reporter, TrainedModel, TrainingSet

if TYPE_CHECKING:
    import optuna

    from models.bidding.dqn import DQNConfig

# what loading the served model imports beyond MLflow's core (models.bidding pulls torch and gymnasium
# in with the DQN's classes, though answering never calls them)
SERVED_PACKAGES = ("lightgbm", "scikit-learn", "polars", "torch", "gymnasium")


def fit(
    training_set: TrainingSet, config: BidderConfig, params: Mapping[str, Any], report: Reporter | None
) -> TrainedModel:
    """The click model, the campaigns' priors and the DQN on the training days, as a served bidder."""
    from models.bidding.dqn import train_dqn

    data: BiddingData = training_set.data
    click_model = ClickModel(
        None, click_model_config(config, params), extra_numeric=(*data.context_features, KNOWN_USER)
    )
    click_model.fit(data.requests.filter("click_train"))
    days = campaign_days(data, click_model.predict(bidder_rows(data)))
    served: dict[str, ServedCampaign] = {}
    pooled: list[AuctionDay] = []
    for campaign_id, info in data.campaigns.items():
        train_days = days[campaign_id].train
        served[campaign_id] = ServedCampaign(
            campaign_id=campaign_id,
            market_id=info.market_id,
            currency=info.currency,
            to_target=info.to_target,
            reference_spend=float(np.mean([unconstrained_spend(day) for day in train_days])),
            prior=LambdaPrior.fit(train_days),
            example_budget=info.daily_budget,
        )
        # one agent for every campaign: prices in units of the campaign's median price
        scale = price_scale(train_days)
        pooled.extend(scaled_day(day, 1 / scale) for day in train_days)
    agent_config = dqn_config(config, params)
    result = train_dqn(pooled, LambdaPrior.fit(pooled), agent_config, on_validation=report)
    weights = {name: tensor.detach().cpu().numpy().copy() for name, tensor in result.weights.items()}
    model = ServedBidder(
        click_model,
        served,
        weights,
        agent_config.lambda_factors,
        agent_config.n_steps,
        data.currency,
        result.curve,
        agent_config.pacing_gain,
        feature_service=BIDDER.feature_service,
    )
    python_model = ServedPyfunc(model)
    example = python_model.input_example()
    return TrainedModel(
        python_model=python_model,
        input_example=example,
        output_example=python_model.predict(None, example),
        extra_requirements=pinned_requirements(SERVED_PACKAGES),
        learning_curve={
            "dqn_training_return": list(result.curve.training_returns),
            "dqn_validation_return": list(result.curve.validation_returns),
        },
        # greedy return on episodes generated from the training days, never the held-out days
        validation_score=float(result.best_validation_return),
    )


def default_params(config: BidderConfig) -> dict[str, Any]:
    """Nothing beyond the config: its `dqn` and `click_model` sections are the defaults."""
    return {}


def search_space(trial: optuna.Trial, config: BidderConfig) -> dict[str, Any]:
    """DQN and pacing hyperparameters (the P controller's gain under the agent, the reach of its
    factors); the episodes stay at the config's count, and `report` hears every validation."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 2e-4, 3e-3, log=True),
        "hidden_size": trial.suggest_categorical("hidden_size", [32, 64, 128]),
        "n_step": trial.suggest_categorical("n_step", [4, 8, 16]),
        "exploration_fraction": trial.suggest_float("exploration_fraction", 0.3, 0.8),
        "updates_per_episode": trial.suggest_int("updates_per_episode", 4, 16),
        "lambda_range": trial.suggest_float("lambda_range", 0.3, 1.2),
        "pacing_gain": trial.suggest_float("pacing_gain", 0.0, 8.0),
    }


def scaled_day(day: AuctionDay, factor: float) -> AuctionDay:
    """The day with every price multiplied by `factor`: the same auctions in another money unit."""
    return replace(day, market_price=day.market_price * factor, floor_price=day.floor_price * factor)


def price_scale(days: Sequence[AuctionDay]) -> float:
    prices = np.concatenate([day.price_to_beat for day in days])
    positive = prices[prices > 0]
    return float(np.median(positive)) if len(positive) else 1.0


def dqn_config(config: BidderConfig, params: Mapping[str, Any]) -> DQNConfig:
    from models.bidding.dqn import DQNConfig

    settings = config.dqn.model_copy(
        update={key: value for key, value in params.items() if key in AgentConfig.model_fields}
    )
    factors = tuple(
        float(f)
        for f in np.exp(np.linspace(-settings.lambda_range, settings.lambda_range, settings.n_actions))
    )
    return DQNConfig(
        episodes=settings.episodes,
        hidden_size=settings.hidden_size,
        learning_rate=settings.learning_rate,
        batch_size=settings.batch_size,
        n_step=settings.n_step,
        updates_per_episode=settings.updates_per_episode,
        target_update_every=settings.target_update_every,
        exploration_fraction=settings.exploration_fraction,
        epsilon_end=settings.epsilon_end,
        validation_every=settings.validation_every,
        validation_episodes=settings.validation_episodes,
        validation_holdout_days=settings.validation_holdout_days,
        n_steps=settings.n_steps,
        lambda_factors=factors,
        action_mode="absolute",
        pacing_gain=settings.pacing_gain,
        auction_type=config.evaluation.auction_type,
        seed=config.seed,
    )


def click_model_config(config: BidderConfig, params: Mapping[str, Any]) -> ClickModelConfig:
    settings = config.click_model
    overrides = {
        key.removeprefix("click_"): value for key, value in params.items() if key.startswith("click_")
    }
    return ClickModelConfig(**{**settings.model_dump(), **overrides, "seed": config.seed})


# ---------------------------------------------------------------------------------------------
# the served model
