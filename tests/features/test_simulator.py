"""The synthetic marketplace: contract-exact output, determinism, and a world that obeys its truth."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml

from configs import ConfigError, config_path, validate_config
from configs.settings import Settings
from features.contract import TABLES
from features.ingest import ingest
from features.simulator import MarketplaceConfig, generate_marketplace, load_marketplace_config
from features.simulator.generate import scaled_sizes
from features.simulator.truth import (
    expected_quarantine,
    injected_dirt,
    load_choice_model,
    true_auction_probabilities,
    true_mean_demand,
    true_purchase_probabilities,
    true_traffic,
)
from features.tables import read_table

RAW_TABLES = (
    "markets",
    "fx_rates",
    "users",
    "products",
    "listings",
    "promotions",
    "events",
    "campaigns",
    "auctions",
)


def tiny_config(**overrides: Any) -> MarketplaceConfig:
    """The shipped config shrunk to three markets, a few hundred users and one autumn quarter."""
    data = yaml.safe_load(config_path("marketplace").read_text())
    data["start_date"], data["end_date"] = date(2025, 10, 1), date(2025, 12, 31)
    data["markets"] = [market for market in data["markets"] if market["market_id"] in ("US", "DE", "IN")]
    data["population"].update(users=400, products=60, brands=8, categories=4)
    data["ads"].update(campaigns=4, requests_per_campaign_day=60)
    data["dirt"]["fraction"] = 0.0
    for section, values in overrides.items():
        data[section] = {**data[section], **values} if isinstance(values, dict) else values
    return validate_config(data, MarketplaceConfig, "tiny test config")


def _generate(folder: Path, config: MarketplaceConfig, seed: int | None = None) -> tuple[Path, Path]:
    raw, truth = folder / "raw", folder / "truth"
    generate_marketplace(config, raw, truth, seed=seed, progress=False)
    return raw, truth


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _generate(tmp_path_factory.mktemp("world"), tiny_config())


@pytest.fixture(scope="module")
def purchases_by_local_day(world: tuple[Path, Path]) -> pl.DataFrame:
    """Purchases per market-local date, market and product, joined onto the demand truth."""
    raw, truth = world
    timezones = dict(read_table(raw, "markets").select("market_id", "timezone").iter_rows())
    purchases = read_table(raw, "events").filter(pl.col("event_type") == "purchase")
    local = pl.concat(
        group.with_columns(
            pl.col("event_ts").dt.convert_time_zone(timezones[market_id]).dt.date().alias("date")
        ).select("date", "market_id", "product_id", "price")
        for (market_id,), group in purchases.group_by("market_id")
    )
    counts = local.group_by("date", "market_id", "product_id").agg(
        pl.len().alias("purchases"),
        pl.col("price").min().alias("paid_min"),
        pl.col("price").max().alias("paid_max"),
    )
    return (
        true_mean_demand(truth)
        .join(counts, on=["date", "market_id", "product_id"], how="left")
        .with_columns(pl.col("purchases").fill_null(0))
    )


def test_raw_tables_have_exactly_the_contract_columns_and_types(world: tuple[Path, Path]) -> None:
    raw, _ = world
    for table in RAW_TABLES:
        frame = read_table(raw, table)
        assert frame.schema == pl.Schema(TABLES[table].polars_schema), table
        assert frame.height > 0, table
        key = frame.select(TABLES[table].key)
        assert key.is_duplicated().sum() == 0, f"{table} repeats a key"
    events = read_table(raw, "events")
    assert events.get_column("event_ts").max() < datetime(2026, 1, 2, tzinfo=UTC)
    assert set(events.get_column("event_type")) == {"view", "add_to_cart", "purchase"}


def test_same_seed_same_output_and_another_seed_differs(world: tuple[Path, Path], tmp_path: Path) -> None:
    raw, truth = world
    again_raw, again_truth = _generate(tmp_path / "again", tiny_config())
    for table in RAW_TABLES:
        assert read_table(raw, table).equals(read_table(again_raw, table)), table
    assert true_mean_demand(truth).equals(true_mean_demand(again_truth))
    assert true_auction_probabilities(truth).equals(true_auction_probabilities(again_truth))
    other_raw, _ = _generate(tmp_path / "other", tiny_config(), seed=12345)
    assert not read_table(raw, "events").equals(read_table(other_raw, "events"))


def test_demand_rises_on_shopping_events_and_follows_the_week(world: tuple[Path, Path]) -> None:
    _, truth = world
    daily = (
        true_mean_demand(truth)
        .group_by("date", "market_id")
        .agg(pl.col("mean_demand").sum())
        .join(true_traffic(truth).select("date", "market_id", "shopping_event"), on=["date", "market_id"])
    )
    by_kind = dict(daily.group_by("shopping_event").agg(pl.col("mean_demand").mean()).iter_rows())
    assert by_kind[True] > 1.3 * by_kind[False]
    us = daily.filter(pl.col("market_id") == "US")
    black_friday = us.filter(pl.col("date") == date(2025, 11, 28)).get_column("mean_demand").item()
    assert black_friday > 2 * us.get_column("mean_demand").median()
    ordinary = daily.filter(~pl.col("shopping_event"))
    weekday_mean = ordinary.group_by(pl.col("date").dt.weekday()).agg(pl.col("mean_demand").mean())
    # Sunday is busiest and Saturday quietest in the default weekly pattern
    levels = dict(weekday_mean.iter_rows())
    assert levels[7] > levels[6] * 1.1


def test_no_purchases_on_stock_out_days(purchases_by_local_day: pl.DataFrame) -> None:
    stocked_out = purchases_by_local_day.filter(pl.col("stock_out"))
    assert stocked_out.height > 20  # the tiny world does have stock-outs
    assert stocked_out.get_column("purchases").sum() == 0
    assert purchases_by_local_day.filter(~pl.col("stock_out")).get_column("purchases").sum() > 500


def test_paid_prices_are_the_true_shelf_prices(purchases_by_local_day: pl.DataFrame) -> None:
    bought = purchases_by_local_day.filter(pl.col("purchases") > 0)
    assert (bought.get_column("paid_min") == bought.get_column("price")).all()
    assert (bought.get_column("paid_max") == bought.get_column("price")).all()
    assert bought.filter(pl.col("discount") > 0).height > 0


def test_purchase_counts_follow_the_choice_model(purchases_by_local_day: pl.DataFrame) -> None:
    per_product = (
        purchases_by_local_day.filter(~pl.col("stock_out"))
        .group_by("market_id", "product_id")
        .agg(pl.col("purchases").sum(), pl.col("mean_purchases").sum().alias("expected"))
        .filter(pl.col("expected") > 0.5)
    )
    observed = per_product.get_column("purchases").to_numpy()
    expected = per_product.get_column("expected").to_numpy()
    # Poisson counts: the total within 4 standard deviations, Pearson chi-square near its degrees of freedom
    assert abs(observed.sum() - expected.sum()) < 4 * np.sqrt(expected.sum())
    chi_square = (np.square(observed - expected) / expected).sum()
    assert 0.6 * len(expected) < chi_square < 1.5 * len(expected)
    assert np.corrcoef(observed, expected)[0, 1] > 0.9


def test_true_purchase_probabilities_reproduce_the_demand_truth(world: tuple[Path, Path]) -> None:
    _, truth = world
    on, market_id = date(2025, 11, 28), "DE"
    model = load_choice_model(truth)
    users = pl.read_parquet(truth / "users.parquet").filter(
        pl.col("market_id") == market_id, pl.col("active_from") <= on
    )
    probabilities = true_purchase_probabilities(truth, users.get_column("user_id").to_list(), market_id, on)
    assert probabilities.shape == (users.height, len(model.product_ids))
    assert np.all(probabilities >= 0) and np.all(probabilities.sum(axis=1) < 1)
    traffic = true_traffic(truth).filter(pl.col("date") == on, pl.col("market_id") == market_id)
    expected = (
        traffic.get_column("traffic_multiplier").item()
        * users.get_column("activity").to_numpy()
        @ probabilities
    )
    demand = true_mean_demand(truth).filter(pl.col("date") == on, pl.col("market_id") == market_id)
    columns = [model.product_ids.index(product_id) for product_id in demand.get_column("product_id")]
    np.testing.assert_allclose(expected[columns], demand.get_column("mean_purchases").to_numpy(), rtol=1e-6)
    unlisted = np.setdiff1d(np.arange(len(model.product_ids)), columns)
    assert len(unlisted) > 0 and np.all(probabilities[:, unlisted] == 0)


def test_auctions_obey_the_auction_rules(world: tuple[Path, Path]) -> None:
    raw, truth = world
    auctions = read_table(raw, "auctions")
    won = auctions.filter(pl.col("won"))
    assert won.height > 0 and won.height < auctions.height
    assert (won.get_column("bid_price") >= won.get_column("market_price")).all()
    assert (won.get_column("bid_price") >= won.get_column("floor_price")).all()
    lost = auctions.filter(~pl.col("won"))
    beaten = (
        (lost.get_column("bid_price") < lost.get_column("market_price"))
        | (lost.get_column("bid_price") < lost.get_column("floor_price"))
        | (lost.get_column("bid_price") == 0)
    )
    assert beaten.all()
    assert not auctions.filter(pl.col("click") & ~pl.col("won")).height
    assert not auctions.filter(pl.col("conversion") & ~pl.col("click")).height
    assert (auctions.filter(~pl.col("conversion")).get_column("value") == 0).all()
    probabilities = true_auction_probabilities(truth)
    assert probabilities.get_column("auction_id").equals(auctions.get_column("auction_id"))
    assert probabilities.get_column("p_click").is_between(0, 1).all()


def test_market_price_varies_by_local_hour(world: tuple[Path, Path]) -> None:
    raw, _ = world
    us = read_table(raw, "auctions").filter(pl.col("market_id") == "US")
    hourly = us.group_by(
        pl.col("request_ts").dt.convert_time_zone("America/New_York").dt.hour().alias("hour")
    ).agg(pl.col("market_price").log().mean().alias("log_price"), pl.len())
    by_hour = dict(hourly.select("hour", "log_price").iter_rows())
    # iPinYou: prices peak around noon and dip in the small hours
    assert by_hour[12] - by_hour[2] > 0.3
    counts = dict(hourly.select("hour", "len").iter_rows())
    assert counts[15] > 2 * counts[5]  # and so does traffic


def test_dirt_is_counted_and_quarantined_as_recorded(tmp_path: Path) -> None:
    raw, truth = _generate(tmp_path, tiny_config(dirt={"fraction": 0.01}))
    injected = injected_dirt(truth)
    assert set(injected) == {"users", "products", "listings", "promotions", "events", "auctions"}
    events = read_table(raw, "events")
    assert (
        events.filter(pl.col("currency").is_in(["ZZZ", "XTS"])).height
        == injected["events"]["unknown_currency"]
    )
    assert events.filter(pl.col("price") <= 0).height == injected["events"]["non_positive_price"]
    assert events.is_duplicated().sum() == 2 * injected["events"]["duplicate"]
    report = ingest(
        Settings(data_dir=tmp_path / "data"), raw, now=datetime(2026, 11, 23, tzinfo=UTC), progress=False
    )
    quarantined = {result.table: result.reasons for result in report.results if result.reasons}
    assert quarantined == expected_quarantine(truth)


def test_config_is_strict_and_refuses_a_future_end() -> None:
    data = yaml.safe_load(config_path("marketplace").read_text())
    assert load_marketplace_config().seed == data["seed"]
    with pytest.raises(ConfigError, match=r"unknown key 'population\.shoppers'"):
        validate_config({**data, "population": {**data["population"], "shoppers": 3}}, MarketplaceConfig, "x")
    reversed_range = {**data["promotions"], "event_discount": [0.4, 0.1]}
    with pytest.raises(ConfigError, match=r"promotions\.event_discount.*\[low, high\]"):
        validate_config({**data, "promotions": reversed_range}, MarketplaceConfig, "x")
    with pytest.raises(ConfigError, match="end_date"):
        validate_config({**data, "end_date": date(2099, 1, 1)}, MarketplaceConfig, "x")
    # a market outside DEFAULT_MARKETS must say who it is, and its currency needs a starting rate
    with pytest.raises(ConfigError, match=r"missing key 'markets\.0\.currency'"):
        validate_config(
            {**data, "markets": [{**data["markets"][0], "market_id": "CH"}]}, MarketplaceConfig, "x"
        )
    swiss = {"market_id": "CH", "name": "Switzerland", "country": "CH", "currency": "CHF",
             "timezone": "Europe/Zurich", "language": "de-CH"}  # fmt: skip
    with pytest.raises(ConfigError, match=r"fx\.currencies has no starting rate for \['CHF'\]"):
        validate_config({**data, "markets": [{**data["markets"][0], **swiss}]}, MarketplaceConfig, "x")


def test_scale_multiplies_population_not_days() -> None:
    config = load_marketplace_config()
    base, doubled = scaled_sizes(config, 1.0), scaled_sizes(config, 2.0)
    assert doubled["users"] == 2 * base["users"] and doubled["products"] == 2 * base["products"]
    assert doubled["campaigns"] == 2 * base["campaigns"] and doubled["days"] == base["days"] == 730
