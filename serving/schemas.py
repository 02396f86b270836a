"""Request bodies of the HTTP endpoints, validated before any model sees them.

Every field has bounds, so a malformed body fails here with FastAPI's 422 naming the field
(`loc`), never deeper in a model. The model-level requests (what `answer` receives) are the
`model_request` dicts of COMMON.md's served-model contract; the bid request the model receives
is assembled by serving from the pacing state it keeps (`BidModelRequest`).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from configs.families import BIDDER, FORECASTER, RECOMMENDER

Identifier = Annotated[str, Field(min_length=1, max_length=128)]
MarketCode = Annotated[str, Field(min_length=2, max_length=8, pattern=r"^[A-Za-z0-9_-]+$")]
AuctionValue = str | float | int | bool | None
MAX_K = 100
MAX_HORIZON = 366
# a budget day is a market-local date: far-off years are no campaign's, and near year 1 or 9999 a
# time zone shift leaves what datetime can hold (an OverflowError, not an answer)
TIMESTAMP_YEARS = (1900, 2999)
# RFC 3339 with its offset (JSON schema's `date-time`); pydantic alone would also take a bare date,
# a number of seconds since 1970 or a time without its zone, none of which the schema promises
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: object) -> object:
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError(
            f"must be an RFC 3339 date-time with its offset (2026-01-31T12:00:00Z), got {value[:40]!r}"
        )
    if not isinstance(value, str | datetime):
        raise ValueError(f"must be an RFC 3339 date-time string, got {type(value).__name__}")
    return value


def _within_years(moment: datetime) -> datetime:
    if moment.tzinfo is None:  # a client's datetime object: it would be sent without its offset
        raise ValueError("must carry its UTC offset (a timezone-aware datetime)")
    if not TIMESTAMP_YEARS[0] <= moment.year <= TIMESTAMP_YEARS[1]:
        raise ValueError(f"must be in the years {TIMESTAMP_YEARS[0]}-{TIMESTAMP_YEARS[1]}, got {moment.year}")
    return moment


Timestamp = Annotated[
    datetime,
    BeforeValidator(_rfc3339),
    AfterValidator(_within_years),
    # the same bounds in the JSON schema: a date-time (offset included) whose year is 1900-2999
    Field(json_schema_extra={"pattern": r"^(19[0-9]{2}|2[0-9]{3})-"}),
]


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(RequestModel):
    user_id: Identifier
    market: MarketCode
    k: int = Field(10, ge=1, le=MAX_K)
    exclude: list[Identifier] = Field(default_factory=list, max_length=1000)
    explain: bool = False


class ForecastRequest(RequestModel):
    product_ids: list[Identifier] = Field(min_length=1, max_length=200)
    market: MarketCode
    horizon: int = Field(7, ge=1, le=MAX_HORIZON)
    quantiles: list[float] = Field(
        default_factory=lambda: [0.1, 0.5, 0.9],
        min_length=1,
        max_length=9,
        # what the validator below enforces, said in the JSON schema too (clients and fuzzers read it)
        json_schema_extra={
            "items": {"type": "number", "exclusiveMinimum": 0.0, "exclusiveMaximum": 1.0},
            "uniqueItems": True,
        },
    )

    @field_validator("quantiles")
    @classmethod
    def _quantiles_inside_zero_one(cls, quantiles: list[float]) -> list[float]:
        for value in quantiles:
            if not 0.0 < value < 1.0:
                raise ValueError(f"each quantile must be strictly between 0 and 1, got {value}")
        if len(set(quantiles)) != len(quantiles):
            raise ValueError("quantiles must not repeat")
        return sorted(quantiles)


class BidRequest(RequestModel):
    """What an ad exchange adapter sends: the campaign and the auction; serving adds the state."""

    campaign_id: Identifier
    request: dict[str, AuctionValue] = Field(
        description="Auction context: hour, exchange, slot, region, floor_price... (what the policy uses)",
        max_length=64,
    )
    timestamp: Timestamp | None = Field(
        None, description="When the auction happens (default: now); sets the campaign's market-local day"
    )

    @field_validator("request")
    @classmethod
    def _finite_numbers(cls, context: dict[str, AuctionValue]) -> dict[str, AuctionValue]:
        for key, value in context.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"request.{key}: must be a finite number, got {value}")
        return context


class BidOutcome(RequestModel):
    """The auction's result for a bid serving answered: settles its reservation."""

    campaign_id: Identifier
    reservation_id: Identifier
    won: bool
    cost: float = Field(0.0, ge=0.0, allow_inf_nan=False, description="What was paid (0 when lost)")
    clicked: bool = False


class PacingState(RequestModel):
    budget: float = Field(ge=0.0, allow_inf_nan=False)
    spent: float = Field(ge=0.0, allow_inf_nan=False)
    time_fraction: float = Field(ge=0.0, le=1.0)
    recent_win_rate: float = Field(ge=0.0, le=1.0)
    recent_cpc: float = Field(ge=0.0, allow_inf_nan=False)
    recent_ctr: float = Field(ge=0.0, le=1.0)


class BidModelRequest(RequestModel):
    """The bidder model's request (the contract's shape)."""

    campaign_id: Identifier
    state: PacingState
    request: dict[str, AuctionValue]


# endpoint -> schema of the request its model answers (its smoke request is checked against it)
MODEL_REQUESTS: dict[str, type[RequestModel]] = {
    RECOMMENDER.endpoint: RecommendRequest,
    FORECASTER.endpoint: ForecastRequest,
    BIDDER.endpoint: BidModelRequest,
}


def error_detail(field: str, message: str, kind: str = "value_error") -> list[dict[str, Any]]:
    """A 4xx body in FastAPI's own shape, so clients parse one format for every field error."""
    return [{"loc": ["body", *field.split(".")], "msg": message, "type": kind}]


def refusal_status(message: str) -> int:
    """The HTTP status of a model's or the pacing state's ValueError: 404 when it names an id the
    data does not hold (the contract's `field: unknown <what> ...`, e.g. a market, product or
    campaign), else 422. A well-formed id the data lacks is "not found", not a malformed request:
    the OpenAPI document says so on each route."""
    _, separator, rest = message.partition(":")
    return 404 if separator and rest.strip().startswith("unknown ") else 422


def field_of_message(message: str, default: str) -> str:
    """The field a model's ValueError names: the contract's messages start with `field: ...`."""
    head, separator, _ = message.partition(":")
    head = head.strip()
    if separator and head and all(part.isidentifier() for part in head.split(".")):
        return head
    return default
