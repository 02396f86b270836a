"""The simulator's configuration: `configs/marketplace.yaml`, validated by these models.

Every key is documented in the YAML file; these models only state types and ranges. There are no
defaults here on purpose: the YAML file is the one place the default world is written down.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator, model_validator

from configs import StrictModel, load_config
from features.contract import CHANNELS
from features.markets import DEFAULT_MARKETS, SHOPPING_EVENTS, Market
from features.simulator.ad_market import EXCHANGE_NAMES, SLOT_LABELS

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
OpenFraction = Annotated[float, Field(gt=0, lt=1)]
PositiveInt = Annotated[int, Field(gt=0)]


def _low_then_high(bounds: tuple[Any, Any]) -> tuple[Any, Any]:
    if bounds[0] > bounds[1]:
        raise ValueError(f"a range is [low, high]; got {list(bounds)}")
    return bounds


FractionRange = Annotated[tuple[OpenFraction, OpenFraction], AfterValidator(_low_then_high)]
PositiveRange = Annotated[tuple[Positive, Positive], AfterValidator(_low_then_high)]
DayRange = Annotated[tuple[PositiveInt, PositiveInt], AfterValidator(_low_then_high)]

DIRTY_TABLES = ("users", "products", "listings", "promotions", "events", "auctions")
_MARKET_IDENTITY = ("name", "country", "currency", "timezone", "language")


class MarketSettings(StrictModel):
    market_id: str
    name: str
    country: str
    currency: str
    timezone: str
    language: str
    user_share: Positive
    listing_share: Annotated[float, Field(gt=0, le=1)]
    price_index: Positive
    price_step: Positive
    price_ending: NonNegative
    price_decimals: Annotated[int, Field(ge=0, le=4)]
    price_sensitivity: Positive
    annual_growth: Annotated[float, Field(gt=-1)]
    weekly_pattern: list[Positive] | None = None
    shopping_events: list[str] | None = None
    ad_price_index: Positive

    @model_validator(mode="before")
    @classmethod
    def _identity_from_default_markets(cls, data: Any) -> Any:
        """A default market (US, DE, ...) needs only its id; its name, currency etc. come from code."""
        if not isinstance(data, dict):
            return data
        known = {market.market_id: market for market in DEFAULT_MARKETS}.get(str(data.get("market_id")))
        if known is None:
            return data
        return {**{key: getattr(known, key) for key in _MARKET_IDENTITY}, **data}

    @field_validator("weekly_pattern")
    @classmethod
    def _seven_days(cls, pattern: list[float] | None) -> list[float] | None:
        if pattern is not None and len(pattern) != 7:
            raise ValueError("weekly_pattern needs 7 values, Monday first")
        return pattern

    @field_validator("shopping_events")
    @classmethod
    def _known_events(cls, events: list[str] | None) -> list[str] | None:
        unknown = sorted(set(events or ()) - set(SHOPPING_EVENTS))
        if unknown:
            raise ValueError(f"unknown shopping event(s) {unknown}; known: {sorted(SHOPPING_EVENTS)}")
        return events

    @model_validator(mode="after")
    def _price_stays_positive(self) -> MarketSettings:
        if self.price_ending >= self.price_step:
            raise ValueError("price_ending must be smaller than price_step, or prices could be 0")
        return self

    def market(self) -> Market:
        return Market(self.market_id, self.name, self.country, self.currency, self.timezone, self.language)


class CurrencySettings(StrictModel):
    usd_per_unit: Positive
    daily_volatility: NonNegative


class FxSettings(StrictModel):
    mean_reversion: Fraction
    currencies: dict[str, CurrencySettings]


class PopulationSettings(StrictModel):
    users: PositiveInt
    products: PositiveInt
    categories: Annotated[int, Field(ge=1, le=12)]
    brands: PositiveInt
    latent_dim: PositiveInt
    users_before_start: Fraction
    products_before_start: Fraction
    history_years: Positive
    sessions_per_user_day: Positive
    activity_sigma: NonNegative
    price_sigma: NonNegative


class ChoiceSettings(StrictModel):
    latent_scale: NonNegative
    category_affinity_scale: NonNegative
    price_preference_mean: float
    price_preference_sd: NonNegative
    popularity_sd: NonNegative
    product_trend_sd: NonNegative
    category_seasonality_max: NonNegative
    promo_badge: float
    session_purchase_probability: OpenFraction
    extra_units_mean: NonNegative


class FunnelSettings(StrictModel):
    extra_views_mean: NonNegative
    cart_without_purchase: Fraction
    channel_shares: dict[str, Positive]

    @field_validator("channel_shares")
    @classmethod
    def _known_channels(cls, shares: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(shares) - set(CHANNELS))
        if unknown or not shares:
            raise ValueError(f"channels must be among {list(CHANNELS)}, got {sorted(shares)}")
        return shares


class SeasonalitySettings(StrictModel):
    weekly_pattern: list[Positive]
    yearly_amplitude: Annotated[float, Field(ge=0, lt=1)]
    yearly_peak_day: Annotated[int, Field(ge=1, le=366)]
    public_holiday_uplift: Positive
    event_uplift: dict[str, Positive]
    post_event_dip: list[Positive]

    @field_validator("weekly_pattern")
    @classmethod
    def _seven_days(cls, pattern: list[float]) -> list[float]:
        if len(pattern) != 7:
            raise ValueError("weekly_pattern needs 7 values, Monday first")
        return pattern

    @field_validator("event_uplift")
    @classmethod
    def _every_event(cls, uplift: dict[str, float]) -> dict[str, float]:
        if set(uplift) != set(SHOPPING_EVENTS):
            raise ValueError(f"event_uplift needs exactly the events {sorted(SHOPPING_EVENTS)}")
        return uplift


class PromotionSettings(StrictModel):
    events: list[str]
    event_participation: Fraction
    event_discount: FractionRange
    adhoc_per_year: NonNegative
    adhoc_days: DayRange
    adhoc_discount: FractionRange

    @field_validator("events")
    @classmethod
    def _known_events(cls, events: list[str]) -> list[str]:
        unknown = sorted(set(events) - set(SHOPPING_EVENTS))
        if unknown:
            raise ValueError(f"unknown shopping event(s) {unknown}")
        return events


class StockoutSettings(StrictModel):
    per_year: NonNegative
    mean_days: Annotated[float, Field(ge=1)]


class ClickModelSettings(StrictModel):
    base_ctr: OpenFraction
    hour_amplitude: NonNegative
    peak_hour: Annotated[int, Field(ge=0, le=23)]
    affinity_coef: float
    known_user_coef: float
    exchange_effects: dict[str, float]
    slot_effects: dict[str, float]

    @field_validator("exchange_effects")
    @classmethod
    def _every_exchange(cls, effects: dict[str, float]) -> dict[str, float]:
        if set(effects) != set(EXCHANGE_NAMES):
            raise ValueError(f"exchange_effects needs exactly the exchanges {list(EXCHANGE_NAMES)}")
        return effects

    @field_validator("slot_effects")
    @classmethod
    def _every_slot_size(cls, effects: dict[str, float]) -> dict[str, float]:
        if set(effects) != set(SLOT_LABELS):
            raise ValueError(f"slot_effects needs exactly the slot sizes {list(SLOT_LABELS)}")
        return effects


class ConversionModelSettings(StrictModel):
    base_cvr: OpenFraction
    affinity_coef: float
    promo_coef: float
    storewide_order_value_usd: Positive


class AdSettings(StrictModel):
    campaigns: PositiveInt
    requests_per_campaign_day: Positive
    campaigns_at_start: Fraction
    ongoing_share: Fraction
    duration_days: DayRange
    product_campaign_share: Fraction
    slots_per_market: PositiveInt
    regions_per_market: PositiveInt
    known_user_share: Fraction
    event_price_uplift: float
    budget_ratio: PositiveRange
    base_bid_ratio: PositiveRange
    bid_noise_sd: NonNegative
    bid_ctr_exponent: NonNegative
    pctr_noise_sd: NonNegative
    click: ClickModelSettings
    conversion: ConversionModelSettings


class DirtSettings(StrictModel):
    fraction: Annotated[float, Field(ge=0, le=0.1)]
    tables: list[str]

    @field_validator("tables")
    @classmethod
    def _dirty_tables(cls, tables: list[str]) -> list[str]:
        unknown = sorted(set(tables) - set(DIRTY_TABLES))
        if unknown:
            raise ValueError(f"cannot make {unknown} dirty; choose from {list(DIRTY_TABLES)}")
        return tables


class MarketplaceConfig(StrictModel):
    seed: int
    start_date: date
    end_date: date
    markets: list[MarketSettings]
    fx: FxSettings
    population: PopulationSettings
    choice: ChoiceSettings
    funnel: FunnelSettings
    seasonality: SeasonalitySettings
    promotions: PromotionSettings
    stockouts: StockoutSettings
    ads: AdSettings
    dirt: DirtSettings

    @model_validator(mode="after")
    def _consistent(self) -> MarketplaceConfig:
        if self.end_date <= self.start_date:
            raise ValueError("end_date must be after start_date")
        if self.end_date > date.today() - timedelta(days=2):
            # ingest refuses timestamps after the ingest time, and a local evening is already the
            # next day in UTC: the simulated world ends at least two days ago
            raise ValueError(f"end_date {self.end_date} must be at least two days in the past")
        if not self.markets:
            raise ValueError("at least one market is needed")
        ids = [market.market_id for market in self.markets]
        if len(set(ids)) != len(ids):
            raise ValueError(f"market ids repeat: {ids}")
        missing = sorted({market.currency for market in self.markets} - set(self.fx.currencies))
        if missing:
            raise ValueError(f"fx.currencies has no starting rate for {missing}")
        if "USD" not in self.fx.currencies:
            raise ValueError("fx.currencies needs USD: product base prices are in US dollars")
        return self

    def market_list(self) -> list[Market]:
        return [settings.market() for settings in self.markets]


def load_marketplace_config(name: str = "marketplace") -> MarketplaceConfig:
    """`configs/marketplace.yaml` (or another file), validated; raises configs.ConfigError."""
    return load_config(name, MarketplaceConfig)
