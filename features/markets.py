"""Markets and their calendars: who we sell to, and which days are special there.

A market is a country storefront with its own currency, time zone, language and holiday calendar.
`holiday_calendar` lists, per market and day, the public holidays (from the `holidays` package, for
any country it supports) and the shopping events that move demand. The simulator uses it to shape
demand and the forecaster uses it as a feature, so both see the same days.

Shopping events and their rules (all dates are market-local):
- Black Friday: the day after the fourth Thursday of November (US Thanksgiving).
- Cyber Monday: the Monday after Black Friday.
- Singles' Day (11.11): 11 November, run as a marketplace-wide sale.
- Christmas: the gift-buying rush, 14 to 24 December.
- Ramadan: approximated as the 30 days before Eid al-Fitr. `holidays` gives Eid al-Fitr (the first
  day after Ramadan) for Islamic-calendar countries; Ramadan lasts 29 or 30 days, so the start can
  be a day early. Both come from the reference country `ISLAMIC_REFERENCE_COUNTRY`, so a market in
  any country can run them.
- Eid al-Fitr and Eid al-Adha: the first day of the feast and the two days after it.
- Diwali: the festive shopping days, from four days before Diwali to Diwali itself (Dhanteras falls
  two days before), with the date from India's calendar in `holidays`.
- Tradewind Days: our Prime-Day-like summer sale, the second Tuesday of July and the Wednesday after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache

import holidays
import polars as pl

from features.contract import MARKETS

PUBLIC_HOLIDAY = "public_holiday"
SHOPPING_EVENT = "shopping_event"
CALENDAR_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(),
    "market_id": pl.String(),
    "name": pl.String(),
    "kind": pl.String(),
}

# AE names the first day of each Eid exactly ("Eid al-Fitr"), unlike SA's "Eid al-Fitr Holiday" runs
ISLAMIC_REFERENCE_COUNTRY = "AE"
DIWALI_REFERENCE_COUNTRY = "IN"
HOLIDAY_LANGUAGE = "en_US"


@dataclass(frozen=True)
class Market:
    market_id: str
    name: str
    country: str  # ISO 3166-1 alpha-2
    currency: str  # ISO 4217
    timezone: str  # IANA
    language: str  # BCP 47


DEFAULT_MARKETS: tuple[Market, ...] = (
    Market("US", "United States", "US", "USD", "America/New_York", "en-US"),
    Market("GB", "United Kingdom", "GB", "GBP", "Europe/London", "en-GB"),
    Market("DE", "Germany", "DE", "EUR", "Europe/Berlin", "de-DE"),
    Market("BR", "Brazil", "BR", "BRL", "America/Sao_Paulo", "pt-BR"),
    Market("JP", "Japan", "JP", "JPY", "Asia/Tokyo", "ja-JP"),
    Market("AE", "United Arab Emirates", "AE", "AED", "Asia/Dubai", "ar-AE"),
    Market("IN", "India", "IN", "INR", "Asia/Kolkata", "en-IN"),
)


def markets_frame(markets: Iterable[Market]) -> pl.DataFrame:
    """The contract's `markets` table for these markets, in the order given."""
    rows = [
        {
            "market_id": market.market_id,
            "name": market.name,
            "country": market.country,
            "currency": market.currency,
            "timezone": market.timezone,
            "language": market.language,
        }
        for market in markets
    ]
    return pl.DataFrame(rows, schema=MARKETS.polars_schema)


# ---------------------------------------------------------------------------------------------
# public holidays


@cache
def _country_holidays(country: str, year: int) -> tuple[tuple[date, str], ...]:
    """(date, name) pairs of one country-year, one pair per holiday; empty for an unknown country."""
    try:
        calendar = holidays.country_holidays(country, years=year, language=HOLIDAY_LANGUAGE)
    except NotImplementedError:  # `holidays` does not know this country
        return ()
    pairs = []
    for day, names in calendar.items():
        # `holidays` joins two holidays on one day with "; "
        pairs.extend((day, name.strip()) for name in names.split(";"))
    return tuple(sorted(pairs))


def public_holidays(country: str, start: date, end: date) -> list[tuple[date, str]]:
    """The public holidays of `country` between start and end inclusive (none for unknown countries)."""
    found = []
    for year in range(start.year, end.year + 1):
        found.extend((day, name) for day, name in _country_holidays(country, year) if start <= day <= end)
    return found


# ---------------------------------------------------------------------------------------------
# shopping events


def _without_estimate_note(name: str) -> str:
    return name.replace("(estimated)", "").strip()


def _feast_first_days(feast: str, year: int) -> list[date]:
    """First days of an Islamic feast in a Gregorian year (a year can hold two, e.g. 2033)."""
    days = sorted(
        day
        for day, name in _country_holidays(ISLAMIC_REFERENCE_COUNTRY, year)
        if _without_estimate_note(name).startswith(feast)
    )
    exact = {
        day
        for day, name in _country_holidays(ISLAMIC_REFERENCE_COUNTRY, year)
        if _without_estimate_note(name) == feast
    }
    # group the feast's days into runs; a run's first day is the exactly named one, else its first
    runs: list[list[date]] = []
    for day in days:
        if runs and (day - runs[-1][-1]).days <= 2:
            runs[-1].append(day)
        else:
            runs.append([day])
    return [min((day for day in run if day in exact), default=run[0]) for run in runs]


def _span(first: date, days: int) -> list[date]:
    return [first + timedelta(days=offset) for offset in range(days)]


def _black_friday(year: int) -> date:
    november_first = date(year, 11, 1)
    first_thursday = november_first + timedelta(days=(3 - november_first.weekday()) % 7)
    return first_thursday + timedelta(days=22)


