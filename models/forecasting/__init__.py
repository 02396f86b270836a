"""Demand forecasting: small fit/predict models over long-format series frames.

Every model takes a `SeriesSpec` (which columns are keys, date, target, price, promotion, FX),
has `fit(history) -> self` and `predict(horizon, future_covariates=None)`, and returns keys...,
date, mean, p10, p50, p90. Nothing here knows MLflow, Feast or Ray.
"""

from models.forecasting.events import EventCalendar
from models.forecasting.global_lightgbm import GlobalLightGBM
from models.forecasting.parallel import fit_many, process_pool_map, serial_map
from models.forecasting.prophet_per_series import ProphetPerSeries
from models.forecasting.reconcile import bottom_up, product_category_market_total
from models.forecasting.seasonal_naive import SeasonalNaive
from models.forecasting.series import FORECAST_VALUE_COLUMNS, SeriesSpec, complete_grid

__all__ = [
    "FORECAST_VALUE_COLUMNS",
    "EventCalendar",
    "GlobalLightGBM",
    "ProphetPerSeries",
    "SeasonalNaive",
    "SeriesSpec",
    "bottom_up",
    "complete_grid",
    "fit_many",
    "process_pool_map",
    "product_category_market_total",
    "serial_map",
]
