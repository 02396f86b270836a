"""`tradewind serve` (serving/ does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from configs.settings import load_settings


def serve(
    config: Annotated[Path, typer.Option(help="Ray Serve config file.")] = Path("serving"),
) -> None:
    """Serve /recommend, /forecast, /bid, /models and /docs locally (`serve run configs/serving.yaml`)."""
    from serving.deploy import serve_run

    raise typer.Exit(serve_run(load_settings(), str(config)))
