"""The HTTP ingress of the Tradewind Ray Serve application: FastAPI routes, validation, metrics.

    HTTP -> Ingress (FastAPI: validation, deadline, metrics, /docs) -> the model endpoints

Each route validates its body against `serving.schemas`, calls one model endpoint of
`serving/endpoints.py` and turns its answer (or its error) into the JSON response. The endpoints
are either built inside this replica (`answering: ingress`, the default: one hop, see
serving/in_process.py) or deployments of their own reached over their handles
(`answering: deployments`, scaled apart); both are called the same way.
"""

import asyncio
import json
import logging
import math
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from configs.families import BIDDER, BY_ENDPOINT, FAMILY_NAMES, FORECASTER, RECOMMENDER
from models.served import RequestLimits
from serving.admission import DEADLINE_HEADER, AdmissionGate, Deadline, Refusal, deadline_of
from serving.auth import CallerGuard, KeyRing
from serving.in_process import InProcessEndpoint, LocalHandle
from serving.responses import (
    Bid,
    CampaignDay,
    Forecast,
    Health,
    ModelsStatus,
    Pacing,
    Recommendation,
    caller,
    declare_bearer_scheme,
    route_responses,
    tightest,
    with_request_limits,
)
from serving.schemas import (
    BidOutcome,
    BidRequest,
    ForecastRequest,
    RecommendRequest,
    Timestamp,
    error_detail,
)

# the HTTP body of each model endpoint (the bidder's model gets another: serving adds the state)
HTTP_REQUESTS = {
    RECOMMENDER.endpoint: RecommendRequest,
    FORECASTER.endpoint: ForecastRequest,
    BIDDER.endpoint: BidRequest,
}
logger = logging.getLogger("tradewind.serving")

# calls answered again by another replica when theirs dies mid-request (killed, crashed, its node
# lost): answering twice is harmless for these. Never a bid or an outcome: each one reserves or
# settles budget, and the dead replica may have done so before it died.
RETRIED_ON_REPLICA_DEATH = frozenset({(RECOMMENDER.endpoint, "handle"), (FORECASTER.endpoint, "handle")})
LATENCY_BOUNDARIES_MS = [0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 200, 500, 1000, 2500]

api = FastAPI(
    title="Tradewind serving",
    description="Recommendations, demand forecasts and ad bids from the models the MLflow registry "
    "calls champion (and challenger, on a configured share of requests).",
    version="1",
)
declare_bearer_scheme(api)
_static_document = api.openapi


def _served_document() -> dict[str, Any]:
    """/openapi.json: the request schemas narrowed to what the served models answer (a trained
    horizon, trained quantiles), when they answer in this replica; else the static document."""
    document = _static_document()
    try:
        ingress = serve.get_replica_context().servable_object
    except Exception:  # outside a Serve replica (the document's own tests)
        return document
    return with_request_limits(document, ingress.request_limits())


api.openapi = _served_document
# what a route can refuse with (400: not JSON; 401/403/429/413: serving/auth.py; 404: an id the data
# lacks; 422: the schema or the model; 503: overload, a passed deadline, no model loaded)
MODEL_REFUSALS = (400, 401, 403, 404, 413, 422, 429, 503)
STATE_REFUSALS = (401, 403, 404, 413, 422, 429)  # the pacing state's routes: no model, no admission


