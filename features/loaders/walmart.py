"""Walmart store x department weekly sales (Kaggle, 2010-02 to 2012-10) as raw contract tables.

Source: the folder with `train.csv` (Store, Dept, Date, Weekly_Sales, IsHoliday) and `stores.csv`
(Store, Type, Size; old Mac line endings). `features.csv` (temperature, fuel price, store-level
markdowns in dollars) is not loaded: the contract has no column for it, and a store-wide dollar
markdown is not a product's fractional discount, so it does not fit `promotions`.

Mapping:
- markets: one per store, `WM01`..`WM45`, country US, USD, America/Chicago (Walmart's home time
  zone: the stores span the country and the data does not say where), en-US; the name carries the
  store type and size ("Walmart store 1 (type A, 151,315 sq ft)").
- products: one per department, `D01`..`D99` (81 of them), title "Walmart department N", category
  `dept-NN`, brand "Walmart", no price or currency; created_ts = local midnight (America/Chicago,
  in UTC) of the department's first week.
- sales: one row per train.csv line; date = the first day of the week. The file's Date is the
  Friday that ends the sales week (README; the holiday flags agree: the week "2010-02-12" holds
  Super Bowl Sunday 2010-02-07), so the week runs from the Saturday six days before it. frequency
  "weekly", quantity = Weekly_Sales (dollars, the data has no units), currency USD. IsHoliday is not
  written: holidays come from each market's country calendar.
- fx_rates: USD, every day from the first week's Saturday to the last week's Friday.
Nothing is flagged here: negative weekly sales (returns exceeding sales) are left to ingest's
non-negative rule.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl

from configs import InputError
from features.loaders.countries import COUNTRIES
from features.loaders.fx import daily_fx_rates
from features.loaders.raw import LoadSummary, RawOutput, folder_with

DATASET = "walmart"
REQUIRED_FILES = ("train.csv", "stores.csv")
SALES_COLUMNS = ("Store", "Dept", "Date", "Weekly_Sales", "IsHoliday")
COUNTRY = COUNTRIES["US"]
TIMEZONE = "America/Chicago"
WEEK_LENGTH = timedelta(days=7)
BRAND = "Walmart"


def find_source(source: Path) -> Path:
    """The folder holding train.csv and stores.csv: `source` itself, or the folder of one of its files."""
    return folder_with(source, REQUIRED_FILES, "the Walmart weekly sales folder")


def read_csv_any_line_ending(path: Path, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """CSV with LF, CRLF or bare CR line endings (stores.csv has the old Mac CR)."""
    text = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return pl.read_csv(text, schema_overrides=schema)


def read_sales(folder: Path) -> pl.DataFrame:
    sales = pl.read_csv(
        folder / "train.csv",
        schema_overrides={"Store": pl.Int64, "Dept": pl.Int64, "Date": pl.Date, "Weekly_Sales": pl.Float64},
    )
    missing = [name for name in SALES_COLUMNS if name not in sales.columns]
    if missing:
        raise InputError(f"{folder / 'train.csv'}: not Walmart weekly sales, missing columns {missing}")
    return sales.with_columns(
        market_id=_store_id(pl.col("Store")),
        product_id=_department_id(pl.col("Dept")),
        # Date ends the week on a Friday; the contract wants the first day
        week_start=pl.col("Date") - (WEEK_LENGTH - timedelta(days=1)),
    )


def _store_id(store: pl.Expr) -> pl.Expr:
    return pl.format("WM{}", store.cast(pl.String).str.zfill(2))


def _department_id(dept: pl.Expr) -> pl.Expr:
    return pl.format("D{}", dept.cast(pl.String).str.zfill(2))


def build_markets(folder: Path) -> pl.DataFrame:
    stores = read_csv_any_line_ending(
        folder / "stores.csv", {"Store": pl.Int64, "Type": pl.String, "Size": pl.Int64}
    )
    names = [
        f"Walmart store {store} (type {store_type}, {size:,} sq ft)"
        for store, store_type, size in stores.select("Store", "Type", "Size").iter_rows()
    ]
    return (
        stores.with_columns(name=pl.Series(names, dtype=pl.String))
        .sort("Store")
        .select(
            _store_id(pl.col("Store")).alias("market_id"),
            "name",
            pl.lit(COUNTRY.code).alias("country"),
            pl.lit(COUNTRY.currency).alias("currency"),
            pl.lit(TIMEZONE).alias("timezone"),
            pl.lit(COUNTRY.language).alias("language"),
        )
    )


def build_products(sales: pl.DataFrame) -> pl.DataFrame:
    first_local_midnight = (
        pl.col("week_start").min().cast(pl.Datetime("us")).dt.replace_time_zone(TIMEZONE)
    ).dt.convert_time_zone("UTC")
    return (
        sales.group_by("Dept", "product_id")
        .agg(first_local_midnight.alias("created_ts"))
        .sort("Dept")
        .select(
            "product_id",
            pl.format("Walmart department {}", pl.col("Dept")).alias("title"),
            pl.format("dept-{}", pl.col("Dept").cast(pl.String).str.zfill(2)).alias("category"),
            pl.lit(BRAND).alias("brand"),
            pl.lit(None, dtype=pl.Float64).alias("price"),
            pl.lit(None, dtype=pl.String).alias("currency"),
            "created_ts",
        )
    )


def build_sales(sales: pl.DataFrame) -> pl.DataFrame:
    return sales.select(
        pl.col("week_start").alias("date"),
        "product_id",
        "market_id",
        pl.lit("weekly").alias("frequency"),
        pl.col("Weekly_Sales").alias("quantity"),
        pl.lit(COUNTRY.currency).alias("currency"),
    )


def load(source: Path, raw_dir: Path) -> LoadSummary:
    """Read Walmart weekly sales (its folder, or any file in it) and write its raw tables under raw_dir."""
    folder = find_source(source)
    sales = read_sales(folder)
    first_day, last_day = sales.get_column("week_start").min(), sales.get_column("Date").max()

    output = RawOutput(DATASET, raw_dir)
    output.write("fx_rates", daily_fx_rates([COUNTRY.currency], first_day, last_day, first_day.year))
    output.write("markets", build_markets(folder))
    output.write("products", build_products(sales))
    output.write("sales", build_sales(sales))
    return output.summary(source_rows=sales.height)