def _black_friday_days(year: int) -> list[date]:
    return [_black_friday(year)]


def _cyber_monday_days(year: int) -> list[date]:
    return [_black_friday(year) + timedelta(days=3)]


def _singles_day_days(year: int) -> list[date]:
    return [date(year, 11, 11)]


def _christmas_days(year: int) -> list[date]:
    return _span(date(year, 12, 14), 11)


def _ramadan_days(year: int) -> list[date]:
    # Ramadan ends the day before Eid al-Fitr; take 30 days (it has 29 or 30)
    return [day for eid in _feast_first_days("Eid al-Fitr", year) for day in _span(eid - timedelta(30), 30)]


def _eid_al_fitr_days(year: int) -> list[date]:
    return [day for eid in _feast_first_days("Eid al-Fitr", year) for day in _span(eid, 3)]


def _eid_al_adha_days(year: int) -> list[date]:
    return [day for eid in _feast_first_days("Eid al-Adha", year) for day in _span(eid, 3)]


def _diwali_days(year: int) -> list[date]:
    diwali = [day for day, name in _country_holidays(DIWALI_REFERENCE_COUNTRY, year) if name == "Diwali"]
    return [day for festival in diwali for day in _span(festival - timedelta(days=4), 5)]


def _tradewind_days(year: int) -> list[date]:
    july_first = date(year, 7, 1)
    first_tuesday = july_first + timedelta(days=(1 - july_first.weekday()) % 7)
    return _span(first_tuesday + timedelta(days=7), 2)


@dataclass(frozen=True)
class ShoppingEvent:
    key: str  # how configs name it
    name: str  # how the calendar shows it
    days_in_year: Callable[[int], list[date]]  # every day of the event anchored in that year

    def days(self, start: date, end: date) -> list[date]:
        """Every day of the event between start and end inclusive."""
        # a year's event can spill into the neighbouring year (Ramadan before a January Eid)
        found = {
            day
            for year in range(start.year - 1, end.year + 2)
            for day in self.days_in_year(year)
            if start <= day <= end
        }
        return sorted(found)


SHOPPING_EVENTS: dict[str, ShoppingEvent] = {
    event.key: event
    for event in (
        ShoppingEvent("black_friday", "Black Friday", _black_friday_days),
        ShoppingEvent("cyber_monday", "Cyber Monday", _cyber_monday_days),
        ShoppingEvent("singles_day", "Singles' Day (11.11)", _singles_day_days),
        ShoppingEvent("christmas", "Christmas", _christmas_days),
        ShoppingEvent("ramadan", "Ramadan", _ramadan_days),
        ShoppingEvent("eid_al_fitr", "Eid al-Fitr", _eid_al_fitr_days),
        ShoppingEvent("eid_al_adha", "Eid al-Adha", _eid_al_adha_days),
        ShoppingEvent("diwali", "Diwali", _diwali_days),
        ShoppingEvent("tradewind_days", "Tradewind Days", _tradewind_days),
    )
}

# Every market runs the marketplace-wide sales; the rest follow local custom.
MARKETPLACE_WIDE_EVENTS = ("black_friday", "singles_day", "tradewind_days")
EVENTS_BY_COUNTRY: dict[str, tuple[str, ...]] = {
    "US": ("cyber_monday", "christmas"),
    "GB": ("cyber_monday", "christmas"),
    "DE": ("cyber_monday", "christmas"),
    "BR": ("cyber_monday", "christmas"),
    "JP": ("christmas",),
    "AE": ("ramadan", "eid_al_fitr", "eid_al_adha"),
    "SA": ("ramadan", "eid_al_fitr", "eid_al_adha"),
    "IN": ("diwali",),
}


def default_shopping_events(country: str) -> tuple[str, ...]:
    """The shopping events a market in `country` runs unless configured otherwise."""
    return MARKETPLACE_WIDE_EVENTS + EVENTS_BY_COUNTRY.get(country, ())


def check_shopping_events(keys: Iterable[str]) -> None:
    unknown = sorted(set(keys) - set(SHOPPING_EVENTS))
    if unknown:
        raise ValueError(
            f"unknown shopping event(s) {', '.join(unknown)}; known: {', '.join(SHOPPING_EVENTS)}"
        )


def holiday_calendar(
    market_countries: Mapping[str, str],
    start: date,
    end: date,
    shopping_events: Mapping[str, Sequence[str]] | None = None,
) -> pl.DataFrame:
    """Public holidays and shopping events per market between start and end inclusive.

    `market_countries` maps market_id to its ISO country code (which selects the public holidays);
    `shopping_events` maps market_id to event keys of `SHOPPING_EVENTS`; a market missing from it
    runs `default_shopping_events(country)`. Columns: date, market_id, name, kind
    ("public_holiday" or "shopping_event"), sorted by market, date, kind and name.
    """
    shopping_events = shopping_events or {}
    check_shopping_events(key for keys in shopping_events.values() for key in keys)
    rows: list[tuple[date, str, str, str]] = []
    for market_id, country in market_countries.items():
        rows.extend(
            (day, market_id, name, PUBLIC_HOLIDAY) for day, name in public_holidays(country, start, end)
        )
        for key in shopping_events.get(market_id, default_shopping_events(country)):
            event = SHOPPING_EVENTS[key]
            rows.extend((day, market_id, event.name, SHOPPING_EVENT) for day in event.days(start, end))
    frame = pl.DataFrame(rows, schema=CALENDAR_SCHEMA, orient="row")
    return frame.unique().sort("market_id", "date", "kind", "name")


def event_name_to_key() -> dict[str, str]:
    """Calendar name -> config key of each shopping event (to read a calendar back)."""
    return {event.name: key for key, event in SHOPPING_EVENTS.items()}
