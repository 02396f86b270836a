"""The forecaster's retraining gate: the champion's live accuracy against the challenger's procedure,
on the days since the champion was trained."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import polars as pl

from models.forecasting.series import FORECAST_VALUE_COLUMNS
from models.forecasting.served import ServedForecaster, fallback_forecast, served_quantiles
from training.forecaster.config import ForecasterConfig
from training.forecaster.data import SPEC, STATIC_COLUMNS, ForecastData
from training.forecaster.fit import lightgbm_factory, quiet_lightgbm
from training.pipeline import HoldoutComparison, TrainingSet

GATE_METRIC = "mase"  # the family's primary metric, on the champion's live window


def _holdout_fold(
    factory: Callable[[], Any], frame: pl.DataFrame, origin: date, days: int, attributes: Sequence[str]
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
    champion: ServedForecaster,
    challenger: ServedForecaster,
    challenger_params: Mapping[str, Any],
    training_set: TrainingSet,
    config: ForecasterConfig,
) -> HoldoutComparison:
    """The champion's live accuracy against the challenger's procedure, on the days since the
    champion was trained.

    The holdout is the days of the challenger's training set after the champion's `last_date`
    (capped at both horizons): the actuals that arrived since the champion was trained, so the one
    window neither model was fitted on. The champion is scored by its served forecasts
    (`ServedForecaster.forecast_frame`, the arrays `answer` slices). The registered challenger cannot
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
    with quiet_lightgbm():
        return _compare_on_holdout(champion, challenger, challenger_params, training_set, config)


def _compare_on_holdout(
    champion: ServedForecaster,
    challenger: ServedForecaster,
    challenger_params: Mapping[str, Any],
    training_set: TrainingSet,
    config: ForecasterConfig,
) -> HoldoutComparison:
    from training.evaluation.forecast import series_metrics, summarize
    from training.pipeline import NoHoldout

    for role, model in (("champion", champion), ("challenger", challenger)):
        if not isinstance(model, ServedForecaster):
            raise TypeError(f"{role}: a {type(model).__name__}, not a {ServedForecaster.__name__}")
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
        # the fallback series as served: seasonal naive on their history up to the origin
        others = data.others.filter(pl.col(SPEC.date) <= origin)
        procedure.append(fallback_forecast(others, data.unsold.clear(), origin, days, SPEC))
    values = list(FORECAST_VALUE_COLUMNS)
    refit = pl.concat([part.select(*on, *values) for part in procedure], how="vertical_relaxed")
    refit = refit.with_columns(pl.DataFrame(served_quantiles(refit.select(values).to_numpy()), schema=values))
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
