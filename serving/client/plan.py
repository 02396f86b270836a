"""One call of the client: what is sent, how its answer or failure is read, and the retry plan
both clients drive (`plan`: a generator yielding Send or Wait, so the sync and async clients share
one behaviour and tests can step through it)."""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from configs.families import BIDDER, FORECASTER, RECOMMENDER
from serving.client.errors import (
    DeadlineExceeded,
    Overloaded,
    RateLimited,
    RequestRefused,
    ServerError,
    TradewindError,
    TradewindUnavailable,
    Unauthorized,
)
from serving.responses import Bid, CampaignDay, Forecast, Pacing, Recommendation
from serving.schemas import AuctionValue, BidOutcome, BidRequest, ForecastRequest, RecommendRequest

RETRIED_STATUSES = frozenset({502, 503, 504})
DEADLINE_HEADER = "X-Deadline-Ms"

A = TypeVar("A", bound=BaseModel)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    retried: bool  # only calls answering twice is harmless for
    body: dict[str, Any] | None = None
    params: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class Send:
    request: httpx.Request


@dataclass(frozen=True)
class Wait:
    seconds: float


def retry_after_s(response: httpx.Response) -> float | None:
    """Retry-After in seconds (the server sends seconds; an HTTP date is not used by Tradewind)."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def server_reason(response: httpx.Response) -> tuple[str | None, str]:
    """(field, reason) from an error body: FastAPI's `detail` list ({loc, msg}) or string."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        loc = [str(part) for part in first.get("loc", [])]
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]
        reason = str(first.get("msg", "refused"))
        if len(detail) > 1:
            reason += f" (and {len(detail) - 1} more)"
        return (".".join(loc) or None), reason
    if isinstance(detail, str) and detail:
        return None, detail
    text = " ".join(response.text.split())[:200]
    return None, text or response.reason_phrase


def error_for(call: Call, response: httpx.Response) -> TradewindError:
    status = response.status_code
    field, reason = server_reason(response)
    if status in (401, 403):
        return Unauthorized(call.name, status, reason)
    if status == 429:
        return RateLimited(call.name, status, reason)
    if 400 <= status < 500:
        return RequestRefused(call.name, status, reason, field)
    if status == 503:
        return Overloaded(call.name, status, reason, retry_after_s(response))
    return ServerError(call.name, status, reason)


@dataclass
class Policy:
    """How a client retries: `retries` attempts after the first, backoff `backoff_s * 2**n`
    capped at `max_backoff_s`, drawn uniformly below it (full jitter)."""

    timeout_s: float
    deadline_ms: float | None
    retries: int
    backoff_s: float
    max_backoff_s: float
    clock: Callable[[], float]
    rng: random.Random


def plan(
    client: httpx.Client | httpx.AsyncClient, call: Call, policy: Policy, deadline_ms: float | None
) -> Generator[Send | Wait, httpx.Response | Exception | None, httpx.Response]:
    """Yields Send (answered with the response or the transport's exception) and Wait (answered
    with None) until it returns the final response or raises the call's TradewindError."""
    deadline_ms = policy.deadline_ms if deadline_ms is None else deadline_ms
    ends = None if deadline_ms is None else policy.clock() + deadline_ms / 1000.0
    attempt = 0
    while True:
        left = None if ends is None else ends - policy.clock()
        if left is not None and left <= 0:
            raise DeadlineExceeded(call.name, None, f"deadline of {deadline_ms:g} ms passed")
        headers = {DEADLINE_HEADER: str(max(1, round(left * 1000)))} if left is not None else {}
        request = client.build_request(
            call.method,
            call.path,
            json=call.body,
            params=call.params,
            headers=headers,
            timeout=policy.timeout_s if left is None else min(policy.timeout_s, left),
        )
        outcome = yield Send(request)
        retry_after = None
        if isinstance(outcome, httpx.Response):
            if outcome.status_code < 400:
                return outcome
            error: TradewindError = error_for(call, outcome)
            if outcome.status_code not in RETRIED_STATUSES:
                error.attempts = attempt + 1
                raise error
            if outcome.status_code == 503:
                retry_after = retry_after_s(outcome)
        elif isinstance(outcome, httpx.TimeoutException):
            out_of_time = ends is not None and policy.clock() >= ends - 1e-3
            kind = DeadlineExceeded if out_of_time else TradewindUnavailable
            error = kind(call.name, None, f"no answer in time ({type(outcome).__name__})")
        elif isinstance(outcome, httpx.TransportError):
            said = " ".join(str(outcome).split())  # one line, whatever the transport wrote
            error = TradewindUnavailable(call.name, None, f"{type(outcome).__name__}: {said}".rstrip(": "))
        else:
            raise outcome if isinstance(outcome, Exception) else TypeError(f"unexpected {outcome!r}")
        error.attempts = attempt + 1
        if not call.retried or attempt >= policy.retries:
            raise error
        cap = min(policy.max_backoff_s, policy.backoff_s * 2**attempt)
        wait = retry_after if retry_after is not None else policy.rng.uniform(0.0, cap)
        if ends is not None and policy.clock() + wait >= ends:
            raise error  # waiting would outlast the deadline: the caller gets the last failure now
        attempt += 1
        yield Wait(wait)


