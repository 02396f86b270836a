"""Episodes for the environment: a day, its budget and the lambda a bidder would start it with.

The training-day generator resamples and perturbs logged training days so that an agent sees many
days unlike the few it was given: traffic volume, the competition's price level, its drift over the
day and its spread (which changes the share of auctions worth winning), per-request noise on prices
and pCTRs, the click rate, the arrival times, the budget (a fraction of the day's unconstrained
spend) and the error of the starting lambda (from `LambdaPrior`, fitted on the unperturbed days).
Without the spread and noise an agent trained on three iPinYou days learnt their win rates by
heart and overbid on the test days.
Rewards on generated days credit the bidder's own pCTR, never a true click model, so training uses
nothing a real bidder would not have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from models.bidding.baselines import LambdaPrior
from models.bidding.days import AuctionDay, budget_for
from models.bidding.hindsight import lp_bound

MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True, eq=False)
class EpisodeSpec:
    day: AuctionDay
    budget: float
    budget_fraction: float
    initial_lambda: float
    optimum_value: float  # the day's hindsight LP bound: rewards are percentages of it


def episode_for(day: AuctionDay, budget_fraction: float, initial_lambda: float) -> EpisodeSpec:
    budget = budget_for(day, budget_fraction)
    return EpisodeSpec(
        day=day,
        budget=budget,
        budget_fraction=budget_fraction,
        initial_lambda=initial_lambda,
        optimum_value=lp_bound(day.credited_value, day.price_to_beat, budget),
    )


@dataclass(frozen=True)
class DayPerturbation:
    # traffic volume factor, log-uniform: campaigns see very different volumes from day to day
    min_volume_factor: float = 0.4
    max_volume_factor: float = 1.6
    price_sigma: float = 0.15  # log-normal factor on all prices of the day
    # log prices spread around their mean by a factor in this range: changes which share of the
    # auctions is worth winning, so no win rate is "the right one" to steer towards
    min_price_dispersion: float = 0.75
    max_price_dispersion: float = 1.25
    request_noise_sigma: float = 0.2  # log-normal noise on each request's price and pCTR
    hourly_price_sigma: float = 0.05  # random walk of the log price level, per hour
    pctr_sigma: float = 0.1  # log-normal factor on the day's click rates
    time_jitter_minutes: float = 20.0  # each request moves by up to this much, within the day
    lambda_prior_sigma: float = 0.25  # log-normal error of the starting lambda on top of the prior's own
    min_budget_fraction: float = 1 / 32
    max_budget_fraction: float = 2 / 3


def perturb_day(day: AuctionDay, rng: np.random.Generator, perturbation: DayPerturbation) -> AuctionDay:
    """A new day resampled from `day`: volume, prices, click rates and arrival times perturbed."""
    volume_factor = math.exp(
        rng.uniform(math.log(perturbation.min_volume_factor), math.log(perturbation.max_volume_factor))
    )
    n_requests = max(1, round(day.n_requests * volume_factor))
    picked = rng.integers(0, day.n_requests, n_requests)
    jitter = rng.uniform(-1.0, 1.0, n_requests) * perturbation.time_jitter_minutes / MINUTES_PER_DAY
    time_of_day = np.clip(day.time_of_day[picked] + jitter, 0.0, np.nextafter(1.0, 0.0))
    order = np.argsort(time_of_day, kind="stable")
    picked, time_of_day = picked[order], time_of_day[order]

    hourly_log_price = np.cumsum(rng.normal(0.0, perturbation.hourly_price_sigma, 24))
    hour = np.minimum((time_of_day * 24).astype(int), 23)
    priced = day.market_price[picked] > 0
    log_price = np.log(np.where(priced, day.market_price[picked], 1.0))
    center = float(log_price[priced].mean()) if priced.any() else 0.0
    dispersion = rng.uniform(perturbation.min_price_dispersion, perturbation.max_price_dispersion)
    spread_log_price = center + dispersion * (log_price - center)
    price_factor = np.exp(
        spread_log_price
        - log_price
        + rng.normal(0.0, perturbation.price_sigma)
        + hourly_log_price[hour]
        + rng.normal(0.0, perturbation.request_noise_sigma, n_requests)
    )
    pctr_factor = np.exp(
        rng.normal(0.0, perturbation.pctr_sigma)
        + rng.normal(0.0, perturbation.request_noise_sigma, n_requests)
    )
    pctr = np.clip(day.pctr[picked] * pctr_factor, 0.0, 1.0)
    return replace(
        day,
        time_of_day=time_of_day,
        market_price=day.market_price[picked] * price_factor,
        floor_price=day.floor_price[picked] * price_factor,
        pctr=pctr,
        value=day.value[picked],
        click_prob=pctr,  # credit the bidder's own view: no true click model while training
    )


def sample_episode(
    days: Sequence[AuctionDay],
    prior: LambdaPrior,
    rng: np.random.Generator,
    perturbation: DayPerturbation | None = None,
) -> EpisodeSpec:
    """One generated training episode: a perturbed day, a log-uniform budget fraction, a noisy lambda."""
    perturbation = perturbation or DayPerturbation()
    day = perturb_day(days[int(rng.integers(len(days)))], rng, perturbation)
    budget_fraction = math.exp(
        rng.uniform(math.log(perturbation.min_budget_fraction), math.log(perturbation.max_budget_fraction))
    )
    initial_lambda = prior(budget_fraction) * math.exp(rng.normal(0.0, perturbation.lambda_prior_sigma))
    return episode_for(day, budget_fraction, initial_lambda)
