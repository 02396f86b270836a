"""How busy each market is on each day: the multiplier on its shoppers' session rates.

traffic[market, day] = weekly(weekday) x yearly(day of year) x growth(years since start) x calendar,
where the calendar factor is the largest uplift of the shopping events that day (else the public
holiday uplift on a public holiday), and on the days right after a shopping event ends a dip
(`post_event_dip`) while shoppers recover. The calendar is `features.markets.holiday_calendar`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from features.markets import PUBLIC_HOLIDAY, SHOPPING_EVENT, event_name_to_key, holiday_calendar
from features.simulator.clock import day_of_year, weekday
from features.simulator.config import MarketplaceConfig


@dataclass(frozen=True)
class EventRun:
    """Consecutive days of one shopping event in one market (one Black Friday, one Ramadan)."""

    market: int
    event: str
    first_day: int
    last_day: int


@dataclass(frozen=True)
class Traffic:
    calendar: pl.DataFrame  # features.markets.holiday_calendar for the simulated markets and days
    multiplier: np.ndarray  # markets x days
    shopping_event: np.ndarray  # markets x days, bool
    public_holiday: np.ndarray  # markets x days, bool
    event_runs: list[EventRun]


def market_calendar(config: MarketplaceConfig) -> pl.DataFrame:
    return holiday_calendar(
        {market.market_id: market.country for market in config.markets},
        config.start_date,
        config.end_date,
        {
            market.market_id: market.shopping_events
            for market in config.markets
            if market.shopping_events is not None
        },
    )


def _event_runs(calendar: pl.DataFrame, config: MarketplaceConfig, days: np.ndarray) -> list[EventRun]:
    market_index = {market.market_id: index for index, market in enumerate(config.markets)}
    keys = event_name_to_key()
    events = calendar.filter(pl.col("kind") == SHOPPING_EVENT).sort("market_id", "name", "date")
    runs: list[EventRun] = []
    for (market_id, name), group in events.group_by("market_id", "name", maintain_order=True):
        day_index = np.searchsorted(days, group.get_column("date").to_numpy().astype("datetime64[D]"))
        breaks = np.flatnonzero(np.diff(day_index) > 1)
        firsts = np.concatenate([[day_index[0]], day_index[breaks + 1]])
        lasts = np.concatenate([day_index[breaks], [day_index[-1]]])
        runs.extend(
            EventRun(market_index[str(market_id)], keys[str(name)], int(first), int(last))
            for first, last in zip(firsts, lasts, strict=True)
        )
    return runs


def _day_flags(calendar: pl.DataFrame, kind: str, config: MarketplaceConfig, days: np.ndarray) -> np.ndarray:
    """markets x days, True where the calendar has a row of this kind."""
    market_index = {market.market_id: index for index, market in enumerate(config.markets)}
    rows = calendar.filter(pl.col("kind") == kind)
    flags = np.zeros((len(config.markets), len(days)), dtype=bool)
    markets = np.array([market_index[m] for m in rows.get_column("market_id")], dtype=int)
    flags[markets, np.searchsorted(days, rows.get_column("date").to_numpy().astype("datetime64[D]"))] = True
    return flags


def _calendar_factor(
    config: MarketplaceConfig, runs: list[EventRun], shopping_event: np.ndarray, public_holiday: np.ndarray
) -> np.ndarray:
    """markets x days: event uplift, else public-holiday uplift, else post-event dip, else 1."""
    seasonality = config.seasonality
    n_days = shopping_event.shape[1]
    event_factor = np.zeros(shopping_event.shape)  # every event day gets its largest uplift below
    dip = np.ones(shopping_event.shape)
    for run in runs:
        span = slice(run.first_day, run.last_day + 1)
        # overlapping events (Black Friday inside a Christmas rush) take the larger uplift
        event_factor[run.market, span] = np.maximum(
            event_factor[run.market, span], seasonality.event_uplift[run.event]
        )
        for offset, factor in enumerate(seasonality.post_event_dip, start=1):
            day = run.last_day + offset
            if day < n_days:
                dip[run.market, day] = min(dip[run.market, day], factor)
    holiday = np.where(public_holiday, seasonality.public_holiday_uplift, dip)
    return np.where(shopping_event, event_factor, holiday)


def market_traffic(config: MarketplaceConfig, days: np.ndarray) -> Traffic:
    seasonality = config.seasonality
    calendar = market_calendar(config)
    shopping_event = _day_flags(calendar, SHOPPING_EVENT, config, days)
    public_holiday = _day_flags(calendar, PUBLIC_HOLIDAY, config, days)
    runs = _event_runs(calendar, config, days)
    calendar_factor = _calendar_factor(config, runs, shopping_event, public_holiday)
    yearly = np.exp(
        seasonality.yearly_amplitude
        * np.cos(2 * np.pi * (day_of_year(days) - seasonality.yearly_peak_day) / 365.25)
    )
    years = np.arange(len(days)) / 365.25
    multiplier = np.empty(calendar_factor.shape)
    for index, market in enumerate(config.markets):
        weekly = np.array(market.weekly_pattern or seasonality.weekly_pattern)
        growth = (1 + market.annual_growth) ** years
        multiplier[index] = (weekly / weekly.mean())[weekday(days)] * yearly * growth * calendar_factor[index]
    return Traffic(calendar, multiplier, shopping_event, public_holiday, runs)
