"""Planned price cuts and unplanned stock-outs, per product x market x day.

Promotions come two ways: a share of the listed products joins each sales event the market runs
(`promotions.events`: Black Friday, 11.11, ...), and every listing gets occasional ad-hoc promotions
of a few days. Promotions of one listing never overlap (a later one that would is dropped), so each
day has at most one discount. They are published in the `promotions` table, known in advance.

Stock-outs are runs of days on which a listing cannot sell: a Poisson number of runs per listing at
uniform start days, each lasting a geometric number of days. Purchases on those days are lost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from features.contract import PROMOTIONS
from features.simulator.config import MarketplaceConfig, PromotionSettings, StockoutSettings
from features.simulator.population import product_ids
from features.simulator.traffic import EventRun


@dataclass(frozen=True)
class Promotions:
    product: np.ndarray
    market: np.ndarray
    first_day: np.ndarray
    last_day: np.ndarray  # inclusive
    discount: np.ndarray

    def daily_discount(self, n_products: int, n_markets: int, n_days: int) -> np.ndarray:
        """markets x products x days discount (0 where there is no promotion), float32."""
        table = np.zeros((n_markets, n_products, n_days), dtype=np.float32)
        lengths = self.last_day - self.first_day + 1
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        day = np.repeat(self.first_day, lengths) + offsets
        table[np.repeat(self.market, lengths), np.repeat(self.product, lengths), day] = np.repeat(
            self.discount, lengths
        )
        return table


def _discounts(bounds: tuple[float, float], size: int, rng: np.random.Generator) -> np.ndarray:
    # shops advertise round discounts: 5% steps
    raw = rng.uniform(bounds[0], bounds[1], size)
    return np.clip(np.round(raw * 20) / 20, 0.05, 0.95)


def plan_promotions(
    settings: PromotionSettings,
    listed: np.ndarray,
    live_from: np.ndarray,
    event_runs: list[EventRun],
    n_days: int,
    rng: np.random.Generator,
) -> Promotions:
    parts: list[tuple[np.ndarray, ...]] = []
    for run in event_runs:
        if run.event not in settings.events:
            continue
        candidates = np.flatnonzero(listed[:, run.market] & (live_from <= run.first_day))
        joined = candidates[rng.random(len(candidates)) < settings.event_participation]
        parts.append(
            (
                joined,
                np.full(len(joined), run.market),
                np.full(len(joined), run.first_day),
                np.full(len(joined), run.last_day),
                _discounts(settings.event_discount, len(joined), rng),
                np.zeros(len(joined)),  # event promotions win ties
            )
        )
    product, market = np.nonzero(listed)
    counts = rng.poisson(settings.adhoc_per_year * n_days / 365.25, len(product))
    product, market = np.repeat(product, counts), np.repeat(market, counts)
    first = rng.integers(0, n_days, len(product))
    length = rng.integers(settings.adhoc_days[0], settings.adhoc_days[1] + 1, len(product))
    parts.append(
        (
            product,
            market,
            first,
            np.minimum(first + length - 1, n_days - 1),
            _discounts(settings.adhoc_discount, len(product), rng),
            np.ones(len(product)),
        )
    )
    columns = [np.concatenate(column) for column in zip(*parts, strict=True)]
    live = columns[2] >= live_from[columns[0].astype(np.int64)]  # no sale before the product exists
    columns = [column[live] for column in columns]
    plan = pl.DataFrame(
        dict(zip(("product", "market", "first", "last", "discount", "adhoc"), columns, strict=True))
    ).with_columns(pl.col("product", "market", "first", "last").cast(pl.Int64))
    plan = plan.sort("market", "product", "first", "adhoc")
    # drop a promotion that starts before an earlier one of the same listing has ended
    plan = plan.filter(
        pl.col("first") > pl.col("last").cum_max().shift(1).over("market", "product").fill_null(-1)
    )
    return Promotions(
        product=plan.get_column("product").to_numpy(),
        market=plan.get_column("market").to_numpy(),
        first_day=plan.get_column("first").to_numpy(),
        last_day=plan.get_column("last").to_numpy(),
        discount=plan.get_column("discount").to_numpy(),
    )


def promotions_frame(config: MarketplaceConfig, days: np.ndarray, promotions: Promotions) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "product_id": product_ids(promotions.product),
            "market_id": pl.Series([market.market_id for market in config.markets]).gather(promotions.market),
            "start_date": pl.Series(days[promotions.first_day]).cast(pl.Date),
            "end_date": pl.Series(days[promotions.last_day]).cast(pl.Date),
            "discount": promotions.discount,
        },
        schema=PROMOTIONS.polars_schema,
    )


def plan_stockouts(
    settings: StockoutSettings, listed: np.ndarray, n_days: int, rng: np.random.Generator
) -> np.ndarray:
    """markets x products x days, True where the listing is out of stock."""
    n_products, n_markets = listed.shape
    stocked_out = np.zeros((n_markets, n_products, n_days), dtype=bool)
    product, market = np.nonzero(listed)
    counts = rng.poisson(settings.per_year * n_days / 365.25, len(product))
    product, market = np.repeat(product, counts), np.repeat(market, counts)
    first = rng.integers(0, n_days, len(product))
    lengths = rng.geometric(1 / settings.mean_days, len(product))
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    day = np.repeat(first, lengths) + offsets
    inside = day < n_days
    stocked_out[np.repeat(market, lengths)[inside], np.repeat(product, lengths)[inside], day[inside]] = True
    return stocked_out
