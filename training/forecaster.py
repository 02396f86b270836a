"""The demand forecasting family: `tradewind train forecaster` and `tradewind tune forecaster`.

Training set: units per product x market per market-local day, from the contract's purchase events
(plus any daily `sales`), on a gap-free grid from each series' first sale; the day's local price
(listing price less the promotion running that day), the promotion's discount, and the USD value of
the listing currency that day (fx_rates), so the model sees the FX-normalised price; the category
as a static feature; and each market's public holidays and shopping events (from its country, the
same calendars the simulator uses). The data ends on the last day that is over in every market's
time zone (the newest, still-running day would look like a slump). The `series.top_n` biggest
sellers are modelled by the global LightGBM (`models.forecasting.GlobalLightGBM`: direct horizon
buckets, Tweedie, conformal quantiles); every other listed product x market gets a seasonal-naive
forecast, so serving knows every listed pair.

The model is trained once per rolling origin (the backtest, which reports each fold's MASE so Optuna
can prune) and once on all the data; the served model holds the forecast from that last origin,
with the planned promotions of the coming days as known covariates, so `answer` is a slice of
arrays: no feature computation and no LightGBM call per request. A request for more days than the
trained horizon is refused.

Evaluation, on the same folds: seasonal naive, the oracle (the simulator's true mean demand, when
its ground truth is there), Prophet per series on Ray (when `prophet.enabled`, on the top series),
per-market and per-category breakdowns, bottom-up reconciled errors, a holiday period plotted with
its P10-P90 band, and per-feature contributions of the final model.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np
import pandas as pd
import polars as pl
from mlflow.pyfunc import PythonModel
from pydantic import Field

from configs import ConfigError, StrictModel
from configs.families import FORECASTER
from configs.settings import Settings
from models.forecasting.series import FORECAST_VALUE_COLUMNS, SeriesSpec, complete_grid
from training.pipeline import Evaluation, HoldoutComparison, Reporter, TrainedModel, TrainingSet

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

FEATURE_SERVICE = FORECASTER.feature_service
FAMILY_CONFIG = "configs/forecaster.yaml"
SPEC = SeriesSpec(
    keys=("product_id", "market_id"),
    date="date",
    target="units",
    frequency="daily",
    market="market_id",
    price="price",
    promo="promo",
    fx="usd_per_unit",
)
STATIC_COLUMNS = ("category",)
TRAINED_QUANTILES = {0.1: "p10", 0.5: "p50", 0.9: "p90"}
SUMMARY_KEYS = ("mase", "wape", "smape", "wrmsse", "bias", "coverage80", "pinball", "spl")


# -- config -------------------------------------------------------------------------------------


class SeriesSelection(StrictModel):
    top_n: int | None = 300
    min_active_days: int = 14


class BacktestConfig(StrictModel):
    folds: int = 3
    step: int | None = None
    # tuning scores a trial on this many folds that end where the test folds begin
    validation_folds: int = Field(2, ge=1)


class LightGBMParams(StrictModel):
    # tweedie: the mean of intermittent demand (M5 style); quantile (with alpha 0.5): the median,
    # which absolute-error metrics such as MASE score (the served `mean` is then that model's output)
    objective: Literal["tweedie", "poisson", "quantile"] = "tweedie"
    alpha: float = 0.5
    learning_rate: float = 0.1
    num_leaves: int = 31
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.6
    lambda_l2: float = 1.0
    tweedie_variance_power: float = 1.1
    max_bin: int = 63


class LightGBMConfig(StrictModel):
    num_boost_round: int = 300
    early_stopping_rounds: int = 15
    num_threads: int = 2
    interval_bins: int = 5
    relative_level: bool = True
    params: LightGBMParams = LightGBMParams()


class ProphetConfig(StrictModel):
    enabled: bool = False
    max_series: int = 20
    ray_address: str | None = None
    num_cpus: int = 2
    uncertainty_samples: int = 100


class HolidayPlotConfig(StrictModel):
    event: str = "Black Friday"
    days_before: int = 7
    series: int = 2


class ForecasterConfig(StrictModel):
    horizon: int = 28
    history_days: int | None = None
    series: SeriesSelection = SeriesSelection()
    backtest: BacktestConfig = BacktestConfig()
    lightgbm: LightGBMConfig = LightGBMConfig()
    prophet: ProphetConfig = ProphetConfig()
    oracle: bool = True
    oracle_draws: int = 400
    holiday_plot: HolidayPlotConfig = HolidayPlotConfig()


# -- training set -------------------------------------------------------------------------------


@dataclass
class ForecastData:
    """What fit and evaluate read; `frame` holds the modelled series only."""

    frame: pl.DataFrame  # product_id, market_id, date, units, price, promo, usd_per_unit, category
    future: pl.DataFrame  # the same covariates for the `horizon` days after the last date
    others: pl.DataFrame  # product_id, market_id, date, units: every other listed series, on a grid
    unsold: pl.DataFrame  # product_id, market_id: listed, never sold
    events: pl.DataFrame  # date, market_id, name, kind
    last_date: date
    truth: (
        pl.DataFrame | None
    )  # product_id, market_id, date, mean_demand (the oracle); None off the simulator
    extra_units_mean: float
    ray_address: str | None


def _daily_units(settings: Settings) -> pl.DataFrame:
    """Units per product x market x market-local day, from purchases and daily sales."""
    from features.tables import scan_table
    from features.transforms.calendar import local_date, per_market

    markets = scan_table(settings.contract_dir, "markets").collect()
    zones = dict(zip(markets["market_id"], markets["timezone"], strict=True))
    purchases = (
        scan_table(settings.contract_dir, "events")
        .filter(pl.col("event_type") == "purchase")
        .select("product_id", "market_id", "event_ts", pl.col("quantity").cast(pl.Float64).alias("units"))
    )
    purchases = per_market(purchases, zones, lambda zone: [local_date("event_ts", zone).alias("date")])
    sales = (
        scan_table(settings.contract_dir, "sales")
        .filter(pl.col("frequency") == "daily")
        .select("product_id", "market_id", "date", pl.col("quantity").cast(pl.Float64).alias("units"))
    )
    both = pl.concat([purchases.select("product_id", "market_id", "date", "units"), sales])
    return both.group_by("product_id", "market_id", "date").agg(pl.col("units").sum()).collect()


def _last_complete_day(settings: Settings) -> date | None:
    """The last market-local day that is over in every market, by the newest event's time.

    The day the newest event falls on is still running in some market's time zone (a delivery of
    UTC days ends in the evening of New York's day and the morning of Tokyo's): its units are a
    part of the day's, and would read as a slump to the lags and as actuals to the retraining gate.
    None when there are no events (daily sales are whole days already).
    """
    from features.tables import scan_table

    newest = (
        scan_table(settings.contract_dir, "events")
        .filter(pl.col("event_ts").is_not_null())
        .select(pl.col("event_ts").max())
        .collect()
        .item()
    )
    if newest is None:
        return None
    zones = scan_table(settings.contract_dir, "markets").select("timezone").collect()["timezone"]
    stamp = pl.Series([newest])
    return min(stamp.dt.convert_time_zone(zone).dt.date()[0] for zone in zones) - timedelta(days=1)


def _covariates(settings: Settings, grid: pl.DataFrame) -> pl.DataFrame:
    """Price (listing price less the day's promotion), discount and the listing currency's USD rate."""
    from features.tables import read_table
    from features.transforms.inputs import daily_usd_rates

    listings = read_table(settings.contract_dir, "listings").select(
        "product_id", "market_id", pl.col("price").alias("_list_price"), "currency"
    )
    promotions = (
        read_table(settings.contract_dir, "promotions")
        .with_columns(pl.date_ranges("start_date", "end_date").alias("date"))
        .explode("date")
        .group_by("product_id", "market_id", "date")
        .agg(pl.col("discount").max())
    )
    last = grid["date"].max()
    rates = daily_usd_rates(read_table(settings.contract_dir, "fx_rates").lazy(), last).rename(
        {"day": "date"}
    )
    frame = (
        grid.join(listings, on=["product_id", "market_id"], how="left")
        .join(promotions, on=["product_id", "market_id", "date"], how="left")
        .join(rates, on=["currency", "date"], how="left")
        .sort("product_id", "market_id", "date")
        .with_columns(
            pl.col("discount").fill_null(0.0).alias("promo"),
            # the latest known rate for days past the last published one (the coming days)
            pl.col("usd_per_unit").forward_fill().over("product_id", "market_id"),
        )
        .with_columns((pl.col("_list_price") * (1 - pl.col("promo"))).alias("price"))
    )
    return frame.drop("_list_price", "currency", "discount")


def _events(settings: Settings, start: date, end: date) -> pl.DataFrame:
    from features.markets import holiday_calendar
    from features.tables import read_table

    markets = read_table(settings.contract_dir, "markets")
    return holiday_calendar(dict(markets.select("market_id", "country").iter_rows()), start, end)


def build_forecast_data(settings: Settings, config: ForecasterConfig) -> ForecastData:
    from features.tables import read_table

    daily = _daily_units(settings)
    if daily.height == 0:
        raise FileNotFoundError(
            f"{settings.contract_dir}: no purchase events or daily sales to forecast from "
            "(run `tradewind demo`, or `tradewind ingest`)"
        )
    last = daily["date"].max()
    complete = _last_complete_day(settings)
    if complete is not None and complete < last:
        daily = daily.filter(pl.col("date") <= complete)
        if daily.height == 0:
            raise ValueError(f"{settings.contract_dir}: no sales up to {complete}, the last complete day")
        last = complete
    if config.history_days:
        daily = daily.filter(pl.col("date") > last - timedelta(days=config.history_days))
    totals = daily.group_by("product_id", "market_id").agg(
        pl.col("units").sum().alias("_total"), pl.len().alias("_days")
    )
    eligible = totals.filter(pl.col("_days") >= config.series.min_active_days).sort(
        ["_total", "product_id", "market_id"], descending=[True, False, False]
    )
    chosen = eligible.head(config.series.top_n) if config.series.top_n else eligible
    if chosen.height == 0:
        raise ConfigError(
            f"{FAMILY_CONFIG}: key 'series.min_active_days': no series sold on at least "
            f"{config.series.min_active_days} days"
        )
    keys = ["product_id", "market_id"]
    grid = complete_grid(daily.join(chosen.select(keys), on=keys), SPEC, end=last)
    future_days = pl.DataFrame(
        {"date": pl.date_range(last + timedelta(days=1), last + timedelta(days=config.horizon), eager=True)}
    )
    future = chosen.select(keys).join(future_days, how="cross")
    both = _covariates(settings, pl.concat([grid, future], how="diagonal_relaxed"))
    categories = read_table(settings.contract_dir, "products").select("product_id", "category")
    both = both.join(categories, on="product_id", how="left").with_columns(
        pl.col("category").fill_null("unknown")
    )
    frame = both.filter(pl.col("date") <= last)
    future = both.filter(pl.col("date") > last).drop(SPEC.target)

    others = complete_grid(daily.join(chosen.select(keys), on=keys, how="anti"), SPEC, end=last)
    listed = read_table(settings.contract_dir, "listings").select(keys)
    unsold = listed.join(totals.select(keys), on=keys, how="anti")
    events = _events(settings, frame["date"].min(), last + timedelta(days=config.horizon + 60))
    truth, extra_units = None, 0.0
    if config.oracle and (settings.truth_dir / "demand").is_dir():
        truth, extra_units = _oracle_truth(settings, chosen.select(keys))
    ray_address = config.prophet.ray_address or settings.ray_address
    return ForecastData(frame, future, others, unsold, events, last, truth, extra_units, ray_address)


def _oracle_truth(settings: Settings, series: pl.DataFrame) -> tuple[pl.DataFrame, float]:
    from features.simulator.truth import load_meta, true_mean_demand

    truth = true_mean_demand(settings.truth_dir).select("product_id", "market_id", "date", "mean_demand")
    truth = truth.join(series, on=["product_id", "market_id"])
    meta = load_meta(settings.truth_dir)
    extra = float(meta.get("config", {}).get("choice", {}).get("extra_units_mean", 0.0))
    return truth, extra


def training_set(settings: Settings, config: ForecasterConfig) -> TrainingSet:
    from features.tables import snapshot

    started = time.perf_counter()
    data = build_forecast_data(settings, config)
    digests = snapshot(settings.contract_dir)["tables"]
    used = ("events", "sales", "listings", "promotions", "fx_rates", "markets", "products")
    lineage = {table: str(digests[table]["digest"]) for table in used if table in digests}
    summary = {
        "series": float(data.frame.select(SPEC.keys).n_unique()),
        "rows": float(data.frame.height),
        "days": float(data.frame["date"].n_unique()),
        "fallback_series": float(data.others.select(SPEC.keys).n_unique() + data.unsold.height),
        "units": float(data.frame[SPEC.target].sum()),
        "build_s": time.perf_counter() - started,
    }
    return TrainingSet(data=data, lineage=lineage, summary=summary)


# -- the served model ---------------------------------------------------------------------------


def _quantile_key(level: float) -> str:
    return f"p{round(level * 100):d}"


class ForecasterModel(PythonModel):
    """Forecasts of every known product x market from the last origin, served by slicing arrays.

    `values[row, day, k]` holds mean, p10, p50, p90 (k = 0..3) of series `row` on day `day` after
    `last_date`. Rows of LightGBM series come from the global model; the other listed series from
    seasonal naive (`source` says which).
    """

    feature_service: str | None = None  # the forecast is precomputed: no online features needed

    def __init__(
        self,
        keys: Sequence[tuple[str, str]],
        values: np.ndarray,
        from_lightgbm: np.ndarray,
        last_date: date,
        horizon: int,
        top_features: Sequence[str] = (),
    ) -> None:
        self.row_of = {key: row for row, key in enumerate(keys)}
        self.values = values.astype(np.float32)
        self.from_lightgbm = from_lightgbm.astype(bool)
        self.last_date = last_date
        self.horizon = horizon
        self.dates = [(last_date + timedelta(days=day + 1)).isoformat() for day in range(horizon)]
        self.markets = sorted({market for _, market in keys})
        self.top_features = list(top_features)

    # serving's fast path
    def answer(self, request: Mapping[str, Any], online: Mapping[str, Any] | None = None) -> dict[str, Any]:
        market = str(request.get("market", ""))
        if market not in self.markets:
            raise ValueError(f"market: unknown market {market!r} (known: {', '.join(self.markets)})")
        horizon = int(request.get("horizon", self.horizon))
        if not 1 <= horizon <= self.horizon:
            raise ValueError(f"horizon: {horizon} is outside 1..{self.horizon}, the trained maximum")
        levels = [float(level) for level in request.get("quantiles", list(TRAINED_QUANTILES))]
        untrained = [level for level in levels if level not in TRAINED_QUANTILES]
        if untrained:
            known = ", ".join(str(level) for level in TRAINED_QUANTILES)
            raise ValueError(f"quantiles: {untrained} not available (trained: {known})")
        products = [str(product) for product in request.get("product_ids", [])]
        if not products:
            raise ValueError("product_ids: give at least one product")
        rows = []
        for product in products:
            row = self.row_of.get((product, market))
            if row is None:
                raise ValueError(f"product_ids: unknown product {product!r} in market {market!r}")
            rows.append(row)
        columns = [1 + list(TRAINED_QUANTILES).index(level) for level in levels]
        names = [_quantile_key(level) for level in levels]
        forecasts = []
        for product, row in zip(products, rows, strict=True):
            block = self.values[row, :horizon].tolist()
            for day in range(horizon):
                values = block[day]
                item = {"product_id": product, "date": self.dates[day], "mean": values[0]}
                for name, column in zip(names, columns, strict=True):
                    item[name] = values[column]
                forecasts.append(item)
        return {"market": market, "forecasts": forecasts}

    def online_entities(self, request: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        return None

    def smoke_request(self) -> dict[str, Any]:
        product, market = next(
            (key for key, row in self.row_of.items() if self.from_lightgbm[row]), next(iter(self.row_of))
        )
        return {
            "product_ids": [product],
            "market": market,
            "horizon": min(7, self.horizon),
            "quantiles": [0.1, 0.5, 0.9],
        }

    def describe(self) -> dict[str, Any]:
        return {
            "markets": self.markets,
            "series": len(self.row_of),
            "lightgbm_series": int(self.from_lightgbm.sum()),
            "seasonal_naive_series": int((~self.from_lightgbm).sum()),
            "horizon": self.horizon,
            "quantiles": list(TRAINED_QUANTILES),
            "trained_through": self.last_date.isoformat(),
            "first_forecast_date": self.dates[0],
            "top_features": self.top_features,
        }

    def forecast_frame(self, days: int | None = None) -> pl.DataFrame:
        """Every series' served forecast for the first `days` days (default: the horizon), as
        product_id, market_id, date, mean, p10, p50, p90: the numbers `answer` slices."""
        days = self.horizon if days is None else days
        if not 1 <= days <= self.horizon:
            raise ValueError(f"days: {days} is outside 1..{self.horizon}, the trained maximum")
        keys = sorted(self.row_of, key=self.row_of.__getitem__)
        block = self.values[:, :days].reshape(-1, self.values.shape[2])
        dates = [date.fromisoformat(day) for day in self.dates[:days]]
        return pl.DataFrame(
            [
                pl.Series("product_id", [product for product, _ in keys for _ in dates], pl.String),
                pl.Series("market_id", [market for _, market in keys for _ in dates], pl.String),
                pl.Series("date", dates * len(keys), pl.Date),
                *(
                    pl.Series(name, block[:, column], pl.Float64)
                    for column, name in enumerate(FORECAST_VALUE_COLUMNS)
                ),
            ]
        )

    # MLflow's generic path: one input row per request, one output row per product and day
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        rows = []
        for index, request in enumerate(model_input.to_dict(orient="records")):
            request["product_ids"] = list(request["product_ids"])
            request["quantiles"] = list(request.get("quantiles", list(TRAINED_QUANTILES)))
            answer = self.answer(request)
            rows += [{"request": index, "market": answer["market"], **item} for item in answer["forecasts"]]
        columns = ["request", "market", "product_id", "date", "mean", *TRAINED_QUANTILES.values()]
        return pd.DataFrame(rows).reindex(columns=columns)


# -- fitting ------------------------------------------------------------------------------------


@dataclass
class ForecasterTrained(TrainedModel):
    """The packaged model, plus what evaluation reuses: the LightGBM backtest and the final model."""

    backtest: Any = None  # training.evaluation.forecast.BacktestResult of the global LightGBM
    backtest_seconds: float = 0.0
    final_model: Any = None  # models.forecasting.GlobalLightGBM fitted on all the data
    final_forecast: pl.DataFrame | None = None
    params: dict[str, Any] = field(default_factory=dict)


def default_params(config: ForecasterConfig) -> dict[str, Any]:
    return config.lightgbm.params.model_dump()


def search_space(trial: optuna.Trial, config: ForecasterConfig) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.03, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 15, 127, log=True),
        # not below LightGBM's default of 20: the binned dataset is pre-filtered with it
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 20, 300, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        "tweedie_variance_power": trial.suggest_float("tweedie_variance_power", 1.05, 1.5),
    }


def lightgbm_factory(data: ForecastData, config: ForecasterConfig, params: Mapping[str, Any]) -> Any:
    from models.forecasting import GlobalLightGBM

    settings = config.lightgbm

    def make() -> GlobalLightGBM:
        return GlobalLightGBM(
            SPEC,
            config.horizon,
            data.events,
            static_columns=STATIC_COLUMNS,
            params=dict(params),
            num_boost_round=settings.num_boost_round,
            early_stopping_rounds=settings.early_stopping_rounds,
            interval_bins=settings.interval_bins,
            relative_level=settings.relative_level,
            num_threads=settings.num_threads,
        )

    return make


def _run_backtest(
    factory: Any,
    data: ForecastData,
    config: ForecasterConfig,
    on_fold: Any = None,
    *,
    validation: bool = False,
) -> Any:
    """The rolling-origin backtest on the test folds, or (`validation`) on the folds that end where
    the first test fold begins, which tuning scores trials on."""
    from training.evaluation.forecast import backtest, fold_origins

    frame, folds = data.frame, config.backtest.folds
    if validation:
        step = config.backtest.step or config.horizon
        first_test_origin = fold_origins(data.frame[SPEC.date], config.horizon, folds, step)[0]
        frame = frame.filter(pl.col(SPEC.date) <= first_test_origin)
        folds = config.backtest.validation_folds
    return backtest(
        factory,
        frame,
        config.horizon,
        folds,
        config.backtest.step,
        spec=SPEC,
        attributes=STATIC_COLUMNS,
        on_fold=on_fold,
    )


def fit(
    training_set: TrainingSet, config: ForecasterConfig, params: Mapping[str, Any], report: Reporter | None
) -> ForecasterTrained:
    from models.forecasting import SeasonalNaive
    from training.evaluation.forecast import summarize

    data: ForecastData = training_set.data
    factory = lightgbm_factory(data, config, params)
    validation_scores: list[float] = []
    if report is not None:  # only tuning reports: score it on folds before the test folds

        def on_validation_fold(fold: int, per_series: pl.DataFrame) -> None:
            validation_scores.append(float(summarize(per_series)["mase"][0]))
            # the running mean, so a later fold cannot look better by luck alone
            report(fold, float(np.mean(validation_scores)))

        _run_backtest(factory, data, config, on_validation_fold, validation=True)

    scores: list[float] = []

    def on_fold(fold: int, per_series: pl.DataFrame) -> None:
        scores.append(float(summarize(per_series)["mase"][0]))

    started = time.perf_counter()
    result = _run_backtest(factory, data, config, on_fold)
    backtest_seconds = time.perf_counter() - started

    final = factory().fit(data.frame)
    forecast = final.predict(config.horizon, data.future)
    fallback = _fallback_forecast(data, config, SeasonalNaive)
    keys, values, from_lightgbm = _forecast_arrays(forecast, fallback, config.horizon)
    importance = final.feature_importance().group_by("feature").agg(pl.col("importance").sum())
    top = importance.sort("importance", descending=True).head(10)["feature"].to_list()
    model = ForecasterModel(keys, values, from_lightgbm, data.last_date, config.horizon, top)
    request = model.smoke_request()
    input_example = pd.DataFrame([request])
    return ForecasterTrained(
        python_model=model,
        input_example=input_example,
        output_example=model.predict(None, input_example),
        extra_requirements=(),
        learning_curve={"backtest_mase": scores},
        validation_score=float(np.mean(validation_scores)) if validation_scores else None,
        backtest=result,
        backtest_seconds=backtest_seconds,
        final_model=final,
        final_forecast=forecast,
        params=dict(params),
    )


def _fallback_forecast(data: ForecastData, config: ForecasterConfig, naive_class: Any) -> pl.DataFrame:
    """Seasonal naive for the listed series LightGBM does not model; zeros for the never sold."""
    parts = []
    if data.others.height:
        parts.append(naive_class(SPEC).fit(data.others).predict(config.horizon))
    if data.unsold.height:
        days = pl.DataFrame(
            {
                "date": pl.date_range(
                    data.last_date + timedelta(days=1),
                    data.last_date + timedelta(days=config.horizon),
                    eager=True,
                )
            }
        )
        zeros = data.unsold.join(days, how="cross").with_columns(
            pl.lit(0.0).alias(c) for c in FORECAST_VALUE_COLUMNS
        )
        parts.append(zeros)
    if not parts:
        return pl.DataFrame(
            schema={
                "product_id": pl.String,
                "market_id": pl.String,
                "date": pl.Date,
                **{c: pl.Float64 for c in FORECAST_VALUE_COLUMNS},
            }
        )
    return pl.concat(
        [part.select("product_id", "market_id", "date", *FORECAST_VALUE_COLUMNS) for part in parts],
        how="vertical_relaxed",
    )


def _served_quantiles(values: np.ndarray) -> np.ndarray:
    """Mean, p10, p50, p90 on the last axis, as served: quantiles clipped at zero and ordered
    (p10 <= p50 <= p90) whatever the source."""
    values = values.copy()
    values[..., 1:] = np.sort(np.clip(values[..., 1:], 0.0, None), axis=-1)
    return values


def _forecast_arrays(
    lightgbm: pl.DataFrame, fallback: pl.DataFrame, horizon: int
) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray]:
    """Series keys and a (series, day, mean/p10/p50/p90) array, LightGBM series first."""
    both = pl.concat(
        [
            lightgbm.select("product_id", "market_id", "date", *FORECAST_VALUE_COLUMNS).with_columns(
                pl.lit(True).alias("_lgb")
            ),
            fallback.with_columns(pl.lit(False).alias("_lgb")),
        ],
        how="vertical_relaxed",
    ).sort(["_lgb", "product_id", "market_id", "date"], descending=[True, False, False, False])
    series = both.group_by(["product_id", "market_id"], maintain_order=True).agg(
        pl.len(), pl.col("_lgb").first()
    )
    if (series["len"] != horizon).any():
        raise RuntimeError("every series must have a forecast for each day of the horizon")
    values = (
        both.select(FORECAST_VALUE_COLUMNS)
        .to_numpy()
        .reshape(series.height, horizon, len(FORECAST_VALUE_COLUMNS))
    )
    values = _served_quantiles(values)
    keys = list(zip(series["product_id"].to_list(), series["market_id"].to_list(), strict=True))
    return keys, values, series["_lgb"].to_numpy()


# -- evaluation ---------------------------------------------------------------------------------


class OracleForecaster:
    """The simulator's true mean demand as a forecast: P10/P50/P90 by Monte Carlo of its units.

    Units are purchases plus extra units per purchase (1 + Poisson(extra) each), purchases
    Poisson with mean mean_demand / (1 + extra): the simulator's own sampling model. Reading the
    truth is only allowed here, in evaluation.
    """

    def __init__(self, truth: pl.DataFrame, extra_units_mean: float, draws: int, seed: int = 0) -> None:
        self.truth = truth
        self.extra = extra_units_mean
        self.draws = draws
        self.rng = np.random.default_rng(seed)

    def fit(self, history: pl.DataFrame) -> Self:
        self.series = history.select(SPEC.keys).unique()
        self.last = history[SPEC.date].max()
        return self

    def predict(self, horizon: int, future_covariates: pl.DataFrame | None = None) -> pl.DataFrame:
        days = pl.DataFrame(
            {
                "date": pl.date_range(
                    self.last + timedelta(days=1), self.last + timedelta(days=horizon), eager=True
                )
            }
        )
        grid = self.series.join(days, how="cross").join(self.truth, on=[*SPEC.keys, "date"], how="left")
        mean = grid["mean_demand"].fill_null(0.0).to_numpy()
        purchases = self.rng.poisson(np.repeat(mean[:, None] / (1 + self.extra), self.draws, axis=1))
        units = purchases + self.rng.poisson(self.extra * purchases)
        quantiles = np.quantile(units, [0.1, 0.5, 0.9], axis=1)
        return (
            grid.select(*SPEC.keys, "date")
            .with_columns(
                pl.Series("mean", mean),
                pl.Series("p10", quantiles[0]),
                pl.Series("p50", quantiles[1]),
                pl.Series("p90", quantiles[2]),
            )
            .sort([*SPEC.keys, "date"])
        )


def _summary(result: Any) -> dict[str, float]:
    row = result.summary().row(0, named=True)
    return {
        key: float(row[key]) for key in SUMMARY_KEYS if row.get(key) is not None and math.isfinite(row[key])
    }


def _metric_name(value: Any) -> str:
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", str(value))


def _breakdown(result: Any, by: str) -> tuple[dict[str, dict[str, float]], pl.DataFrame]:
    table = result.summary(by=[by])
    metrics = {
        _metric_name(row[by]): {
            k: float(row[k])
            for k in ("mase", "wape", "coverage80")
            if row[k] is not None and math.isfinite(row[k])
        }
        for row in table.iter_rows(named=True)
    }
    return metrics, table


def _subset(result: Any, series: pl.DataFrame) -> Any:
    from training.evaluation.forecast import BacktestResult

    keys = list(SPEC.keys)
    return BacktestResult(
        result.metrics.join(series, on=keys), result.forecasts.join(series, on=keys), result.folds
    )


def _reconciled_wape(result: Any, categories: pl.DataFrame) -> dict[str, float]:
    """Bottom-up sums of the last fold's forecasts and actuals; WAPE of the P50 at each level."""
    from models.forecasting.reconcile import bottom_up, level_name

    last = result.forecasts.filter(pl.col("fold") == result.forecasts["fold"].max()).join(
        categories, on="product_id", how="left"
    )
    levels = [["market_id", "category", "product_id"], ["market_id", "category"], ["market_id"], []]
    summed = bottom_up(last, levels, value_columns=(*FORECAST_VALUE_COLUMNS, SPEC.target))
    out = {}
    for level in levels:
        part = summed.filter(pl.col("level") == level_name(level))
        out[_metric_name(level_name(level)).replace("/", "_")] = float(
            (part["p50"] - part[SPEC.target]).abs().sum() / max(part[SPEC.target].sum(), 1e-9)
        )
    return out


def _holiday_window(data: ForecastData, config: ForecasterConfig) -> tuple[date, str] | None:
    """A week before the first day of the configured event's last occurrence whose window fits in the
    history, and the market (of those running it then) that sold the most in that window."""
    plot = config.holiday_plot
    first, horizon = data.frame["date"].min(), timedelta(days=config.horizon)
    starts = (
        data.events.filter(pl.col("name") == plot.event)
        .select("market_id", "date")
        .unique()
        .sort("market_id", "date")
        # an occurrence starts on a day that does not follow another day of the event
        .filter((pl.col("date") - pl.col("date").shift(1).over("market_id")).dt.total_days().fill_null(2) > 1)
        .with_columns((pl.col("date") - timedelta(days=plot.days_before)).alias("origin"))
        .filter(
            (pl.col("origin") + horizon <= data.last_date)
            & ((pl.col("origin") - first).dt.total_days() > 2 * config.horizon + 14)
        )
    )
    if starts.height == 0:
        return None
    origin = starts["origin"].max()
    markets = starts.filter(pl.col("origin") == origin)["market_id"]
    in_window = data.frame.filter(
        pl.col("market_id").is_in(markets.implode()),
        (pl.col("date") > origin) & (pl.col("date") <= origin + horizon),
    )
    volume = (
        in_window.group_by("market_id")
        .agg(pl.col(SPEC.target).sum())
        .sort([SPEC.target, "market_id"], descending=[True, False])
    )
    return origin, (volume["market_id"][0] if volume.height else markets.sort()[0])


def _holiday_evaluation(
    trained: ForecasterTrained, data: ForecastData, config: ForecasterConfig
) -> tuple[dict[str, Any], dict[str, Any]]:
    from models.forecasting import SeasonalNaive
    from training.evaluation.forecast import plot_forecast, series_metrics, summarize

    window = _holiday_window(data, config)
    if window is None:
        return {}, {}
    origin, market = window
    end = origin + timedelta(days=config.horizon)
    history = data.frame.filter(pl.col("date") <= origin)
    actual = data.frame.filter((pl.col("date") > origin) & (pl.col("date") <= end))
    future = actual.drop(SPEC.target)
    model = lightgbm_factory(data, config, trained.params)().fit(history)
    forecast = model.predict(config.horizon, future)
    naive = SeasonalNaive(SPEC).fit(history).predict(config.horizon)
    metrics: dict[str, Any] = {}
    for name, candidate in (("lightgbm", forecast), ("seasonal_naive", naive)):
        row = summarize(series_metrics(candidate, actual, history, SPEC)).row(0, named=True)
        metrics[name] = {
            k: float(row[k])
            for k in ("mase", "wape", "coverage80")
            if row[k] is not None and math.isfinite(row[k])
        }
    top = (
        actual.filter(pl.col("market_id") == market)
        .group_by(SPEC.keys)
        .agg(pl.col(SPEC.target).sum())
        .sort([SPEC.target, "product_id"], descending=[True, False])
        .head(config.holiday_plot.series)
    )
    figures = {}
    for index, series in enumerate(top.select(SPEC.keys).iter_rows(named=True)):
        figures[f"holiday_{index}_{series['product_id']}_{series['market_id']}.png"] = plot_forecast(
            history,
            forecast,
            SPEC,
            series=series,
            actual=actual,
            lookback=3 * config.horizon,
            title=f"{series['product_id']} in {series['market_id']}: {config.holiday_plot.event} "
            f"{origin + timedelta(days=config.holiday_plot.days_before)}, forecast from {origin}",
        )
    return metrics, figures


def evaluate(trained: ForecasterTrained, training_set: TrainingSet, config: ForecasterConfig) -> Evaluation:
    from models.forecasting import ProphetPerSeries, SeasonalNaive
    from models.forecasting.parallel import ray_map, ray_runtime

    data: ForecastData = training_set.data
    lightgbm = trained.backtest
    metrics: dict[str, Any] = {"lightgbm": _summary(lightgbm)}
    tables: dict[str, pl.DataFrame] = {"backtest_folds": lightgbm.folds}
    timing = {"lightgbm_backtest_s": trained.backtest_seconds}

    naive = _run_backtest(lambda: SeasonalNaive(SPEC), data, config)
    metrics["seasonal_naive"] = _summary(naive)
    metrics["vs_seasonal_naive"] = {
        "mase_ratio": metrics["lightgbm"]["mase"] / metrics["seasonal_naive"]["mase"]
    }

    if data.truth is not None:
        oracle = _run_backtest(
            lambda: OracleForecaster(data.truth, data.extra_units_mean, config.oracle_draws), data, config
        )
        metrics["oracle"] = _summary(oracle)
        metrics["oracle_ratio"] = {
            key: metrics["lightgbm"][key] / metrics["oracle"][key]
            for key in ("mase", "wape", "wrmsse", "pinball")
            if metrics["oracle"].get(key)
        }

    if config.prophet.enabled:
        top = (
            data.frame.group_by(SPEC.keys)
            .agg(pl.col(SPEC.target).sum())
            .sort([SPEC.target, "product_id"], descending=[True, False])
            .head(config.prophet.max_series)
            .select(SPEC.keys)
        )
        subset = data.frame.join(top, on=list(SPEC.keys))
        prophet_data = ForecastData(
            subset,
            data.future,
            data.others,
            data.unsold,
            data.events,
            data.last_date,
            None,
            0.0,
            data.ray_address,
        )
        executor = ray_map(data.ray_address, num_cpus=config.prophet.num_cpus)
        started = time.perf_counter()
        with ray_runtime(data.ray_address, config.prophet.num_cpus):
            prophet = _run_backtest(
                lambda: ProphetPerSeries(
                    SPEC,
                    data.events,
                    executor=executor,
                    uncertainty_samples=config.prophet.uncertainty_samples,
                ),
                prophet_data,
                config,
            )
        timing["prophet_ray_s"] = time.perf_counter() - started
        metrics["prophet"] = _summary(prophet)
        metrics["lightgbm_on_prophet_series"] = _summary(_subset(lightgbm, top))
        metrics["vs_prophet"] = {
            "mase_ratio": metrics["lightgbm_on_prophet_series"]["mase"] / metrics["prophet"]["mase"]
        }
    metrics["timing"] = timing

    for by in ("market_id", "category"):
        metrics[f"by_{by.removesuffix('_id')}"], tables[f"by_{by.removesuffix('_id')}"] = _breakdown(
            lightgbm, by
        )
    categories = data.frame.group_by("product_id").agg(pl.col("category").first())
    metrics["reconciled_wape"] = _reconciled_wape(lightgbm, categories)

    holiday_metrics, figures = _holiday_evaluation(trained, data, config)
    if holiday_metrics:
        metrics["holiday"] = holiday_metrics
    figures.update(_last_fold_figures(lightgbm, data, config))
    contributions = _contributions(trained, data, config)
    tables["contributions"] = contributions
    tables["model_comparison"] = pl.DataFrame(
        [
            {"model": name, **values}
            for name, values in metrics.items()
            if name in ("lightgbm", "seasonal_naive", "oracle", "prophet", "lightgbm_on_prophet_series")
        ]
    )
    return Evaluation(
        metrics, primary_metric="lightgbm.mase", higher_is_better=False, figures=figures, tables=tables
    )


def _last_fold_figures(result: Any, data: ForecastData, config: ForecasterConfig) -> dict[str, Any]:
    from training.evaluation.forecast import plot_forecast

    last = result.forecasts.filter(pl.col("fold") == result.forecasts["fold"].max())
    top = (
        last.group_by(SPEC.keys)
        .agg(pl.col(SPEC.target).sum())
        .sort([SPEC.target, "product_id"], descending=[True, False])
        .head(1)
    )
    series = top.select(SPEC.keys).row(0, named=True)
    origin = last["date"].min() - timedelta(days=1)
    figure = plot_forecast(
        data.frame.filter(pl.col("date") <= origin),
        last,
        SPEC,
        series=series,
        actual=data.frame.filter(pl.col("date") > origin),
        title=f"last backtest fold: {series['product_id']} in {series['market_id']} (P10-P90 band)",
    )
    return {"last_fold.png": figure}


def _contributions(trained: ForecasterTrained, data: ForecastData, config: ForecasterConfig) -> pl.DataFrame:
    """Mean absolute per-feature contribution (LightGBM pred_contrib) to the served forecasts."""
    explained = trained.final_model.explain(config.horizon, data.future)
    features = [c for c in explained.columns if c not in (*SPEC.keys, SPEC.date, "log_baseline", "bias")]
    means = explained.select(pl.col(features).abs().mean())
    return (
        pl.DataFrame({"feature": features, "mean_abs_contribution": [means[c][0] for c in features]})
        .drop_nulls()
        .sort("mean_abs_contribution", descending=True)
    )


# -- the retraining gate ------------------------------------------------------------------------

GATE_METRIC = "mase"  # the family's primary metric, on the champion's live window


def _holdout_fold(
    factory: Any, frame: pl.DataFrame, origin: date, days: int, attributes: Sequence[str]
) -> pl.DataFrame:
    """One fold of the family's rolling-origin backtest, its origin at `origin`: refit on the rows up
    to it, forecast the `days` after it with their known covariates."""
    from training.evaluation.forecast import backtest

    result = backtest(
        factory,
        frame.filter(pl.col(SPEC.date) <= origin + timedelta(days=days)),
        days,
        1,
        spec=SPEC,
        attributes=attributes,
    )
    trained_through = result.folds["train_end"][0]
    if trained_through != origin:  # the grid has every day, so the only fold starts there
        raise RuntimeError(f"holdout fold trained through {trained_through}, not the origin {origin}")
    return result.forecasts


def compare_on_holdout(
    champion: ForecasterModel,
    challenger: ForecasterModel,
    challenger_params: Mapping[str, Any],
    training_set: TrainingSet,
    config: ForecasterConfig,
) -> HoldoutComparison:
    """The champion's live accuracy against the challenger's procedure, on the days since the
    champion was trained.

    The holdout is the days of the challenger's training set after the champion's `last_date`
    (capped at both horizons): the actuals that arrived since the champion was trained, so the one
    window neither model was fitted on. The champion is scored by its served forecasts
    (`ForecasterModel.forecast_frame`, the arrays `answer` slices). The registered challenger cannot
    be scored there: it was fitted on all the data, its forecasts start after the newest day, which
    has no actuals yet. So the challenger's procedure (its params and `config`) is refit at the
    champion's origin on the history up to it, by one fold of the family's own backtest
    (`training.evaluation.forecast.backtest`), LightGBM series and seasonal-naive fallback series
    alike, and post-processed as served: the same information set, window and metric. The
    registered challenger is checked by the gate's smoke request, and here that it was trained on
    `training_set`. As in the backtest, which series LightGBM models is chosen on the challenger's
    whole training set (the actuals of the window decide the selection, never a forecast).

    Scored: every series both forecast (the champion's rows, LightGBM or seasonal naive, that the
    procedure forecasts too) with history at the origin; series first sold in the window are
    left out (neither model could know them). MASE (the family's primary metric, scaled by each
    series' in-sample seasonal-naive error up to the origin, so it stays meaningful on a few days);
    WAPE, bias and coverage80 of both in `details`. Days are whole market-local days only
    (`build_forecast_data` stops at the last day over in every market).

    Raises `training.pipeline.NoHoldout` when no day of actuals follows the champion's last day
    (the gate refuses then: nothing shows the challenger is better).
    """
    from models.forecasting import SeasonalNaive
    from training.evaluation.forecast import series_metrics, summarize
    from training.pipeline import NoHoldout

    for role, model in (("champion", champion), ("challenger", challenger)):
        if not isinstance(model, ForecasterModel):
            raise TypeError(f"{role}: a {type(model).__name__}, not a {ForecasterModel.__name__}")
    data: ForecastData = training_set.data
    if challenger.last_date != data.last_date:
        raise ValueError(
            f"challenger trained through {challenger.last_date}, but the training set ends on "
            f"{data.last_date}: it is not the challenger's"
        )
    origin = champion.last_date
    days = min(champion.horizon, config.horizon, (data.last_date - origin).days)
    if days < 1:
        raise NoHoldout(
            f"no actuals after the champion's last day {origin}: the training set ends on {data.last_date}"
        )
    end = origin + timedelta(days=days)
    keys, on = list(SPEC.keys), [*SPEC.keys, SPEC.date]

    factory = lightgbm_factory(data, config, challenger_params)
    procedure = [_holdout_fold(factory, data.frame, origin, days, STATIC_COLUMNS)]
    if data.others.height:
        # no price on the fallback grid: the backtest's revenue weights (unused here) then count nothing
        others = data.others.with_columns(pl.lit(None, pl.Float64).alias(SPEC.price))
        procedure.append(_holdout_fold(lambda: SeasonalNaive(SPEC), others, origin, days, ()))
    values = list(FORECAST_VALUE_COLUMNS)
    refit = pl.concat([part.select(*on, *values) for part in procedure], how="vertical_relaxed")
    refit = refit.with_columns(
        pl.DataFrame(_served_quantiles(refit.select(values).to_numpy()), schema=values)
    )
    served = champion.forecast_frame(days)

    everything = pl.concat([data.frame, data.others], how="diagonal_relaxed")
    history = everything.filter(pl.col(SPEC.date) <= origin)
    scored = (
        served.select(keys)
        .unique()
        .join(refit.select(keys).unique(), on=keys)
        .join(history.select(keys).unique(), on=keys)
    )
    actual = everything.filter(pl.col(SPEC.date) > origin, pl.col(SPEC.date) <= end).join(scored, on=keys)
    if actual.height == 0:
        raise NoHoldout(f"no series forecast by both models has actuals between {origin} and {end}")
    history = history.join(scored, on=keys)

    scores = {}
    for role, forecast in (("champion", served), ("challenger", refit)):
        covered = actual.join(forecast, on=on, how="semi").height
        if covered != actual.height:
            raise RuntimeError(f"{role} forecasts {covered} of the holdout's {actual.height} rows")
        scores[role] = summarize(series_metrics(forecast, actual, history, SPEC)).row(0, named=True)

    first, last = actual[SPEC.date].min(), actual[SPEC.date].max()
    lightgbm_rows = set(data.frame.select(keys).unique().iter_rows())
    series = scored.height
    by_lightgbm = sum(key in lightgbm_rows for key in scored.iter_rows())
    champion_lightgbm = sum(bool(champion.from_lightgbm[champion.row_of[key]]) for key in scored.iter_rows())
    window_days = actual[SPEC.date].n_unique()
    holdout = (
        f"{first}..{last} ({window_days} day{'s' if window_days > 1 else ''} after the champion's last day "
        f"{origin}), "
        f"{series} series ({by_lightgbm} LightGBM in the challenger's procedure, "
        f"{champion_lightgbm} in the champion), "
        f"{actual.height} rows, {actual[SPEC.target].sum():g} units"
    )
    details = {
        f"{role}_{metric}": float(scores[role][metric])
        for role in scores
        for metric in ("wape", "bias", "coverage80")
        if scores[role][metric] is not None and math.isfinite(scores[role][metric])
    }
    details.update(
        {
            "holdout_days": float(window_days),
            "holdout_series": float(series),
            "holdout_rows": float(actual.height),
            "holdout_units": float(actual[SPEC.target].sum()),
        }
    )
    return HoldoutComparison(
        metric=GATE_METRIC,
        higher_is_better=False,
        champion=float(scores["champion"][GATE_METRIC]),
        challenger=float(scores["challenger"][GATE_METRIC]),
        holdout=holdout,
        details=details,
    )


# -- the family ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForecasterFamily:
    names = FORECASTER
    name = FORECASTER.name
    registered_model = FORECASTER.registered_model
    config_name = FORECASTER.config_name
    feature_service = FORECASTER.feature_service
    config_model: type[ForecasterConfig] = ForecasterConfig
    higher_is_better: bool = False  # MASE

    @staticmethod
    def live_check(settings: Settings, champion: Any, config: Any) -> Any:
        from training.monitoring.live import check_forecaster

        return check_forecaster(settings, champion, config)

    def training_set(self, settings: Settings, config: ForecasterConfig) -> TrainingSet:
        return training_set(settings, config)

    def fit(
        self,
        training_set: TrainingSet,
        config: ForecasterConfig,
        params: Mapping[str, Any],
        report: Reporter | None,
    ) -> TrainedModel:
        with _quiet_lightgbm():
            return fit(training_set, config, params, report)

    def evaluate(
        self, trained: TrainedModel, training_set: TrainingSet, config: ForecasterConfig
    ) -> Evaluation:
        with _quiet_lightgbm():
            return evaluate(trained, training_set, config)  # type: ignore[arg-type]

    def default_params(self, config: ForecasterConfig) -> dict[str, Any]:
        return default_params(config)

    def search_space(self, trial: optuna.Trial, config: ForecasterConfig) -> dict[str, Any]:
        return search_space(trial, config)

    def compare_on_holdout(
        self,
        champion: PythonModel,
        challenger: PythonModel,
        challenger_params: Mapping[str, Any],
        training_set: TrainingSet,
        config: ForecasterConfig,
    ) -> HoldoutComparison:
        with _quiet_lightgbm():
            return compare_on_holdout(
                champion,  # type: ignore[arg-type]
                challenger,  # type: ignore[arg-type]
                challenger_params,
                training_set,
                config,
            )


@contextlib.contextmanager
def _quiet_lightgbm() -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*categorical_feature.*")
        yield


FAMILY = ForecasterFamily()
