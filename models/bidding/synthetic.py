"""A small synthetic auction-log generator: a stand-in for the marketplace simulator, for tests and the
benchmark only. It writes the contract's `auctions` columns plus the truth a real log never has
(`click_prob`, the true click probability, and `value_per_click`, the expected conversion value of a
click), so click models can be scored against the truth and bidders credited with expected clicks.

The market, in brief: slots (each on one exchange, of one size, with a hidden quality) are drawn by
popularity; requests arrive over the local day with a lunch and an evening peak; the true click
logit adds the slot quality, size, exchange, region and hour effects and unobservable noise; the
market price (CPM) is log-normal, dearer for better slots (competitors value them too), bigger
sizes and busy hours. Each day draws its own volume, price level (with an hourly drift) and click
level, so days differ as real ones do. The logging bidder bid high and won everything, as in the
iPinYou logs; clicks, conversions and their values are drawn from the truth.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

EXCHANGES = ("adx-a", "adx-b", "adx-c")
EXCHANGE_LOG_PRICE = (0.0, -0.2, 0.15)
EXCHANGE_CTR_EFFECT = (0.0, -0.15, 0.2)
SLOT_SIZES = ((300, 250), (728, 90), (160, 600), (320, 50), (336, 280))
SIZE_LOG_PRICE = (0.0, -0.1, 0.2, -0.6, -0.2)
SIZE_CTR_EFFECT = (0.0, -0.3, 0.25, -0.5, 0.1)
N_REGIONS = 8
SECONDS_PER_DAY = 24 * 3600


@dataclass(frozen=True)
class SyntheticMarket:
    market_id: str = "DE"
    timezone: str = "Europe/Berlin"
    currency: str = "EUR"
    campaign_id: str = "synthetic-campaign"
    requests_per_day: int = 8000
    n_slots: int = 120
    base_ctr: float = 0.004
    median_cpm: float = 1.2  # market price, in currency per thousand impressions
    slot_quality_ctr: float = 0.6  # logit effect of one sd of slot quality
    slot_quality_price: float = 0.35  # log-price effect of one sd of slot quality
    price_noise_sd: float = 0.5
    click_noise_sd: float = 0.3  # unobservable per-request logit noise
    conversion_rate: float = 0.05
    median_order_value: float = 40.0
    day_volume_sd: float = 0.2
    day_price_sd: float = 0.15
    hourly_price_drift_sd: float = 0.04
    day_ctr_sd: float = 0.1
    catalogue_seed: int = 7  # the slots and regions stay the same across calls


def _traffic_by_hour() -> np.ndarray:
    hours = np.arange(24)
    lunch = np.exp(-0.5 * ((hours - 12.5) / 2.0) ** 2)
    evening = 1.4 * np.exp(-0.5 * ((hours - 20.5) / 2.0) ** 2)
    shape = 0.15 + lunch + evening
    return shape / shape.sum()


def _hour_effects(hours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log-price, click-logit) effects of the local hour: busy hours dearer, evenings clickier."""
    log_price = 0.2 * np.log(_traffic_by_hour()[hours] * 24)
    ctr_logit = 0.25 * np.cos(2 * np.pi * (hours - 21) / 24)
    return log_price, ctr_logit


@dataclass(frozen=True, eq=False)
class _Catalogue:
    slot_exchange: np.ndarray
    slot_size: np.ndarray
    slot_quality: np.ndarray
    slot_floor_cpm: np.ndarray
    slot_popularity: np.ndarray
    region_ctr: np.ndarray
    region_share: np.ndarray
    region_order_value: np.ndarray


def _catalogue(market: SyntheticMarket) -> _Catalogue:
    rng = np.random.default_rng(market.catalogue_seed)
    n = market.n_slots
    popularity = 1.0 / np.arange(1, n + 1) ** 0.8
    has_floor = rng.random(n) < 0.3
    return _Catalogue(
        slot_exchange=rng.integers(0, len(EXCHANGES), n),
        slot_size=rng.choice(len(SLOT_SIZES), n, p=[0.4, 0.2, 0.1, 0.2, 0.1]),
        slot_quality=rng.normal(0.0, 1.0, n),
        slot_floor_cpm=np.where(has_floor, market.median_cpm * rng.lognormal(-0.7, 0.3, n), 0.0),
        slot_popularity=rng.permutation(popularity / popularity.sum()),
        region_ctr=rng.normal(0.0, 0.2, N_REGIONS),
        region_share=rng.dirichlet(np.full(N_REGIONS, 3.0)),
        region_order_value=market.median_order_value * rng.lognormal(0.0, 0.3, N_REGIONS),
    )


