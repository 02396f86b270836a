"""A policy replayed over a logged day, and the time-step engine the environment shares.

Two ways to replay, with the same result for every policy here (a test holds them equal):
- `replay_requests`: request by request through `BidPolicy.bid` and `update`, exactly as the server
  runs it. The evaluation uses it.
- `replay_steps`: the policy decides lambda at each step boundary and the step's auctions are
  resolved at once (`play_step`). It is the environment's step and the fast path for tuning.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

import numpy as np

from models.bidding.auction import AuctionType, auction_cost, guard_bid, resolve_auctions
from models.bidding.days import AuctionDay
from models.bidding.policy import BidOutcome, BidPolicy, BidRequest, CampaignState, StepStats, close_step


@dataclass(frozen=True, eq=False)
class DayRun:
    """What a policy did on one day."""

    date: dt.date
    budget: float
    spend: float
    requests: int
    wins: int
    clicks: float  # credited clicks (expected or sampled) of won impressions
    value: float  # credited clicks x value: the objective
    spend_curve: np.ndarray  # cumulative spend at the end of each step
    lambdas: np.ndarray  # lambda in force during each step


def step_bounds(day: AuctionDay, n_steps: int) -> np.ndarray:
    """Index of the first request of each step, plus the number of requests: n_steps + 1 entries."""
    edges = np.arange(n_steps + 1) / n_steps
    bounds = np.searchsorted(day.time_of_day, edges, side="left")
    bounds[-1] = day.n_requests
    return bounds


def play_step(
    policy: BidPolicy | None,
    state: CampaignState,
    day: AuctionDay,
    start: int,
    stop: int,
    auction_type: AuctionType,
) -> tuple[CampaignState, np.ndarray, np.ndarray]:
    """Bid on requests [start, stop) of the current step with the state's lambda; returns the state
    with the step's counts added, and each request's won flag and cost. Without a policy the bids
    are value x pCTR / lambda (the environment)."""
    pctr = day.pctr[start:stop]
    value = day.value[start:stop]
    bids = policy.raw_bids(state, pctr, value) if policy is not None else value * pctr / state.bid_lambda
    won, cost = resolve_auctions(bids, day.price_to_beat[start:stop], state.remaining_budget, auction_type)
    bid_value = pctr * value
    step_spend = float(cost.sum())
    current = state.current_step
    state = replace(
        state,
        spent=state.spent + step_spend,
        time_of_day=max(state.time_of_day, float(day.time_of_day[stop - 1]) if stop > start else 0.0),
        current_step=StepStats(
            requests=current.requests + (stop - start),
            wins=current.wins + int(won.sum()),
            spend=current.spend + step_spend,
            value_won=current.value_won + float(bid_value[won].sum()),
            value_offered=current.value_offered + float(bid_value.sum()),
        ),
    )
    return state, won, cost


def replay_steps(
    policy: BidPolicy, day: AuctionDay, budget: float, auction_type: AuctionType = AuctionType.SECOND_PRICE
) -> DayRun:
    """The fast replay: lambda decided per step, each step's auctions resolved together."""
    bounds = step_bounds(day, policy.n_steps)
    state = policy.start(budget)
    won = np.zeros(day.n_requests, dtype=bool)
    cost = np.zeros(day.n_requests)
    spend_curve = np.zeros(policy.n_steps)
    lambdas = np.zeros(policy.n_steps)
    for step in range(policy.n_steps):
        if step > 0:
            state = policy.decide(close_step(state))
        lambdas[step] = state.bid_lambda
        start, stop = int(bounds[step]), int(bounds[step + 1])
        state, won[start:stop], cost[start:stop] = play_step(policy, state, day, start, stop, auction_type)
        spend_curve[step] = state.spent
    return _day_run(day, budget, won, cost, spend_curve, lambdas)


def replay_requests(
    policy: BidPolicy, day: AuctionDay, budget: float, auction_type: AuctionType = AuctionType.SECOND_PRICE
) -> DayRun:
    """The server's replay: one `bid` and one `update` per request, in time order."""
    state = policy.start(budget)
    won = np.zeros(day.n_requests, dtype=bool)
    cost = np.zeros(day.n_requests)
    lambdas = np.full(policy.n_steps, np.nan)
    prices = day.price_to_beat.tolist()
    for index, (time_of_day, pctr, value, floor) in enumerate(
        zip(
            day.time_of_day.tolist(),
            day.pctr.tolist(),
            day.value.tolist(),
            day.floor_price.tolist(),
            strict=True,
        )
    ):
        request = BidRequest(time_of_day=time_of_day, pctr=pctr, value=value, floor_price=floor)
        # the exchange side enforces the guard too: a bid above what is left is never placed
        bid = guard_bid(policy.bid(state, request), budget - state.spent)
        paid = auction_cost(bid, prices[index], auction_type)
        won[index] = bid > prices[index]
        cost[index] = paid
        state = policy.update(state, BidOutcome(request=request, bid=bid, won=bool(won[index]), cost=paid))
        lambdas[state.step] = state.bid_lambda
    step_index = np.minimum((day.time_of_day * policy.n_steps).astype(int), policy.n_steps - 1)
    spend_per_step = np.bincount(step_index, weights=cost, minlength=policy.n_steps)
    # steps without requests keep the lambda decided before them (shown for the plots only)
    for step in range(policy.n_steps):
        if np.isnan(lambdas[step]):
            lambdas[step] = lambdas[step - 1] if step > 0 else policy.initial_lambda
    return _day_run(day, budget, won, cost, np.cumsum(spend_per_step), lambdas)


def _day_run(
    day: AuctionDay,
    budget: float,
    won: np.ndarray,
    cost: np.ndarray,
    spend_curve: np.ndarray,
    lambdas: np.ndarray,
) -> DayRun:
    return DayRun(
        date=day.date,
        budget=budget,
        spend=float(cost.sum()),
        requests=day.n_requests,
        wins=int(won.sum()),
        clicks=float(day.click_prob[won].sum()),
        value=float(day.credited_value[won].sum()),
        spend_curve=spend_curve,
        lambdas=lambdas,
    )
