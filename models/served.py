"""The served-model contract: what serving asks of any family's model, written once.

A served model is a plain class that lives with its family's algorithms
(`models/<domain>/served.py`) and knows nothing of MLflow, Feast or Ray. Serving checks a loaded
model against `ServedModel` before it swaps it in; `tracking.pyfunc.ServedPyfunc` wraps any of them
for the MLflow registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

# one request or answer as JSON-shaped data
Request = dict[str, Any]
Answer = dict[str, Any]
# Feast online values for a request's entity rows: feature column -> one value per entity row
OnlineValues = Mapping[str, Sequence[Any]]


@runtime_checkable
class ServedModel(Protocol):
    """One family's model as served over HTTP and through MLflow."""

    feature_service: str | None  # the Feast feature service `answer` reads online values from

    def answer(self, request: Request, online: OnlineValues | None = None) -> Answer:
        """The answer to one validated request; `online` holds the Feast values of the rows
        `online_entities` asked for (None when the model asked for none or the store had none).
        A request the model cannot answer is a `ValueError` naming the field and value."""
        ...

    def online_entities(self, request: Request) -> list[dict[str, Any]] | None:
        """The entity rows to read from Feast's online store for `request`, or None."""
        ...

    def smoke_request(self) -> Request:
        """A request the model answers: serving sends it before a version goes live."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the model is (catalogue size, markets, horizon...) for the status endpoint."""
        ...


@runtime_checkable
class TabularForm(Protocol):
    """Optional: how a served model reads MLflow's generic DataFrame input and writes its output,
    when requests or answers do not fit one flat row each (a bidder's nested state, a
    forecast's many rows per request). Without it a row is a request and an answer a row."""

    def request_from_row(self, row: dict[str, Any]) -> tuple[Request, OnlineValues | None]: ...

    def rows_from_answer(self, answer: Answer, index: int) -> list[dict[str, Any]]: ...

    def example_row(self) -> dict[str, Any]:
        """The smoke request as one input row (the registry's input example)."""
        ...


@runtime_checkable
class RequestLimits(Protocol):
    """Optional: what this model answers of the requests the endpoint's schema allows (a trained
    horizon, the trained quantiles), as JSON Schema keywords per request field, e.g.
    `{"horizon": {"maximum": 28}}`. Serving's OpenAPI document narrows the endpoint's request
    schema with them, so that what the document calls valid is what the served model answers."""

    def request_limits(self) -> dict[str, dict[str, Any]]: ...


def contract_gaps(model: object) -> list[str]:
    """The `ServedModel` members `model` lacks (empty when it follows the contract)."""
    missing = [name for name in ("answer", "online_entities", "smoke_request", "describe")]
    gaps = [name + "()" for name in missing if not callable(getattr(model, name, None))]
    if not hasattr(model, "feature_service"):
        gaps.append("feature_service")
    return gaps
