"""Dirty rows, so that ingest's quarantine has real work: a known number of each kind per table.

Every dirty row is an extra row appended after the clean ones; no clean row is changed. A dirty
row is a copy of a random clean row that then gets one defect and, except for exact duplicates, a
fresh key (a new id, or for listings a product-market pair that is not listed), so it breaks exactly
one rule and never makes a clean row look like a duplicate. Dirty users and products have new ids
that nothing else references, so quarantining them never drags clean rows along. Kinds:

    duplicate            an exact copy of a clean row                      -> "exact duplicate"
    unknown_user         user_id of nobody                                 -> "unknown user_id"
    unknown_product      product_id of nothing in the catalogue            -> "unknown product_id"
    non_positive_price   price 0 or negative                               -> "zero or negative price"
    future_timestamp     the row's time years after the simulated period   -> "future <column>"
    unknown_currency     a currency code fx_rates does not have            -> "unknown currency"

`fraction` of a table's clean rows is injected per kind (at least one row when fraction > 0).
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl

from features.contract import TABLES
from features.simulator.config import DirtSettings
from features.simulator.identifiers import format_ids

DUPLICATE = "duplicate"
UNKNOWN_USER = "unknown_user"
UNKNOWN_PRODUCT = "unknown_product"
NON_POSITIVE_PRICE = "non_positive_price"
FUTURE_TIMESTAMP = "future_timestamp"
UNKNOWN_CURRENCY = "unknown_currency"

KINDS_BY_TABLE: dict[str, tuple[str, ...]] = {
    "users": (DUPLICATE, FUTURE_TIMESTAMP),
    "products": (DUPLICATE, NON_POSITIVE_PRICE, FUTURE_TIMESTAMP, UNKNOWN_CURRENCY),
    "listings": (DUPLICATE, UNKNOWN_PRODUCT, NON_POSITIVE_PRICE, UNKNOWN_CURRENCY),
    "promotions": (DUPLICATE, UNKNOWN_PRODUCT),
    "events": (
        DUPLICATE,
        UNKNOWN_USER,
        UNKNOWN_PRODUCT,
        NON_POSITIVE_PRICE,
        FUTURE_TIMESTAMP,
        UNKNOWN_CURRENCY,
    ),
    # an auction's user_id references nothing in the contract (any viewer may be unknown to us)
    "auctions": (DUPLICATE, FUTURE_TIMESTAMP, UNKNOWN_CURRENCY),
}
# the id column and id prefix of tables keyed by one generated id
ID_COLUMNS = {"users": ("user_id", "U"), "products": ("product_id", "P"), "events": ("event_id", "E"),
              "auctions": ("auction_id", "A")}  # fmt: skip
UNKNOWN_CURRENCIES = ("ZZZ", "XTS")  # XTS is ISO 4217's code reserved for testing
FUTURE_YEARS = 10


def quarantine_reason(table: str, kind: str) -> str:
    """The reason ingest gives a row of this kind (see features.ingest.row_checks)."""
    if kind == FUTURE_TIMESTAMP:
        return f"future {TABLES[table].timestamp}"
    return {
        DUPLICATE: "exact duplicate",
        UNKNOWN_USER: "unknown user_id",
        UNKNOWN_PRODUCT: "unknown product_id",
        NON_POSITIVE_PRICE: "zero or negative price",
        UNKNOWN_CURRENCY: "unknown currency",
    }[kind]


# numbers far above any generated id: unknown ids look like real ones but match nothing
UNKNOWN_ID_START = {"U": 90_000_000, "P": 9_000_000}


class DirtInjector:
    """Appends dirty rows to generated tables and counts them per table and kind."""

    def __init__(self, settings: DirtSettings, end_date: date, rng: np.random.Generator) -> None:
        self.settings = settings
        self.rng = rng
        self.future = end_date + timedelta(days=365 * FUTURE_YEARS)
        self.counts: dict[str, dict[str, int]] = {}

    def inject(
        self, table: str, frame: pl.DataFrame, listing_grid: pl.DataFrame | None = None
    ) -> pl.DataFrame:
        """`frame` with dirty rows appended. Listings need `listing_grid`: every product x market
        with its currency and a `listed` flag, to find pairs that are not listed."""
        if table not in self.settings.tables or frame.height == 0 or self.settings.fraction == 0:
            return frame
        per_kind = max(1, round(self.settings.fraction * frame.height))
        next_number = 0  # of a fresh id, for tables keyed by one generated id
        if table in ID_COLUMNS:
            column, prefix = ID_COLUMNS[table]
            next_number = int(frame.get_column(column).str.strip_prefix(prefix).cast(pl.Int64).max()) + 1
        extra: list[pl.DataFrame] = []
        counts: dict[str, int] = {}
        for kind in KINDS_BY_TABLE[table]:
            rows = frame.sample(per_kind, with_replacement=per_kind > frame.height, seed=self._seed())
            if kind != DUPLICATE:
                rows = self._defect(
                    table, kind, self._fresh_key(table, kind, rows, listing_grid, next_number)
                )
                next_number += rows.height
            counts[kind] = rows.height
            extra.append(rows)
        self.counts[table] = counts
        return pl.concat([frame, *extra])

    def _seed(self) -> int:
        return int(self.rng.integers(0, 2**31))

    def _unknown_numbers(self, prefix: str, count: int) -> np.ndarray:
        first = UNKNOWN_ID_START[prefix] + int(self.rng.integers(0, 10**5))
        return np.arange(first, first + count)

    def _fresh_key(
        self, table: str, kind: str, rows: pl.DataFrame, listing_grid: pl.DataFrame | None, first_number: int
    ) -> pl.DataFrame:
        if table in ID_COLUMNS:
            column, prefix = ID_COLUMNS[table]
            numbers = np.arange(first_number, first_number + rows.height)
            rows = rows.with_columns(format_ids(prefix, numbers).alias(column))
        elif table == "listings" and kind != UNKNOWN_PRODUCT:  # an unknown product is a fresh key already
            if listing_grid is None:
                raise ValueError("listings dirt needs the product x market grid")
            free = listing_grid.filter(~pl.col("listed"))
            chosen = free.sample(min(rows.height, free.height), seed=self._seed())
            rows = rows.head(chosen.height).with_columns(chosen.select("product_id", "market_id", "currency"))
        return rows

    def _defect(self, table: str, kind: str, rows: pl.DataFrame) -> pl.DataFrame:
        n = rows.height
        if kind == UNKNOWN_USER:
            return rows.with_columns(format_ids("U", self._unknown_numbers("U", n)).alias("user_id"))
        if kind == UNKNOWN_PRODUCT:
            return rows.with_columns(format_ids("P", self._unknown_numbers("P", n)).alias("product_id"))
        if kind == NON_POSITIVE_PRICE:
            sign = np.where(self.rng.random(n) < 0.5, 0.0, -1.0)
            return rows.with_columns(pl.col("price") * pl.Series(sign))
        if kind == UNKNOWN_CURRENCY:
            codes = pl.Series(UNKNOWN_CURRENCIES).gather(self.rng.integers(0, len(UNKNOWN_CURRENCIES), n))
            return rows.with_columns(codes.alias("currency"))
        if kind == FUTURE_TIMESTAMP:
            column = TABLES[table].timestamp
            offset = pl.Series(self.rng.integers(0, 365 * 86_400, n) * 1_000_000).cast(pl.Duration("us"))
            start = pl.lit(self.future).cast(pl.Datetime("us", "UTC"))
            return rows.with_columns((start + offset).alias(column))
        raise ValueError(f"unknown kind of dirt {kind}")
