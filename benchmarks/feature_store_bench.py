"""Time the feature pipeline on a realistic-size fake marketplace: build, apply, materialize, and
a point-in-time training set.

    python -m benchmarks.feature_store_bench --data-dir /tmp/tradewind-bench --users 5000 --days 730 \
        [--json stages.json]

Each stage is timed once (its row says n = 1 run: one timing has no interval); then
`--online-requests` single-row online lookups are timed one by one, and their median gets a seeded
bootstrap 95% interval over the requests.

The fake data only has to be the right size and shape for the feature code (skewed activity,
several currencies and time zones, promotions, auctions); the simulator in `features.simulator`
is the realistic one.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from configs.families import RECOMMENDER
from configs.settings import Settings
from features.contract import TABLES
from features.tables import write_partition
from training.evaluation.intervals import bootstrap

FAKE_MARKETS = (
    # market_id, currency, time zone, share of users, local units per USD
    ("US", "USD", "America/New_York", 0.40, 1.0),
    ("DE", "EUR", "Europe/Berlin", 0.25, 0.92),
    ("GB", "GBP", "Europe/London", 0.15, 0.79),
    ("JP", "JPY", "Asia/Tokyo", 0.12, 150.0),
    ("IN", "INR", "Asia/Kolkata", 0.08, 83.0),
)
CATEGORIES = tuple(f"cat{index:02d}" for index in range(12))
EVENT_TYPES = np.array(["view", "add_to_cart", "purchase"])
CHANNELS = np.array(["web", "app", "marketplace_feed", "email", "ads"])


def _utc_timestamps(start: datetime, seconds: np.ndarray) -> pl.Series:
    microseconds = int(start.timestamp()) * 1_000_000 + seconds.astype(np.int64) * 1_000_000
    return pl.Series(microseconds).cast(pl.Datetime("us", "UTC"))


def fake_contract_tables(
    users: int = 5000,
    products: int = 2000,
    days: int = 730,
    events_per_user_day: float = 1.0,
    campaigns: int = 100,
    auctions_per_campaign_day: float = 30.0,
    start: date = date(2024, 1, 1),
    seed: int = 0,
) -> dict[str, pl.DataFrame]:
    """Contract tables for a marketplace of the given size, as polars frames."""
    rng = np.random.default_rng(seed)
    start_ts = datetime.combine(start, datetime.min.time(), UTC)
    market_ids = [market[0] for market in FAKE_MARKETS]
    currency_of = {market[0]: market[1] for market in FAKE_MARKETS}

    markets = pl.DataFrame(
        {
            "market_id": market_ids,
            "name": market_ids,
            "country": market_ids,
            "currency": [market[1] for market in FAKE_MARKETS],
            "timezone": [market[2] for market in FAKE_MARKETS],
            "language": ["en"] * len(FAKE_MARKETS),
        }
    )
    dates = [start + timedelta(days=offset) for offset in range(days + 1)]
    fx_rates = pl.concat(
        pl.DataFrame(
            {
                "date": dates,
                "currency": currency,
                "usd_per_unit": (1 / per_usd) * np.exp(np.cumsum(rng.normal(0, 0.004, len(dates)))),
            }
        )
        for _, currency, _, _, per_usd in FAKE_MARKETS
    )

    user_market = rng.choice(market_ids, users, p=[market[3] for market in FAKE_MARKETS])
    user_table = pl.DataFrame(
        {
            "user_id": [f"u{index}" for index in range(users)],
            "market_id": user_market,
            "signup_ts": [
                start_ts + timedelta(seconds=int(s)) for s in rng.integers(0, 86400 * days // 2, users)
            ],
        }
    )

    base_usd = rng.lognormal(3.0, 0.8, products).round(2)
    product_table = pl.DataFrame(
        {
            "product_id": [f"p{index}" for index in range(products)],
            "title": [f"Product {index}" for index in range(products)],
            "category": rng.choice(CATEGORIES, products),
            "brand": [f"brand{b}" for b in rng.integers(0, 200, products)],
            "price": base_usd,
            "currency": "USD",
            "created_ts": [start_ts - timedelta(days=30)] * products,
        }
    )
    listing_rows = []
    for market_id, currency, _, _, per_usd in FAKE_MARKETS:
        listed = np.flatnonzero(rng.random(products) < 0.7)
        listing_rows.append(
            pl.DataFrame(
                {
                    "product_id": [f"p{index}" for index in listed],
                    "market_id": market_id,
                    "price": (base_usd[listed] * per_usd).round(2),
                    "currency": currency,
                }
            )
        )
    listings = pl.concat(listing_rows)

    promo_count = products * 2
    promo_listing = listings.sample(promo_count, with_replacement=True, seed=seed)
    promo_start = rng.integers(0, days, promo_count)
    promotions = (
        promo_listing.select("product_id", "market_id")
        .with_columns(
            pl.Series("start_date", [start + timedelta(days=int(offset)) for offset in promo_start]),
            pl.Series("length", rng.integers(3, 15, promo_count)),
            pl.Series("discount", rng.uniform(0.05, 0.4, promo_count).round(2)),
        )
        .with_columns((pl.col("start_date") + pl.duration(days=pl.col("length") - 1)).alias("end_date"))
        .unique(["product_id", "market_id", "start_date"])
        .select("product_id", "market_id", "start_date", "end_date", "discount")
    )

    # Skewed activity: a few heavy shoppers, many occasional ones.
    activity = rng.gamma(0.6, 1 / 0.6, users)
    event_count = int(users * days * events_per_user_day)
    event_user = rng.choice(users, event_count, p=activity / activity.sum())
    event_offset = rng.integers(0, 86400 * days, event_count)
    event_market = user_market[event_user]
    event_product = np.empty(event_count, dtype=np.int64)
    event_price = np.empty(event_count)
    for market_id, *_ in FAKE_MARKETS:
        in_market = np.flatnonzero(event_market == market_id)
        offered = listings.filter(pl.col("market_id") == market_id)
        popularity = 1 / np.arange(1, offered.height + 1) ** 0.8
        pick = rng.choice(offered.height, in_market.size, p=popularity / popularity.sum())
        event_product[in_market] = np.array([int(p[1:]) for p in offered["product_id"]])[pick]
        event_price[in_market] = offered["price"].to_numpy()[pick]
    event_type = EVENT_TYPES[rng.choice(3, event_count, p=[0.86, 0.09, 0.05])]
    events = pl.DataFrame(
        {
            "event_id": np.arange(event_count).astype(str),
            "event_ts": _utc_timestamps(start_ts, event_offset),
            "user_id": "u" + pl.Series(event_user).cast(pl.String),
            "product_id": "p" + pl.Series(event_product).cast(pl.String),
            "market_id": event_market,
            "event_type": event_type,
            "quantity": rng.integers(1, 4, event_count),
            "price": event_price,
            "currency": event_market,  # market ids, replaced by their currency below
            "channel": CHANNELS[rng.integers(0, len(CHANNELS), event_count)],
        }
    )
    events = events.with_columns(pl.col("currency").replace_strict(currency_of))

    campaign_market = rng.choice(market_ids, campaigns)
    campaign_table = pl.DataFrame(
        {
            "campaign_id": [f"c{index}" for index in range(campaigns)],
            "advertiser_id": [f"a{index % 40}" for index in range(campaigns)],
            "market_id": campaign_market,
            "product_id": [f"p{p}" for p in rng.integers(0, products, campaigns)],
            "objective": rng.choice(["clicks", "value"], campaigns),
            "daily_budget": rng.uniform(50, 500, campaigns).round(2),
            "currency": [currency_of[m] for m in campaign_market],
            "start_date": [start] * campaigns,
            "end_date": [None] * campaigns,
        }
    )
    auction_count = int(campaigns * days * auctions_per_campaign_day)
    auction_campaign = rng.integers(0, campaigns, auction_count)
    market_price = rng.lognormal(0.5, 0.6, auction_count)
    bid_price = rng.lognormal(0.5, 0.5, auction_count)
    won = bid_price > market_price
    click = won & (rng.random(auction_count) < 0.05)
    conversion = click & (rng.random(auction_count) < 0.1)
    auctions = pl.DataFrame(
        {
            "auction_id": np.arange(auction_count).astype(str),
            "request_ts": _utc_timestamps(start_ts, rng.integers(0, 86400 * days, auction_count)),
            "campaign_id": "c" + pl.Series(auction_campaign).cast(pl.String),
            "market_id": campaign_market[auction_campaign],
            "exchange": rng.choice(["x1", "x2", "x3"], auction_count),
            "slot_id": "s" + pl.Series(rng.integers(0, 50, auction_count)).cast(pl.String),
            "slot_width": 300,
            "slot_height": 250,
            "region": "r1",
            "user_id": None,
            "floor_price": 0.1,
            "market_price": market_price,
            "bid_price": bid_price,
            "won": won,
            "click": click,
            "conversion": conversion,
            "value": np.where(conversion, rng.uniform(5, 50, auction_count), 0.0),
            "currency": campaign_market[auction_campaign],  # replaced by the currency below
        }
    ).with_columns(pl.col("currency").replace_strict(currency_of))

    tables = {
        "markets": markets,
        "fx_rates": fx_rates,
        "users": user_table,
        "products": product_table,
        "listings": listings,
        "promotions": promotions,
        "events": events,
        "campaigns": campaign_table,
        "auctions": auctions,
    }
    return {
        name: frame.select(pl.col(c).cast(t) for c, t in TABLES[name].polars_schema.items())
        for name, frame in tables.items()
    }


def write_fake_contract(contract_dir: Path, tables: dict[str, pl.DataFrame]) -> None:
    for name, frame in tables.items():
        write_partition(frame, contract_dir, name, "fake")


class StageTimes:
    """The benchmark's rows: one per stage. A stage run once is one timing (n = 1 run, no interval
    can be drawn from it); the online lookups are timed one request at a time, so their median has a
    bootstrap interval over the requests."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def once(self, label: str, started: float) -> float:
        elapsed = time.perf_counter() - started
        print(f"{label}: {elapsed:.1f} s", flush=True)
        self.rows.append(
            {
                "stage": label,
                "seconds": elapsed,
                "n": 1,
                "n_of": "runs",
                "ci95_of": "seconds",
                "ci95_low": None,
                "ci95_high": None,
            }
        )
        return elapsed

    def per_request(self, label: str, seconds: Sequence[float]) -> None:
        milliseconds = np.asarray(seconds) * 1000.0
        interval = bootstrap(lambda draws: np.median(milliseconds[draws], axis=1), len(milliseconds))
        median = float(np.median(milliseconds))
        print(
            f"{label}: median {median:.2f} ms, 95% CI [{interval.low:.2f}, {interval.high:.2f}] "
            f"over {interval.n} requests",
            flush=True,
        )
        self.rows.append(
            {
                "stage": label,
                "seconds": float(np.sum(seconds)),
                "median_ms": median,
                **interval.as_dict(),
                "n_of": "requests",
                "ci95_of": "median_ms",
            }
        )

    def table(self) -> str:
        lines = [f"{'stage':<72} {'seconds':>8} {'n':>5}  {'n of':<8} 95% CI"]
        for row in self.rows:
            interval = (
                "-"
                if row["ci95_low"] is None
                else f"[{row['ci95_low']:.2f}, {row['ci95_high']:.2f}] ({row['ci95_of']})"
            )
            lines.append(
                f"{row['stage'][:72]:<72} {row['seconds']:>8.2f} {row['n']:>5}  {row['n_of']:<8} {interval}"
            )
        return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--campaigns", type=int, default=100)
    parser.add_argument("--events-per-user-day", type=float, default=1.0)
    parser.add_argument("--training-rows", type=int, default=200_000)
    parser.add_argument(
        "--online-requests", type=int, default=200, help="single-user online lookups timed one by one"
    )
    parser.add_argument("--skip-generate", action="store_true", help="reuse the contract tables there")
    parser.add_argument("--skip-build", action="store_true", help="reuse the feature tables there")
    parser.add_argument("--json", type=Path, help="write the stage rows as a JSON list here")
    args = parser.parse_args(argv)

    from features.store import (
        apply_definitions,
        feature_store,
        historical_features,
        materialize,
        online_features,
    )
    from features.transforms import build_feature_tables

    settings = Settings(data_dir=args.data_dir)
    times = StageTimes()
    if not args.skip_generate:
        started = time.perf_counter()
        tables = fake_contract_tables(
            args.users, args.products, args.days, args.events_per_user_day, campaigns=args.campaigns
        )
        write_fake_contract(settings.contract_dir, tables)
        times.once(
            f"generate ({tables['events'].height:,} events, {tables['auctions'].height:,} auctions)", started
        )

    if not args.skip_build:
        started = time.perf_counter()
        rows = build_feature_tables(settings, show_progress=False)
        times.once("build feature tables", started)
        for name, count in rows.items():
            print(f"  {name}: {count:,} rows", flush=True)

    started = time.perf_counter()
    apply_definitions(settings)
    times.once("feast apply", started)

    started = time.perf_counter()
    print(materialize(settings, incremental=False), flush=True)
    times.once("materialize (full)", started)

    started = time.perf_counter()
    print(materialize(settings), flush=True)
    times.once("materialize (incremental, nothing new)", started)

    events = pl.read_parquet(settings.contract_dir / "events" / "fake.parquet")
    products = pl.read_parquet(settings.contract_dir / "products" / "fake.parquet")
    purchases = events.filter(pl.col("event_type") == "purchase")
    labels = (
        purchases.sample(min(args.training_rows, purchases.height), seed=1)
        .join(products.select("product_id", "category"), on="product_id")
        .select("user_id", "product_id", "market_id", "category", pl.col("event_ts").alias("event_timestamp"))
    )
    started = time.perf_counter()
    training = historical_features(settings, labels, RECOMMENDER.feature_service)
    times.once(
        f"historical_features recommendation ({training.height:,} rows x {training.width} columns)", started
    )

    started = time.perf_counter()
    online = online_features(
        settings, RECOMMENDER.feature_service, labels.head(100).drop("event_timestamp").to_dicts()
    )
    times.once(f"online_features recommendation (100 rows, {len(online)} columns)", started)

    # one request at a time, as serving asks: the store and service looked up once
    store = feature_store(settings)
    service = store.get_feature_service(RECOMMENDER.feature_service)
    requests = labels.drop("event_timestamp").to_dicts()
    latencies = []
    for index in range(args.online_requests):
        started = time.perf_counter()
        online_features(settings, service, [requests[index % len(requests)]], store=store)
        latencies.append(time.perf_counter() - started)
    if latencies:
        times.per_request("online_features recommendation, one row per request", latencies)

    print()
    print(times.table())
    if args.json:
        args.json.write_text(json.dumps(times.rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
