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
from pathlib import Path
from typing import Any, Self

import polars as pl

from benchmarks.forecast_datasets import (  # the loaders are part of this benchmark's interface
    DEFAULT_DATA_DIR,
    ONLINE_RETAIL_FILE,
    WALMART_FILE,
    BenchmarkData,
    load_online_retail,
    load_sales_file,
    load_walmart,
    synthetic_sales,
)
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
from models.forecasting.parallel import Executor
from models.forecasting.series import FORECAST_VALUE_COLUMNS
from training.evaluation.forecast import Forecaster, backtest
from training.evaluation.intervals import fold_mean_interval
from training.forecaster.fit import ray_map, ray_runtime

TABLE_KEYS = ("dataset", "model", "mase", "wape", "smape", "wrmsse", "bias", "coverage80", "fit_s")
# the headline's sample size and bootstrap interval: MASE over series (resampled with all their folds)
INTERVAL_KEYS = ("n", "n_of", "ci95_of", "ci95_low", "ci95_high")
MODELS = ("seasonal_naive", "global_lightgbm", "prophet", "autoets")
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
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"the folder holding {ONLINE_RETAIL_FILE} and {WALMART_FILE}",
    )
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
