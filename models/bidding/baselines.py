"""The baseline bidders and how each is tuned on training days for a budget fraction.

- Constant bid: the same bid on every request; the level that earned most on the training days.
- Linear bidding (Perlich et al. 2012): bid = base bid x pCTR x value / its training mean; the base
  bid that earned most on the training days, running out of budget allowed (as in the iPinYou
  benchmark, Zhang et al. 2014, arXiv:1407.7073).
- Best fixed lambda: bid = pCTR x value / lambda, lambda = the geometric mean over training days of
  the lambda that spends the budget exactly in hindsight (`LambdaPrior`). The same bid shape as
  linear bidding, tuned to spend the budget rather than to win the most on the training days.
- PID pacing: lambda starts at the fixed lambda and, at every step, is set from the gap between
  the spend and the ideal linear spend curve (budget x elapsed fraction of the day).

All but the constant bid are `value x pCTR / lambda` policies; only PID changes lambda in the day.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.bidding.auction import AuctionType, resolve_auctions
from models.bidding.days import AuctionDay, budget_for
from models.bidding.hindsight import hindsight_lambda
from models.bidding.policy import DEFAULT_STEPS, BidPolicy, BidRequest, CampaignState

TUNING_GRID_SIZE = 60


class FixedLambda(BidPolicy):
    """bid = value x pCTR / lambda with one lambda all day."""

    def next_lambda(self, state: CampaignState) -> tuple[float, tuple[float, ...]]:
        return state.bid_lambda, state.controller_memory


class LinearBid(FixedLambda):
    """bid = base_bid x (pCTR x value) / reference_value: a fixed lambda of reference_value / base_bid."""

    def __init__(self, base_bid: float, reference_value: float, n_steps: int = DEFAULT_STEPS) -> None:
        super().__init__(initial_lambda=reference_value / base_bid, n_steps=n_steps)
        self.base_bid = base_bid
        self.reference_value = reference_value


class ConstantBid(FixedLambda):
    """The same bid on every request, whatever its pCTR."""

    def __init__(self, bid_level: float, n_steps: int = DEFAULT_STEPS) -> None:
        super().__init__(initial_lambda=1.0, n_steps=n_steps)
        self.bid_level = bid_level

    def raw_bid(self, state: CampaignState, request: BidRequest) -> float:
        return self.bid_level

    def raw_bids(self, state: CampaignState, pctr: np.ndarray, value: np.ndarray) -> np.ndarray:
        return np.full(len(pctr), self.bid_level)


@dataclass(frozen=True)
class PIDGains:
    proportional: float = 4.0
    integral: float = 0.1
    derivative: float = 0.0
    max_log_adjustment: float = 3.0  # lambda stays within initial x e^(+-3)


class PIDPacing(BidPolicy):
    """Feedback pacing on lambda towards an ideal cumulative spend curve (linear by default).

    At the start of step s the error is e = (ideal spend by then - spent) / budget, positive when
    behind; lambda = initial x exp(-(Kp e + Ki sum e + Kd (e - previous e))): behind lowers lambda
    and raises bids. The multiplicative form keeps lambda positive (as the exponential bid
    adjustment of Zhang et al. 2016, "Feedback control of real-time display advertising").
    """

    def __init__(
        self,
        initial_lambda: float,
        gains: PIDGains | None = None,
        ideal_spend_curve: Sequence[float] | None = None,
        n_steps: int = DEFAULT_STEPS,
    ) -> None:
        super().__init__(initial_lambda=initial_lambda, n_steps=n_steps)
        self.gains = gains or PIDGains()
        # fraction of the budget that should be spent by the start of each step (n_steps + 1 points)
        curve = (
            np.linspace(0.0, 1.0, n_steps + 1) if ideal_spend_curve is None else np.asarray(ideal_spend_curve)
        )
        if curve.shape != (n_steps + 1,):
            raise ValueError(f"ideal spend curve needs {n_steps + 1} points, got {curve.shape}")
        self.ideal_spend_curve = tuple(float(point) for point in curve)

    def initial_memory(self) -> tuple[float, ...]:
        return (0.0, 0.0)  # integral of the error, previous error

    def next_lambda(self, state: CampaignState) -> tuple[float, tuple[float, ...]]:
        integral, previous = state.controller_memory
        if state.budget <= 0:
            return state.bid_lambda, state.controller_memory
        error = (self.ideal_spend_curve[state.step] * state.budget - state.spent) / state.budget
        integral += error
        gains = self.gains
        adjustment = (
            gains.proportional * error + gains.integral * integral + gains.derivative * (error - previous)
        )
        adjustment = min(max(adjustment, -gains.max_log_adjustment), gains.max_log_adjustment)
        return state.initial_lambda * math.exp(-adjustment), (integral, error)


# ---------------------------------------------------------------------------------------------
# tuning on training days


@dataclass(frozen=True)
class LambdaPrior:
    """Lambda that spends a budget fraction, from training days: log-log interpolation over fractions."""

    budget_fractions: tuple[float, ...]  # ascending
    lambdas: tuple[float, ...]  # geometric mean over the training days at each fraction

    @classmethod
    def fit(cls, days: Sequence[AuctionDay], budget_fractions: Sequence[float] | None = None) -> LambdaPrior:
        fractions = sorted(budget_fractions or np.geomspace(1 / 128, 1.0, 29).tolist())
        lambdas = [
            math.exp(np.mean([math.log(hindsight_lambda(day, budget_for(day, fraction))) for day in days]))
            for fraction in fractions
        ]
        return cls(tuple(fractions), tuple(lambdas))

    def __call__(self, budget_fraction: float) -> float:
        return math.exp(
            float(np.interp(math.log(budget_fraction), np.log(self.budget_fractions), np.log(self.lambdas)))
        )


def static_bid_value(
    day: AuctionDay, bids: np.ndarray, budget: float, auction_type: AuctionType
) -> tuple[float, float]:
    """(value as the bidder sees it, spend) of bidding fixed bids all day under the budget guard."""
    won, cost = resolve_auctions(bids, day.price_to_beat, budget, auction_type)
    return float(day.bid_value[won].sum()), float(cost.sum())


def static_bid_values(
    day: AuctionDay, bids: np.ndarray, budget: float, auction_type: AuctionType
) -> np.ndarray:
    """`static_bid_value`'s value for each row of `bids` (levels x requests) at once.

    As `auction.resolve_auctions`, row by row: vectorised up to the auction where the guard first
    cuts a row's bid, then auction by auction for the rows the guard cut, all rows together, until
    no row has enough left to beat any later price.
    """
    prices, bid_value = day.price_to_beat, day.bid_value
    second_price = auction_type is AuctionType.SECOND_PRICE
    bids = np.minimum(np.where(np.asarray(bids, dtype=np.float64) > 0, bids, 0.0), max(budget, 0.0))
    won = bids > prices
    cost = np.where(won, prices if second_price else bids, 0.0)
    binds = bids > budget - (np.cumsum(cost, axis=1) - cost)
    values = (won * bid_value).sum(axis=1)
    rows = np.flatnonzero(binds.any(axis=1))
    if not len(rows):
        return values
    first = binds[rows].argmax(axis=1)
    before = np.arange(day.n_requests) < first[:, None]
    remaining = budget - (cost[rows] * before).sum(axis=1)
    cut_values = (won[rows] * bid_value * before).sum(axis=1)
    later_min_price = np.minimum.accumulate(prices[::-1])[::-1]
    for index in range(int(first.min()), day.n_requests):
        if np.all(remaining <= later_min_price[index]):
            break
        level_bids = bids[rows, index]
        active = (index >= first) & (level_bids > 0) & (remaining > 0)
        guarded = np.where(active, np.minimum(level_bids, remaining), 0.0)
        row_won = guarded > prices[index]
        remaining -= np.where(row_won, prices[index] if second_price else guarded, 0.0)
        cut_values += row_won * bid_value[index]
    values[rows] = cut_values
    return values


def _best_level(
    days: Sequence[AuctionDay],
    budget_fraction: float,
    bids_for_level: list[np.ndarray],
    auction_type: AuctionType,
) -> int:
    totals = np.zeros(len(bids_for_level[0]) if bids_for_level else 0)
    for day, level_bids in zip(days, bids_for_level, strict=True):
        budget = budget_for(day, budget_fraction)
        totals += static_bid_values(day, np.stack(level_bids), budget, auction_type)
    return int(np.argmax(totals))


def tune_constant_bid(
    days: Sequence[AuctionDay],
    budget_fraction: float,
    auction_type: AuctionType = AuctionType.SECOND_PRICE,
    grid_size: int = TUNING_GRID_SIZE,
) -> float:
    """The constant bid that earned the most over the training days at this budget fraction."""
    prices = np.concatenate([day.price_to_beat for day in days])
    levels = np.unique(np.quantile(prices, np.linspace(0.01, 1.0, grid_size))) * 1.0001
    bids = [[np.full(day.n_requests, level) for level in levels] for day in days]
    return float(levels[_best_level(days, budget_fraction, bids, auction_type)])


def reference_bid_value(days: Sequence[AuctionDay]) -> float:
    """Mean pCTR x value per request over the training days: linear bidding's normaliser."""
    return float(np.concatenate([day.bid_value for day in days]).mean())


def tune_linear_base_bid(
    days: Sequence[AuctionDay],
    budget_fraction: float,
    auction_type: AuctionType = AuctionType.SECOND_PRICE,
    grid_size: int = TUNING_GRID_SIZE,
) -> float:
    """The base bid of linear bidding that earned the most over the training days at this fraction."""
    reference = reference_bid_value(days)
    prices = np.concatenate([day.price_to_beat for day in days])
    # base bids from a tenth of the cheapest to ten times the dearest typical price
    levels = np.geomspace(np.quantile(prices, 0.01) / 10, np.quantile(prices, 0.99) * 10, grid_size * 2)
    bids = [[day.bid_value / reference * level for level in levels] for day in days]
    return float(levels[_best_level(days, budget_fraction, bids, auction_type)])
