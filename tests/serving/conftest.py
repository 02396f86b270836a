"""One real Ray Serve on 127.0.0.1 for the whole serving test session, serving test models.

The tiny marketplace (tests/conftest.py) gives the data folder (markets, campaigns, the Feast
online store); the MLflow store is the session's own. The models are `served_models`' small
contract-following models, registered with `training.registry.register_model` and promoted like
the families' models are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import httpx
import pytest
import served_models

from configs.settings import Settings

RECOMMENDER = "tradewind-recommender"
FORECASTER = "tradewind-forecaster"
BIDDER = "tradewind-bidder"
POLL_S = 0.3


@dataclass
class ServingWorld:
    settings: Settings
    url: str
    client: httpx.Client
    markets: list[str]
    products: list[str]
    users: list[str]
    campaigns: dict[str, tuple[str, float]]  # campaign -> (market, daily budget)

    def register(self, name: str, model: object, input_example: object, family: str) -> int:
        from training.registry import register_model
        from training.tracking import tracked_run

        with tracked_run(self.settings, f"serving-test-{name}", family):
            output = model.predict(None, input_example)  # type: ignore[attr-defined]
            return register_model(name, model, input_example, output_example=output).version

    def recommender(self, label: str, cls: type = served_models.TinyRecommender) -> object:
        return cls(label, self.markets, self.products, self.users[: len(self.users) // 2])


@pytest.fixture(scope="session")
def serving_world(
    tiny_marketplace: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServingWorld]:
    import pandas as pd
    import ray
    from ray import serve

    from features.tables import read_table
    from serving.deploy import free_port, start_serving
    from training.registry import promote

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    store = Path(tmp_path_factory.mktemp("serving-mlflow")) / "mlflow.db"
    settings = tiny_marketplace.model_copy(
        update={"mlflow": tiny_marketplace.mlflow.model_copy(update={"tracking_uri": f"sqlite:///{store}"})}
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
        RECOMMENDER, world.recommender("v1"), served_models.TinyRecommender.input_example(), "recommendation"
    )
    promote(RECOMMENDER, rec)
    forecaster = served_models.TinyForecaster(markets, products)
    example = pd.DataFrame([{"product_id": products[0], "market": markets[0]}])
    promote(FORECASTER, world.register(FORECASTER, forecaster, example, "forecasting"))
    bidder = served_models.TinyBidder({cid: market for cid, (market, _) in campaigns.items()})
    bid_example = pd.DataFrame([{"campaign_id": next(iter(campaigns)), "budget": 100.0, "spent": 10.0}])
    promote(BIDDER, world.register(BIDDER, bidder, bid_example, "bidding"))

    for attempt in (1, 2):  # Ray gives its raylet a fixed 30 s to register: an overloaded machine can miss it
        try:
            ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
            break
        except Exception as error:
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(error):
                raise
    try:
        serving = start_serving(
            settings,
            port=free_port(),
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
        yield world
    finally:
        world.client.close()
        serve.shutdown()
        ray.shutdown()
