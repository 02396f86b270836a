"""The trained families served by the real application over HTTP on 127.0.0.1.

The world's champions (real recommender, forecaster and bidder, `endtoend_world`) are deployed with
`serving.deploy.start_serving` into the session's one Serve (`local_serve`) under an application
name and route prefix of this module's own. Each endpoint's answer is checked against the same
champion loaded from the registry in the test process and asked the same request with the same
online features: what a client gets is what the trained model says.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import polars as pl
import pytest
from endtoend_world import BIDDER, FORECASTER, RECOMMENDER, TrainedWorld

pytestmark = pytest.mark.slow

APP = "endtoend"
ENDPOINTS = {"recommend": RECOMMENDER, "forecast": FORECASTER, "bid": BIDDER}
# an auction time of its own: the bid test's campaign-day starts untouched by any other test
AUCTION_AT = datetime(2026, 11, 3, 14, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def client(trained_world: TrainedWorld, local_serve: Any) -> Iterator[httpx.Client]:
    from ray import serve

    from serving.deploy import start_serving

    serving = start_serving(
        trained_world.settings,
        port=local_serve.port,
        app_name=APP,
        route_prefix=f"/{APP}",
        with_echo=False,
        # the shipped user_config otherwise; one replica each on a 2-core machine
        options={
            name: {"autoscaling_config": None, "num_replicas": 1}
            for name in ("Ingress", "Recommender", "Bidder")
        },
    )
    try:
        with httpx.Client(base_url=serving.url, headers=serving.headers, timeout=60.0) as http:
            yield http
    finally:
        serve.delete(APP)  # other folders' applications in the session's Serve are left as they were


@pytest.fixture(scope="module")
def champions(trained_world: TrainedWorld) -> dict[str, Any]:
    """Each champion's plain served model as serving loads it from the registry, in the test process."""
    from tracking.registry import alias_uri, load_served_model
    from tracking.runs import configure_tracking

    configure_tracking(trained_world.settings)
    return {name: load_served_model(alias_uri(name)) for name in ENDPOINTS.values()}


def own_answer(world: TrainedWorld, model: Any, model_request: dict[str, Any]) -> dict[str, Any]:
    """The model's answer to `model_request` with the online store's features, as serving fetches them."""
    from serving.online import OnlineFeatures

    entities = model.online_entities(model_request) if model.feature_service else None
    online = OnlineFeatures(world.settings).fetch(model.feature_service, entities) if entities else None
    return model.answer(model_request, online)


def served(client: httpx.Client, path: str, body: dict[str, Any], world: TrainedWorld, name: str) -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["variant"] == "champion"
    assert answer["model"]["name"] == name and answer["model"]["version"] == world.champions[name]
    return answer


def test_models_names_the_registered_champions(client: httpx.Client, trained_world: TrainedWorld) -> None:
    response = client.get("/models")
    assert response.status_code == 200, response.text
    status = response.json()
    assert set(status) == set(ENDPOINTS)
    for endpoint, name in ENDPOINTS.items():
        facts = status[endpoint]
        assert facts["registered_model"] == name
        assert facts["registry_reachable"] is True and facts["last_error"] is None, facts
        assert set(facts["variants"]) == {"champion"}  # training made no challenger
        assert facts["variants"]["champion"]["version"] == trained_world.champions[name]
        assert facts["rejected"] == {}


def test_recommend_answers_what_the_trained_recommender_answers(
    client: httpx.Client, trained_world: TrainedWorld, champions: dict[str, Any]
) -> None:
    from features.tables import read_table

    model = champions[RECOMMENDER]
    warm = model.smoke_request()  # a user with a history, in their market
    market = warm["market"]
    first_choice = own_answer(trained_world, model, {**warm, "k": 1, "explain": False})["items"][0]
    request = {**warm, "k": 6, "explain": True, "exclude": [first_choice["product_id"]]}

    answer = served(client, "/recommend", request, trained_world, RECOMMENDER)
    expected = own_answer(trained_world, model, request)
    assert answer["cold_start"] is False and expected["cold_start"] is False
    ids = [item["product_id"] for item in answer["items"]]
    assert ids == [item["product_id"] for item in expected["items"]]
    assert [item["score"] for item in answer["items"]] == pytest.approx(
        [item["score"] for item in expected["items"]], rel=1e-9
    )
    assert [[reason["feature"] for reason in item["reasons"]] for item in answer["items"]] == [
        [reason["feature"] for reason in item["reasons"]] for item in expected["items"]
    ]
    # and the world agrees: k distinct products listed in the market, the excluded one not among them
    listings = read_table(trained_world.settings.contract_dir, "listings")
    listed = set(listings.filter(pl.col("market_id") == market)["product_id"].to_list())
    assert len(ids) == 6 == len(set(ids)) and set(ids) <= listed
    assert first_choice["product_id"] not in ids

    cold_request = {"user_id": "never-seen-user", "market": market, "k": 4, "exclude": [], "explain": False}
    cold = served(client, "/recommend", cold_request, trained_world, RECOMMENDER)
    assert cold["cold_start"] is True
    cold_expected = own_answer(trained_world, model, cold_request)
    assert [item["product_id"] for item in cold["items"]] == [
        item["product_id"] for item in cold_expected["items"]
    ]


