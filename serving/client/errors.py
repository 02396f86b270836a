"""The client's exceptions: one per class of failure, all `TradewindError`, each message one
line naming the endpoint, the status and the server's reason."""

from __future__ import annotations


class TradewindError(Exception):
    """A call that did not get its answer: `endpoint` ("POST /bid"), `status` (None: no HTTP
    answer), `reason` (the server's own words when it gave some)."""

    def __init__(self, endpoint: str, status: int | None, reason: str) -> None:
        self.endpoint, self.status, self.reason = endpoint, status, reason
        self.attempts = 1  # how many times the request was sent (retries included)
        shown = f"{status} " if status is not None else ""
        super().__init__(f"{endpoint}: {shown}{reason}")


class RequestRefused(TradewindError):
    """A 4xx for the request itself (422 bad field, 404 unknown id, 413 too large...): `field`
    names what the server (or the client's own check, status None) found wrong."""

    def __init__(self, endpoint: str, status: int | None, reason: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(endpoint, status, f"{field}: {reason}" if field else reason)


class Unauthorized(TradewindError):
    """401 (no or unknown key) or 403 (the key's scopes do not cover the endpoint)."""


class RateLimited(TradewindError):
    """429: the key is over its rate. Not retried: the caller decides how to slow down."""


class Overloaded(TradewindError):
    """503 (after the retries an endpoint allows): `retry_after` seconds when the server said."""

    def __init__(self, endpoint: str, status: int | None, reason: str, retry_after: float | None) -> None:
        self.retry_after = retry_after
        super().__init__(endpoint, status, reason)


class ServerError(TradewindError):
    """Any other 5xx (a bug, a 502/504 from a proxy after retries)."""


class TradewindUnavailable(TradewindError):
    """No HTTP answer: connection refused or reset, or the read timed out."""


class DeadlineExceeded(TradewindError):
    """The call's deadline passed before an answer came (counting retries and their waits)."""
