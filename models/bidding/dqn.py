"""A DRLB-style DQN that paces a campaign by adjusting lambda (Wu et al. 2018, arXiv:1802.08365).

Why DQN rather than PPO: the actions are a handful of discrete lambda factors, as in DRLB; episodes
are cheap, so an off-policy learner that replays every transition many times needs far fewer of
them than on-policy PPO; and the greedy policy is deterministic, so the serving policy's `update`
stays a pure function of the state. Double DQN (van Hasselt et al. 2016) with a dueling network,
n-step returns (the effect of a lambda change shows over hours, not one step), a target network,
Huber loss and epsilon-greedy exploration. The reward is the step's value as a percentage of the
day's hindsight optimum, so returns are comparable across days and budgets. With only a few training
days the agent overfits them if trained long; the weights kept are those with the best greedy
return on generated days from the latest training day(s), which it never trains on.

`collect_episode` is a pure function of (weights, episode, epsilon, seed, config): rollouts can be
mapped over workers later (Ray) without changing it. `train_dqn` runs them in a plain loop.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from models.bidding.auction import AuctionType
from models.bidding.baselines import FixedLambda, LambdaPrior
from models.bidding.days import AuctionDay
from models.bidding.environment import (
    DRLB_LAMBDA_FACTORS,
    ActionMode,
    AuctionEnv,
    action_lambda,
    observation_for,
)
from models.bidding.episodes import DayPerturbation, EpisodeSpec, sample_episode
from models.bidding.learning_curve import LearningCurve
from models.bidding.policy import (
    DEFAULT_STEPS,
    OBSERVATION_SIZE,
    PACING_OBSERVATION_SIZE,
    BidPolicy,
    CampaignState,
)
from models.bidding.replay import replay_steps

NetworkWeights = dict[str, torch.Tensor]


@dataclass(frozen=True)
class DQNConfig:
    episodes: int = 1000
    hidden_size: int = 64
    learning_rate: float = 1e-3
    batch_size: int = 128
    buffer_size: int = 200_000
    n_step: int = 8
    gamma: float = 1.0  # finite horizon with time left in the state: no discounting needed
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    exploration_fraction: float = 0.5  # of the episodes over which epsilon decays linearly
    updates_per_episode: int = 12
    target_update_every: int = 250  # gradient updates between target network copies
    validation_every: int = 50  # episodes
    validation_episodes: int = 12
    # the latest training days only generate validation episodes: the checkpoint kept is the one that
    # does best on days it never trained on (0: validate on generated days from all training days)
    validation_holdout_days: int = 0
    n_steps: int = DEFAULT_STEPS
    lambda_factors: tuple[float, ...] = DRLB_LAMBDA_FACTORS
    # relative: DRLB's adjustments of the current lambda; absolute: factors on the starting lambda,
    # decided from the pacing observation only (see models.bidding.environment)
    action_mode: ActionMode = "relative"
    pacing_gain: float = 0.0  # absolute mode: the proportional pacing term under the factors
    auction_type: AuctionType = AuctionType.SECOND_PRICE
    perturbation: DayPerturbation = field(default_factory=DayPerturbation)
    seed: int = 0


class QNetwork(nn.Module):
    """Dueling architecture (Wang et al. 2016): Q = V + A - mean(A). The value of a state (how much of
    the optimum is still reachable) dwarfs the differences between lambda factors; learning the two
    apart keeps those small differences from drowning in the value's error."""

    def __init__(self, n_actions: int, hidden_size: int, observation_size: int = OBSERVATION_SIZE) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(observation_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
        )
        self.state_value = nn.Linear(hidden_size, 1)
        self.advantage = nn.Linear(hidden_size, n_actions)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        hidden = self.body(observations)
        advantage = self.advantage(hidden)
        return self.state_value(hidden) + advantage - advantage.mean(dim=1, keepdim=True)


def _as_array(value: torch.Tensor | np.ndarray) -> np.ndarray:
    """A weight as numpy: torch tensors (training) and plain arrays (a served model's export) alike."""
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


class GreedyActor:
    """The network's greedy action in plain numpy: per-step decisions cost microseconds, not a torch call.
    The greedy action is the advantage head's argmax (the state value shifts every action alike)."""

    def __init__(self, weights: NetworkWeights) -> None:
        # nn.Sequential names its linear layers body.0 and body.2
        self.layers = [
            (_as_array(weights[f"{name}.weight"]).T.copy(), _as_array(weights[f"{name}.bias"]).copy())
            for name in ("body.0", "body.2", "advantage")
        ]

    def __call__(self, observation: np.ndarray) -> int:
        hidden = observation
        for depth, (weight, bias) in enumerate(self.layers):
            hidden = hidden @ weight + bias
            if depth < len(self.layers) - 1:
                hidden = np.maximum(hidden, 0.0)
        return int(np.argmax(hidden))


def observation_size(config: DQNConfig) -> int:
    return PACING_OBSERVATION_SIZE if config.action_mode == "absolute" else OBSERVATION_SIZE


