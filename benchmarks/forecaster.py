"""Demand forecasting benchmark: Tradewind's GlobalLightGBM against seasonal naive, Prophet per series
and statsforecast's AutoETS, by rolling-origin backtest on real data, plus a 1M-row training test.

    tradewind benchmark forecaster                                    # Online Retail and Walmart
    tradewind benchmark forecaster --dataset walmart --models seasonal_naive global_lightgbm
    tradewind benchmark forecaster --dataset sales.parquet --keys product_id,market_id --date date \\
        --quantity quantity --frequency daily --horizon 28 [--price price] [--json rows.json]
    tradewind benchmark forecaster --scale-rows 1000000              # fit time and peak memory

(`python -m benchmarks.forecaster ...` is the same.)

Data sets (read from ../shared/data, prepared here; the contract's quarantine will take over):
- online-retail: daily units per product x country, without cancellations (invoice C...),
  non-product codes (postage, fees, vouchers), non-positive quantities or prices and the
  non-countries ("European Community", "Unspecified"); the top N series by units among those
  selling since the first quarter. Horizon 28 days, 3 folds 28 days apart. The unit price is not a
  model input here: it is the realised average of the day's invoice lines (bulk orders get lower
  prices), so it would leak the quantity; it only weights WRMSSE by revenue. LightGBM fits the
  median here (quantile objective, alpha 0.5), not the Tweedie mean: chosen on the validation folds
  before the test folds (`--validation`: MASE 0.930 against 0.971), where Tweedie won on Walmart.
- walmart: weekly sales per store x department (negative weeks, i.e. returns, count as 0), top N
  series by sales with the full 143 weeks. Week dates move from the Friday ending the week to the
  Saturday starting it. Horizon 13 weeks, 3 folds 13 weeks apart. Events: US public holidays,
  Black Friday, Cyber Monday and Christmas, and the competition's holiday weeks.

The table has one row per data set and model: mase, wape, smape, wrmsse, bias, coverage80 (pooled
over series per fold, then averaged over folds) and fit_s (seconds per fold to fit and forecast);
`--json PATH` writes the same rows as a JSON list, one object per data set and model. Prophet runs
one Ray task per series (`--prophet-executor ray`, the default: a local Ray of `--workers` CPUs, or
`--ray-address`) or in a process pool. AutoETS ("benchmark" extra) is statsforecast's, at the same
season length, except that it has no seasonal models beyond 24 periods.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os

# LightGBM's OpenMP threads spin while waiting; on a shared machine that turns 2 busy cores into a
# crawl. Passive waiting costs nothing when the cores are free. Must be set before LightGBM loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Self

import numpy as np
import polars as pl

from benchmarks.data_files import parse_date_column, read_data_file
from configs import InputError
from models.forecasting import (
    GlobalLightGBM,
    ProphetPerSeries,
    SeasonalNaive,
    SeriesSpec,
    complete_grid,
    process_pool_map,
    serial_map,
)
from models.forecasting.parallel import Executor, ray_map, ray_runtime
from models.forecasting.series import FORECAST_VALUE_COLUMNS
from training.evaluation.forecast import Forecaster, backtest
from training.evaluation.intervals import fold_mean_interval

TABLE_KEYS = ("dataset", "model", "mase", "wape", "smape", "wrmsse", "bias", "coverage80", "fit_s")
# the headline's sample size and bootstrap interval: MASE over series (resampled with all their folds)
INTERVAL_KEYS = ("n", "n_of", "ci95_of", "ci95_low", "ci95_high")
MODELS = ("seasonal_naive", "global_lightgbm", "prophet", "autoets")
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
    from features.markets import holiday_calendar

    raw = pl.read_parquet(data_dir / ONLINE_RETAIL_FILE)
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


# -- models -------------------------------------------------------------------------------------


class AutoETSBaseline:
    """statsforecast's AutoETS per series, behind the fit/predict interface (benchmark only)."""

    def __init__(self, spec: SeriesSpec, n_jobs: int = 1) -> None:
        self.spec = spec
        self.n_jobs = n_jobs

    def fit(self, history: pl.DataFrame) -> Self:
        spec = self.spec
        grid = complete_grid(history, spec)
        self._key_frame = grid.select(spec.keys).unique().with_row_index("unique_id")
        self._history = grid.join(self._key_frame, on=list(spec.keys)).select(
            pl.col("unique_id").cast(pl.String),
            pl.col(spec.date).cast(pl.Datetime("ns")).alias("ds"),
            pl.col(spec.target).alias("y"),
        )
        self._last_date = grid[spec.date].max()
        return self

    def predict(self, horizon: int, future_covariates: pl.DataFrame | None = None) -> pl.DataFrame:
        from statsforecast import StatsForecast
        from statsforecast.models import AutoETS

        spec = self.spec
        engine = StatsForecast(
            models=[AutoETS(season_length=spec.season_length)],
            freq=f"{spec.period_days}D",
            n_jobs=self.n_jobs,
        )
        forecast = engine.forecast(df=self._history.to_pandas(), h=horizon, level=[80])
        forecast = pl.from_pandas(forecast.reset_index() if "unique_id" not in forecast.columns else forecast)
        keys = self._key_frame.with_columns(pl.col("unique_id").cast(pl.String))
        return (
            forecast.join(keys, on="unique_id")
            .select(
                *spec.keys,
                pl.col("ds").cast(pl.Date).alias(spec.date),
                pl.col("AutoETS").clip(0).alias("mean"),
                pl.col("AutoETS-lo-80").clip(0).alias("p10"),
                pl.col("AutoETS").clip(0).alias("p50"),
                pl.col("AutoETS-hi-80").clip(0).alias("p90"),
            )
            .select([*spec.keys, spec.date, *FORECAST_VALUE_COLUMNS])
            .sort([*spec.keys, spec.date])
        )


