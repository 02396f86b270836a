"""The forecaster benchmark's data sets: Online Retail and Walmart from ../shared/data, prepared as
`benchmarks/forecaster.py` describes, a user's long-format sales file (`--dataset FILE`), and the
synthetic frame of the 1M-row training test."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks.data_files import parse_date_column, read_data_file
from configs import InputError
from models.forecasting import SeriesSpec

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ONLINE_RETAIL_FILE = "online-retail/online_retail_2010-12_2011-12.parquet"
WALMART_FILE = "walmart-weekly/train.csv"
# the competition's holiday weeks (IsHoliday), named by month
WALMART_HOLIDAY_WEEKS = {
    2: "Super Bowl week",
    9: "Labor Day week",
    11: "Thanksgiving week",
    12: "Christmas week",
}


@dataclass
class BenchmarkData:
    """A long-format frame ready for `backtest`, with how to read it and how to evaluate it."""

    name: str
    frame: pl.DataFrame
    spec: SeriesSpec  # what the models read
    horizon: int
    folds: int = 3
    step: int | None = None
    events: pl.DataFrame | None = None
    attributes: tuple[str, ...] = ()  # per-series columns for breakdowns (e.g. category)
    weight_price: str | None = None  # price column for the WRMSSE revenue weights only
    model_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def evaluation_spec(self) -> SeriesSpec:
        return replace(self.spec, price=self.weight_price or self.spec.price)


# -- data sets ----------------------------------------------------------------------------------


def load_online_retail(data_dir: Path, top_n: int) -> BenchmarkData:
    from features.loaders.online_retail import (
        COUNTRY_CODES,
        GIFT_VOUCHER_PREFIX,
        NON_PRODUCT_CODES,
        categorise,
    )
    from features.loaders.online_retail_source import UNREADABLE, find_source, read_source
    from features.markets import holiday_calendar

    # through the loader's reader: either release's column naming, parquet, CSV or Excel
    # the shared file, else any Online Retail file (either release) in its folder
    path = data_dir / ONLINE_RETAIL_FILE
    source = read_source(path if path.exists() else find_source(path.parent))
    raw = source.filter(pl.col(UNREADABLE).is_null())
    code = pl.col("StockCode").str.to_uppercase()
    lines = raw.filter(
        ~pl.col("InvoiceNo").str.starts_with("C"),
        pl.col("Quantity") > 0,
        pl.col("UnitPrice") > 0,
        ~code.is_in(list(NON_PRODUCT_CODES)),
        ~code.str.starts_with(GIFT_VOUCHER_PREFIX),
        pl.col("Country").is_in(list(COUNTRY_CODES)),
    ).with_columns(
        code.alias("product_id"),
        pl.col("Country").replace_strict(COUNTRY_CODES).alias("market_id"),
        pl.col("InvoiceDate").dt.date().alias("date"),
    )
    daily = lines.group_by("product_id", "market_id", "date").agg(
        pl.col("Quantity").sum().cast(pl.Float64).alias("quantity"),
        ((pl.col("Quantity") * pl.col("UnitPrice")).sum() / pl.col("Quantity").sum()).alias("price"),
    )
    categories = lines.group_by("product_id").agg(
        pl.col("Description").drop_nulls().mode().first().alias("title")
    )
    categories = categories.select("product_id", categorise(pl.col("title")).alias("category"))
    first_quarter_end = daily["date"].min() + timedelta(days=91)
    chosen = (
        daily.group_by("product_id", "market_id")
        .agg(pl.col("quantity").sum().alias("units"), pl.col("date").min().alias("first"))
        .filter(pl.col("first") <= first_quarter_end)
        .sort("units", descending=True)
        .head(top_n)
    )
    frame = daily.join(chosen.select("product_id", "market_id"), on=["product_id", "market_id"])
    frame = frame.join(categories, on="product_id", how="left")
    markets = sorted(frame["market_id"].unique())
    events = holiday_calendar(
        {market: market for market in markets},
        frame["date"].min(),
        frame["date"].max() + timedelta(days=60),
        shopping_events={market: ("christmas", "black_friday") for market in markets},
    )
    return BenchmarkData(
        name="online-retail",
        frame=frame,
        spec=SeriesSpec(keys=("product_id", "market_id"), target="quantity", frequency="daily"),
        horizon=28,
        events=events,
        attributes=("category",),
        weight_price="price",
        model_settings={"params": {"objective": "quantile", "alpha": 0.5}},
    )


def load_walmart(data_dir: Path, top_n: int) -> BenchmarkData:
    from features.markets import holiday_calendar

    sales = pl.read_csv(
        data_dir / WALMART_FILE,
        schema_overrides={"Store": pl.Int64, "Dept": pl.Int64, "Date": pl.Date, "Weekly_Sales": pl.Float64},
    )
    sales = sales.select(
        pl.format("S{}", pl.col("Store").cast(pl.String).str.zfill(2)).alias("store"),
        pl.format("D{}", pl.col("Dept").cast(pl.String).str.zfill(2)).alias("dept"),
        (pl.col("Date") - timedelta(days=6)).alias("date"),  # Friday ending the week -> Saturday starting it
        pl.col("Weekly_Sales").clip(0).alias("sales"),
        pl.col("IsHoliday").cast(pl.String).str.to_lowercase() == "true",
    )
    weeks = sales["date"].n_unique()
    chosen = (
        sales.group_by("store", "dept")
        .agg(pl.col("sales").sum().alias("total"), pl.len().alias("weeks"))
        .filter(pl.col("weeks") == weeks)
        .sort("total", descending=True)
        .head(top_n)
    )
    frame = sales.join(chosen.select("store", "dept"), on=["store", "dept"])
    start, end = frame["date"].min(), frame["date"].max() + timedelta(days=120)
    us = holiday_calendar(
        {"US": "US"}, start, end, shopping_events={"US": ("black_friday", "cyber_monday", "christmas")}
    )
    holiday_weeks = (
        sales.filter(pl.col("IsHoliday"))
        .select("date")
        .unique()
        .select(
            pl.col("date"),
            pl.lit("US").alias("market_id"),
            pl.col("date")
            .dt.month()
            .replace_strict(WALMART_HOLIDAY_WEEKS, return_dtype=pl.String)
            .alias("name"),
            pl.lit("retail_holiday_week").alias("kind"),
        )
    )
    # the holiday weeks of the test years are known in advance (the competition lists them)
    events = pl.concat([us, holiday_weeks]).with_columns(pl.lit(None, dtype=pl.String).alias("market_id"))
    return BenchmarkData(
        name="walmart",
        frame=frame.drop("IsHoliday"),
        spec=SeriesSpec(keys=("store", "dept"), market=None, target="sales", frequency="weekly"),
        horizon=13,
        events=events,
    )


def load_sales_file(
    path: Path,
    keys: Sequence[str],
    date_column: str,
    target: str,
    frequency: str,
    horizon: int,
    price: str | None = None,
    market: str | None = None,
    date_format: str | None = None,
) -> BenchmarkData:
    """A long-format sales file (CSV or parquet); bad columns or dates raise a one-line InputError."""
    frame = read_data_file(path, date_column, date_format)
    wanted = {
        "--keys": keys,
        "--date": [date_column],
        "--quantity": [target],
        "--price": [price] if price else [],
    }
    missing = [column for columns in wanted.values() for column in columns if column not in frame.columns]
    if missing:
        flags = "/".join(flag for flag, columns in wanted.items() if set(columns) & set(missing))
        raise InputError(
            f"{path}: no column(s) {missing} ({flags}); the file has: {', '.join(frame.columns)}"
        )
    frame = parse_date_column(frame, path, date_column, date_format, flag="--date")
    try:
        frame = frame.with_columns(pl.col(target).cast(pl.Float64))
    except pl.exceptions.PolarsError:
        bad = frame[target].cast(pl.Float64, strict=False).is_null() & frame[target].is_not_null()
        row = int(bad.arg_true()[0]) if bad.any() else 0
        value = frame[target][row]
        raise InputError(
            f"{path}: column {target!r} (--quantity), data row {row + 1}: {value!r} is not a number"
        ) from None
    spec = SeriesSpec(
        keys=tuple(keys), date=date_column, target=target, frequency=frequency, market=market, price=price
    )  # type: ignore[arg-type]
    return BenchmarkData(name=path.stem, frame=frame, spec=spec, horizon=horizon)


def synthetic_sales(rows: int, days: int = 500, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Intermittent daily demand for `rows // days` series in five markets, with weekly shape,
    holidays, local prices with FX and promotions: the size and shape of the 1M-row target."""
    from features.markets import holiday_calendar

    rng = np.random.default_rng(seed)
    series = rows // days
    markets = np.array(["US", "GB", "DE", "JP", "BR"])
    usd_per_unit = {"US": 1.0, "GB": 1.27, "DE": 1.08, "JP": 1 / 150, "BR": 1 / 5.0}
    start = date(2024, 1, 1)
    dates = pl.date_range(start, start + timedelta(days=days - 1), "1d", eager=True)
    events = holiday_calendar({m: m for m in markets}, start, start + timedelta(days=days + 60))
    market_of = markets[rng.integers(0, len(markets), series)]
    level = rng.lognormal(0.0, 1.2, series)
    weekday = np.array([d.weekday() for d in dates.to_list()])
    shape = np.array([1.0, 0.95, 1.0, 1.05, 1.2, 1.4, 0.8])[weekday]
    event_days = {(m, d) for m, d in zip(events["market_id"], events["date"], strict=True)}
    uplift = np.array([[2.0 if (m, d) in event_days else 1.0 for d in dates.to_list()] for m in markets])
    market_index = np.searchsorted(markets, market_of, sorter=np.argsort(markets))
    market_index = np.argsort(markets)[market_index]
    promo = (rng.random((series, days)) < 0.05).astype(np.float64)
    mu = level[:, None] * shape[None, :] * uplift[market_index] * (1 + 1.5 * promo)
    demand = rng.poisson(rng.gamma(2.0, mu / 2.0))  # negative binomial: intermittent and overdispersed
    local_price = rng.uniform(5, 50, series) / np.array([usd_per_unit[m] for m in market_of])
    frame = pl.DataFrame(
        {
            "product_id": np.repeat([f"p{i:05d}" for i in range(series)], days),
            "market_id": np.repeat(market_of, days),
            "date": pl.concat([dates] * series),
            "quantity": demand.ravel().astype(np.float64),
            "price": (local_price[:, None] * (1 - 0.3 * promo)).ravel(),
            "promo": promo.ravel(),
            "usd_per_unit": np.repeat([usd_per_unit[m] for m in market_of], days),
        }
    )
    return frame, events
