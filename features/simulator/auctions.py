"""The bid requests campaigns see, with a known market-price, click and conversion model.

Requests: per campaign and active day, Poisson(requests_per_campaign_day x the market's traffic that
day relative to its mean), at local hours drawn from the iPinYou traffic curve (`ad_market.py`).
Each request comes from a slot of the market (fixed exchange, size and reserve price; popular slots
get more requests, Zipf-like), a region, and for `known_user_share` of them a known marketplace user.

Market price (the highest competing bid, CPM in the campaign's currency) is log-normal:
    log price = LOG_PRICE_INTERCEPT + hour offset + exchange offset + size offset
                + event_price_uplift [shopping event that day]      (iPinYou fen CPM)
                + log(USD_PER_CNY_2013 / 100 x ad_price_index / usd_per_unit(day))   (to local money)
with the exchange's sigma. True click probability (if the impression is shown):
    pCTR = sigmoid(logit(base_ctr) + hour_amplitude cos(2 pi (hour - peak_hour) / 24)
                   + exchange effect + slot effect + affinity_coef x affinity + known_user_coef [known])
where affinity is the user's standardised static utility for the promoted product (for a
store-wide campaign, the standardised log-sum of the user's utilities), 0 for an unknown user.
Conversion after a click: sigmoid(logit(base_cvr) + affinity_coef x affinity + promo_coef [product on
promotion]); its value is the shelf price times 1 + Poisson(extra units), or a log-normal basket.

Logging policy: log bid = log(base bid) + bid_ctr_exponent x (log(pCTR / base_ctr) + N(0, pctr_noise_sd))
+ N(0, bid_noise_sd), with the campaign's base bid a multiple of the market's median price. Second
price: a won impression costs max(market price, floor) / 1000. Daily budgets are a multiple of the
campaign's unconstrained daily spend on this logged stream (as iPinYou benchmarks size budgets from
the log's cost); once a local day's spend reaches it, the campaign stops bidding (bid 0) until the
next day. won = bid > 0 and bid >= market price and bid >= floor; click only if won, conversion only
if clicked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from features.contract import AUCTIONS
from features.simulator import ad_market
from features.simulator.campaigns import Campaigns, campaign_ids, campaigns_frame, fen_to_local
from features.simulator.clock import local_to_utc, utc_series
from features.simulator.config import MarketplaceConfig
from features.simulator.demand import MarketDemand, draw_active_users, pair_utility
from features.simulator.fx import FxPaths
from features.simulator.identifiers import format_ids
from features.simulator.population import Catalogue, Users, user_ids
from features.simulator.traffic import Traffic

SLOT_ZIPF = 0.9
REGION_ZIPF = 1.1
STOREWIDE_BASKET_SIGMA = 0.5


@dataclass(frozen=True)
class AuctionLog:
    campaigns: pl.DataFrame
    auctions: pl.DataFrame
    truth: pl.DataFrame  # per auction_id: true probabilities and the logging policy


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def _zipf_draw(n_options: int, exponent: float, size: int, rng: np.random.Generator) -> np.ndarray:
    weights = 1 / np.arange(1, n_options + 1) ** exponent
    return np.minimum(np.searchsorted(np.cumsum(weights / weights.sum()), rng.random(size)), n_options - 1)


def _runs(first: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """first[i], first[i] + 1, ..., first[i] + lengths[i] - 1 for every i, concatenated."""
    return (
        np.repeat(first, lengths)
        + np.arange(lengths.sum())
        - np.repeat(np.cumsum(lengths) - lengths, lengths)
    )


@dataclass
class Requests:
    """Bid requests as numpy columns, filled in step by step."""

    campaign: np.ndarray
    day: np.ndarray
    market: np.ndarray
    hour: np.ndarray
    seconds: np.ndarray  # local time of day
    slot: np.ndarray  # rank of the slot within its market's pool
    exchange: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    size: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    floor_fen: np.ndarray = field(default_factory=lambda: np.zeros(0))
    region: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    user: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # -1: unknown
    affinity: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def count(self) -> int:
        return len(self.campaign)


def _draw_requests(
    config: MarketplaceConfig, campaigns: Campaigns, traffic: Traffic, rng: np.random.Generator
) -> Requests:
    ads = config.ads
    lengths = campaigns.last_day - campaigns.first_day + 1
    campaign_of_day = np.repeat(np.arange(campaigns.count), lengths)
    day_of_campaign = _runs(campaigns.first_day, lengths)
    relative_traffic = traffic.multiplier / traffic.multiplier.mean(axis=1, keepdims=True)
    market_of_day = campaigns.market[campaign_of_day]
    counts = rng.poisson(ads.requests_per_campaign_day * relative_traffic[market_of_day, day_of_campaign])
    campaign = np.repeat(campaign_of_day, counts)
    n = len(campaign)
    hour = rng.choice(24, n, p=np.array(ad_market.HOUR_TRAFFIC))
    requests = Requests(
        campaign=campaign,
        day=np.repeat(day_of_campaign, counts),
        market=campaigns.market[campaign],
        hour=hour,
        seconds=hour * 3600 + np.floor(rng.random(n) * 3600),
        slot=_zipf_draw(ads.slots_per_market, SLOT_ZIPF, n, rng),
    )
    # each market's slot pool: a fixed exchange, size and reserve price per slot
    shape = (len(config.markets), ads.slots_per_market)
    exchange_share = np.array([exchange.share for exchange in ad_market.EXCHANGES])
    size_share = np.array([size.share for size in ad_market.SLOT_SIZES])
    slot_exchange = rng.choice(len(exchange_share), shape, p=exchange_share / exchange_share.sum())
    slot_size = rng.choice(len(size_share), shape, p=size_share / size_share.sum())
    floor_zero = np.array([e.floor_share_zero for e in ad_market.EXCHANGES])[slot_exchange]
    floor_fen = np.where(
        rng.random(shape) < floor_zero,
        0.0,
        rng.lognormal(
            np.array([e.floor_log_mean for e in ad_market.EXCHANGES])[slot_exchange],
            np.array([e.floor_log_sigma for e in ad_market.EXCHANGES])[slot_exchange],
        ),
    )
    requests.exchange = slot_exchange[requests.market, requests.slot]
    requests.size = slot_size[requests.market, requests.slot]
    requests.floor_fen = floor_fen[requests.market, requests.slot]
    requests.region = _zipf_draw(ads.regions_per_market, REGION_ZIPF, n, rng)
    return requests


def _add_known_users(
    requests: Requests,
    promoted: np.ndarray,
    known_user_share: float,
    users: Users,
    catalogue: Catalogue,
    demands: list[MarketDemand],
    rng: np.random.Generator,
) -> None:
    """Recognised users (active that day, drawn by activity) and their standardised affinity."""
    requests.user = np.full(requests.count, -1)
    requests.affinity = np.zeros(requests.count)
    known = rng.random(requests.count) < known_user_share
    for demand in demands:
        rows = np.flatnonzero(known & (requests.market == demand.market))
        n_active = np.searchsorted(users.active_from[demand.users], requests.day[rows], side="right")
        rows = rows[n_active > 0]
        user_row = draw_active_users(demand, users, requests.day[rows], rng)
        requests.user[rows] = demand.users[user_row]
        for_product = promoted[rows] >= 0
        utility = pair_utility(
            users, catalogue.products, requests.user[rows][for_product], promoted[rows][for_product]
        )
        requests.affinity[rows[for_product]] = (utility - demand.utility_mean) / demand.utility_sd
        # store-wide: how much the user likes the market's whole range
        spread = max(float(demand.inclusive_value.std()), 1e-9)
        inclusive = demand.inclusive_value[user_row[~for_product]]
        requests.affinity[rows[~for_product]] = (inclusive - demand.inclusive_value.mean()) / spread


def _conversion_values(
    config: MarketplaceConfig,
    requests: Requests,
    promoted: np.ndarray,
    demands: list[MarketDemand],
    fx: FxPaths,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(expected, drawn) value of a conversion in local money."""
    markets = config.markets
    shelf_price = np.zeros(requests.count)
    for demand in demands:
        rows = np.flatnonzero((requests.market == demand.market) & (promoted >= 0))
        product_row = np.searchsorted(demand.products, promoted[rows])
        shelf_price[rows] = demand.price[product_row, requests.day[rows]]
    usd_per_local = np.stack([fx.rates_for(m.currency) for m in markets])[requests.market, requests.day]
    price_index = np.array([m.price_index for m in markets])[requests.market]
    basket = config.ads.conversion.storewide_order_value_usd * price_index / usd_per_local
    extra_units = config.choice.extra_units_mean
    expected = np.where(promoted >= 0, shelf_price * (1 + extra_units), basket)
    basket_draw = basket * rng.lognormal(
        -(STOREWIDE_BASKET_SIGMA**2) / 2, STOREWIDE_BASKET_SIGMA, requests.count
    )
    drawn = np.where(promoted >= 0, shelf_price * (1 + rng.poisson(extra_units, requests.count)), basket_draw)
    scale = 10.0 ** np.array([m.price_decimals for m in markets])[requests.market]
    return expected, np.round(drawn * scale) / scale