def prophet_executor(kind: str, workers: int, ray_address: str | None = None) -> Executor:
    if kind == "ray":
        return ray_map(ray_address, num_cpus=workers)
    return process_pool_map(workers) if workers > 1 else serial_map


def model_factory(
    name: str, data: BenchmarkData, workers: int, executor: Executor = serial_map
) -> Callable[[], Forecaster]:
    spec = data.spec
    if name == "seasonal_naive":
        return lambda: SeasonalNaive(spec)
    if name == "global_lightgbm":
        return lambda: GlobalLightGBM(
            spec, data.horizon, data.events, static_columns=data.attributes, **data.model_settings
        )
    if name == "prophet":
        return lambda: ProphetPerSeries(spec, data.events, executor=executor)
    if name == "autoets":
        return lambda: AutoETSBaseline(spec, n_jobs=workers)
    raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")


# -- running ------------------------------------------------------------------------------------


def evaluate(
    data: BenchmarkData,
    models: Sequence[str],
    workers: int,
    prophet_executor_kind: str = "ray",
    ray_address: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, pl.DataFrame]]:
    """Backtest each model on one data set: table rows, and per-market/category breakdowns."""
    rows, breakdowns = [], {}
    executor = prophet_executor(prophet_executor_kind, workers, ray_address)
    for name in models:
        started = time.perf_counter()
        # one Ray for every fold of Prophet on Ray (its start-up is counted in the wall time)
        on_ray = name == "prophet" and prophet_executor_kind == "ray"
        with ray_runtime(ray_address, workers) if on_ray else contextlib.nullcontext():
            result = backtest(
                model_factory(name, data, workers, executor),
                data.frame,
                data.horizon,
                data.folds,
                data.step,
                spec=data.evaluation_spec,
                attributes=data.attributes,
            )
        wall = time.perf_counter() - started
        summary = result.summary().row(0, named=True)
        fit_s = float((result.folds["fit_seconds"] + result.folds["predict_seconds"]).mean())
        interval = fold_mean_interval(result.per_series("mase", data.spec.keys))
        rows.append(
            {
                "dataset": data.name,
                "model": name,
                **{k: summary[k] for k in TABLE_KEYS[2:-1]},
                "fit_s": fit_s,
                "wall_s": wall,
                "n": interval.n,
                "n_of": "series",
                "ci95_of": "mase",
                "ci95_low": interval.low,
                "ci95_high": interval.high,
            }
        )
        print(f"  {data.name} {name}: {wall:.1f} s wall for {data.folds} folds", file=sys.stderr, flush=True)
        for by in (data.spec.market, *data.attributes):
            if by is not None:
                breakdowns[f"{data.name}/{name}/{by}"] = result.summary(by=[by])
    return rows, breakdowns


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows, with the number of series and the 95% bootstrap interval of MASE at the end."""
    header = f"{'dataset':<16}{'model':<18}" + "".join(f"{k:>11}" for k in TABLE_KEYS[2:])
    header += f"{'series':>8}  mase 95% CI"
    lines = [header, "-" * len(header)]
    for row in rows:
        values = "".join(f"{row[k]:>11.3f}" for k in TABLE_KEYS[2:])
        interval = f"[{row['ci95_low']:.3f}, {row['ci95_high']:.3f}]"
        lines.append(f"{row['dataset']:<16}{row['model']:<18}{values}{row['n']:>8}  {interval}")
    return "\n".join(lines)


def scale_test(rows: int, horizon: int = 28, lightgbm_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fit GlobalLightGBM on a synthetic frame of `rows` rows; time it and report peak memory.

    Peak memory is the whole process's (data generation included), as the kernel reports it.
    """
    frame, events = synthetic_sales(rows)
    spec = SeriesSpec(target="quantity", price="price", promo="promo", fx="usd_per_unit")
    started = time.perf_counter()
    cpu_started = time.process_time()
    model = GlobalLightGBM(spec, horizon, events, params=lightgbm_params).fit(frame)
    fit_s = time.perf_counter() - started
    fit_cpu_s = time.process_time() - cpu_started
    forecast = model.predict(horizon)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return {
        "rows": frame.height,
        "series": frame.select(spec.keys).n_unique(),
        "fit_s": round(fit_s, 1),
        "fit_cpu_s": round(fit_cpu_s, 1),
        "predict_s": round(time.perf_counter() - started - fit_s, 1),
        "peak_rss_mib": round(peak_mib),
        "forecast_rows": forecast.height,
        "trees_per_bucket": [b.booster.num_trees() for b in model._fitted_buckets],
    }


