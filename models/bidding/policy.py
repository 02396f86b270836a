"""The per-request bidding interface the server calls, and the campaign state it threads through a day.

The server keeps one `CampaignState` per campaign and day. For every bid request it calls
`policy.bid(state, request)`; when the auction result is known it calls
`state = policy.update(state, outcome)`. Both are pure: the state is an immutable value, so a state
can be stored, shipped and replayed, and the same request on the same state always gets the same bid.

The day is cut into `n_steps` equal time steps (default 96 x 15 minutes). A lambda-based policy bids
value x pCTR / lambda and may change lambda only when a new step starts, from the state at that
moment (`next_lambda`), as the gymnasium environment does. Crossing steps happens lazily, when the
first request or outcome of a later step arrives, so empty steps are still stepped through.

Every bid is cut to the budget still left (`auction.guard_bid`), so a policy never bids more than
the remaining budget.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

import numpy as np

from models.bidding.auction import guard_bid

DEFAULT_STEPS = 96


@dataclass(frozen=True)
class BidRequest:
    time_of_day: float  # fraction of the campaign's market-local day elapsed
    pctr: float  # predicted click (or conversion) probability
    value: float = 1.0  # value of one click for the objective
    floor_price: float = 0.0


@dataclass(frozen=True)
class BidOutcome:
    request: BidRequest
    bid: float
    won: bool
    cost: float


@dataclass(frozen=True)
class StepStats:
    """Counts over a stretch of the day, in the bidder's own view (pCTR, not observed clicks)."""

    requests: int = 0
    wins: int = 0
    spend: float = 0.0
    value_won: float = 0.0  # sum of pCTR x value over won impressions
    value_offered: float = 0.0  # sum of pCTR x value over all requests

    def plus(self, other: StepStats) -> StepStats:
        return StepStats(
            requests=self.requests + other.requests,
            wins=self.wins + other.wins,
            spend=self.spend + other.spend,
            value_won=self.value_won + other.value_won,
            value_offered=self.value_offered + other.value_offered,
        )


@dataclass(frozen=True)
class CampaignState:
    budget: float
    spent: float
    time_of_day: float  # of the latest request or outcome seen
    bid_lambda: float  # current lambda: bid = value x pCTR / bid_lambda
    initial_lambda: float
    step: int  # index of the current time step
    n_steps: int
    current_step: StepStats  # the step in progress
    last_step: StepStats  # the latest completed step
    day_totals: StepStats  # completed steps of the day
    controller_memory: tuple[float, ...] = ()  # a controller's own memory (the PID's integral, ...)

    @property
    def remaining_budget(self) -> float:
        return max(self.budget - self.spent, 0.0)


def step_of(time_of_day: float, n_steps: int) -> int:
    return min(max(int(time_of_day * n_steps), 0), n_steps - 1)


OBSERVATION_SIZE = 7
OBSERVATION_LOW = np.array([0, 0, 0, 0, 0, 0, -5], dtype=np.float32)
OBSERVATION_HIGH = np.array([1, 1, 1, 10, 10, 10, 5], dtype=np.float32)


def observe(state: CampaignState) -> np.ndarray:
    """The normalised state an agent decides from at the start of `state.step`.

    time left and budget left (fractions); last step's win rate; last step's spend over the even
    per-step share of the budget; budget left over time left (above 1: behind the linear pace);
    value per won impression over the day's value per request so far (the click rate of what was
    bought); log of lambda over the day's initial lambda.
    """
    time_left = 1.0 - state.step / state.n_steps
    budget_left = state.remaining_budget / state.budget if state.budget > 0 else 0.0
    last = state.last_step
    win_rate = last.wins / last.requests if last.requests else 0.0
    spend_pace = last.spend / (state.budget / state.n_steps) if state.budget > 0 else 0.0
    budget_pace = budget_left / time_left if time_left > 0 else 0.0
    seen = state.day_totals
    mean_offered = seen.value_offered / seen.requests if seen.requests else 0.0
    value_rate = (last.value_won / last.wins) / mean_offered if last.wins and mean_offered > 0 else 0.0
    log_lambda = math.log(state.bid_lambda / state.initial_lambda)
    features = np.array(
        [time_left, budget_left, win_rate, spend_pace, budget_pace, value_rate, log_lambda], dtype=np.float32
    )
    return np.clip(features, OBSERVATION_LOW, OBSERVATION_HIGH)


# The pacing observation: only what a server keeps per campaign (budget, spent, time of day, recent
# win rate), so a policy deciding from it can answer one request from the served state alone.
PACING_OBSERVATION_SIZE = 4
PACING_OBSERVATION_LOW = np.array([0, 0, 0, 0], dtype=np.float32)
PACING_OBSERVATION_HIGH = np.array([1, 1, 10, 1], dtype=np.float32)


