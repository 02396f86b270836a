"""Local prices: the US-dollar base price converted at the exchange rate and rounded the local way.

Sellers reprice once a month: on the first day of each month (and on the first simulated day) the
local list price becomes base_usd x market price_index / usd_per_unit(that day), rounded to the
market's `price_step` minus its `price_ending` (19.99, 1,980 yen, 1,499 rupees). Between repricings
the local price stays put, so exchange-rate moves reach shoppers in monthly steps. A promotion takes
its discount off the list price, rounded to the market's `price_decimals`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.simulator.config import MarketplaceConfig
from features.simulator.fx import FxPaths


@dataclass(frozen=True)
class Prices:
    month_of_day: np.ndarray  # days -> index of the repricing period
    list_price: np.ndarray  # products x markets x periods, local currency
    reference_price: np.ndarray  # products x markets: unrounded local price at the starting rates

    def daily_list_price(self, market: int, products: np.ndarray) -> np.ndarray:
        """products x days local list price in one market."""
        return self.list_price[products, market][:, self.month_of_day]


def _round_locally(raw: np.ndarray, step: float, ending: float, decimals: int) -> np.ndarray:
    rounded = np.maximum(np.round(raw / step), 1) * step - ending
    return np.round(rounded, decimals)


def local_prices(
    config: MarketplaceConfig, days: np.ndarray, base_price_usd: np.ndarray, fx: FxPaths
) -> Prices:
    months = days.astype("datetime64[M]")
    month_of_day = (months - months[0]).astype(np.int64)
    repricing_days = np.searchsorted(month_of_day, np.arange(month_of_day[-1] + 1))
    n_markets = len(config.markets)
    list_price = np.empty((len(base_price_usd), n_markets, len(repricing_days)))
    reference = np.empty((len(base_price_usd), n_markets))
    for index, market in enumerate(config.markets):
        rates = fx.rates_for(market.currency)
        local = base_price_usd[:, None] * market.price_index / rates[None, repricing_days]
        list_price[:, index, :] = _round_locally(
            local, market.price_step, market.price_ending, market.price_decimals
        )
        reference[:, index] = base_price_usd * market.price_index / rates[0]
    return Prices(month_of_day, list_price, reference)


def discounted(list_price: np.ndarray, discount: np.ndarray, decimals: int) -> np.ndarray:
    return np.round(list_price * (1 - discount), decimals)
