"""The model families the platform trains, by CLI noun; each module is imported only when used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from configs import ConfigError
from configs.families import FAMILY_NAMES

if TYPE_CHECKING:
    from training.pipeline import Family

# the one name -> the module declaring its `FAMILY`, a `training.pipeline.Family`
FAMILY_MODULES = {name: f"training.{name}.family" for name in FAMILY_NAMES}


def family(name: str) -> Family:
    """The family behind a CLI noun; a clear error naming the known ones otherwise."""
    if name not in FAMILY_MODULES:
        raise ConfigError(f"unknown model {name!r} (known: {', '.join(FAMILY_MODULES)})")
    return importlib.import_module(FAMILY_MODULES[name]).FAMILY
