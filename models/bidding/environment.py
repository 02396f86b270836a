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

Episodes come from a sampler (called with the environment's seeded generator) or, for evaluation,
are passed in `reset(options={"episode": spec})`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np

from models.bidding.auction import AuctionType
from models.bidding.episodes import EpisodeSpec
from models.bidding.policy import (
    DEFAULT_STEPS,
    OBSERVATION_HIGH,
    OBSERVATION_LOW,
    CampaignState,
    close_step,
    initial_state,
    observe,
)
from models.bidding.replay import play_step, step_bounds

DRLB_LAMBDA_FACTORS: tuple[float, ...] = (0.92, 0.97, 0.99, 1.0, 1.01, 1.03, 1.08)
# lambda stays within initial x e^(+-5), the range the observation can show
MAX_LOG_LAMBDA_RATIO = float(OBSERVATION_HIGH[-1])

EpisodeSampler = Callable[[np.random.Generator], EpisodeSpec]


def adjusted_lambda(state: CampaignState, factor: float) -> float:
    """Lambda after one action, kept within the range around its start the agent can observe."""
    log_ratio = math.log(state.bid_lambda * factor / state.initial_lambda)
    log_ratio = min(max(log_ratio, -MAX_LOG_LAMBDA_RATIO), MAX_LOG_LAMBDA_RATIO)
    return state.initial_lambda * math.exp(log_ratio)


class AuctionEnv(gym.Env[np.ndarray, np.int64]):
    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's class attribute)

    def __init__(
        self,
        sample_episode: EpisodeSampler,
        n_steps: int = DEFAULT_STEPS,
        lambda_factors: tuple[float, ...] = DRLB_LAMBDA_FACTORS,
        auction_type: AuctionType = AuctionType.SECOND_PRICE,
    ) -> None:
        self.sample_episode = sample_episode
        self.n_steps = n_steps
        self.lambda_factors = lambda_factors
        self.auction_type = auction_type
        self.observation_space = gym.spaces.Box(OBSERVATION_LOW, OBSERVATION_HIGH, dtype=np.float32)
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
        return observe(self._state), self._info()

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._state is None or self._episode is None:
            raise RuntimeError("call reset() before step()")
        if self._state.step >= self.n_steps:
            raise RuntimeError("the episode has ended; call reset()")
        factor = self.lambda_factors[int(action)]
        state = replace(self._state, bid_lambda=adjusted_lambda(self._state, factor))
        day = self._episode.day
        start, stop = int(self._bounds[state.step]), int(self._bounds[state.step + 1])
        state, won, _ = play_step(None, state, day, start, stop, self.auction_type)
        step_value = float(day.credited_value[start:stop][won].sum())
        optimum = self._episode.optimum_value
        reward = 100.0 * step_value / optimum if optimum > 0 else 0.0
        terminated = state.step + 1 >= self.n_steps
        self._state = close_step(state)
        return observe(self._state), reward, terminated, False, self._info()

    def _info(self) -> dict[str, Any]:
        assert self._state is not None and self._episode is not None
        return {
            "spent": self._state.spent,
            "budget": self._episode.budget,
            "bid_lambda": self._state.bid_lambda,
            "step": self._state.step,
        }