def pacing_features(time_left: float, budget_left: float, recent_win_rate: float) -> np.ndarray:
    """time left and budget left (fractions of the day and budget), budget left over time left (above
    1: behind the linear pace) and the recent win rate."""
    budget_pace = budget_left / time_left if time_left > 0 else 0.0
    features = np.array([time_left, budget_left, budget_pace, recent_win_rate], dtype=np.float32)
    return np.clip(features, PACING_OBSERVATION_LOW, PACING_OBSERVATION_HIGH)


def observe_pacing(state: CampaignState) -> np.ndarray:
    """`pacing_features` at the start of `state.step`; the recent win rate is the last step's."""
    last = state.last_step
    return pacing_features(
        1.0 - state.step / state.n_steps,
        state.remaining_budget / state.budget if state.budget > 0 else 0.0,
        last.wins / last.requests if last.requests else 0.0,
    )


class BidPolicy(ABC):
    """A bidder for one campaign-day: `start`, then `bid` and `update` per request."""

    def __init__(self, initial_lambda: float = 1.0, n_steps: int = DEFAULT_STEPS) -> None:
        if not initial_lambda > 0:
            raise ValueError(f"lambda must be positive, got {initial_lambda}")
        self.initial_lambda = initial_lambda
        self.n_steps = n_steps

    def start(self, budget: float) -> CampaignState:
        """The state at the start of the day, with the first step's lambda already decided."""
        state = initial_state(budget, self.initial_lambda, self.n_steps, self.initial_memory())
        return self.decide(state)

    def bid(self, state: CampaignState, request: BidRequest) -> float:
        """The bid for one request, never above the remaining budget (0 means no bid)."""
        state = self.advance(state, request.time_of_day)
        return guard_bid(self.raw_bid(state, request), state.remaining_budget)

    def update(self, state: CampaignState, outcome: BidOutcome) -> CampaignState:
        """The state after one auction outcome; the input state is left as it was."""
        request = outcome.request
        state = self.advance(state, request.time_of_day)
        request_value = request.pctr * request.value
        current = state.current_step
        return replace(
            state,
            spent=state.spent + outcome.cost,
            time_of_day=max(state.time_of_day, request.time_of_day),
            current_step=StepStats(
                requests=current.requests + 1,
                wins=current.wins + int(outcome.won),
                spend=current.spend + outcome.cost,
                value_won=current.value_won + (request_value if outcome.won else 0.0),
                value_offered=current.value_offered + request_value,
            ),
        )

    def advance(self, state: CampaignState, time_of_day: float) -> CampaignState:
        """The state in the step of `time_of_day`: each boundary crossed closes a step and decides lambda."""
        target = step_of(time_of_day, state.n_steps)
        while state.step < target:
            state = self.decide(close_step(state))
        return state

    def decide(self, state: CampaignState) -> CampaignState:
        """The state with lambda set for the step that starts in it."""
        bid_lambda, memory = self.next_lambda(state)
        return replace(state, bid_lambda=bid_lambda, controller_memory=memory)

    def raw_bid(self, state: CampaignState, request: BidRequest) -> float:
        """The bid before the budget guard: value x pCTR / lambda."""
        return request.value * request.pctr / state.bid_lambda

    def raw_bids(self, state: CampaignState, pctr: np.ndarray, value: np.ndarray) -> np.ndarray:
        """`raw_bid` for many requests of one step at once (the fast replay and the environment)."""
        return value * pctr / state.bid_lambda

    def initial_memory(self) -> tuple[float, ...]:
        return ()

    @abstractmethod
    def next_lambda(self, state: CampaignState) -> tuple[float, tuple[float, ...]]:
        """Lambda and controller memory for the step that starts in `state`."""


def initial_state(
    budget: float, initial_lambda: float, n_steps: int, memory: tuple[float, ...] = ()
) -> CampaignState:
    """A day's first state, before the first step's lambda is decided."""
    empty = StepStats()
    return CampaignState(
        budget=budget,
        spent=0.0,
        time_of_day=0.0,
        bid_lambda=initial_lambda,
        initial_lambda=initial_lambda,
        step=0,
        n_steps=n_steps,
        current_step=empty,
        last_step=empty,
        day_totals=empty,
        controller_memory=memory,
    )


def close_step(state: CampaignState) -> CampaignState:
    """The state at the start of the next step: the current step becomes the last one."""
    return replace(
        state,
        step=state.step + 1,
        last_step=state.current_step,
        day_totals=state.day_totals.plus(state.current_step),
        current_step=StepStats(),
    )
