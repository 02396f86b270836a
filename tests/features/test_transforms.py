"""Feature transformations on tiny hand-made contract tables, against hand-computed values."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, date, datetime

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from configs.settings import Settings
from features.transforms import FEATURE_TABLES, build_feature_tables, feature_table_path
from features.transforms.specs import CREATED_TIMESTAMP
from features.transforms.windows import KEY, KeyCodes, key_parts

AS_OF = datetime(2024, 1, 20, tzinfo=UTC)
ContractRows = dict[str, list[dict]]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _event(
    event_id: str, ts: datetime, user: str, product: str, market: str, kind: str, **extra: object
) -> dict:
    currency = {"US": "USD", "JP": "JPY"}[market]
    return {
        "event_id": event_id,
        "event_ts": ts,
        "user_id": user,
        "product_id": product,
        "market_id": market,
        "event_type": kind,
        "quantity": extra.get("quantity", 1),
        "price": extra.get("price"),
        "currency": currency,
        "channel": "web",
    }


def _auction(auction_id: str, ts: datetime, won: bool, market_price: float, click: bool = False) -> dict:
    return {
        "auction_id": auction_id,
        "request_ts": ts,
        "campaign_id": "c1",
        "market_id": "US",
        "exchange": "x1",
        "slot_id": "s1",
        "slot_width": 300,
        "slot_height": 250,
        "region": "r1",
        "floor_price": 0.0,
        "market_price": market_price,
        "bid_price": 3.0,
        "won": won,
        "click": click,
        "conversion": False,
        "value": 0.0,
        "currency": "USD",
    }


TINY_MARKETPLACE: ContractRows = {
    "markets": [
        {
            "market_id": "US",
            "name": "US",
            "country": "US",
            "currency": "USD",
            "timezone": "America/New_York",
            "language": "en-US",
        },
        {
            "market_id": "JP",
            "name": "JP",
            "country": "JP",
            "currency": "JPY",
            "timezone": "Asia/Tokyo",
            "language": "ja-JP",
        },
    ],
    "fx_rates": [
        {"date": date(2024, 1, 1), "currency": "USD", "usd_per_unit": 1.0},
        {"date": date(2024, 1, 1), "currency": "JPY", "usd_per_unit": 0.01},
        # the yen doubles on 10 January; days without a rate keep the last one
        {"date": date(2024, 1, 10), "currency": "JPY", "usd_per_unit": 0.02},
    ],
    "users": [
        {"user_id": "u1", "market_id": "US", "signup_ts": utc(2023, 12, 1)},
        {"user_id": "u2", "market_id": "JP", "signup_ts": utc(2023, 12, 1)},
    ],
    "products": [
        {
            "product_id": "p1",
            "category": "shoes",
            "brand": "b1",
            "price": 100.0,
            "currency": "USD",
            "created_ts": utc(2023, 12, 1),
        },
        {
            "product_id": "p2",
            "category": "books",
            "brand": "b2",
            "price": 20.0,
            "currency": "USD",
            "created_ts": utc(2023, 12, 1),
        },
    ],
    "listings": [
        {"product_id": "p1", "market_id": "US", "price": 100.0, "currency": "USD"},
        {"product_id": "p2", "market_id": "US", "price": 20.0, "currency": "USD"},
        {"product_id": "p1", "market_id": "JP", "price": 10000.0, "currency": "JPY"},
    ],
    "promotions": [
        {
            "product_id": "p1",
            "market_id": "US",
            "start_date": date(2024, 1, 5),
            "end_date": date(2024, 1, 6),
            "discount": 0.25,
        },
    ],
    "events": [
        _event("e1", utc(2024, 1, 1, 10), "u1", "p1", "US", "view"),
        _event("e2", utc(2024, 1, 2, 10), "u1", "p1", "US", "purchase", quantity=2, price=150.0),
        # 23:30 UTC is still 3 January in New York
        _event("e3", utc(2024, 1, 3, 23, 30), "u1", "p2", "US", "view"),
        _event("e4", utc(2024, 1, 9, 12), "u1", "p2", "US", "purchase", price=20.0),
        # 16:00 UTC on 1 January is 01:00 on 2 January in Tokyo
        _event("e5", utc(2024, 1, 1, 16), "u2", "p1", "JP", "view"),
    ],
    "campaigns": [
        {
            "campaign_id": "c1",
            "advertiser_id": "a1",
            "market_id": "US",
            "objective": "clicks",
            "daily_budget": 0.012,
            "currency": "USD",
            "start_date": date(2024, 1, 1),
        },
    ],
    "auctions": [
        _auction("a1", utc(2024, 1, 5, 15), won=True, market_price=2.0, click=True),
        _auction("a2", utc(2024, 1, 5, 16), won=True, market_price=4.0),
        _auction("a3", utc(2024, 1, 5, 17), won=False, market_price=5.0),
        _auction("a4", utc(2024, 1, 5, 18), won=False, market_price=1.0),
    ],
}


@pytest.fixture
def tiny_features(contract_data_dir: Callable[[ContractRows], Settings]) -> dict[str, pl.DataFrame]:
    settings = contract_data_dir(TINY_MARKETPLACE)
    rows = build_feature_tables(settings, as_of=AS_OF, show_progress=False)
    tables = {
        name: pl.read_parquet(feature_table_path(settings.feature_dir, name)) for name in FEATURE_TABLES
    }
    assert rows == {name: table.height for name, table in tables.items()}
    return tables


def known_at(table: pl.DataFrame, at: datetime, **keys: str) -> dict:
    """The row a point-in-time join returns at `at`: the latest stamped at or before it."""
    rows = table.filter(pl.col("event_timestamp") <= at, *(pl.col(k) == v for k, v in keys.items()))
    assert rows.height, f"no row for {keys} at {at}"
    return rows.sort("event_timestamp").row(-1, named=True)


def test_every_table_matches_its_spec_and_ends_by_as_of(tiny_features: dict[str, pl.DataFrame]) -> None:
    for name, table in tiny_features.items():
        assert table.schema == pl.Schema(FEATURE_TABLES[name].polars_schema), name
        assert table["event_timestamp"].max() <= AS_OF, name
        assert table.select(
            pl.struct([*FEATURE_TABLES[name].keys, "event_timestamp"]).is_unique().all()
        ).item(), name


def test_user_activity_windows_on_utc_days(tiny_features: dict[str, pl.DataFrame]) -> None:
    users = tiny_features["user_activity"]
    # end of 2 January: the view of the 1st and the purchase of the 2nd (2 x 150 USD)
    day2 = known_at(users, utc(2024, 1, 3), user_id="u1")
    assert day2["event_timestamp"] == utc(2024, 1, 3)
    assert (day2["views_7d"], day2["purchases_7d"], day2["spend_usd_7d"]) == (1, 1, 300.0)
    assert day2["days_since_last_purchase"] == 0
    assert day2["home_market"] == "US"
    assert day2["distinct_categories_30d"] == 1
    # price level: paid 150 where shoes list at a median of 100
    assert day2["price_level_90d"] == pytest.approx(1.5)

    # during 9 January, only the 8 January snapshot is known: no purchase for 6 days
    before_second = known_at(users, utc(2024, 1, 9, 23, 59), user_id="u1")
    assert before_second["days_since_last_purchase"] == 6
    assert (before_second["views_7d"], before_second["purchases_7d"]) == (1, 1)

    # end of 9 January: the 2 January purchase has left the 7-day window (3rd .. 9th)
    day9 = known_at(users, utc(2024, 1, 10), user_id="u1")
    assert (day9["views_7d"], day9["purchases_7d"], day9["spend_usd_7d"]) == (1, 1, 20.0)
    assert (day9["views_30d"], day9["purchases_30d"], day9["spend_usd_30d"]) == (2, 2, 320.0)
    assert day9["distinct_categories_30d"] == 2
    assert day9["price_level_90d"] == pytest.approx((1.5 + 1.0) / 2)


def _row_orders(table: pl.DataFrame) -> list[pl.DataFrame]:
    """The table as written, reversed and shuffled: rows of one timestamp come in no fixed order,
    so a lookup must give the same answer in all of them."""
    shuffled = [table.sample(fraction=1.0, shuffle=True, seed=seed) for seed in range(3)]
    return [table, table.reverse(), *shuffled]


def test_user_category_affinity_is_weekly_with_shares(tiny_features: dict[str, pl.DataFrame]) -> None:
    affinity = tiny_features["user_category_affinity"]
    # Sunday rows, stamped at the following Monday midnight UTC
    assert affinity["event_timestamp"].dt.weekday().unique().to_list() == [1]
    assert affinity["event_timestamp"].dt.hour().unique().to_list() == [0]

    # u1 and u2 both touched shoes: rows are told apart by the whole key, user and category
    for rows in _row_orders(affinity):
        week1 = {
            (row["user_id"], row["category"]): row
            for row in rows.filter(pl.col("event_timestamp") == utc(2024, 1, 8)).to_dicts()
        }
        assert set(week1) == {("u1", "shoes"), ("u1", "books"), ("u2", "shoes")}
        u1_shoes, u1_books, u2_shoes = week1["u1", "shoes"], week1["u1", "books"], week1["u2", "shoes"]
        assert (u1_shoes["interactions_90d"], u1_shoes["purchases_90d"]) == (2, 1)
        assert u1_shoes["interaction_share_90d"] == pytest.approx(2 / 3)
        assert u1_shoes["purchase_share_90d"] == pytest.approx(1.0)
        assert u1_books["interaction_share_90d"] == pytest.approx(1 / 3)
        assert u1_books["purchase_share_90d"] == pytest.approx(0.0)
        # u2's one view: all of u2's interactions, and no purchase to share
        assert (u2_shoes["interactions_90d"], u2_shoes["interaction_share_90d"]) == (1, 1.0)
        assert u2_shoes["purchase_share_90d"] is None

    week2 = known_at(affinity, utc(2024, 1, 15), user_id="u1", category="books")
    assert (week2["interactions_90d"], week2["purchases_90d"]) == (2, 1)
    assert week2["interaction_share_90d"] == pytest.approx(0.5)


def _built_tables(settings: Settings) -> dict[str, pl.DataFrame]:
    """Every feature table of a build, in key and time order, without the build time."""
    build_feature_tables(settings, as_of=AS_OF, show_progress=False)
    return {
        name: pl.read_parquet(feature_table_path(settings.feature_dir, name))
        .drop(CREATED_TIMESTAMP)
        .sort([*spec.keys, "event_timestamp"])
        for name, spec in FEATURE_TABLES.items()
    }


def test_feature_tables_do_not_depend_on_the_order_of_input_rows(
    contract_data_dir: Callable[[ContractRows], Settings],
) -> None:
    """Joins, group-bys and unique return rows in no fixed order; a transform that relies on an
    order it did not sort into gives other values when the contract rows come in another order."""
    expected = _built_tables(contract_data_dir(TINY_MARKETPLACE))
    permutations = [{name: rows[::-1] for name, rows in TINY_MARKETPLACE.items()}]
    for seed in range(3):
        rng = random.Random(seed)
        permutations.append({name: rng.sample(rows, len(rows)) for name, rows in TINY_MARKETPLACE.items()})
    for permuted in permutations:
        tables = _built_tables(contract_data_dir(permuted))
        for name, table in tables.items():
            assert_frame_equal(table, expected[name], check_exact=False)


def test_price_level_compares_with_listings_in_the_category_currency(
    contract_data_dir: Callable[[ContractRows], Settings],
) -> None:
    """US shoes listed once in USD (100) and once in JPY (20000 = 200 USD): a tie, broken by
    currency name, so the median is of the yen listings only, in every build."""
    tables = dict(TINY_MARKETPLACE)
    tables["products"] = [
        *TINY_MARKETPLACE["products"],
        {**TINY_MARKETPLACE["products"][0], "product_id": "p3"},
    ]
    tables["listings"] = [
        *TINY_MARKETPLACE["listings"],
        {"product_id": "p3", "market_id": "US", "price": 20000.0, "currency": "JPY"},
    ]
    for _ in range(3):
        users = _built_tables(contract_data_dir(tables))["user_activity"]
        # paid 150 USD for shoes whose yen listings' median is 200 USD
        assert known_at(users, utc(2024, 1, 3), user_id="u1")["price_level_90d"] == pytest.approx(0.75)


def test_product_market_popularity_uses_local_days_and_target_day_price(
    tiny_features: dict[str, pl.DataFrame],
) -> None:
    popularity = tiny_features["product_market_popularity"]
    # New York's 2 January ends at 05:00 UTC on the 3rd
    day2 = known_at(popularity, utc(2024, 1, 3, 5), product_id="p1", market_id="US")
    assert day2["event_timestamp"] == utc(2024, 1, 3, 5)
    assert (day2["views_7d"], day2["purchases_7d"], day2["units_30d"]) == (1, 1, 2)
    assert day2["conversion_7d"] == pytest.approx(1.0)

    # the row for 4 January describes the 5th, the first promotion day
    before_promo = known_at(popularity, utc(2024, 1, 5, 5), product_id="p1", market_id="US")
    assert before_promo["promo_active"] is True
    assert (before_promo["discount"], before_promo["price_local"], before_promo["price_usd"]) == (
        0.25,
        75.0,
        75.0,
    )
    after_promo = known_at(popularity, utc(2024, 1, 7, 5), product_id="p1", market_id="US")
    assert after_promo["promo_active"] is False
    assert after_promo["price_local"] == 100.0

    # Tokyo: the view at 01:00 local on 2 January; that day ends at 15:00 UTC on the 2nd
    tokyo = popularity.filter(pl.col("product_id") == "p1", pl.col("market_id") == "JP").sort(
        "event_timestamp"
    )
    assert tokyo["event_timestamp"][0] == utc(2024, 1, 2, 15)
    assert tokyo["views_7d"][0] == 1
    # USD price follows the latest known yen rate
    assert known_at(tokyo, utc(2024, 1, 9, 15))["price_usd"] == pytest.approx(100.0)
    assert known_at(tokyo, utc(2024, 1, 10, 15))["price_usd"] == pytest.approx(200.0)


def test_product_market_demand_lags_count_back_from_the_target_day(
    tiny_features: dict[str, pl.DataFrame],
) -> None:
    demand = tiny_features["product_market_demand"]
    # row for 2 January (New York), target day 3 January
    day2 = known_at(demand, utc(2024, 1, 3, 5), product_id="p1", market_id="US")
    assert (day2["units_lag_1"], day2["units_lag_7"]) == (2.0, 0.0)
    assert day2["units_mean_7"] == pytest.approx(2 / 7)
    # row for 8 January, target 9 January: 2 January is 7 days before the target
    day8 = known_at(demand, utc(2024, 1, 9, 5), product_id="p1", market_id="US")
    assert (day8["units_lag_1"], day8["units_lag_7"]) == (0.0, 2.0)
    assert day8["units_mean_7"] == pytest.approx(2 / 7)


def test_market_and_campaign_tables(tiny_features: dict[str, pl.DataFrame]) -> None:
    markets = tiny_features["market_daily"]
    # markets are evaluated every day, active or not: Tokyo is quiet after 2 January but still
    # gets the new rate of 10 January (its local day ends at 15:00 UTC)
    tokyo_day8 = known_at(markets, utc(2024, 1, 8, 15), market_id="JP")
    assert (tokyo_day8["views_7d"], tokyo_day8["usd_per_unit"]) == (1, 0.01)
    tokyo_day10 = known_at(markets, utc(2024, 1, 10, 15), market_id="JP")
    assert (tokyo_day10["views_7d"], tokyo_day10["usd_per_unit"]) == (0, 0.02)

    # 5 January in New York ends at 05:00 UTC on the 6th
    campaign = known_at(tiny_features["campaign_stats"], utc(2024, 1, 6, 5), campaign_id="c1")
    assert (campaign["auctions_1d"], campaign["wins_1d"], campaign["clicks_7d"]) == (4, 2, 1)
    assert campaign["win_rate_1d"] == pytest.approx(0.5)
    assert campaign["ctr_7d"] == pytest.approx(0.5)
    assert campaign["spend_1d"] == pytest.approx((2.0 + 4.0) / 1000)
    assert campaign["avg_market_price_7d"] == pytest.approx((2.0 + 4.0 + 5.0 + 1.0) / 4)
    assert campaign["budget_spent_share_1d"] == pytest.approx(0.5)
    assert campaign["cvr_7d"] == pytest.approx(0.0)


def test_quiet_user_writes_rows_only_when_a_window_changes_and_ends_with_zeros(
    contract_data_dir: Callable[[ContractRows], Settings],
) -> None:
    """One view and nothing else for five months: the counts change when the view enters the
    windows (1 Jan) and when it leaves the 7, 30 and 90-day windows; nothing else is written."""
    tables = {
        name: TINY_MARKETPLACE[name] for name in ("markets", "fx_rates", "users", "products", "listings")
    }
    tables["events"] = [_event("e1", utc(2024, 1, 1, 10), "u1", "p1", "US", "view")]
    settings = contract_data_dir(tables)
    build_feature_tables(settings, as_of=utc(2024, 6, 1), show_progress=False)
    users = pl.read_parquet(feature_table_path(settings.feature_dir, "user_activity")).sort("event_timestamp")

    assert users["event_timestamp"].to_list() == [
        utc(2024, 1, 2),
        utc(2024, 1, 9),
        utc(2024, 2, 1),
        utc(2024, 4, 1),
    ]
    assert users.select("views_7d", "views_30d", "views_90d").rows() == [
        (1, 1, 1),
        (0, 1, 1),
        (0, 0, 1),
        (0, 0, 0),
    ]
    assert users["days_since_last_purchase"].is_null().all()


def test_build_reads_no_event_after_as_of(contract_data_dir: Callable[[ContractRows], Settings]) -> None:
    settings = contract_data_dir(TINY_MARKETPLACE)
    build_feature_tables(settings, as_of=utc(2024, 1, 5), show_progress=False)
    users = pl.read_parquet(feature_table_path(settings.feature_dir, "user_activity"))
    assert users["event_timestamp"].max() == utc(2024, 1, 5)
    # the 9 January purchase is after as_of: still only the one purchase of the 2nd
    assert users.filter(pl.col("user_id") == "u1")["purchases_90d"].max() == 1


def _busy_marketplace(seed: int = 7) -> ContractRows:
    """Twenty users and four products over two markets, with random views, carts and purchases
    across two months, and a few promotions: enough entities for many parts."""
    rng = random.Random(seed)
    tables = dict(TINY_MARKETPLACE)
    users = [f"u{index:02d}" for index in range(20)]
    tables["users"] = [
        {"user_id": user, "market_id": rng.choice(["US", "JP"]), "signup_ts": utc(2023, 12, 1)}
        for user in users
    ]
    categories = ["shoes", "books", "toys"]
    tables["products"] = [
        {**TINY_MARKETPLACE["products"][0], "product_id": f"p{index}", "category": categories[index % 3]}
        for index in range(4)
    ]
    tables["listings"] = [
        {"product_id": f"p{index}", "market_id": "US", "price": 10.0 * (index + 1), "currency": "USD"}
        for index in range(4)
    ] + [{"product_id": "p0", "market_id": "JP", "price": 1000.0, "currency": "JPY"}]
    tables["promotions"] = [
        {
            "product_id": "p2",
            "market_id": "US",
            "start_date": date(2024, 1, 20),
            "end_date": date(2024, 1, 24),
            "discount": 0.1,
        },
    ]
    events = []
    for index in range(400):
        kind = rng.choice(["view", "view", "view", "add_to_cart", "purchase"])
        market = rng.choice(["US", "US", "JP"])
        product = "p0" if market == "JP" else rng.choice(["p0", "p1", "p2", "p3"])
        ts = utc(2024, 1, 1) + rng.random() * (utc(2024, 2, 28) - utc(2024, 1, 1))
        price = {"purchase": rng.uniform(5.0, 50.0) * (100 if market == "JP" else 1)}.get(kind)
        events.append(
            _event(f"e{index}", ts, rng.choice(users), product, market, kind, price=price, quantity=1)
        )
    tables["events"] = events
    return tables


def test_key_parts_cover_every_code_once() -> None:
    codes = KeyCodes.of([pl.LazyFrame({"user_id": [f"u{index}" for index in range(10)]})], ["user_id"])
    parts = key_parts(codes, 4)
    assert len(parts) == 3
    covered = [codes.table.filter(part)[KEY].to_list() for part in parts]
    assert covered == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(ValueError, match="keys_per_part"):
        key_parts(codes, 0)


def test_tables_do_not_depend_on_parts_or_merge_slices(
    contract_data_dir: Callable[[ContractRows], Settings],
) -> None:
    """Users and series computed a few at a time and merged in small time slices give the same
    rows as all at once, and every file stays in time order (materialization relies on it)."""
    settings = contract_data_dir(_busy_marketplace())
    as_of = utc(2024, 6, 1)

    def built(keys_per_part: int, rows_per_slice: int) -> dict[str, pl.DataFrame]:
        rows = build_feature_tables(
            settings,
            as_of=as_of,
            show_progress=False,
            keys_per_part=keys_per_part,
            rows_per_slice=rows_per_slice,
        )
        tables = {}
        for name, spec in FEATURE_TABLES.items():
            table = pl.read_parquet(feature_table_path(settings.feature_dir, name))
            assert table.height == rows[name], name
            assert table["event_timestamp"].is_sorted(), name
            tables[name] = table.drop(CREATED_TIMESTAMP).sort([*spec.keys, "event_timestamp"])
        return tables

    whole = built(keys_per_part=10_000, rows_per_slice=10_000_000)
    assert whole["user_activity"]["user_id"].n_unique() == 20
    assert whole["user_activity"].height > 100
    for keys_per_part, rows_per_slice in ((1, 7), (3, 1), (7, 100)):
        parted = built(keys_per_part, rows_per_slice)
        for name, table in parted.items():
            assert_frame_equal(table, whole[name], check_exact=False, rel_tol=1e-12, abs_tol=0.0)
    # no scratch folder of parts is left behind
    assert sorted(path.name for path in settings.feature_dir.iterdir()) == sorted(
        feature_table_path(settings.feature_dir, name).name for name in FEATURE_TABLES
    )