def build_network(config: DQNConfig, weights: NetworkWeights | None = None) -> QNetwork:
    network = QNetwork(len(config.lambda_factors), config.hidden_size, observation_size(config))
    if weights is not None:
        network.load_state_dict(weights)
    network.eval()
    return network


@dataclass(frozen=True, eq=False)
class Trajectory:
    observations: np.ndarray  # (n_steps + 1, OBSERVATION_SIZE): the last one follows the last action
    actions: np.ndarray  # (n_steps,)
    rewards: np.ndarray  # (n_steps,)

    @property
    def episode_return(self) -> float:
        return float(self.rewards.sum())


def collect_episode(
    weights: NetworkWeights | None, episode: EpisodeSpec, epsilon: float, seed: int, config: DQNConfig
) -> Trajectory:
    """One epsilon-greedy episode (random actions without weights). Pure: same inputs, same output."""
    rng = np.random.default_rng(seed)
    actor = GreedyActor(weights) if weights is not None else None
    env = AuctionEnv(
        lambda _: episode,
        config.n_steps,
        config.lambda_factors,
        config.auction_type,
        config.action_mode,
        config.pacing_gain,
    )
    observation, _ = env.reset(seed=seed, options={"episode": episode})
    observations, actions, rewards = [observation], [], []
    terminated = False
    while not terminated:
        explore = actor is None or rng.random() < epsilon
        action = int(rng.integers(len(config.lambda_factors))) if explore else actor(observation)
        observation, reward, terminated, _, _ = env.step(np.int64(action))
        observations.append(observation)
        actions.append(action)
        rewards.append(reward)
    return Trajectory(np.stack(observations), np.array(actions, dtype=np.int64), np.array(rewards))


def greedy_return(weights: NetworkWeights, episodes: Sequence[EpisodeSpec], config: DQNConfig) -> float:
    """Mean return (% of the hindsight optimum) of the greedy policy over the episodes."""
    return float(
        np.mean([collect_episode(weights, episode, 0.0, 0, config).episode_return for episode in episodes])
    )


def fixed_lambda_return(episodes: Sequence[EpisodeSpec], config: DQNConfig) -> float:
    """Mean return of never adjusting lambda: what the agent starts from on the same episodes."""
    returns = []
    for episode in episodes:
        run = replay_steps(
            FixedLambda(episode.initial_lambda, config.n_steps),
            episode.day,
            episode.budget,
            config.auction_type,
        )
        returns.append(100.0 * run.value / episode.optimum_value if episode.optimum_value > 0 else 0.0)
    return float(np.mean(returns))


