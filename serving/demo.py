"""The end of `tradewind demo`: serve all three endpoints and show a request and answer each."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from configs.families import FAMILY_NAMES
from configs.settings import Settings

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


def serve_and_show(settings: Settings, console: Console | None = None, *, keep_running: bool = False) -> dict:
    """Start configs/serving.yaml on a free loopback port, send each endpoint the example request
    its champion model answered before it was swapped in (from GET /models), print requests and
    answers, then stop serving (unless `keep_running`). Returns {endpoint: (request, status, answer)}."""
    import httpx
    from ray import serve

    from serving.deploy import start_serving

    console = console or Console()
    serving = start_serving(settings)
    shown: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=serving.url, timeout=60.0) as client:
            status = client.get("/models").json()
            table = Table(title=f"Serving at {serving.url} (docs: {serving.url}/docs)", title_justify="left")
            for header in ("endpoint", "model", "version", "alias", "loaded at", "registry", "last error"):
                table.add_column(header)
            for endpoint, facts in status.items():
                champion = facts.get("variants", {}).get("champion") or {}
                table.add_row(
                    endpoint,
                    str(facts.get("registered_model")),
                    str(champion.get("version", "-")),
                    str(champion.get("alias", "-")),
                    str(champion.get("loaded_at", "-"))[:19],
                    "reachable" if facts.get("registry_reachable") else "UNREACHABLE",
                    str(facts.get("last_error") or ""),
                )
            console.print(table)
            for endpoint, path in ENDPOINT_PATHS.items():
                champion = status.get(endpoint, {}).get("variants", {}).get("champion")
                if not champion or not champion.get("example_request"):
                    console.print(f"[yellow]{path}: no champion model loaded, nothing to show[/yellow]")
                    continue
                request = champion["example_request"]
                response = client.post(path, json=request)
                answer = response.json()
                shown[endpoint] = (request, response.status_code, answer)
                console.rule(f"POST {path}  ->  {response.status_code}")
                console.print(Syntax(json.dumps(request), "json", word_wrap=True))
                console.print(Syntax(json.dumps(_shortened(answer), default=str), "json", word_wrap=True))
            console.print(
                "\nServe it yourself: tradewind serve   (then curl -X POST 127.0.0.1:8000/recommend "
                "-H 'content-type: application/json' -d '<a request above>')"
            )
    finally:
        if not keep_running:
            serve.shutdown()
    return shown