@api.exception_handler(Exception)
async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    # a bug, not a bad input: logged with its trace, and still a JSON answer
    logger.exception("unexpected error on %s", request.url.path)
    return JSONResponse({"detail": f"internal error: {type(error).__name__}"}, status_code=500)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _json_response(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    # JSON has no NaN: a missing online feature or a model's NaN becomes null instead of a 500
    try:
        text = json.dumps(body, allow_nan=False, separators=(",", ":"))
    except ValueError:
        text = json.dumps(_finite(body), allow_nan=False, separators=(",", ":"))
    return Response(text, status_code=status, media_type="application/json", headers=headers)


def _metrics() -> tuple[Any, Any]:
    from ray.serve.metrics import Counter, Histogram

    requests = Counter(
        "tradewind_requests",
        description="Requests per endpoint, model variant and HTTP status.",
        tag_keys=("endpoint", "variant", "status"),
    )
    latency = Histogram(
        "tradewind_request_latency_ms",
        description="Request latency inside the ingress, per endpoint and variant (ms).",
        boundaries=LATENCY_BOUNDARIES_MS,
        tag_keys=("endpoint", "variant"),
    )
    return requests, latency


async def call_deployment(handle: Any, endpoint: str, method: str, *args: Any) -> dict[str, Any]:
    """`handle.<method>.remote(*args)`; asked once more when the replica died mid-call and the
    call is one answering twice is harmless for (RETRIED_ON_REPLICA_DEATH)."""
    call = getattr(handle, method)
    try:
        return await call.remote(*args)
    except RayActorError as error:  # ActorDiedError, ActorUnavailableError
        if (endpoint, method) not in RETRIED_ON_REPLICA_DEATH:
            raise
        # the router has dropped the dead replica already: the retry goes to a live one
        logger.warning("/%s: replica lost mid-request (%s), asked again once", endpoint, type(error).__name__)
        return await call.remote(*args)


Endpoint = DeploymentHandle | InProcessEndpoint


def _replica_keys() -> KeyRing:
    # the middleware sits outside the class: the replica's Ingress instance holds the key ring
    return serve.get_replica_context().servable_object.keys


def _early_refusal(method: str, path: str) -> Refusal | None:
    return serve.get_replica_context().servable_object.early_refusal(method, path)


# the last added runs first: API keys (serving/auth.py) on every route but /healthz and the docs,
# then admission (serving/admission.py) for a full in-process endpoint, both before the body is read
api.add_middleware(AdmissionGate, refusal=_early_refusal)
api.add_middleware(CallerGuard, ring=_replica_keys)


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class Ingress:
    def __init__(
        self, recommender: Endpoint, forecaster: Endpoint, bidder: Endpoint, keys: KeyRing | None = None
    ) -> None:
        # no ring given: no key is accepted (closed, never open, by default)
        self.keys = keys if keys is not None else KeyRing.of([])
        endpoints = {RECOMMENDER: recommender, FORECASTER: forecaster, BIDDER: bidder}
        # models in this replica: built here, before the replica takes traffic
        self.local = {
            family.name: LocalHandle(endpoint.build())
            for family, endpoint in endpoints.items()
            if isinstance(endpoint, InProcessEndpoint)
        }
        self.handles = {
            family.endpoint: self.local.get(family.name, endpoint) for family, endpoint in endpoints.items()
        }
        self.requests_metric, self.latency_metric = _metrics()

    def early_refusal(self, method: str, path: str) -> Refusal | None:
        """(Retry-After, why) for a model request to an in-process endpoint already answering its
        `max_in_flight`: refused before the body is read (AdmissionGate). Endpoints in deployments
        of their own refuse in their replica (ModelEndpoint.handle)."""
        if method != "POST":
            return None
        family = BY_ENDPOINT.get(path.strip("/"))
        handle = self.local.get(family.name) if family is not None else None
        return handle.target.early_refusal() if handle is not None else None

    def request_limits(self) -> dict[str, dict[str, dict[str, Any]]]:
        """{request schema name: {field: JSON Schema keywords}} that the in-process endpoints' loaded
        models (champion and challenger: what both answer) put on their requests."""
        limits: dict[str, dict[str, dict[str, Any]]] = {}
        for name, handle in self.local.items():
            fields: dict[str, dict[str, Any]] = {}
            for model in handle.target.models.models.values():
                if isinstance(model.python_model, RequestLimits):
                    for field, keywords in model.python_model.request_limits().items():
                        fields[field] = tightest(fields[field], keywords) if field in fields else keywords
            if fields:
                limits[HTTP_REQUESTS[FAMILY_NAMES[name].endpoint].__name__] = fields
        return limits

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """In-process endpoints take their `user_config` from the ingress's, one section per family
        (`recommender:`, `forecaster:`, `bidder:`); a change reaches them without a restart."""
        for name, handle in self.local.items():
            handle.target.reconfigure((user_config or {}).get(name) or {})

    async def _call(
        self, endpoint: str, method: str, payload: Any, request: Request | None = None
    ) -> Response:
        started = time.perf_counter()
        args: tuple[Any, ...] = (payload,)
        if request is not None:  # a model call: the caller's deadline goes with it
            try:
                deadline: Deadline = deadline_of(request.headers.get(DEADLINE_HEADER), time.time())
            except ValueError as error:
                detail = [{"loc": ["header", "X-Deadline-Ms"], "msg": str(error), "type": "value_error"}]
                return _json_response({"detail": detail}, 422)
            args = (payload, deadline)
        result = await call_deployment(self.handles[endpoint], endpoint, method, *args)
        variant = result.get("variant", "none")
        headers: dict[str, str] = {}
        if "error" in result:
            error = result["error"]
            status = error["status"]
            body: dict[str, Any] = {"detail": error_detail(error["field"], error["message"])}
            if status >= 500:
                body = {"detail": error["message"]}
            if error.get("retry_after") is not None:
                headers["Retry-After"] = str(error["retry_after"])
        else:
            status = 200
            body = {**result["answer"]}
            if "variant" in result:
                body.update(variant=variant, model=result["model"])
        self.requests_metric.inc(tags={"endpoint": endpoint, "variant": variant, "status": str(status)})
        self.latency_metric.observe(
            (time.perf_counter() - started) * 1000.0, tags={"endpoint": endpoint, "variant": variant}
        )
        return _json_response(body, status, headers)

    @api.post(
        f"/{RECOMMENDER.endpoint}",
        summary="Top-k products for a user in a market (cold start for unknown users)",
        response_model=Recommendation,
        responses=route_responses(*MODEL_REFUSALS, not_found="The market is not one the served model knows."),
        openapi_extra=caller("recommend", deadline=True),
    )
    async def recommend(self, body: RecommendRequest, request: Request) -> Response:
        return await self._call(RECOMMENDER.endpoint, "handle", body.model_dump(mode="json"), request)

    @api.post(
        f"/{FORECASTER.endpoint}",
        summary="Demand forecast per product for the next `horizon` days, with quantiles",
        response_model=Forecast,
        responses=route_responses(
            *MODEL_REFUSALS,
            not_found="The market, or a product in that market, is not one the served model knows.",
        ),
        openapi_extra=caller("forecast", deadline=True),
    )
    async def forecast(self, body: ForecastRequest, request: Request) -> Response:
        return await self._call(FORECASTER.endpoint, "handle", body.model_dump(mode="json"), request)

    @api.post(
        f"/{BIDDER.endpoint}",
        summary="A bid for one auction under the campaign's daily budget (reserved atomically)",
        response_model=Bid,
        responses=route_responses(*MODEL_REFUSALS, not_found="The campaign is unknown."),
        openapi_extra=caller("bid", deadline=True),
    )
    async def bid(self, body: BidRequest, request: Request) -> Response:
        return await self._call(BIDDER.endpoint, "handle", body.model_dump(mode="json"), request)

    @api.post(
        f"/{BIDDER.endpoint}/outcome",
        summary="Settle a bid: won or lost, what it cost, whether it was clicked",
        response_model=CampaignDay,
        responses=route_responses(
            400,
            409,
            *STATE_REFUSALS,
            not_found="No open reservation of that id (unknown, expired or settled).",
        ),
        openapi_extra=caller("bid:outcome"),
    )
    async def bid_outcome(self, body: BidOutcome) -> Response:
        return await self._call(BIDDER.endpoint, "outcome", body.model_dump(mode="json"))

    @api.get(
        "/campaigns/{campaign_id}/pacing",
        summary="A campaign's budget state for its market-local day",
        response_model=Pacing,
        responses=route_responses(*STATE_REFUSALS, not_found="The campaign is unknown."),
        openapi_extra=caller("bid"),
    )
    async def pacing(self, campaign_id: str, timestamp: Timestamp | None = None) -> Response:
        query = {"campaign_id": campaign_id, "timestamp": timestamp.isoformat() if timestamp else None}
        return await self._call(BIDDER.endpoint, "pacing_state", query)

    @api.get("/healthz", summary="Liveness of the HTTP ingress (open: no key)", response_model=Health)
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get(
        "/models",
        summary="Which registered version and alias each endpoint serves (a key of any scope)",
        response_model=ModelsStatus,
        response_model_exclude_unset=True,
        responses=route_responses(401, 413, 429),
        openapi_extra=caller(""),
    )
    async def models(self) -> dict[str, Any]:
        async def one(endpoint: str, handle: DeploymentHandle) -> dict[str, Any]:
            try:
                return await asyncio.wait_for(handle.status.remote(), timeout=5.0)
            except Exception as error:  # a deployment that cannot answer is reported, not raised
                return {
                    "endpoint": endpoint,
                    "last_error": f"deployment not answering: {type(error).__name__}",
                }

        statuses = await asyncio.gather(*(one(name, handle) for name, handle in self.handles.items()))
        return {status["endpoint"]: status for status in statuses}
