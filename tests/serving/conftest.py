"""One real Ray Serve on 127.0.0.1 for the whole serving test session, serving test models.

The tiny marketplace (tests/conftest.py) gives the data folder (markets, campaigns, the Feast
online store); the MLflow store is the session's own. The models are `served_models`' small
contract-following models (registered by `tiny_world.registered_world`). Ray and Serve are the
session's one instance (`local_serve` in tests/conftest.py), shared with tests/reliability.

What a test changes, it owns: bids go to a campaign's market-local day of the test's own
(`budget_day`), so no test depends on the budget another one spent; registry aliases are set by the
test that needs them. The `redis_test_db` fixture hands out a Redis db the way tests/scaleout's
`redis_db` does (same claim key, same dbs), so the two folders never share one.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from tiny_world import FAST_LIFECYCLE, BudgetDay, ServingWorld, registered_world

from configs.settings import Settings

# the scale-out services' helpers (skip locally, fail under CI), imported the way pytest imports test
# modules (tests/ has no __init__.py: a test module's folder goes on sys.path)
_SCALEOUT = str(Path(__file__).resolve().parents[1] / "scaleout")
if _SCALEOUT not in sys.path:
    sys.path.insert(0, _SCALEOUT)

from scaleout_services import RedisDb, claimed_redis_db  # noqa: E402

POLL_S = 0.3


@pytest.fixture(scope="session")
def serving_world(
    tiny_marketplace: Settings, tmp_path_factory: pytest.TempPathFactory, local_serve: Any
) -> Iterator[ServingWorld]:
    from serving.auth import caller_key
    from serving.deploy import start_serving

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    store = Path(tmp_path_factory.mktemp("serving-mlflow")) / "mlflow.db"
    world = registered_world(tiny_marketplace, f"sqlite:///{store}")
    world.recommend_key, recommend_only = caller_key("recommend-only", ["recommend"])
    serving = start_serving(
        world.settings,
        port=local_serve.port,
        # no reservation expires during the session (the pacing checks count them)
        user_config={"poll_interval_s": POLL_S, "challenger_share": 0.5, "reservation_ttl_s": 3600},
        # one replica each on a 2-core machine (two bidder replicas: test_pacing_served)
        options={
            name: {"autoscaling_config": None, "num_replicas": 1, **FAST_LIFECYCLE}
            for name in ("Ingress", "Recommender", "Forecaster", "Bidder")
        },
        api_keys=[recommend_only],
    )
    world.url, world.api_key = serving.url, serving.api_key
    world.client = httpx.Client(base_url=serving.url, headers=serving.headers, timeout=30.0)
    yield world  # Serve itself stops with the session (local_serve)
    world.client.close()


@pytest.fixture(autouse=True)
def _registry_of_the_serving_world(request: pytest.FixtureRequest) -> None:
    """MLflow's tracking URI is process-wide: a test of tests/reliability run before this one may
    have pointed it elsewhere. Every test using the serving world talks to the world's store."""
    if "serving_world" in request.fixturenames:
        from tracking.runs import configure_tracking

        configure_tracking(request.getfixturevalue("serving_world").settings)


# ---------------------------------------------------------------------------------------------
# pacing state of the test's own

_DAYS = itertools.count()


@pytest.fixture
def budget_day(serving_world: ServingWorld) -> BudgetDay:
    """The first campaign on a day no other test of the session uses (the pacing state of a
    campaign is per market-local day; every app of the session shares the data folder's state)."""
    campaign = next(iter(serving_world.campaigns))
    moment = datetime(2001, 1, 1, 12, tzinfo=UTC) + timedelta(days=next(_DAYS))
    day = BudgetDay(campaign, serving_world.campaigns[campaign][1], moment.isoformat())
    state = day.pacing(serving_world.client)
    assert (state["spent"], state["reserved"], state["bids"]) == (0.0, 0.0, 0), state
    return day


@pytest.fixture
def redis_test_db() -> Iterator[RedisDb]:
    """A Redis db of the test's own on the platform's Redis, emptied at the end. Skipped when no
    Redis answers there; under CI (`CI=true`) that fails instead, as the scale-out tests do."""
    from configs.settings import load_settings

    with claimed_redis_db(load_settings().scaleout.redis_url) as claimed:
        yield claimed
