"""The end-to-end tests' world: a tiny marketplace of its own, the three real model families trained
on it (`training.pipeline.train`, shrunk configs) and registered as champions in the data folder's
own MLflow store (`<data dir>/mlflow/mlflow.db`, where `tradewind --data-dir D ...` looks too).

Imported by name (tests/ has no __init__.py: a test module's folder goes on sys.path); the fixture
that builds it once per session is in this folder's conftest.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marketplace_worlds import build_world

from configs import validate_config
from configs.settings import Settings

# the families' shrunk test configs live beside their own tests (tests/training)
_TRAINING_TESTS = str(Path(__file__).resolve().parents[1] / "training")
if _TRAINING_TESTS not in sys.path:
    sys.path.insert(0, _TRAINING_TESTS)

RECOMMENDER = "tradewind-recommender"
FORECASTER = "tradewind-forecaster"
BIDDER = "tradewind-bidder"


@dataclass(frozen=True)
class TrainedWorld:
    settings: Settings  # the data folder; MLflow at its default place under it
    champions: dict[str, int]  # registered model -> the version training made champion


def tiny_family_configs() -> dict[str, tuple[Any, Any]]:
    """CLI noun -> (family, its shrunk config): the same tiny configs the families' own tests use."""
    from tiny_configs import TINY_BIDDER, TINY_FORECASTER, tiny_recommender_config

    from training import bidder, forecaster, recommender

    return {
        "recommender": (recommender.FAMILY, tiny_recommender_config()),
        "forecaster": (
            forecaster.FAMILY,
            validate_config(TINY_FORECASTER, forecaster.ForecasterConfig, "tiny forecaster config"),
        ),
        "bidder": (bidder.FAMILY, validate_config(TINY_BIDDER, bidder.BidderConfig, "tiny bidder config")),
    }


def train_world(data_dir: Path) -> TrainedWorld:
    """Build the tiny marketplace in `data_dir`, train the three families on it, each registered
    and (being the first version) promoted to champion."""
    from training.pipeline import train

    settings = Settings(data_dir=data_dir)
    build_world(settings)
    champions: dict[str, int] = {}
    for command, (family, config) in tiny_family_configs().items():
        result = train(settings, family, config)
        assert result.version is not None and result.aliases == ("champion",), (command, result)
        champions[result.version.name] = result.version.version
    return TrainedWorld(settings, champions)
