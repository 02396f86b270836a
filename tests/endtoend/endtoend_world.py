"""The end-to-end tests' world: what `tradewind demo --no-serve` makes on an empty data folder, the
three real model families trained and registered as champions in the data folder's own MLflow store
(`<data dir>/mlflow/mlflow.db`, where `tradewind --data-dir D ...` looks too).

Imported by name (tests/ has no __init__.py: a test module's folder goes on sys.path); the fixtures
that run it once per session are in this folder's conftest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from configs.settings import Settings

RECOMMENDER = "tradewind-recommender"
FORECASTER = "tradewind-forecaster"
BIDDER = "tradewind-bidder"


@dataclass(frozen=True)
class TrainedWorld:
    settings: Settings  # the data folder; MLflow at its default place under it
    champions: dict[str, int]  # registered model -> the version training made champion


SCALE = 0.02  # the smallest world every family still trains on: about a minute on 2 cores
DEMO_S = 900.0  # the whole demo, bounded: the test stops by itself


@dataclass(frozen=True)
class Demo:
    settings: Settings
    output: str
    returncode: int
    seconds: float


def run_demo(data_dir: Path) -> Demo:
    """`tradewind --data-dir DATA_DIR demo --scale SCALE --no-serve` in a process of its own."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "TRADEWIND_MODE", "TRADEWIND_DATA_DIR")
    }
    # a local Ray if a step wants one (never a cluster `ray start` made); wide, unwrapped tables
    environment.update(RAY_ADDRESS="local", COLUMNS="200")
    command = [
        str(Path(sys.executable).parent / "tradewind"),
        "--data-dir",
        str(data_dir),
        "demo",
        "--scale",
        str(SCALE),
        "--no-serve",
    ]
    started = time.perf_counter()
    finished = subprocess.run(
        command,
        cwd=data_dir.parent,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=DEMO_S,
        check=False,
    )
    return Demo(
        Settings(data_dir=data_dir), finished.stdout, finished.returncode, time.perf_counter() - started
    )


def champions_of(settings: Settings) -> TrainedWorld:
    """The world a demo left: each family's champion version in the data folder's own registry."""
    from tracking.registry import CHAMPION
    from tracking.runs import configure_tracking, tracking_client

    configure_tracking(settings)
    client = tracking_client()
    champions = {
        name: int(client.get_model_version_by_alias(name, CHAMPION).version)
        for name in (RECOMMENDER, FORECASTER, BIDDER)
    }
    return TrainedWorld(settings, champions)
