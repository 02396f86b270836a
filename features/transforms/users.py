"""Shopper features over UTC days: `user_activity` (daily) and `user_category_affinity` (weekly)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import polars as pl

from features.transforms.calendar import stamp_days
from features.transforms.inputs import FeatureInputs, with_usd_rate
from features.transforms.specs import USER_ACTIVITY, USER_CATEGORY_AFFINITY
from features.transforms.windows import (
    DAY,
    KEY,
    KeyCodes,
    active_ranges,
    alive_days,
    alive_week_ends,
    by_key_and_day,
    drop_unchanged,
    key_parts,
    ratio,
    running_totals,
    window_sums,
)

ACTIVITY_WINDOWS = (7, 30, 90)
AFFINITY_WINDOWS = (30, 90)
# the longest window: a user stays in the table until 90 days after their last event
HORIZON_DAYS = 90
RECENCY_CAP_DAYS = 90


def _is(event_type: str) -> pl.Expr:
    return pl.col("event_type") == event_type


def _with_price_level(inputs: FeatureInputs) -> pl.LazyFrame:
    """Events with `price_level`: unit price / median list price of the category in the market.

    Both sides are converted to USD on the event's day, so a listing in another currency than
    the event still compares like with like.
    """
    market_category = ["market_id", "category"]
    listed = inputs.listings.join(inputs.products.select("product_id", "category"), on="product_id")
    # The category's currency is the one most of its listings use, ties broken by name (mode()
    # lists tied values in hash order, which changes from call to call). The median is taken over
    # the listings in that currency only: prices in different currencies do not compare.
    currencies = listed.group_by(market_category).agg(
        pl.col("currency").mode().min().alias("category_currency")
    )
    medians = (
        listed.join(currencies, on=market_category)
        .filter(pl.col("currency") == pl.col("category_currency"))
        .group_by(market_category)
        .agg(pl.col("price").median().alias("category_median_price"), pl.col("category_currency").first())
    )
    events = inputs.events.join(medians, on=market_category, how="left")
    events = with_usd_rate(events, inputs.usd_rates, DAY, "category_currency", alias="category_usd_rate")
    median_usd = pl.col("category_median_price") * pl.col("category_usd_rate")
    return events.with_columns(ratio("unit_price_usd", median_usd).alias("price_level"))


def _user_daily(events: pl.LazyFrame) -> pl.LazyFrame:
    purchase = _is("purchase")
    return events.group_by("user_id", DAY).agg(
        _is("view").sum().cast(pl.Int64).alias("views"),
        _is("add_to_cart").sum().cast(pl.Int64).alias("carts"),
        purchase.sum().cast(pl.Int64).alias("purchases"),
        (pl.col("quantity") * pl.col("unit_price_usd")).filter(purchase).sum().alias("spend_usd"),
        pl.col("price_level").filter(purchase).sum().alias("price_level_sum"),
        pl.col("price_level").filter(purchase).count().cast(pl.Int64).alias("price_level_count"),
    )


def _category_touches(inputs: FeatureInputs) -> tuple[KeyCodes, pl.LazyFrame]:
    """Interactions and purchases per user x category and UTC day, keyed by a user x category code."""
    touches = inputs.events.filter(pl.col("category").is_not_null())
    codes = KeyCodes.of([touches], ["user_id", "category"])
    daily = codes.encode(
        touches.group_by("user_id", "category", DAY).agg(
            pl.len().cast(pl.Int64).alias("interactions"),
            _is("purchase").sum().cast(pl.Int64).alias("purchases"),
        )
    )
    return codes, daily.collect().lazy()


def _user_of_pair(category_codes: KeyCodes, user_codes: KeyCodes) -> pl.DataFrame:
    """The user code (`_key`) of every user x category code (`_pair`)."""
    return (
        user_codes.encode(category_codes.table.lazy().rename({KEY: "_pair"})).select("_pair", KEY).collect()
    )


def _distinct_category_changes(
    category_daily: pl.LazyFrame, user_of_pair: pl.DataFrame, inputs: FeatureInputs
) -> pl.LazyFrame:
    """Per user and day, by how much the number of categories touched in the last W days changes.

    A category counts on day D while some touch a has a <= D <= a + W - 1: each merged range adds
    one on its first day and removes it the day after its last, so the running total of these
    changes is the distinct count on any day.
    """
    changes = []
    for window in AFFINITY_WINDOWS:
        anchors = category_daily.select(KEY, DAY, pl.lit(window - 1, dtype=pl.Int64).alias("horizon"))
        ranges = (
            active_ranges(anchors, inputs.last_day)
            .rename({KEY: "_pair"})
            .join(user_of_pair.lazy(), on="_pair")
            .select(KEY, "_from", "_until")
        )
        column = f"distinct_categories_{window}d"
        enters = ranges.select(KEY, pl.col("_from").alias(DAY), pl.lit(1, dtype=pl.Int64).alias(column))
        leaves = ranges.select(
            KEY, (pl.col("_until") + timedelta(days=1)).alias(DAY), pl.lit(-1, dtype=pl.Int64).alias(column)
        )
        changes.append(pl.concat([enters, leaves]).group_by(KEY, DAY).agg(pl.col(column).sum()))
    merged = changes[0].join(changes[1], on=[KEY, DAY], how="full", coalesce=True)
    return merged.with_columns(pl.col(f"distinct_categories_{w}d").fill_null(0) for w in AFFINITY_WINDOWS)


def _pairs_of(user_of_pair: pl.DataFrame, users: pl.Expr) -> pl.Expr:
    """A filter on user x category codes: the pairs of the users `users` selects."""
    return pl.col(KEY).is_in(user_of_pair.filter(users)["_pair"].implode())


def user_activity(
    inputs: FeatureInputs, category_codes: KeyCodes, category_daily: pl.LazyFrame, users_per_part: int
) -> Iterator[pl.LazyFrame]:
    """The table in parts of `users_per_part` users: a user's rows depend on their own events only,
    and a row per user and alive day (the grid the windows are read on) outgrows memory at once."""
    events = _with_price_level(inputs)
    codes = KeyCodes.of([inputs.events], ["user_id"])
    all_daily = codes.encode(_user_daily(events)).collect()  # read by several joins below
    user_of_pair = _user_of_pair(category_codes, codes)
    home_markets = codes.encode(
        inputs.users.select("user_id", pl.col("market_id").alias("home_market"))
    ).collect()
    for users in key_parts(codes, users_per_part):
        daily = all_daily.lazy().filter(users)
        # Daily rows while the user is within 90 days of an event: recency moves every day.
        anchors = daily.select(KEY, DAY, pl.lit(HORIZON_DAYS, dtype=pl.Int64).alias("horizon"))
        grid = alive_days(anchors, inputs.last_day)
        columns = ["views", "carts", "purchases", "spend_usd", "price_level_sum", "price_level_count"]
        frame = window_sums(grid, daily, columns, ACTIVITY_WINDOWS)

        pairs = category_daily.filter(_pairs_of(user_of_pair, users))
        distinct_changes = _distinct_category_changes(pairs, user_of_pair, inputs)
        distinct_columns = [f"distinct_categories_{window}d" for window in AFFINITY_WINDOWS]
        frame = running_totals(frame, distinct_changes, distinct_columns)

        purchase_days = (
            daily.filter(pl.col("purchases") > 0)
            .select(KEY, DAY, pl.col(DAY).alias("_last_purchase_day"))
            .sort(by_key_and_day())
        )
        frame = (
            frame.join_asof(purchase_days, on=DAY, by=KEY, strategy="backward", check_sortedness=False)
            .with_columns(
                (pl.col(DAY) - pl.col("_last_purchase_day"))
                .dt.total_days()
                .clip(upper_bound=RECENCY_CAP_DAYS)
                .cast(pl.Int64)
                .alias("days_since_last_purchase"),
                ratio("price_level_sum_90d", "price_level_count_90d").alias("price_level_90d"),
            )
            .join(home_markets.lazy(), on=KEY, how="left")
        )
        compact = drop_unchanged(frame, USER_ACTIVITY.feature_names)
        yield stamp_days(codes.decode(compact), None)


def user_category_affinity(
    inputs: FeatureInputs, codes: KeyCodes, all_daily: pl.LazyFrame, users_per_part: int
) -> Iterator[pl.LazyFrame]:
    """Weekly (Sunday) rows: affinity is a slow preference, and a daily row for every category a
    user touched would multiply the table by seven for little change. In parts of `users_per_part`
    users, all categories of a user in one part (shares are of the user's total)."""
    user_codes = KeyCodes.of([codes.table.lazy()], ["user_id"])
    user_of_pair = _user_of_pair(codes, user_codes)
    # per user and week totals, grouped by an integer user number rather than the user_id string
    users = codes.table.lazy().select(KEY, pl.col("user_id").rank("dense").alias("_user"))
    user_week = ["_user", DAY]
    for part in key_parts(user_codes, users_per_part):
        daily = all_daily.filter(_pairs_of(user_of_pair, part))
        anchors = daily.select(KEY, DAY, pl.lit(max(AFFINITY_WINDOWS), dtype=pl.Int64).alias("horizon"))
        points = alive_week_ends(anchors, inputs.last_day)
        counts = window_sums(points, daily, ["interactions", "purchases"], AFFINITY_WINDOWS)
        shares = (
            counts.join(users, on=KEY)
            .with_columns(
                ratio("interactions_90d", pl.col("interactions_90d").sum().over(user_week)).alias(
                    "interaction_share_90d"
                ),
                ratio("purchases_90d", pl.col("purchases_90d").sum().over(user_week)).alias(
                    "purchase_share_90d"
                ),
            )
            .sort(by_key_and_day())
        )
        # A category leaves the table with one all-zero row once its 90 days have passed.
        previous_alive = (pl.col(KEY) == pl.col(KEY).shift(1)) & (pl.col("interactions_90d").shift(1) > 0)
        alive = shares.filter((pl.col("interactions_90d") > 0) | previous_alive.fill_null(False))
        compact = drop_unchanged(alive, USER_CATEGORY_AFFINITY.feature_names)
        yield stamp_days(codes.decode(compact), None)


def user_tables(inputs: FeatureInputs, users_per_part: int) -> dict[str, Iterator[pl.LazyFrame]]:
    category_codes, category_daily = _category_touches(inputs)
    return {
        USER_ACTIVITY.name: user_activity(inputs, category_codes, category_daily, users_per_part),
        USER_CATEGORY_AFFINITY.name: user_category_affinity(
            inputs, category_codes, category_daily, users_per_part
        ),
    }