def generate_auctions(market: SyntheticMarket, first_day: dt.date, n_days: int, seed: int) -> pl.DataFrame:
    """Auction logs of `n_days` market-local days from `first_day`: contract columns plus the truth."""
    catalogue = _catalogue(market)
    rng = np.random.default_rng(seed)
    frames = [
        _one_day(market, catalogue, first_day + dt.timedelta(days=offset), rng) for offset in range(n_days)
    ]
    return pl.concat(frames).sort("request_ts")


def _one_day(
    market: SyntheticMarket, catalogue: _Catalogue, date: dt.date, rng: np.random.Generator
) -> pl.DataFrame:
    n = max(1, int(market.requests_per_day * math.exp(rng.normal(0.0, market.day_volume_sd))))
    hours = rng.choice(24, n, p=_traffic_by_hour())
    seconds = np.sort(hours * 3600 + rng.uniform(0, 3600, n))
    hours = (seconds // 3600).astype(int)
    slots = rng.choice(market.n_slots, n, p=catalogue.slot_popularity)
    regions = rng.choice(N_REGIONS, n, p=catalogue.region_share)
    exchanges, sizes = catalogue.slot_exchange[slots], catalogue.slot_size[slots]
    quality = catalogue.slot_quality[slots]
    hour_log_price, hour_ctr = _hour_effects(hours)

    day_log_price = rng.normal(0.0, market.day_price_sd) + np.cumsum(
        rng.normal(0.0, market.hourly_price_drift_sd, 24)
    )
    log_price = (
        math.log(market.median_cpm)
        + market.slot_quality_price * quality
        + np.asarray(EXCHANGE_LOG_PRICE)[exchanges]
        + np.asarray(SIZE_LOG_PRICE)[sizes]
        + hour_log_price
        + day_log_price[hours]
        + rng.normal(0.0, market.price_noise_sd, n)
    )
    logit = (
        math.log(market.base_ctr / (1 - market.base_ctr))
        + market.slot_quality_ctr * quality
        + np.asarray(EXCHANGE_CTR_EFFECT)[exchanges]
        + np.asarray(SIZE_CTR_EFFECT)[sizes]
        + catalogue.region_ctr[regions]
        + hour_ctr
        + rng.normal(0.0, market.day_ctr_sd)
        + rng.normal(0.0, market.click_noise_sd, n)
    )
    click_prob = 1.0 / (1.0 + np.exp(-logit))
    market_price = np.exp(log_price)
    floor_price = catalogue.slot_floor_cpm[slots]
    logged_bid = 1000.0 * market.median_cpm  # the logging bidder outbid everyone
    value_per_click = market.conversion_rate * catalogue.region_order_value[regions]
    click = rng.random(n) < click_prob
    conversion = click & (rng.random(n) < market.conversion_rate)
    order_value = catalogue.region_order_value[regions] * rng.lognormal(-0.045, 0.3, n)

    # arrivals are laid on the real local day: 23 or 25 hours long on daylight-saving days
    zone = ZoneInfo(market.timezone)
    day_start = dt.datetime.combine(date, dt.time(), tzinfo=zone).astimezone(dt.UTC)
    day_end = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(), tzinfo=zone).astimezone(dt.UTC)
    day_length_scale = (day_end - day_start).total_seconds() / SECONDS_PER_DAY
    width = np.asarray([SLOT_SIZES[size][0] for size in range(len(SLOT_SIZES))])[sizes]
    height = np.asarray([SLOT_SIZES[size][1] for size in range(len(SLOT_SIZES))])[sizes]
    return (
        pl.DataFrame(
            {
                "auction_id": [f"{date:%Y%m%d}-{index:06d}" for index in range(n)],
                "second_of_day": seconds,
                "campaign_id": market.campaign_id,
                "market_id": market.market_id,
                "exchange": np.asarray(EXCHANGES)[exchanges],
                "slot_id": [f"slot-{slot:04d}" for slot in slots],
                "slot_width": width.astype(np.int64),
                "slot_height": height.astype(np.int64),
                "region": [f"{market.market_id}-R{region}" for region in regions],
                "user_id": pl.Series([None] * n, dtype=pl.String),
                "floor_price": floor_price,
                "market_price": market_price,
                "bid_price": np.full(n, logged_bid),
                "won": np.ones(n, dtype=bool),
                "click": click,
                "conversion": conversion,
                "value": np.where(conversion, order_value, 0.0),
                "currency": market.currency,
                "click_prob": click_prob,
                "value_per_click": value_per_click,
            }
        )
        .with_columns(
            request_ts=pl.lit(day_start, dtype=pl.Datetime("us", "UTC"))
            + pl.duration(microseconds=(pl.col("second_of_day") * day_length_scale * 1e6).cast(pl.Int64))
        )
        .drop("second_of_day")
        .select("auction_id", "request_ts", pl.exclude("auction_id", "request_ts"))
    )
