"""The raw iPinYou log (season 3, make-ipinyou-data layout) as replayable days: the semi-real mode.

Every log line is an impression iPinYou won, with the second price it paid (`payprice`): replayed,
it is a bid request whose market price is that paid price. Prices are fen (0.01 CNY) per thousand
impressions; here they become CNY per impression (divide by 100,000). Timestamps are
yyyyMMddHHmmssSSS in Beijing time (Asia/Shanghai, UTC+8, no daylight saving); days are Beijing days.

The sample holds 5 clicks in 8,355 impressions: far too few to learn or even to score a bidder. The
replay therefore credits clicks from a known click model defined here (not fitted: invented, with
the sample's click rate as base and effects of plausible sign and size), and the bidder is given the
same probabilities as its pCTR, so the bidders are compared on pacing and price, not on a model:

    logit p = logit(0.0006)                        the sample's click rate, 5 / 8,355
            + visibility   FirstView +0.5, SecondView +0.3, ThirdView +0.1, OtherView -0.3, else 0
            + exchange     1: 0, 2: -0.1, 3: +0.2
            + 0.3 log(slot area / 300x250)         larger slots are clicked more
            + 0.3 if the slot has a reserve price  reserve-priced slots are premium inventory
            + 0.3 cos(2 pi (hour - 21) / 24)       evening peak, night trough (Beijing hour)
            + domain effect ~ N(0, 0.5^2)          fixed per domain by a hash of its name
            + city effect ~ N(0, 0.2^2)            fixed per city by a hash of its id

Only pre-auction fields enter, never the paid price, so pCTR tells the bidder nothing about the
price to beat. Note the advertiser paused delivery from 20:00 to 24:00 every day: those hours have
no requests.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import polars as pl

from features.loaders.ipinyou import read_log  # one reader of the raw log format
from models.bidding.days import AuctionDay, days_from_frame

TIMEZONE = "Asia/Shanghai"
CURRENCY = "CNY"
FEN_CPM_PER_YUAN_PER_IMPRESSION = 100 * 1000
BASE_CTR = 0.0006
VISIBILITY_EFFECT = {"FirstView": 0.5, "SecondView": 0.3, "ThirdView": 0.1, "OtherView": -0.3}
EXCHANGE_EFFECT = {"1": 0.0, "2": -0.1, "3": 0.2}
SLOT_AREA_ELASTICITY = 0.3
REFERENCE_SLOT_AREA = 300 * 250
RESERVE_EFFECT = 0.3
EVENING_PEAK_EFFECT = 0.3
EVENING_PEAK_HOUR = 21
DOMAIN_EFFECT_SD = 0.5
CITY_EFFECT_SD = 0.2


def _hashed_effect(key: str, salt: str, sd: float) -> float:
    """A stable N(0, sd^2) draw per key: the same on every machine and run."""
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    uniform = (int.from_bytes(digest, "big") + 0.5) / 2**64
    return sd * NormalDist().inv_cdf(uniform)


def known_click_probability(log: pl.DataFrame) -> np.ndarray:
    """The replay's click probability per log line (see the module docstring)."""
    local_hour = log["timestamp"].str.slice(8, 2).cast(pl.Int64).to_numpy()
    area = (log["slotwidth"].cast(pl.Float64) * log["slotheight"].cast(pl.Float64)).to_numpy()
    domain_effect = {
        domain: _hashed_effect(domain, "domain", DOMAIN_EFFECT_SD) for domain in log["domain"].unique()
    }
    city_effect = {city: _hashed_effect(city, "city", CITY_EFFECT_SD) for city in log["city"].unique()}
    logit = (
        math.log(BASE_CTR / (1 - BASE_CTR))
        + log["slotvisibility"]
        .replace_strict(VISIBILITY_EFFECT, default=0.0, return_dtype=pl.Float64)
        .to_numpy()
        + log["adexchange"].replace_strict(EXCHANGE_EFFECT, default=0.0, return_dtype=pl.Float64).to_numpy()
        + SLOT_AREA_ELASTICITY * np.log(np.maximum(area, 1.0) / REFERENCE_SLOT_AREA)
        + RESERVE_EFFECT * (log["slotprice"].cast(pl.Int64).to_numpy() > 0)
        + EVENING_PEAK_EFFECT * np.cos(2 * np.pi * (local_hour - EVENING_PEAK_HOUR) / 24)
        + log["domain"].replace_strict(domain_effect, return_dtype=pl.Float64).to_numpy()
        + log["city"].replace_strict(city_effect, return_dtype=pl.Float64).to_numpy()
    )
    return 1.0 / (1.0 + np.exp(-logit))


def requests_frame(log: pl.DataFrame) -> pl.DataFrame:
    """The log as a generic request frame (UTC timestamps, CNY per impression, known pCTR)."""
    local_time = pl.col("timestamp").str.strptime(pl.Datetime("ms"), "%Y%m%d%H%M%S%3f", strict=True)
    return log.select(
        pl.col("bidid").alias("auction_id"),
        local_time.dt.replace_time_zone(TIMEZONE).dt.convert_time_zone("UTC").alias("request_ts"),
        pl.col("adexchange").alias("exchange"),
        pl.col("slotid").alias("slot_id"),
        pl.col("slotwidth").cast(pl.Int64).alias("slot_width"),
        pl.col("slotheight").cast(pl.Int64).alias("slot_height"),
        pl.col("region"),
        (pl.col("slotprice").cast(pl.Float64) / FEN_CPM_PER_YUAN_PER_IMPRESSION).alias("floor_price"),
        (pl.col("payprice").cast(pl.Float64) / FEN_CPM_PER_YUAN_PER_IMPRESSION).alias("market_price"),
        (pl.col("click").cast(pl.Int64) > 0).alias("logged_click"),
    ).with_columns(pctr=pl.Series(known_click_probability(log)))


def load_days(path: Path) -> list[AuctionDay]:
    """The Beijing days of one log file, clicks credited by the known click model."""
    return days_from_frame(requests_frame(read_log(path)), TIMEZONE)


def train_test_days(folder: Path) -> tuple[list[AuctionDay], list[AuctionDay]]:
    """Days of `train.log.txt` and `test.log.txt`. A day in both files (2013-10-22 in the 2259 sample)
    is a test day made of the test file's lines only; the train file's lines of that day are dropped."""
    test = load_days(folder / "test.log.txt")
    test_dates = {day.date for day in test}
    train = [day for day in load_days(folder / "train.log.txt") if day.date not in test_dates]
    return train, test
