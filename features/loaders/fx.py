"""Static exchange rates for the real data sets: one annual average per currency, repeated daily.

The data sets carry no exchange rates, but the contract converts money through `fx_rates`, so each
loader writes a daily row per currency it uses. The rates are annual averages, written here as
published (currency units per US dollar, inverted with `1 /`; the pound, euro and Australian dollar
are quoted in dollars per unit). They are approximate, good to a percent or two, which is plenty for
converting revenue into one currency; they do not follow day-to-day moves.

Sources: US Federal Reserve G.5A "Foreign Exchange Rates, Annual" (2011 and 2013) for every
currency it quotes; for the rest, the issuing central bank's 2011 average (Bank of Israel, Czech
National Bank, Narodowy Bank Polski, Central Bank of Iceland); pegged currencies at their peg
(Lithuanian litas to the euro at 3.4528, Gulf currencies and the Lebanese pound to the dollar).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import polars as pl

from features.contract import FX_RATES

EUR_2011 = 1.3931

USD_PER_UNIT: dict[int, dict[str, float]] = {
    2011: {
        "GBP": 1.6039,
        "EUR": EUR_2011,
        "AUD": 1.0334,
        "CAD": 1 / 0.9891,
        "CHF": 1 / 0.8880,
        "DKK": 1 / 5.3480,
        "NOK": 1 / 5.6047,
        "SEK": 1 / 6.4969,
        "JPY": 1 / 79.73,
        "HKD": 1 / 7.7841,
        "SGD": 1 / 1.2577,
        "BRL": 1 / 1.6750,
        "ZAR": 1 / 7.2597,
        "CNY": 1 / 6.4640,
        "ILS": 1 / 3.5781,
        "CZK": 1 / 17.696,
        "PLN": 1 / 2.9634,
        "ISK": 1 / 116.07,
        "LTL": EUR_2011 / 3.4528,
        "BHD": 1 / 0.376,
        "SAR": 1 / 3.75,
        "AED": 1 / 3.6725,
        "LBP": 1 / 1507.5,
    },
    2013: {
        "CNY": 1 / 6.1478,
    },
}


def usd_per_unit(currency: str, year: int) -> float:
    """The annual average; the dollar is 1 in every year."""
    if currency == "USD":
        return 1.0
    try:
        return USD_PER_UNIT[year][currency]
    except KeyError:
        raise KeyError(f"no {year} exchange rate for {currency} in features.loaders.fx") from None


def daily_fx_rates(
    currencies: Iterable[str], first_day: date, last_day: date, rates_year: int
) -> pl.DataFrame:
    """Contract fx_rates rows: every day from first_day to last_day (inclusive) for each currency,
    at the `rates_year` annual average."""
    rates = pl.DataFrame(
        [(currency, usd_per_unit(currency, rates_year)) for currency in sorted(set(currencies))],
        schema={"currency": pl.String, "usd_per_unit": pl.Float64},
        orient="row",
    )
    days = pl.DataFrame({"date": pl.date_range(first_day, last_day, "1d", eager=True)})
    return days.join(rates, how="cross").select(FX_RATES.column_names).sort("date", "currency")