class ReplayBuffer:
    """n-step transitions in preallocated arrays, overwritten oldest first."""

    def __init__(self, capacity: int, observation_size: int = OBSERVATION_SIZE) -> None:
        self.capacity = capacity
        self.observations = np.zeros((capacity, observation_size), dtype=np.float32)
        self.next_observations = np.zeros((capacity, observation_size), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.returns = np.zeros(capacity, dtype=np.float32)
        self.bootstrap_discounts = np.zeros(capacity, dtype=np.float32)  # 0 where the episode ended
        self.size = 0
        self.position = 0

    def add_trajectory(self, trajectory: Trajectory, n_step: int, gamma: float) -> None:
        rewards = trajectory.rewards
        horizon = len(rewards)
        for t in range(horizon):
            end = min(t + n_step, horizon)
            discounts = gamma ** np.arange(end - t)
            index = self.position
            self.observations[index] = trajectory.observations[t]
            self.actions[index] = trajectory.actions[t]
            self.returns[index] = float((rewards[t:end] * discounts).sum())
            self.next_observations[index] = trajectory.observations[end]
            self.bootstrap_discounts[index] = gamma ** (end - t) if end < horizon else 0.0
            self.position = (self.position + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        picked = rng.integers(0, self.size, batch_size)
        return (
            torch.from_numpy(self.observations[picked]),
            torch.from_numpy(self.actions[picked]),
            torch.from_numpy(self.returns[picked]),
            torch.from_numpy(self.next_observations[picked]),
            torch.from_numpy(self.bootstrap_discounts[picked]),
        )


@dataclass(frozen=True, eq=False)
class DQNTrainingResult:
    weights: NetworkWeights  # of the best validation return
    config: DQNConfig
    curve: LearningCurve
    best_validation_return: float
    initial_validation_return: float  # the untrained network's greedy policy


def split_validation_days(
    train_days: Sequence[AuctionDay], holdout_days: int
) -> tuple[list[AuctionDay], list[AuctionDay]]:
    """(days to train on, days to validate on): the latest `holdout_days` by date are held out."""
    if holdout_days <= 0:
        return list(train_days), list(train_days)
    ordered = sorted(train_days, key=lambda day: day.date)
    if holdout_days >= len(ordered):
        raise ValueError(
            f"holding out {holdout_days} of {len(ordered)} training days leaves none to train on"
        )
    return ordered[:-holdout_days], ordered[-holdout_days:]


def _epsilon(episode: int, config: DQNConfig) -> float:
    decay_episodes = max(1, int(config.episodes * config.exploration_fraction))
    progress = min(episode / decay_episodes, 1.0)
    return config.epsilon_start + (config.epsilon_end - config.epsilon_start) * progress


ValidationCallback = Callable[[int, float], None]  # (episodes trained, greedy validation return)


def train_dqn(
    train_days: Sequence[AuctionDay],
    prior: LambdaPrior,
    config: DQNConfig,
    on_validation: ValidationCallback | None = None,
) -> DQNTrainingResult:
    """Train on generated episodes from the training days; keep the weights with the best validation.
    `on_validation` hears every validation return as it is measured (tuning prunes on it; it may
    raise to stop the training)."""
    # a network this small gains nothing from intra-op threads, and on shared cores they cost 100x
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(train_days, prior, config, on_validation)
    finally:
        torch.set_num_threads(threads)


def _train(
    train_days: Sequence[AuctionDay],
    prior: LambdaPrior,
    config: DQNConfig,
    on_validation: ValidationCallback | None,
) -> DQNTrainingResult:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    episode_days, validation_days = split_validation_days(train_days, config.validation_holdout_days)
    validation_rng = np.random.default_rng([config.seed, 1])
    validation = [
        sample_episode(validation_days, prior, validation_rng, config.perturbation)
        for _ in range(config.validation_episodes)
    ]
    online = build_network(config)
    target = copy.deepcopy(online)
    optimizer = torch.optim.Adam(online.parameters(), lr=config.learning_rate)
    buffer = ReplayBuffer(config.buffer_size, observation_size(config))

    def snapshot() -> NetworkWeights:
        return {name: tensor.detach().clone() for name, tensor in online.state_dict().items()}

    best_weights = snapshot()
    initial_return = best_return = greedy_return(best_weights, validation, config)
    training_returns: list[float] = []
    validation_at, validation_returns = [0], [initial_return]
    updates = 0
    for episode_index in range(config.episodes):
        epsilon = _epsilon(episode_index, config)
        spec = sample_episode(episode_days, prior, rng, config.perturbation)
        weights = None if epsilon >= 1.0 else snapshot()
        trajectory = collect_episode(weights, spec, epsilon, int(rng.integers(2**31)), config)
        training_returns.append(trajectory.episode_return)
        buffer.add_trajectory(trajectory, config.n_step, config.gamma)
        if buffer.size >= config.batch_size:
            online.train()
            for _ in range(config.updates_per_episode):
                _gradient_step(online, target, optimizer, buffer.sample(config.batch_size, rng))
                updates += 1
                if updates % config.target_update_every == 0:
                    target.load_state_dict(online.state_dict())
            online.eval()
        if (episode_index + 1) % config.validation_every == 0 or episode_index + 1 == config.episodes:
            validation_return = greedy_return(snapshot(), validation, config)
            validation_at.append(episode_index + 1)
            validation_returns.append(validation_return)
            if validation_return > best_return:
                best_return, best_weights = validation_return, snapshot()
            if on_validation is not None:
                on_validation(episode_index + 1, validation_return)
    curve = LearningCurve(
        training_returns=tuple(training_returns),
        validation_episodes=tuple(validation_at),
        validation_returns=tuple(validation_returns),
        fixed_lambda_return=fixed_lambda_return(validation, config),
    )
    return DQNTrainingResult(best_weights, config, curve, best_return, initial_return)


def _gradient_step(
    online: QNetwork, target: QNetwork, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...]
) -> None:
    observations, actions, returns, next_observations, discounts = batch
    with torch.no_grad():
        # double DQN: the online network picks the next action, the target network values it
        next_actions = online(next_observations).argmax(dim=1, keepdim=True)
        next_values = target(next_observations).gather(1, next_actions).squeeze(1)
        targets = returns + discounts * next_values
    values = online(observations).gather(1, actions.unsqueeze(1)).squeeze(1)
    loss = nn.functional.smooth_l1_loss(values, targets)
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(online.parameters(), 10.0)
    optimizer.step()


class DQNBidPolicy(BidPolicy):
    """The trained agent behind the per-request interface: at each step boundary, the greedy factor."""

    def __init__(self, weights: NetworkWeights, initial_lambda: float, config: DQNConfig) -> None:
        super().__init__(initial_lambda=initial_lambda, n_steps=config.n_steps)
        self.actor = GreedyActor(weights)
        self.lambda_factors = config.lambda_factors
        self.action_mode = config.action_mode
        self.pacing_gain = config.pacing_gain

    def next_lambda(self, state: CampaignState) -> tuple[float, tuple[float, ...]]:
        action = self.actor(observation_for(state, self.action_mode))
        factor = self.lambda_factors[action]
        return action_lambda(state, factor, self.action_mode, self.pacing_gain), state.controller_memory
