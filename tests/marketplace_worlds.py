"""Tiny simulated marketplaces for the tests, built the one way: generate, (optionally) hold the
last days back as daily raw partitions, ingest, build the feature tables, apply Feast, materialize.

`tests/` is on sys.path (the root conftest lives there), so any test imports this by name.
"""

from __future__ import annotations

from configs import load_config
from configs.settings import Settings

# small enough to build in well under a minute, large enough for every family to train on
TINY_SCALE = 0.05


def build_world(settings: Settings, *, hold_back_days: int = 0, scale: float = TINY_SCALE) -> list[str]:
    """Build a marketplace in `settings`' data folder; returns the held-back partitions (oldest first),
    which wait in raw/ for `ingest --partition DAY` or `training.retrain.retrain`."""
    from features.ingest import ingest
    from features.simulator import MarketplaceConfig, generate_marketplace
    from features.simulator.partitions import hold_back_days as hold_back
    from features.store import apply_definitions, materialize
    from features.transforms import build_feature_tables

    config = load_config("marketplace", MarketplaceConfig)
    generate_marketplace(config, settings.raw_dir, settings.truth_dir, scale=scale, progress=False)
    held = hold_back(settings.raw_dir, hold_back_days) if hold_back_days else []
    ingest(settings, settings.raw_dir, partition="generated" if held else None, progress=False)
    build_feature_tables(settings)
    apply_definitions(settings)
    materialize(settings)
    return held
