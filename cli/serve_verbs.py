"""`tradewind serve` (serving/ does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from configs.settings import load_settings


def serve(
    config: Annotated[Path, typer.Option(help="Ray Serve config file.")] = Path("serving"),
    add_key: Annotated[
        str | None,
        typer.Option(
            help="Add an API key of this name to the keys file, print it once, and exit (no serving)."
        ),
    ] = None,
    scopes: Annotated[
        str,
        typer.Option(
            help="With --add-key: its scopes, comma-separated (recommend, forecast, bid, bid:outcome)."
        ),
    ] = "recommend,forecast",
) -> None:
    """Serve /recommend, /forecast, /bid, /models and /docs locally (`serve run configs/serving.yaml`).

    Every route but /healthz and the docs needs an API key (`Authorization: Bearer <key>`). The
    first start in embedded mode with no keys file and no TRADEWIND_API_KEYS makes one with every
    scope and prints it once."""
    from serving.deploy import first_start_key, new_named_key, serve_run

    settings = load_settings()
    if add_key is not None:
        key, path = new_named_key(
            settings, str(config), add_key, [s.strip() for s in scopes.split(",") if s.strip()]
        )
        typer.echo(f"API key {add_key!r} ({scopes}); its hash is in {path}. Shown once, keep it now:")
        typer.echo(key)
        return
    made = first_start_key(settings, str(config))
    if made is not None:
        key, path = made
        typer.echo(
            f"First start: made the API key 'embedded' (every scope); its hash is in {path}.\n"
            "It is shown this once, keep it now (send it as `Authorization: Bearer <key>`):\n"
            f"API key: {key}",
            err=False,
        )
    raise typer.Exit(serve_run(settings, str(config)))
