"""What the endpoints answer today, typed; fields the server adds later are kept (extra="allow")."""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ServedBy(Answer):
    name: str
    version: int
    replica: str | None = None


class Reason(Answer):
    feature: str
    contribution: float | None


class RecommendedItem(Answer):
    product_id: str
    score: float | None
    reasons: list[Reason] | None = None  # with explain=True


class Recommendation(Answer):
    items: list[RecommendedItem]
    cold_start: bool
    variant: str
    model: ServedBy


class ForecastPoint(Answer):
    product_id: str
    date: str
    mean: float | None
    quantiles: dict[str, float | None] = Field(default_factory=dict)  # {"p10": ..., "p90": ...}

    @model_validator(mode="before")
    @classmethod
    def _gather_quantiles(cls, data: Any) -> Any:
        # the server sends each quantile as its own key (p10, p50, ...): gathered into one mapping
        if isinstance(data, dict) and "quantiles" not in data:
            quantiles = {k: v for k, v in data.items() if k[:1] == "p" and k[1:].isdigit()}
            data = {k: v for k, v in data.items() if k not in quantiles} | {"quantiles": quantiles}
        return data

    @model_serializer(mode="wrap")
    def _spread_quantiles(self, dump: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # dumped as the server sent it (p10, p50... beside mean), so a dump can be shown as the answer
        data = dump(self)
        return {**{k: v for k, v in data.items() if k != "quantiles"}, **data.get("quantiles", {})}


class Forecast(Answer):
    market: str
    forecasts: list[ForecastPoint]
    variant: str
    model: ServedBy


class Bid(Answer):
    bid: float  # what was reserved against the budget (0: nothing reserved)
    model_bid: float  # what the model wanted
    reservation_id: str | None  # what /bid/outcome settles; None when nothing was reserved
    day: str  # the campaign's market-local day
    remaining: float
    pctr: float | None = None
    lambda_: float | None = Field(None, alias="lambda")
    variant: str
    model: ServedBy


class CampaignDay(Answer):
    """A campaign's budget state for one market-local day (the answer of /bid/outcome)."""

    campaign_id: str
    day: str
    budget: float
    spent: float
    reserved: float
    bids: int
    settled: int
    wins: int
    clicks: int
    remaining: float


class Pacing(CampaignDay):
    time_fraction: float
    market: str


class ServedVariant(Answer):
    alias: str
    version: int
    run_id: str | None = None
    loaded_at: str | None = None
    load_seconds: float | None = None
    feature_service: str | None = None
    describe: dict[str, Any] = Field(default_factory=dict)
    example_request: dict[str, Any] | None = None


class EndpointStatus(Answer):
    """One entry of GET /models; a deployment that did not answer has only `endpoint` and
    `last_error`."""

    endpoint: str
    registered_model: str | None = None
    variants: dict[str, ServedVariant] = Field(default_factory=dict)
    registry_reachable: bool | None = None
    last_checked: str | None = None
    last_error: str | None = None
    rejected: dict[str, str] = Field(default_factory=dict)
    alias: str | None = None
    challenger_share: float | None = None


class ModelsStatus(RootModel[dict[str, EndpointStatus]]):
    """GET /models: endpoint -> its status."""


class Health(Answer):
    status: str
