"""The model families the platform trains, by CLI noun; each module is imported only when used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from configs import ConfigError

if TYPE_CHECKING:
    from training.pipeline import Family

# CLI noun -> module defining `FAMILY`, a `training.pipeline.Family`
FAMILY_MODULES = {
    "recommender": "training.recommender",
    "forecaster": "training.forecaster",
    "bidder": "training.bidder",
}


def family(command: str) -> Family:
    """The family behind a CLI noun; a clear error naming the known ones otherwise."""
    if command not in FAMILY_MODULES:
        raise ConfigError(f"unknown model {command!r} (known: {', '.join(FAMILY_MODULES)})")
    return importlib.import_module(FAMILY_MODULES[command]).FAMILY
