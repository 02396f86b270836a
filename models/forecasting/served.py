"""The served forecaster: every known series' forecast from the last origin, answered by slicing arrays.

A plain class (no MLflow, no Ray, no training code): `tracking.pyfunc.ServedPyfunc` wraps it for the
registry, serving calls `answer`. The post-processing every served forecast goes through (quantiles
clipped at zero and ordered, LightGBM series first, seasonal naive for the others, zeros for the
never sold) is written here once: training's fit, the retraining gate and the arrays served all use
`served_quantiles`, `fallback_forecast` and `forecast_arrays`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl

from models.forecasting.seasonal_naive import SeasonalNaive
from models.forecasting.series import FORECAST_VALUE_COLUMNS, SeriesSpec

TRAINED_QUANTILES = {0.1: "p10", 0.5: "p50", 0.9: "p90"}
# MLflow's generic path writes one output row per product and day, with these columns
OUTPUT_COLUMNS = ("request", "market", "product_id", "date", "mean", *TRAINED_QUANTILES.values())


def quantile_key(level: float) -> str:
    return f"p{round(level * 100):d}"


def served_quantiles(values: np.ndarray) -> np.ndarray:
    """Mean, p10, p50, p90 on the last axis, as served: quantiles clipped at zero and ordered
    (p10 <= p50 <= p90) whatever the source."""
    values = values.copy()
    values[..., 1:] = np.sort(np.clip(values[..., 1:], 0.0, None), axis=-1)
    return values


def fallback_forecast(
    others: pl.DataFrame, unsold: pl.DataFrame, last_date: date, horizon: int, spec: SeriesSpec
) -> pl.DataFrame:
    """Seasonal naive for the listed series LightGBM does not model (`others`, history up to
    `last_date`); zeros for the never sold (`unsold`: keys only). Keys, date and the forecast values."""
    parts = []
    if others.height:
        parts.append(SeasonalNaive(spec).fit(others).predict(horizon))
    if unsold.height:
        days = pl.DataFrame(
            {
                "date": pl.date_range(
                    last_date + timedelta(days=1), last_date + timedelta(days=horizon), eager=True
                )
            }
        )
        zeros = unsold.join(days, how="cross").with_columns(
            pl.lit(0.0).alias(c) for c in FORECAST_VALUE_COLUMNS
        )
        parts.append(zeros)
    if not parts:
        return pl.DataFrame(
            schema={
                "product_id": pl.String,
                "market_id": pl.String,
                "date": pl.Date,
                **{c: pl.Float64 for c in FORECAST_VALUE_COLUMNS},
            }
        )
    return pl.concat(
        [part.select("product_id", "market_id", "date", *FORECAST_VALUE_COLUMNS) for part in parts],
        how="vertical_relaxed",
    )


def forecast_arrays(
    lightgbm: pl.DataFrame, fallback: pl.DataFrame, horizon: int
) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray]:
    """Series keys, a (series, day, mean/p10/p50/p90) array as served, and which rows LightGBM
    forecast; LightGBM series first."""
    both = pl.concat(
        [
            lightgbm.select("product_id", "market_id", "date", *FORECAST_VALUE_COLUMNS).with_columns(
                pl.lit(True).alias("_lgb")
            ),
            fallback.with_columns(pl.lit(False).alias("_lgb")),
        ],
        how="vertical_relaxed",
    ).sort(["_lgb", "product_id", "market_id", "date"], descending=[True, False, False, False])
    series = both.group_by(["product_id", "market_id"], maintain_order=True).agg(
        pl.len(), pl.col("_lgb").first()
    )
    if (series["len"] != horizon).any():
        raise RuntimeError("every series must have a forecast for each day of the horizon")
    values = (
        both.select(FORECAST_VALUE_COLUMNS)
        .to_numpy()
        .reshape(series.height, horizon, len(FORECAST_VALUE_COLUMNS))
    )
    keys = list(zip(series["product_id"].to_list(), series["market_id"].to_list(), strict=True))
    return keys, served_quantiles(values), series["_lgb"].to_numpy()


class ServedForecaster:
    """Forecasts of every known product x market from the last origin, served by slicing arrays.

    `values[row, day, k]` holds mean, p10, p50, p90 (k = 0..3) of series `row` on day `day` after
    `last_date`. Rows of LightGBM series come from the global model; the other listed series from
    seasonal naive (`from_lightgbm` says which).
    """

    feature_service: str | None = None  # the forecast is precomputed: no online features needed

    def __init__(
        self,
        keys: Sequence[tuple[str, str]],
        values: np.ndarray,
        from_lightgbm: np.ndarray,
        last_date: date,
        horizon: int,
        top_features: Sequence[str] = (),
    ) -> None:
        self.row_of = {key: row for row, key in enumerate(keys)}
        self.values = values.astype(np.float32)
        self.from_lightgbm = from_lightgbm.astype(bool)
        self.last_date = last_date
        self.horizon = horizon
        self.dates = [(last_date + timedelta(days=day + 1)).isoformat() for day in range(horizon)]
        self.markets = sorted({market for _, market in keys})
        self.top_features = list(top_features)

    def answer(self, request: Mapping[str, Any], online: Mapping[str, Any] | None = None) -> dict[str, Any]:
        market = str(request.get("market", ""))
        if market not in self.markets:
            raise ValueError(f"market: unknown market {market!r} (known: {', '.join(self.markets)})")
        horizon = int(request.get("horizon", self.horizon))
        if not 1 <= horizon <= self.horizon:
            raise ValueError(f"horizon: {horizon} is outside 1..{self.horizon}, the trained maximum")
        levels = [float(level) for level in request.get("quantiles", list(TRAINED_QUANTILES))]
        untrained = [level for level in levels if level not in TRAINED_QUANTILES]
        if untrained:
            known = ", ".join(str(level) for level in TRAINED_QUANTILES)
            raise ValueError(f"quantiles: {untrained} not available (trained: {known})")
        products = [str(product) for product in request.get("product_ids", [])]
        if not products:
            raise ValueError("product_ids: give at least one product")
        rows = []
        for product in products:
            row = self.row_of.get((product, market))
            if row is None:
                raise ValueError(f"product_ids: unknown product {product!r} in market {market!r}")
            rows.append(row)
        columns = [1 + list(TRAINED_QUANTILES).index(level) for level in levels]
        names = [quantile_key(level) for level in levels]
        forecasts = []
        for product, row in zip(products, rows, strict=True):
            block = self.values[row, :horizon].tolist()
            for day in range(horizon):
                values = block[day]
                item = {"product_id": product, "date": self.dates[day], "mean": values[0]}
                for name, column in zip(names, columns, strict=True):
                    item[name] = values[column]
                forecasts.append(item)
        return {"market": market, "forecasts": forecasts}

    def online_entities(self, request: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        return None

    def smoke_request(self) -> dict[str, Any]:
        product, market = next(
            (key for key, row in self.row_of.items() if self.from_lightgbm[row]), next(iter(self.row_of))
        )
        return {
            "product_ids": [product],
            "market": market,
            "horizon": min(7, self.horizon),
            "quantiles": [0.1, 0.5, 0.9],
        }

    def request_limits(self) -> dict[str, dict[str, Any]]:
        """The trained horizon and quantiles: `answer` refuses anything beyond them."""
        return {
            "horizon": {"maximum": self.horizon},
            "quantiles": {"items": {"enum": sorted(TRAINED_QUANTILES)}},
        }

    def describe(self) -> dict[str, Any]:
        return {
            "markets": self.markets,
            "series": len(self.row_of),
            "lightgbm_series": int(self.from_lightgbm.sum()),
            "seasonal_naive_series": int((~self.from_lightgbm).sum()),
            "horizon": self.horizon,
            "quantiles": list(TRAINED_QUANTILES),
            "trained_through": self.last_date.isoformat(),
            "first_forecast_date": self.dates[0],
            "top_features": self.top_features,
        }

    def forecast_frame(self, days: int | None = None) -> pl.DataFrame:
        """Every series' served forecast for the first `days` days (default: the horizon), as
        product_id, market_id, date, mean, p10, p50, p90: the numbers `answer` slices."""
        days = self.horizon if days is None else days
        if not 1 <= days <= self.horizon:
            raise ValueError(f"days: {days} is outside 1..{self.horizon}, the trained maximum")
        keys = sorted(self.row_of, key=self.row_of.__getitem__)
        block = self.values[:, :days].reshape(-1, self.values.shape[2])
        dates = [date.fromisoformat(day) for day in self.dates[:days]]
        return pl.DataFrame(
            [
                pl.Series("product_id", [product for product, _ in keys for _ in dates], pl.String),
                pl.Series("market_id", [market for _, market in keys for _ in dates], pl.String),
                pl.Series("date", dates * len(keys), pl.Date),
                *(
                    pl.Series(name, block[:, column], pl.Float64)
                    for column, name in enumerate(FORECAST_VALUE_COLUMNS)
                ),
            ]
        )

    # MLflow's table form (models.served.TabularForm): one input row per request, one output row
    # per product and day, every trained quantile a column (empty when not asked for)
    def request_from_row(self, row: dict[str, Any]) -> tuple[dict[str, Any], None]:
        request = dict(row)
        request["product_ids"] = list(request["product_ids"])
        request["quantiles"] = list(request.get("quantiles") or list(TRAINED_QUANTILES))
        return request, None

    def rows_from_answer(self, answer: dict[str, Any], index: int) -> list[dict[str, Any]]:
        # a quantile not asked for is NaN, so every quantile column stays numeric
        return [
            {column: item.get(column, math.nan) for column in OUTPUT_COLUMNS}
            | {"request": index, "market": answer["market"]}
            for item in answer["forecasts"]
        ]

    def example_row(self) -> dict[str, Any]:
        return self.smoke_request()
