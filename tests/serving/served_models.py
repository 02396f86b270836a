"""Small models that follow the served-model contract (COMMON.md), for the serving tests.

They are registered in a test MLflow store exactly as the families register theirs
(`tracking.registry.register_model`), pickled by value so that Ray replicas can load them without
importing the tests. Each answers deterministically from what it was built with, so a test can
tell which version answered and whether online features reached it.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import mlflow
import pandas as pd


def _score(*parts: str) -> float:
    return int(hashlib.sha256("|".join(parts).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


class TinyRecommender(mlflow.pyfunc.PythonModel):
    feature_service = None

    def __init__(self, label: str, markets: list[str], products: list[str], users: list[str]) -> None:
        self.label = label
        self.markets = sorted(markets)
        self.products = list(products)
        self.users = set(users)

    def online_entities(self, request: dict) -> list[dict] | None:
        return None

    def smoke_request(self) -> dict:
        return {"user_id": "smoke-user", "market": self.markets[0], "k": 3, "exclude": [], "explain": False}

    def describe(self) -> dict:
        return {"label": self.label, "catalogue": len(self.products), "markets": self.markets}

    def answer(self, request: dict, online: dict | None = None) -> dict:
        if request["market"] not in self.markets:
            raise ValueError(
                f"market: unknown market {request['market']!r} (known: {', '.join(self.markets)})"
            )
        cold = request["user_id"] not in self.users
        excluded = set(request.get("exclude") or [])
        scored = sorted(
            (
                (_score(self.label, request["user_id"], product), product)
                for product in self.products
                if product not in excluded
            ),
            reverse=True,
        )[: request["k"]]
        items = [
            {
                "product_id": product,
                "score": score,
                "reasons": [{"feature": "hash", "contribution": score}] if request.get("explain") else [],
            }
            for score, product in scored
        ]
        return {"items": items, "cold_start": cold}

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        rows = model_input.to_dict("records")
        answers = [self.answer({**row, "exclude": [], "explain": False}) for row in rows]
        return pd.DataFrame({"items": [json.dumps(answer["items"]) for answer in answers]})

    @staticmethod
    def input_example() -> pd.DataFrame:
        return pd.DataFrame([{"user_id": "u-1", "market": "US", "k": 3}])


class SlowRecommender(TinyRecommender):
    """Takes `seconds` per answer (a real model's work), so requests are in flight on a replica
    at any moment of a load: a replica killed then has requests to lose."""

    seconds = 0.03

    def answer(self, request: dict, online: dict | None = None) -> dict:
        time.sleep(self.seconds)
        return super().answer(request, online)


class BrokenAnswer(TinyRecommender):
    """Registers fine (predict works) but cannot answer a served request: never swapped in."""

    def answer(self, request: dict, online: dict | None = None) -> dict:
        raise ZeroDivisionError("the serving path of this model is broken")

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return pd.DataFrame({"items": ["[]"] * len(model_input)})


class TinyForecaster(mlflow.pyfunc.PythonModel):
    feature_service = None

    def __init__(self, markets: list[str], products: list[str], max_horizon: int = 14) -> None:
        self.markets = sorted(markets)
        self.products = set(products)
        self.max_horizon = max_horizon

    def online_entities(self, request: dict) -> list[dict] | None:
        return None

    def smoke_request(self) -> dict:
        return {
            "product_ids": [sorted(self.products)[0]],
            "market": self.markets[0],
            "horizon": 2,
            "quantiles": [0.1, 0.5, 0.9],
        }

    def describe(self) -> dict:
        return {"max_horizon": self.max_horizon, "products": len(self.products)}

    def request_limits(self) -> dict:
        return {"horizon": {"maximum": self.max_horizon}}

    def answer(self, request: dict, online: dict | None = None) -> dict:
        if request["market"] not in self.markets:
            raise ValueError(f"market: unknown market {request['market']!r}")
        unknown = [product for product in request["product_ids"] if product not in self.products]
        if unknown:
            raise ValueError(f"product_ids: unknown product {unknown[0]!r}")
        if request["horizon"] > self.max_horizon:
            raise ValueError(f"horizon: {request['horizon']} is above the trained maximum {self.max_horizon}")
        forecasts = []
        for product in request["product_ids"]:
            for day in range(request["horizon"]):
                mean = 1.0 + 10 * _score(product, request["market"], str(day))
                row = {"product_id": product, "date": f"2026-01-{day + 1:02d}", "mean": mean}
                row.update({f"p{round(q * 100)}": mean * (0.5 + q) for q in request["quantiles"]})
                forecasts.append(row)
        return {"market": request["market"], "forecasts": forecasts}

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        means = [
            self.answer(
                {
                    "product_ids": [row["product_id"]],
                    "market": row["market"],
                    "horizon": 1,
                    "quantiles": [0.5],
                }
            )["forecasts"][0]["mean"]
            for row in model_input.to_dict("records")
        ]
        return pd.DataFrame({"mean": means})


class TinyBidder(mlflow.pyfunc.PythonModel):
    """Bids a fixed share of the daily budget, capped by what is left; pCTR from the online store."""

    feature_service = "bidder"

    def __init__(self, campaign_markets: dict[str, str], budget_share: float = 0.07) -> None:
        self.campaign_markets = dict(campaign_markets)
        self.budget_share = budget_share

    def online_entities(self, request: dict) -> list[dict] | None:
        market = self.campaign_markets.get(request["campaign_id"])
        return [{"campaign_id": request["campaign_id"], "market_id": market or "US"}]

    def smoke_request(self) -> dict:
        campaign = sorted(self.campaign_markets)[0]
        return {
            "campaign_id": campaign,
            "request": {"hour": 12, "floor_price": 0.1},
            "state": {
                "budget": 100.0,
                "spent": 10.0,
                "time_fraction": 0.5,
                "recent_win_rate": 0.2,
                "recent_cpc": 0.5,
                "recent_ctr": 0.01,
            },
        }

    def describe(self) -> dict:
        return {"campaigns": len(self.campaign_markets), "budget_share": self.budget_share}

    def answer(self, request: dict, online: dict | None = None) -> dict:
        state = request["state"]
        seen = {name: values[0] for name, values in (online or {}).items()}
        ctr = seen.get("campaign_stats__ctr_7d")
        remaining = max(0.0, state["budget"] - state["spent"])
        return {
            "bid": min(self.budget_share * state["budget"], remaining),
            "pctr": float(ctr) if ctr is not None else 0.01,
            "lambda": 1.0,
            "online": seen,
        }

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        bids = [
            min(self.budget_share * row["budget"], max(0.0, row["budget"] - row["spent"]))
            for row in model_input.to_dict("records")
        ]
        return pd.DataFrame({"bid": bids})


class FeaturelessBidder(TinyBidder):
    """The tiny bidder without online features: served where the Feast store of the data folder is
    not the one the settings name (a scale-out app whose Redis holds only pacing state)."""

    feature_service = None

    def online_entities(self, request: dict) -> list[dict] | None:
        return None


class SlowBidder(TinyBidder):
    """Takes `seconds` per answer: bids stay in flight long enough for admission control to refuse
    the ones past the endpoint's limit."""

    seconds = 0.5

    def answer(self, request: dict, online: dict | None = None) -> dict:
        time.sleep(self.seconds)
        return super().answer(request, online)


class SlowerRecommender(SlowRecommender):
    """Half a second per answer (admission control's tests)."""

    seconds = 0.5
