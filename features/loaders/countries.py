"""A static reference of the countries the real data sets sell into, as contract markets.

One row per ISO 3166-1 alpha-2 code: display name, local currency (ISO 4217), the IANA time zone
of the capital or main business centre (one zone per market, as the contract wants), and a BCP 47
tag for the main language. The currency is the one in use during the data (Lithuania paid in litas
until 2015). Every loader builds its markets from here, so a country shared by two data sets (US)
gets identical rows from both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from features.contract import MARKETS


@dataclass(frozen=True)
class Country:
    code: str
    name: str
    currency: str
    timezone: str
    language: str


COUNTRIES: dict[str, Country] = {
    country.code: country
    for country in (
        Country("AE", "United Arab Emirates", "AED", "Asia/Dubai", "ar-AE"),
        Country("AT", "Austria", "EUR", "Europe/Vienna", "de-AT"),
        Country("AU", "Australia", "AUD", "Australia/Sydney", "en-AU"),
        Country("BE", "Belgium", "EUR", "Europe/Brussels", "nl-BE"),
        Country("BH", "Bahrain", "BHD", "Asia/Bahrain", "ar-BH"),
        Country("BR", "Brazil", "BRL", "America/Sao_Paulo", "pt-BR"),
        Country("CA", "Canada", "CAD", "America/Toronto", "en-CA"),
        Country("CH", "Switzerland", "CHF", "Europe/Zurich", "de-CH"),
        Country("CN", "China", "CNY", "Asia/Shanghai", "zh-CN"),
        Country("CY", "Cyprus", "EUR", "Asia/Nicosia", "el-CY"),
        Country("CZ", "Czech Republic", "CZK", "Europe/Prague", "cs-CZ"),
        Country("DE", "Germany", "EUR", "Europe/Berlin", "de-DE"),
        Country("DK", "Denmark", "DKK", "Europe/Copenhagen", "da-DK"),
        Country("ES", "Spain", "EUR", "Europe/Madrid", "es-ES"),
        Country("FI", "Finland", "EUR", "Europe/Helsinki", "fi-FI"),
        Country("FR", "France", "EUR", "Europe/Paris", "fr-FR"),
        Country("GB", "United Kingdom", "GBP", "Europe/London", "en-GB"),
        Country("GR", "Greece", "EUR", "Europe/Athens", "el-GR"),
        Country("HK", "Hong Kong", "HKD", "Asia/Hong_Kong", "zh-HK"),
        Country("IE", "Ireland", "EUR", "Europe/Dublin", "en-IE"),
        Country("IL", "Israel", "ILS", "Asia/Jerusalem", "he-IL"),
        Country("IS", "Iceland", "ISK", "Atlantic/Reykjavik", "is-IS"),
        Country("IT", "Italy", "EUR", "Europe/Rome", "it-IT"),
        # Jersey stands for the Channel Islands: it uses sterling (the Jersey pound is at par)
        Country("JE", "Jersey (Channel Islands)", "GBP", "Europe/Jersey", "en-JE"),
        Country("JP", "Japan", "JPY", "Asia/Tokyo", "ja-JP"),
        Country("LB", "Lebanon", "LBP", "Asia/Beirut", "ar-LB"),
        Country("LT", "Lithuania", "LTL", "Europe/Vilnius", "lt-LT"),
        Country("MT", "Malta", "EUR", "Europe/Malta", "mt-MT"),
        Country("NL", "Netherlands", "EUR", "Europe/Amsterdam", "nl-NL"),
        Country("NO", "Norway", "NOK", "Europe/Oslo", "nb-NO"),
        Country("PL", "Poland", "PLN", "Europe/Warsaw", "pl-PL"),
        Country("PT", "Portugal", "EUR", "Europe/Lisbon", "pt-PT"),
        Country("SA", "Saudi Arabia", "SAR", "Asia/Riyadh", "ar-SA"),
        Country("SE", "Sweden", "SEK", "Europe/Stockholm", "sv-SE"),
        Country("SG", "Singapore", "SGD", "Asia/Singapore", "en-SG"),
        Country("US", "United States", "USD", "America/New_York", "en-US"),
        Country("ZA", "South Africa", "ZAR", "Africa/Johannesburg", "en-ZA"),
    )
}


def markets_frame(codes: Iterable[str]) -> pl.DataFrame:
    """Contract markets rows for these country codes (market_id = country code), sorted by code."""
    unknown = sorted(set(codes) - COUNTRIES.keys())
    if unknown:
        raise KeyError(f"no country reference for {unknown}")
    rows = [
        {
            "market_id": country.code,
            "name": country.name,
            "country": country.code,
            "currency": country.currency,
            "timezone": country.timezone,
            "language": country.language,
        }
        for country in (COUNTRIES[code] for code in sorted(set(codes)))
    ]
    return pl.DataFrame(rows, schema=MARKETS.polars_schema)
