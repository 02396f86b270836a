"""The choice model, and the true expected demand it implies.

A shopping session of user u in market m on day d ends in at most one purchase, chosen by a
multinomial logit over the products listed (and live) in m plus an outside option "buy nothing":

    P(p | u, d) = exp(a[u, p] + b[p, d]) / (exp(v0[m]) + sum_q exp(a[u, q] + b[q, d]))

    a[u, p] = latent[u] . latent[p] + category_affinity[u, category(p)]
              + price_preference[u] * price_tier[p] + popularity[p]                  (static taste)
    b[p, d] = category_season[category(p), d] + trend[p] * years(d)
              - price_sensitivity[m] * log(price[p, m, d] / reference_price[p, m])
              + promo_badge * [p on promotion in m on d]                             (this day's offer)

price[p, m, d] is the shelf price: the monthly FX-repriced local list price after any promotion,
and reference_price the local price at the starting exchange rates, so both promotions and a
weakening currency move demand. v0[m] is set so that about `session_purchase_probability` of the
sessions buy. Each user has Poisson(activity[u] x traffic[m, d]) sessions per day once signed up;
a purchase is 1 + Poisson(extra_units_mean) units. A session that picks a product that is out of
stock that day buys nothing (a lost sale, no substitution), so

    true mean demand[p, m, d] = (1 + extra_units_mean) x traffic[m, d]
                                x sum_u activity[u] [u active on d] P(p | u, d)

is the uncensored demand; the `events` table shows zero purchases on stock-out days. Both sums over
users are computed exactly with two matrix products per market, in chunks of users.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from features.simulator.clock import day_of_year
from features.simulator.config import MarketplaceConfig
from features.simulator.population import Products, Users, product_ids
from features.simulator.pricing import Prices, discounted

CHUNK_CELLS = 12_000_000  # users x products per chunk: big enough for fast BLAS, small enough for memory


@dataclass(frozen=True)
class MarketDemand:
    """One market's choice model on every simulated day, as the samplers need it."""

    market: int
    products: np.ndarray  # global indices of the products listed in the market
    users: np.ndarray  # global indices of the market's users, ordered by the day they become active
    weight: np.ndarray  # exp(b): products x days, 0 before the product is live
    best_weight: np.ndarray  # per product, the largest weight over the days
    outside_weight: float  # exp(v0)
    expected_sessions: np.ndarray  # per day
    price: np.ndarray  # products x days shelf price (after promotion), local currency
    utility_mean: float  # mean and sd of a[u, p] over the market's users and products
    utility_sd: float
    inclusive_value: np.ndarray  # per market user (same order as `users`): log sum_p exp(a[u, p])

    def user_chunks(self) -> list[slice]:
        return user_chunks(len(self.users), len(self.products))


@dataclass(frozen=True)
class DemandTruth:
    """What the ground truth records for one market, per listed product x day."""

    shift: np.ndarray  # utility shift b (-inf before the product is live)
    list_price: np.ndarray
    discount: np.ndarray
    mean_purchases: np.ndarray  # expected purchases, uncensored


