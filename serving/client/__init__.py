"""A typed Python client of Tradewind's HTTP API (the routes of `serving/ingress.py`).

    with TradewindClient("http://127.0.0.1:8000", api_key=key, deadline_ms=100) as client:
        top = client.recommend("u-1", "US", k=5)

- The key goes in `Authorization: Bearer <key>`; a deadline in `X-Deadline-Ms` (the milliseconds
  still left when each attempt is sent), and the client itself never waits past it.
- `/recommend`, `/forecast` and the GETs are retried on connection errors and 502/503/504, with
  exponential backoff and full jitter, a 503's `Retry-After` honoured, all within the deadline.
  `/bid` and `/bid/outcome` are sent exactly once: a retried bid may reserve budget twice.
- Each class of failure is one exception (all `TradewindError`), its message one line naming the
  endpoint, the status and the server's reason.

`AsyncTradewindClient` is the same client on `httpx.AsyncClient`: both drive one retry plan
(`serving.client.plan`: a generator yielding what to send or how long to wait), so they behave as one.
"""

from serving.client.clients import AsyncTradewindClient, TradewindClient
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
from serving.responses import (
    Bid,
    CampaignDay,
    EndpointStatus,
    Forecast,
    ForecastPoint,
    Health,
    Pacing,
    Recommendation,
    RecommendedItem,
    ServedBy,
    ServedVariant,
)

__all__ = [
    "AsyncTradewindClient",
    "Bid",
    "CampaignDay",
    "DeadlineExceeded",
    "EndpointStatus",
    "Forecast",
    "ForecastPoint",
    "Health",
    "Overloaded",
    "Pacing",
    "RateLimited",
    "Recommendation",
    "RecommendedItem",
    "RequestRefused",
    "ServedBy",
    "ServedVariant",
    "ServerError",
    "TradewindClient",
    "TradewindError",
    "TradewindUnavailable",
    "Unauthorized",
]
