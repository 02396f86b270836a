"""Generate the whole marketplace: raw contract tables into `raw_dir`, ground truth into `truth_dir`.

One seed drives everything: each part draws from its own child of `numpy.random.SeedSequence(seed)`,
so the same seed and config give identical files, and changing one part's draws leaves the others'
alone. `scale` multiplies users, products, brands and campaigns (so auction volume too), never days.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from features.markets import markets_frame
from features.simulator import truth
from features.simulator.auctions import simulate_auctions
from features.simulator.campaigns import plan_campaigns
from features.simulator.clock import day_range
from features.simulator.config import MarketplaceConfig
from features.simulator.demand import MarketDemand, category_seasonality, demand_truth_frame, market_demand
from features.simulator.dirt import KINDS_BY_TABLE, DirtInjector, quarantine_reason
from features.simulator.events import EventColumns, events_frame, funnel_events, sample_sessions
from features.simulator.fx import fx_frame, simulate_fx
from features.simulator.population import (
    Catalogue,
    Users,
    listings_frame,
    make_catalogue,
    make_users,
    product_ids,
    products_frame,
    user_ids,
    users_frame,
)
from features.simulator.pricing import local_prices
from features.simulator.promotions import plan_promotions, plan_stockouts, promotions_frame
from features.simulator.traffic import Traffic, market_traffic
from features.tables import write_partition
from models.terminal_progress import progress_on_terminal

PARTITION = "generated"
STEPS = (
    "markets and exchange rates",
    "users and catalogue",
    "calendar, prices, promotions, stock-outs",
    "true demand per product x market x day",
    "shopping sessions and events",
    "campaigns and auctions",
    "the rest of the ground truth",
)
# one child seed per part, in this order (append new parts at the end to keep old draws stable)
RANDOM_STREAMS = ("fx", "users", "catalogue", "seasonality", "promotions", "stockouts", "sessions",
                  "campaigns", "auctions", "dirt")  # fmt: skip


@dataclass
class GenerationSummary:
    rows: dict[str, int]  # raw rows written per table, dirty rows included
    seconds: float
    dirty_rows: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> kind -> rows
    sizes: dict[str, int] = field(default_factory=dict)  # users, products, brands, campaigns, days


def scaled_sizes(config: MarketplaceConfig, scale: float) -> dict[str, int]:
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    population = config.population
    return {
        "users": max(len(config.markets), round(population.users * scale)),
        "products": max(1, round(population.products * scale)),
        "brands": max(1, round(population.brands * scale)),
        "campaigns": max(1, round(config.ads.campaigns * scale)),
        "days": (config.end_date - config.start_date).days + 1,
    }


def generate_marketplace(
    config: MarketplaceConfig,
    raw_dir: Path,
    truth_dir: Path,
    scale: float = 1.0,
    seed: int | None = None,
    progress: bool = True,
) -> GenerationSummary:
    """Simulate the marketplace and write its raw tables and ground truth. See the package docs."""
    started = time.perf_counter()
    raw_dir, truth_dir = Path(raw_dir), Path(truth_dir)
    seed = config.seed if seed is None else seed
    seeds = dict(zip(RANDOM_STREAMS, np.random.SeedSequence(seed).spawn(len(RANDOM_STREAMS)), strict=True))
    rngs = {name: np.random.default_rng(child) for name, child in seeds.items()}
    sizes = scaled_sizes(config, scale)
    days = day_range(config.start_date, config.end_date)
    n_days, n_markets = len(days), len(config.markets)
    rows: dict[str, int] = {}
    dirt = DirtInjector(config.dirt, config.end_date, rngs["dirt"])

    def write(table: str, frame: pl.DataFrame, **extra: pl.DataFrame) -> None:
        frame = dirt.inject(table, frame, **extra)
        write_partition(frame, raw_dir, table, PARTITION)
        rows[table] = frame.height

    columns = [TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()]
    # rich writes to stdout
    with Progress(*columns, disable=not progress_on_terminal(sys.stdout, progress), transient=True) as bar:
        task = bar.add_task("generate", total=len(STEPS))

        def step(index: int) -> None:
            bar.update(task, completed=index, description=f"generate: {STEPS[index]}")

        # each table is written as soon as it exists, so big frames do not pile up in memory
        step(0)
        fx = simulate_fx(config.fx, n_days, rngs["fx"])
        write("markets", markets_frame(config.market_list()))
        write("fx_rates", fx_frame(days, fx))

        step(1)
        users = make_users(config, sizes["users"], n_days, rngs["users"])
        catalogue = make_catalogue(config, sizes["products"], sizes["brands"], n_days, rngs["catalogue"])
        products = catalogue.products
        write("users", users_frame(config, users))
        write("products", products_frame(catalogue))

        step(2)
        traffic = market_traffic(config, days)
        category_season, season_amplitude, season_peak = category_seasonality(
            config.population.categories, days, config.choice.category_seasonality_max, rngs["seasonality"]
        )
        prices = local_prices(config, days, products.base_price_usd, fx)
        promotions = plan_promotions(
            config.promotions,
            catalogue.listed,
            products.live_from,
            traffic.event_runs,
            n_days,
            rngs["promotions"],
        )
        discount = promotions.daily_discount(products.count, n_markets, n_days)
        stocked_out = plan_stockouts(config.stockouts, catalogue.listed, n_days, rngs["stockouts"])
        current_price = prices.list_price[:, :, -1]
        write(
            "listings",
            listings_frame(config, catalogue.listed, current_price),
            listing_grid=_listing_grid(config, catalogue),
        )
        write("promotions", promotions_frame(config, days, promotions))

        step(3)
        _clear_demand_truth(truth_dir)
        demands: list[MarketDemand] = []
        for market in range(n_markets):
            demand, demand_truth = market_demand(
                config,
                market,
                users,
                products,
                catalogue.listed,
                traffic.multiplier,
                prices,
                discount,
                category_season,
            )
            truth.write_parquet(
                truth_dir / truth.DEMAND_DIR / f"{config.markets[market].market_id}.parquet",
                demand_truth_frame(config, demand, demand_truth, days, stocked_out),
            )
            demands.append(demand)
        del demand_truth

        step(4)
        session_rngs = [np.random.default_rng(child) for child in seeds["sessions"].spawn(n_markets)]
        parts: list[EventColumns] = []
        for demand, rng in zip(demands, session_rngs, strict=True):
            sessions = sample_sessions(demand, users, products, config.funnel.extra_views_mean, rng)
            parts.append(funnel_events(config, demand, sessions, stocked_out, days, rng))
        del sessions
        write("events", events_frame(config, parts))
        del parts

        step(5)
        campaigns = plan_campaigns(config, sizes["campaigns"], catalogue, fx, n_days, rngs["campaigns"])
        auction_log = simulate_auctions(
            config, campaigns, catalogue, users, demands, traffic, discount, fx, days, rngs["auctions"]
        )
        write("campaigns", auction_log.campaigns)
        write("auctions", auction_log.auctions)
        truth.write_parquet(truth_dir / truth.AUCTIONS, auction_log.truth)
        del auction_log

        step(6)
        market_ids = [market.market_id for market in config.markets]
        truth.write_json(
            truth_dir / truth.META,
            {
                "seed": seed,
                "scale": scale,
                "start_date": config.start_date,
                "end_date": config.end_date,
                "markets": market_ids,
                "sizes": sizes,
                "raw_rows": rows,
                "config": config.model_dump(mode="json"),
            },
        )
        _write_choice_model(truth_dir, config, catalogue, demands, season_amplitude, season_peak)
        _write_population(truth_dir, market_ids, users, catalogue, days)
        _write_traffic(truth_dir, market_ids, traffic, demands, days)
        _write_dirt(truth_dir, dirt.counts)
        bar.update(task, completed=len(STEPS))
    return GenerationSummary(
        rows=rows, seconds=time.perf_counter() - started, dirty_rows=dirt.counts, sizes=sizes
    )


def _clear_demand_truth(truth_dir: Path) -> None:
    # a smaller config must not leave an old market's demand behind
    for path in (truth_dir / truth.DEMAND_DIR).glob("*.parquet"):
        path.unlink()


def _listing_grid(config: MarketplaceConfig, catalogue: Catalogue) -> pl.DataFrame:
    n_products, n_markets = catalogue.listed.shape
    product = np.repeat(np.arange(n_products), n_markets)
    market = np.tile(np.arange(n_markets), n_products)
    return pl.DataFrame(
        {
            "product_id": product_ids(product),
            "market_id": pl.Series([m.market_id for m in config.markets]).gather(market),
            "currency": pl.Series([m.currency for m in config.markets]).gather(market),
            "listed": catalogue.listed.ravel(),
        }
    )


def _write_choice_model(
    truth_dir: Path,
    config: MarketplaceConfig,
    catalogue: Catalogue,
    demands: list[MarketDemand],
    season_amplitude: np.ndarray,
    season_peak: np.ndarray,
) -> None:
    truth.write_json(
        truth_dir / truth.CHOICE_MODEL,
        {
            "formula": "P(p|u,d) = exp(a[u,p] + b[p,d]) / "
            "(exp(outside_utility[m]) + sum_q exp(a[u,q] + b[q,d])); see features/simulator/demand.py",
            "categories": catalogue.categories,
            "category_seasonality": {
                name: {"amplitude": float(amplitude), "peak_day_of_year": float(peak)}
                for name, amplitude, peak in zip(
                    catalogue.categories, season_amplitude, season_peak, strict=True
                )
            },
            "price_sensitivity": {m.market_id: m.price_sensitivity for m in config.markets},
            "outside_utility": {
                config.markets[demand.market].market_id: float(np.log(demand.outside_weight))
                for demand in demands
            },
            "promo_badge": config.choice.promo_badge,
            "extra_units_mean": config.choice.extra_units_mean,
            "latent_dim": config.population.latent_dim,
        },
    )


def _write_population(
    truth_dir: Path, market_ids: list[str], users: Users, catalogue: Catalogue, days: np.ndarray
) -> None:
    def first_day(day_index: np.ndarray) -> pl.Series:
        return pl.Series(days[np.minimum(day_index, len(days) - 1)]).cast(pl.Date)

    truth.write_parquet(
        truth_dir / truth.USERS,
        pl.DataFrame(
            {
                "user_id": user_ids(np.arange(users.count)),
                "market_id": pl.Series(market_ids).gather(users.market),
                "activity": users.activity,
                "price_preference": users.price_preference,
                "active_from": first_day(users.active_from),
                "latent": users.latent,
                "category_affinity": users.category_affinity,
            }
        ),
    )
    products = catalogue.products
    truth.write_parquet(
        truth_dir / truth.PRODUCTS,
        pl.DataFrame(
            {
                "product_id": product_ids(np.arange(products.count)),
                "category": pl.Series(catalogue.categories).gather(products.category),
                "brand": pl.Series(catalogue.brands).gather(products.brand),
                "base_price_usd": products.base_price_usd,
                "price_tier": products.price_tier,
                "popularity": products.popularity,
                "trend": products.trend,
                "live_from": first_day(products.live_from),
                "latent": products.latent,
            }
        ),
    )


def _write_traffic(
    truth_dir: Path, market_ids: list[str], traffic: Traffic, demands: list[MarketDemand], days: np.ndarray
) -> None:
    n_markets, n_days = traffic.multiplier.shape
    truth.write_parquet(
        truth_dir / truth.TRAFFIC,
        pl.DataFrame(
            {
                "date": pl.Series(np.tile(days, n_markets)).cast(pl.Date),
                "market_id": pl.Series(np.repeat(market_ids, n_days)),
                "traffic_multiplier": traffic.multiplier.ravel(),
                "expected_sessions": np.concatenate([demand.expected_sessions for demand in demands]),
                "shopping_event": traffic.shopping_event.ravel(),
                "public_holiday": traffic.public_holiday.ravel(),
            }
        ),
    )
    truth.write_parquet(truth_dir / truth.CALENDAR, traffic.calendar)


def _write_dirt(truth_dir: Path, counts: dict[str, dict[str, int]]) -> None:
    truth.write_json(
        truth_dir / truth.DIRT,
        {
            "injected": counts,
            "quarantine_reasons": {
                table: {quarantine_reason(table, kind): count for kind, count in kinds.items()}
                for table, kinds in counts.items()
            },
            "kinds_by_table": {table: list(kinds) for table, kinds in KINDS_BY_TABLE.items()},
        },
    )
