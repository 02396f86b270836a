"""The end of `tradewind demo`: serve all three endpoints and show a request and answer each."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from configs.families import FAMILY_NAMES
from configs.settings import Settings
from serving.client import TradewindClient, TradewindError

ENDPOINT_PATHS = {family.endpoint: f"/{family.endpoint}" for family in FAMILY_NAMES.values()}


def _shortened(answer: dict[str, Any], keep: int = 3) -> dict[str, Any]:
    """Long lists cut to their first items for printing (the count is kept)."""
    shown: dict[str, Any] = {}
    for key, value in answer.items():
        if isinstance(value, list) and len(value) > keep:
            shown[key] = [*value[:keep], f"... {len(value) - keep} more"]
        else:
            shown[key] = value
    return shown


def show_endpoints(client: TradewindClient, console: Console) -> dict[str, Any]:
    """Print what GET /models says, then send each endpoint the example request its champion
    answered before it was swapped in and print request and answer (or the one-line refusal).
    Returns {endpoint: (request, status, answer)}."""
    status = client.models()
    table = Table(title=f"Serving at {client.base_url} (docs: {client.base_url}/docs)", title_justify="left")
    for header in ("endpoint", "model", "version", "alias", "loaded at", "registry", "last error"):
        table.add_column(header)
    for endpoint, facts in status.items():
        champion = facts.variants.get("champion")
        table.add_row(
            endpoint,
            str(facts.registered_model),
            str(champion.version) if champion else "-",
            champion.alias if champion else "-",
            str(champion.loaded_at if champion else "-")[:19],
            "reachable" if facts.registry_reachable else "UNREACHABLE",
            str(facts.last_error or ""),
        )
    console.print(table)
    shown: dict[str, Any] = {}
    for endpoint, path in ENDPOINT_PATHS.items():
        facts = status.get(endpoint)
        champion = facts.variants.get("champion") if facts else None
        if champion is None or not champion.example_request:
            console.print(f"[yellow]{path}: no champion model loaded, nothing to show[/yellow]")
            continue
        request = champion.example_request
        try:
            # the client's method is the endpoint's verb, its parameters the request's fields
            typed = getattr(client, endpoint)(**request)
            code, answer = 200, typed.model_dump(mode="json", by_alias=True, exclude_unset=True)
        except TradewindError as error:
            code, answer = error.status or 0, {"detail": str(error)}
        shown[endpoint] = (request, code, answer)
        console.rule(f"POST {path}  ->  {code}")
        console.print(Syntax(json.dumps(request), "json", word_wrap=True))
        console.print(Syntax(json.dumps(_shortened(answer), default=str), "json", word_wrap=True))
    console.print(
        "\nServe it yourself: tradewind serve   (its first start prints an API key, once; then curl "
        "-X POST 127.0.0.1:8000/recommend -H 'authorization: Bearer <key>' "
        "-H 'content-type: application/json' -d '<a request above>', or from Python: "
        "serving.client.TradewindClient('http://127.0.0.1:8000', api_key=<key>).recommend(...))"
    )
    return shown


def serve_and_show(settings: Settings, console: Console | None = None, *, keep_running: bool = False) -> dict:
    """Start configs/serving.yaml on a free loopback port, show each endpoint through the Python
    client (`show_endpoints`), then stop serving (unless `keep_running`).
    Returns {endpoint: (request, status, answer)}."""
    from ray import serve

    from serving.deploy import start_serving

    console = console or Console()
    serving = start_serving(settings)
    try:
        # the key start_serving made for this process: the demo needs no key set-up
        with TradewindClient(serving.url, api_key=serving.api_key, timeout_s=60.0) as client:
            return show_endpoints(client, console)
    finally:
        if not keep_running:
            serve.shutdown()
