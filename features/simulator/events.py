"""Shopping sessions drawn from the choice model, and the view -> add_to_cart -> purchase funnel.

Per market and day the number of sessions is Poisson(expected_sessions); each session's shopper is
an active user drawn in proportion to activity, and its outcome (buy nothing, or one product) is an
exact draw from the choice model in `demand.py`. The draw is a rejection sampler: propose from the
user's static taste times each product's best weight over all days (one cumulative table per user,
so a proposal is a binary search), accept product p on day d with weight[p, d] / best_weight[p].

Around the outcome the funnel adds events: a purchase is preceded by a view and an add_to_cart of the
same product; a session that picks a product that is out of stock views it and buys nothing; every
session also browses Poisson(extra_views_mean) products drawn from the user's taste (a session that
buys nothing views at least one), and a browsed product is put in the cart without being bought
with probability `cart_without_purchase`. Times are local clock times inside the session's day,
converted to UTC with the market's time zone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from features.contract import CHANNELS, EVENT_TYPES, EVENTS
from features.simulator.clock import SECONDS_PER_DAY, local_to_utc, utc_series
from features.simulator.config import MarketplaceConfig
from features.simulator.demand import MarketDemand, draw_active_users, static_utility
from features.simulator.identifiers import format_ids
from features.simulator.population import Products, Users, product_ids, user_ids

# Sessions per local hour of day: a typical online-retail day, quiet at night with an evening peak
# around 20-21h (an assumption, not a fit).
SESSION_HOURS = np.array(
    [1.2, 0.7, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2.5, 3.3, 3.8, 4.0,
     4.3, 4.3, 4.2, 4.2, 4.3, 4.5, 4.9, 5.6, 6.4, 6.6, 5.2, 2.9]
)  # fmt: skip
VIEW, ADD_TO_CART, PURCHASE = (EVENT_TYPES.index(kind) for kind in ("view", "add_to_cart", "purchase"))
NO_PURCHASE = -1
MAX_REJECTION_ROUNDS = 10_000


@dataclass(frozen=True)
class Sessions:
    day: np.ndarray
    user_row: np.ndarray  # index into MarketDemand.users
    outcome: np.ndarray  # index into MarketDemand.products, or NO_PURCHASE
    viewed_session: np.ndarray  # browsed products: the session each belongs to
    viewed_product: np.ndarray  # index into MarketDemand.products


@dataclass(frozen=True)
class EventColumns:
    """Events of one market as numpy columns (ids are indices), before they become a frame."""

    micros: np.ndarray  # UTC
    user: np.ndarray
    product: np.ndarray
    market: np.ndarray
    event_type: np.ndarray
    quantity: np.ndarray
    price: np.ndarray
    channel: np.ndarray


class _ProposalTable:
    """For each user of a chunk: cumulative weights of the outside option, then of each product's
    taste x best weight, scaled to [0, 1] and shifted by the user's row, so that one sorted array
    serves every user and a draw is one binary search."""

    def __init__(self, demand: MarketDemand, users: Users, products: Products, chunk: slice) -> None:
        self.demand = demand
        taste = np.exp(static_utility(users, products, demand.users[chunk], demand.products))
        outside = np.full((len(taste), 1), demand.outside_weight)
        cumulative = np.cumsum(np.hstack([outside, taste * demand.best_weight[None, :]]), axis=1)
        total = cumulative[:, -1:]
        self.outside_share = (cumulative[:, 0:1] / total).ravel()
        self.table = (cumulative / total + np.arange(len(cumulative))[:, None]).ravel()
        self.width = cumulative.shape[1]

    def _option(self, rows: np.ndarray, position: np.ndarray) -> np.ndarray:
        """0 for the outside option, k for product row k - 1."""
        found = np.searchsorted(self.table, rows + position, side="right") - rows * self.width
        return np.clip(found, 0, self.width - 1)

    def choose(self, rows: np.ndarray, days: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Exact choice-model draws: product row, or NO_PURCHASE (rejection sampling)."""
        weight, best = self.demand.weight, self.demand.best_weight
        chosen = np.full(len(rows), NO_PURCHASE)
        pending = np.arange(len(rows))
        for _ in range(MAX_REJECTION_ROUNDS):
            if len(pending) == 0:
                return chosen
            product = self._option(rows[pending], rng.random(len(pending))) - 1
            safe = np.maximum(product, 0)
            keep_share = np.where(
                product >= 0, weight[safe, days[pending]] / np.maximum(best[safe], 1e-300), 1.0
            )
            accepted = rng.random(len(pending)) < keep_share
            chosen[pending[accepted]] = product[accepted]  # -1 is NO_PURCHASE
            pending = pending[~accepted]
        raise RuntimeError("the choice sampler did not converge; is a product weight infinite?")

    def browse(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Product rows drawn by taste x best weight, never the outside option."""
        start = self.outside_share[rows]
        return np.maximum(self._option(rows, start + rng.random(len(rows)) * (1 - start)) - 1, 0)


def sample_sessions(
    demand: MarketDemand, users: Users, products: Products, extra_views_mean: float, rng: np.random.Generator
) -> Sessions:
    counts = rng.poisson(demand.expected_sessions)
    day = np.repeat(np.arange(len(counts)), counts)
    user_row = draw_active_users(demand, users, day, rng)
    order = np.argsort(user_row, kind="stable")  # sessions grouped by user, to go chunk by chunk
    day, user_row = day[order], user_row[order]
    outcome = np.empty(len(day), dtype=np.int64)
    n_views = rng.poisson(extra_views_mean, len(day))
    viewed_session: list[np.ndarray] = [np.zeros(0, np.int64)]
    viewed_product: list[np.ndarray] = [np.zeros(0, np.int64)]
    chunks = demand.user_chunks()
    bounds = np.searchsorted(user_row, [chunk.start for chunk in chunks] + [len(demand.users)])
    for chunk, first, last in zip(chunks, bounds[:-1], bounds[1:], strict=True):
        if first == last:
            continue
        proposals = _ProposalTable(demand, users, products, chunk)
        rows, session_days = user_row[first:last] - chunk.start, day[first:last]
        chosen = proposals.choose(rows, session_days, rng)
        outcome[first:last] = chosen
        # a session that buys nothing still views at least one product
        browsing = np.repeat(np.arange(last - first), n_views[first:last] + (chosen == NO_PURCHASE))
        browsed = proposals.browse(rows[browsing], rng)
        live = demand.weight[browsed, session_days[browsing]] > 0  # nothing is viewed before launch
        viewed_session.append(browsing[live] + first)
        viewed_product.append(browsed[live])
    return Sessions(
        day=day,
        user_row=user_row,
        outcome=outcome,
        viewed_session=np.concatenate(viewed_session),
        viewed_product=np.concatenate(viewed_product),
    )


def funnel_events(
    config: MarketplaceConfig,
    demand: MarketDemand,
    sessions: Sessions,
    stocked_out: np.ndarray,
    days: np.ndarray,
    rng: np.random.Generator,
) -> EventColumns:
    """The events of one market's sessions, with UTC times."""
    n_sessions = len(sessions.day)
    hour_share = SESSION_HOURS / SESSION_HOURS.sum()
    session_end = rng.choice(24, n_sessions, p=hour_share) * 3600 + rng.random(n_sessions) * 3600
    channel_names = list(config.funnel.channel_shares)
    channel_share = np.array([config.funnel.channel_shares[name] for name in channel_names])
    channel_code = np.array([CHANNELS.index(name) for name in channel_names])
    channel = channel_code[rng.choice(len(channel_names), n_sessions, p=channel_share / channel_share.sum())]

    bought = sessions.outcome >= 0
    out_of_stock = np.zeros(n_sessions, dtype=bool)
    out_of_stock[bought] = stocked_out[demand.market][
        demand.products[sessions.outcome[bought]], sessions.day[bought]
    ]
    purchase = np.flatnonzero(bought & ~out_of_stock)
    lost = np.flatnonzero(bought & out_of_stock)
    bought_product = sessions.outcome[purchase]
    quantity = 1 + rng.poisson(config.choice.extra_units_mean, len(purchase))
    to_cart = rng.exponential(60.0, len(purchase))  # seconds from add_to_cart to purchase
    to_view = to_cart + rng.exponential(120.0, len(purchase))
    browse = sessions.viewed_session
    browse_time = session_end[browse] - rng.uniform(0, 1200, len(browse))
    carted = rng.random(len(browse)) < config.funnel.cart_without_purchase
    blocks = [  # (session, product row, event type, local seconds, units)
        (purchase, bought_product, VIEW, session_end[purchase] - to_view, 1),
        (purchase, bought_product, ADD_TO_CART, session_end[purchase] - to_cart, quantity),
        (purchase, bought_product, PURCHASE, session_end[purchase], quantity),
        (lost, sessions.outcome[lost], VIEW, session_end[lost], 1),  # seen, out of stock, not bought
        (browse, sessions.viewed_product, VIEW, browse_time, 1),
        (
            browse[carted],
            sessions.viewed_product[carted],
            ADD_TO_CART,
            browse_time[carted] + rng.uniform(10, 300, carted.sum()),
            1,
        ),
    ]
    session = np.concatenate([block[0] for block in blocks])
    product_row = np.concatenate([block[1] for block in blocks])
    event_type = np.concatenate([np.full(len(block[0]), block[2], dtype=np.int8) for block in blocks])
    seconds = np.concatenate([block[3] for block in blocks])
    seconds = np.clip(np.floor(seconds), 0, SECONDS_PER_DAY - 1)  # the session stays in its local day
    units = np.concatenate([np.broadcast_to(block[4], len(block[0])) for block in blocks]).astype(np.int32)
    day = sessions.day[session]
    timezone = config.markets[demand.market].timezone
    return EventColumns(
        micros=local_to_utc(days, day, seconds, timezone),
        user=demand.users[sessions.user_row[session]].astype(np.int32),
        product=demand.products[product_row].astype(np.int32),
        market=np.full(len(session), demand.market, dtype=np.int16),
        event_type=event_type,
        quantity=units,
        price=demand.price[product_row, day],
        channel=channel[session].astype(np.int8),
    )


def events_frame(config: MarketplaceConfig, parts: list[EventColumns]) -> pl.DataFrame:
    """The contract's `events` table, in time order, with ids E0000000001, ..."""
    micros = np.concatenate([part.micros for part in parts])
    event_type = np.concatenate([part.event_type for part in parts])
    order = np.lexsort((event_type, micros))
    micros, event_type = micros[order], event_type[order]

    def column(name: str) -> np.ndarray:
        # one column at a time, so that only one unsorted copy exists at once
        return np.concatenate([getattr(part, name) for part in parts])[order]

    market = column("market")
    markets = config.markets
    return pl.DataFrame(
        {
            "event_id": format_ids("E", np.arange(1, len(order) + 1), "event_id"),
            "event_ts": utc_series("event_ts", micros),
            "user_id": user_ids(column("user")),
            "product_id": product_ids(column("product")),
            "market_id": pl.Series([m.market_id for m in markets]).gather(market),
            "event_type": pl.Series(EVENT_TYPES).gather(event_type),
            "quantity": column("quantity"),
            "price": column("price"),
            "currency": pl.Series([m.currency for m in markets]).gather(market),
            "channel": pl.Series(CHANNELS).gather(column("channel")),
        },
        schema=EVENTS.polars_schema,
    )