def _spent_before(campaign: np.ndarray, day: np.ndarray, seconds: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Per request, what its campaign had spent earlier the same local day."""
    order = np.lexsort((seconds, day, campaign))
    ordered_cost = cost[order]
    new_day = np.r_[True, (np.diff(campaign[order]) != 0) | (np.diff(day[order]) != 0)]
    spent = np.cumsum(ordered_cost) - ordered_cost  # everything before, across groups
    spent_before_group = np.maximum.accumulate(np.where(new_day, spent, 0.0))
    result = np.empty(len(cost))
    result[order] = spent - spent_before_group
    return result


def simulate_auctions(
    config: MarketplaceConfig,
    campaigns: Campaigns,
    catalogue: Catalogue,
    users: Users,
    demands: list[MarketDemand],
    traffic: Traffic,
    discount: np.ndarray,
    fx: FxPaths,
    days: np.ndarray,
    rng: np.random.Generator,
) -> AuctionLog:
    ads, click_model, conversion_model = config.ads, config.ads.click, config.ads.conversion
    requests = _draw_requests(config, campaigns, traffic, rng)
    n, market, day = requests.count, requests.market, requests.day
    promoted = campaigns.product[requests.campaign]
    _add_known_users(requests, promoted, ads.known_user_share, users, catalogue, demands, rng)
    known = requests.user >= 0

    exchange_effect = np.array([click_model.exchange_effects[e.name] for e in ad_market.EXCHANGES])
    slot_effect = np.array([click_model.slot_effects[s.label] for s in ad_market.SLOT_SIZES])
    p_click = _sigmoid(
        _logit(click_model.base_ctr)
        + click_model.hour_amplitude * np.cos(2 * np.pi * (requests.hour - click_model.peak_hour) / 24)
        + exchange_effect[requests.exchange]
        + slot_effect[requests.size]
        + click_model.affinity_coef * requests.affinity
        + click_model.known_user_coef * known
    )
    on_promotion = (promoted >= 0) & (discount[market, np.maximum(promoted, 0), day] > 0)
    p_conversion = _sigmoid(
        _logit(conversion_model.base_cvr)
        + conversion_model.affinity_coef * requests.affinity
        + conversion_model.promo_coef * on_promotion
    )
    expected_value, value_draw = _conversion_values(config, requests, promoted, demands, fx, rng)

    to_local = fen_to_local(config, fx, market, day)
    sigma = np.array([e.log_price_sigma for e in ad_market.EXCHANGES])[requests.exchange]
    log_price_mean = (
        ad_market.LOG_PRICE_INTERCEPT
        + np.array(ad_market.HOUR_LOG_PRICE_OFFSETS)[requests.hour]
        + np.array([e.log_price_offset for e in ad_market.EXCHANGES])[requests.exchange]
        + np.array([s.log_price_offset for s in ad_market.SLOT_SIZES])[requests.size]
        + ads.event_price_uplift * traffic.shopping_event[market, day]
        + np.log(to_local)
    )
    market_price = np.round(np.exp(log_price_mean + sigma * rng.standard_normal(n)), 4)
    floor_price = np.round(requests.floor_fen * to_local, 4)

    log_bid_mean = np.log(campaigns.base_bid[requests.campaign]) + ads.bid_ctr_exponent * np.log(
        p_click / click_model.base_ctr
    )
    log_bid_sd = float(np.hypot(ads.bid_ctr_exponent * ads.pctr_noise_sd, ads.bid_noise_sd))
    bid = np.round(np.exp(log_bid_mean + log_bid_sd * rng.standard_normal(n)), 4)
    clearing = np.maximum(market_price, floor_price)
    cost = np.where(bid >= clearing, clearing / 1000, 0.0)  # second price, CPM
    lengths = campaigns.last_day - campaigns.first_day + 1
    daily_spend = np.bincount(requests.campaign, weights=cost, minlength=campaigns.count) / lengths
    budget_ratio = rng.uniform(ads.budget_ratio[0], ads.budget_ratio[1], campaigns.count)
    budget = np.maximum(np.round(daily_spend * budget_ratio, 4), 0.0001)
    exhausted = _spent_before(requests.campaign, day, requests.seconds, cost) >= budget[requests.campaign]
    bid = np.where(exhausted, 0.0, bid)

    won = (bid > 0) & (bid >= market_price) & (bid >= floor_price)
    click = won & (rng.random(n) < p_click)
    conversion = click & (rng.random(n) < p_conversion)
    request_us = np.empty(n, dtype=np.int64)
    for index, settings in enumerate(config.markets):
        rows = np.flatnonzero(market == index)
        request_us[rows] = local_to_utc(days, day[rows], requests.seconds[rows], settings.timezone)

    order = np.lexsort((requests.campaign, request_us))  # chronological
    auction_ids = format_ids("A", np.arange(1, n + 1), "auction_id")
    auctions = _auctions_frame(
        config,
        requests,
        order,
        auction_ids,
        request_us=request_us,
        floor_price=floor_price,
        market_price=market_price,
        bid_price=bid,
        won=won,
        click=click,
        conversion=conversion,
        value=np.where(conversion, value_draw, 0.0),
    )
    truth = pl.DataFrame(
        {
            "auction_id": auction_ids,
            "p_click": p_click[order],
            "p_conversion": p_conversion[order],
            "expected_conversion_value": expected_value[order],
            "affinity": requests.affinity[order],
            "log_market_price_mean": log_price_mean[order],
            "log_market_price_sd": sigma[order],
            "log_bid_mean": log_bid_mean[order],
            "log_bid_sd": np.full(n, log_bid_sd),
            "budget_exhausted": exhausted[order],
        }
    )
    return AuctionLog(campaigns_frame(config, campaigns, budget, days), auctions, truth)


def _auctions_frame(
    config: MarketplaceConfig,
    requests: Requests,
    order: np.ndarray,
    auction_ids: pl.Series,
    **outcome: np.ndarray,
) -> pl.DataFrame:
    markets, ads = config.markets, config.ads
    market = requests.market[order]
    slot_labels = pl.Series(
        [f"{m.market_id}-slot-{rank + 1:03d}" for m in markets for rank in range(ads.slots_per_market)]
    )
    region_labels = pl.Series(
        [f"{m.market_id}-R{rank + 1:02d}" for m in markets for rank in range(ads.regions_per_market)]
    )
    size = requests.size[order]
    user = requests.user[order]
    return pl.DataFrame(
        {
            "auction_id": auction_ids,
            "request_ts": utc_series("request_ts", outcome["request_us"][order]),
            "campaign_id": campaign_ids(requests.campaign[order]),
            "market_id": pl.Series([m.market_id for m in markets]).gather(market),
            "exchange": pl.Series(ad_market.EXCHANGE_NAMES).gather(requests.exchange[order]),
            "slot_id": slot_labels.gather(market * ads.slots_per_market + requests.slot[order]),
            "slot_width": np.array([s.width for s in ad_market.SLOT_SIZES])[size],
            "slot_height": np.array([s.height for s in ad_market.SLOT_SIZES])[size],
            "region": region_labels.gather(market * ads.regions_per_market + requests.region[order]),
            "user_id": user_ids(np.maximum(user, 0)).set(pl.Series(user < 0), None),
            "floor_price": outcome["floor_price"][order],
            "market_price": outcome["market_price"][order],
            "bid_price": outcome["bid_price"][order],
            "won": outcome["won"][order],
            "click": outcome["click"][order],
            "conversion": outcome["conversion"][order],
            "value": outcome["value"][order],
            "currency": pl.Series([m.currency for m in markets]).gather(market),
        },
        schema=AUCTIONS.polars_schema,
    )
