"""The simulator's ground truth: written next to the raw data, read only to evaluate models.

Nothing here may become a feature. Layout of `truth_dir`:

    meta.json             seed, scale, dates, markets, table sizes, the config used
    choice_model.json     parameters of the choice model (per market: price sensitivity, outside
                          utility; promo badge, extra units, categories and their seasonality)
    users.parquet         user_id, market_id, activity, price_preference, active_from,
                          latent (array), category_affinity (array, in choice_model.json's order)
    products.parquet      product_id, category, brand, base_price_usd, price_tier, popularity,
                          trend, live_from, latent (array)
    demand/<market>.parquet   per live product x day: mean_demand (expected units, uncensored),
                          mean_purchases, stock_out, list_price, discount, price, utility_shift
    traffic.parquet       per market x day: traffic multiplier, expected sessions, event flags
    calendar.parquet      features.markets.holiday_calendar for the simulated markets
    auctions.parquet      per auction_id: p_click, p_conversion, expected_conversion_value,
                          affinity, market-price and logging-policy distributions
    dirt.json             dirty rows injected per table and kind, and the quarantine reasons
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

META = "meta.json"
CHOICE_MODEL = "choice_model.json"
USERS = "users.parquet"
PRODUCTS = "products.parquet"
DEMAND_DIR = "demand"
TRAFFIC = "traffic.parquet"
CALENDAR = "calendar.parquet"
AUCTIONS = "auctions.parquet"
DIRT = "dirt.json"


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(path: Path, frame: pl.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no simulator ground truth here (run `tradewind generate`)")
    return json.loads(path.read_text())


def load_meta(truth_dir: Path) -> dict[str, Any]:
    return _read_json(Path(truth_dir) / META)


@dataclass(frozen=True)
class ChoiceModel:
    """Everything needed to compute choice probabilities (see features.simulator.demand)."""

    user_ids: list[str]
    user_market: list[str]
    user_latent: np.ndarray
    category_affinity: np.ndarray
    price_preference: np.ndarray
    product_ids: list[str]  # the column order of true_purchase_probabilities
    product_category: np.ndarray  # index into categories
    product_latent: np.ndarray
    price_tier: np.ndarray
    popularity: np.ndarray
    categories: list[str]
    outside_utility: dict[str, float]  # per market
    parameters: dict[str, Any]

    def static_utility(self, user_rows: np.ndarray) -> np.ndarray:
        """a[u, p] for the given users (rows) and every product."""
        return (
            self.user_latent[user_rows] @ self.product_latent.T
            + self.category_affinity[user_rows][:, self.product_category]
            + self.price_preference[user_rows, None] * self.price_tier[None, :]
            + self.popularity[None, :]
        )


def load_choice_model(truth_dir: Path) -> ChoiceModel:
    truth_dir = Path(truth_dir)
    parameters = _read_json(truth_dir / CHOICE_MODEL)
    users = pl.read_parquet(truth_dir / USERS)
    products = pl.read_parquet(truth_dir / PRODUCTS)
    categories = parameters["categories"]
    return ChoiceModel(
        user_ids=users.get_column("user_id").to_list(),
        user_market=users.get_column("market_id").to_list(),
        user_latent=users.get_column("latent").to_numpy(),
        category_affinity=users.get_column("category_affinity").to_numpy(),
        price_preference=users.get_column("price_preference").to_numpy(),
        product_ids=products.get_column("product_id").to_list(),
        product_category=products.get_column("category")
        .replace_strict(categories, list(range(len(categories))))
        .to_numpy(),
        product_latent=products.get_column("latent").to_numpy(),
        price_tier=products.get_column("price_tier").to_numpy(),
        popularity=products.get_column("popularity").to_numpy(),
        categories=categories,
        outside_utility={market: float(value) for market, value in parameters["outside_utility"].items()},
        parameters=parameters,
    )


def true_mean_demand(truth_dir: Path) -> pl.DataFrame:
    """TRUE mean daily demand per product x market x day (uncensored), with stock-out flags.

    Columns: date (market-local), market_id, product_id, mean_demand (expected units), mean_purchases,
    stock_out, list_price, discount, price (local currency), utility_shift. One row per day on which
    the product is listed and live in the market.
    """
    files = sorted((Path(truth_dir) / DEMAND_DIR).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{truth_dir}: no demand truth (run `tradewind generate`)")
    return pl.read_parquet(files)


def _utility_shift_on(truth_dir: Path, market_id: str, on: date | None) -> pl.DataFrame:
    demand = pl.scan_parquet(Path(truth_dir) / DEMAND_DIR / f"{market_id}.parquet")
    if on is None:
        on = demand.select(pl.col("date").max()).collect().item()
    return demand.filter(pl.col("date") == on).select("product_id", "utility_shift").collect()


def true_purchase_probabilities(
    truth_dir: Path, user_ids: list[str] | np.ndarray, market_id: str, on: date | None = None
) -> np.ndarray:
    """P(session of user u in `market_id` on day `on` buys product p): users x products.

    Columns follow `load_choice_model(truth_dir).product_ids` (every product of the catalogue);
    products not listed in the market, or not yet live on `on`, have probability 0. `on` defaults to
    the last simulated day. Rows sum to 1 - P(buy nothing). Ranking by a row is the oracle
    recommendation for that user. Unknown user ids raise KeyError.
    """
    model = load_choice_model(truth_dir)
    if market_id not in model.outside_utility:
        raise KeyError(f"market {market_id} is not in the simulated marketplace")
    row_of = {user_id: row for row, user_id in enumerate(model.user_ids)}
    missing = [user_id for user_id in user_ids if user_id not in row_of]
    if missing:
        raise KeyError(f"unknown user ids, e.g. {missing[:3]}")
    rows = np.array([row_of[user_id] for user_id in user_ids], dtype=np.int64)
    shift_frame = _utility_shift_on(truth_dir, market_id, on)
    column_of = {product_id: column for column, product_id in enumerate(model.product_ids)}
    offered = np.array([column_of[p] for p in shift_frame.get_column("product_id")], dtype=np.int64)
    shift = shift_frame.get_column("utility_shift").to_numpy()
    utility = model.static_utility(rows)[:, offered] + shift[None, :]
    # subtract each row's maximum (with the outside option) before exp, to stay in range
    outside = model.outside_utility[market_id]
    top = np.maximum(utility.max(axis=1, initial=-np.inf), outside)
    weights = np.exp(utility - top[:, None])
    denominator = np.exp(outside - top) + weights.sum(axis=1)
    probabilities = np.zeros((len(rows), len(model.product_ids)))
    probabilities[:, offered] = weights / denominator[:, None]
    return probabilities


def true_auction_probabilities(truth_dir: Path) -> pl.DataFrame:
    """Per auction_id: p_click, p_conversion (given a click), expected_conversion_value, affinity,
    the log-normal market price (log_market_price_mean/sd, local currency CPM), the logging policy's
    log-normal bid (log_bid_mean/sd) and budget_exhausted (the campaign had stopped bidding)."""
    return pl.read_parquet(Path(truth_dir) / AUCTIONS)


def true_traffic(truth_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(Path(truth_dir) / TRAFFIC)


def injected_dirt(truth_dir: Path) -> dict[str, dict[str, int]]:
    """Dirty rows injected into the raw output: table -> kind -> rows."""
    return _read_json(Path(truth_dir) / DIRT)["injected"]


def expected_quarantine(truth_dir: Path) -> dict[str, dict[str, int]]:
    """What ingest should quarantine from the raw output: table -> reason -> rows."""
    return _read_json(Path(truth_dir) / DIRT)["quarantine_reasons"]