def parse(model: type[A], call: Call, response: httpx.Response) -> A:
    try:
        return model.model_validate(response.json())
    except (ValueError, ValidationError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ServerError(call.name, response.status_code, f"answer not understood: {first}") from None


def _body(schema: type[BaseModel], call_name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The request body, checked by the server's own schema before it is sent."""
    try:
        return schema.model_validate(fields).model_dump(mode="json")
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise RequestRefused(call_name, None, first["msg"], field) from None


class Calls:
    """The endpoints as Calls, shared by both clients."""

    @staticmethod
    def recommend(
        user_id: str, market: str, k: int, exclude: Iterable[str], explain: bool
    ) -> tuple[Call, type[BaseModel]]:
        path = f"/{RECOMMENDER.endpoint}"
        fields = {"user_id": user_id, "market": market, "k": k, "exclude": list(exclude), "explain": explain}
        return Call("POST", path, True, _body(RecommendRequest, f"POST {path}", fields)), Recommendation

    @staticmethod
    def forecast(
        product_ids: Sequence[str], market: str, horizon: int, quantiles: Sequence[float]
    ) -> tuple[Call, type[BaseModel]]:
        path = f"/{FORECASTER.endpoint}"
        fields = {
            "product_ids": list(product_ids),
            "market": market,
            "horizon": horizon,
            "quantiles": list(quantiles),
        }
        return Call("POST", path, True, _body(ForecastRequest, f"POST {path}", fields)), Forecast

    @staticmethod
    def bid(
        campaign_id: str, request: Mapping[str, AuctionValue], timestamp: datetime | str | None
    ) -> tuple[Call, type[BaseModel]]:
        path = f"/{BIDDER.endpoint}"
        fields = {"campaign_id": campaign_id, "request": dict(request), "timestamp": timestamp}
        return Call("POST", path, False, _body(BidRequest, f"POST {path}", fields)), Bid

    @staticmethod
    def bid_outcome(
        campaign_id: str, reservation_id: str, won: bool, cost: float, clicked: bool
    ) -> tuple[Call, type[BaseModel]]:
        path = f"/{BIDDER.endpoint}/outcome"
        fields = {
            "campaign_id": campaign_id,
            "reservation_id": reservation_id,
            "won": won,
            "cost": cost,
            "clicked": clicked,
        }
        return Call("POST", path, False, _body(BidOutcome, f"POST {path}", fields)), CampaignDay

    @staticmethod
    def pacing(campaign_id: str, timestamp: datetime | str | None) -> tuple[Call, type[BaseModel]]:
        moment = timestamp.isoformat() if isinstance(timestamp, datetime) else timestamp
        params = {"timestamp": moment} if moment else None
        path = f"/campaigns/{quote(campaign_id, safe='')}/pacing"
        return Call("GET", path, True, params=params), Pacing
