"""The bidding core: budget guard, hindsight optimum, environment, baselines, DQN, policy interface.

Tiny hand-built days keep every test fast; the iPinYou test is marked `realdata` and skips when the
shared data folder is absent.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import math
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import polars as pl
import pytest
from gymnasium.utils.env_checker import check_env

from features.contract import AUCTIONS
from models.bidding.auction import AuctionType, guard_bid, is_within_budget, resolve_auctions
from models.bidding.baselines import (
    ConstantBid,
    FixedLambda,
    LambdaPrior,
    LinearBid,
    PIDPacing,
    reference_bid_value,
    tune_constant_bid,
    tune_linear_base_bid,
)
from models.bidding.click_model import ClickModel
from models.bidding.days import AuctionDay, budget_for, days_from_frame, sample_clicks, unconstrained_spend
from models.bidding.dqn import (
    DQNBidPolicy,
    DQNConfig,
    build_network,
    collect_episode,
    fixed_lambda_return,
    greedy_return,
    split_validation_days,
    train_dqn,
)
from models.bidding.environment import AuctionEnv
from models.bidding.episodes import DayPerturbation, episode_for, sample_episode
from models.bidding.hindsight import hindsight_lambda, hindsight_optimum, knapsack_optimum
from models.bidding.policy import BidOutcome, BidPolicy, BidRequest
from models.bidding.replay import replay_requests, replay_steps
from models.bidding.synthetic import SyntheticMarket, generate_auctions

IPINYOU_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ipinyou-2259"
SMALL_STEPS = 12
BOTH_AUCTIONS = (AuctionType.SECOND_PRICE, AuctionType.FIRST_PRICE)


def make_day(n_requests: int = 400, seed: int = 0, price_level: float = 1.0) -> AuctionDay:
    """Requests over a day with busier afternoons; pCTR mildly correlated with the market price."""
    rng = np.random.default_rng(seed)
    time_of_day = np.sort(rng.beta(2.0, 1.6, n_requests))
    quality = rng.normal(0.0, 1.0, n_requests)
    market_price = price_level * np.exp(0.3 * quality + rng.normal(0.0, 0.5, n_requests))
    pctr = 1 / (1 + np.exp(-(-4.0 + 0.6 * quality + rng.normal(0.0, 0.3, n_requests))))
    return AuctionDay(
        date=dt.date(2026, 1, 1) + dt.timedelta(days=seed),
        time_of_day=time_of_day,
        market_price=market_price,
        floor_price=np.where(rng.random(n_requests) < 0.2, 0.5 * price_level, 0.0),
        pctr=pctr,
        value=np.ones(n_requests),
        click_prob=pctr,
    )


def random_dqn_policy(initial_lambda: float, n_steps: int = SMALL_STEPS, seed: int = 0) -> DQNBidPolicy:
    import torch

    torch.manual_seed(seed)
    config = DQNConfig(n_steps=n_steps, hidden_size=16)
    return DQNBidPolicy(build_network(config).state_dict(), initial_lambda, config)


def policies_for(day: AuctionDay, budget_fraction: float) -> dict[str, BidPolicy]:
    initial_lambda = hindsight_lambda(day, budget_for(day, budget_fraction))
    return {
        "constant": ConstantBid(float(np.median(day.price_to_beat)), SMALL_STEPS),
        "linear": LinearBid(float(np.median(day.price_to_beat)), float(day.bid_value.mean()), SMALL_STEPS),
        "fixed_lambda": FixedLambda(initial_lambda * 0.5, SMALL_STEPS),
        "pid": PIDPacing(initial_lambda * 2.0, n_steps=SMALL_STEPS),
        "dqn": random_dqn_policy(initial_lambda),
    }


# ---------------------------------------------------------------------------------------------
# budget guard


def test_guard_cuts_bids_to_the_remaining_budget() -> None:
    assert guard_bid(5.0, 2.0) == 2.0
    assert guard_bid(1.0, 2.0) == 1.0
    assert guard_bid(float("nan"), 2.0) == 0.0
    assert guard_bid(-1.0, 2.0) == 0.0
    assert guard_bid(float("inf"), 2.0) == 2.0
    assert guard_bid(3.0, 0.0) == 0.0


@pytest.mark.parametrize("auction_type", BOTH_AUCTIONS)
def test_resolve_auctions_never_overspends_with_infinite_and_nan_bids(auction_type: AuctionType) -> None:
    prices = np.array([0.2, 0.5, 0.1, 0.3, 0.05, 0.4])
    bids = np.array([np.inf, 1e12, np.nan, 0.35, 10.0, np.inf])
    won, cost = resolve_auctions(bids, prices, 0.8, auction_type)
    assert is_within_budget(float(cost.sum()), 0.8)
    assert not won[2] and cost[2] == 0.0  # a NaN bid is no bid
    assert (cost[~won] == 0).all()
    if auction_type is AuctionType.FIRST_PRICE:
        assert cost[0] == pytest.approx(0.8)  # the infinite bid was cut to the whole budget and paid it
        assert cost[1:].sum() == 0.0
    else:
        assert cost[0] == 0.2


@pytest.mark.parametrize("auction_type", BOTH_AUCTIONS)
def test_resolve_auctions_equals_one_auction_at_a_time(auction_type: AuctionType) -> None:
    rng = np.random.default_rng(3)
    prices = rng.lognormal(0.0, 0.5, 300)
    bids = prices * rng.lognormal(0.0, 0.7, 300)
    won, cost = resolve_auctions(bids, prices, 40.0, auction_type)
    remaining = 40.0
    for index in range(300):
        bid = guard_bid(bids[index], remaining)
        expected_won = bid > prices[index]
        expected_cost = (
            (prices[index] if auction_type is AuctionType.SECOND_PRICE else bid) if expected_won else 0.0
        )
        assert won[index] == expected_won
        assert cost[index] == pytest.approx(expected_cost)
        remaining -= expected_cost


@pytest.mark.parametrize("auction_type", BOTH_AUCTIONS)
@pytest.mark.parametrize("replay", [replay_requests, replay_steps])
def test_no_policy_spends_over_budget_even_with_huge_pctrs(auction_type: AuctionType, replay) -> None:
    day = make_day(seed=1)
    huge = replace(day, pctr=day.pctr * 1e9)  # "probabilities" far above 1: bids in the billions
    for fraction in (0.5, 0.05):
        budget = budget_for(day, fraction)
        for name, policy in policies_for(day, fraction).items():
            run = replay(policy, huge, budget, auction_type)
            assert is_within_budget(run.spend, budget), (name, fraction, run.spend, budget)
            assert run.spend_curve[-1] == pytest.approx(run.spend)


@pytest.mark.parametrize("auction_type", BOTH_AUCTIONS)
def test_every_bid_through_the_interface_is_within_the_remaining_budget(auction_type: AuctionType) -> None:
    day = make_day(seed=2)
    budget = budget_for(day, 0.05)
    policy = PIDPacing(1e-9, n_steps=SMALL_STEPS)  # a tiny lambda: bids far above any price
    state = policy.start(budget)
    for index in range(day.n_requests):
        request = BidRequest(float(day.time_of_day[index]), float(day.pctr[index]))
        bid = policy.bid(state, request)
        assert 0.0 <= bid <= state.remaining_budget
        price = float(day.price_to_beat[index])
        won = bid > price
        cost = (price if auction_type is AuctionType.SECOND_PRICE else bid) if won else 0.0
        state = policy.update(state, BidOutcome(request, bid, won, cost))
    assert is_within_budget(state.spent, budget)


@pytest.mark.parametrize("auction_type", BOTH_AUCTIONS)
def test_environment_never_spends_over_budget(auction_type: AuctionType) -> None:
    day = replace(make_day(seed=4), pctr=make_day(seed=4).pctr * 1e6)
    episode = episode_for(day, 0.1, initial_lambda=1e-6)
    env = AuctionEnv(lambda _: episode, n_steps=SMALL_STEPS, auction_type=auction_type)
    env.reset(seed=0)
    terminated = False
    while not terminated:
        _, _, terminated, _, info = env.step(np.int64(0))  # always lower lambda: bid ever higher
        assert is_within_budget(info["spent"], episode.budget)


# ---------------------------------------------------------------------------------------------
# hindsight optimum


def test_optimum_of_a_hand_solvable_day() -> None:
    # values 3, 2, 2, 1 at costs 3, 1, 1, 2 with a budget of 3: ratios 1, 2, 2, 0.5.
    # LP: both ratio-2 requests (cost 2, value 4) and a third of the first: 4 + 3 / 3 = 5.
    # Integral: {1, 2} is worth 4; nothing else fits beside it; {0} alone is 3. The optimum is 4.
    day = AuctionDay(
        date=dt.date(2026, 1, 1),
        time_of_day=np.array([0.1, 0.2, 0.3, 0.4]),
        market_price=np.array([3.0, 1.0, 1.0, 2.0]),
        floor_price=np.zeros(4),
        pctr=np.array([3.0, 2.0, 2.0, 1.0]),
        value=np.ones(4),
        click_prob=np.array([3.0, 2.0, 2.0, 1.0]),
    )
    optimum = hindsight_optimum(day, 3.0)
    assert optimum.lp_value == pytest.approx(5.0)
    assert optimum.greedy_value == pytest.approx(4.0)
    assert optimum.greedy_won.tolist() == [False, True, True, False]
    assert optimum.greedy_spend == pytest.approx(2.0)
    assert optimum.threshold_ratio == pytest.approx(1.0)
    # the floor is part of the price to beat: a floor of 2 on request 1 makes {0} and {1, 2} tie on cost
    floored = replace(day, floor_price=np.array([0.0, 2.0, 0.0, 0.0]))
    assert hindsight_optimum(floored, 3.0).greedy_value == pytest.approx(4.0)
    assert hindsight_optimum(floored, 3.0).lp_value == pytest.approx(2 + 3 * 2 / 3)


def test_greedy_lies_between_brute_force_optimum_and_lp_bound() -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        values, costs = rng.uniform(0, 1, 9), rng.uniform(0.1, 1, 9)
        budget = float(rng.uniform(0.5, 3.0))
        best = max(
            values[list(subset)].sum()
            for size in range(10)
            for subset in itertools.combinations(range(9), size)
            if costs[list(subset)].sum() <= budget
        )
        optimum = knapsack_optimum(values, costs, budget)
        assert optimum.greedy_value <= best + 1e-12
        assert best <= optimum.lp_value + 1e-12
        assert optimum.greedy_spend <= budget


@pytest.mark.parametrize("auction_type", BOTH_AUCTIONS)
def test_hindsight_optimum_bounds_every_policy(auction_type: AuctionType) -> None:
    for seed in range(3):
        day = (
            sample_clicks(make_day(seed=seed), np.random.default_rng(seed))
            if seed == 2
            else make_day(seed=seed)
        )
        for fraction in (0.5, 0.25, 0.1, 0.03):
            budget = budget_for(day, fraction)
            bound = hindsight_optimum(day, budget).lp_value
            for name, policy in policies_for(day, fraction).items():
                run = replay_requests(policy, day, budget, auction_type)
                assert run.value <= bound + 1e-9, (name, seed, fraction)


def test_bidding_at_the_hindsight_lambda_reaches_the_lp_bound_within_one_request() -> None:
    day = make_day(n_requests=2000, seed=6)
    budget = budget_for(day, 0.2)
    optimum = hindsight_optimum(day, budget)
    run = replay_steps(FixedLambda(hindsight_lambda(day, budget), SMALL_STEPS), day, budget)
    assert optimum.lp_value - run.value <= day.credited_value.max() + 1e-12


def test_value_objective_bids_and_optimum_follow_the_value_of_a_click() -> None:
    # two identical requests but for the value of a click (a conversion value objective)
    day = AuctionDay(
        date=dt.date(2026, 1, 1),
        time_of_day=np.array([0.2, 0.6]),
        market_price=np.array([1.0, 1.0]),
        floor_price=np.zeros(2),
        pctr=np.array([0.1, 0.1]),
        value=np.array([1.0, 5.0]),
        click_prob=np.array([0.1, 0.1]),
    )
    optimum = hindsight_optimum(day, 1.5)
    assert optimum.greedy_won.tolist() == [False, True]
    assert optimum.greedy_value == pytest.approx(0.5)
    policy = FixedLambda(0.1, SMALL_STEPS)
    state = policy.start(10.0)
    assert policy.bid(state, BidRequest(0.6, 0.1, value=5.0)) == pytest.approx(5.0)
    assert policy.bid(state, BidRequest(0.2, 0.1, value=1.0)) == pytest.approx(1.0)
    run = replay_requests(
        FixedLambda(0.05, SMALL_STEPS), day, 1.5
    )  # bids 2 and 10: wins the first, then 0.5 left
    assert run.wins == 1 and run.value == pytest.approx(0.1)  # spent on the cheap-value request first
    assert run.value <= optimum.lp_value


# ---------------------------------------------------------------------------------------------
# days


def test_days_split_by_local_date_and_daylight_saving_days_fill_zero_to_one() -> None:
    # 2026-03-29 is 23 hours long in Berlin; its last request at 23:30 local is 22.5 hours in
    timestamps = [
        dt.datetime(2026, 3, 28, 23, 30, tzinfo=dt.UTC),  # 00:30 on the 29th in Berlin (CET)
        dt.datetime(2026, 3, 29, 21, 30, tzinfo=dt.UTC),  # 23:30 on the 29th (CEST)
        dt.datetime(2026, 3, 29, 22, 30, tzinfo=dt.UTC),  # 00:30 on the 30th
    ]
    frame = pl.DataFrame(
        {
            "request_ts": timestamps,
            "market_price": [1000.0, 2000.0, 3000.0],
            "floor_price": [0.0, 500.0, 0.0],
            "pctr": [0.1, 0.2, 0.3],
            "worth": [2.0, 3.0, 4.0],
        }
    )
    days = days_from_frame(frame, "Europe/Berlin", value_column="worth", cpm_prices=True)
    assert [day.date for day in days] == [dt.date(2026, 3, 29), dt.date(2026, 3, 30)]
    first = days[0]
    assert first.time_of_day == pytest.approx([0.5 / 23, 22.5 / 23])
    assert first.market_price.tolist() == [1.0, 2.0]  # CPM -> per impression
    assert first.value.tolist() == [2.0, 3.0]
    assert unconstrained_spend(first) == pytest.approx(3.0)
    assert budget_for(first, 0.25) == pytest.approx(0.75)


# ---------------------------------------------------------------------------------------------
# policy interface


def test_update_and_bid_are_pure() -> None:
    day = make_day(seed=7)
    budget = budget_for(day, 0.2)
    for policy in policies_for(day, 0.2).values():
        state = policy.start(budget)
        for index in range(0, day.n_requests, 37):
            request = BidRequest(float(day.time_of_day[index]), float(day.pctr[index]))
            snapshot = copy.deepcopy(state)
            bid = policy.bid(state, request)
            assert state == snapshot
            assert policy.bid(state, request) == bid
            outcome = BidOutcome(request, bid, won=True, cost=min(bid, 0.01))
            updated = policy.update(state, outcome)
            assert state == snapshot  # the input state is untouched
            assert policy.update(state, outcome) == updated  # same inputs, same output
            assert updated.spent == pytest.approx(state.spent + outcome.cost)
            state = updated


def test_state_crosses_empty_steps_like_the_environment() -> None:
    policy = PIDPacing(1.0, n_steps=SMALL_STEPS)
    state = policy.start(10.0)
    late = BidRequest(time_of_day=0.99, pctr=0.1)
    later_state = policy.update(state, BidOutcome(late, 0.1, won=True, cost=0.05))
    assert later_state.step == SMALL_STEPS - 1
    assert later_state.bid_lambda < state.bid_lambda  # far behind the ideal spend: lambda fell


@pytest.mark.parametrize("auction_type", BOTH_AUCTIONS)
def test_request_replay_equals_step_replay(auction_type: AuctionType) -> None:
    day = make_day(seed=8)
    for fraction in (0.3, 0.05):
        budget = budget_for(day, fraction)
        for name, policy in policies_for(day, fraction).items():
            by_request = replay_requests(policy, day, budget, auction_type)
            by_step = replay_steps(policy, day, budget, auction_type)
            assert by_request.value == pytest.approx(by_step.value), name
            assert by_request.spend == pytest.approx(by_step.spend), name
            assert by_request.wins == by_step.wins, name


def test_dqn_policy_replays_exactly_what_the_environment_rolled_out() -> None:
    day = make_day(seed=9)
    policy = random_dqn_policy(hindsight_lambda(day, budget_for(day, 0.1)) * 3, seed=1)
    episode = episode_for(day, 0.1, policy.initial_lambda)
    config = DQNConfig(n_steps=SMALL_STEPS, hidden_size=16)
    import torch

    torch.manual_seed(1)
    trajectory = collect_episode(build_network(config).state_dict(), episode, 0.0, 0, config)
    run = replay_requests(policy, day, episode.budget)
    assert trajectory.episode_return == pytest.approx(100 * run.value / episode.optimum_value)


# ---------------------------------------------------------------------------------------------
# environment


def _sampler(days: list[AuctionDay]):
    prior = LambdaPrior.fit(days)
    return lambda rng: sample_episode(days, prior, rng)


def test_environment_follows_the_gymnasium_api() -> None:
    days = [make_day(seed=seed) for seed in range(3)]
    env = AuctionEnv(_sampler(days), n_steps=SMALL_STEPS)
    check_env(env, skip_render_check=True)
    assert isinstance(env.action_space, gym.spaces.Discrete)
    observation, info = env.reset(seed=11)
    assert env.observation_space.contains(observation)
    assert isinstance(info, dict)
    again, _ = env.reset(seed=11)
    assert np.array_equal(observation, again)  # seeded: the same generated day
    env.action_space.seed(5)
    actions, rewards = [], []
    terminated = truncated = False
    while not (terminated or truncated):
        actions.append(env.action_space.sample())
        observation, reward, terminated, truncated, info = env.step(actions[-1])
        assert env.observation_space.contains(observation)
        assert isinstance(reward, float)
        rewards.append(reward)
    assert len(actions) == SMALL_STEPS
    assert info["spent"] <= info["budget"], "no episode overspends"
    # the same day and the same actions earn the same rewards; a return is a percentage of the
    # day's hindsight optimum, which no sequence of bids beats
    env.reset(seed=11)
    again = [env.step(action)[1] for action in actions]
    assert again == rewards
    assert min(rewards) >= 0 and sum(rewards) <= 100 + 1e-9
    with pytest.raises(RuntimeError):
        env.step(np.int64(0))


def test_generated_days_vary_and_credit_only_the_bidders_pctr() -> None:
    days = [make_day(seed=seed) for seed in range(2)]
    prior = LambdaPrior.fit(days)
    rng = np.random.default_rng(0)
    episodes = [sample_episode(days, prior, rng, DayPerturbation()) for _ in range(10)]
    assert len({episode.day.n_requests for episode in episodes}) > 5
    assert len({round(episode.budget_fraction, 6) for episode in episodes}) == 10
    for episode in episodes:
        assert np.array_equal(episode.day.click_prob, episode.day.pctr)
        assert np.all(np.diff(episode.day.time_of_day) >= 0)
        assert 1 / 32 <= episode.budget_fraction <= 2 / 3


# ---------------------------------------------------------------------------------------------
# baselines


def test_pid_pacing_spends_closer_to_the_budget_than_a_constant_bid() -> None:
    train = [make_day(seed=seed) for seed in range(3)]
    test_day = make_day(seed=10, price_level=1.6)  # competition got dearer than on the training days
    fraction = 0.2
    budget = budget_for(test_day, fraction)
    constant = ConstantBid(tune_constant_bid(train, fraction), SMALL_STEPS)
    pid = PIDPacing(LambdaPrior.fit(train)(fraction), n_steps=SMALL_STEPS)
    constant_run = replay_requests(constant, test_day, budget)
    pid_run = replay_requests(pid, test_day, budget)
    assert abs(pid_run.spend - budget) < abs(constant_run.spend - budget)
    assert pid_run.spend >= 0.9 * budget
    # and it tracks the ideal linear curve more closely over the day
    ideal = budget * np.arange(1, SMALL_STEPS + 1) / SMALL_STEPS
    assert np.abs(pid_run.spend_curve - ideal).mean() < np.abs(constant_run.spend_curve - ideal).mean()


def test_tuned_baselines_earn_more_than_untuned_levels_on_their_training_days() -> None:
    train = [make_day(seed=seed) for seed in range(3)]
    fraction = 0.125
    reference = reference_bid_value(train)
    base_bid = tune_linear_base_bid(train, fraction)

    def total(policy: BidPolicy) -> float:
        return sum(replay_steps(policy, day, budget_for(day, fraction)).value for day in train)

    tuned = total(LinearBid(base_bid, reference, SMALL_STEPS))
    assert tuned >= total(LinearBid(base_bid * 3, reference, SMALL_STEPS))
    assert tuned >= total(LinearBid(base_bid / 3, reference, SMALL_STEPS))
    prior = LambdaPrior.fit(train)
    assert prior(0.5) < prior(0.125) < prior(1 / 32)  # a smaller budget needs a higher lambda


# ---------------------------------------------------------------------------------------------
# DQN


def test_rollout_is_a_pure_function_of_its_inputs() -> None:
    days = [make_day(seed=seed) for seed in range(2)]
    prior = LambdaPrior.fit(days)
    episode = sample_episode(days, prior, np.random.default_rng(1))
    config = DQNConfig(n_steps=SMALL_STEPS, hidden_size=16)
    weights = build_network(config).state_dict()
    first = collect_episode(weights, episode, 0.3, 42, config)
    second = collect_episode(weights, episode, 0.3, 42, config)
    assert np.array_equal(first.actions, second.actions)
    assert np.array_equal(first.rewards, second.rewards)
    assert len(first.actions) == SMALL_STEPS and first.observations.shape == (SMALL_STEPS + 1, 7)


def test_validation_days_are_the_latest_training_days() -> None:
    days = [make_day(n_requests=50, seed=seed) for seed in (2, 0, 1)]
    trained_on, validated_on = split_validation_days(days, 1)
    assert [day.date for day in trained_on] == [dt.date(2026, 1, 1), dt.date(2026, 1, 2)]
    assert [day.date for day in validated_on] == [dt.date(2026, 1, 3)]
    assert split_validation_days(days, 0) == (days, days)
    with pytest.raises(ValueError):
        split_validation_days(days, 3)


def test_dqn_improves_over_its_initial_policy_on_a_tiny_setting() -> None:
    days = [make_day(n_requests=1000, seed=seed) for seed in range(3)]
    prior = LambdaPrior.fit(days)
    # the starting lambda is often far off, so there is something to correct within the day
    perturbation = DayPerturbation(lambda_prior_sigma=0.7)
    config = DQNConfig(
        episodes=100,
        hidden_size=32,
        n_steps=SMALL_STEPS,
        updates_per_episode=8,
        batch_size=64,
        n_step=SMALL_STEPS,
        target_update_every=100,
        validation_every=25,
        validation_episodes=10,
        perturbation=perturbation,
        seed=1,
    )
    result = train_dqn(days, prior, config)
    assert len(result.curve.training_returns) == config.episodes
    assert result.curve.validation_episodes == (0, 25, 50, 75, 100)
    assert result.best_validation_return > result.initial_validation_return + 5.0
    # on fresh generated days too, not only on the validation days it was picked on
    fresh = [
        sample_episode(days, prior, np.random.default_rng([7, index]), perturbation) for index in range(12)
    ]
    import torch

    torch.manual_seed(config.seed)
    untrained = build_network(config).state_dict()  # the initial network train_dqn started from
    trained_return = greedy_return(result.weights, fresh, config)
    assert trained_return > greedy_return(untrained, fresh, config) + 10.0
    assert trained_return > fixed_lambda_return(fresh, config)  # better than never adjusting lambda


# ---------------------------------------------------------------------------------------------
# click model and the synthetic stand-in


def test_synthetic_log_follows_the_auctions_contract() -> None:
    log = generate_auctions(SyntheticMarket(requests_per_day=500), dt.date(2026, 3, 28), 2, seed=0)
    for column in AUCTIONS.columns:
        assert log.schema[column.name] == column.dtype, column.name
    assert log["auction_id"].n_unique() == log.height
    assert not (log["click"] & ~log["won"]).any()
    assert not (log["conversion"] & ~log["click"]).any()
    assert log["click_prob"].is_between(0, 1).all()
    again = generate_auctions(SyntheticMarket(requests_per_day=500), dt.date(2026, 3, 28), 2, seed=0)
    assert log.equals(again)


def test_click_model_is_calibrated_and_ranks_better_than_chance() -> None:
    market = SyntheticMarket(requests_per_day=6000, base_ctr=0.03)
    train = generate_auctions(market, dt.date(2026, 5, 1), 4, seed=1)
    test = generate_auctions(market, dt.date(2026, 5, 5), 2, seed=2)
    for calibration in ("isotonic", "platt"):
        from models.bidding.click_model import ClickModelConfig

        model = ClickModel(market.timezone, ClickModelConfig(n_estimators=60, calibration=calibration)).fit(
            train
        )
        predicted = model.predict(test)
        assert predicted.shape == (test.height,)
        assert ((predicted > 0) & (predicted <= 1)).all()
        assert predicted.mean() == pytest.approx(test["click"].mean(), rel=0.25)
        assert np.corrcoef(predicted, test["click_prob"].to_numpy())[0, 1] > 0.3


def test_one_request_scores_as_the_batch_does_to_the_bit() -> None:
    """The served bidder's single-row scorer and `ClickModel.predict` (what training evaluates) give
    the same probability for the same row, bit for bit, with either calibration; unseen categories
    included."""
    from models.bidding.click_model import NUMERIC_FEATURES, ClickModelConfig, auction_features
    from models.bidding.click_scorer import ClickScorer

    market = SyntheticMarket(requests_per_day=3000, base_ctr=0.05)
    train = generate_auctions(market, dt.date(2026, 5, 1), 3, seed=3)
    test = generate_auctions(market, dt.date(2026, 5, 4), 1, seed=4).head(400)
    test = test.with_columns(  # a few exchanges the model never saw
        pl.when(pl.int_range(pl.len()) % 7 == 0)
        .then(pl.lit("unseen"))
        .otherwise("exchange")
        .alias("exchange")
    )
    for calibration in ("isotonic", "platt"):
        config = ClickModelConfig(n_estimators=40, calibration=calibration)
        model = ClickModel(market.timezone, config).fit(train)
        batch = model.predict(test)
        scorer = ClickScorer.of(model)
        features = auction_features(test, market.timezone)
        single = np.array(
            [
                scorer.probability(
                    scorer.row(
                        {name: float(row[name]) for name in NUMERIC_FEATURES},
                        {column: row[column] for column in ("exchange", "slot_id", "slot_size", "region")},
                    )
                )
                for row in features.iter_rows(named=True)
            ]
        )
        assert batch.tobytes() == single.tobytes(), calibration
        assert len(np.unique(batch)) > 5, "the rows must not all score alike"


def test_calibration_map_computes_what_scikit_learn_computes() -> None:
    """`CalibrationMap.apply` replaces scikit-learn's fitted calibrators in `ClickModel`; it must
    give their numbers exactly (same figures before and after), clipped to the probability floor."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    from models.bidding.click_model import PROBABILITY_FLOOR, CalibrationMap

    rng = np.random.default_rng(5)
    raw = rng.beta(1, 20, 4000)
    labels = (rng.random(4000) < raw * 1.5).astype(int)
    new = np.concatenate([rng.beta(1, 20, 1000), [0.0, 1.0, raw.min() / 2, 0.999]])
    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, labels)
    expected = np.clip(isotonic.predict(new), PROBABILITY_FLOOR, 1.0)
    assert CalibrationMap.of_isotonic(isotonic).apply(new).tobytes() == expected.tobytes()
    logit = np.log(np.clip(raw, 1e-6, 1 - 1e-6) / (1 - np.clip(raw, 1e-6, 1 - 1e-6)))
    platt = LogisticRegression(C=1e6).fit(logit.reshape(-1, 1), labels)
    clipped = np.clip(new, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    new_logit = np.log(clipped / (1 - clipped)).reshape(-1, 1)
    expected = np.clip(platt.predict_proba(new_logit)[:, 1], PROBABILITY_FLOOR, 1.0)
    assert CalibrationMap.of_platt(platt).apply(new).tobytes() == expected.tobytes()


# ---------------------------------------------------------------------------------------------
# iPinYou semi-real replay


@pytest.mark.realdata
def test_ipinyou_replay_days_prices_and_known_clicks() -> None:
    if not (IPINYOU_DIR / "train.log.txt").exists():
        pytest.skip(f"real data not available: {IPINYOU_DIR}")
    from models.bidding.ipinyou_replay import read_log, requests_frame, train_test_days

    train, test = train_test_days(IPINYOU_DIR)
    assert [day.date for day in train] == [dt.date(2013, 10, day) for day in (19, 20, 21)]
    assert [day.date for day in test] == [dt.date(2013, 10, day) for day in (22, 23, 24, 25)]
    assert [day.n_requests for day in test] == [303, 1171, 1321, 1376]
    log = read_log(IPINYOU_DIR / "train.log.txt")
    frame = requests_frame(log)
    first = frame.row(0, named=True)
    # 20131022135101295 in Beijing is 05:51:01.295 UTC; payprice 205 fen CPM = 0.00205 CNY per impression
    assert first["request_ts"] == dt.datetime(2013, 10, 22, 5, 51, 1, 295000, tzinfo=dt.UTC)
    assert first["market_price"] == pytest.approx(205 / 100_000)
    assert first["floor_price"] == pytest.approx(13 / 100_000)
    pctr = frame["pctr"].to_numpy()
    assert 0.0003 < pctr.mean() < 0.002
    assert math.isclose(float(requests_frame(log)["pctr"][0]), float(pctr[0]))  # the same every run
    # no requests after 20:00 Beijing time: the advertiser paused delivery
    assert max(float(day.time_of_day.max()) for day in train) < 20 / 24
