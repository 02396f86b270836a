"""The bidder's validated YAML config (configs/bidder.yaml): data split, click model, DQN, evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from configs import StrictModel
from models.bidding.auction import AuctionType


class DataConfig(StrictModel):
    test_days: int = Field(7, ge=1)
    train_days: int = Field(28, ge=2)
    click_model_days: int = Field(180, ge=7)
    min_requests_per_day: int = Field(40, ge=1)
    min_train_days: int = Field(7, ge=2)
    currency: str = "USD"
    credit_true_clicks: bool = True


class ClickConfig(StrictModel):
    """The `click_model` section: models.bidding.click_model.ClickModelConfig's training knobs."""

    n_estimators: int = Field(200, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(15, ge=2)
    min_child_samples: int = Field(200, ge=1)
    reg_lambda: float = Field(1.0, ge=0)
    calibration: Literal["isotonic", "platt"] = "platt"
    calibration_fraction: float = Field(0.2, gt=0, lt=1)
    categorical_features: tuple[Literal["exchange", "slot_id", "slot_size", "region"], ...] = (
        "exchange",
        "slot_size",
    )


class AgentConfig(StrictModel):
    """The `dqn` section: the agent's training (models.bidding.dqn.DQNConfig) and its actions."""

    episodes: int = Field(300, ge=1)
    hidden_size: int = Field(64, ge=4)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(128, ge=8)
    n_step: int = Field(8, ge=1)
    updates_per_episode: int = Field(8, ge=1)
    target_update_every: int = Field(250, ge=1)
    exploration_fraction: float = Field(0.5, gt=0, le=1)
    epsilon_end: float = Field(0.05, ge=0, le=1)
    validation_every: int = Field(50, ge=1)
    validation_episodes: int = Field(12, ge=1)
    # the latest training days only generate validation episodes (0: validate on all training days)
    validation_holdout_days: int = Field(0, ge=0)
    n_steps: int = Field(48, ge=2)
    lambda_range: float = Field(0.6, gt=0, le=5)
    n_actions: int = Field(9, ge=3)
    pacing_gain: float = Field(4.0, ge=0)


class EvaluationConfig(StrictModel):
    budget_fractions: tuple[float, ...] = (0.5, 0.25, 0.125, 0.0625)
    tuning_grid_size: int = Field(60, ge=2)  # bid levels tried when tuning constant and linear bidding
    replay: Literal["requests", "steps"] = "steps"
    pacing_budget_fraction: float = Field(0.125, gt=0, le=1)
    auction_type: AuctionType = AuctionType.SECOND_PRICE


class BidderConfig(StrictModel):
    seed: int = 0
    data: DataConfig = DataConfig()
    click_model: ClickConfig = ClickConfig()
    dqn: AgentConfig = AgentConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
