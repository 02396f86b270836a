"""The serving tests' world: the tiny marketplace's ids and `served_models`' small models,
registered with `tracking.registry.register_model` in an MLflow store of the caller's choosing and
promoted like the families' models are (every request but /healthz sends `headers`: the API
key of the session's application). tests/serving serves it once per session; tests/reliability
builds its own (another store, or an MLflow server) from the same pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cloudpickle
import httpx
import served_models

from configs.settings import Settings

RECOMMENDER = "tradewind-recommender"
FORECASTER = "tradewind-forecaster"
BIDDER = "tradewind-bidder"

# deployment options of every app the tests deploy. Serve notices a killed replica at its next health
# check (Ray's default: every 10 s), and a replica told to stop waits a drain period (default 2 s)
# before it first looks for requests in flight: here a death is noticed within a second and an idle
# replica stops at once. What Serve does then (replace the replica, drain its requests) is the same.
FAST_LIFECYCLE: dict[str, float] = {"health_check_period_s": 1.0, "graceful_shutdown_wait_loop_s": 0.1}


@dataclass
class ServingWorld:
    settings: Settings
    url: str
    client: httpx.Client
    markets: list[str]
    products: list[str]
    users: list[str]
    campaigns: dict[str, tuple[str, float]]  # campaign -> (market, daily budget)
    api_key: str = ""  # the all-scope key start_serving made; `client` sends it
    recommend_key: str = ""  # a key with the `recommend` scope only (tests/serving/test_auth.py)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def register(self, name: str, model: object, input_example: object, family: str) -> int:
        from tracking.registry import register_model
        from tracking.runs import tracked_run

        with tracked_run(self.settings, f"serving-test-{name}", family):
            output = model.predict(None, input_example)  # type: ignore[attr-defined]
            return register_model(name, model, input_example, output_example=output).version

    def recommender(self, label: str, cls: type = served_models.TinyRecommender) -> object:
        return cls(label, self.markets, self.products, self.users[: len(self.users) // 2])


def registered_world(
    marketplace: Settings, tracking_uri: str, recommender: type = served_models.TinyRecommender
) -> ServingWorld:
    """The marketplace's ids, and the three tiny models registered at `tracking_uri` and promoted to
    champion (the recommender, of class `recommender`, as label "v1"). `url`, `api_key` and
    `client` are set once it is served."""
    import pandas as pd

    from features.tables import read_table
    from tracking.registry import promote

    settings = marketplace.model_copy(
        update={"mlflow": marketplace.mlflow.model_copy(update={"tracking_uri": tracking_uri})}
    )
    cloudpickle.register_pickle_by_value(served_models)
    markets = sorted(read_table(settings.contract_dir, "markets")["market_id"].to_list())
    products = sorted(read_table(settings.contract_dir, "products")["product_id"].to_list())[:200]
    users = sorted(read_table(settings.contract_dir, "users")["user_id"].to_list())[:200]
    campaigns_table = read_table(settings.contract_dir, "campaigns")
    campaigns = {
        row["campaign_id"]: (row["market_id"], row["daily_budget"])
        for row in campaigns_table.select("campaign_id", "market_id", "daily_budget").to_dicts()
    }
    world = ServingWorld(settings, "", httpx.Client(timeout=30.0), markets, products, users, campaigns)

    rec = world.register(
        RECOMMENDER, world.recommender("v1", recommender), recommender.input_example(), "recommender"
    )
    promote(RECOMMENDER, rec)
    forecaster = served_models.TinyForecaster(markets, products)
    example = pd.DataFrame([{"product_id": products[0], "market": markets[0]}])
    promote(FORECASTER, world.register(FORECASTER, forecaster, example, "forecaster"))
    bidder = served_models.TinyBidder({cid: market for cid, (market, _) in campaigns.items()})
    bid_example = pd.DataFrame([{"campaign_id": next(iter(campaigns)), "budget": 100.0, "spent": 10.0}])
    promote(BIDDER, world.register(BIDDER, bidder, bid_example, "bidder"))
    return world


@dataclass(frozen=True)
class BudgetDay:
    """A campaign's market-local day that no other test bids on: its pacing state starts empty."""

    campaign_id: str
    budget: float
    timestamp: str  # ISO 8601, noon UTC of a day of the test's own

    def bid(self, request: dict[str, Any] | None = None) -> dict[str, Any]:
        """A /bid body for this campaign on this day."""
        return {"campaign_id": self.campaign_id, "request": request or {}, "timestamp": self.timestamp}

    def pacing(self, client: httpx.Client) -> dict[str, Any]:
        response = client.get(f"/campaigns/{self.campaign_id}/pacing", params={"timestamp": self.timestamp})
        assert response.status_code == 200, response.text
        return response.json()
