"""Fitting the forecaster: the rolling-origin backtest, the final fit, and the served model.

The model is trained once per rolling origin (the backtest, which reports each fold's MASE so Optuna
can prune) and once on all the data; the served model holds the forecast from that last origin,
with the planned promotions of the coming days as known covariates, so `answer` is a slice of
arrays: no feature computation and no LightGBM call per request. A request for more days than the
trained horizon is refused.

Ray lives here, not in models/: `ray_runtime` and `ray_map` are the executor Prophet per series
(`models.forecasting.ProphetPerSeries`) is handed in evaluation and the benchmarks.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from models.forecasting.parallel import Executor, Item, Result, apply_one
from models.forecasting.served import ServedForecaster, fallback_forecast, forecast_arrays
from models.terminal_progress import progress_on_terminal
from tracking.pyfunc import ServedPyfunc
from training.forecaster.config import ForecasterConfig
from training.forecaster.data import SPEC, STATIC_COLUMNS, ForecastData
from training.pipeline import Reporter, TrainedModel, TrainingSet

if TYPE_CHECKING:
    import optuna

    from models.forecasting import GlobalLightGBM


@contextlib.contextmanager
def quiet_lightgbm() -> Iterator[None]:
    """LightGBM's warning that the categorical features given override the dataset's, silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*categorical_feature.*")
        yield


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


def lightgbm_factory(
    data: ForecastData, config: ForecasterConfig, params: Mapping[str, Any]
) -> Callable[[], GlobalLightGBM]:
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


def run_backtest(
    factory: Callable[[], Any],
    data: ForecastData,
    config: ForecasterConfig,
    on_fold: Callable[[int, pl.DataFrame], None] | None = None,
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
    with quiet_lightgbm():
        return _fit(training_set, config, params, report)


def _fit(
    training_set: TrainingSet, config: ForecasterConfig, params: Mapping[str, Any], report: Reporter | None
) -> ForecasterTrained:
    from training.evaluation.forecast import summarize

    data: ForecastData = training_set.data
    factory = lightgbm_factory(data, config, params)
    validation_scores: list[float] = []
    if report is not None:  # only tuning reports: score it on folds before the test folds

        def on_validation_fold(fold: int, per_series: pl.DataFrame) -> None:
            validation_scores.append(float(summarize(per_series)["mase"][0]))
            # the running mean, so a later fold cannot look better by luck alone
            report(fold, float(np.mean(validation_scores)))

        run_backtest(factory, data, config, on_validation_fold, validation=True)

    scores: list[float] = []

    def on_fold(fold: int, per_series: pl.DataFrame) -> None:
        scores.append(float(summarize(per_series)["mase"][0]))

    started = time.perf_counter()
    result = run_backtest(factory, data, config, on_fold)
    backtest_seconds = time.perf_counter() - started

    final = factory().fit(data.frame)
    forecast = final.predict(config.horizon, data.future)
    fallback = fallback_forecast(data.others, data.unsold, data.last_date, config.horizon, SPEC)
    keys, values, from_lightgbm = forecast_arrays(forecast, fallback, config.horizon)
    importance = final.feature_importance().group_by("feature").agg(pl.col("importance").sum())
    top = importance.sort("importance", descending=True).head(10)["feature"].to_list()
    served = ServedForecaster(keys, values, from_lightgbm, data.last_date, config.horizon, top)
    model = ServedPyfunc(served)
    input_example = model.input_example()
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


@contextlib.contextmanager
def ray_runtime(address: str | None = None, num_cpus: int = 2) -> Iterator[None]:
    """Ray for the block: connect to `address` (a cluster) or start a local Ray of `num_cpus`, unless
    Ray is already up; shut down only what was started here. Wrap a whole backtest in it, so the
    executor's calls (fit, then predict, per fold) share one Ray instead of starting one each."""
    import ray

    started = False
    if not ray.is_initialized():
        options: dict[str, object] = {"include_dashboard": False, "log_to_driver": False}
        options.update({"address": address} if address else {"num_cpus": num_cpus})
        # Ray waits a fixed 30 s for its raylet to register; on an overloaded machine that can pass,
        # so a failed start is tried once more before giving up
        for attempt in range(2):
            try:
                ray.init(**options)
                break
            except Exception:
                ray.shutdown()
                if attempt == 1:
                    raise
        started = True
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def ray_map(address: str | None = None, num_cpus: int = 2) -> Executor:
    """An executor (`models.forecasting.parallel`) that runs `function` on every item as a Ray task
    (one CPU each).

    Uses the running Ray if there is one, else starts one for the call (see `ray_runtime`). Results
    come back in item order; the progress bar advances as tasks finish, in whatever order.
    """

    def executor(function: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
        import ray

        with ray_runtime(address, num_cpus):
            remote = ray.remote(num_cpus=1)(apply_one)
            shared = ray.put(function)  # shipped once, not with every task
            references = [remote.remote(shared, item) for item in items]
            pending = list(references)
            with tqdm(
                total=len(items),
                desc="series (ray)",
                unit="series",
                leave=False,
                disable=not progress_on_terminal(),
            ) as progress:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    progress.update(len(done))
            return ray.get(references)

    return executor
