"""Fixtures shared by the family pipeline tests: one tiny marketplace, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from configs import load_config
from configs.settings import Settings

# LightGBM's OpenMP threads wait passively instead of spinning: on 2 shared cores spinning makes the
# suite crawl (as training/cli.py does for the CLI)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# small enough to build in well under a minute, large enough for every family to train on
TINY_SCALE = 0.05


@pytest.fixture(scope="session")
def tiny_marketplace(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Generated, ingested, feature tables built, Feast applied and materialized; do not write to
    its contract or feature tables (copy it, or use a fresh one, for tests that change data)."""
    from features.ingest import ingest
    from features.simulator import MarketplaceConfig, generate_marketplace
    from features.store import apply_definitions, materialize
    from features.transforms import build_feature_tables

    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("tiny-marketplace")) / "data")
    config = load_config("marketplace", MarketplaceConfig)
    generate_marketplace(config, settings.raw_dir, settings.truth_dir, scale=TINY_SCALE)
    ingest(settings, settings.raw_dir)
    build_feature_tables(settings)
    apply_definitions(settings)
    materialize(settings)
    return settings


@pytest.fixture
def mlflow_settings(tiny_marketplace: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The tiny marketplace with an MLflow store of the test's own (runs and registry start empty)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tiny_marketplace.model_copy(
        update={
            "mlflow": tiny_marketplace.mlflow.model_copy(
                update={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
            )
        }
    )
