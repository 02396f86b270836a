"""A campaign's bid requests over one market-local day, as the arrays every bidder and the oracle replay.

The generic source is a frame of requests with columns `request_ts` (UTC), `market_price` (the
highest competing bid, the price to beat), `floor_price` (reserve), `pctr` (the bidder's click or
conversion probability) and optionally a column with the value of one click for the objective
(absent: every click is worth 1, the clicks objective). The simulator's auction logs and the iPinYou
replay both produce such frames. Prices are per impression; `cpm_prices=True` converts CPM prices
(the contract's unit) by dividing by 1000. Budgets are in the same currency.

A day is the campaign's market-local calendar day: requests are grouped by their local date and
placed on the day by the elapsed fraction of its real length, so a 23- or 25-hour daylight-saving
day still runs from 0 to 1.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

IMPRESSIONS_PER_CPM = 1000


@dataclass(frozen=True, eq=False)
class AuctionDay:
    """One day's requests, sorted by time. All arrays have one entry per request."""

    date: dt.date
    time_of_day: np.ndarray  # fraction of the local day elapsed, in [0, 1), ascending
    market_price: np.ndarray  # highest competing bid per impression
    floor_price: np.ndarray  # reserve price per impression
    pctr: np.ndarray  # the bidder's predicted click probability: what bids are computed from
    value: np.ndarray  # value of one click for the objective (1 for the clicks objective)
    click_prob: np.ndarray  # what a won impression is credited: true click probability, or a sampled 0/1

    def __post_init__(self) -> None:
        sizes = {
            len(array)
            for array in (
                self.time_of_day,
                self.market_price,
                self.floor_price,
                self.pctr,
                self.value,
                self.click_prob,
            )
        }
        if len(sizes) != 1:
            raise ValueError(f"day {self.date}: request arrays differ in length {sorted(sizes)}")
        if len(self.time_of_day) > 1 and np.any(np.diff(self.time_of_day) < 0):
            raise ValueError(f"day {self.date}: requests are not sorted by time")

    @property
    def n_requests(self) -> int:
        return len(self.time_of_day)

    @property
    def price_to_beat(self) -> np.ndarray:
        """What a won impression costs in a second-price auction: the higher of market and floor price."""
        return np.maximum(self.market_price, self.floor_price)

    @property
    def bid_value(self) -> np.ndarray:
        """The expected value of each impression as the bidder sees it (pCTR x value)."""
        return self.pctr * self.value

    @property
    def credited_value(self) -> np.ndarray:
        """The value a won impression earns in the evaluation (true or sampled clicks x value)."""
        return self.click_prob * self.value


def unconstrained_spend(day: AuctionDay) -> float:
    """The spend of winning every auction of the day in a second-price auction.

    A constant bid above every market and floor price of the day (the "constant-high" bid) wins all
    requests and pays each one's price to beat, max(market_price, floor_price); this is its total.
    Evaluation budgets are fractions of it.
    """
    return float(day.price_to_beat.sum())


def budget_for(day: AuctionDay, budget_fraction: float) -> float:
    """The day's budget at a fraction of its unconstrained spend."""
    if not 0 < budget_fraction <= 1:
        raise ValueError(f"budget fraction must be in (0, 1], got {budget_fraction}")
    return budget_fraction * unconstrained_spend(day)


def sample_clicks(day: AuctionDay, rng: np.random.Generator) -> AuctionDay:
    """The day with each request's credited click drawn once (0 or 1) from its click probability."""
    clicks = (rng.random(day.n_requests) < day.click_prob).astype(np.float64)
    return replace(day, click_prob=clicks)


def days_from_frame(
    frame: pl.DataFrame,
    timezone: str,
    *,
    value_column: str | None = None,
    click_prob_column: str | None = None,
    cpm_prices: bool = False,
) -> list[AuctionDay]:
    """Split a frame of requests into market-local days, oldest first.

    `click_prob_column` names the true click probability used to credit won impressions (the known
    click model of a simulator); without it the bidder's own `pctr` is credited.
    """
    missing = {"request_ts", "market_price", "floor_price", "pctr"} - set(frame.columns)
    if missing:
        raise ValueError(f"request frame lacks columns {sorted(missing)}")
    price_divisor = IMPRESSIONS_PER_CPM if cpm_prices else 1
    request_ts = pl.col("request_ts").cast(pl.Datetime("us", "UTC"))
    local_date = request_ts.dt.convert_time_zone(timezone).dt.date()

    def local_midnight_utc(date: pl.Expr) -> pl.Expr:
        local = date.cast(pl.Datetime("us")).dt.replace_time_zone(timezone, ambiguous="earliest")
        return local.dt.convert_time_zone("UTC")

    # elapsed share of the day's real length: 23 or 25 hours on daylight-saving days
    day_start = local_midnight_utc(local_date)
    day_end = local_midnight_utc(local_date + pl.duration(days=1))
    requests = frame.select(
        local_date.alias("date"),
        (
            (request_ts - day_start).dt.total_microseconds() / (day_end - day_start).dt.total_microseconds()
        ).alias("time_of_day"),
        (pl.col("market_price") / price_divisor).alias("market_price"),
        (pl.col("floor_price") / price_divisor).alias("floor_price"),
        pl.col("pctr").cast(pl.Float64),
        (pl.col(value_column).cast(pl.Float64) if value_column else pl.lit(1.0)).alias("value"),
        (pl.col(click_prob_column) if click_prob_column else pl.col("pctr")).cast(pl.Float64).alias("credit"),
    ).sort("date", "time_of_day", maintain_order=True)
    days = []
    for (date,), group in requests.group_by("date", maintain_order=True):
        days.append(
            AuctionDay(
                date=date,
                time_of_day=group["time_of_day"].to_numpy().clip(0.0, np.nextafter(1.0, 0.0)),
                market_price=group["market_price"].to_numpy(),
                floor_price=group["floor_price"].to_numpy(),
                pctr=group["pctr"].to_numpy(),
                value=group["value"].to_numpy(),
                click_prob=group["credit"].to_numpy(),
            )
        )
    return days