DATASETS = ("online-retail", "walmart")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tradewind benchmark forecaster",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dataset",
        "--datasets",
        dest="datasets",
        nargs="*",
        default=list(DATASETS),
        help="online-retail, walmart, or the path of a long-format sales file (CSV or parquet)",
    )
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--top-n", type=int, default=None, help="series kept per data set (default 300 / 500)"
    )
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="CPUs for Prophet and AutoETS")
    parser.add_argument(
        "--prophet-executor", choices=["ray", "process"], default="ray", help="how Prophet fits in parallel"
    )
    parser.add_argument("--ray-address", default=None, help="a Ray cluster (default: start a local Ray)")
    parser.add_argument("--json", dest="json_path", type=Path, help="write the table rows as a JSON list")
    parser.add_argument(
        "--breakdowns", action="store_true", help="also print metrics per market and category"
    )
    parser.add_argument("--keys", default="product_id,market_id", help="series key columns of a file")
    parser.add_argument("--date", default="date", help="date column of a file")
    parser.add_argument(
        "--date-format", help="strftime format of the date column when it is not ISO, e.g. %%m/%%d/%%Y"
    )
    parser.add_argument("--quantity", "--target", dest="target", default="quantity", help="quantity column")
    parser.add_argument("--price", default=None, help="price column of a file (optional)")
    parser.add_argument("--market", default=None, help="key column naming the market (for holidays)")
    parser.add_argument("--frequency", default="daily", choices=["daily", "weekly"])
    parser.add_argument("--horizon", type=int, default=None, help="default 28 (daily) or 13 (weekly)")
    parser.add_argument(
        "--lightgbm-params", help="LightGBM parameters as JSON, e.g. '{\"learning_rate\": 0.1}'"
    )
    parser.add_argument("--scale-rows", type=int, help="only time GlobalLightGBM on this many synthetic rows")
    parser.add_argument(
        "--validation",
        action="store_true",
        help="score on the folds before the test folds (the test period is dropped): for choosing settings",
    )
    args = parser.parse_args(argv)

    try:
        lightgbm_params = json.loads(args.lightgbm_params) if args.lightgbm_params else None
    except json.JSONDecodeError as error:
        parser.error(f"--lightgbm-params is not JSON: {error}")
    if args.scale_rows:
        print(json.dumps(scale_test(args.scale_rows, lightgbm_params=lightgbm_params)))
        return 0
    datasets = []
    for name in args.datasets:
        if name == "online-retail":
            datasets.append(load_online_retail(args.data_dir, args.top_n or 300))
        elif name == "walmart":
            datasets.append(load_walmart(args.data_dir, args.top_n or 500))
        else:
            path = Path(name)
            if not path.is_file():
                parser.error(f"--dataset {name!r} is neither {' nor '.join(DATASETS)} nor a file")
            horizon = args.horizon or (28 if args.frequency == "daily" else 13)
            try:
                datasets.append(
                    load_sales_file(
                        path,
                        args.keys.split(","),
                        args.date,
                        args.target,
                        args.frequency,
                        horizon,
                        args.price,
                        args.market,
                        args.date_format,
                    )
                )
            except InputError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
    rows = []
    for data in datasets:
        data.folds = args.folds
        if args.validation:  # drop the test folds' periods: the folds scored are the ones before them
            tested = data.folds * (data.step or data.horizon)
            cut = data.frame[data.spec.date].max() - data.spec.period * tested
            data.frame = data.frame.filter(pl.col(data.spec.date) <= cut)
            data.name = f"{data.name} (validation)"
        if args.horizon and data.name in DATASETS:
            data.horizon = args.horizon
        if lightgbm_params:  # on top of the data set's own settings
            data.model_settings["params"] = {**data.model_settings.get("params", {}), **lightgbm_params}
        series = data.frame.select(data.spec.keys).n_unique()
        print(f"{data.name}: {series} series, {data.frame.height} rows", file=sys.stderr, flush=True)
        dataset_rows, breakdowns = evaluate(
            data, args.models, args.workers, args.prophet_executor, args.ray_address
        )
        rows += dataset_rows
        if args.breakdowns:
            for name, table in breakdowns.items():
                print(name)
                print(table)
    print(format_table(rows))
    if args.json_path:
        args.json_path.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
