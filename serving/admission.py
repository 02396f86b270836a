"""Admission control of a model endpoint: refuse at once what cannot be answered in time.

A queue in front of a saturated model only adds latency that callers no longer wait for (a
product page gives up after a few hundred ms, an ad exchange after about 100 ms), and it grows
without bound under overload. So each endpoint answers at most `max_in_flight` requests at once
per replica; one more is refused at once with 503 and `Retry-After`, before any model work, and a
bid refused that way never reserves budget. A request whose caller's deadline (`X-Deadline-Ms`,
the milliseconds it still waits; the endpoint's `deadline_ms` when absent) has passed by the time
the model would start is dropped the same way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEADLINE_HEADER = "x-deadline-ms"


@dataclass(frozen=True)
class Deadline:
    """When the ingress received a request and how long its caller waits (None: the endpoint's
    default). Wall-clock seconds: the ingress and the model may be different processes or hosts."""

    received_at: float
    budget_ms: float | None = None

    def passed(self, default_ms: float, now: float | None = None) -> bool:
        budget = self.budget_ms if self.budget_ms is not None else default_ms
        if budget <= 0:  # no deadline at all
            return False
        return (time.time() if now is None else now) > self.received_at + budget / 1000.0


def deadline_of(header: str | None, received_at: float) -> Deadline:
    """The request's deadline from its `X-Deadline-Ms` header; ValueError naming the header when
    it is not a positive number."""
    if header is None or header == "":
        return Deadline(received_at)
    try:
        budget = float(header)
    except ValueError:
        raise ValueError(f"X-Deadline-Ms: must be a number of milliseconds, got {header[:40]!r}") from None
    if not budget > 0 or budget == float("inf"):
        raise ValueError(f"X-Deadline-Ms: must be a positive number of milliseconds, got {header[:40]!r}")
    return Deadline(received_at, budget)


class InFlight:
    """Requests being answered at once by one endpoint of one replica (one event loop: no lock)."""

    def __init__(self) -> None:
        self.count = 0
        self.refused = 0

    def refuses(self, limit: int) -> bool:
        """Whether one more request is refused now (`limit` are being answered); counts it if so."""
        if self.count >= limit:
            self.refused += 1
            return True
        return False

    def try_enter(self, limit: int) -> bool:
        if self.refuses(limit):
            return False
        self.count += 1
        return True

    def leave(self) -> None:
        self.count -= 1


# what the gate asks per request path: None to let it through, else (Retry-After seconds, why)
Refusal = tuple[int, str]


class AdmissionGate:
    """ASGI middleware: a model request to an endpoint that is already answering its
    `max_in_flight` is refused with 503 and Retry-After before its body is read or parsed. Under
    overload the refusals are most of the traffic, so each must cost far less than an answer; the
    endpoint's own check (`ModelEndpoint.handle`) stays the one that counts."""

    def __init__(self, app: Any, refusal: Callable[[str, str], Refusal | None]) -> None:
        self.app = app
        self.refusal = refusal

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path, root = scope["path"], scope.get("root_path", "")
            if root and path.startswith(root):  # Serve's route prefix
                path = path[len(root) :] or "/"
            refused = self.refusal(scope["method"], path)
            if refused is not None:
                await refuse(send, *refused)
                return
        await self.app(scope, receive, send)


async def refuse(send: Any, retry_after_s: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"retry-after", str(retry_after_s).encode()),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