def test_forecast_answers_the_trained_forecasts(
    client: httpx.Client, trained_world: TrainedWorld, champions: dict[str, Any]
) -> None:
    from serving.schemas import ForecastRequest

    model = champions[FORECASTER]
    lightgbm_keys = [key for key, row in model.row_of.items() if model.from_lightgbm[row]]
    market = lightgbm_keys[0][1]
    products = [product for product, key_market in lightgbm_keys if key_market == market][:2]
    request = {"product_ids": products, "market": market, "horizon": 5, "quantiles": [0.9, 0.1, 0.5]}

    answer = served(client, "/forecast", request, trained_world, FORECASTER)
    expected = model.answer(ForecastRequest.model_validate(request).model_dump(mode="json"))
    assert answer["market"] == market
    assert answer["forecasts"] == expected["forecasts"]
    assert len(answer["forecasts"]) == len(products) * 5
    assert {row["product_id"] for row in answer["forecasts"]} == set(products)
    for row in answer["forecasts"]:
        values = [row["mean"], row["p10"], row["p50"], row["p90"]]
        assert all(isinstance(value, float) and math.isfinite(value) for value in values), row
        assert 0.0 <= row["p10"] <= row["p50"] <= row["p90"], row


def test_bid_is_the_trained_bidders_within_the_campaign_budget(
    client: httpx.Client, trained_world: TrainedWorld, champions: dict[str, Any]
) -> None:
    from features.tables import read_table

    model = champions[BIDDER]
    smoke = model.smoke_request()
    campaign_id = smoke["campaign_id"]
    # the auction as an exchange sends it; serving fills in the market-local hour and weekday
    auction = {key: value for key, value in smoke["request"].items() if key not in ("hour", "weekday")}
    pacing_path = f"/campaigns/{campaign_id}/pacing"
    before = client.get(pacing_path, params={"timestamp": AUCTION_AT.isoformat()})
    assert before.status_code == 200, before.text
    state = before.json()

    answer = served(
        client,
        "/bid",
        {"campaign_id": campaign_id, "request": auction, "timestamp": AUCTION_AT.isoformat()},
        trained_world,
        BIDDER,
    )

    contract = trained_world.settings.contract_dir
    campaign = (
        read_table(contract, "campaigns").filter(pl.col("campaign_id") == campaign_id).row(0, named=True)
    )
    markets = read_table(contract, "markets")
    timezone = markets.filter(pl.col("market_id") == campaign["market_id"])["timezone"].item()
    local = AUCTION_AT.astimezone(ZoneInfo(timezone))
    assert (
        state["budget"] == pytest.approx(campaign["daily_budget"])
        and state["day"] == local.date().isoformat()
    )
    model_request = {
        "campaign_id": campaign_id,
        "state": {
            "budget": state["budget"],
            "spent": min(state["budget"], state["spent"] + state["reserved"]),
            "time_fraction": state["time_fraction"],
            "recent_win_rate": state["wins"] / state["settled"] if state["settled"] else 0.0,
            "recent_cpc": state["spent"] / state["clicks"] if state["clicks"] else 0.0,
            "recent_ctr": state["clicks"] / state["wins"] if state["wins"] else 0.0,
        },
        "request": {**auction, "hour": local.hour, "weekday": local.isoweekday()},
    }
    expected = own_answer(trained_world, model, model_request)
    assert answer["model_bid"] == pytest.approx(expected["bid"], rel=1e-9)
    assert answer["pctr"] == pytest.approx(expected["pctr"], rel=1e-9)
    assert answer["lambda"] == pytest.approx(expected["lambda"], rel=1e-9)
    # the campaign's constraint: never more than what is left of its day's budget, reserved at once
    assert 0.0 < answer["bid"] == pytest.approx(min(expected["bid"], state["remaining"]))
    assert answer["day"] == state["day"]
    assert answer["remaining"] == pytest.approx(state["remaining"] - answer["bid"])
    after = client.get(pacing_path, params={"timestamp": AUCTION_AT.isoformat()}).json()
    assert after["reserved"] == pytest.approx(state["reserved"] + answer["bid"])
    assert after["bids"] == state["bids"] + 1
