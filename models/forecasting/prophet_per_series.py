"""One Prophet model per series, with its market's holidays and shopping events as Prophet holidays.

Series are fitted and forecast through a pluggable executor (see `parallel`): serial by default, a
process pool or Ray for many series. Each fit runs in whatever process the executor chooses, so the
cmdstan logging is silenced inside the work function, not once at import.

For weekly data an event is moved to the start of the period (week) that contains it, so that
Prophet sees it on a date of the series' grid. A series with fewer than two periods gets a flat
forecast of its mean. Forecasts are clipped at zero: demand is not negative.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Self

import pandas as pd
import polars as pl

from models.forecasting.events import EventCalendar
from models.forecasting.parallel import Executor, fit_many, serial_map
from models.forecasting.series import FORECAST_VALUE_COLUMNS, SeriesSpec, complete_grid


def quiet_prophet_logging() -> None:
    """cmdstanpy logs every optimisation at INFO; prophet warns on import when plotly is absent."""
    logging.getLogger("cmdstanpy").disabled = True
    for name in ("prophet", "prophet.plot"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class _SeriesJob:
    key: tuple[Any, ...]
    history: pd.DataFrame  # ds, y
    holidays: pd.DataFrame | None  # holiday, ds
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class _FittedSeries:
    key: tuple[Any, ...]
    model: Any  # prophet.Prophet, or None for a series too short to fit
    last_date: date
    mean: float


def _fit_series(job: _SeriesJob) -> _FittedSeries:
    quiet_prophet_logging()
    from prophet import Prophet

    history = job.history
    last_date = history["ds"].max().date()
    if len(history) < 2:
        return _FittedSeries(job.key, None, last_date, float(history["y"].mean()))
    model = Prophet(holidays=job.holidays, **job.settings)
    model.fit(history)
    return _FittedSeries(job.key, model, last_date, float(history["y"].mean()))


def _forecast_series(task: tuple[_FittedSeries, int, int]) -> pd.DataFrame:
    fitted, horizon, period_days = task
    quiet_prophet_logging()
    dates = pd.date_range(
        pd.Timestamp(fitted.last_date) + pd.Timedelta(days=period_days),
        periods=horizon,
        freq=f"{period_days}D",
    )
    if fitted.model is None:
        flat = [fitted.mean] * horizon
        return pd.DataFrame({"ds": dates, "yhat": flat, "yhat_lower": flat, "yhat_upper": flat})
    return fitted.model.predict(pd.DataFrame({"ds": dates}))[["ds", "yhat", "yhat_lower", "yhat_upper"]]


class ProphetPerSeries:
    """Prophet per series; P10/P90 are Prophet's 80% interval, P50 and mean its yhat."""

    def __init__(
        self,
        spec: SeriesSpec,
        events: pl.DataFrame | None = None,
        *,
        executor: Executor = serial_map,
        uncertainty_samples: int = 300,
        prophet_settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.calendar = EventCalendar(events, spec) if events is not None else None
        self.executor = executor
        daily = spec.frequency == "daily"
        self.settings = {
            "interval_width": 0.8,
            "uncertainty_samples": uncertainty_samples,
            "weekly_seasonality": daily,
            "daily_seasonality": False,
            "yearly_seasonality": "auto",
            **(prophet_settings or {}),
        }
        self._fitted: list[_FittedSeries] = []

    def _holidays_for(self, market: Any, start: date) -> pd.DataFrame | None:
        if self.calendar is None:
            return None
        events = self.calendar.events
        if self.spec.market is not None:
            events = events.filter(pl.col("market_id").is_null() | (pl.col("market_id") == str(market)))
        period = self.spec.period_days
        if period > 1:  # onto the start of the series' own week that contains the event
            events = events.with_columns(
                (
                    pl.lit(start)
                    + pl.duration(days=((pl.col("date") - pl.lit(start)).dt.total_days() // period) * period)
                ).alias("date")
            )
        events = events.filter(pl.col("date") >= start).unique(["name", "date"])
        if events.height == 0:
            return None
        return pd.DataFrame(
            # a prefix keeps event names clear of Prophet's reserved names ("y", "trend", "holidays")
            {
                "holiday": [f"event: {name}" for name in events["name"].to_list()],
                "ds": pd.to_datetime(events["date"].to_list()),
            }
        )

    def fit(self, history: pl.DataFrame) -> Self:
        spec = self.spec
        grid = complete_grid(history, spec)
        jobs = []
        for key, part in grid.partition_by(list(spec.keys), as_dict=True, maintain_order=True).items():
            start = part[spec.date].min()
            market = key[spec.keys.index(spec.market)] if spec.market else None
            frame = pd.DataFrame(
                {"ds": pd.to_datetime(part[spec.date].to_list()), "y": part[spec.target].to_numpy()}
            )
            jobs.append(_SeriesJob(key, frame, self._holidays_for(market, start), self.settings))
        self._fitted = fit_many(jobs, _fit_series, self.executor)
        self._key_dtypes = {key: grid.schema[key] for key in spec.keys}
        return self

    def predict(self, horizon: int, future_covariates: pl.DataFrame | None = None) -> pl.DataFrame:
        """`future_covariates` is accepted for a uniform interface and ignored."""
        if not self._fitted:
            raise RuntimeError("fit the model before predicting")
        spec = self.spec
        tasks = [(fitted, horizon, spec.period_days) for fitted in self._fitted]
        forecasts = self.executor(_forecast_series, tasks)
        parts = []
        for fitted, forecast in zip(self._fitted, forecasts, strict=True):
            part = pl.from_pandas(forecast).select(
                pl.col("ds").cast(pl.Date).alias(spec.date),
                pl.col("yhat").clip(0).alias("mean"),
                pl.col("yhat_lower").clip(0).alias("p10"),
                pl.col("yhat").clip(0).alias("p50"),
                pl.col("yhat_upper").clip(0).alias("p90"),
            )
            keys = [
                pl.lit(value, dtype=self._key_dtypes[name]).alias(name)
                for name, value in zip(spec.keys, fitted.key, strict=True)
            ]
            parts.append(part.with_columns(keys))
        return (
            pl.concat(parts)
            .select([*spec.keys, spec.date, *FORECAST_VALUE_COLUMNS])
            .sort([*spec.keys, spec.date])
        )
