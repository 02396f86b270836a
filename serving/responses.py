"""What each HTTP route answers, typed: the one definition the OpenAPI document and the client share.

The routes of `serving/ingress.py` still build their JSON `Response` themselves (fast, no second
validation): these models are what `response_model=` declares, and what `serving.client` parses the
answers into. Fields a server adds later are kept (extra="allow"), so an older client still reads a
newer answer. `route_responses` gives each route its documented refusals: an `ErrorBody`, and the
headers a refusal carries (`Retry-After` on 429/503, `WWW-Authenticate` on 401).
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    RootModel,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema


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


def _quantile_keys_schema(schema: dict[str, Any]) -> None:
    # on the wire each quantile is a key of its own beside `mean` (p10, p50, ...), not a mapping
    schema["properties"].pop("quantiles", None)
    schema["patternProperties"] = {
        "^p[0-9]+$": {"anyOf": [{"type": "number"}, {"type": "null"}], "description": "a quantile"}
    }


class ForecastPoint(Answer):
    """One product and day: `mean`, and one key per requested quantile (`p10` for 0.1, ...)."""

    model_config = ConfigDict(json_schema_extra=_quantile_keys_schema)

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

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # the wrap serializer hides the fields from the serialization schema; what it writes is
        # the wire shape the validation schema already describes
        if handler.mode == "serialization":
            return cls.model_json_schema(mode="validation")
        return handler(core_schema)

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


# ---------------------------------------------------------------------------------------------
# refusals


class FieldError(Answer):
    """FastAPI's shape of a field error, also used for the model's own refusals (`loc` names the
    field: ["body", "market"])."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every refusal: field errors (422, 404 naming the unknown id) or one line (401, 403, 413,
    429, 503)."""

    detail: str | list[FieldError]


RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before asking again.",
        "schema": {"type": "integer", "minimum": 0},
    }
}
WWW_AUTHENTICATE = {
    "WWW-Authenticate": {"description": "The scheme to authenticate with.", "schema": {"type": "string"}}
}
# what each refusal means, wherever it is documented
REFUSALS: dict[int, str] = {
    400: "The body is not JSON.",
    401: "No API key, or one the server does not know (`Authorization: Bearer <key>`).",
    403: "The key lacks this route's scope.",
    404: "Not found.",
    409: "The request contradicts the state it acts on (a cost above the bid reserved).",
    413: "The request body is over the configured size.",
    422: "The request does not fit the schema or the served model refused it; `detail` names the field.",
    429: "The key is past its rate: wait `Retry-After` seconds.",
    503: "Overloaded, the caller's deadline (`X-Deadline-Ms`) passed, or no model is loaded: "
    "not answered, nothing reserved; ask again after `Retry-After` seconds when given.",
}
_HEADERS = {401: WWW_AUTHENTICATE, 429: RETRY_AFTER, 503: RETRY_AFTER}


def route_responses(*statuses: int, not_found: str | None = None) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route: an `ErrorBody` and its meaning for each status it can refuse with
    (`not_found`: what a 404 of this route means)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description = not_found if status == 404 and not_found else REFUSALS[status]
        entry: dict[str, Any] = {"model": ErrorBody, "description": description}
        if status in _HEADERS:
            entry["headers"] = _HEADERS[status]
        responses[status] = entry
    return responses


# ---------------------------------------------------------------------------------------------
# what a caller sends besides the body: the key, the deadline (documentation only: serving/auth.py
# checks the key, serving/admission.py the deadline)

BEARER_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API key: `Authorization: Bearer <key>`. Each key holds scopes (recommend, "
    "forecast, bid, bid:outcome); a route names the scope it needs. /healthz and the docs are open.",
}
DEADLINE_PARAMETER = {
    "name": "X-Deadline-Ms",
    "in": "header",
    "required": False,
    "description": "How many more milliseconds the caller waits (absent or empty: the endpoint's "
    "configured deadline). A request still unanswered when it passes is dropped before model work: 503.",
    # an empty value is read as absent (serving/admission.py), so the schema allows it too
    "schema": {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string", "maxLength": 0}]},
}


def caller(scope: str | None, deadline: bool = False) -> dict[str, Any]:
    """`openapi_extra=` of a route: the key it needs (`scope`; "" for a key of any scope, None for an
    open route) and, for the model routes, the deadline header."""
    extra: dict[str, Any] = {}
    if scope is not None:
        # OpenAPI 3.1 lets a non-OAuth scheme list roles: the key's scope
        extra["security"] = [{"bearer": [scope] if scope else []}]
    if deadline:
        extra["parameters"] = [DEADLINE_PARAMETER]
    return extra


def declare_bearer_scheme(app: Any) -> None:
    """Adds the bearer scheme to the FastAPI `app`'s OpenAPI document (its routes name it in
    `caller(...)`). Declared rather than a FastAPI security dependency: the key is checked before
    FastAPI sees the request, and a dependency would cost every request a little."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()  # built once, then cached by FastAPI
        document.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = BEARER_SCHEME
        return document

    app.openapi = openapi


def with_request_limits(document: dict[str, Any], limits: dict[str, dict[str, dict[str, Any]]]) -> dict:
    """A copy of the OpenAPI `document` whose request schemas are narrowed by the served models'
    `request_limits` ({schema name: {field: JSON Schema keywords}}); the cached document is kept."""
    if not limits:
        return document
    narrowed = copy.deepcopy(document)
    schemas = narrowed.get("components", {}).get("schemas", {})
    for schema_name, fields in limits.items():
        properties = schemas.get(schema_name, {}).get("properties", {})
        for field, keywords in fields.items():
            if field in properties:
                _narrow(properties[field], keywords)
    return narrowed


def _narrow(schema: dict[str, Any], keywords: dict[str, Any]) -> None:
    target = schema
    if "anyOf" in schema:  # an optional field: narrow its non-null branch
        target = next((branch for branch in schema["anyOf"] if branch.get("type") != "null"), schema)
    for keyword, value in keywords.items():
        if isinstance(value, dict):
            _narrow(target.setdefault(keyword, {}), value)
        elif keyword == "maximum" and "maximum" in target:
            target["maximum"] = min(target["maximum"], value)
        else:
            target[keyword] = value


def tightest(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Two models' limits for one request (field -> keywords, champion's and challenger's, nested
    alike): what both answer."""
    merged = dict(first)
    for keyword, value in second.items():
        if keyword not in merged:
            merged[keyword] = value
        elif isinstance(value, dict):
            merged[keyword] = tightest(merged[keyword], value)
        elif keyword == "maximum":
            merged[keyword] = min(merged[keyword], value)
        elif keyword == "minimum":
            merged[keyword] = max(merged[keyword], value)
        elif keyword == "enum":
            merged[keyword] = [item for item in merged[keyword] if item in value]
    return merged
