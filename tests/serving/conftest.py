"""One real Ray Serve on 127.0.0.1 for the whole serving test session, serving test models.

The tiny marketplace (tests/conftest.py) gives the data folder (markets, campaigns, the Feast
online store); the MLflow store is the session's own. The models are `served_models`' small
contract-following models (registered by `tiny_world.registered_world`). Ray and Serve are the
session's one instance (`local_serve` in tests/conftest.py), shared with tests/reliability.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tiny_world import ServingWorld, registered_world

from configs.settings import Settings

POLL_S = 0.3


@pytest.fixture(scope="session")
def serving_world(
    tiny_marketplace: Settings, tmp_path_factory: pytest.TempPathFactory, local_serve: Any
) -> Iterator[ServingWorld]:
    from serving.deploy import start_serving

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    store = Path(tmp_path_factory.mktemp("serving-mlflow")) / "mlflow.db"
    world = registered_world(tiny_marketplace, f"sqlite:///{store}")
    serving = start_serving(
        world.settings,
        port=local_serve.port,
        # no reservation expires during the session (the pacing checks count them)
        user_config={"poll_interval_s": POLL_S, "challenger_share": 0.5, "reservation_ttl_s": 3600},
        # one replica each on a 2-core machine (reservations across processes: test_serving_parts)
        options={
            name: {"autoscaling_config": None, "num_replicas": 1}
            for name in ("Ingress", "Recommender", "Bidder")
        },
    )
    world.url = serving.url
    world.client = httpx.Client(base_url=serving.url, timeout=30.0)
    yield world  # Serve itself stops with the session (local_serve)
    world.client.close()
