"""Markets and their calendars: contract rows, public holidays and shopping events."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest

from features.contract import MARKETS
from features.markets import (
    CALENDAR_SCHEMA,
    DEFAULT_MARKETS,
    PUBLIC_HOLIDAY,
    SHOPPING_EVENT,
    holiday_calendar,
    markets_frame,
)

START, END = date(2024, 11, 1), date(2026, 10, 31)
COUNTRIES = {market.market_id: market.country for market in DEFAULT_MARKETS} | {"SA": "SA"}


@pytest.fixture(scope="module")
def calendar() -> pl.DataFrame:
    return holiday_calendar(COUNTRIES, START, END)


def _days(calendar: pl.DataFrame, market_id: str, name: str, kind: str = SHOPPING_EVENT) -> list[date]:
    rows = calendar.filter(pl.col("market_id") == market_id, pl.col("name") == name, pl.col("kind") == kind)
    return rows.get_column("date").to_list()


def test_markets_frame_is_the_contract_table() -> None:
    frame = markets_frame(DEFAULT_MARKETS)
    assert frame.schema == pl.Schema(MARKETS.polars_schema)
    assert {"US", "GB", "DE", "BR", "JP", "AE", "IN"} <= set(frame.get_column("market_id"))
    japan = frame.filter(pl.col("market_id") == "JP").row(0, named=True)
    assert (japan["currency"], japan["timezone"], japan["language"]) == ("JPY", "Asia/Tokyo", "ja-JP")


def test_calendar_columns_order_and_uniqueness(calendar: pl.DataFrame) -> None:
    assert calendar.schema == pl.Schema(CALENDAR_SCHEMA)
    assert set(calendar.get_column("kind")) == {PUBLIC_HOLIDAY, SHOPPING_EVENT}
    assert calendar.equals(calendar.sort("market_id", "date", "kind", "name"))
    assert calendar.is_duplicated().sum() == 0
    assert calendar.get_column("date").min() >= START and calendar.get_column("date").max() <= END


def test_black_friday_and_cyber_monday(calendar: pl.DataFrame) -> None:
    assert date(2025, 11, 28) in _days(calendar, "US", "Black Friday")
    assert date(2024, 11, 29) in _days(calendar, "US", "Black Friday")
    assert _days(calendar, "US", "Cyber Monday") == [date(2024, 12, 2), date(2025, 12, 1)]


def test_singles_day_runs_in_every_market(calendar: pl.DataFrame) -> None:
    singles = calendar.filter(pl.col("name").str.contains("11.11", literal=True))
    assert set(singles.get_column("market_id")) == set(COUNTRIES)
    assert set(singles.get_column("date")) == {date(2024, 11, 11), date(2025, 11, 11)}


def test_diwali_in_india(calendar: pl.DataFrame) -> None:
    assert date(2025, 10, 20) in _days(calendar, "IN", "Diwali")  # the festive days end on Diwali
    assert date(2025, 10, 20) in _days(calendar, "IN", "Diwali", PUBLIC_HOLIDAY)
    assert _days(calendar, "US", "Diwali") == []


@pytest.mark.parametrize("market_id", ["AE", "SA"])
def test_eid_and_ramadan_in_the_gulf(calendar: pl.DataFrame, market_id: str) -> None:
    eid = _days(calendar, market_id, "Eid al-Fitr")
    assert date(2025, 3, 30) in eid and date(2026, 3, 20) in eid
    assert date(2025, 6, 6) in _days(calendar, market_id, "Eid al-Adha")
    ramadan = _days(calendar, market_id, "Ramadan")
    # approximated as the 30 days before Eid al-Fitr (the real 2025 Ramadan: 1 to 29 March)
    first = date(2025, 2, 28)
    assert [day for day in ramadan if day.year == 2025] == [first + timedelta(days=n) for n in range(30)]
    assert _days(calendar, "US", "Ramadan") == []


def test_tradewind_days_are_the_second_tuesday_and_wednesday_of_july(calendar: pl.DataFrame) -> None:
    days = _days(calendar, "DE", "Tradewind Days")
    assert days == [date(2025, 7, 8), date(2025, 7, 9), date(2026, 7, 14), date(2026, 7, 15)]
    assert [day.weekday() for day in days] == [1, 2, 1, 2]


def test_christmas_rush_where_christmas_is_celebrated(calendar: pl.DataFrame) -> None:
    assert date(2025, 12, 20) in _days(calendar, "GB", "Christmas")
    assert _days(calendar, "AE", "Christmas") == []
    assert date(2025, 12, 25) in _days(calendar, "GB", "Christmas Day", PUBLIC_HOLIDAY)


def test_any_country_known_to_holidays_and_unknown_ones() -> None:
    calendar = holiday_calendar({"FR": "FR", "KE": "KE", "XX": "XX"}, date(2025, 1, 1), date(2025, 12, 31))
    public = calendar.filter(pl.col("kind") == PUBLIC_HOLIDAY)
    assert date(2025, 7, 14) in public.filter(pl.col("market_id") == "FR").get_column("date").to_list()
    assert public.filter(pl.col("market_id") == "KE").height >= 8
    unknown = calendar.filter(pl.col("market_id") == "XX")
    assert unknown.filter(pl.col("kind") == PUBLIC_HOLIDAY).height == 0
    assert "Black Friday" in unknown.get_column("name").to_list()  # marketplace-wide sales still run


def test_shopping_events_are_configurable() -> None:
    calendar = holiday_calendar({"GB": "GB"}, date(2025, 1, 1), date(2025, 12, 31), {"GB": ["diwali"]})
    assert set(calendar.filter(pl.col("kind") == SHOPPING_EVENT).get_column("name")) == {"Diwali"}
    with pytest.raises(ValueError, match="prime_day"):
        holiday_calendar({"GB": "GB"}, date(2025, 1, 1), date(2025, 12, 31), {"GB": ["prime_day"]})
