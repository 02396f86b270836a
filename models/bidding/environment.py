"""A gymnasium environment: one campaign-day replayed in time steps, each action adjusts lambda.

Episode: a logged (or generated) day with its budget and starting lambda (`EpisodeSpec`), cut into
`n_steps` equal steps (default 96 x 15 minutes). At the start of each step the agent sees
`policy.observe` of the campaign state (time left, budget left, last step's win rate, spend pace and
value rate, lambda relative to its start), picks a factor, lambda is multiplied by it, and every
request of the step is bid value x pCTR / lambda under the budget guard (`replay.play_step`, the
same code the per-request replay of a policy follows). The reward is the step's credited value as
a percentage of the day's hindsight LP optimum, so an episode's return is the percentage of the
optimum reached. The action set is DRLB's multiplicative adjustments of lambda (Wu et al. 2018,
arXiv:1802.08365): -8%, -3%, -1%, 0, +1%, +3%, +8%.

With `action_mode="absolute"` (the pacing mode) an action sets lambda to the episode's starting
lambda times one of the factors, and the agent sees `policy.observe_pacing` (time left, budget left,
their ratio, recent win rate): a decision from only what a server keeps per campaign, so the served
policy needs no memory of earlier lambdas.

Episodes come from a sampler (called with the environment's seeded generator) or, for evaluation,
are passed in `reset(options={"episode": spec})`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from models.bidding.auction import AuctionType
from models.bidding.episodes import EpisodeSpec
from models.bidding.policy import (
    DEFAULT_STEPS,
    OBSERVATION_HIGH,
    OBSERVATION_LOW,
    PACING_OBSERVATION_HIGH,
    PACING_OBSERVATION_LOW,
    CampaignState,
    close_step,
    initial_state,
    observe,
    observe_pacing,
)
from models.bidding.replay import play_step, step_bounds

DRLB_LAMBDA_FACTORS: tuple[float, ...] = (0.92, 0.97, 0.99, 1.0, 1.01, 1.03, 1.08)
# lambda stays within initial x e^(+-5), the range the observation can show
MAX_LOG_LAMBDA_RATIO = float(OBSERVATION_HIGH[-1])

# the pacing mode's factors on the starting lambda: 13 log-even steps over e^(+-1.2), about x0.3 .. x3.3
PACING_LAMBDA_FACTORS: tuple[float, ...] = tuple(float(f) for f in np.exp(np.linspace(-1.2, 1.2, 13)))

EpisodeSampler = Callable[[np.random.Generator], EpisodeSpec]
ActionMode = Literal["relative", "absolute"]


def adjusted_lambda(state: CampaignState, factor: float) -> float:
    """Lambda after one action, kept within the range around its start the agent can observe."""
    log_ratio = math.log(state.bid_lambda * factor / state.initial_lambda)
    log_ratio = min(max(log_ratio, -MAX_LOG_LAMBDA_RATIO), MAX_LOG_LAMBDA_RATIO)
    return state.initial_lambda * math.exp(log_ratio)


def paced_lambda(
    initial_lambda: float, time_left: float, budget_left: float, factor: float, pacing_gain: float
) -> float:
    """The absolute mode's lambda: the starting lambda, moved by a proportional pacing term (behind the
    linear pace, budget_left > time_left, lowers it) and scaled by the action's factor. With a gain
    the do-nothing factor 1 is already a P controller; the agent learns corrections on top of it."""
    return initial_lambda * math.exp(-pacing_gain * (budget_left - time_left)) * factor


def action_lambda(
    state: CampaignState, factor: float, action_mode: ActionMode, pacing_gain: float = 0.0
) -> float:
    """Lambda after an action: the current one adjusted (relative) or the starting one scaled (absolute)."""
    if action_mode == "absolute":
        time_left = 1.0 - state.step / state.n_steps
        budget_left = state.remaining_budget / state.budget if state.budget > 0 else 0.0
        return paced_lambda(state.initial_lambda, time_left, budget_left, factor, pacing_gain)
    return adjusted_lambda(state, factor)


def observation_for(state: CampaignState, action_mode: ActionMode) -> np.ndarray:
    return observe_pacing(state) if action_mode == "absolute" else observe(state)


class AuctionEnv(gym.Env[np.ndarray, np.int64]):
    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's class attribute)

    def __init__(
        self,
        sample_episode: EpisodeSampler,
        n_steps: int = DEFAULT_STEPS,
        lambda_factors: tuple[float, ...] = DRLB_LAMBDA_FACTORS,
        auction_type: AuctionType = AuctionType.SECOND_PRICE,
        action_mode: ActionMode = "relative",
        pacing_gain: float = 0.0,
    ) -> None:
        self.sample_episode = sample_episode
        self.n_steps = n_steps
        self.lambda_factors = lambda_factors
        self.auction_type = auction_type
        self.action_mode = action_mode
        self.pacing_gain = pacing_gain
        low, high = (
            (PACING_OBSERVATION_LOW, PACING_OBSERVATION_HIGH)
            if action_mode == "absolute"
            else (OBSERVATION_LOW, OBSERVATION_HIGH)
        )
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(len(lambda_factors))
        self._episode: EpisodeSpec | None = None
        self._state: CampaignState | None = None
        self._bounds = np.zeros(n_steps + 1, dtype=np.int64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        episode = (options or {}).get("episode") or self.sample_episode(self.np_random)
        self._episode = episode
        self._bounds = step_bounds(episode.day, self.n_steps)
        self._state = initial_state(episode.budget, episode.initial_lambda, self.n_steps)
        return observation_for(self._state, self.action_mode), self._info()

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._state is None or self._episode is None:
            raise RuntimeError("call reset() before step()")
        if self._state.step >= self.n_steps:
            raise RuntimeError("the episode has ended; call reset()")
        factor = self.lambda_factors[int(action)]
        state = replace(
            self._state, bid_lambda=action_lambda(self._state, factor, self.action_mode, self.pacing_gain)
        )
        day = self._episode.day
        start, stop = int(self._bounds[state.step]), int(self._bounds[state.step + 1])
        state, won, _ = play_step(None, state, day, start, stop, self.auction_type)
        step_value = float(day.credited_value[start:stop][won].sum())
        optimum = self._episode.optimum_value
        reward = 100.0 * step_value / optimum if optimum > 0 else 0.0
        terminated = state.step + 1 >= self.n_steps
        self._state = close_step(state)
        return observation_for(self._state, self.action_mode), reward, terminated, False, self._info()

    def _info(self) -> dict[str, Any]:
        assert self._state is not None and self._episode is not None
        return {
            "spent": self._state.spent,
            "budget": self._episode.budget,
            "bid_lambda": self._state.bid_lambda,
            "step": self._state.step,
        }
