"""Admission control and deadlines over real Serve HTTP (serving/admission.py).

An app of its own (`admission`) answers with models that take half a second, each endpoint at
most 2 requests at once: a burst of 12 finds the endpoint full, and the excess is refused with 503
and `Retry-After` instead of queued; a refused bid reserves nothing. The session's serving world
(tests/serving/conftest.py) checks deadlines: a request whose caller's deadline has passed is
dropped before model work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import served_models
from tiny_world import FAST_LIFECYCLE, BudgetDay, ServingWorld

MAX_IN_FLIGHT = 2
BURST = 12


@dataclass(frozen=True)
class AdmissionApp:
    url: str
    headers: dict[str, str]
    world: ServingWorld


@pytest.fixture(scope="module")
def admission_app(serving_world: ServingWorld, local_serve: Any) -> Iterator[AdmissionApp]:
    import pandas as pd
    from ray import serve

    from serving.deploy import start_serving
    from tracking.registry import promote

    world = serving_world
    names = {"Recommender": "admission-recommender", "Bidder": "admission-bidder"}
    recommender = world.recommender("slow", served_models.SlowerRecommender)
    promote(
        names["Recommender"],
        world.register(names["Recommender"], recommender, recommender.input_example(), "recommender"),
    )
    bidder = served_models.SlowBidder({cid: market for cid, (market, _) in world.campaigns.items()})
    example = pd.DataFrame([{"campaign_id": next(iter(world.campaigns)), "budget": 100.0, "spent": 10.0}])
    promote(names["Bidder"], world.register(names["Bidder"], bidder, example, "bidder"))
    serving = start_serving(
        world.settings,
        port=local_serve.port,
        app_name="admission",
        route_prefix="/admission",
        with_echo=False,
        registered_models=names,
        user_config={
            "max_in_flight": MAX_IN_FLIGHT,
            "retry_after_s": 2,
            "deadline_ms": 0,  # no default deadline: the bursts wait for their own answers
            "reservation_ttl_s": 3600,
        },
        options={"Ingress": {"autoscaling_config": None, "num_replicas": 1, **FAST_LIFECYCLE}},
    )
    try:
        yield AdmissionApp(serving.url, serving.headers, world)
    finally:
        serve.delete("admission")


def burst(app: AdmissionApp, path: str, body: dict[str, Any]) -> list[httpx.Response]:
    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=app.url, headers=app.headers, timeout=60.0) as client:
            return await asyncio.gather(*(client.post(path, json=body) for _ in range(BURST)))

    return asyncio.run(all_at_once())


def test_requests_past_the_limit_are_refused_with_503_and_retry_after(admission_app: AdmissionApp) -> None:
    world = admission_app.world
    body = {"user_id": world.users[0], "market": world.markets[0], "k": 3}
    responses = burst(admission_app, "/recommend", body)
    statuses = [response.status_code for response in responses]
    assert set(statuses) == {200, 503}, statuses
    # a model takes 0.5 s and 2 run at once: at most a few of 12 sent together are answered
    assert 2 <= statuses.count(200) < BURST
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "2"
            assert "answering 2 requests" in response.json()["detail"]
        else:
            assert len(response.json()["items"]) == 3
    # the endpoint says what it refused
    status = httpx.get(f"{admission_app.url}/models", headers=admission_app.headers, timeout=30.0).json()
    assert status["recommend"]["admission"]["refused"] >= statuses.count(503)
    assert status["recommend"]["admission"]["in_flight"] == 0


def test_a_refused_bid_reserves_no_budget(admission_app: AdmissionApp) -> None:
    world = admission_app.world
    campaign = next(iter(world.campaigns))
    day = BudgetDay(campaign, world.campaigns[campaign][1], datetime(1999, 6, 1, 12, tzinfo=UTC).isoformat())
    responses = burst(admission_app, "/bid", day.bid({"hour": 10}))
    statuses = [response.status_code for response in responses]
    assert set(statuses) == {200, 503}, statuses
    accepted = [response.json() for response in responses if response.status_code == 200]
    with httpx.Client(base_url=admission_app.url, headers=admission_app.headers, timeout=30.0) as client:
        state = day.pacing(client)
    # only the answered bids reserved budget: the refused ones never reached the pacing store
    assert state["bids"] == sum(1 for bid in accepted if bid["reservation_id"])
    assert state["reserved"] == pytest.approx(sum(bid["bid"] for bid in accepted))
    assert statuses.count(503) >= 1


def test_a_request_past_its_callers_deadline_is_dropped_before_model_work(
    serving_world: ServingWorld, budget_day: BudgetDay
) -> None:
    client = serving_world.client
    before = budget_day.pacing(client)
    # 1 µs: passed by the time any model could start
    late = client.post("/bid", json=budget_day.bid(), headers={"X-Deadline-Ms": "0.001"})
    assert late.status_code == 503, late.text
    assert "deadline passed" in late.json()["detail"]
    assert budget_day.pacing(client) == before  # nothing reserved for it
    body = {"user_id": serving_world.users[0], "market": serving_world.markets[0]}
    assert client.post("/recommend", json=body, headers={"X-Deadline-Ms": "0.001"}).status_code == 503
    # a deadline the request meets is answered as usual
    assert client.post("/recommend", json=body, headers={"X-Deadline-Ms": "30000"}).status_code == 200


@pytest.mark.parametrize("value", ["soon", "-5", "0", "inf"])
def test_a_malformed_deadline_header_is_named(serving_world: ServingWorld, value: str) -> None:
    body = {"user_id": serving_world.users[0], "market": serving_world.markets[0]}
    response = serving_world.client.post("/recommend", json=body, headers={"X-Deadline-Ms": value})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "X-Deadline-Ms"]
