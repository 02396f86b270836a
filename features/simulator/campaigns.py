"""Ad campaigns: who advertises what, where, when, and how high the logging policy starts bidding.

A campaign targets one market (drawn by market size), runs from its first day (a share from the
start of the simulation) for a uniform number of days or without an end date, and promotes one
product listed and live there (drawn by popularity) or the whole store. Its advertiser is the
promoted product's brand (a seller on the marketplace). Its base bid is a multiple of the market's
median market price on its first day. Daily budgets are set later, from the simulated spend
(`auctions.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from features.contract import CAMPAIGNS, OBJECTIVES
from features.simulator import ad_market
from features.simulator.config import MarketplaceConfig
from features.simulator.fx import FxPaths
from features.simulator.identifiers import lookup_ids
from features.simulator.population import Catalogue, product_ids

NO_PRODUCT = -1


@dataclass(frozen=True)
class Campaigns:
    market: np.ndarray
    product: np.ndarray  # NO_PRODUCT for a store-wide campaign
    advertiser: np.ndarray  # brand index: advertisers are the brands selling on the marketplace
    objective: np.ndarray  # index into contract.OBJECTIVES
    first_day: np.ndarray
    last_day: np.ndarray
    open_ended: np.ndarray  # no end date published
    base_bid: np.ndarray  # local currency CPM

    @property
    def count(self) -> int:
        return len(self.market)


def fen_to_local(config: MarketplaceConfig, fx: FxPaths, market: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Factor turning iPinYou fen CPM into the market's currency on that day."""
    usd_per_local = np.stack([fx.rates_for(m.currency) for m in config.markets])[market, day]
    ad_index = np.array([m.ad_price_index for m in config.markets])[market]
    return ad_market.USD_PER_CNY_2013 / 100 * ad_index / usd_per_local


def plan_campaigns(
    config: MarketplaceConfig,
    n_campaigns: int,
    catalogue: Catalogue,
    fx: FxPaths,
    n_days: int,
    rng: np.random.Generator,
) -> Campaigns:
    ads = config.ads
    shares = np.array([market.user_share for market in config.markets])
    market = rng.choice(len(shares), n_campaigns, p=shares / shares.sum())
    at_start = rng.random(n_campaigns) < ads.campaigns_at_start
    first_day = np.where(at_start, 0, rng.integers(0, max(1, int(0.8 * n_days)), n_campaigns))
    open_ended = rng.random(n_campaigns) < ads.ongoing_share
    duration = rng.integers(ads.duration_days[0], ads.duration_days[1] + 1, n_campaigns)
    last_day = np.where(open_ended, n_days - 1, np.minimum(first_day + duration - 1, n_days - 1))
    products = catalogue.products
    product = np.full(n_campaigns, NO_PRODUCT)
    wants_product = rng.random(n_campaigns) < ads.product_campaign_share
    for index in np.flatnonzero(wants_product):  # one small draw per campaign (tens to hundreds)
        live = np.flatnonzero(catalogue.listed[:, market[index]] & (products.live_from <= first_day[index]))
        if len(live):
            weights = np.exp(products.popularity[live])
            product[index] = rng.choice(live, p=weights / weights.sum())
    random_brand = rng.integers(0, len(catalogue.brands), n_campaigns)
    advertiser = np.where(product >= 0, products.brand[np.maximum(product, 0)], random_brand)
    median_price = np.exp(ad_market.LOG_PRICE_INTERCEPT) * fen_to_local(config, fx, market, first_day)
    return Campaigns(
        market=market,
        product=product,
        advertiser=advertiser,
        objective=rng.integers(0, len(OBJECTIVES), n_campaigns),
        first_day=first_day,
        last_day=last_day,
        open_ended=open_ended,
        base_bid=median_price * rng.uniform(ads.base_bid_ratio[0], ads.base_bid_ratio[1], n_campaigns),
    )


def campaign_ids(indices: np.ndarray) -> pl.Series:
    return lookup_ids("C", indices, "campaign_id")


def campaigns_frame(
    config: MarketplaceConfig, campaigns: Campaigns, budget: np.ndarray, days: np.ndarray
) -> pl.DataFrame:
    markets = config.markets
    return pl.DataFrame(
        {
            "campaign_id": campaign_ids(np.arange(campaigns.count)),
            "advertiser_id": lookup_ids("ADV", campaigns.advertiser, "advertiser_id"),
            "market_id": pl.Series([m.market_id for m in markets]).gather(campaigns.market),
            "product_id": product_ids(np.maximum(campaigns.product, 0)).set(
                pl.Series(campaigns.product < 0), None
            ),
            "objective": pl.Series(OBJECTIVES).gather(campaigns.objective),
            "daily_budget": budget,
            "currency": pl.Series([m.currency for m in markets]).gather(campaigns.market),
            "start_date": pl.Series(days[campaigns.first_day]).cast(pl.Date),
            "end_date": pl.Series(days[campaigns.last_day])
            .cast(pl.Date)
            .set(pl.Series(campaigns.open_ended), None),
        },
        schema=CAMPAIGNS.polars_schema,
    )
