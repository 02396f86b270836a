"""Bid pacing and request metrics through a deployed app of the test's own, over real HTTP.

Each test deploys the real ingress and bidder deployments into the session's Serve (`local_serve`)
under a name and route prefix of its own, and deletes them afterwards: concurrent bids on two
bidder replicas (two processes) against the embedded SQLite state and against Redis (the scale-out
store), and the `tradewind_requests_total` counter read back from Ray's Prometheus endpoint.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import served_models
from polling import wait_until
from scaleout_services import RedisDb
from tiny_world import BIDDER, FAST_LIFECYCLE, BudgetDay, ServingWorld

from configs.settings import Settings
from serving.auth import KeyRing, caller_key

pytestmark = pytest.mark.slow

# each replica a tenth of a CPU: the session's Ray has 2 for every app of every test folder
REPLICA_CPUS = 0.1
# the one key the apps of this file accept (the ingress is bound here, not by start_serving)
KEY, STORED_KEY = caller_key("pacing-test")
HEADERS = {"Authorization": f"Bearer {KEY}"}


@contextmanager
def bidder_app(
    local_serve: Any, settings: Settings, bidder_replicas: int, registered_bidder: str | None = None
) -> Iterator[tuple[str, str]]:
    """The tradewind ingress and `bidder_replicas` Bidder replicas (deployment options of
    configs/serving-split.yaml, one-hour reservations, no admission limit: a burst of 80 is the
    point), deployed as an app of its own; yields (app name, url). Only /bid and its siblings are
    asked: every model handle of the ingress is the bidder, so no Recommender or Forecaster replica
    takes a share of the 2 cores."""
    from ray import serve

    from serving.deploy import TRADEWIND_IMPORT, deployment_options
    from serving.endpoints import Bidder
    from serving.ingress import Ingress
    from serving.settings import SPLIT_SERVING_CONFIG, application, load_serving_config

    configured = deployment_options(
        application(load_serving_config(SPLIT_SERVING_CONFIG), TRADEWIND_IMPORT),
        {"poll_interval_s": 1.0, "reservation_ttl_s": 3600, "max_in_flight": 1000, "deadline_ms": 0},
    )
    fixed = {"autoscaling_config": None, "ray_actor_options": {"num_cpus": REPLICA_CPUS}, **FAST_LIFECYCLE}
    bidder = Bidder.options(**{**configured["Bidder"], **fixed, "num_replicas": bidder_replicas}).bind(
        settings, registered_bidder
    )
    ingress = Ingress.options(**{**configured["Ingress"], **fixed, "num_replicas": 1})
    name = f"pacing-{secrets.token_hex(3)}"
    try:
        app = ingress.bind(bidder, bidder, bidder, keys=KeyRing.of([STORED_KEY]))
        serve.run(app, name=name, route_prefix=f"/{name}")
        url = f"{local_serve.url}/{name}"
        wait_until(lambda: _healthy(url), timeout_s=60.0, what=f"{url}/healthz")
        yield name, url
    finally:
        serve.delete(name)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=5.0).status_code == 200
    except httpx.HTTPError:  # not listening yet, or slower than 5 s on a busy machine: ask again
        return False


def burst(url: str, day: BudgetDay, count: int) -> list[httpx.Response]:
    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=60.0) as client:
            return await asyncio.gather(
                *(client.post("/bid", json=day.bid({"hour": 10})) for _ in range(count))
            )

    return asyncio.run(all_at_once())


def assert_no_overspend(url: str, day: BudgetDay) -> list[dict[str, Any]]:
    """80 concurrent bids (the test bidder asks 7% of the budget: 5.6 budgets' worth) on a fresh
    campaign-day, each reserved one then settled as won at its full price: the budget is used and
    never exceeded, and it is the two replicas that answered. Returns the bids."""
    with httpx.Client(base_url=url, headers=HEADERS, timeout=30.0) as client:
        responses = burst(url, day, 80)
        assert [response.status_code for response in responses] == [200] * len(responses)
        bids = [response.json() for response in responses]
        total = sum(bid["bid"] for bid in bids)
        assert total <= day.budget + 1e-9
        assert total >= day.budget - 0.071 * day.budget  # the budget did get used, up to one bid's worth
        assert any(bid["bid"] == 0.0 for bid in bids)
        assert all(bid["bid"] <= bid["model_bid"] + 1e-12 for bid in bids)
        # the burst was shared: each replica reserved from the one state, in its own process
        assert len({bid["model"]["replica"] for bid in bids}) == 2

        reserved = [bid for bid in bids if bid["reservation_id"]]
        assert day.pacing(client)["reserved"] == pytest.approx(total)
        for bid in reserved:  # every one won at its full price: spend is what was bid
            outcome = {
                "reservation_id": bid["reservation_id"],
                "won": True,
                "cost": bid["bid"],
                "clicked": True,
            }
            settled = client.post("/bid/outcome", json={"campaign_id": day.campaign_id, **outcome})
            assert settled.status_code == 200, settled.text
        after = day.pacing(client)
        assert after["reserved"] == pytest.approx(0.0, abs=1e-9)
        assert after["spent"] == pytest.approx(total) and after["spent"] <= day.budget + 1e-9
        assert (after["bids"], after["wins"], after["clicks"]) == (len(reserved),) * 3
        # with the budget used up, the next bid is 0 whatever the model asks
        assert client.post("/bid", json=day.bid()).json()["bid"] == 0.0
    return bids


def test_concurrent_bids_on_two_replicas_never_overspend_sqlite(
    serving_world: ServingWorld, budget_day: BudgetDay, local_serve: Any
) -> None:
    with bidder_app(local_serve, serving_world.settings, bidder_replicas=2) as (_, url):
        status = httpx.get(f"{url}/models", headers=HEADERS, timeout=30.0).json()["bid"]
        assert status["pacing_store"] == "SqlitePacingStore"
        assert_no_overspend(url, budget_day)
    # the state is the data folder's file: the session's app reads what the two replicas wrote
    assert budget_day.pacing(serving_world.client)["spent"] == pytest.approx(
        budget_day.budget, abs=0.071 * budget_day.budget
    )


def test_concurrent_bids_on_two_replicas_never_overspend_redis(
    serving_world: ServingWorld, budget_day: BudgetDay, local_serve: Any, redis_test_db: RedisDb
) -> None:
    """The scale-out store inside a deployed app: mode `scaleout`, `redis_url` a db of the test's own.
    The bidder model reads no online features (the data folder's Feast store is the embedded one)."""
    from tracking.registry import promote

    world = serving_world
    registered = f"{BIDDER}-featureless"
    bidder = served_models.FeaturelessBidder({cid: market for cid, (market, _) in world.campaigns.items()})
    example = served_models.pd.DataFrame(
        [{"campaign_id": budget_day.campaign_id, "budget": 100.0, "spent": 10.0}]
    )
    promote(registered, world.register(registered, bidder, example, "bidder"))
    settings = world.settings.model_copy(
        update={
            "mode": "scaleout",
            "scaleout": world.settings.scaleout.model_copy(
                update={"redis_url": redis_test_db.feast_connection}
            ),
        }
    )
    assert settings.mlflow_tracking_uri == world.settings.mlflow_tracking_uri  # still the session's store
    with bidder_app(local_serve, settings, bidder_replicas=2, registered_bidder=registered) as (_, url):
        status = httpx.get(f"{url}/models", headers=HEADERS, timeout=30.0).json()["bid"]
        assert status["pacing_store"] == "RedisPacingStore"
        bids = assert_no_overspend(url, budget_day)
    # the state lives in the test's Redis db, and the data folder's SQLite state never saw the day
    day = bids[0]["day"]
    stored = redis_test_db.client.hgetall(f"tradewind:pacing:{{{budget_day.campaign_id}}}:{day}")
    assert float(stored[b"spent"]) == pytest.approx(sum(bid["bid"] for bid in bids))
    assert int(stored[b"wins"]) == sum(bool(bid["reservation_id"]) for bid in bids)
    assert budget_day.pacing(world.client)["bids"] == 0


def prometheus_series(metric: str, application: str) -> dict[tuple[str, str, str], float]:
    """Ray's Prometheus endpoint on this node: `metric`'s value per (endpoint, variant, status)
    for one Serve application."""
    import ray

    port = ray.nodes()[0]["MetricsExportPort"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10.0).text
    series: dict[tuple[str, str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
        if labels.get("application") == application:
            key = (labels["endpoint"], labels["variant"], labels["status"])
            series[key] = series.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return series


def test_requests_are_counted_per_endpoint_variant_and_status(
    serving_world: ServingWorld, budget_day: BudgetDay, local_serve: Any
) -> None:
    """README: "Prometheus: ... `tradewind_requests_total` ... per endpoint, variant and status".
    Ray exports a Serve counter as `ray_<name>_total`, tagged with its application: a fresh app's
    counts are exactly this test's requests."""
    with bidder_app(local_serve, serving_world.settings, bidder_replicas=1) as (name, url):
        with httpx.Client(base_url=url, headers=HEADERS, timeout=30.0) as client:
            for _ in range(3):
                assert client.post("/bid", json=budget_day.bid()).status_code == 200
            unknown = {"campaign_id": budget_day.campaign_id, "reservation_id": "nope", "won": False}
            assert client.post("/bid/outcome", json=unknown).status_code == 404
            # a well-formed id the data does not hold: not found
            assert (
                client.post("/bid", json={"campaign_id": "no-such-campaign", "request": {}}).status_code
                == 404
            )
            budget_day.pacing(client)
            # refused by the schema before the ingress method runs: not a model request, not counted
            assert client.post("/bid", json={"campaign_id": budget_day.campaign_id}).status_code == 422

        expected = {
            ("bid", "champion", "200"): 3.0,
            # no variant answered: the reservation, then the campaign, was unknown
            ("bid", "none", "404"): 2.0,
            ("bid", "none", "200"): 1.0,  # the pacing read
        }
        # Ray exports metrics every few seconds: wait for the export that holds every request above
        # (a count only grows: one above the expected would never come back to it)
        found: dict[tuple[str, str, str], float] = {}
        deadline = time.monotonic() + 60.0
        while found != expected and time.monotonic() < deadline:
            found = prometheus_series("ray_tradewind_requests_total", name)
            time.sleep(0.5)
        assert found == expected