def user_chunks(n_users: int, n_products: int) -> list[slice]:
    """Slices of users small enough to hold a users x products matrix."""
    size = max(1, CHUNK_CELLS // max(1, n_products))
    return [slice(start, start + size) for start in range(0, n_users, size)]


def draw_active_users(
    demand: MarketDemand, users: Users, day: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """For each day given, a user active that day drawn in proportion to activity (a row of demand.users).

    Every day given must have an active user (a day with expected sessions > 0 has one).
    """
    active_from = users.active_from[demand.users]  # ascending: the active users are a prefix
    cumulative = np.cumsum(users.activity[demand.users])
    n_active = np.searchsorted(active_from, day, side="right")
    draw = rng.random(len(day)) * cumulative[n_active - 1]
    return np.minimum(np.searchsorted(cumulative, draw, side="right"), n_active - 1)


def static_utility(
    users: Users, products: Products, user_index: np.ndarray, product_index: np.ndarray
) -> np.ndarray:
    """a[u, p] for every user x product pair of the two index arrays."""
    category = products.category[product_index]
    return (
        users.latent[user_index] @ products.latent[product_index].T
        + users.category_affinity[user_index][:, category]
        + users.price_preference[user_index, None] * products.price_tier[None, product_index]
        + products.popularity[None, product_index]
    )


def pair_utility(
    users: Users, products: Products, user_index: np.ndarray, product_index: np.ndarray
) -> np.ndarray:
    """a[u, p] for aligned pairs (user_index[i], product_index[i])."""
    return (
        np.einsum("ij,ij->i", users.latent[user_index], products.latent[product_index])
        + users.category_affinity[user_index, products.category[product_index]]
        + users.price_preference[user_index] * products.price_tier[product_index]
        + products.popularity[product_index]
    )


def category_seasonality(
    n_categories: int, days: np.ndarray, amplitude_max: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(categories x days utility, amplitudes, peak days of year): one yearly wave per category."""
    amplitude = rng.uniform(0.0, amplitude_max, n_categories)
    peak = rng.uniform(1, 366, n_categories)
    wave = amplitude[:, None] * np.cos(2 * np.pi * (day_of_year(days)[None, :] - peak[:, None]) / 365.25)
    return wave, amplitude, peak


def market_demand(
    config: MarketplaceConfig,
    market: int,
    users: Users,
    products: Products,
    listed: np.ndarray,
    traffic: np.ndarray,
    prices: Prices,
    discount: np.ndarray,
    category_season: np.ndarray,
) -> tuple[MarketDemand, DemandTruth]:
    """The choice model of one market and its exact expected purchases per product and day."""
    settings, choice = config.markets[market], config.choice
    n_days = traffic.shape[1]
    product_index = np.flatnonzero(listed[:, market])
    market_users = np.flatnonzero(users.market == market)
    market_users = market_users[np.argsort(users.active_from[market_users], kind="stable")]

    list_price = prices.daily_list_price(market, product_index)
    promo = discount[market][product_index].astype(np.float64)
    price = discounted(list_price, promo, settings.price_decimals)
    years = np.arange(n_days) / 365.25
    shift = (
        category_season[products.category[product_index]]
        + products.trend[product_index, None] * years[None, :]
        - settings.price_sensitivity * np.log(price / prices.reference_price[product_index, market, None])
        + choice.promo_badge * (promo > 0)
    )
    live = np.arange(n_days)[None, :] >= products.live_from[product_index, None]
    shift = np.where(live, shift, -np.inf)
    weight = np.exp(shift)
    active = np.arange(n_days)[None, :] >= users.active_from[market_users, None]
    session_rate = users.activity[market_users, None] * active  # users x days, before traffic

    # pass 1: each user's sum over products per day, and moments of the static utility
    inside = np.empty((len(market_users), n_days))
    inclusive_value = np.empty(len(market_users))
    total, total_sq = 0.0, 0.0
    for chunk in user_chunks(len(market_users), len(product_index)):
        utility = static_utility(users, products, market_users[chunk], product_index)
        taste = np.exp(utility)
        inside[chunk] = taste @ weight
        inclusive_value[chunk] = np.log(taste.sum(axis=1))
        total += utility.sum()
        total_sq += np.square(utility).sum()
    cells = max(1, len(market_users) * len(product_index))
    utility_mean = total / cells
    # the outside option buys nothing in (1 - target) of an average session
    mean_inside = (session_rate * inside).sum() / max(session_rate.sum(), 1e-12)
    target = choice.session_purchase_probability
    outside = max(mean_inside * (1 - target) / target, 1e-12)
    # pass 2: expected purchases, the sum over users of session rate x choice probability
    per_day = np.zeros((n_days, len(product_index)))
    for chunk in user_chunks(len(market_users), len(product_index)):
        taste = np.exp(static_utility(users, products, market_users[chunk], product_index))
        per_day += (session_rate[chunk] / (outside + inside[chunk])).T @ taste
    demand = MarketDemand(
        market=market,
        products=product_index,
        users=market_users,
        weight=weight,
        best_weight=weight.max(axis=1, initial=0.0),
        outside_weight=outside,
        expected_sessions=traffic[market] * session_rate.sum(axis=0),
        price=price,
        utility_mean=utility_mean,
        utility_sd=float(np.sqrt(max(total_sq / cells - utility_mean**2, 1e-12))),
        inclusive_value=inclusive_value,
    )
    mean_purchases = traffic[market][None, :] * per_day.T * weight
    return demand, DemandTruth(shift, list_price, promo, mean_purchases)


def demand_truth_frame(
    config: MarketplaceConfig,
    demand: MarketDemand,
    truth: DemandTruth,
    days: np.ndarray,
    stocked_out: np.ndarray,
) -> pl.DataFrame:
    """Rows per live product x day: true mean demand (units, uncensored), stock-out flag, prices."""
    live = np.isfinite(truth.shift)
    product_row, day = np.nonzero(live)
    units = truth.mean_purchases[live] * (1 + config.choice.extra_units_mean)
    return pl.DataFrame(
        {
            "date": pl.Series(days[day]).cast(pl.Date),
            "market_id": pl.Series([config.markets[demand.market].market_id]).gather(
                np.zeros(len(day), np.int64)
            ),
            "product_id": product_ids(demand.products[product_row]),
            "mean_demand": units,
            "mean_purchases": truth.mean_purchases[live],
            "stock_out": stocked_out[demand.market][demand.products[product_row], day],
            "list_price": truth.list_price[live],
            "discount": truth.discount[live],
            "price": demand.price[live],
            "utility_shift": truth.shift[live],
        }
    )
