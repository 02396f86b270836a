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

import time
from dataclasses import dataclass

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

    def try_enter(self, limit: int) -> bool:
        if self.count >= limit:
            self.refused += 1
            return False
        self.count += 1
        return True

    def leave(self) -> None:
        self.count -= 1
