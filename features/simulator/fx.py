"""Exchange rates: a daily random walk per currency that drifts back toward its starting level.

log(rate) follows a discrete Ornstein-Uhlenbeck process: each day it moves by a normal shock of the
currency's daily volatility and is pulled back by `mean_reversion` of its distance to the start, so
two years of simulation stay near realistic levels. Pegged currencies (AED, SAR) have zero
volatility and stay put. The starting levels live in `configs/marketplace.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from features.contract import FX_RATES
from features.simulator.config import FxSettings


@dataclass(frozen=True)
class FxPaths:
    currencies: list[str]
    usd_per_unit: np.ndarray  # currencies x days

    def rates_for(self, currency: str) -> np.ndarray:
        return self.usd_per_unit[self.currencies.index(currency)]


def simulate_fx(settings: FxSettings, n_days: int, rng: np.random.Generator) -> FxPaths:
    currencies = sorted(settings.currencies)
    start = np.log([settings.currencies[code].usd_per_unit for code in currencies])
    volatility = np.array([settings.currencies[code].daily_volatility for code in currencies])
    shocks = rng.standard_normal((len(currencies), n_days)) * volatility[:, None]
    log_rates = np.empty((len(currencies), n_days))
    log_rates[:, 0] = start
    for day in range(1, n_days):  # one step per day over all currencies at once
        pull = settings.mean_reversion * (start - log_rates[:, day - 1])
        log_rates[:, day] = log_rates[:, day - 1] + pull + shocks[:, day]
    rates = _six_significant_digits(np.exp(log_rates))
    rates[np.array(currencies) == "USD"] = 1.0
    return FxPaths(currencies, rates)


def _six_significant_digits(rates: np.ndarray) -> np.ndarray:
    # published rates carry about six significant digits; the simulation uses exactly what it publishes
    scale = 10.0 ** (5 - np.floor(np.log10(rates)))
    return np.round(rates * scale) / scale


def fx_frame(days: np.ndarray, fx: FxPaths) -> pl.DataFrame:
    """The contract's `fx_rates` table: one row per day and currency."""
    n_days = len(days)
    return pl.DataFrame(
        {
            "date": pl.Series(np.tile(days, len(fx.currencies))).cast(pl.Date),
            "currency": pl.Series(np.repeat(fx.currencies, n_days)),
            "usd_per_unit": fx.usd_per_unit.ravel(),
        },
        schema=FX_RATES.polars_schema,
    )
